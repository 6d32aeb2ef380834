//! `rfaas._rfaas`, the native part of the Python package `rfaas` (python/rfaas/): endpoints,
//! leases, executors and asynchronous invocations over the Rust client library.
//!
//! - [`errors`]: the exception types and how client errors map onto them.
//! - [`payload`]: Python buffers (bytes, bytearray, memoryview, numpy …) copied once into
//!   registered memory, and results copied once out of it.
//! - [`client`]: the classes.
//!
//! Every call that waits on the fabric releases the GIL.

mod client;
mod errors;
mod payload;

use pyo3::prelude::*;

/// Logs the library's lines on stderr as the rFaaS binaries do (`RUST_LOG` wins; else
/// `verbosity` 0 = info, 1 = debug, 2 = trace). Only the first call has an effect.
#[pyfunction]
#[pyo3(signature = (verbosity = 0))]
fn log_to_stderr(verbosity: u8) {
    rfaas_cli::init_logging(verbosity);
}

#[pymodule]
fn _rfaas(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(log_to_stderr, m)?)?;
    m.add_class::<client::Endpoint>()?;
    m.add_class::<client::Lease>()?;
    m.add_class::<client::Executor>()?;
    m.add_class::<client::Invocation>()?;
    errors::register(m)?;
    Ok(())
}
