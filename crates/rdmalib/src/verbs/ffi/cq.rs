//! Completion queues and their completion channels.

use super::*;

struct CompChannel(NonNull<sys::ibv_comp_channel>);

impl Drop for CompChannel {
    fn drop(&mut self) {
        // SAFETY: created by ibv_create_comp_channel; the CQ using it is destroyed first
        // (Cq::drop runs before Cq's fields drop).
        let ret = unsafe { sys::ibv_destroy_comp_channel(self.0.as_ptr()) };
        if ret != 0 {
            tracing::warn!(
                "ibv_destroy_comp_channel: {}",
                io::Error::from_raw_os_error(ret)
            );
        }
    }
}

/// A completion queue with its own completion channel (non-blocking fd).
pub(crate) struct Cq {
    cq: NonNull<sys::ibv_cq>,
    channel: CompChannel,
    fd: RawFd,
    dev: Arc<Device>,
}

// SAFETY: ibv_poll_cq, ibv_req_notify_cq and ibv_get_cq_event are thread-safe (invariant 3);
// events are acknowledged right after they are taken, so no state is kept on our side.
unsafe impl Send for Cq {}
// SAFETY: see Send.
unsafe impl Sync for Cq {}

impl Drop for Cq {
    fn drop(&mut self) {
        // SAFETY: created in `create`, destroyed once; every QP using it holds an Arc<Cq> and
        // every channel event was acknowledged in `wait`.
        let ret = unsafe { sys::ibv_destroy_cq(self.cq.as_ptr()) };
        if ret != 0 {
            tracing::warn!(
                "ibv_destroy_cq on {}: {}",
                self.dev.name,
                io::Error::from_raw_os_error(ret)
            );
        }
    }
}

/// Completions taken per `ibv_poll_cq` call.
const POLL_BATCH: usize = 16;

impl Cq {
    pub(in crate::verbs) fn create(dev: &Arc<Device>, capacity: u32) -> Result<Arc<Cq>> {
        let max = dev.limits.max_cqe;
        let cqe = c_int::try_from(capacity)
            .ok()
            .filter(|&c| c > 0 && (max == 0 || capacity <= max));
        let Some(cqe) = cqe else {
            return Err(Error::InvalidArgument(format!(
                "a completion queue of {capacity} entries; {} allows 1 to {max}",
                dev.name
            )));
        };
        // SAFETY: the context is open while `dev` lives.
        let channel = unsafe { sys::ibv_create_comp_channel(dev.ctx.as_ptr()) };
        let channel = NonNull::new(channel)
            .map(CompChannel)
            .ok_or_else(|| errno_error(|| format!("ibv_create_comp_channel on {}", dev.name)))?;
        // SAFETY: the channel is live; `fd` is set by its creation and never changes.
        let fd = unsafe { (*channel.0.as_ptr()).fd };
        set_nonblocking(fd)
            .map_err(|e| Error::io("making the completion channel non-blocking", e))?;
        // SAFETY: context and channel are live; the CQ keeps no pointer to our stack.
        let cq = unsafe {
            sys::ibv_create_cq(
                dev.ctx.as_ptr(),
                cqe,
                ptr::null_mut(),
                channel.0.as_ptr(),
                0,
            )
        };
        let cq = NonNull::new(cq).ok_or_else(|| {
            errno_error(|| format!("ibv_create_cq of {capacity} entries on {}", dev.name))
        })?;
        Ok(Arc::new(Cq {
            cq,
            channel,
            fd,
            dev: dev.clone(),
        }))
    }

    pub(in crate::verbs) fn device(&self) -> &Arc<Device> {
        &self.dev
    }

    pub(super) fn raw(&self) -> *mut sys::ibv_cq {
        self.cq.as_ptr()
    }

    /// `ibv_poll_cq` into `out`, in batches, until the queue is empty or `out` is full.
    pub(in crate::verbs) fn poll(&self, out: &mut [Completion]) -> Result<usize> {
        let mut done = 0;
        while done < out.len() {
            let want = (out.len() - done).min(POLL_BATCH);
            // Only the entries handed to the provider are initialised (zeroed: a valid
            // ibv_wc, since it holds integers and a union of two u32), because providers may
            // leave fields of failed completions unwritten.
            let mut wc = [const { MaybeUninit::<sys::ibv_wc>::uninit() }; POLL_BATCH];
            for entry in &mut wc[..want] {
                *entry = MaybeUninit::zeroed();
            }
            // SAFETY: the CQ is live and `wc` has room for `want` entries.
            let n = unsafe {
                sys::ibv_poll_cq(self.cq.as_ptr(), want as c_int, wc.as_mut_ptr().cast())
            };
            let Ok(n) = usize::try_from(n) else {
                return Err(Error::io(
                    format!("ibv_poll_cq on {}", self.dev.name),
                    io::Error::other(format!("returned {n}")),
                ));
            };
            let n = n.min(want);
            for (dst, src) in out[done..done + n].iter_mut().zip(&wc[..n]) {
                // SAFETY: entries below `want` were zeroed (a valid ibv_wc) and then written
                // by the provider.
                *dst = completion(unsafe { src.assume_init_ref() });
            }
            done += n;
            if n < want {
                break;
            }
        }
        Ok(done)
    }

    /// `ibv_req_notify_cq`.
    pub(in crate::verbs) fn req_notify(&self, solicited_only: bool) -> Result<()> {
        // SAFETY: the CQ is live.
        let ret = unsafe { sys::ibv_req_notify_cq(self.cq.as_ptr(), c_int::from(solicited_only)) };
        check_ibv(ret, || format!("ibv_req_notify_cq on {}", self.dev.name))
    }

    /// Takes and acknowledges one event of the channel, if one is there (never blocks).
    pub(in crate::verbs) fn take_event(&self) -> Result<bool> {
        let mut cq: *mut sys::ibv_cq = ptr::null_mut();
        let mut ctx: *mut c_void = ptr::null_mut();
        // SAFETY: the channel is live; the out pointers are valid. The fd is non-blocking, so
        // this returns EAGAIN when there is no event (or another thread took it first).
        let ret = unsafe { sys::ibv_get_cq_event(self.channel.0.as_ptr(), &mut cq, &mut ctx) };
        if ret == 0 {
            // SAFETY: `cq` is the CQ the event belongs to (ours: the channel serves only it);
            // one event taken, one acknowledged.
            unsafe { sys::ibv_ack_cq_events(cq, 1) };
            return Ok(true);
        }
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::WouldBlock {
            return Ok(false);
        }
        Err(Error::io(
            format!("ibv_get_cq_event on {}", self.dev.name),
            e,
        ))
    }

    /// The completion channel's file descriptor.
    pub(in crate::verbs) fn fd(&self) -> RawFd {
        self.fd
    }
}

/// An `ibv_wc` as a [`Completion`]: every field for a success, only `wr_id`, `status` and
/// `qp_num` for a failure (verbs leaves the others undefined there).
fn completion(wc: &sys::ibv_wc) -> Completion {
    use sys::ibv_wc_opcode as op;
    use sys::ibv_wc_status as st;
    let status = match wc.status {
        st::IBV_WC_SUCCESS => Status::Success,
        st::IBV_WC_LOC_LEN_ERR => Status::LocalLengthError,
        st::IBV_WC_LOC_PROT_ERR => Status::LocalProtectionError,
        st::IBV_WC_LOC_ACCESS_ERR => Status::LocalAccessError,
        st::IBV_WC_REM_ACCESS_ERR => Status::RemoteAccessError,
        st::IBV_WC_REM_INV_REQ_ERR => Status::RemoteInvalidRequest,
        st::IBV_WC_REM_OP_ERR => Status::RemoteOperationError,
        st::IBV_WC_LOC_QP_OP_ERR => Status::LocalQpOperationError,
        st::IBV_WC_WR_FLUSH_ERR => Status::WrFlushError,
        st::IBV_WC_RETRY_EXC_ERR => Status::RetryExceeded,
        other => Status::Other(other),
    };
    if status != Status::Success {
        return Completion::error(wc.wr_id, status, wc.qp_num);
    }
    let opcode = match wc.opcode {
        op::IBV_WC_SEND => Opcode::Send,
        op::IBV_WC_RDMA_WRITE => Opcode::Write,
        op::IBV_WC_RDMA_READ => Opcode::Read,
        op::IBV_WC_FETCH_ADD => Opcode::FetchAdd,
        op::IBV_WC_RECV => Opcode::Recv,
        op::IBV_WC_RECV_RDMA_WITH_IMM => Opcode::RecvRdmaWithImm,
        // Requests this crate never posts (compare-and-swap, binds, TSO, ...).
        other => {
            tracing::warn!("ignoring the opcode {other} of a completion");
            Opcode::Send
        }
    };
    let imm = (wc.wc_flags & sys::ibv_wc_flags::IBV_WC_WITH_IMM.0 != 0)
        // SAFETY: both union members are u32, so either reads an initialised u32.
        .then(|| u32::from_be(unsafe { wc.imm_data_invalidated_rkey_union.imm_data }));
    Completion::success(wc.wr_id, opcode, wc.byte_len, imm, wc.qp_num)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_completions_map_status_opcode_and_immediate() {
        // SAFETY: all-zero is a valid ibv_wc.
        let mut wc: sys::ibv_wc = unsafe { std::mem::zeroed() };
        wc.wr_id = 7;
        wc.opcode = sys::ibv_wc_opcode::IBV_WC_RECV_RDMA_WITH_IMM;
        wc.byte_len = 5;
        wc.qp_num = 99;
        wc.wc_flags = sys::ibv_wc_flags::IBV_WC_WITH_IMM.0;
        wc.imm_data_invalidated_rkey_union.imm_data = 42u32.to_be();
        let c = completion(&wc);
        assert_eq!(
            c,
            Completion {
                wr_id: 7,
                status: Status::Success,
                opcode: Some(Opcode::RecvRdmaWithImm),
                byte_len: 5,
                imm: Some(42),
                qp_num: 99
            }
        );
        // A failed completion keeps the request, the status and the QP only, whatever else
        // the provider left in the entry.
        wc.status = sys::ibv_wc_status::IBV_WC_WR_FLUSH_ERR;
        assert_eq!(
            completion(&wc),
            Completion {
                wr_id: 7,
                status: Status::WrFlushError,
                opcode: None,
                byte_len: 0,
                imm: None,
                qp_num: 99
            }
        );
        // Verbs defines byte_len of send-side completions only for reads and atomics.
        wc.status = sys::ibv_wc_status::IBV_WC_SUCCESS;
        wc.opcode = sys::ibv_wc_opcode::IBV_WC_RDMA_WRITE;
        wc.wc_flags = 0;
        assert_eq!(
            (completion(&wc).opcode, completion(&wc).byte_len),
            (Some(Opcode::Write), 0)
        );
        wc.status = sys::ibv_wc_status::IBV_WC_RNR_RETRY_EXC_ERR;
        assert_eq!(completion(&wc).status, Status::Other(13));
    }
}
