//! The receive path: frames from the peer, each one-sided request checked against the
//! protection domain before a byte lands, completions for the receives they consume.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::*;

impl Shared {
    /// Reads and handles frames until the socket has no more bytes or the connection ends.
    pub(super) fn drive(&self, rx: &mut Rx) -> Result<(), Fault> {
        let staging = self.stream.stages_frames();
        let direct = if staging { DIRECT_RECV } else { 1 };
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
                if inc.remaining >= direct {
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
                // Consumed before it is handled: a frame that ends the connection is not
                // seen again by the next thread that drives.
                rx.start += HEADER_LEN;
                if let Begin::Payload(inc) = self.begin(header)? {
                    rx.current = Some(inc);
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
            // Without staging no frame is in progress here (every payload went direct): read
            // the rest of the next header and no further.
            let want = if staging {
                rx.buf.len() - end
            } else {
                HEADER_LEN - (end - rx.start)
            };
            let free = &mut rx.buf[end..end + want];
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
                let status = wire::status_from(h.status);
                if status == Status::Success {
                    // A refusal that says nothing went wrong is not a frame we send.
                    return Err(Fault::Garbage(h.op));
                }
                let opcode = wire::opcode_from(h.orig);
                if opcode == Opcode::FetchAdd {
                    lock(&self.atomics).pop_front();
                } else {
                    self.settle(h.wr_id);
                }
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

    pub(super) fn failed(&self, wr_id: u64, status: Status) -> Completion {
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

    pub(super) fn post_recv(&self, wr_id: u64, sge: RawSge) -> Result<()> {
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
