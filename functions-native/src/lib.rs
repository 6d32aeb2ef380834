//! Example rFaaS functions, built as the shared library `libfunctions.so`.
//!
//! Every exported function has the rFaaS C ABI
//!
//! ```c
//! extern "C" uint32_t func_name(void* args, uint32_t size, void* res);
//! ```
//!
//! `args` points to `size` readable bytes of input. `res` points to the output buffer, and the
//! function returns how many bytes of it hold the result.
//!
//! # ABI contract
//!
//! The executor guarantees that `args` is valid for reads of `size` bytes, that `res` is valid
//! for writes of at least `size` bytes (it sizes the output buffer like the input buffer), and
//! that the two buffers do not overlap. A returned size larger than the output buffer is
//! rejected by the executor (see [`oversize`]); a function that crashes (see [`crash`]) is turned
//! into an error for the client.
//!
//! The functions, in the sorted order that defines their wire indices:
//! [`crash`], [`empty`], [`oversize`], [`pattern`], [`sleep`].

use core::ffi::c_void;
use std::time::Duration;

/// Copies the `size` input bytes to the output and returns `size`.
///
/// # Safety
///
/// `args` must be valid for reads of `size` bytes, `res` valid for writes of `size` bytes, and
/// the two ranges must not overlap (see the crate's ABI contract).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn empty(args: *mut c_void, size: u32, res: *mut c_void) -> u32 {
    // SAFETY: forwarded from this function's own contract.
    unsafe { copy_payload(args, size, res) }
}

/// Writes `size` bytes of the pattern `(i * 7 + 3) as u8` to the output and returns `size`.
///
/// The input is ignored.
///
/// # Safety
///
/// `res` must be valid for writes of `size` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pattern(_args: *mut c_void, size: u32, res: *mut c_void) -> u32 {
    if size == 0 {
        return 0;
    }
    // SAFETY: the caller guarantees that `res` is valid for writes of `size` (> 0) bytes, so it
    // is non-null; u8 has no alignment requirement.
    let out = unsafe { std::slice::from_raw_parts_mut(res.cast::<u8>(), size as usize) };
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = (i.wrapping_mul(7).wrapping_add(3)) as u8;
    }
    size
}

/// Sleeps for the number of milliseconds in the first 4 input bytes (little-endian u32, no
/// sleep when `size < 4`), then copies the input to the output like [`empty`].
///
/// # Safety
///
/// Same contract as [`empty`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sleep(args: *mut c_void, size: u32, res: *mut c_void) -> u32 {
    if size >= 4 {
        let mut millis = [0u8; 4];
        // SAFETY: the caller guarantees `args` is valid for reads of `size` >= 4 bytes; the
        // destination is a local array of 4 bytes.
        unsafe { std::ptr::copy_nonoverlapping(args.cast::<u8>(), millis.as_mut_ptr(), 4) };
        std::thread::sleep(Duration::from_millis(u64::from(u32::from_le_bytes(millis))));
    }
    // SAFETY: forwarded from this function's own contract.
    unsafe { copy_payload(args, size, res) }
}

/// Raises `SIGSEGV`, as a function with a memory error would, and aborts if that returns.
///
/// The executor must turn this into an error for the client. The signal is raised explicitly
/// (instead of writing through a null pointer, which would be undefined behaviour in Rust), so
/// a `SIGSEGV` handler of the executor runs as it would for a real fault; should the handler
/// return, or the signal be ignored, the process aborts with `SIGABRT`.
///
/// # Safety
///
/// Always safe to call; it is `unsafe` only to share the signature of the other functions.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn crash(_args: *mut c_void, _size: u32, _res: *mut c_void) -> u32 {
    // SAFETY: raise(3) has no memory-safety preconditions.
    unsafe { libc::raise(libc::SIGSEGV) };
    std::process::abort()
}

/// Writes nothing and returns `u32::MAX`, a size larger than any output buffer.
///
/// The executor must reject the result instead of reading past its output buffer.
///
/// # Safety
///
/// Always safe to call; it is `unsafe` only to share the signature of the other functions.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn oversize(_args: *mut c_void, _size: u32, _res: *mut c_void) -> u32 {
    u32::MAX
}

/// Copies `size` bytes from `args` to `res` and returns `size`.
///
/// # Safety
///
/// `args` valid for reads and `res` valid for writes of `size` bytes, not overlapping.
unsafe fn copy_payload(args: *mut c_void, size: u32, res: *mut c_void) -> u32 {
    if size > 0 {
        // SAFETY: guaranteed by the caller; u8 has no alignment requirement.
        unsafe {
            std::ptr::copy_nonoverlapping(args.cast::<u8>(), res.cast::<u8>(), size as usize)
        };
    }
    size
}
