//! Allocations and their calls: registered buffers, blocking calls, and asynchronous calls
//! that are submitted and then polled or waited for.

use std::ffi::c_char;
use std::time::Duration;

use rfaas::{AllocationSpec, FunctionId, Kind, Wait};

use crate::boundary::{
    Failure, bytes, check_out, entry, entry_void, get, handle, put, release, text,
};
use crate::setup::{rfaas_endpoint, rfaas_lease};
use crate::status::rfaas_status;

/// `rfaas_allocation_spec.sandbox`: the kind is read from the code's bytes.
pub const RFAAS_SANDBOX_DETECT: i32 = 0;
/// `rfaas_allocation_spec.sandbox`: a native shared library.
pub const RFAAS_SANDBOX_NATIVE: i32 = 1;
/// `rfaas_allocation_spec.sandbox`: a WebAssembly module.
pub const RFAAS_SANDBOX_WASM: i32 = 2;
/// `rfaas_allocation_spec.wait`: a blocking call busy-polls for its result.
pub const RFAAS_WAIT_POLL: i32 = 0;
/// `rfaas_allocation_spec.wait`: a blocking call sleeps until its result arrives.
pub const RFAAS_WAIT_SLEEP: i32 = 1;

/// What to allocate. `rfaas_allocation_spec_init` fills in the defaults; change what you need.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct rfaas_allocation_spec {
    /// Executor threads (at most the lease's cores). Default 1.
    pub cores: u16,
    /// Memory in MiB. Default 256.
    pub memory_mb: u32,
    /// -1 always hot, 0 always warm, >0 ms of idle hot polling before sleeping. Default -1.
    pub hot_timeout_ms: i32,
    /// Largest payload of one call, in bytes. Default 4096.
    pub max_payload: u32,
    /// Input slots per executor thread: calls that may be in flight on one thread. Default 2.
    pub input_buf_count: u16,
    /// Time limit of one call of a wasm function, in ms (0: none). Default 0.
    pub time_limit_ms: u32,
    /// `RFAAS_SANDBOX_DETECT` (default), `RFAAS_SANDBOX_NATIVE` or `RFAAS_SANDBOX_WASM`.
    pub sandbox: i32,
    /// Port this client listens on for its executors (0: any free port). Default 0.
    pub listen_port: u16,
    /// How long each step of the allocation may take, in ms. Default 30000.
    pub timeout_ms: u32,
    /// How long a call waits for its result by default, in ms. Default 60000.
    pub call_timeout_ms: u32,
    /// `RFAAS_WAIT_POLL` (default) or `RFAAS_WAIT_SLEEP`.
    pub wait: i32,
}

fn millis(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

impl rfaas_allocation_spec {
    fn defaults() -> rfaas_allocation_spec {
        let d = AllocationSpec::default();
        rfaas_allocation_spec {
            cores: d.cores,
            memory_mb: d.memory_mb,
            hot_timeout_ms: d.hot_timeout_ms,
            max_payload: d.max_payload,
            input_buf_count: d.input_buf_count,
            time_limit_ms: d.time_limit_ms,
            sandbox: RFAAS_SANDBOX_DETECT,
            listen_port: d.listen_port,
            timeout_ms: millis(d.timeout),
            call_timeout_ms: millis(d.call_timeout),
            wait: RFAAS_WAIT_POLL,
        }
    }

    fn to_rust(self) -> Result<AllocationSpec, Failure> {
        let sandbox = match self.sandbox {
            RFAAS_SANDBOX_DETECT => None,
            RFAAS_SANDBOX_NATIVE => Some(Kind::Native),
            RFAAS_SANDBOX_WASM => Some(Kind::Wasm),
            other => {
                return Err(Failure::invalid(format!(
                    "sandbox {other} is none of RFAAS_SANDBOX_DETECT (0), _NATIVE (1), _WASM (2)"
                )));
            }
        };
        let wait = match self.wait {
            RFAAS_WAIT_POLL => Wait::Poll,
            RFAAS_WAIT_SLEEP => Wait::Sleep,
            other => {
                return Err(Failure::invalid(format!(
                    "wait {other} is neither RFAAS_WAIT_POLL (0) nor RFAAS_WAIT_SLEEP (1)"
                )));
            }
        };
        Ok(AllocationSpec {
            cores: self.cores,
            memory_mb: self.memory_mb,
            hot_timeout_ms: self.hot_timeout_ms,
            max_payload: self.max_payload,
            input_buf_count: self.input_buf_count,
            time_limit_ms: self.time_limit_ms,
            sandbox,
            listen_port: self.listen_port,
            timeout: Duration::from_millis(u64::from(self.timeout_ms)),
            call_timeout: Duration::from_millis(u64::from(self.call_timeout_ms)),
            wait,
        })
    }
}

/// Fills `spec` with the defaults (NULL: nothing).
///
/// # Safety
///
/// `spec` is NULL or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rfaas_allocation_spec_init(spec: *mut rfaas_allocation_spec) {
    entry_void(|| {
        if !spec.is_null() {
            // SAFETY: not NULL (checked) and valid for a write (this function's contract).
            unsafe { spec.write(rfaas_allocation_spec::defaults()) };
        }
    });
}

/// An allocated executor: leased cores running the shipped functions. Made by
/// `rfaas_allocate`, ended and freed by `rfaas_deallocate`. Its calls may come from several
/// threads at once (each call takes its own input slot).
pub struct rfaas_executor {
    executor: rfaas::Executor,
    /// Every function of the library, by index, resolved once so a call needs no lookup.
    functions: Vec<FunctionId>,
}

impl rfaas_executor {
    fn function(&self, function: rfaas_function) -> Result<FunctionId, Failure> {
        self.functions
            .get(usize::from(function))
            .copied()
            .ok_or_else(|| {
                Failure::invalid(format!(
                    "function {function} does not exist; the library has {} (rfaas_executor_function gives them)",
                    self.functions.len()
                ))
            })
    }
}

/// A function of the allocated library, from `rfaas_executor_function`.
pub type rfaas_function = u16;

/// Allocates an executor on the manager of `lease`, through `endpoint`, and ships the
/// function library `code` (`code_len` bytes of a native .so or a wasm module; copied, so it
/// may be freed on return). On success `*out` is a new executor.
///
/// # Safety
///
/// `endpoint`, `lease` and `spec` are valid, `code` points to `code_len` readable bytes,
/// `out` is valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rfaas_allocate(
    endpoint: *const rfaas_endpoint,
    lease: *const rfaas_lease,
    code: *const u8,
    code_len: usize,
    spec: *const rfaas_allocation_spec,
    out: *mut *mut rfaas_executor,
) -> rfaas_status {
    entry(|| {
        // SAFETY: valid handles, spec and code bytes (this function's contract).
        let (endpoint, lease, code, spec) = unsafe {
            (
                get(endpoint, "endpoint")?,
                get(lease, "lease")?,
                bytes(code, code_len, "code")?,
                get(spec, "spec")?,
            )
        };
        check_out(out, "out")?;
        let spec = spec.to_rust()?;
        let executor = rfaas::Executor::allocate(&endpoint.endpoint, &lease.lease, code, &spec)?;
        let functions = executor
            .functions()
            .iter()
            .map(|name| executor.function(name))
            .collect::<Result<_, _>>()?;
        // SAFETY: `out` is valid for a write (this function's contract).
        unsafe {
            put(
                out,
                handle(rfaas_executor {
                    executor,
                    functions,
                }),
                "out",
            )
        }
    })
}

/// Ends the allocation (the executor sees its client leave and exits) and frees the executor
/// (NULL: nothing). Invocations not yet waited for fail with `RFAAS_ERROR_EXECUTOR_LOST` or
/// `RFAAS_ERROR_TIMEOUT`; buffers stay valid until they are freed.
///
/// # Safety
///
/// `executor` is NULL or came from `rfaas_allocate`, no call on it is running, and it is not
/// used afterwards.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rfaas_deallocate(executor: *mut rfaas_executor) {
    entry_void(|| {
        // SAFETY: forwarded from this function's contract.
        if let Some(e) = unsafe { release(executor) } {
            e.executor.deallocate();
        }
    });
}

/// Executor threads of the allocation (0 for NULL).
///
/// # Safety
///
/// `executor` is NULL or valid.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rfaas_executor_cores(executor: *const rfaas_executor) -> u32 {
    // SAFETY: NULL or valid (this function's contract).
    unsafe { executor.as_ref() }.map_or(0, |e| e.executor.cores() as u32)
}

/// Resolves the function `name` of the allocated library into `*out`; the error lists the
/// names the library has.
///
/// # Safety
///
/// `executor` is valid, `name` a NUL-terminated string, `out` valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rfaas_executor_function(
    executor: *const rfaas_executor,
    name: *const c_char,
    out: *mut rfaas_function,
) -> rfaas_status {
    entry(|| {
        // SAFETY: a valid executor and a C string (this function's contract).
        let (e, name) = unsafe { (get(executor, "executor")?, text(name, "name")?) };
        let id = e.executor.function(name)?;
        let index = e.functions.iter().position(|f| *f == id).ok_or_else(|| {
            Failure::new(
                rfaas_status::RFAAS_ERROR_INTERNAL,
                format!("function {name} resolved but not listed"),
            )
        })?;
        // SAFETY: `out` is valid for a write (this function's contract).
        unsafe { put(out, index as rfaas_function, "out") }
    })
}

/// Registered memory a call reads its payload from: `rfaas_input_buffer_data` gives
/// `capacity` bytes to fill in place. Made by `rfaas_input_buffer_new`, freed by
/// `rfaas_input_buffer_free`.
pub struct rfaas_input_buffer {
    buffer: rfaas::InputBuffer,
}

/// Registered memory the executor writes a call's result into, read in place through
/// `rfaas_output_buffer_data`. Made by `rfaas_output_buffer_new`, freed by
/// `rfaas_output_buffer_free`.
pub struct rfaas_output_buffer {
    buffer: rfaas::OutputBuffer,
}

/// A new registered input buffer for payloads of up to `capacity` bytes, in `*out`.
///
/// # Safety
///
/// `executor` is valid, `out` valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rfaas_input_buffer_new(
    executor: *const rfaas_executor,
    capacity: usize,
    out: *mut *mut rfaas_input_buffer,
) -> rfaas_status {
    entry(|| {
        // SAFETY: a valid executor (this function's contract).
        let e = unsafe { get(executor, "executor")? };
        check_out(out, "out")?;
        let buffer = e.executor.input_buffer(capacity)?;
        // SAFETY: `out` is valid for a write (this function's contract).
        unsafe { put(out, handle(rfaas_input_buffer { buffer }), "out") }
    })
}

/// The payload area of an input buffer, `rfaas_input_buffer_capacity` bytes (NULL for NULL).
/// Do not write to it while a call that uses the buffer is in flight.
///
/// # Safety
///
/// `buffer` is NULL or valid.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rfaas_input_buffer_data(buffer: *mut rfaas_input_buffer) -> *mut u8 {
    // SAFETY: NULL or valid (this function's contract).
    unsafe { buffer.as_ref() }.map_or(std::ptr::null_mut(), |b| b.buffer.payload_ptr())
}

/// The largest payload an input buffer holds (0 for NULL).
///
/// # Safety
///
/// `buffer` is NULL or valid.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rfaas_input_buffer_capacity(buffer: *const rfaas_input_buffer) -> usize {
    // SAFETY: NULL or valid (this function's contract).
    unsafe { buffer.as_ref() }.map_or(0, |b| b.buffer.capacity())
}

/// Frees an input buffer (NULL: nothing).
///
/// # Safety
///
/// `buffer` is NULL or came from `rfaas_input_buffer_new`, no call in flight uses it, and it
/// is not used afterwards.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rfaas_input_buffer_free(buffer: *mut rfaas_input_buffer) {
    // SAFETY: forwarded from this function's contract.
    entry_void(|| drop(unsafe { release(buffer) }));
}

/// A new registered output buffer of `capacity` bytes, in `*out`.
///
/// # Safety
///
/// `executor` is valid, `out` valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rfaas_output_buffer_new(
    executor: *const rfaas_executor,
    capacity: usize,
    out: *mut *mut rfaas_output_buffer,
) -> rfaas_status {
    entry(|| {
        // SAFETY: a valid executor (this function's contract).
        let e = unsafe { get(executor, "executor")? };
        check_out(out, "out")?;
        let buffer = e.executor.output_buffer(capacity)?;
        // SAFETY: `out` is valid for a write (this function's contract).
        unsafe { put(out, handle(rfaas_output_buffer { buffer }), "out") }
    })
}

/// The bytes of an output buffer, `rfaas_output_buffer_capacity` of them (NULL for NULL);
/// a call's result is its first `result_len` bytes once the call has returned.
///
/// # Safety
///
/// `buffer` is NULL or valid.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rfaas_output_buffer_data(buffer: *const rfaas_output_buffer) -> *const u8 {
    // SAFETY: NULL or valid (this function's contract).
    unsafe { buffer.as_ref() }.map_or(std::ptr::null(), |b| b.buffer.as_ptr())
}

/// The bytes an output buffer holds (0 for NULL).
///
/// # Safety
///
/// `buffer` is NULL or valid.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rfaas_output_buffer_capacity(buffer: *const rfaas_output_buffer) -> usize {
    // SAFETY: NULL or valid (this function's contract).
    unsafe { buffer.as_ref() }.map_or(0, |b| b.buffer.capacity())
}

/// Frees an output buffer (NULL: nothing).
///
/// # Safety
///
/// `buffer` is NULL or came from `rfaas_output_buffer_new`, no call in flight uses it, and it
/// is not used afterwards.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rfaas_output_buffer_free(buffer: *mut rfaas_output_buffer) {
    // SAFETY: forwarded from this function's contract.
    entry_void(|| drop(unsafe { release(buffer) }));
}

/// The handles of one call.
struct Call<'a> {
    executor: &'a rfaas_executor,
    function: FunctionId,
    input: &'a rfaas::InputBuffer,
    output: &'a rfaas::OutputBuffer,
}

/// # Safety
///
/// The pointers are valid handles (or NULL, which is refused).
unsafe fn call<'a>(
    executor: *const rfaas_executor,
    function: rfaas_function,
    input: *const rfaas_input_buffer,
    output: *const rfaas_output_buffer,
) -> Result<Call<'a>, Failure> {
    // SAFETY: forwarded from this function's contract.
    let (executor, input, output) = unsafe {
        (
            get(executor, "executor")?,
            get(input, "input")?,
            get(output, "output")?,
        )
    };
    Ok(Call {
        function: executor.function(function)?,
        executor,
        input: &input.buffer,
        output: &output.buffer,
    })
}

/// Runs `function` on the first `size` bytes of `input` on executor thread `thread` and waits
/// for its result in `output` (at most the allocation's `call_timeout_ms`); `*result_len` is
/// the result's length.
///
/// # Safety
///
/// The handles are valid, `result_len` is valid for a write; no other call in flight uses
/// `input` or `output`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rfaas_execute(
    executor: *const rfaas_executor,
    thread: u32,
    function: rfaas_function,
    input: *const rfaas_input_buffer,
    size: usize,
    output: *const rfaas_output_buffer,
    result_len: *mut u32,
) -> rfaas_status {
    entry(|| {
        check_out(result_len, "result_len")?;
        // SAFETY: valid handles (this function's contract).
        let c = unsafe { call(executor, function, input, output)? };
        let len =
            c.executor
                .executor
                .execute_on(thread as usize, c.function, c.input, size, c.output)?;
        // SAFETY: `result_len` is valid for a write (this function's contract).
        unsafe { put(result_len, len, "result_len") }
    })
}

/// Like `rfaas_execute`, waiting at most `timeout_ms`. When it runs out the call fails with
/// `RFAAS_ERROR_TIMEOUT`; its input slot stays taken until the late result arrives, and that
/// result is still written into `output`, so free neither buffer before then.
///
/// # Safety
///
/// As for `rfaas_execute`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rfaas_execute_within(
    executor: *const rfaas_executor,
    thread: u32,
    function: rfaas_function,
    input: *const rfaas_input_buffer,
    size: usize,
    output: *const rfaas_output_buffer,
    timeout_ms: u32,
    result_len: *mut u32,
) -> rfaas_status {
    entry(|| {
        check_out(result_len, "result_len")?;
        // SAFETY: valid handles (this function's contract).
        let c = unsafe { call(executor, function, input, output)? };
        let len = c.executor.executor.execute_on_within(
            thread as usize,
            c.function,
            c.input,
            size,
            c.output,
            Duration::from_millis(u64::from(timeout_ms)),
        )?;
        // SAFETY: `result_len` is valid for a write (this function's contract).
        unsafe { put(result_len, len, "result_len") }
    })
}

/// An asynchronous call in flight. Made by `rfaas_submit`; `rfaas_invocation_wait` (or
/// `_wait_within`) takes its result and frees it, `rfaas_invocation_free` gives it up.
pub struct rfaas_invocation {
    invocation: rfaas::Invocation,
}

/// Starts `function` on the first `size` bytes of `input` on executor thread `thread` and
/// returns at once with the call in `*out`. `input` and `output` must not be touched (nor
/// freed) until the invocation is waited for or freed. `RFAAS_ERROR_BUSY` means every input
/// slot of that thread is taken by calls in flight.
///
/// # Safety
///
/// The handles are valid, `out` is valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rfaas_submit(
    executor: *const rfaas_executor,
    thread: u32,
    function: rfaas_function,
    input: *const rfaas_input_buffer,
    size: usize,
    output: *const rfaas_output_buffer,
    out: *mut *mut rfaas_invocation,
) -> rfaas_status {
    entry(|| {
        check_out(out, "out")?;
        // SAFETY: valid handles (this function's contract).
        let c = unsafe { call(executor, function, input, output)? };
        let invocation =
            c.executor
                .executor
                .submit(thread as usize, c.function, c.input, size, c.output)?;
        // SAFETY: `out` is valid for a write (this function's contract).
        unsafe { put(out, handle(rfaas_invocation { invocation }), "out") }
    })
}

/// Sets `*done` to whether the result of `invocation` has arrived (it is still taken with
/// `rfaas_invocation_wait`, which then returns at once).
///
/// # Safety
///
/// `invocation` is valid, `done` valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rfaas_invocation_is_done(
    invocation: *const rfaas_invocation,
    done: *mut bool,
) -> rfaas_status {
    entry(|| {
        // SAFETY: a valid invocation (this function's contract).
        let invocation = unsafe { get(invocation, "invocation")? };
        // SAFETY: `done` is valid for a write (this function's contract).
        unsafe { put(done, invocation.invocation.is_done(), "done") }
    })
}

/// Waits for the result of `invocation` (at most the allocation's `call_timeout_ms`) and
/// frees the invocation, whatever the outcome; `*result_len` is the result's length.
///
/// # Safety
///
/// `invocation` came from `rfaas_submit` and is not used afterwards; `result_len` is valid
/// for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rfaas_invocation_wait(
    invocation: *mut rfaas_invocation,
    result_len: *mut u32,
) -> rfaas_status {
    // SAFETY: forwarded from this function's contract.
    unsafe { wait(invocation, None, result_len) }
}

/// Like `rfaas_invocation_wait`, waiting at most `timeout_ms`; on `RFAAS_ERROR_TIMEOUT` the
/// call's input slot stays taken until the late result arrives, and that result is still
/// written into the call's output buffer.
///
/// # Safety
///
/// As for `rfaas_invocation_wait`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rfaas_invocation_wait_within(
    invocation: *mut rfaas_invocation,
    timeout_ms: u32,
    result_len: *mut u32,
) -> rfaas_status {
    let timeout = Duration::from_millis(u64::from(timeout_ms));
    // SAFETY: forwarded from this function's contract.
    unsafe { wait(invocation, Some(timeout), result_len) }
}

/// # Safety
///
/// As for `rfaas_invocation_wait`.
unsafe fn wait(
    invocation: *mut rfaas_invocation,
    timeout: Option<Duration>,
    result_len: *mut u32,
) -> rfaas_status {
    entry(|| {
        // SAFETY: from `rfaas_submit`, released once (the caller's contract).
        let Some(invocation) = (unsafe { release(invocation) }) else {
            return Err(Failure::invalid("invocation is NULL"));
        };
        // Refused before waiting, the invocation is given up (dropped) and still freed.
        check_out(result_len, "result_len")?;
        let len = match timeout {
            None => invocation.invocation.wait()?,
            Some(t) => invocation.invocation.wait_within(t)?,
        };
        // SAFETY: `result_len` is valid for a write (the caller's contract).
        unsafe { put(result_len, len, "result_len") }
    })
}

/// Gives an invocation up without waiting and frees it (NULL: nothing); its input slot is
/// free again once its result arrives (and has been written into the call's output buffer).
///
/// # Safety
///
/// `invocation` is NULL or came from `rfaas_submit` and is not used afterwards.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rfaas_invocation_free(invocation: *mut rfaas_invocation) {
    // SAFETY: forwarded from this function's contract.
    entry_void(|| drop(unsafe { release(invocation) }));
}
