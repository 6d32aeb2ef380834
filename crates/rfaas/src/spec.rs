//! What to allocate, and what an allocation reports back.

use std::time::Duration;

use function_library::{FunctionLibrary, Kind};
use rfaas_protocol::invocation::MAX_INPUT_BUFFERS;

use crate::error::{Error, Result};
use crate::lease::Lease;

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
    /// Per-invocation time limit the executor enforces (0: none): a wasm function is
    /// interrupted and answers [`ReturnCode::Timeout`](crate::ReturnCode::Timeout); a native
    /// one answers it too, and its executor is stopped, since native code cannot be
    /// interrupted safely.
    pub time_limit_ms: u32,
    /// Sandbox; detected from the code when `None`.
    pub sandbox: Option<Kind>,
    /// Port this client listens on for its executors (0: any free port).
    pub listen_port: u16,
    /// How long each step of the allocation may take.
    pub timeout: Duration,
    /// How long a blocking call, or a wait on an asynchronous one, waits for its result
    /// before it fails with [`Error::Timeout`].
    pub call_timeout: Duration,
    /// How a blocking call waits for its result.
    pub wait: Wait,
}

/// How a blocking call waits for its result.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Wait {
    /// Busy-poll the receive queue: the lowest latency, and a core spent on it.
    #[default]
    Poll,
    /// Sleep on the completion channel until the result arrives (the invocation asks the
    /// executor for a solicited completion): a few microseconds more, no core spent.
    Sleep,
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
            call_timeout: Duration::from_secs(60),
            wait: Wait::Poll,
        }
    }
}

impl AllocationSpec {
    /// Refuses a specification the lease or the protocol cannot serve.
    pub(crate) fn check(&self, lease: &Lease) -> Result<()> {
        if self.cores == 0 || self.cores > lease.cores {
            return Err(Error::InvalidArgument(format!(
                "asked for {} cores but the lease on {} has {}",
                self.cores, lease.node, lease.cores
            )));
        }
        if self.input_buf_count == 0 || self.input_buf_count > MAX_INPUT_BUFFERS {
            return Err(Error::InvalidArgument(format!(
                "input_buf_count must be 1 to {MAX_INPUT_BUFFERS}, got {}",
                self.input_buf_count
            )));
        }
        Ok(())
    }

    /// Reads the code's functions, as the requested sandbox (or the detected one) expects.
    pub(crate) fn inspect(&self, code: &[u8]) -> Result<FunctionLibrary> {
        Ok(match self.sandbox {
            None => FunctionLibrary::inspect(code)?,
            Some(kind) => FunctionLibrary::inspect_as(code, kind)?,
        })
    }
}

/// A function of the allocated library, resolved once by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FunctionId(pub(crate) u16);

/// How long each phase of [`Executor::allocate`](crate::Executor::allocate) took.
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
