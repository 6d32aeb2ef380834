//! The rFaaS client library and the pieces every rFaaS component shares.
//!
//! - [`Executor`]: allocate an executor on a leased server, ship a function library (native
//!   `.so` or wasm module), invoke its functions blocking, asynchronously or on all cores.
//! - [`Lease`]: where to allocate (from an executors database or the resource manager).
//! - [`protocol`]: the wire contract between clients, managers and executors.
//! - [`config`]: the seed's JSON files.
//!
//! ```no_run
//! use rfaas::{AllocationSpec, Executor, Lease, config};
//!
//! # fn main() -> anyhow::Result<()> {
//! let devices = rdmalib::DeviceDatabase::load("devices.json")?;
//! let db: config::ExecutorsDatabase = config::load_json("executors_database.json", "executors database")?;
//! let lease = Lease::from_database(&db, 1, 256)?;
//! let code = std::fs::read("libfunctions.so")?;
//! let executor = Executor::allocate(devices.get("lo")?, &lease, &code, &AllocationSpec::default())?;
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
pub mod cli;
pub mod config;
mod error;
mod executor;
mod lease;
pub mod logging;
pub mod mailbox;
pub mod protocol;
pub mod signals;

pub use buffers::{InputBuffer, OutputBuffer};
pub use error::{Error, Result};
pub use executor::{
    AllocationSpec, AllocationTimes, Executor, FunctionId, Invocation, MAX_INPUT_BUFFERS,
};
pub use lease::Lease;
pub use protocol::ReturnCode;
