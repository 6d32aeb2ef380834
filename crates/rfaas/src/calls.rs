//! Calls in flight: posting an invocation into a free input slot, handing each result to its
//! slot, and noticing that the executor went away.
//!
//! Results are dispatched by whichever thread polls the receive queue: a blocking call polls
//! it itself (hot), and the background poller does so while asynchronous calls are in flight,
//! so blocking and asynchronous calls can be mixed.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use function_library::FunctionLibrary;
use rdmalib::{Completion, CompletionQueue, Context, MemoryRegion, ProtectionDomain, SendFlags};
use rfaas_protocol::ProtocolError;
use rfaas_protocol::invocation::{
    INPUT_HEADER_LEN, InputHeader, ReturnCode, invocation_imm, parse_result_imm,
};

use crate::allocation::ManagerLink;
use crate::buffers::{InputBuffer, OutputBuffer};
use crate::error::{Error, Result};
use crate::slots::{DONE, FREE, LOST, PENDING, ResultSlot, Thread};
use crate::spec::FunctionId;

/// What an executor's calls share, between the caller's threads and the background poller.
pub(crate) struct Inner {
    pub threads: Vec<Thread>,
    pub slots: Vec<ResultSlot>,
    pub send_cq: CompletionQueue,
    pub recv_cq: CompletionQueue,
    /// The empty buffer result receives are posted with.
    pub empty: MemoryRegion,
    pub library: FunctionLibrary,
    pub allocation_id: u32,
    pub max_payload: u32,
    pub sends: AtomicU64,
    pub lost: Mutex<Option<String>>,
    /// Set with `lost`, so the hot path checks an atomic instead of taking the lock.
    pub is_lost: AtomicBool,
    /// Woken when a result arrives for an asynchronous call, or when work for the poller appears.
    pub done: Condvar,
    pub done_lock: Mutex<()>,
    pub async_in_flight: AtomicUsize,
    pub stop: AtomicBool,
    pub manager: ManagerLink,
    pub pd: ProtectionDomain,
    // Dropped last: everything above belongs to it.
    pub _ctx: Arc<Context>,
}

impl Inner {
    pub(crate) fn check_lost(&self) -> Result<()> {
        if !self.is_lost.load(Ordering::Acquire) {
            return Ok(());
        }
        match &*self.lost.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(why) => Err(Error::ExecutorLost(why.clone())),
            None => Ok(()),
        }
    }

    /// Claims a slot, writes the header and posts the invocation; returns the slot index.
    pub(crate) fn submit(
        &self,
        thread: usize,
        function: FunctionId,
        input: &InputBuffer,
        size: usize,
        output: &OutputBuffer,
    ) -> Result<usize> {
        self.check_lost()?;
        let t = self.threads.get(thread).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "thread {thread} does not exist; the executor has {}",
                self.threads.len()
            ))
        })?;
        if size > input.capacity() || size > self.max_payload as usize {
            return Err(Error::InvalidArgument(format!(
                "payload of {size} bytes exceeds the allocation's max payload of {} bytes (input buffer holds {})",
                self.max_payload,
                input.capacity()
            )));
        }
        if output.capacity() < size {
            return Err(Error::InvalidArgument(format!(
                "output buffer of {} bytes is smaller than the {size}-byte payload",
                output.capacity()
            )));
        }
        let slot = t.claim().ok_or(Error::Busy {
            thread,
            slots: t.slot_count,
        })?;
        let id = t.next_id(slot);
        let index = t.slot_base + slot;
        let rs = &self.slots[index];
        rs.id.store(u32::from(id), Ordering::Relaxed);
        rs.state.store(PENDING, Ordering::Release);
        let header = InputHeader {
            result_addr: output.mr.addr(),
            result_rkey: output.mr.rkey(),
        };
        input.mr.write(0, &header.encode())?;
        let flags = SendFlags::selective(self.sends.fetch_add(1, Ordering::Relaxed));
        let remote = t.input.offset(slot as u32 * t.slot_size);
        let posted = t.conn.post_write_with_imm(
            index as u64,
            input.mr.sge(0, INPUT_HEADER_LEN + size)?,
            remote,
            invocation_imm(id, function.0, false),
            flags,
        );
        if let Err(e) = posted {
            rs.state.store(FREE, Ordering::Release);
            t.release(slot);
            return Err(self.lost_or(e));
        }
        if flags.signaled {
            let mut wcs = [Completion::default(); 8];
            while self.send_cq.poll(&mut wcs)? > 0 {}
        }
        Ok(index)
    }

    fn lost_or(&self, e: rdmalib::Error) -> Error {
        match &*self.lost.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(why) => Error::ExecutorLost(why.clone()),
            None => Error::Rdma(e),
        }
    }

    /// Polls the receive queue until slot `index` has its result.
    pub(crate) fn wait_hot(&self, index: usize) -> Result<()> {
        let slot = &self.slots[index];
        let mut wcs = [Completion::default(); 16];
        while slot.state.load(Ordering::Acquire) != DONE {
            let n = self.recv_cq.poll(&mut wcs)?;
            for wc in &wcs[..n] {
                self.dispatch(wc);
            }
        }
        Ok(())
    }

    /// Hands a result to its slot and reposts the receive it used (its work-request id is
    /// the thread's index).
    fn dispatch(&self, wc: &Completion) {
        if !wc.is_ok() {
            self.mark_lost(format!(
                "connection to executor thread failed ({:?})",
                wc.status
            ));
            return;
        }
        let thread = wc.wr_id as usize;
        let Some(t) = self.threads.get(thread) else {
            tracing::warn!("a completion for unknown executor thread {thread}; ignored");
            return;
        };
        if let Err(e) = t
            .conn
            .post_recv(wc.wr_id, self.empty.sge(0, 0).expect("empty sge fits"))
        {
            tracing::debug!("reposting a receive failed: {e}");
        }
        let (id, code) = parse_result_imm(wc.imm.unwrap_or(0));
        let rs = &self.slots[t.result_slot(id)];
        if rs.id.load(Ordering::Relaxed) != u32::from(id)
            || rs.state.load(Ordering::Acquire) != PENDING
        {
            tracing::warn!("result for unknown invocation {id} on thread {thread}; ignored");
            return;
        }
        rs.code.store(u32::from(code), Ordering::Relaxed);
        rs.len.store(wc.byte_len, Ordering::Relaxed);
        rs.state.store(DONE, Ordering::Release);
        if self.async_in_flight.load(Ordering::Relaxed) > 0 {
            self.done.notify_all();
        }
    }

    /// Records why the executor is gone (as its manager tells, else `fallback`) and completes
    /// every call in flight with that.
    pub(crate) fn mark_lost(&self, fallback: String) {
        let mut lost = self.lost.lock().unwrap_or_else(|p| p.into_inner());
        if lost.is_none() {
            let why = self
                .manager
                .wait_exit(self.allocation_id)
                .unwrap_or(fallback);
            tracing::warn!("allocation {}: {why}", self.allocation_id);
            *lost = Some(why);
            self.is_lost.store(true, Ordering::Release);
        }
        drop(lost);
        for rs in &self.slots {
            if rs
                .state
                .compare_exchange(PENDING, DONE, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                rs.code.store(LOST, Ordering::Relaxed);
            }
        }
        self.done.notify_all();
    }

    /// Takes a finished slot's result and frees the slot.
    pub(crate) fn take(&self, index: usize) -> Result<u32> {
        let rs = &self.slots[index];
        let (code, len) = (
            rs.code.load(Ordering::Relaxed),
            rs.len.load(Ordering::Relaxed),
        );
        rs.state.store(FREE, Ordering::Release);
        self.threads[rs.thread].release(rs.slot);
        if code == LOST {
            self.check_lost()?;
            return Err(Error::ExecutorLost("the executor went away".into()));
        }
        match ReturnCode::from_raw(code as u16) {
            Some(ReturnCode::Success) => Ok(len),
            Some(rc) => Err(Error::Invocation(rc)),
            None => Err(Error::Protocol(ProtocolError::Invalid {
                record: "result",
                field: "return code",
                value: u64::from(code),
            })),
        }
    }

    /// Waits, without polling, until the background poller delivered slot `index`'s result.
    pub(crate) fn wait_delivered(&self, index: usize) {
        let slot = &self.slots[index];
        let mut guard = self.done_lock.lock().unwrap_or_else(|p| p.into_inner());
        while slot.state.load(Ordering::Acquire) != DONE {
            guard = self
                .done
                .wait_timeout(guard, Duration::from_millis(10))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

/// Delivers results of asynchronous calls while any are in flight; sleeps otherwise.
pub(crate) fn background_poller(inner: &Inner) {
    tracing::info!("Background thread starts waiting for events");
    let mut wcs = [Completion::default(); 16];
    while !inner.stop.load(Ordering::SeqCst) {
        if inner.async_in_flight.load(Ordering::SeqCst) == 0 {
            let guard = inner.done_lock.lock().unwrap_or_else(|p| p.into_inner());
            let _ = inner.done.wait_timeout(guard, Duration::from_millis(50));
            continue;
        }
        match inner.recv_cq.poll(&mut wcs) {
            Ok(0) => std::thread::yield_now(),
            Ok(n) => {
                for wc in &wcs[..n] {
                    inner.dispatch(wc);
                }
            }
            Err(e) => {
                inner.mark_lost(format!("polling results failed: {e}"));
                break;
            }
        }
    }
    tracing::info!("Background thread stops waiting for events");
}
