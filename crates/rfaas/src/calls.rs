//! Calls in flight: posting an invocation into a free input slot, handing each result to its
//! slot, and noticing that the executor went away.
//!
//! Results are dispatched by whichever thread polls the receive queue: a blocking call polls
//! it itself (hot), and the background poller does so while asynchronous calls are in flight,
//! so blocking and asynchronous calls can be mixed.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use function_library::FunctionLibrary;
use rdmalib::{Completion, CompletionQueue, Context, MemoryRegion, ProtectionDomain, SendFlags};
use rfaas_protocol::ProtocolError;
use rfaas_protocol::invocation::{
    INPUT_HEADER_LEN, InputHeader, ReturnCode, invocation_imm, parse_result_imm,
};

use crate::allocation::ManagerLink;
use crate::buffers::{InputBuffer, OutputBuffer};
use crate::error::{Error, Result};
use crate::slots::{ABANDONED, DONE, FREE, LOST, PENDING, ResultSlot, Thread};
use crate::spec::{FunctionId, Wait};

/// Empty polls between two looks at the clock while a blocking call busy-polls.
const POLLS_PER_CLOCK_READ: u32 = 64;
/// Longest sleep of a sleeping call between two looks at its result.
const SLEEP_SLICE: Duration = Duration::from_millis(20);

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
    pub call_timeout: Duration,
    pub wait: Wait,
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
    /// `solicited` asks the executor to wake a caller sleeping on the completion channel.
    pub(crate) fn submit(
        &self,
        thread: usize,
        function: FunctionId,
        input: &InputBuffer,
        size: usize,
        output: &OutputBuffer,
        solicited: bool,
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
        let slot = match t.claim() {
            Some(slot) => slot,
            None => {
                // Slots of abandoned calls come free only when their late results are
                // dispatched, and nobody polls for those: take what has arrived, then retry.
                self.dispatch_arrived()?;
                t.claim().ok_or(Error::Busy {
                    thread,
                    slots: t.slot_count,
                })?
            }
        };
        let id = t.next_id(slot);
        let index = t.slot_base + slot;
        let rs = &self.slots[index];
        rs.id.store(u32::from(id), Ordering::Relaxed);
        rs.state.store(PENDING, Ordering::Release);
        let header = InputHeader {
            result_addr: output.mr.addr(),
            result_rkey: output.mr.rkey(),
            result_capacity: u32::try_from(output.capacity()).unwrap_or(u32::MAX),
        };
        input.mr.write(0, &header.encode())?;
        let flags = SendFlags::selective(self.sends.fetch_add(1, Ordering::Relaxed));
        let remote = t.input.offset(slot as u32 * t.slot_size);
        let posted = t.conn.post_write_with_imm(
            index as u64,
            input.mr.sge(0, INPUT_HEADER_LEN + size)?,
            remote,
            invocation_imm(id, function.0, solicited),
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

    /// Dispatches the results that are in the receive queue now, without waiting.
    fn dispatch_arrived(&self) -> Result<()> {
        let mut wcs = [Completion::default(); 16];
        loop {
            let n = self.recv_cq.poll(&mut wcs)?;
            for wc in &wcs[..n] {
                self.dispatch(wc);
            }
            if n < wcs.len() {
                return Ok(());
            }
        }
    }

    fn lost_or(&self, e: rdmalib::Error) -> Error {
        match &*self.lost.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(why) => Error::ExecutorLost(why.clone()),
            None => Error::Rdma(e),
        }
    }

    /// Waits for slot `index`'s result, the caller's way ([`Wait`]) and at most `timeout`;
    /// on timeout the slot is abandoned and the error says so.
    pub(crate) fn wait_for(&self, index: usize, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let arrived = match self.wait {
            Wait::Poll => self.poll_until(index, deadline)?,
            Wait::Sleep => self.sleep_until(index, deadline)?,
        };
        if arrived {
            Ok(())
        } else {
            self.abandon(index, timeout)
        }
    }

    /// Busy-polls the receive queue until slot `index` has its result or `deadline` passes.
    fn poll_until(&self, index: usize, deadline: Instant) -> Result<bool> {
        let slot = &self.slots[index];
        let mut wcs = [Completion::default(); 16];
        let mut empty = 0u32;
        while slot.state.load(Ordering::Acquire) != DONE {
            let n = self.recv_cq.poll(&mut wcs)?;
            for wc in &wcs[..n] {
                self.dispatch(wc);
            }
            if n == 0 {
                empty += 1;
                if empty.is_multiple_of(POLLS_PER_CLOCK_READ) && Instant::now() >= deadline {
                    return Ok(slot.state.load(Ordering::Acquire) == DONE);
                }
            }
        }
        Ok(true)
    }

    /// Sleeps on the receive queue's channel, woken by solicited completions, until slot
    /// `index` has its result or `deadline` passes.
    fn sleep_until(&self, index: usize, deadline: Instant) -> Result<bool> {
        let slot = &self.slots[index];
        let mut wcs = [Completion::default(); 16];
        loop {
            let mut n = self.recv_cq.poll(&mut wcs)?;
            if n == 0 && slot.state.load(Ordering::Acquire) != DONE {
                // Arm, then poll once more: completions that came before arming do not ring.
                self.recv_cq.req_notify(true)?;
                n = self.recv_cq.poll(&mut wcs)?;
            }
            for wc in &wcs[..n] {
                self.dispatch(wc);
            }
            if slot.state.load(Ordering::Acquire) == DONE {
                return Ok(true);
            }
            if n == 0 {
                let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                    return Ok(false);
                };
                // The result's solicited completion rings the channel even when the
                // background poller takes it; the cap only bounds a missed wake-up.
                self.recv_cq.wait(Some(left.min(SLEEP_SLICE)))?;
            }
        }
    }

    /// The caller gives up on slot `index` after `waited`: a timeout error, and the slot is
    /// freed only when the late result arrives. `Ok` if the result came in the meantime.
    fn abandon(&self, index: usize, waited: Duration) -> Result<()> {
        let rs = &self.slots[index];
        match rs
            .state
            .compare_exchange(PENDING, ABANDONED, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => Err(Error::Timeout(format!(
                "invocation {} on executor thread {} did not answer within {waited:?}",
                rs.id.load(Ordering::Relaxed),
                rs.thread
            ))),
            Err(_) => Ok(()),
        }
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
        if code == ReturnCode::Shutdown as u16 {
            self.mark_lost(format!(
                "executor thread {thread} shut down: its executor manager went away"
            ));
            return;
        }
        let rs = &self.slots[t.result_slot(id)];
        if rs.id.load(Ordering::Relaxed) != u32::from(id) {
            tracing::warn!("result for unknown invocation {id} on thread {thread}; ignored");
            return;
        }
        match rs.state.load(Ordering::Acquire) {
            PENDING => {}
            ABANDONED => {
                tracing::debug!("late result of abandoned invocation {id} on thread {thread}");
                rs.state.store(FREE, Ordering::Release);
                t.release(rs.slot);
                return;
            }
            _ => {
                tracing::warn!(
                    "result for invocation {id} on thread {thread}, which is not in flight; ignored"
                );
                return;
            }
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

    /// Takes a finished slot's result and frees the slot; a function's error message is read
    /// from `output` when given.
    pub(crate) fn take(&self, index: usize, output: Option<&OutputBuffer>) -> Result<u32> {
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
            Some(ReturnCode::FunctionError) => Err(Error::Function {
                len,
                message: output.map(|out| {
                    let mut bytes = vec![0u8; (len as usize).min(out.capacity())];
                    match out.read(&mut bytes) {
                        Ok(()) => String::from_utf8_lossy(&bytes).into_owned(),
                        Err(e) => format!("(its message could not be read: {e})"),
                    }
                }),
            }),
            Some(rc) => Err(Error::Invocation(rc)),
            None => Err(Error::Protocol(ProtocolError::Invalid {
                record: "result",
                field: "return code",
                value: u64::from(code),
            })),
        }
    }

    /// Waits, without polling, until the background poller delivered slot `index`'s result
    /// or `timeout` passes; on timeout the slot is abandoned and the error says so.
    pub(crate) fn wait_delivered(&self, index: usize, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let slot = &self.slots[index];
        let mut guard = self.done_lock.lock().unwrap_or_else(|p| p.into_inner());
        while slot.state.load(Ordering::Acquire) != DONE {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                drop(guard);
                return self.abandon(index, timeout);
            };
            guard = self
                .done
                .wait_timeout(guard, left.min(Duration::from_millis(10)))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        Ok(())
    }

    /// Gives slot `index` up without waiting: taken if its result is there, else abandoned.
    pub(crate) fn give_up(&self, index: usize) {
        if self.abandon(index, Duration::ZERO).is_ok() {
            let _ = self.take(index, None);
        }
    }
}

/// Delivers results of asynchronous calls while any are in flight; sleeps otherwise. The
/// caller logs the start before it spawns this, so that the line cannot come after an error the
/// application prints right away.
pub(crate) fn background_poller(inner: &Inner) {
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
