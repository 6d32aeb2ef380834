//! One emulated reliable connection: the send path, the receive state machine and teardown.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::Duration;

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
        let outcome = self.drive(&mut rx);
        drop(rx);
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
        self.flush_ctrl();
    }

    /// Reads and handles frames until the socket has no more bytes or the connection ends.
    fn drive(&self, rx: &mut Rx) -> Result<(), Fault> {
        loop {
            if let Some(inc) = rx.current.as_mut() {
                let staged = rx.end - rx.start;
                if staged > 0 && inc.remaining > 0 {
                    let src = rx.buf[rx.start..].as_ptr();
                    let n = fill(inc, |dst, room| {
                        let n = staged.min(room);
                        // SAFETY: `dst` has room for `room >= n` bytes inside the live region;
                        // `src` is our staging buffer with `staged >= n` bytes.
                        unsafe { std::ptr::copy_nonoverlapping(src, dst, n) };
                        Ok(n)
                    })?;
                    rx.start += n;
                }
                if inc.remaining == 0 {
                    let inc = rx.current.take().expect("a frame is in progress");
                    self.finish(inc);
                    continue;
                }
                if inc.remaining >= DIRECT_RECV {
                    let stream = &*self.stream;
                    // SAFETY: `dst..dst+room` is inside the live region (`fill` holds it).
                    match fill(inc, |dst, room| unsafe { stream.recv(dst, room) }) {
                        Ok(0) => return Err(Fault::Closed),
                        Ok(_) => continue,
                        Err(Fault::Pending) => return Ok(()),
                        Err(f) => return Err(f),
                    }
                }
            } else if rx.end - rx.start >= HEADER_LEN {
                let header = Header::decode(&rx.buf[rx.start..rx.start + HEADER_LEN]);
                match self.begin(header)? {
                    Begin::Done => rx.start += HEADER_LEN,
                    Begin::Payload(inc) => {
                        rx.start += HEADER_LEN;
                        rx.current = Some(inc);
                    }
                }
                continue;
            }
            if rx.start == rx.end {
                rx.start = 0;
                rx.end = 0;
            } else if rx.start > 0 && rx.buf.len() - rx.end < HEADER_LEN {
                rx.buf.copy_within(rx.start..rx.end, 0);
                rx.end -= rx.start;
                rx.start = 0;
            }
            let end = rx.end;
            let free = &mut rx.buf[end..];
            // SAFETY: `free` is our own staging buffer, valid for `free.len()` bytes.
            match unsafe { self.stream.recv(free.as_mut_ptr(), free.len()) } {
                Ok(0) => return Err(Fault::Closed),
                Ok(n) => rx.end += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Err(Fault::Closed),
            }
        }
    }

    /// Handles a frame header: checks the request and says where its payload goes.
    fn begin(&self, h: Header) -> Result<Begin, Fault> {
        let Some(op) = h.op() else {
            return Err(Fault::Garbage(h.op));
        };
        match op {
            Op::Send => {
                let recv = self.take_posted();
                if let Some(recv) = recv {
                    if h.len > recv.len {
                        let (theirs, ours) =
                            (Status::RemoteInvalidRequest, Status::LocalLengthError);
                        return Err(self.violation(&h, theirs, ours, Some(recv)));
                    }
                    return Ok(Begin::Payload(Incoming {
                        header: h,
                        dst: recv.addr,
                        remaining: h.len as usize,
                        region: recv.region.clone(),
                        recv: Some(recv),
                        heap: None,
                    }));
                }
                if !self.may_hold(h.len as usize) {
                    let status = Status::RemoteInvalidRequest;
                    return Err(self.violation(&h, status, status, None));
                }
                let mut heap = vec![0u8; h.len as usize];
                Ok(Begin::Payload(Incoming {
                    header: h,
                    dst: heap.as_mut_ptr(),
                    remaining: h.len as usize,
                    region: None,
                    recv: None,
                    heap: Some(heap),
                }))
            }
            Op::Write => {
                let target =
                    self.check_remote(h.rkey, h.addr, u64::from(h.len), Access::REMOTE_WRITE);
                let recv = if h.has(FLAG_IMM) {
                    self.take_posted()
                } else {
                    None
                };
                let Some((region, dst)) = target else {
                    let status = Status::RemoteAccessError;
                    return Err(self.violation(&h, status, status, recv));
                };
                if h.has(FLAG_IMM) && recv.is_none() && !self.may_hold(0) {
                    let status = Status::RemoteInvalidRequest;
                    return Err(self.violation(&h, status, status, None));
                }
                Ok(Begin::Payload(Incoming {
                    header: h,
                    dst,
                    remaining: h.len as usize,
                    region,
                    recv,
                    heap: None,
                }))
            }
            Op::FetchAdd => {
                let old = self.fetch_add(&h).ok_or_else(|| {
                    let status = Status::RemoteAccessError;
                    self.violation(&h, status, status, None)
                })?;
                self.queue_ctrl(&Header {
                    op: Op::AtomicResp as u8,
                    flags: h.flags,
                    wr_id: h.wr_id,
                    value: old,
                    ..Header::default()
                });
                Ok(Begin::Done)
            }
            Op::Ack => {
                let opcode = self.settle(h.wr_id).unwrap_or(wire::opcode_from(h.orig));
                let wc = Completion::success(h.wr_id, opcode, h.len, None, self.qp_num);
                self.send_cq.push(wc, false);
                Ok(Begin::Done)
            }
            Op::Nak => {
                let opcode = wire::opcode_from(h.orig);
                if opcode == Opcode::FetchAdd {
                    lock(&self.atomics).pop_front();
                } else {
                    self.settle(h.wr_id);
                }
                let status = wire::status_from(h.status);
                self.send_cq.push(self.failed(h.wr_id, status), true);
                Err(Fault::Refused)
            }
            Op::AtomicResp => {
                let Some(pending) = lock(&self.atomics).pop_front() else {
                    return Err(Fault::Garbage(h.op));
                };
                match self.store_atomic_result(&pending, h.value) {
                    Status::Success if pending.signaled => {
                        let wc = Completion::success(
                            pending.wr_id,
                            Opcode::FetchAdd,
                            8,
                            None,
                            self.qp_num,
                        );
                        self.send_cq.push(wc, false);
                    }
                    Status::Success => {}
                    status => self.send_cq.push(self.failed(pending.wr_id, status), true),
                }
                Ok(Begin::Done)
            }
        }
    }

    fn failed(&self, wr_id: u64, status: Status) -> Completion {
        Completion::error(wr_id, status, self.qp_num)
    }

    /// Runs a peer's fetch-and-add if its rights cover it; returns the old value.
    fn fetch_add(&self, h: &Header) -> Option<u64> {
        if !h.addr.is_multiple_of(8) {
            return None;
        }
        let (region, dst) = self.check_remote(h.rkey, h.addr, 8, Access::REMOTE_ATOMIC)?;
        let region = region?;
        let alive = region.alive.read().unwrap_or_else(|p| p.into_inner());
        if !*alive {
            return None;
        }
        // SAFETY: `dst` is 8 aligned bytes inside a region that stays registered while we hold
        // `alive`; peers only reach it through atomic operations like this one.
        let old = unsafe { AtomicU64::from_ptr(dst.cast()) }.fetch_add(h.value, Ordering::SeqCst);
        Some(old)
    }

    /// Writes a fetch-and-add's old value into our local buffer, if it is still registered.
    fn store_atomic_result(&self, pending: &PendingAtomic, value: u64) -> Status {
        let Some(region) = self.pd.lookup(pending.lkey) else {
            return Status::LocalProtectionError;
        };
        let Some(dst) = region.locate(pending.addr, 8) else {
            return Status::LocalProtectionError;
        };
        let alive = region.alive.read().unwrap_or_else(|p| p.into_inner());
        if !*alive {
            return Status::LocalProtectionError;
        }
        // SAFETY: 8 bytes inside a region of ours that is registered while we hold `alive`.
        unsafe { std::ptr::copy_nonoverlapping(value.to_ne_bytes().as_ptr(), dst, 8) };
        Status::Success
    }

    /// The region and the pointer for `len` bytes at `addr` under `rkey`, if the peer may use
    /// them with `access`. An empty write needs no region.
    fn check_remote(
        &self,
        rkey: u32,
        addr: u64,
        len: u64,
        access: Access,
    ) -> Option<(Option<Arc<Region>>, *mut u8)> {
        if len == 0 && access == Access::REMOTE_WRITE {
            return Some((None, std::ptr::null_mut()));
        }
        let region = self.pd.lookup(rkey)?;
        if !region.access.contains(access) {
            return None;
        }
        let ptr = region.locate(addr, len)?;
        Some((Some(region), ptr))
    }

    /// Builds the fault for a refused request: the NAK for the peer and, if the request
    /// consumed one of our receives, that receive's completion with `ours`.
    fn violation(&self, h: &Header, theirs: Status, ours: Status, recv: Option<RecvWr>) -> Fault {
        let opcode = match h.op() {
            Some(Op::Send) => Opcode::Send,
            Some(Op::FetchAdd) => Opcode::FetchAdd,
            _ => Opcode::Write,
        };
        Fault::Violation {
            nak: Header {
                op: Op::Nak as u8,
                status: wire::status_code(theirs),
                orig: wire::opcode_code(opcode),
                wr_id: h.wr_id,
                ..Header::default()
            },
            local: recv.map(|r| self.failed(r.wr_id, ours)),
        }
    }

    /// A frame's payload has fully arrived: complete the receive it consumed (or keep it until
    /// one is posted) and ack it.
    fn finish(&self, inc: Incoming) {
        let h = inc.header;
        let is_send = h.op() == Some(Op::Send);
        if is_send || h.has(FLAG_IMM) {
            let arrival = Unmatched {
                is_send,
                imm: h.has(FLAG_IMM).then_some(h.imm),
                len: h.len,
                solicited: h.has(FLAG_SOLICITED),
                payload: inc.heap,
            };
            match inc.recv {
                Some(recv) => self.complete_recv(recv, arrival, false),
                None => {
                    // A receive may have been posted while the payload arrived.
                    let mut receives = lock(&self.receives);
                    match receives.posted.pop_front() {
                        Some(recv) => {
                            drop(receives);
                            self.complete_recv(recv, arrival, true);
                        }
                        None => {
                            receives.unmatched_bytes +=
                                arrival.payload.as_ref().map_or(0, Vec::len);
                            receives.unmatched.push_back(arrival);
                        }
                    }
                }
            }
        }
        if h.has(FLAG_SIGNALED) {
            let orig = if is_send { Opcode::Send } else { Opcode::Write };
            self.queue_ctrl(&Header {
                op: Op::Ack as u8,
                orig: wire::opcode_code(orig),
                len: h.len,
                wr_id: h.wr_id,
                ..Header::default()
            });
        }
    }

    /// Completes `recv` with `arrival`; a send's payload that waited on the heap is copied
    /// into the receive buffer (`copy`), if it fits.
    fn complete_recv(&self, recv: RecvWr, arrival: Unmatched, copy: bool) {
        let opcode = if arrival.is_send {
            Opcode::Recv
        } else {
            Opcode::RecvRdmaWithImm
        };
        let mut status = Status::Success;
        if copy && let Some(payload) = &arrival.payload {
            status = Status::LocalLengthError;
            if payload.len() <= recv.len as usize
                && let Some(region) = &recv.region
            {
                let alive = region.alive.read().unwrap_or_else(|p| p.into_inner());
                if *alive {
                    // SAFETY: the receive buffer has `recv.len >= payload.len()` bytes inside a
                    // region that stays registered while we hold `alive`.
                    unsafe {
                        std::ptr::copy_nonoverlapping(payload.as_ptr(), recv.addr, payload.len())
                    };
                    status = Status::Success;
                }
            } else if payload.is_empty() {
                status = Status::Success;
            }
        }
        let wc = match status {
            Status::Success => {
                Completion::success(recv.wr_id, opcode, arrival.len, arrival.imm, self.qp_num)
            }
            status => self.failed(recv.wr_id, status),
        };
        self.recv_cq.push(wc, arrival.solicited);
    }

    /// The oldest posted receive, unless arrivals are already waiting for one (order).
    fn take_posted(&self) -> Option<RecvWr> {
        let mut receives = lock(&self.receives);
        if receives.unmatched.is_empty() {
            receives.posted.pop_front()
        } else {
            None
        }
    }

    /// Whether one more unmatched arrival of `len` bytes stays within the limits.
    fn may_hold(&self, len: usize) -> bool {
        let receives = lock(&self.receives);
        receives.unmatched.len() < MAX_UNMATCHED
            && receives.unmatched_bytes + len <= MAX_UNMATCHED_BYTES
    }

    /// Removes the ack-awaiting request `wr_id`; returns its opcode.
    fn settle(&self, wr_id: u64) -> Option<Opcode> {
        let mut outstanding = lock(&self.outstanding);
        let at = outstanding.iter().position(|(id, _)| *id == wr_id)?;
        outstanding.remove(at).map(|(_, op)| op)
    }

    fn queue_ctrl(&self, h: &Header) {
        tracing::trace!(qp = self.qp_num, op = h.op, wr_id = h.wr_id, "queue ctrl");
        lock(&self.ctrl).extend_from_slice(&h.encode());
        self.has_ctrl.store(true, Ordering::Release);
    }

    /// Sends owed control frames if the socket is free; whoever holds it sends them otherwise.
    fn flush_ctrl(&self) {
        while self.has_ctrl.load(Ordering::Acquire) || self.shutdown_pending.load(Ordering::Acquire)
        {
            let Ok(guard) = self.tx.try_lock() else {
                tracing::trace!(qp = self.qp_num, "flush ctrl: tx busy");
                return;
            };
            self.flush_ctrl_locked();
            drop(guard);
        }
    }

    /// Sends owed control frames, then a pending shutdown; the caller holds `tx`.
    fn flush_ctrl_locked(&self) {
        while self.has_ctrl.load(Ordering::Acquire) {
            let bytes = {
                let mut ctrl = lock(&self.ctrl);
                self.has_ctrl.store(false, Ordering::Release);
                std::mem::take(&mut *ctrl)
            };
            tracing::trace!(qp = self.qp_num, bytes = bytes.len(), "flush ctrl");
            if self
                .send_all(&[RawIov {
                    ptr: bytes.as_ptr(),
                    len: bytes.len(),
                }])
                .is_err()
            {
                break;
            }
        }
        if self.shutdown_pending.swap(false, Ordering::AcqRel) {
            self.stream.shutdown_write();
        }
    }

    /// Writes all of `iov`, making receive progress while the socket is full so two peers
    /// that both send large payloads cannot block each other.
    fn send_all(&self, iov: &[RawIov]) -> io::Result<()> {
        let mut pieces = [
            RawIov {
                ptr: std::ptr::null(),
                len: 0,
            },
            RawIov {
                ptr: std::ptr::null(),
                len: 0,
            },
        ];
        let mut count = 0;
        for p in iov.iter().filter(|p| p.len > 0).take(pieces.len()) {
            pieces[count] = RawIov {
                ptr: p.ptr,
                len: p.len,
            };
            count += 1;
        }
        let mut first = 0;
        while first < count {
            // SAFETY: every piece lies in a buffer the caller keeps alive for this call.
            match unsafe { self.stream.send(&pieces[first..count]) } {
                Ok(mut n) => {
                    while n > 0 && first < count {
                        let p = &mut pieces[first];
                        let k = n.min(p.len);
                        // SAFETY: advancing within the piece (k <= len).
                        p.ptr = unsafe { p.ptr.add(k) };
                        p.len -= k;
                        n -= k;
                        if p.len == 0 {
                            first += 1;
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.progress_inner();
                    // Once the connection is broken (say, the peer refused an earlier request)
                    // the peer reads no more, so waiting for room could last forever.
                    if !self.is_connected() {
                        return Err(io::ErrorKind::NotConnected.into());
                    }
                    self.stream.wait_writable(Duration::from_millis(50));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Sends one frame with `payload_len` bytes at `payload` (inside registered memory). On a
    /// broken connection the request completes with a flush error instead, as in verbs.
    fn send_frame(&self, h: &Header, payload: *const u8, payload_len: usize) -> Result<()> {
        let encoded = h.encode();
        let signaled = h.has(FLAG_SIGNALED);
        let guard = lock(&self.tx);
        {
            // Checked under the lock `break_connection` drains, so a signaled request is
            // either flushed there or here, never lost.
            let mut outstanding = lock(&self.outstanding);
            if !self.is_connected() {
                drop(outstanding);
                drop(guard);
                self.flush_request(h.wr_id);
                return Ok(());
            }
            // Registered before the frame leaves, so an ack that comes back at once finds it.
            if signaled {
                let opcode = if h.op() == Some(Op::Send) {
                    Opcode::Send
                } else {
                    Opcode::Write
                };
                outstanding.push_back((h.wr_id, opcode));
            }
        }
        let sent = self.send_all(&[
            RawIov {
                ptr: encoded.as_ptr(),
                len: HEADER_LEN,
            },
            RawIov {
                ptr: payload,
                len: payload_len,
            },
        ]);
        if sent.is_ok() {
            self.flush_ctrl_locked();
        }
        drop(guard);
        if let Err(e) = sent {
            tracing::debug!(
                "connection {} to {}: send failed: {e}",
                self.qp_num,
                self.peer
            );
            // Flushes the request if it is signaled (it is outstanding); flush it here if not.
            self.break_connection();
            if !signaled {
                self.flush_request(h.wr_id);
            }
        }
        self.flush_ctrl();
        Ok(())
    }

    /// Completes send-side request `wr_id` with a flush error: what verbs does with a request
    /// posted on a queue pair in the error state, signaled or not.
    fn flush_request(&self, wr_id: u64) {
        self.send_cq
            .push(self.failed(wr_id, Status::WrFlushError), true);
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

    fn post_recv(&self, wr_id: u64, sge: RawSge) -> Result<()> {
        let region = if sge.len == 0 {
            None
        } else {
            let region = self.pd.lookup(sge.lkey).ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "lkey {:#x} is not registered in this protection domain",
                    sge.lkey
                ))
            })?;
            Some(region)
        };
        let recv = RecvWr {
            wr_id,
            addr: sge.addr,
            len: sge.len,
            region,
        };
        let mut receives = lock(&self.receives);
        // Checked under the lock `break_connection` drains: the receive is flushed there or here.
        if !self.is_connected() {
            drop(receives);
            self.recv_cq
                .push(self.failed(wr_id, Status::WrFlushError), true);
            return Ok(());
        }
        match receives.unmatched.pop_front() {
            Some(arrival) => {
                receives.unmatched_bytes -= arrival.payload.as_ref().map_or(0, Vec::len);
                drop(receives);
                self.complete_recv(recv, arrival, true);
            }
            None => receives.posted.push_back(recv),
        }
        Ok(())
    }
}

fn frame_flags(flags: SendFlags, imm: Option<u32>) -> u8 {
    let mut f = 0;
    if flags.signaled {
        f |= FLAG_SIGNALED;
    }
    if flags.solicited {
        f |= FLAG_SOLICITED;
    }
    if imm.is_some() {
        f |= FLAG_IMM;
    }
    f
}

impl Drop for Shared {
    fn drop(&mut self) {
        if let Some(engine) = self.engine.upgrade() {
            engine.forget(self);
        }
    }
}

enum Begin {
    /// The frame was handled entirely.
    Done,
    /// The frame's payload goes to this target.
    Payload(Incoming),
}

/// Lets `f` write up to `inc.remaining` bytes at `inc.dst` while the target region is kept
/// registered, then advances `inc` by what `f` wrote.
fn fill(
    inc: &mut Incoming,
    f: impl FnOnce(*mut u8, usize) -> io::Result<usize>,
) -> Result<usize, Fault> {
    let alive = inc
        .region
        .as_ref()
        .map(|r| r.alive.read().unwrap_or_else(|p| p.into_inner()));
    if alive.as_ref().is_some_and(|a| !**a) {
        return Err(Fault::Closed);
    }
    match f(inc.dst, inc.remaining) {
        Ok(n) => {
            // SAFETY: `f` wrote `n <= remaining` bytes, so the cursor stays inside the range.
            inc.dst = unsafe { inc.dst.add(n) };
            inc.remaining -= n;
            Ok(n)
        }
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
            ) =>
        {
            Err(Fault::Pending)
        }
        Err(_) => Err(Fault::Closed),
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

    pub(crate) fn post_send(
        &self,
        wr_id: u64,
        sge: RawSge,
        imm: Option<u32>,
        flags: SendFlags,
    ) -> Result<()> {
        let h = Header {
            op: Op::Send as u8,
            flags: frame_flags(flags, imm),
            len: sge.len,
            imm: imm.unwrap_or(0),
            wr_id,
            ..Header::default()
        };
        self.0.send_frame(&h, sge.addr, sge.len as usize)
    }

    pub(crate) fn post_write(
        &self,
        wr_id: u64,
        sge: RawSge,
        remote: RemoteBuffer,
        imm: Option<u32>,
        flags: SendFlags,
    ) -> Result<()> {
        let h = Header {
            op: Op::Write as u8,
            flags: frame_flags(flags, imm),
            len: sge.len,
            imm: imm.unwrap_or(0),
            rkey: remote.rkey,
            addr: remote.addr,
            wr_id,
            ..Header::default()
        };
        self.0.send_frame(&h, sge.addr, sge.len as usize)
    }

    pub(crate) fn post_fetch_add(
        &self,
        wr_id: u64,
        sge: RawSge,
        remote: RemoteBuffer,
        add: u64,
        flags: SendFlags,
    ) -> Result<()> {
        let h = Header {
            op: Op::FetchAdd as u8,
            flags: frame_flags(flags, None),
            rkey: remote.rkey,
            addr: remote.addr,
            wr_id,
            value: add,
            ..Header::default()
        };
        let shared = &self.0;
        // The pending entry is queued under the send lock so entries and frames keep one order.
        let guard = lock(&shared.tx);
        {
            // Checked under the lock `break_connection` drains (see `send_frame`).
            let mut atomics = lock(&shared.atomics);
            if !shared.is_connected() {
                drop(atomics);
                drop(guard);
                shared.flush_request(wr_id);
                return Ok(());
            }
            atomics.push_back(PendingAtomic {
                wr_id,
                addr: sge.addr as u64,
                lkey: sge.lkey,
                signaled: flags.signaled,
            });
        }
        let encoded = h.encode();
        let sent = shared.send_all(&[RawIov {
            ptr: encoded.as_ptr(),
            len: HEADER_LEN,
        }]);
        drop(guard);
        if sent.is_err() {
            // Flushes the pending entry, and with it this request.
            shared.break_connection();
        }
        shared.flush_ctrl();
        Ok(())
    }

    pub(crate) fn disconnect(&self) {
        self.0.shutdown_pending.store(true, Ordering::Release);
        self.0.break_connection();
        self.0.flush_ctrl();
    }
}
