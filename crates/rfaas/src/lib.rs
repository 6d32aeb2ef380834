//! The rFaaS client library: lease cores on an executor server, ship a function library
//! (native `.so` or wasm module) once, and invoke its functions by writing straight into the
//! executor's memory — blocking, asynchronously or on all cores at once.
//!
//! - [`Endpoint`]: this process's device, shared by its leases and allocations.
//! - [`Lease`]: where to allocate (from an executors database or the resource manager).
//! - [`Executor`]: an allocation and its invocations, with registered [`InputBuffer`]s and
//!   [`OutputBuffer`]s.
//!
//! The wire contract and the seed's JSON files are in `rfaas_protocol`.
//!
//! ```no_run
//! use rfaas::{AllocationSpec, Endpoint, Executor, Lease};
//! use rfaas_protocol::config::{ExecutorsDatabase, load_json};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let devices = rdmalib::DeviceDatabase::load("devices.json")?;
//! let endpoint = Endpoint::open(devices.get("lo")?)?;
//! let db: ExecutorsDatabase = load_json("executors_database.json", "executors database")?;
//! let lease = Lease::from_database(&db, 1, 256)?;
//! let code = std::fs::read("libfunctions.so")?;
//! let executor = Executor::allocate(&endpoint, &lease, &code, &AllocationSpec::default())?;
//! let empty = executor.function("empty")?;
//! let (input, output) = (executor.input_buffer(64)?, executor.output_buffer(64)?);
//! input.write(b"hello")?;
//! let len = executor.execute(empty, &input, 5, &output)?;
//! assert_eq!(output.to_vec(len as usize)?, b"hello");
//! executor.deallocate();
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

mod allocation;
mod buffers;
mod calls;
mod digests;
mod endpoint;
mod error;
mod executor;
mod lease;
mod slots;
mod spec;

pub use buffers::{InputBuffer, OutputBuffer};
pub use endpoint::Endpoint;
pub use error::{Error, Result};
pub use executor::{Executor, Invocation};
pub use function_library::Kind;
pub use lease::Lease;
pub use rfaas_protocol::invocation::{MAX_INPUT_BUFFERS, ReturnCode};
pub use spec::{AllocationSpec, AllocationTimes, FunctionId, Wait};
