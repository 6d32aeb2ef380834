//! The client side of an allocation: [`Executor::allocate`] asks an executor manager for an
//! executor, ships the function library, and then invokes functions by writing straight into
//! the executor threads' input buffers.
//!
//! Results are dispatched by whichever thread polls the receive queue: a blocking call polls
//! it itself (hot), and a background poller does so while asynchronous calls are in flight,
//! so blocking and asynchronous calls can be mixed.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use function_library::FunctionLibrary;
use rdmalib::{
    Access, Completion, CompletionQueue, Connection, Context, DeviceConfig, MemoryRegion,
    ProtectionDomain, QpConfig, RemoteBuffer, SendFlags, Status,
};

use crate::allocation::{self, Handshake, ManagerLink};
use crate::buffers::{InputBuffer, OutputBuffer};
use crate::error::{Error, Result};
use crate::lease::Lease;
use crate::protocol::{
    AllocationRequest, INPUT_HEADER_LEN, InputHeader, ReturnCode, Sandbox, ThreadReady,
    invocation_imm, parse_result_imm,
};

/// Every this many invocations one write is signaled, so send queues drain on every provider.
const SIGNAL_EVERY: u64 = 32;
/// Largest number of input slots per executor thread (a bit mask tracks them).
pub const MAX_INPUT_BUFFERS: u16 = 64;

/// What to allocate.
#[derive(Clone, Debug)]
pub struct AllocationSpec {
    /// Executor threads (must not exceed the lease).
    pub cores: u16,
    /// Memory in MiB.
    pub memory_mb: u32,
    /// -1 always hot, 0 always warm, >0 ms of idle hot polling before the executor sleeps.
    pub hot_timeout_ms: i32,
    /// Largest payload of one invocation.
    pub max_payload: u32,
    /// Input slots per thread: calls that may be in flight on one thread.
    pub input_buf_count: u16,
    /// Per-invocation time limit for wasm functions (0: none).
    pub time_limit_ms: u32,
    /// Sandbox; detected from the code when `None`.
    pub sandbox: Option<Sandbox>,
    /// Port this client listens on for its executors (0: any free port).
    pub listen_port: u16,
    /// How long each step of the allocation may take.
    pub timeout: Duration,
}

impl Default for AllocationSpec {
    fn default() -> Self {
        AllocationSpec {
            cores: 1,
            memory_mb: 256,
            hot_timeout_ms: -1,
            max_payload: 4096,
            input_buf_count: 2,
            time_limit_ms: 0,
            sandbox: None,
            listen_port: 0,
            timeout: Duration::from_secs(30),
        }
    }
}

/// A function of the allocated library, resolved once by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FunctionId(u16);

/// How long each phase of [`Executor::allocate`] took.
#[derive(Clone, Copy, Debug, Default)]
pub struct AllocationTimes {
    /// Connecting to the executor manager.
    pub connect: Duration,
    /// Sending the request until the manager accepted it.
    pub submit: Duration,
    /// Until every executor thread connected back.
    pub spawn_connect: Duration,
    /// Shipping the code until every thread is ready.
    pub initialize: Duration,
}

const FREE: u8 = 0;
const PENDING: u8 = 1;
const DONE: u8 = 2;
/// Result code stored when the executor went away before answering.
const LOST: u32 = u32::MAX;

struct ResultSlot {
    /// Executor thread and input slot this result slot belongs to (fixed).
    thread: usize,
    slot: usize,
    state: AtomicU8,
    id: AtomicU32,
    code: AtomicU32,
    len: AtomicU32,
}

struct Thread {
    conn: Connection,
    qp_num: u32,
    input: RemoteBuffer,
    slot_size: u32,
    slot_count: u16,
    /// Index of this thread's first result slot.
    slot_base: usize,
    /// Invocation ids cycle through `id_span * slot_count` values (slot = id % slot_count).
    id_span: u32,
    /// Bit i set: slot i is free.
    free: AtomicU64,
    seq: AtomicU32,
}

struct Inner {
    threads: Vec<Thread>,
    slots: Vec<ResultSlot>,
    send_cq: CompletionQueue,
    recv_cq: CompletionQueue,
    empty: MemoryRegion,
    library: FunctionLibrary,
    allocation_id: u32,
    max_payload: u32,
    sends: AtomicU64,
    lost: Mutex<Option<String>>,
    /// Set with `lost`, so the hot path checks an atomic instead of taking the lock.
    is_lost: AtomicBool,
    /// Woken when a result arrives for an asynchronous call, or when work for the poller appears.
    done: Condvar,
    done_lock: Mutex<()>,
    async_in_flight: AtomicUsize,
    stop: AtomicBool,
    manager: ManagerLink,
    pd: ProtectionDomain,
    // Dropped last: everything above belongs to it.
    _ctx: Context,
}

/// An allocated executor: leased cores running the shipped functions.
pub struct Executor {
    inner: Arc<Inner>,
    poller: Option<JoinHandle<()>>,
    times: AllocationTimes,
}

/// An asynchronous invocation in flight; [`wait`](Self::wait) for its result.
#[must_use = "an invocation holds an input slot until its result is taken"]
pub struct Invocation {
    inner: Arc<Inner>,
    index: usize,
    thread: usize,
    slot: usize,
    taken: bool,
}

impl Executor {
    /// Allocates an executor on the manager named by `lease`, with `device` for this side.
    pub fn allocate(
        device: &DeviceConfig,
        lease: &Lease,
        code: &[u8],
        spec: &AllocationSpec,
    ) -> Result<Executor> {
        let library = allocation::inspect(code, spec.sandbox)?;
        let sandbox = Sandbox::from(library.kind());
        allocation::check(spec, lease)?;
        let mut times = AllocationTimes::default();
        let started = Instant::now();
        let ctx = Context::open(device)?;
        let pd = ctx.alloc_pd()?;
        let listener = ctx.listen(spec.listen_port)?;
        tracing::info!(
            "Listening on device {}, port {}",
            device.name,
            listener.local_addr().port()
        );
        let manager = ManagerLink::connect(&ctx, &pd, lease, spec.timeout)?;
        times.connect = started.elapsed();

        let request = AllocationRequest {
            lease_id: lease.lease_id,
            cores: spec.cores,
            input_buf_count: spec.input_buf_count,
            hot_timeout_ms: spec.hot_timeout_ms,
            max_payload: spec.max_payload,
            code_size: code.len() as u32,
            memory_mb: spec.memory_mb,
            sandbox,
            time_limit_ms: spec.time_limit_ms,
            client: listener.local_addr(),
        };
        let allocation_id = manager.request(&request, lease, spec.timeout)?;
        times.submit = started.elapsed() - times.connect;
        tracing::debug!("allocation {allocation_id} accepted by {}", lease.node);

        let send_cq = ctx.create_cq(256)?;
        let recv_cq =
            ctx.create_cq(u32::from(spec.cores) * u32::from(spec.input_buf_count) * 2 + 64)?;
        let qp = QpConfig::new(&send_cq, &recv_cq)
            .max_inline_data(device.max_inline_data)
            .max_recv_wr(u32::from(spec.input_buf_count) * 2 + 4);
        let handshake = Handshake {
            pd: &pd,
            manager: &manager,
            allocation_id,
            spec,
        };
        let (conns, ready_buf) = handshake.accept_threads(&listener, &qp)?;
        times.spawn_connect = started.elapsed() - times.connect - times.submit;
        let ready = handshake.ship_code(code, &conns[0], &send_cq, &recv_cq, &ready_buf)?;

        let empty = pd.register(1, Access::LOCAL_WRITE)?;
        let threads = build_threads(conns, ready, &empty)?;
        times.initialize = started.elapsed() - times.connect - times.submit - times.spawn_connect;
        let slots = threads
            .iter()
            .enumerate()
            .flat_map(|(i, t)| (0..t.slot_count as usize).map(move |slot| ResultSlot::new(i, slot)))
            .collect();
        let inner = Arc::new(Inner {
            threads,
            slots,
            send_cq,
            recv_cq,
            empty,
            library,
            allocation_id,
            max_payload: spec.max_payload,
            sends: AtomicU64::new(0),
            lost: Mutex::new(None),
            is_lost: AtomicBool::new(false),
            done: Condvar::new(),
            done_lock: Mutex::new(()),
            async_in_flight: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            manager,
            pd,
            _ctx: ctx,
        });
        let poller_inner = inner.clone();
        let poller = std::thread::Builder::new()
            .name("rfaas-poller".into())
            .spawn(move || background_poller(&poller_inner))
            .map_err(|e| Error::InvalidArgument(format!("cannot start the result poller: {e}")))?;
        tracing::info!(
            "Allocated {} {} executor thread(s) on {} (allocation {allocation_id}) in {:.3} ms",
            spec.cores,
            sandbox,
            lease.node,
            started.elapsed().as_secs_f64() * 1e3
        );
        Ok(Executor {
            inner,
            poller: Some(poller),
            times,
        })
    }

    /// How long the phases of the allocation took.
    pub fn allocation_times(&self) -> AllocationTimes {
        self.times
    }

    /// The allocation's id at the manager.
    pub fn allocation_id(&self) -> u32 {
        self.inner.allocation_id
    }

    /// Names of the library's functions, in index order.
    pub fn functions(&self) -> &[String] {
        self.inner.library.functions()
    }

    /// Executor threads.
    pub fn cores(&self) -> usize {
        self.inner.threads.len()
    }

    /// Largest payload of one call.
    pub fn max_payload(&self) -> u32 {
        self.inner.max_payload
    }

    /// Resolves a function name; the error lists the names the library has.
    pub fn function(&self, name: &str) -> Result<FunctionId> {
        Ok(FunctionId(self.inner.library.require_index(name)?))
    }

    /// A registered input buffer for payloads of up to `capacity` bytes.
    pub fn input_buffer(&self, capacity: usize) -> Result<InputBuffer> {
        InputBuffer::new(&self.inner.pd, capacity)
    }

    /// A registered output buffer of `capacity` bytes.
    pub fn output_buffer(&self, capacity: usize) -> Result<OutputBuffer> {
        OutputBuffer::new(&self.inner.pd, capacity)
    }

    /// Runs `function` on the first `size` bytes of `input` on thread 0 and waits (hot
    /// polling) for the result in `output`; returns the result's length.
    pub fn execute(
        &self,
        function: FunctionId,
        input: &InputBuffer,
        size: usize,
        output: &OutputBuffer,
    ) -> Result<u32> {
        self.execute_on(0, function, input, size, output)
    }

    /// Like [`execute`](Self::execute), on executor thread `thread`.
    pub fn execute_on(
        &self,
        thread: usize,
        function: FunctionId,
        input: &InputBuffer,
        size: usize,
        output: &OutputBuffer,
    ) -> Result<u32> {
        let index = self.inner.submit(thread, function, input, size, output)?;
        self.inner.wait_hot(index)?;
        self.inner.take(index)
    }

    /// Starts `function` on thread `thread` and returns at once; the background poller
    /// completes it. `input` and `output` must not be used until the result is taken.
    pub fn submit(
        &self,
        thread: usize,
        function: FunctionId,
        input: &InputBuffer,
        size: usize,
        output: &OutputBuffer,
    ) -> Result<Invocation> {
        self.inner.async_in_flight.fetch_add(1, Ordering::SeqCst);
        let index = match self.inner.submit(thread, function, input, size, output) {
            Ok(index) => index,
            Err(e) => {
                self.inner.async_in_flight.fetch_sub(1, Ordering::SeqCst);
                return Err(e);
            }
        };
        self.inner.done.notify_all();
        let (t, slot) = (self.inner.slots[index].thread, self.inner.slots[index].slot);
        Ok(Invocation {
            inner: self.inner.clone(),
            index,
            thread: t,
            slot,
            taken: false,
        })
    }

    /// Runs `function` once per input, input `i` on thread `i % cores`, all at once; waits
    /// for every result and returns their lengths in order.
    pub fn execute_parallel(
        &self,
        function: FunctionId,
        inputs: &[(&InputBuffer, usize)],
        outputs: &[&OutputBuffer],
    ) -> Result<Vec<u32>> {
        if inputs.len() != outputs.len() {
            return Err(Error::InvalidArgument(format!(
                "{} inputs but {} outputs",
                inputs.len(),
                outputs.len()
            )));
        }
        let cores = self.cores();
        let mut indices = Vec::with_capacity(inputs.len());
        for (i, ((input, size), output)) in inputs.iter().zip(outputs).enumerate() {
            match self.inner.submit(i % cores, function, input, *size, output) {
                Ok(index) => indices.push(index),
                Err(e) => {
                    for index in indices {
                        let _ = self
                            .inner
                            .wait_hot(index)
                            .and_then(|()| self.inner.take(index));
                    }
                    return Err(e);
                }
            }
        }
        let mut lens = Vec::with_capacity(indices.len());
        let mut first_error = None;
        for index in indices {
            match self
                .inner
                .wait_hot(index)
                .and_then(|()| self.inner.take(index))
            {
                Ok(len) => lens.push(len),
                Err(e) => {
                    lens.push(0);
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(lens),
        }
    }

    /// Ends the allocation: the executor sees its client leave and exits.
    pub fn deallocate(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.inner.stop.store(true, Ordering::SeqCst);
        self.inner.done.notify_all();
        if let Some(poller) = self.poller.take() {
            let _ = poller.join();
        }
        for t in &self.inner.threads {
            t.conn.disconnect();
        }
        self.inner.manager.conn.disconnect();
    }
}

impl Drop for Executor {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl Invocation {
    /// Executor thread it runs on.
    pub fn thread(&self) -> usize {
        self.thread
    }

    /// Input slot it uses on that thread.
    pub fn slot(&self) -> usize {
        self.slot
    }

    /// Whether the result has arrived.
    pub fn is_done(&self) -> bool {
        self.inner.slots[self.index].state.load(Ordering::Acquire) == DONE
    }

    /// Blocks until the result arrives (the background poller delivers it); returns its length.
    pub fn wait(mut self) -> Result<u32> {
        self.taken = true;
        let slot = &self.inner.slots[self.index];
        let mut guard = self
            .inner
            .done_lock
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        while slot.state.load(Ordering::Acquire) != DONE {
            guard = self
                .inner
                .done
                .wait_timeout(guard, Duration::from_millis(10))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        drop(guard);
        self.inner.async_in_flight.fetch_sub(1, Ordering::SeqCst);
        self.inner.take(self.index)
    }
}

impl Drop for Invocation {
    fn drop(&mut self) {
        if !self.taken {
            let slot = &self.inner.slots[self.index];
            while slot.state.load(Ordering::Acquire) != DONE {
                std::thread::sleep(Duration::from_micros(100));
            }
            self.inner.async_in_flight.fetch_sub(1, Ordering::SeqCst);
            let _ = self.inner.take(self.index);
        }
    }
}

impl ResultSlot {
    fn new(thread: usize, slot: usize) -> Self {
        ResultSlot {
            thread,
            slot,
            state: AtomicU8::new(FREE),
            id: AtomicU32::new(0),
            code: AtomicU32::new(0),
            len: AtomicU32::new(0),
        }
    }
}

impl Inner {
    fn check_lost(&self) -> Result<()> {
        if !self.is_lost.load(Ordering::Acquire) {
            return Ok(());
        }
        match &*self.lost.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(why) => Err(Error::ExecutorLost(why.clone())),
            None => Ok(()),
        }
    }

    /// Claims a slot, writes the header and posts the invocation; returns the slot index.
    fn submit(
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
        let slot = claim(&t.free).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "all {} input buffers of executor thread {thread} are in use by calls in flight; allocate more (input_buf_count)",
                t.slot_count
            ))
        })?;
        let seq = t.seq.fetch_add(1, Ordering::Relaxed);
        let id = ((seq % t.id_span) * u32::from(t.slot_count) + slot as u32) as u16;
        let index = t.slot_base + slot;
        let rs = &self.slots[index];
        rs.id.store(u32::from(id), Ordering::Relaxed);
        rs.state.store(PENDING, Ordering::Release);
        let header = InputHeader {
            result_addr: output.mr.addr(),
            result_rkey: output.mr.rkey(),
        };
        input.mr.write(0, &header.encode())?;
        let sends = self.sends.fetch_add(1, Ordering::Relaxed);
        let flags = SendFlags {
            signaled: sends % SIGNAL_EVERY == SIGNAL_EVERY - 1,
            ..SendFlags::UNSIGNALED
        };
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
            t.free.fetch_or(1 << slot, Ordering::AcqRel);
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
    fn wait_hot(&self, index: usize) -> Result<()> {
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

    /// Hands a result to its slot and reposts the receive it used.
    fn dispatch(&self, wc: &Completion) {
        if wc.status != Status::Success {
            self.mark_lost(format!(
                "connection to executor thread failed ({:?})",
                wc.status
            ));
            return;
        }
        let Some(thread) = self.threads.iter().position(|t| t.qp_num == wc.qp_num) else {
            return;
        };
        let t = &self.threads[thread];
        if let Err(e) = t
            .conn
            .post_recv(thread as u64, self.empty.sge(0, 0).expect("empty sge fits"))
        {
            tracing::debug!("reposting a receive failed: {e}");
        }
        let (id, code) = parse_result_imm(wc.imm.unwrap_or(0));
        let index = t.slot_base + id as usize % t.slot_count as usize;
        let rs = &self.slots[index];
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

    fn mark_lost(&self, fallback: String) {
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
    fn take(&self, index: usize) -> Result<u32> {
        let rs = &self.slots[index];
        let (code, len) = (
            rs.code.load(Ordering::Relaxed),
            rs.len.load(Ordering::Relaxed),
        );
        rs.state.store(FREE, Ordering::Release);
        self.threads[rs.thread]
            .free
            .fetch_or(1 << rs.slot, Ordering::AcqRel);
        if code == LOST {
            self.check_lost()?;
            return Err(Error::ExecutorLost("the executor went away".into()));
        }
        match ReturnCode::from_u16(code as u16) {
            Some(ReturnCode::Success) => Ok(len),
            Some(rc) => Err(Error::Invocation(rc)),
            None => Err(Error::Protocol(crate::protocol::ProtocolError::Invalid {
                record: "result",
                field: "return code",
                value: u64::from(code),
            })),
        }
    }
}

/// Takes the lowest free slot of a mask.
fn claim(free: &AtomicU64) -> Option<usize> {
    let mut mask = free.load(Ordering::Acquire);
    loop {
        if mask == 0 {
            return None;
        }
        let slot = mask.trailing_zeros() as usize;
        match free.compare_exchange_weak(
            mask,
            mask & !(1 << slot),
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => return Some(slot),
            Err(now) => mask = now,
        }
    }
}

/// Delivers results of asynchronous calls while any are in flight; sleeps otherwise.
fn background_poller(inner: &Inner) {
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

/// The client-side state of each executor thread once it announced its input slots; posts the
/// receives its results will consume.
fn build_threads(
    conns: Vec<Connection>,
    ready: Vec<ThreadReady>,
    empty: &MemoryRegion,
) -> Result<Vec<Thread>> {
    let mut threads = Vec::with_capacity(conns.len());
    let mut slot_base = 0;
    for (t, (conn, ready)) in conns.into_iter().zip(ready).enumerate() {
        let slot_count = ready.slot_count.clamp(1, MAX_INPUT_BUFFERS);
        for _ in 0..slot_count * 2 {
            conn.post_recv(t as u64, empty.sge(0, 0)?)?;
        }
        threads.push(Thread {
            qp_num: conn.qp_num(),
            conn,
            input: RemoteBuffer {
                addr: ready.input_addr,
                rkey: ready.input_rkey,
                len: ready.slot_size * u32::from(ready.slot_count),
            },
            slot_size: ready.slot_size,
            slot_count,
            slot_base,
            id_span: (u32::from(u16::MAX) + 1) / u32::from(slot_count),
            free: AtomicU64::new(if slot_count == 64 {
                u64::MAX
            } else {
                (1u64 << slot_count) - 1
            }),
            seq: AtomicU32::new(0),
        });
        slot_base += slot_count as usize;
    }
    Ok(threads)
}
