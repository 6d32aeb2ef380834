//! What each executor thread has done, for billing and for the watchdog: counters the thread
//! updates as it goes (it is their only writer) and other threads read at any time.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

/// Nanoseconds since the executor started (never 0 once it runs, so 0 can mean "none").
pub fn now_ns() -> u64 {
    ns_at(Instant::now())
}

/// [`now_ns`] of an instant (at least 1: an instant taken before the first call still counts
/// as a time, never as "none").
#[inline]
pub fn ns_at(t: Instant) -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    (t.saturating_duration_since(epoch).as_nanos() as u64).max(1)
}

/// One thread's counters.
#[derive(Default)]
pub struct Meter {
    /// When the thread went hot ([`ns_at`]); 0 while it sleeps on its completion channel.
    hot_since: AtomicU64,
    /// Hot wall time of the hot periods that ended.
    hot_closed_ns: AtomicU64,
    execution_ns: AtomicU64,
    invocations: AtomicU64,
    /// When the invocation in progress started ([`ns_at`]); 0 when none runs.
    running_since: AtomicU64,
    /// The invocation id of the invocation in progress.
    running_id: AtomicU32,
}

/// The totals of one or more threads at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reading {
    /// Time spent busy-polling for invocations (not running them), in ns.
    pub hot_polling_ns: u64,
    /// Time spent running functions, in ns.
    pub execution_ns: u64,
    /// Invocations served.
    pub invocations: u64,
}

impl Reading {
    /// The sum of two readings.
    pub fn plus(self, other: Reading) -> Reading {
        Reading {
            hot_polling_ns: self.hot_polling_ns + other.hot_polling_ns,
            execution_ns: self.execution_ns + other.execution_ns,
            invocations: self.invocations + other.invocations,
        }
    }
}

/// Adds `d` to a counter only its thread writes (no read-modify-write instruction needed).
#[inline]
fn add(counter: &AtomicU64, d: u64) {
    counter.store(counter.load(Ordering::Relaxed) + d, Ordering::Relaxed);
}

impl Meter {
    /// The thread busy-polls from `at` on.
    pub fn enter_hot(&self, at: Instant) {
        self.hot_since.store(ns_at(at), Ordering::Release);
    }

    /// The thread stops busy-polling at `at` (to sleep, or for good).
    pub fn leave_hot(&self, at: Instant) {
        let since = self.hot_since.swap(0, Ordering::AcqRel);
        if since != 0 {
            add(&self.hot_closed_ns, ns_at(at).saturating_sub(since));
        }
    }

    /// Invocation `id` starts running at `at`.
    #[inline]
    pub fn begin(&self, id: u16, at: Instant) {
        self.running_id.store(u32::from(id), Ordering::Relaxed);
        self.running_since.store(ns_at(at), Ordering::Release);
    }

    /// The invocation that began at `started` is done at `done`.
    #[inline]
    pub fn end(&self, started: Instant, done: Instant) {
        add(
            &self.execution_ns,
            done.saturating_duration_since(started).as_nanos() as u64,
        );
        add(&self.invocations, 1);
        self.running_since.store(0, Ordering::Release);
    }

    /// The invocation running now and since when ([`ns_at`]), if one is.
    pub fn running(&self) -> Option<(u16, u64)> {
        let since = self.running_since.load(Ordering::Acquire);
        (since != 0).then(|| (self.running_id.load(Ordering::Relaxed) as u16, since))
    }

    /// The thread's totals as of `now` ([`ns_at`]): hot polling is the hot wall time so far
    /// minus the execution time, since every execution happens while the thread is hot.
    pub fn read(&self, now: u64) -> Reading {
        let execution_ns = self.execution_ns.load(Ordering::Relaxed);
        let since = self.hot_since.load(Ordering::Acquire);
        let open = if since == 0 {
            0
        } else {
            now.saturating_sub(since)
        };
        let hot_wall = self.hot_closed_ns.load(Ordering::Relaxed) + open;
        Reading {
            hot_polling_ns: hot_wall.saturating_sub(execution_ns),
            execution_ns,
            invocations: self.invocations.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn hot_polling_excludes_execution() {
        let m = Meter::default();
        now_ns(); // the epoch is set before `t0`
        let t0 = Instant::now();
        m.enter_hot(t0);
        m.begin(3, t0 + Duration::from_millis(10));
        assert_eq!(m.running().map(|(id, _)| id), Some(3));
        m.end(
            t0 + Duration::from_millis(10),
            t0 + Duration::from_millis(30),
        );
        assert_eq!(m.running(), None);
        m.leave_hot(t0 + Duration::from_millis(100));
        let r = m.read(ns_at(t0 + Duration::from_secs(1)));
        assert_eq!(
            r,
            Reading {
                hot_polling_ns: 80_000_000,
                execution_ns: 20_000_000,
                invocations: 1
            }
        );
    }
}
