//! Status codes, and the message of the last failure on each thread.

use std::cell::RefCell;
use std::ffi::{CString, c_char};

/// What a call returns: `RFAAS_OK`, or why it failed (`rfaas_last_error()` says more).
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum rfaas_status {
    /// Success.
    RFAAS_OK = 0,
    /// An argument is not valid: a NULL pointer, a payload larger than its buffer, a thread
    /// or function that does not exist, a value out of range.
    RFAAS_ERROR_INVALID_ARGUMENT = 1,
    /// A file (device database, executors database, benchmark settings) cannot be read or
    /// is not valid, or it does not name the device asked for.
    RFAAS_ERROR_CONFIG = 2,
    /// The RDMA layer failed.
    RFAAS_ERROR_RDMA = 3,
    /// A peer sent something the protocol does not allow.
    RFAAS_ERROR_PROTOCOL = 4,
    /// The function library cannot be used, or has no function of that name.
    RFAAS_ERROR_CODE = 5,
    /// No executor server fits the request, free or not: none in the executors database, or
    /// none the resource manager knows.
    RFAAS_ERROR_NO_EXECUTOR = 6,
    /// Every executor server is busy right now; asking again later may succeed.
    RFAAS_ERROR_NO_RESOURCES = 7,
    /// A manager cannot be reached, or closed the connection.
    RFAAS_ERROR_UNREACHABLE = 8,
    /// The executor manager or the resource manager refused the request.
    RFAAS_ERROR_REFUSED = 9,
    /// The executor could not load the function library.
    RFAAS_ERROR_EXECUTOR_FAILED = 10,
    /// The executor process or its connection went away; the executor cannot be used again.
    RFAAS_ERROR_EXECUTOR_LOST = 11,
    /// No answer in time (a call past its timeout: its input slot is free again once the late
    /// result arrives).
    RFAAS_ERROR_TIMEOUT = 12,
    /// The function ran but the executor reports an error; `rfaas_last_return_code()` has
    /// the executor's code.
    RFAAS_ERROR_INVOCATION = 13,
    /// Every input slot of the executor thread is taken by calls in flight; retry once one
    /// is waited for.
    RFAAS_ERROR_BUSY = 14,
    /// A bug in librfaas (a Rust panic, stopped at the boundary).
    RFAAS_ERROR_INTERNAL = 15,
}

struct LastError {
    message: CString,
    return_code: u16,
}

thread_local! {
    static LAST: RefCell<LastError> = RefCell::new(LastError {
        message: CString::default(),
        return_code: 0,
    });
}

/// Remembers a failure for `rfaas_last_error` and `rfaas_last_return_code` on this thread.
pub(crate) fn record(message: &str, return_code: u16) {
    // A message never holds NUL in practice; if one did, it would end the C string early.
    let message = CString::new(message.replace('\0', "\\0")).unwrap_or_default();
    LAST.with(|last| {
        *last.borrow_mut() = LastError {
            message,
            return_code,
        }
    });
}

/// The message of the last failed call on this thread ("" if none failed). The string
/// belongs to the library and stays valid until the next failing call on this thread.
#[unsafe(no_mangle)]
pub extern "C" fn rfaas_last_error() -> *const c_char {
    LAST.with(|last| last.borrow().message.as_ptr())
}

/// The executor's return code of the last call on this thread that failed with
/// `RFAAS_ERROR_INVOCATION` (1 unknown function, 2 payload too large, 3 output too large,
/// 4 trap, 5 time limit, 6 malformed invocation, 7 executor thread not ready); 0 if the last
/// failure was something else.
#[unsafe(no_mangle)]
pub extern "C" fn rfaas_last_return_code() -> u16 {
    LAST.with(|last| last.borrow().return_code)
}

/// The name of a status code ("RFAAS_ERROR_TIMEOUT"), or "unknown status" for a value that
/// is none. The string is static.
#[unsafe(no_mangle)]
pub extern "C" fn rfaas_status_name(status: i32) -> *const c_char {
    let name: &'static std::ffi::CStr = match status {
        0 => c"RFAAS_OK",
        1 => c"RFAAS_ERROR_INVALID_ARGUMENT",
        2 => c"RFAAS_ERROR_CONFIG",
        3 => c"RFAAS_ERROR_RDMA",
        4 => c"RFAAS_ERROR_PROTOCOL",
        5 => c"RFAAS_ERROR_CODE",
        6 => c"RFAAS_ERROR_NO_EXECUTOR",
        7 => c"RFAAS_ERROR_NO_RESOURCES",
        8 => c"RFAAS_ERROR_UNREACHABLE",
        9 => c"RFAAS_ERROR_REFUSED",
        10 => c"RFAAS_ERROR_EXECUTOR_FAILED",
        11 => c"RFAAS_ERROR_EXECUTOR_LOST",
        12 => c"RFAAS_ERROR_TIMEOUT",
        13 => c"RFAAS_ERROR_INVOCATION",
        14 => c"RFAAS_ERROR_BUSY",
        15 => c"RFAAS_ERROR_INTERNAL",
        _ => c"unknown status",
    };
    name.as_ptr()
}
