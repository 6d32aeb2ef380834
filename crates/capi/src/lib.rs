//! librfaas: the rFaaS client library behind a C ABI, for C and C++ programs.
//!
//! The header `include/rfaas.h` is generated from this crate by cbindgen (and checked in;
//! `tests/header.rs` fails when it is stale); `include/rfaas.hpp` is the C++17 layer over it.
//!
//! - [`status`]: the status codes and the thread-local message of the last failure.
//! - [`boundary`]: what every entry point does — catch panics, check pointers, turn errors
//!   into a status — and the only `unsafe` of the crate besides the entry points themselves.
//! - [`setup`]: the files (devices, executors database, benchmark settings), endpoints and
//!   leases.
//! - [`calls`]: allocations, registered buffers, blocking and asynchronous calls.
#![expect(
    non_camel_case_types,
    reason = "the exported types carry the C names the header shows"
)]

mod boundary;
mod calls;
mod setup;
mod status;

/// The version of the ABI this header describes; `rfaas_abi_version()` returns the library's.
/// A program should refuse to run when the two differ.
pub const RFAAS_ABI_VERSION: u32 = 1;

/// The ABI version of the loaded library (compare it with `RFAAS_ABI_VERSION`).
#[unsafe(no_mangle)]
pub extern "C" fn rfaas_abi_version() -> u32 {
    RFAAS_ABI_VERSION
}

/// Logs the library's lines on stderr as the rFaaS binaries do (`RUST_LOG` wins; else
/// `verbosity` 0 = info, 1 = debug, 2 = trace). Without it the library logs nothing. Only the
/// first call has an effect.
#[unsafe(no_mangle)]
pub extern "C" fn rfaas_log_init(verbosity: u8) -> status::rfaas_status {
    boundary::entry(|| {
        rfaas_cli::init_logging(verbosity);
        Ok(())
    })
}
