//! Graceful shutdown on SIGINT/SIGTERM for the daemons: the handler only sets a flag that
//! their event loops check.

use std::sync::atomic::{AtomicBool, Ordering};

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// Installs the handler for SIGINT and SIGTERM.
pub fn install_shutdown_handler() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler is async-signal-safe (one atomic store) and stays valid for the
        // whole program; `signal` has no other preconditions.
        unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
    }
}

/// Whether a shutdown signal arrived.
pub fn shutdown_requested() -> bool {
    STOP.load(Ordering::SeqCst)
}
