//! Write rFaaS functions as safe Rust.
//!
//! An rFaaS function has the C ABI `uint32_t f(void* args, uint32_t size, void* res)`: the
//! executor hands it the `size` input bytes the client wrote at `args`, and the function
//! writes its output at `res` and returns how many bytes it wrote. The same ABI serves native
//! shared libraries (`crate-type = ["cdylib"]` for a Linux target) and wasm modules (the same
//! crate built for `wasm32-wasip1` or `wasm32-unknown-unknown`), where `args` and `res` are
//! addresses in the module's linear memory.
//!
//! [`function!`] writes that glue around an ordinary Rust function:
//!
//! ```
//! rfaas_function::function! {
//!     /// Reverses the input.
//!     fn reverse(input: &[u8], output: &mut [u8]) -> usize {
//!         for (o, i) in output.iter_mut().zip(input.iter().rev()) {
//!             *o = *i;
//!         }
//!         input.len()
//!     }
//! }
//!
//! rfaas_function::function! {
//!     /// Sums little-endian `u32`s; an input of another length is the caller's error.
//!     fn sum(input: &[u8], output: &mut [u8]) -> Result<usize, &'static str> {
//!         if input.len() % 4 != 0 {
//!             return Err("the input is not a sequence of u32");
//!         }
//!         let total: u32 = input
//!             .chunks_exact(4)
//!             .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
//!             .fold(0, u32::wrapping_add);
//!         output[..4].copy_from_slice(&total.to_le_bytes());
//!         Ok(4)
//!     }
//! }
//! # fn main() {}
//! ```
//!
//! Each becomes an exported function of the library under its own name, which is the name
//! clients call it by.
//!
//! - **The output** is the whole output slot: as many bytes as the allocation's largest
//!   payload (`max_payload`), which the executor tells the library once it is loaded. Returning
//!   more bytes than the caller's result buffer holds is answered with the return code
//!   `OutputTooLarge`.
//! - **Errors:** a function that returns `Result<usize, E>` with `E: Display` fails a call with
//!   `Err(e)`: `e`'s text goes to the caller as the return code `FunctionError` and its message
//!   (cut to the output's length). The ABI carries that as [`FUNCTION_ERROR`] `| length`.
//! - **Panics** abort: a wasm module traps (return code `Trap`, the executor carries on); a
//!   native library takes its executor process down (the client is told). Return an error
//!   instead where the input can be wrong.
//! - **Memory:** both kinds are held to the allocation's memory. A wasm module's `memory.grow`
//!   fails beyond it; a native library's `malloc` returns null. Rust's infallible allocations
//!   abort on that; use `try_reserve` and friends where the size comes from the input.
//!
//! The crate is `no_std` and has no dependencies, so it also serves `no_std` wasm modules.
//! C and C++ functions get the same from `include/rfaas_function.h`.

#![no_std]
#![deny(missing_docs)]

use core::fmt::{self, Write as _};
use core::sync::atomic::{AtomicU32, Ordering};

/// The ABI's error flag: a function that returns `FUNCTION_ERROR | n` failed, and the first
/// `n` bytes of its output are a UTF-8 message for the caller.
pub const FUNCTION_ERROR: u32 = 1 << 31;

/// The output slot's size, as the executor told it; 0 until it did.
static OUTPUT_CAPACITY: AtomicU32 = AtomicU32::new(0);

/// The executor calls this once after loading the library (native) or instantiating the
/// module (wasm), before any function, with the size of every output slot.
#[unsafe(no_mangle)]
pub extern "C" fn __rfaas_set_output_capacity(capacity: u32) {
    OUTPUT_CAPACITY.store(capacity, Ordering::Relaxed);
}

/// What a function may return: a size, or a size or an error.
pub trait FunctionResult {
    /// The ABI's return value; `output` is where an error's message goes.
    fn into_abi(self, output: &mut [u8]) -> u32;
}

impl FunctionResult for usize {
    fn into_abi(self, _output: &mut [u8]) -> u32 {
        // A size at or past the flag cannot fit any output: the executor refuses it as too
        // large, and must not read it as an error.
        u32::try_from(self).map_or(FUNCTION_ERROR - 1, |n| n.min(FUNCTION_ERROR - 1))
    }
}

impl<E: fmt::Display> FunctionResult for Result<usize, E> {
    fn into_abi(self, output: &mut [u8]) -> u32 {
        match self {
            Ok(n) => n.into_abi(output),
            Err(e) => {
                let mut message = Truncating { buf: output, len: 0 };
                // Truncating never fails: what does not fit is dropped.
                let _ = write!(message, "{e}");
                FUNCTION_ERROR | message.len as u32
            }
        }
    }
}

/// Writes into a byte slice and drops what does not fit, at a character boundary.
struct Truncating<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl fmt::Write for Truncating<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = self.buf.len() - self.len;
        let mut take = s.len().min(room);
        while !s.is_char_boundary(take) {
            take -= 1;
        }
        self.buf[self.len..self.len + take].copy_from_slice(&s.as_bytes()[..take]);
        self.len += take;
        Ok(())
    }
}

/// The input and output of a call, from the ABI's pointers.
///
/// The output is the output slot's size as the executor told it, or `size` bytes before it
/// did (the seed's guarantee: the output holds at least as much as the input).
///
/// # Safety
///
/// The executor's contract: `args` is valid for reads of `size` bytes and `res` for writes of
/// the output slot's size, neither is written by anyone else during the call, and the two do
/// not overlap. Either may be null only when its length is 0.
#[doc(hidden)]
pub unsafe fn __buffers<'a>(args: *const u8, size: u32, res: *mut u8) -> (&'a [u8], &'a mut [u8]) {
    let capacity = match OUTPUT_CAPACITY.load(Ordering::Relaxed) {
        0 => size,
        n => n,
    } as usize;
    // SAFETY: the caller's contract; empty slices are made without the pointers, which may
    // then be null.
    unsafe {
        (
            if size == 0 {
                &[]
            } else {
                core::slice::from_raw_parts(args, size as usize)
            },
            if capacity == 0 {
                &mut []
            } else {
                core::slice::from_raw_parts_mut(res, capacity)
            },
        )
    }
}

/// Exports `fn name(input: &[u8], output: &mut [u8]) -> R` as the rFaaS function `name`, where
/// `R` is `usize` (the output's length) or `Result<usize, E: Display>`. See the crate's
/// documentation.
#[macro_export]
macro_rules! function {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($input:ident : &[u8], $output:ident : &mut [u8]) -> $ret:ty $body:block) => {
        $(#[$meta])*
        ///
        /// # Safety
        ///
        /// Called by the rFaaS executor with its buffers (the ABI's contract).
        #[unsafe(no_mangle)]
        $vis unsafe extern "C" fn $name(args: *const u8, size: u32, res: *mut u8) -> u32 {
            fn body($input: &[u8], $output: &mut [u8]) -> $ret $body
            // SAFETY: the executor keeps the ABI's contract, which is `__buffers`' contract.
            let (input, output) = unsafe { $crate::__buffers(args, size, res) };
            $crate::FunctionResult::into_abi(body(input, output), output)
        }
    };
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;

    function! {
        fn double(input: &[u8], output: &mut [u8]) -> usize {
            for (o, i) in output.iter_mut().zip(input) {
                *o = i.wrapping_mul(2);
            }
            input.len()
        }
    }

    function! {
        fn picky(input: &[u8], _output: &mut [u8]) -> Result<usize, &'static str> {
            if input.is_empty() { Err("empty input: nothing to do here ✓") } else { Ok(input.len()) }
        }
    }

    #[test]
    fn the_flag_is_the_protocols() {
        assert_eq!(FUNCTION_ERROR, rfaas_protocol::invocation::FUNCTION_ERROR);
    }

    #[test]
    fn glue_passes_buffers_and_errors() {
        let input = [1u8, 2, 3];
        let mut output = [0u8; 16];
        // Before the executor said otherwise, the output is as long as the input.
        // SAFETY: both buffers are valid for their lengths.
        let n = unsafe { double(input.as_ptr(), 3, output.as_mut_ptr()) };
        assert_eq!((n, &output[..3]), (3, &[2u8, 4, 6][..]));
        // SAFETY: as above.
        assert_eq!(unsafe { picky(input.as_ptr(), 3, output.as_mut_ptr()) }, 3);
        // A message longer than the 16-byte output is cut at a character boundary.
        __rfaas_set_output_capacity(16);
        // SAFETY: the output holds 16 bytes, the capacity just set.
        let r = unsafe { picky(core::ptr::null(), 0, output.as_mut_ptr()) };
        __rfaas_set_output_capacity(0);
        assert_eq!(r & FUNCTION_ERROR, FUNCTION_ERROR);
        let len = (r & !FUNCTION_ERROR) as usize;
        assert_eq!(core::str::from_utf8(&output[..len]), Ok("empty input: not"));
    }

    #[test]
    fn sizes_never_read_as_errors() {
        let mut out = [];
        assert_eq!(7usize.into_abi(&mut out), 7);
        assert_eq!(usize::MAX.into_abi(&mut out), FUNCTION_ERROR - 1);
        assert_eq!(
            (FUNCTION_ERROR as usize).into_abi(&mut out),
            FUNCTION_ERROR - 1
        );
    }
}
