//! The wire contract of rFaaS: what clients, executor managers, executors and the resource
//! manager must agree on, and the seed's JSON files they read.
//!
//! - [`invocation`]: the hot path — immediates, the input header, return codes, and the queue
//!   depths both sides size their queues by.
//! - [`control`]: the [`Hello`](control::Hello) of every connection request and the records of
//!   the allocation, lease and billing exchanges: fixed-layout little-endian, versioned,
//!   each declared once as its fields ([`Record`]).
//! - [`mailbox`]: how control records travel on a connection.
//! - [`config`]: `executor_manager.json`, `benchmark.json`, `executors_database.json`,
//!   `resource_manager.json`, with the seed's field names.
#![deny(missing_docs)]

pub mod config;
pub mod control;
pub mod invocation;
pub mod mailbox;
mod record;

pub use record::{Field, MAX_MESSAGE_LEN, MAX_TEXT_LEN, ProtocolError, Reader, Record, Writer};
