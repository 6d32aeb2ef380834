//! The per-context progress thread.
//!
//! It never touches a connection that a thread is busy-polling: it watches a socket for data
//! only while one of the connection's completion queues is armed for a blocking wait or the
//! connection asked for background progress, and otherwise only for the peer hanging up.
//! Every [`TICK`] it also drives connections that nobody polled since the last tick, so
//! one-sided operations on unpolled connections still complete.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};

use super::conn::Shared;
use super::sys::EventFd;
use crate::error::{Error, Result};

const TICK: Duration = Duration::from_millis(10);
const STOP: u64 = u64::MAX;

type Registry = Mutex<HashMap<u32, Weak<Shared>>>;

pub(crate) struct Engine {
    epoll: Arc<Epoll>,
    conns: Arc<Registry>,
    stop: Arc<EventFd>,
}

impl Engine {
    pub(super) fn start() -> Result<Arc<Engine>> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)
            .map_err(|e| Error::io("epoll_create for the stream providers", e.into()))?;
        let stop = EventFd::new().map_err(|e| Error::io("eventfd for the stream providers", e))?;
        epoll
            .add(stop.fd(), EpollEvent::new(EpollFlags::EPOLLIN, STOP))
            .map_err(|e| Error::io("epoll_ctl for the stream providers", e.into()))?;
        let engine = Arc::new(Engine {
            epoll: Arc::new(epoll),
            conns: Arc::new(Mutex::new(HashMap::new())),
            stop: Arc::new(stop),
        });
        let (epoll, conns) = (engine.epoll.clone(), engine.conns.clone());
        std::thread::Builder::new()
            .name("rdmalib-progress".into())
            .spawn(move || run(&epoll, &conns))
            .map_err(|e| Error::io("starting the progress thread", e))?;
        Ok(engine)
    }

    pub(super) fn register(&self, conn: &Arc<Shared>) -> Result<()> {
        lock(&self.conns).insert(conn.qp_num, Arc::downgrade(conn));
        let t = conn.transport();
        t.want_wakeups(conn.background);
        let event = EpollEvent::new(flags(conn.background), u64::from(conn.qp_num));
        self.epoll
            .add(t.readiness_fd(), event)
            .map_err(|e| Error::io("epoll_ctl for a new connection", e.into()))?;
        if let Some(fd) = t.hangup_fd() {
            self.epoll
                .add(fd, EpollEvent::new(hangup_flags(), hangup_key(conn.qp_num)))
                .map_err(|e| Error::io("epoll_ctl for a new connection", e.into()))?;
        }
        Ok(())
    }

    /// Re-arms the watch on `conn`, for incoming data too when `data` is set.
    pub(super) fn watch(&self, conn: &Shared, data: bool) {
        tracing::trace!(qp = conn.qp_num, data, "watch");
        conn.transport().want_wakeups(data);
        let mut event = EpollEvent::new(flags(data), u64::from(conn.qp_num));
        let _ = self
            .epoll
            .modify(conn.transport().readiness_fd(), &mut event);
    }

    pub(super) fn forget(&self, conn: &Shared) {
        if lock(&self.conns).remove(&conn.qp_num).is_some() {
            let t = conn.transport();
            let _ = self.epoll.delete(t.readiness_fd());
            if let Some(fd) = t.hangup_fd() {
                let _ = self.epoll.delete(fd);
            }
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.stop.signal();
    }
}

fn flags(data: bool) -> EpollFlags {
    let base = EpollFlags::EPOLLRDHUP | EpollFlags::EPOLLONESHOT;
    if data {
        base | EpollFlags::EPOLLIN
    } else {
        base
    }
}

/// A transport's separate hang-up descriptor: watched for the peer going away only.
fn hangup_flags() -> EpollFlags {
    EpollFlags::EPOLLRDHUP | EpollFlags::EPOLLONESHOT
}

/// Epoll key of a connection's hang-up descriptor (its readiness descriptor uses the qp number).
const HANGUP_BIT: u64 = 1 << 32;

fn hangup_key(qp_num: u32) -> u64 {
    HANGUP_BIT | u64::from(qp_num)
}

fn lock(m: &Registry) -> std::sync::MutexGuard<'_, HashMap<u32, Weak<Shared>>> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn run(epoll: &Epoll, conns: &Registry) {
    let mut events = [EpollEvent::empty(); 32];
    let mut last_tick = Instant::now();
    loop {
        let n = match epoll.wait(&mut events, EpollTimeout::from(TICK.as_millis() as u16)) {
            Ok(n) => n,
            Err(nix::errno::Errno::EINTR) => 0,
            Err(e) => {
                tracing::error!("progress thread stops: epoll_wait failed: {e}");
                return;
            }
        };
        for event in &events[..n] {
            if event.data() == STOP {
                return;
            }
            let conn = lock(conns)
                .get(&((event.data() & !HANGUP_BIT) as u32))
                .and_then(Weak::upgrade);
            tracing::trace!(qp = event.data(), events = ?event.events(), "engine event");
            if let Some(conn) = conn {
                let t = conn.transport();
                t.on_event();
                conn.progress_background();
                if conn.is_connected() {
                    // A hang-up stays signalled until the connection is closed. When the thread
                    // that owns the receive side is busy with it (a hot poller), it reads the
                    // end itself, and the tick below drives idle connections; watching the
                    // hang-up again would only report it again at once, in a loop.
                    let hung_up = event
                        .events()
                        .intersects(EpollFlags::EPOLLRDHUP | EpollFlags::EPOLLHUP);
                    if event.data() & HANGUP_BIT != 0 {
                        if !hung_up && let Some(fd) = t.hangup_fd() {
                            let mut again = EpollEvent::new(hangup_flags(), event.data());
                            let _ = epoll.modify(fd, &mut again);
                        }
                        continue;
                    }
                    let key = u64::from(conn.qp_num);
                    let watch = |data: bool| {
                        let f = flags(data);
                        if hung_up {
                            f - EpollFlags::EPOLLRDHUP
                        } else {
                            f
                        }
                    };
                    let mut data = conn.wants_background();
                    tracing::trace!(qp = conn.qp_num, data, hung_up, "engine re-arm");
                    t.want_wakeups(data);
                    let mut again = EpollEvent::new(watch(data), key);
                    let _ = epoll.modify(t.readiness_fd(), &mut again);
                    // A `req_notify` between the check and the modify armed the watch and we
                    // just disarmed it: look again (it sets its flag before it re-arms).
                    if !data && conn.wants_background() {
                        data = true;
                        t.want_wakeups(data);
                        let mut again = EpollEvent::new(watch(data), key);
                        let _ = epoll.modify(t.readiness_fd(), &mut again);
                    }
                }
            }
        }
        if last_tick.elapsed() >= TICK {
            last_tick = Instant::now();
            let idle: Vec<Arc<Shared>> = lock(conns)
                .values()
                .filter_map(Weak::upgrade)
                .filter(|c| !c.touched.swap(false, Ordering::Relaxed))
                .collect();
            for conn in idle {
                conn.progress_background();
            }
        }
    }
}
