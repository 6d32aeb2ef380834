//! Example rFaaS functions, built as the shared library `libfunctions.so` with the
//! [`rfaas_function`] SDK: each is a safe `fn(input, output) -> usize` exported with the rFaaS
//! C ABI `uint32_t f(void* args, uint32_t size, void* res)`.
//!
//! The functions, in the sorted order that defines their wire indices:
//! - `crash`: raises `SIGSEGV`; the executor process goes down and the client is told.
//! - `empty`: copies the input to the output.
//! - `oversize`: returns a size larger than any output buffer; the executor refuses it.
//! - `pattern`: writes `size` bytes of `(i * 7 + 3) as u8`.
//! - `sleep`: sleeps for the milliseconds in the first 4 input bytes (little-endian `u32`),
//!   then copies the input like `empty`.

use std::time::Duration;

rfaas_function::function! {
    /// Copies the input to the output.
    fn empty(input: &[u8], output: &mut [u8]) -> usize {
        copy(input, output)
    }
}

rfaas_function::function! {
    /// Writes as many bytes of the pattern `(i * 7 + 3) as u8` as the input has; the input is
    /// ignored.
    fn pattern(input: &[u8], output: &mut [u8]) -> usize {
        for (i, byte) in output.iter_mut().take(input.len()).enumerate() {
            *byte = i.wrapping_mul(7).wrapping_add(3) as u8;
        }
        input.len()
    }
}

rfaas_function::function! {
    /// Sleeps for the milliseconds in the first 4 input bytes (no sleep with fewer), then
    /// copies the input like `empty`.
    fn sleep(input: &[u8], output: &mut [u8]) -> usize {
        if let Some(ms) = input.first_chunk::<4>() {
            std::thread::sleep(Duration::from_millis(u64::from(u32::from_le_bytes(*ms))));
        }
        copy(input, output)
    }
}

rfaas_function::function! {
    /// Raises `SIGSEGV`, as a function with a memory error would, and aborts if that returns.
    ///
    /// The signal is raised explicitly (writing through a null pointer would be undefined
    /// behaviour in Rust), so a `SIGSEGV` handler of the executor runs as it would for a real
    /// fault; should the handler return, the process aborts.
    fn crash(_input: &[u8], _output: &mut [u8]) -> usize {
        // SAFETY: raise(3) has no memory-safety preconditions.
        unsafe { libc::raise(libc::SIGSEGV) };
        std::process::abort()
    }
}

rfaas_function::function! {
    /// Writes nothing and returns a size larger than any output buffer: the executor must
    /// refuse it instead of sending past its output.
    fn oversize(_input: &[u8], _output: &mut [u8]) -> usize {
        usize::MAX
    }
}

/// Copies `input` to the start of `output`, as much as fits, and returns the input's length.
fn copy(input: &[u8], output: &mut [u8]) -> usize {
    let n = input.len().min(output.len());
    output[..n].copy_from_slice(&input[..n]);
    input.len()
}
