//! The time limit of native functions. A native function cannot be interrupted safely, so
//! when one runs past the allocation's limit the watchdog answers its invocation with
//! [`ReturnCode::Timeout`] and ends the executor with [`EXIT_TIME_LIMIT`]: the client gets the
//! timeout, the manager reports why its executor stopped and serves the next client. (Wasm
//! functions are interrupted in the sandbox instead, and their thread carries on.)

use std::sync::Arc;
use std::time::Duration;

use rdmalib::{Connection, MemoryRegion, SendFlags};
use rfaas_protocol::control::EXIT_TIME_LIMIT;
use rfaas_protocol::invocation::ReturnCode;

use crate::meter::{Meter, now_ns};
use crate::worker::answer;

/// Work-request id of the watchdog's answers.
const WATCHDOG_WR_ID: u64 = u64::MAX - 2;
/// How long posted answers get to leave before the process ends (a verbs send queue is
/// destroyed with the process, so the answer must be on the wire first).
pub const LINGER: Duration = Duration::from_millis(100);

/// One executor thread as the watchdog sees it.
pub struct Watched {
    pub meter: Arc<Meter>,
    pub conn: Arc<Connection>,
}

/// Starts the watchdog thread for `threads` with a limit of `limit`; `empty` is a registered
/// region its answers are posted from.
pub fn start(threads: Vec<Watched>, limit: Duration, empty: MemoryRegion) -> std::io::Result<()> {
    let period = (limit / 8).clamp(Duration::from_millis(1), Duration::from_millis(100));
    std::thread::Builder::new()
        .name("executor-watchdog".into())
        .spawn(move || {
            let limit_ns = limit.as_nanos() as u64;
            loop {
                std::thread::sleep(period);
                let now = now_ns();
                for (thread, t) in threads.iter().enumerate() {
                    if let Some((id, since)) = t.meter.running()
                        && now.saturating_sub(since) > limit_ns
                    {
                        stop(thread, t, id, limit, &empty);
                    }
                }
            }
        })?;
    Ok(())
}

fn stop(thread: usize, t: &Watched, id: u16, limit: Duration, empty: &MemoryRegion) -> ! {
    tracing::error!(
        "thread {thread}: invocation {id} ran past the time limit of {limit:?}; stopping the executor"
    );
    let answered = empty.sge(0, 0).and_then(|sge| {
        answer(
            &t.conn,
            sge,
            WATCHDOG_WR_ID,
            id,
            ReturnCode::Timeout,
            SendFlags::SIGNALED.with_solicited(true),
        )
    });
    if let Err(e) = answered {
        tracing::warn!("thread {thread}: could not tell the client: {e}");
    }
    std::thread::sleep(LINGER);
    std::process::exit(EXIT_TIME_LIMIT);
}
