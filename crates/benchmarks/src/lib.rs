//! Benchmark clients of rFaaS-rs and the pieces they share.
//!
//! - [`stats`]: [`Samples`] of nanosecond timings (min, median, percentiles, mean) and a
//!   [`CsvWriter`] for the raw rows behind every printed summary.
//! - Binaries: `rdma_pingpong`, the raw RDMA baseline (write-with-immediate round trips between
//!   two processes, in the manner of perftest's `ib_write_lat`), which the invocation
//!   benchmarks are compared against.
//! - [`workloads`]: inputs and reference results of the workload functions.
#![deny(missing_docs)]

pub mod pingpong;
pub mod setup;
pub mod stats;
pub mod workloads;

pub use stats::{CsvWriter, Samples, Summary};

/// The phases `cold_benchmarker` times, in the order they happen, and `total` last; its CSV
/// has a column `NAME_ns` for each, after `repetition`.
pub const COLD_PHASES: [&str; 7] = [
    "lease",
    "connect",
    "submit",
    "spawn_connect",
    "initialize",
    "execute",
    "total",
];
