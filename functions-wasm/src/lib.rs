//! Example rFaaS functions compiled to WebAssembly (`functions.wasm`), written with the
//! [`rfaas_function`] SDK, `no_std` and without an allocator.
//!
//! Build from the repository root with
//!
//! ```text
//! cargo build --release --target wasm32-unknown-unknown --manifest-path functions-wasm/Cargo.toml
//! ```
//!
//! which writes `functions-wasm/target/wasm32-unknown-unknown/release/functions.wasm`.
//!
//! The functions, in the sorted order that defines their wire indices:
//! - `empty`: copies the input to the output.
//! - `oversize`: returns a size larger than any output buffer; the executor refuses it.
//! - `out_of_bounds`: loads from beyond the module's memory: the call traps.
//! - `pattern`: writes `size` bytes of `(i * 7 + 3) as u8`.
//! - `spin`: busy-loops for the iterations in the first 4 input bytes (little-endian `u32`),
//!   forever for `0xFFFF_FFFF`, then copies the input like `empty` (the time limit's test).
//! - `trap`: executes `unreachable`.

#![no_std]

#[cfg(not(target_arch = "wasm32"))]
compile_error!("functions-wasm must be built with `--target wasm32-unknown-unknown`");

use core::arch::wasm32;

/// Any panic (there is none on purpose) becomes a wasm trap.
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    wasm32::unreachable()
}

rfaas_function::function! {
    /// Copies the input to the output.
    fn empty(input: &[u8], output: &mut [u8]) -> usize {
        copy(input, output)
    }
}

rfaas_function::function! {
    /// Writes as many bytes of the pattern `(i * 7 + 3) as u8` as the input has.
    fn pattern(input: &[u8], output: &mut [u8]) -> usize {
        for (i, byte) in output.iter_mut().take(input.len()).enumerate() {
            *byte = i.wrapping_mul(7).wrapping_add(3) as u8;
        }
        input.len()
    }
}

rfaas_function::function! {
    /// Busy-loops for the iterations in the first 4 input bytes, forever for `0xFFFF_FFFF`,
    /// then copies the input like `empty`.
    fn spin(input: &[u8], output: &mut [u8]) -> usize {
        if let Some(n) = input.first_chunk::<4>() {
            let iterations = u32::from_le_bytes(*n);
            if iterations == u32::MAX {
                loop {
                    core::hint::black_box(());
                }
            }
            for i in 0..iterations {
                core::hint::black_box(i);
            }
        }
        copy(input, output)
    }
}

rfaas_function::function! {
    /// Executes the `unreachable` instruction: the call traps.
    fn trap(_input: &[u8], _output: &mut [u8]) -> usize {
        wasm32::unreachable()
    }
}

rfaas_function::function! {
    /// Reads one byte at address `0xFFFF_FFF0`, beyond any memory the host gives the module:
    /// the load traps.
    fn out_of_bounds(_input: &[u8], _output: &mut [u8]) -> usize {
        let address = core::ptr::without_provenance::<u8>(0xFFFF_FFF0);
        // SAFETY: not memory-safe on purpose. A volatile load is always emitted as an
        // `i32.load8_u` of that address, and the wasm sandbox turns the out-of-bounds access
        // into a trap, so the function never returns and no invalid value is observed.
        usize::from(unsafe { address.read_volatile() })
    }
}

rfaas_function::function! {
    /// Writes nothing and returns a size larger than any output buffer: the executor must
    /// refuse it.
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
