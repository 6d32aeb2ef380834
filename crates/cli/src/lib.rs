//! What every rFaaS binary does around its work: logging set-up ([`run`]), one error line and
//! the exit code on failure, and graceful shutdown on SIGINT/SIGTERM for the daemons
//! ([`install_shutdown_handler`]).
#![deny(missing_docs)]

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

/// Sets up logging for `verbosity`, runs `body`, and on failure prints `program: <error chain>`
/// once on stderr and exits with 1.
pub fn run(program: &str, verbosity: u8, body: impl FnOnce() -> anyhow::Result<()>) -> ExitCode {
    init_logging(verbosity);
    match body() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{program}: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Installs a `tracing` subscriber on stderr with timestamps, like the seed's logs.
/// `RUST_LOG` wins; else `verbosity` 0 = info (the seed's lines), 1 = debug, 2 or more = trace.
pub fn init_logging(verbosity: u8) {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let default = match verbosity {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_thread_ids(true)
        .try_init();
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// Makes SIGINT and SIGTERM set the flag [`shutdown_requested`] reads, which the daemons'
/// event loops check.
pub fn install_shutdown_handler() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler is async-signal-safe (one atomic store) and stays valid for the
        // whole program; `signal` has no other preconditions.
        unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
    }
}

/// Whether a shutdown signal arrived, or [`request_shutdown`] was called.
pub fn shutdown_requested() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// Asks every loop that checks [`shutdown_requested`] to end, as a signal would: for a part
/// of a daemon that failed and takes the rest down with it.
pub fn request_shutdown() {
    STOP.store(true, Ordering::SeqCst);
}
