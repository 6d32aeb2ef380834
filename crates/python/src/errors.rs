//! The exceptions of `rfaas`: one `rfaas.Error` base and a subclass per kind of failure;
//! invalid arguments are `ValueError`.

use pyo3::exceptions::{PyException, PyValueError};
use pyo3::prelude::*;

pyo3::create_exception!(
    rfaas,
    Error,
    PyException,
    "Any failure of the rFaaS client."
);
pyo3::create_exception!(
    rfaas,
    ConfigError,
    Error,
    "A file (device database, executors database) cannot be read or is not valid."
);
pyo3::create_exception!(rfaas, RdmaError, Error, "The RDMA layer failed.");
pyo3::create_exception!(
    rfaas,
    ProtocolError,
    Error,
    "A peer sent something the protocol does not allow."
);
pyo3::create_exception!(
    rfaas,
    CodeError,
    Error,
    "The function library cannot be used, or has no function of that name."
);
pyo3::create_exception!(
    rfaas,
    NoExecutorError,
    Error,
    "No executor server fits the request, free or not: none in the executors database, or none the resource manager knows."
);
pyo3::create_exception!(
    rfaas,
    NoResourcesError,
    Error,
    "Every executor server is busy right now; asking again later may succeed."
);
pyo3::create_exception!(
    rfaas,
    UnreachableError,
    Error,
    "A manager cannot be reached, or closed the connection."
);
pyo3::create_exception!(
    rfaas,
    RefusedError,
    Error,
    "The executor manager or the resource manager refused the request."
);
pyo3::create_exception!(
    rfaas,
    ExecutorFailedError,
    Error,
    "The executor could not load the function library."
);
pyo3::create_exception!(
    rfaas,
    ExecutorLostError,
    Error,
    "The executor process or its connection went away."
);
pyo3::create_exception!(rfaas, TimeoutError, Error, "No answer in time.");
pyo3::create_exception!(
    rfaas,
    InvocationError,
    Error,
    "The function ran but the executor reports an error; `return_code` has its code."
);
pyo3::create_exception!(
    rfaas,
    BusyError,
    Error,
    "Every input slot of the executor thread is taken by calls in flight."
);

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("Error", py.get_type::<Error>())?;
    m.add("ConfigError", py.get_type::<ConfigError>())?;
    m.add("RdmaError", py.get_type::<RdmaError>())?;
    m.add("ProtocolError", py.get_type::<ProtocolError>())?;
    m.add("CodeError", py.get_type::<CodeError>())?;
    m.add("NoExecutorError", py.get_type::<NoExecutorError>())?;
    m.add("NoResourcesError", py.get_type::<NoResourcesError>())?;
    m.add("UnreachableError", py.get_type::<UnreachableError>())?;
    m.add("RefusedError", py.get_type::<RefusedError>())?;
    m.add("ExecutorFailedError", py.get_type::<ExecutorFailedError>())?;
    m.add("ExecutorLostError", py.get_type::<ExecutorLostError>())?;
    m.add("TimeoutError", py.get_type::<TimeoutError>())?;
    m.add("InvocationError", py.get_type::<InvocationError>())?;
    m.add("BusyError", py.get_type::<BusyError>())?;
    Ok(())
}

/// The exception for a client error.
pub(crate) fn to_py(e: rfaas::Error) -> PyErr {
    use rfaas::Error as E;
    let message = e.to_string();
    match e {
        E::Rdma(rdmalib::Error::Config(_)) => ConfigError::new_err(message),
        E::Rdma(_) => RdmaError::new_err(message),
        E::Protocol(_) => ProtocolError::new_err(message),
        E::Code(_) => CodeError::new_err(message),
        E::NoExecutor(_) => NoExecutorError::new_err(message),
        E::NoResources(_) => NoResourcesError::new_err(message),
        E::Unreachable { .. } => UnreachableError::new_err(message),
        E::Refused(_) => RefusedError::new_err(message),
        E::ExecutorFailed(_) => ExecutorFailedError::new_err(message),
        E::ExecutorLost(_) => ExecutorLostError::new_err(message),
        E::Timeout(_) => TimeoutError::new_err(message),
        E::Invocation(_) | E::Function { .. } => Python::attach(|py| {
            let code = e.return_code().map_or(0, |code| code as u16);
            let err = InvocationError::new_err((message, code));
            // The executor's code, as an attribute besides the second argument.
            if let Err(e) = err.value(py).setattr("return_code", code) {
                return e;
            }
            err
        }),
        E::Busy { .. } => BusyError::new_err(message),
        E::InvalidArgument(_) => PyValueError::new_err(message),
    }
}

/// The exception for an unusable configuration file.
pub(crate) fn config(e: rfaas_protocol::config::ConfigError) -> PyErr {
    ConfigError::new_err(e.to_string())
}
