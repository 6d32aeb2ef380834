//! One emulated reliable connection: its state, progress and teardown here; the receive
//! state machine in [`recv`], the send path in [`send`].

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};

use super::cm::ListenerShared;
use super::engine::Engine;
use super::sys::RawIov;
use super::transport::Transport;
use super::wire::{self, FLAG_IMM, FLAG_SIGNALED, FLAG_SOLICITED, HEADER_LEN, Header, Op};
use super::{Cq, Pd, Region};
use crate::error::{Error, Result};
use crate::types::{
    Access, Completion, Event, Opcode, QpSpec, RawSge, RemoteBuffer, SendFlags, Status,
};

mod recv;
mod send;

static NEXT_QP_NUM: AtomicU32 = AtomicU32::new(1);

/// Bytes of the staging buffer that small frames are read through.
const STAGING: usize = 64 * 1024;
/// Payload remainders at least this large are received straight into the target memory.
const DIRECT_RECV: usize = 4096;

const CONNECTED: u8 = 0;
const BROKEN: u8 = 1;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A posted receive.
struct RecvWr {
    wr_id: u64,
    addr: *mut u8,
    len: u32,
    /// The region the buffer lies in; `None` for an empty buffer.
    region: Option<Arc<Region>>,
}

// SAFETY: `addr` is only written through while `region`'s `alive` lock is held, which keeps
// the memory valid; the pointer itself is plain data.
unsafe impl Send for RecvWr {}

/// The local buffer that a fetch-and-add's old value goes to.
struct PendingAtomic {
    wr_id: u64,
    addr: u64,
    lkey: u32,
    signaled: bool,
}

/// A send or write-with-immediate that arrived before a receive was posted for it. In RDMA
/// the peer would retry (RNR); here the frame is taken off the stream at once, so responses
/// behind it in the same stream are never held up, and its completion waits for a receive.
struct Unmatched {
    is_send: bool,
    imm: Option<u32>,
    len: u32,
    solicited: bool,
    /// The payload of a send (a write's payload is already in place).
    payload: Option<Vec<u8>>,
}

/// Posted receives and arrivals waiting for one; at most one of the two queues is non-empty.
#[derive(Default)]
struct Receives {
    posted: VecDeque<RecvWr>,
    unmatched: VecDeque<Unmatched>,
    unmatched_bytes: usize,
}

/// Limits on what a peer may send ahead of our receives.
const MAX_UNMATCHED: usize = 4096;
const MAX_UNMATCHED_BYTES: usize = 64 << 20;

/// A frame whose payload is being received.
struct Incoming {
    header: Header,
    dst: *mut u8,
    remaining: usize,
    region: Option<Arc<Region>>,
    recv: Option<RecvWr>,
    /// Where a send's payload goes when no receive was posted for it.
    heap: Option<Vec<u8>>,
}

// SAFETY: as for `RecvWr`: `dst` is only written through under `region`'s `alive` lock.
unsafe impl Send for Incoming {}

struct Rx {
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    current: Option<Incoming>,
}

/// Why the receive path stopped for good.
enum Fault {
    /// The peer closed the stream or the socket failed.
    Closed,
    /// The peer asked for something its rights do not cover. `local` is the error completion
    /// of the receive the request consumed, if it consumed one.
    Violation {
        nak: Header,
        local: Option<Completion>,
    },
    /// The peer refused one of our requests; its error completion is already queued.
    Refused,
    /// The peer sent bytes that are not a frame.
    Garbage(u8),
    /// No more bytes for now (only between `fill` and `drive`).
    Pending,
}

pub(super) struct Shared {
    pub qp_num: u32,
    stream: Box<dyn Transport>,
    peer: SocketAddr,
    peer_private_data: Vec<u8>,
    pd: Arc<Pd>,
    send_cq: Arc<Cq>,
    recv_cq: Arc<Cq>,
    pub background: bool,
    state: AtomicU8,
    rx: Mutex<Rx>,
    /// Serialises whole frames on the socket.
    tx: Mutex<()>,
    receives: Mutex<Receives>,
    /// Signaled requests waiting for the peer's ack, in posting order.
    outstanding: Mutex<VecDeque<(u64, Opcode)>>,
    atomics: Mutex<VecDeque<PendingAtomic>>,
    /// Frames the receive path owes the peer (acks, naks, atomic responses), sent by whoever
    /// holds `tx` next.
    ctrl: Mutex<Vec<u8>>,
    has_ctrl: AtomicBool,
    shutdown_pending: AtomicBool,
    /// Set by every user-driven progress; the engine clears it and takes over connections
    /// that stay untouched.
    pub touched: AtomicBool,
    listener: OnceLock<Weak<ListenerShared>>,
    engine: Weak<Engine>,
}

impl Shared {
    pub(super) fn new(
        stream: Box<dyn Transport>,
        peer: SocketAddr,
        peer_private_data: Vec<u8>,
        pd: &Arc<Pd>,
        qp: &QpSpec<Arc<Cq>>,
        engine: &Arc<Engine>,
    ) -> Result<Arc<Shared>> {
        let shared = Arc::new(Shared {
            qp_num: NEXT_QP_NUM.fetch_add(1, Ordering::Relaxed),
            stream,
            peer,
            peer_private_data,
            pd: pd.clone(),
            send_cq: qp.send_cq.clone(),
            recv_cq: qp.recv_cq.clone(),
            background: qp.background_progress,
            state: AtomicU8::new(CONNECTED),
            rx: Mutex::new(Rx {
                buf: vec![0; STAGING].into_boxed_slice(),
                start: 0,
                end: 0,
                current: None,
            }),
            tx: Mutex::new(()),
            receives: Mutex::new(Receives::default()),
            outstanding: Mutex::new(VecDeque::new()),
            atomics: Mutex::new(VecDeque::new()),
            ctrl: Mutex::new(Vec::new()),
            has_ctrl: AtomicBool::new(false),
            shutdown_pending: AtomicBool::new(false),
            touched: AtomicBool::new(true),
            listener: OnceLock::new(),
            engine: Arc::downgrade(engine),
        });
        shared.send_cq.attach(&shared);
        if !Arc::ptr_eq(&shared.send_cq, &shared.recv_cq) {
            shared.recv_cq.attach(&shared);
        }
        engine.register(&shared)?;
        Ok(shared)
    }

    pub(super) fn set_listener(&self, listener: Weak<ListenerShared>) {
        let _ = self.listener.set(listener);
    }

    pub(super) fn transport(&self) -> &dyn Transport {
        &*self.stream
    }

    pub(super) fn is_connected(&self) -> bool {
        self.state.load(Ordering::Acquire) == CONNECTED
    }

    /// Whether the engine should watch this connection for incoming data.
    pub(super) fn wants_background(&self) -> bool {
        self.background || self.send_cq.is_armed() || self.recv_cq.is_armed()
    }

    pub(super) fn arm_background(&self) {
        if let Some(engine) = self.engine.upgrade() {
            engine.watch(self, true);
        }
    }

    /// Progress on behalf of a poller.
    pub(super) fn progress(&self) {
        self.touched.store(true, Ordering::Relaxed);
        self.progress_inner();
    }

    /// Progress on behalf of the engine: does not count as the connection being polled.
    pub(super) fn progress_background(&self) {
        self.progress_inner();
    }

    fn progress_inner(&self) {
        if !self.is_connected() {
            return;
        }
        let Ok(mut rx) = self.rx.try_lock() else {
            return;
        };
        // The receive state stays locked until a fault has broken the connection, so no
        // other thread reads frames after the one that ended it.
        let outcome = self.drive(&mut rx);
        match outcome {
            Ok(()) => {}
            Err(Fault::Closed) => {
                tracing::debug!(
                    "connection {} to {} closed by the peer",
                    self.qp_num,
                    self.peer
                );
                self.shutdown_pending.store(true, Ordering::Release);
                self.break_connection();
            }
            Err(Fault::Refused) => {
                self.shutdown_pending.store(true, Ordering::Release);
                self.break_connection();
            }
            Err(Fault::Violation { nak, local }) => {
                tracing::warn!(
                    "connection {} from {}: refused a remote operation ({:?}); closing it",
                    self.qp_num,
                    self.peer,
                    wire::status_from(nak.status)
                );
                self.queue_ctrl(&nak);
                self.shutdown_pending.store(true, Ordering::Release);
                if let Some(local) = local {
                    self.recv_cq.push(local, true);
                }
                self.break_connection();
            }
            Err(Fault::Pending) => {}
            Err(Fault::Garbage(op)) => {
                tracing::warn!(
                    "connection {} from {}: unknown frame type {op}; closing it",
                    self.qp_num,
                    self.peer
                );
                self.shutdown_pending.store(true, Ordering::Release);
                self.break_connection();
            }
        }
        drop(rx);
        self.flush_ctrl();
    }

    /// Moves the connection to the broken state once: flushes posted receives and pending
    /// atomics, tells the listener, and stops the engine watching it.
    fn break_connection(&self) {
        if self.state.swap(BROKEN, Ordering::AcqRel) == BROKEN {
            return;
        }
        let posted: Vec<RecvWr> = {
            let mut receives = lock(&self.receives);
            receives.unmatched.clear();
            receives.posted.drain(..).collect()
        };
        for (wr_id, _) in lock(&self.outstanding).drain(..) {
            self.flush_request(wr_id);
        }
        for recv in posted {
            self.recv_cq
                .push(self.failed(recv.wr_id, Status::WrFlushError), true);
        }
        for atomic in lock(&self.atomics).drain(..) {
            self.flush_request(atomic.wr_id);
        }
        if let Some(listener) = self.listener.get().and_then(Weak::upgrade) {
            listener.push(Event::Disconnected(self.qp_num));
        }
        if let Some(engine) = self.engine.upgrade() {
            engine.forget(self);
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        if let Some(engine) = self.engine.upgrade() {
            engine.forget(self);
        }
    }
}

/// The public face of a tcp connection.
pub(crate) struct Connection(Arc<Shared>);

impl Connection {
    pub(super) fn new(shared: Arc<Shared>) -> Connection {
        Connection(shared)
    }

    pub(crate) fn qp_num(&self) -> u32 {
        self.0.qp_num
    }

    pub(crate) fn peer_addr(&self) -> SocketAddr {
        self.0.peer
    }

    pub(crate) fn peer_private_data(&self) -> &[u8] {
        &self.0.peer_private_data
    }

    pub(crate) fn is_connected(&self) -> bool {
        self.0.progress();
        self.0.is_connected()
    }

    pub(crate) fn post_recv(&self, wr_id: u64, sge: RawSge) -> Result<()> {
        self.0.post_recv(wr_id, sge)
    }

    pub(crate) fn disconnect(&self) {
        self.0.shutdown_pending.store(true, Ordering::Release);
        self.0.break_connection();
        self.0.flush_ctrl();
    }
}
