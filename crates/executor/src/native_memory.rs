//! The allocation's memory, enforced on a native executor process.
//!
//! Native functions run in the executor's own address space, so the limit is the process's:
//! `RLIMIT_DATA` (private writable mappings: heap, anonymous `mmap`, thread stacks), set once
//! the library is loaded and the buffers are registered to what the process holds then, plus
//! the allocation's memory, plus [`EXECUTOR_HEADROOM`] per thread for the executor's own
//! stacks and allocator arenas. Past it, `malloc` returns null and the function decides: a C
//! function returns an error, Rust's infallible allocations abort. An abort whose `errno` is
//! `ENOMEM` ends the process with [`EXIT_OUT_OF_MEMORY`], which the manager reports to the
//! client as the allocation running out of memory instead of a crash.
//!
//! No cgroup: the executor runs as its manager's child without one of its own.

use anyhow::{Context as _, Result, bail};
use nix::sys::resource::{Resource, getrlimit, setrlimit};
use rfaas_protocol::control::EXIT_OUT_OF_MEMORY;

/// What the limit leaves per thread for the executor's own stacks and malloc arena.
const EXECUTOR_HEADROOM: u64 = 16 << 20;

/// Limits the process's data to what it holds now plus `memory_mb` MiB (and the executor's
/// headroom for `threads`), and reports aborts for want of memory.
pub fn limit(memory_mb: u32, threads: u16) -> Result<()> {
    let held = data_bytes().context("reading the executor's data size")?;
    let limit = held + (u64::from(memory_mb) << 20) + EXECUTOR_HEADROOM * u64::from(threads);
    let (_, hard) = getrlimit(Resource::RLIMIT_DATA).context("getrlimit(RLIMIT_DATA)")?;
    if hard != libc::RLIM_INFINITY && hard < limit {
        bail!(
            "the executor's hard data limit of {} MiB is below the allocation's memory ({} MiB) \
             plus what the executor holds ({} MiB)",
            hard >> 20,
            memory_mb,
            held >> 20
        );
    }
    setrlimit(Resource::RLIMIT_DATA, limit, hard).context("setrlimit(RLIMIT_DATA)")?;
    abort_handler::install().context("installing the SIGABRT handler")?;
    tracing::info!(
        "native memory limit: {memory_mb} MiB for functions ({} MiB data in all)",
        limit >> 20
    );
    Ok(())
}

/// The process's data size as `RLIMIT_DATA` counts it (`VmData` in `/proc/self/status`).
fn data_bytes() -> Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmData:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .context("no VmData line in /proc/self/status")?;
    Ok(kib << 10)
}

/// The only unsafe code of the limit: a signal handler.
mod abort_handler {
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};

    use super::EXIT_OUT_OF_MEMORY;

    /// Runs on the thread that called `abort()`. It may only call async-signal-safe
    /// functions: it reads that thread's `errno` and calls `_exit`, or returns, and `abort`
    /// then ends the process with SIGABRT as it would have (glibc resets the disposition and
    /// raises again when a handler returns).
    extern "C" fn on_abort(_: libc::c_int) {
        // SAFETY: `__errno_location` returns the calling thread's errno slot, always valid.
        let errno = unsafe { *libc::__errno_location() };
        if errno == libc::ENOMEM {
            // SAFETY: `_exit` is async-signal-safe and does not return.
            unsafe { libc::_exit(EXIT_OUT_OF_MEMORY) };
        }
    }

    pub(super) fn install() -> nix::Result<()> {
        let action = SigAction::new(
            SigHandler::Handler(on_abort),
            SaFlags::SA_RESETHAND,
            SigSet::empty(),
        );
        // SAFETY: the handler is async-signal-safe (see `on_abort`), and no other part of the
        // executor handles SIGABRT.
        unsafe { sigaction(Signal::SIGABRT, &action) }.map(drop)
    }
}
