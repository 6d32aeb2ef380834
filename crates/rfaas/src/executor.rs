//! The client side of an allocation: [`Executor::allocate`] asks an executor manager for an
//! executor, ships the function library, and then invokes functions by writing straight into
//! the executor threads' input buffers.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdmalib::{Access, QpConfig};
use rfaas_protocol::control::{AllocationRequest, random_credential};
use rfaas_protocol::invocation::{SEND_QUEUE_DEPTH, connection_receives};

use crate::allocation::{Handshake, ManagerLink};
use crate::buffers::{InputBuffer, OutputBuffer};
use crate::calls::{Inner, background_poller};
use crate::endpoint::Endpoint;
use crate::error::{Error, Result};
use crate::lease::Lease;
use crate::slots::{DONE, ResultSlot, Thread};
use crate::spec::{AllocationSpec, AllocationTimes, FunctionId, Wait};

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
    taken: bool,
}

impl Executor {
    /// Allocates an executor on the manager named by `lease`, through `endpoint`.
    pub fn allocate(
        endpoint: &Endpoint,
        lease: &Lease,
        code: &[u8],
        spec: &AllocationSpec,
    ) -> Result<Executor> {
        let library = spec.inspect(code)?;
        let sandbox = library.kind();
        spec.check(lease)?;
        let mut times = AllocationTimes::default();
        let started = Instant::now();
        let ctx = endpoint.context();
        let pd = ctx.alloc_pd()?;
        let listener = ctx.listen(spec.listen_port)?;
        tracing::info!(
            "Listening on device {}, port {}",
            endpoint.device().name,
            listener.local_addr().port()
        );
        let manager = ManagerLink::connect(ctx, &pd, lease, spec.timeout)?;
        times.connect = started.elapsed();

        let token = random_credential()
            .map_err(|e| Error::InvalidArgument(format!("no random source for a token: {e}")))?;
        let request = AllocationRequest {
            lease_id: lease.lease_id,
            cores: spec.cores,
            input_buf_count: spec.input_buf_count,
            hot_timeout_ms: spec.hot_timeout_ms,
            max_payload: spec.max_payload,
            code_size: code.len() as u32,
            code_digest: endpoint.code_digest(code),
            memory_mb: spec.memory_mb,
            sandbox,
            time_limit_ms: spec.time_limit_ms,
            client: listener.local_addr(),
            token,
        };
        let accepted = manager.request(&request, lease, spec.timeout)?;
        let allocation_id = accepted.allocation_id;
        times.submit = started.elapsed() - times.connect;
        tracing::debug!("allocation {allocation_id} accepted by {}", lease.node);

        let cores = u32::from(spec.cores);
        let receives = connection_receives(u32::from(spec.input_buf_count));
        // Room for every request the threads' connections can have outstanding.
        let send_cq = ctx.create_cq(cores * SEND_QUEUE_DEPTH)?;
        let recv_cq = ctx.create_cq(cores * receives)?;
        let qp = QpConfig::new(&send_cq, &recv_cq)
            .max_inline_data(endpoint.device().max_inline_data)
            .max_send_wr(SEND_QUEUE_DEPTH)
            .max_recv_wr(receives);
        let handshake = Handshake {
            pd: &pd,
            manager: &manager,
            allocation_id,
            token,
            spec,
        };
        let (conns, ready_buf) = handshake.accept_threads(&listener, &qp)?;
        times.spawn_connect = started.elapsed() - times.connect - times.submit;
        let ready = handshake.ship_code(
            (!accepted.code_cached).then_some(code),
            &conns[0],
            &send_cq,
            &recv_cq,
            &ready_buf,
        )?;

        let empty = pd.register(1, Access::LOCAL_WRITE)?;
        let mut threads = Vec::with_capacity(conns.len());
        let mut slot_base = 0;
        for (index, (conn, ready)) in conns.into_iter().zip(&ready).enumerate() {
            let thread = Thread::new(index, conn, ready, slot_base, &empty)?;
            slot_base += usize::from(thread.slot_count);
            threads.push(thread);
        }
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
            call_timeout: spec.call_timeout,
            wait: spec.wait,
            sends: AtomicU64::new(0),
            lost: Mutex::new(None),
            is_lost: AtomicBool::new(false),
            done: Condvar::new(),
            done_lock: Mutex::new(()),
            async_in_flight: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            manager,
            pd,
            _ctx: endpoint.shared_context(),
        });
        let poller_inner = inner.clone();
        tracing::info!("Background thread starts waiting for events");
        let poller = std::thread::Builder::new()
            .name("rfaas-poller".into())
            .spawn(move || background_poller(&poller_inner))
            .map_err(|e| Error::InvalidArgument(format!("cannot start the result poller: {e}")))?;
        tracing::info!(
            "Allocated {} {} executor thread(s) on {} (allocation {allocation_id}, code {}) in {:.3} ms",
            spec.cores,
            sandbox,
            lease.node,
            if accepted.code_cached {
                "cached there"
            } else {
                "sent"
            },
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

    /// Runs `function` on the first `size` bytes of `input` on thread 0 and waits for the
    /// result in `output` (as [`AllocationSpec::wait`] says, at most
    /// [`AllocationSpec::call_timeout`]); returns the result's length.
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
        let timeout = self.inner.call_timeout;
        self.execute_on_within(thread, function, input, size, output, timeout)
    }

    /// Like [`execute_on`](Self::execute_on), waiting at most `timeout`. When it runs out the
    /// call fails with [`Error::Timeout`], and its input slot stays taken until the late
    /// result arrives (the executor may still be using it).
    pub fn execute_on_within(
        &self,
        thread: usize,
        function: FunctionId,
        input: &InputBuffer,
        size: usize,
        output: &OutputBuffer,
        timeout: Duration,
    ) -> Result<u32> {
        let sleeping = self.inner.wait == Wait::Sleep;
        let index = self
            .inner
            .submit(thread, function, input, size, output, sleeping)?;
        self.inner.wait_for(index, timeout)?;
        self.inner.take(index, Some(output))
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
        let index = match self
            .inner
            .submit(thread, function, input, size, output, false)
        {
            Ok(index) => index,
            Err(e) => {
                self.inner.async_in_flight.fetch_sub(1, Ordering::SeqCst);
                return Err(e);
            }
        };
        self.inner.done.notify_all();
        Ok(Invocation {
            inner: self.inner.clone(),
            index,
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
            match self
                .inner
                .submit(i % cores, function, input, *size, output, false)
            {
                Ok(index) => indices.push(index),
                Err(e) => {
                    for (index, output) in indices.into_iter().zip(outputs) {
                        let _ = self.finish(index, output);
                    }
                    return Err(e);
                }
            }
        }
        let mut lens = Vec::with_capacity(indices.len());
        let mut first_error = None;
        for index in indices {
            match self.finish(index, outputs[lens.len()]) {
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

    /// Waits (at most the call timeout) for the call in result slot `index` and takes its
    /// result.
    fn finish(&self, index: usize, output: &OutputBuffer) -> Result<u32> {
        self.inner.wait_for(index, self.inner.call_timeout)?;
        self.inner.take(index, Some(output))
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
        self.inner.slots[self.index].thread
    }

    /// Input slot it uses on that thread.
    pub fn slot(&self) -> usize {
        self.inner.slots[self.index].slot
    }

    /// Whether the result has arrived.
    pub fn is_done(&self) -> bool {
        self.inner.slots[self.index].state.load(Ordering::Acquire) == DONE
    }

    /// Blocks until the result arrives (the background poller delivers it), at most
    /// [`AllocationSpec::call_timeout`]; returns its length.
    pub fn wait(self) -> Result<u32> {
        let timeout = self.inner.call_timeout;
        self.wait_within(timeout)
    }

    /// Like [`wait`](Self::wait), at most `timeout`. When it runs out the wait fails with
    /// [`Error::Timeout`], and the call's input slot stays taken until the late result
    /// arrives.
    pub fn wait_within(mut self, timeout: Duration) -> Result<u32> {
        self.taken = true;
        let delivered = self.inner.wait_delivered(self.index, timeout);
        self.inner.async_in_flight.fetch_sub(1, Ordering::SeqCst);
        delivered?;
        self.inner.take(self.index, None)
    }
}

impl Drop for Invocation {
    /// An invocation dropped unanswered gives its call up: its slot is freed when the result
    /// arrives.
    fn drop(&mut self) {
        if !self.taken {
            self.inner.async_in_flight.fetch_sub(1, Ordering::SeqCst);
            self.inner.give_up(self.index);
        }
    }
}
