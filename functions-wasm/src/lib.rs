//! Example rFaaS functions compiled to WebAssembly (`functions.wasm`).
//!
//! Build from the repository root with
//!
//! ```text
//! cargo build --release --target wasm32-unknown-unknown --manifest-path functions-wasm/Cargo.toml
//! ```
//!
//! which writes `functions-wasm/target/wasm32-unknown-unknown/release/functions.wasm`.
//!
//! # ABI
//!
//! The module defines and exports its own `memory`. Every exported function has the wasm type
//! `(i32 args, i32 size, i32 res) -> i32`, the counterpart of the native
//! `uint32_t f(void* args, uint32_t size, void* res)`: `args` and `res` are addresses in the
//! module's linear memory, `size` is the number of input bytes, and the return value (read as a
//! `u32`) is the number of output bytes written at `res`.
//!
//! The host grows the memory and places the invocation buffers beyond the module's own heap. It
//! guarantees that `args..args+size` is readable, that `res` has room for at least `size` bytes,
//! and that the buffers do not overlap. The functions touch nothing but those two ranges (the
//! deliberately faulty ones aside), and use no allocator.
//!
//! The functions, in the sorted order that defines their wire indices:
//! [`empty`], [`oversize`], [`out_of_bounds`], [`pattern`], [`spin`], [`trap`].

#![no_std]

#[cfg(not(target_arch = "wasm32"))]
compile_error!("functions-wasm must be built with `--target wasm32-unknown-unknown`");

use core::arch::wasm32;

/// Any panic (there is none on purpose) becomes a wasm trap.
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    wasm32::unreachable()
}

/// Copies the `size` input bytes to the output and returns `size`.
///
/// # Safety
///
/// `args` must be valid for reads of `size` bytes, `res` valid for writes of `size` bytes, and
/// the ranges must not overlap (see the crate's ABI).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn empty(args: *const u8, size: u32, res: *mut u8) -> u32 {
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
pub unsafe extern "C" fn pattern(_args: *const u8, size: u32, res: *mut u8) -> u32 {
    for i in 0..size {
        // SAFETY: `i < size` and the caller guarantees `res` is valid for writes of `size`
        // bytes.
        unsafe {
            res.add(i as usize)
                .write(i.wrapping_mul(7).wrapping_add(3) as u8)
        };
    }
    size
}

/// Busy-loops for the number of iterations in the first 4 input bytes (little-endian u32; no
/// loop when `size < 4`), forever when that number is `0xFFFF_FFFF`, then copies the input to
/// the output like [`empty`]. Used to test the executor's time limits.
///
/// # Safety
///
/// Same contract as [`empty`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn spin(args: *const u8, size: u32, res: *mut u8) -> u32 {
    if size >= 4 {
        let mut bytes = [0u8; 4];
        for (i, byte) in bytes.iter_mut().enumerate() {
            // SAFETY: `i < 4 <= size` and `args` is valid for reads of `size` bytes.
            *byte = unsafe { args.add(i).read() };
        }
        let iterations = u32::from_le_bytes(bytes);
        if iterations == u32::MAX {
            loop {
                core::hint::black_box(());
            }
        }
        for i in 0..iterations {
            core::hint::black_box(i);
        }
    }
    // SAFETY: forwarded from this function's own contract.
    unsafe { copy_payload(args, size, res) }
}

/// Executes the `unreachable` instruction: the call traps.
///
/// # Safety
///
/// Always safe to call; it is `unsafe` only to share the signature of the other functions.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn trap(_args: *const u8, _size: u32, _res: *mut u8) -> u32 {
    wasm32::unreachable()
}

/// Reads one byte at address `0xFFFF_FFF0`, beyond any memory the host gives the module: the
/// load traps.
///
/// # Safety
///
/// Always traps; it is `unsafe` only to share the signature of the other functions.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn out_of_bounds(_args: *const u8, _size: u32, _res: *mut u8) -> u32 {
    let address = core::ptr::without_provenance::<u8>(0xFFFF_FFF0);
    // SAFETY: not memory-safe on purpose. A volatile load is always emitted as an `i32.load8_u`
    // of that address, and the wasm sandbox turns the out-of-bounds access into a trap, so the
    // function never returns and no invalid value is ever observed.
    let byte = unsafe { address.read_volatile() };
    u32::from(byte)
}

/// Writes nothing and returns `u32::MAX` (`-1` as an `i32`), a size larger than any output
/// buffer: the executor must reject it.
///
/// # Safety
///
/// Always safe to call; it is `unsafe` only to share the signature of the other functions.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn oversize(_args: *const u8, _size: u32, _res: *mut u8) -> u32 {
    u32::MAX
}

/// Copies `size` bytes from `args` to `res` and returns `size`.
///
/// # Safety
///
/// `args` valid for reads and `res` valid for writes of `size` bytes, not overlapping.
unsafe fn copy_payload(args: *const u8, size: u32, res: *mut u8) -> u32 {
    // SAFETY: guaranteed by the caller; u8 has no alignment requirement. The host places the
    // buffers beyond the module's heap, so neither pointer is null.
    unsafe { core::ptr::copy_nonoverlapping(args, res, size as usize) };
    size
}
