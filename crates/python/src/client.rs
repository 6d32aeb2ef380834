//! The classes: `Endpoint` (a device), `Lease` (where to allocate), `Executor` (an allocation
//! and its calls) and `Invocation` (an asynchronous call in flight).
//!
//! Calls use registered buffer pairs of the allocation's `max_payload` bytes, taken from a pool
//! and given back when the result has been copied out. A pair whose result may still arrive (a
//! call that timed out or was given up) is retired instead, until the executor is gone, so a
//! late result never lands in memory another call uses.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use rfaas::{AllocationSpec, FunctionId, Kind, Wait};
use rfaas_protocol::config::{ExecutorsDatabase, load_json};

use crate::errors::{config, to_py};
use crate::payload::{Destination, copy_in, to_bytes};

/// This process's device, shared by its leases and allocations.
#[pyclass(frozen, module = "rfaas._rfaas")]
pub struct Endpoint {
    endpoint: rfaas::Endpoint,
}

#[pymethods]
impl Endpoint {
    /// Opens `device` of the device database `device_database` ("" picks the first).
    #[new]
    #[pyo3(signature = (device_database, device = ""))]
    fn new(device_database: PathBuf, device: &str) -> PyResult<Endpoint> {
        let devices = rdmalib::DeviceDatabase::load(&device_database)
            .map_err(|e| to_py(rfaas::Error::from(e)))?;
        let device = devices
            .get_or_first(device)
            .map_err(|e| to_py(rfaas::Error::from(e)))?;
        let endpoint = rfaas::Endpoint::open(device).map_err(to_py)?;
        Ok(Endpoint { endpoint })
    }

    /// The device's name.
    #[getter]
    fn device(&self) -> String {
        self.endpoint.device().name.clone()
    }

    /// A lease from the resource manager at `address` ("host:port").
    #[pyo3(signature = (address, cores = 1, memory_mb = 256, timeout = 10.0))]
    fn lease(
        &self,
        py: Python<'_>,
        address: &str,
        cores: u16,
        memory_mb: u32,
        timeout: f64,
    ) -> PyResult<Lease> {
        let addr = std::net::ToSocketAddrs::to_socket_addrs(address)
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| {
                PyValueError::new_err(format!(
                    "address {address:?} is not host:port (for example 127.0.0.1:10000)"
                ))
            })?;
        let timeout = seconds(timeout, "timeout")?;
        let lease = py.detach(|| {
            rfaas::Lease::from_resource_manager(&self.endpoint, addr, cores, memory_mb, timeout)
        });
        Ok(Lease {
            lease: lease.map_err(to_py)?,
        })
    }
}

fn seconds(s: f64, what: &str) -> PyResult<Duration> {
    Duration::try_from_secs_f64(s)
        .map_err(|_| PyValueError::new_err(format!("{what} must be seconds >= 0, not {s}")))
}

/// Where to allocate: an executor manager and the cores and memory granted.
#[pyclass(frozen, module = "rfaas._rfaas")]
pub struct Lease {
    lease: rfaas::Lease,
}

#[pymethods]
impl Lease {
    /// The first server of the executors database `path` with `cores` cores and `memory_mb`
    /// MiB (no resource manager).
    #[staticmethod]
    #[pyo3(signature = (path, cores = 1, memory_mb = 256))]
    fn from_database(path: PathBuf, cores: u16, memory_mb: u32) -> PyResult<Lease> {
        let db: ExecutorsDatabase = load_json(&path, "executors database").map_err(config)?;
        let lease = rfaas::Lease::from_database(&db, cores, memory_mb).map_err(to_py)?;
        Ok(Lease { lease })
    }

    #[getter]
    fn lease_id(&self) -> u32 {
        self.lease.lease_id
    }
    #[getter]
    fn node(&self) -> String {
        self.lease.node.clone()
    }
    #[getter]
    fn address(&self) -> String {
        self.lease.address.to_string()
    }
    #[getter]
    fn cores(&self) -> u16 {
        self.lease.cores
    }
    #[getter]
    fn memory_mb(&self) -> u32 {
        self.lease.memory_mb
    }

    fn __repr__(&self) -> String {
        format!(
            "Lease(node={:?}, address='{}', cores={}, memory_mb={}, lease_id={})",
            self.lease.node,
            self.lease.address,
            self.lease.cores,
            self.lease.memory_mb,
            self.lease.lease_id
        )
    }
}

/// A registered input and output buffer of `max_payload` bytes each.
struct Pair {
    input: rfaas::InputBuffer,
    output: rfaas::OutputBuffer,
}

/// The buffer pairs of one executor.
#[derive(Default)]
struct Pool {
    free: Mutex<Vec<Pair>>,
    /// Pairs a late result may still be written into; freed with the pool.
    retired: Mutex<Vec<Pair>>,
}

impl Pool {
    fn take(&self, executor: &rfaas::Executor) -> PyResult<Pair> {
        if let Some(pair) = self.free.lock().unwrap_or_else(|p| p.into_inner()).pop() {
            return Ok(pair);
        }
        let capacity = executor.max_payload() as usize;
        Ok(Pair {
            input: executor.input_buffer(capacity).map_err(to_py)?,
            output: executor.output_buffer(capacity).map_err(to_py)?,
        })
    }

    fn give_back(&self, pair: Pair) {
        self.free
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(pair);
    }

    /// After a failed call: the pair is free again unless its result may still come.
    fn after(&self, pair: Pair, error: &rfaas::Error) {
        if matches!(error, rfaas::Error::Timeout(_)) {
            self.retire(pair);
        } else {
            self.give_back(pair);
        }
    }

    fn retire(&self, pair: Pair) {
        self.retired
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(pair);
    }
}

/// An allocated executor. The package's `rfaas.Executor` subclasses it (asynchronous calls as
/// `concurrent.futures.Future`, context manager).
#[pyclass(frozen, subclass, module = "rfaas._rfaas")]
pub struct Executor {
    /// `None` once deallocated.
    executor: RwLock<Option<rfaas::Executor>>,
    functions: HashMap<String, FunctionId>,
    names: Vec<String>,
    cores: usize,
    input_buf_count: u16,
    max_payload: u32,
    pool: Arc<Pool>,
}

#[pymethods]
impl Executor {
    /// Allocates an executor on the manager of `lease`, through `endpoint`, and ships the
    /// function library `code` (the bytes of a native .so or a wasm module).
    #[new]
    #[pyo3(signature = (endpoint, lease, code, *, cores = 1, memory_mb = 256,
        hot_timeout_ms = -1, max_payload = 4096, input_buf_count = 2, time_limit_ms = 0,
        sandbox = None, listen_port = 0, timeout = 30.0, call_timeout = 60.0, wait = "poll"))]
    #[expect(clippy::too_many_arguments, reason = "Python keyword arguments")]
    fn new(
        py: Python<'_>,
        endpoint: &Endpoint,
        lease: &Lease,
        code: &Bound<'_, PyAny>,
        cores: u16,
        memory_mb: u32,
        hot_timeout_ms: i32,
        max_payload: u32,
        input_buf_count: u16,
        time_limit_ms: u32,
        sandbox: Option<&str>,
        listen_port: u16,
        timeout: f64,
        call_timeout: f64,
        wait: &str,
    ) -> PyResult<Executor> {
        let sandbox = match sandbox {
            None => None,
            Some("native") => Some(Kind::Native),
            Some("wasm") => Some(Kind::Wasm),
            Some(other) => {
                return Err(PyValueError::new_err(format!(
                    "sandbox must be None, 'native' or 'wasm', not {other:?}"
                )));
            }
        };
        let wait = match wait {
            "poll" => Wait::Poll,
            "sleep" => Wait::Sleep,
            other => {
                return Err(PyValueError::new_err(format!(
                    "wait must be 'poll' or 'sleep', not {other:?}"
                )));
            }
        };
        let spec = AllocationSpec {
            cores,
            memory_mb,
            hot_timeout_ms,
            max_payload,
            input_buf_count,
            time_limit_ms,
            sandbox,
            listen_port,
            timeout: seconds(timeout, "timeout")?,
            call_timeout: seconds(call_timeout, "call_timeout")?,
            wait,
        };
        let code: Vec<u8> = match code.cast::<PyBytes>() {
            Ok(b) => b.as_bytes().to_vec(),
            Err(_) => code.extract().map_err(|_| {
                PyValueError::new_err("code must be the bytes of a function library")
            })?,
        };
        let executor = py
            .detach(|| rfaas::Executor::allocate(&endpoint.endpoint, &lease.lease, &code, &spec))
            .map_err(to_py)?;
        let names = executor.functions().to_vec();
        let functions = names
            .iter()
            .map(|n| Ok((n.clone(), executor.function(n)?)))
            .collect::<rfaas::Result<_>>()
            .map_err(to_py)?;
        Ok(Executor {
            cores: executor.cores(),
            input_buf_count,
            max_payload,
            executor: RwLock::new(Some(executor)),
            functions,
            names,
            pool: Arc::default(),
        })
    }

    /// Names of the library's functions, in index order.
    #[getter]
    fn functions(&self) -> Vec<String> {
        self.names.clone()
    }

    /// Executor threads.
    #[getter]
    fn cores(&self) -> usize {
        self.cores
    }

    /// Calls that may be in flight on one thread.
    #[getter]
    fn input_buf_count(&self) -> u16 {
        self.input_buf_count
    }

    /// Largest payload of one call, in bytes.
    #[getter]
    fn max_payload(&self) -> u32 {
        self.max_payload
    }

    /// Runs `function` on `data` (bytes or any C-contiguous buffer) on executor thread
    /// `thread`, waiting at most `timeout` seconds (default: the allocation's call timeout);
    /// the result as bytes.
    #[pyo3(signature = (function, data, *, thread = 0, timeout = None))]
    fn execute<'py>(
        &self,
        py: Python<'py>,
        function: &str,
        data: &Bound<'py, PyAny>,
        thread: usize,
        timeout: Option<f64>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        self.call(py, function, data, thread, timeout, |py, pair, len| {
            to_bytes(py, &pair.output, len)
        })
    }

    /// Like `execute`, copying the result into the writable buffer `out` instead; its length.
    #[pyo3(signature = (function, data, out, *, thread = 0, timeout = None))]
    fn execute_into<'py>(
        &self,
        py: Python<'py>,
        function: &str,
        data: &Bound<'py, PyAny>,
        out: &Bound<'py, PyAny>,
        thread: usize,
        timeout: Option<f64>,
    ) -> PyResult<usize> {
        let mut dest = Destination::get(out)?;
        self.call(py, function, data, thread, timeout, |_, pair, len| {
            dest.fill(&pair.output, len)?;
            Ok(len)
        })
    }

    /// Starts `function` on `data` on executor thread `thread` and returns at once; the
    /// payload is copied before it returns. Raises `BusyError` when every input slot of the
    /// thread is taken.
    #[pyo3(signature = (function, data, *, thread = 0))]
    fn submit_call(
        &self,
        function: &str,
        data: &Bound<'_, PyAny>,
        thread: usize,
    ) -> PyResult<Invocation> {
        let guard = self.executor.read().unwrap_or_else(|p| p.into_inner());
        let executor = guard.as_ref().ok_or_else(deallocated)?;
        let id = self.function_id(function)?;
        let pair = self.pool.take(executor)?;
        let started = copy_in(data, &pair.input).and_then(|size| {
            executor
                .submit(thread, id, &pair.input, size, &pair.output)
                .map_err(to_py)
        });
        match started {
            Ok(invocation) => Ok(Invocation {
                state: Mutex::new(Some((invocation, pair))),
                pool: self.pool.clone(),
            }),
            Err(e) => {
                self.pool.give_back(pair);
                Err(e)
            }
        }
    }

    /// Ends the allocation; calls in flight fail. Idempotent.
    fn deallocate(&self, py: Python<'_>) {
        // Without the GIL: a call holding the read lock needs the GIL to finish.
        py.detach(|| {
            let executor = self
                .executor
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .take();
            if let Some(executor) = executor {
                executor.deallocate();
            }
        });
    }
}

fn deallocated() -> PyErr {
    PyRuntimeError::new_err("the executor was deallocated")
}

impl Executor {
    fn function_id(&self, name: &str) -> PyResult<FunctionId> {
        self.functions.get(name).copied().ok_or_else(|| {
            crate::errors::CodeError::new_err(format!(
                "no function `{name}` in the library (available: {})",
                self.names.join(", ")
            ))
        })
    }

    /// One blocking call: copy in, call without the GIL, hand the pair to `result`.
    fn call<'py, T>(
        &self,
        py: Python<'py>,
        function: &str,
        data: &Bound<'py, PyAny>,
        thread: usize,
        timeout: Option<f64>,
        result: impl FnOnce(Python<'py>, &Pair, usize) -> PyResult<T>,
    ) -> PyResult<T> {
        let timeout = timeout.map(|t| seconds(t, "timeout")).transpose()?;
        let guard = self.executor.read().unwrap_or_else(|p| p.into_inner());
        let executor = guard.as_ref().ok_or_else(deallocated)?;
        let id = self.function_id(function)?;
        let pair = self.pool.take(executor)?;
        let size = match copy_in(data, &pair.input) {
            Ok(size) => size,
            Err(e) => {
                self.pool.give_back(pair);
                return Err(e);
            }
        };
        let (input, output) = (&pair.input, &pair.output);
        let done = py.detach(|| match timeout {
            None => executor.execute_on(thread, id, input, size, output),
            Some(t) => executor.execute_on_within(thread, id, input, size, output, t),
        });
        match done {
            Ok(len) => {
                let value = result(py, &pair, len as usize);
                self.pool.give_back(pair);
                value
            }
            Err(e) => {
                self.pool.after(pair, &e);
                Err(to_py(e))
            }
        }
    }
}

/// An asynchronous call in flight, from `Executor.submit_call`; `wait` takes its result.
#[pyclass(frozen, module = "rfaas._rfaas")]
pub struct Invocation {
    /// `None` once waited for.
    state: Mutex<Option<(rfaas::Invocation, Pair)>>,
    pool: Arc<Pool>,
}

#[pymethods]
impl Invocation {
    /// Whether the result has arrived (or the invocation was already waited for).
    fn done(&self) -> bool {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .is_none_or(|(invocation, _)| invocation.is_done())
    }

    /// The result as bytes, waiting at most `timeout` seconds (default: the allocation's call
    /// timeout) without the GIL. Only once.
    #[pyo3(signature = (timeout = None))]
    fn wait<'py>(&self, py: Python<'py>, timeout: Option<f64>) -> PyResult<Bound<'py, PyBytes>> {
        let timeout = timeout.map(|t| seconds(t, "timeout")).transpose()?;
        let taken = self.state.lock().unwrap_or_else(|p| p.into_inner()).take();
        let Some((invocation, pair)) = taken else {
            return Err(PyRuntimeError::new_err(
                "this invocation was already waited for",
            ));
        };
        let done = py.detach(|| match timeout {
            None => invocation.wait(),
            Some(t) => invocation.wait_within(t),
        });
        match done {
            Ok(len) => {
                let bytes = to_bytes(py, &pair.output, len as usize);
                self.pool.give_back(pair);
                bytes
            }
            Err(e) => {
                self.pool.after(pair, &e);
                Err(to_py(e))
            }
        }
    }
}

impl Drop for Invocation {
    /// Given up unwaited: the call's result may still arrive into its pair.
    fn drop(&mut self) {
        let state = self
            .state
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some((invocation, pair)) = state {
            drop(invocation);
            self.pool.retire(pair);
        }
    }
}
