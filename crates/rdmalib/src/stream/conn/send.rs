//! The send path: every work request is one frame, written from registered memory by the
//! posting thread; control frames the receive path owes the peer go out with the next one.

use std::io;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::*;

impl Connection {
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
        // The pending entry is queued under the send lock so entries and frames keep one order.
        let guard = lock(&self.0.tx);
        {
            // Checked under the lock `break_connection` drains (see `send_frame`).
            let mut atomics = lock(&self.0.atomics);
            if !self.0.is_connected() {
                drop(atomics);
                drop(guard);
                self.0.flush_request(wr_id);
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
        let sent = self.0.send_all(&[RawIov {
            ptr: encoded.as_ptr(),
            len: HEADER_LEN,
        }]);
        drop(guard);
        if sent.is_err() {
            // Flushes the pending entry, and with it this request.
            self.0.break_connection();
        }
        self.0.flush_ctrl();
        Ok(())
    }
}

impl Shared {
    /// Removes the ack-awaiting request `wr_id`; returns its opcode.
    pub(super) fn settle(&self, wr_id: u64) -> Option<Opcode> {
        let mut outstanding = lock(&self.outstanding);
        let at = outstanding.iter().position(|(id, _)| *id == wr_id)?;
        outstanding.remove(at).map(|(_, op)| op)
    }

    pub(super) fn queue_ctrl(&self, h: &Header) {
        tracing::trace!(qp = self.qp_num, op = h.op, wr_id = h.wr_id, "queue ctrl");
        lock(&self.ctrl).extend_from_slice(&h.encode());
        self.has_ctrl.store(true, Ordering::Release);
    }

    /// Sends owed control frames if the socket is free; whoever holds it sends them otherwise.
    pub(super) fn flush_ctrl(&self) {
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
    pub(super) fn send_frame(
        &self,
        h: &Header,
        payload: *const u8,
        payload_len: usize,
    ) -> Result<()> {
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
    pub(super) fn flush_request(&self, wr_id: u64) {
        self.send_cq
            .push(self.failed(wr_id, Status::WrFlushError), true);
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
