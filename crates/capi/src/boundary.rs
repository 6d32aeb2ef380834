//! The boundary between C and Rust: every entry point runs its body through [`entry`], which
//! stops panics and turns errors into a status and a message; the pointer helpers turn what C
//! passes into references, refusing NULL and invalid UTF-8 with a message that names the
//! argument.

use std::ffi::{CStr, c_char};
use std::panic::{AssertUnwindSafe, catch_unwind};

use crate::status::{self, rfaas_status};

/// Why an entry point failed. Boxed, so the `Result` every entry point's body returns is one
/// pointer wide on the path that succeeds.
pub(crate) struct Failure(Box<Details>);

struct Details {
    status: rfaas_status,
    message: String,
    return_code: u16,
}

impl Failure {
    pub(crate) fn new(status: rfaas_status, message: impl Into<String>) -> Failure {
        Failure(Box::new(Details {
            status,
            message: message.into(),
            return_code: 0,
        }))
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Failure {
        Failure::new(rfaas_status::RFAAS_ERROR_INVALID_ARGUMENT, message)
    }
}

impl From<rfaas::Error> for Failure {
    fn from(e: rfaas::Error) -> Failure {
        use rfaas::Error as E;
        use rfaas_status::*;
        let status = match &e {
            E::Rdma(rdmalib::Error::Config(_)) => RFAAS_ERROR_CONFIG,
            E::Rdma(_) => RFAAS_ERROR_RDMA,
            E::Protocol(_) => RFAAS_ERROR_PROTOCOL,
            E::Code(_) => RFAAS_ERROR_CODE,
            E::NoExecutor(_) => RFAAS_ERROR_NO_EXECUTOR,
            E::NoResources(_) => RFAAS_ERROR_NO_RESOURCES,
            E::Unreachable { .. } => RFAAS_ERROR_UNREACHABLE,
            E::Refused(_) => RFAAS_ERROR_REFUSED,
            E::ExecutorFailed(_) => RFAAS_ERROR_EXECUTOR_FAILED,
            E::ExecutorLost(_) => RFAAS_ERROR_EXECUTOR_LOST,
            E::Timeout(_) => RFAAS_ERROR_TIMEOUT,
            E::Invocation(_) | E::Function { .. } => RFAAS_ERROR_INVOCATION,
            E::Busy { .. } => RFAAS_ERROR_BUSY,
            E::InvalidArgument(_) => RFAAS_ERROR_INVALID_ARGUMENT,
        };
        let return_code = e.return_code().map_or(0, |code| code as u16);
        Failure(Box::new(Details {
            status,
            message: e.to_string(),
            return_code,
        }))
    }
}

impl From<rdmalib::Error> for Failure {
    fn from(e: rdmalib::Error) -> Failure {
        Failure::from(rfaas::Error::from(e))
    }
}

impl From<rfaas_protocol::config::ConfigError> for Failure {
    fn from(e: rfaas_protocol::config::ConfigError) -> Failure {
        Failure::new(rfaas_status::RFAAS_ERROR_CONFIG, e.to_string())
    }
}

/// Runs an entry point's body: `RFAAS_OK`, or the failure's status with its message recorded
/// for `rfaas_last_error`. A panic becomes `RFAAS_ERROR_INTERNAL` and never reaches C.
pub(crate) fn entry(body: impl FnOnce() -> Result<(), Failure>) -> rfaas_status {
    // Unwind safety: a body that panics leaves nothing half-updated that C can reach — handles
    // are only handed out through out-pointers once their body has succeeded.
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => rfaas_status::RFAAS_OK,
        Ok(Err(Failure(failure))) => {
            status::record(&failure.message, failure.return_code);
            failure.status
        }
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
                .unwrap_or("a panic without a message");
            status::record(&format!("internal error in librfaas: {what}"), 0);
            rfaas_status::RFAAS_ERROR_INTERNAL
        }
    }
}

/// Runs a function that returns nothing (the `_free` functions): a panic is stopped and
/// recorded, as in [`entry`].
pub(crate) fn entry_void(body: impl FnOnce()) {
    let _ = entry(|| {
        body();
        Ok(())
    });
}

/// A C string argument as UTF-8.
///
/// # Safety
///
/// `p` is NULL or points to a NUL-terminated string that stays valid for `'a`.
pub(crate) unsafe fn text<'a>(p: *const c_char, what: &str) -> Result<&'a str, Failure> {
    if p.is_null() {
        return Err(Failure::invalid(format!("{what} is NULL")));
    }
    // SAFETY: not NULL (checked); NUL-terminated and valid for 'a by this function's contract.
    let s = unsafe { CStr::from_ptr(p) };
    s.to_str()
        .map_err(|e| Failure::invalid(format!("{what} is not UTF-8: {e}")))
}

/// An optional C string argument: `None` for NULL.
///
/// # Safety
///
/// As for [`text`].
pub(crate) unsafe fn optional_text<'a>(
    p: *const c_char,
    what: &str,
) -> Result<Option<&'a str>, Failure> {
    if p.is_null() {
        Ok(None)
    } else {
        // SAFETY: forwarded from this function's contract.
        unsafe { text(p, what) }.map(Some)
    }
}

/// A handle (or struct) argument.
///
/// # Safety
///
/// `p` is NULL or points to a valid `T` that no one mutates during `'a`.
pub(crate) unsafe fn get<'a, T>(p: *const T, what: &str) -> Result<&'a T, Failure> {
    // SAFETY: a non-NULL `p` points to a valid, unaliased-for-writes `T` (this function's
    // contract); `as_ref` returns None for NULL.
    unsafe { p.as_ref() }.ok_or_else(|| Failure::invalid(format!("{what} is NULL")))
}

/// Bytes passed as pointer and length (`NULL, 0` is the empty slice).
///
/// # Safety
///
/// `p` is NULL with `len == 0`, or points to `len` readable bytes valid for `'a`.
pub(crate) unsafe fn bytes<'a>(p: *const u8, len: usize, what: &str) -> Result<&'a [u8], Failure> {
    if p.is_null() {
        return if len == 0 {
            Ok(&[])
        } else {
            Err(Failure::invalid(format!("{what} is NULL")))
        };
    }
    // SAFETY: not NULL (checked); `len` readable bytes valid for 'a by this function's
    // contract; u8 needs no alignment.
    Ok(unsafe { std::slice::from_raw_parts(p, len) })
}

/// Writes `value` through an out-pointer.
///
/// # Safety
///
/// `out` is NULL or valid for a write of a `T`.
pub(crate) unsafe fn put<T>(out: *mut T, value: T, what: &str) -> Result<(), Failure> {
    if out.is_null() {
        return Err(Failure::invalid(format!("{what} is NULL")));
    }
    // SAFETY: not NULL (checked) and valid for writes by this function's contract; `write`
    // does not read or drop the old (possibly uninitialized) value.
    unsafe { out.write(value) };
    Ok(())
}

/// Checks an out-pointer before the work that fills it, so a NULL one fails before anything
/// is done (and nothing made has to be undone).
pub(crate) fn check_out<T>(out: *mut T, what: &str) -> Result<(), Failure> {
    if out.is_null() {
        Err(Failure::invalid(format!("{what} is NULL")))
    } else {
        Ok(())
    }
}

/// Moves `value` to the heap for C, which frees it with [`release`].
pub(crate) fn handle<T>(value: T) -> *mut T {
    Box::into_raw(Box::new(value))
}

/// Takes back a handle made by [`handle`] (NULL: `None`).
///
/// # Safety
///
/// `p` is NULL or came from [`handle`] for the same `T` and was not released before.
pub(crate) unsafe fn release<T>(p: *mut T) -> Option<Box<T>> {
    if p.is_null() {
        None
    } else {
        // SAFETY: `p` came from `Box::into_raw` for this `T` and is released only once
        // (this function's contract).
        Some(unsafe { Box::from_raw(p) })
    }
}
