//! The rFaaS resource manager, as a library.
//!
//! The resource manager knows the executor servers of a deployment (one executor manager per
//! node) and hands out *leases*: a number of cores and an amount of memory on one node, granted
//! to a client, returned when the client closes the lease (with its billing) or released without
//! billing when the node's executor manager goes away.
//!
//! - [`registry`]: the servers and their leases; plain, thread-safe Rust with no I/O. The RDMA
//!   side (executor managers connecting, clients asking for leases) drives it through
//!   [`registry::Registry::set_manager_connected`], [`registry::Registry::grant`],
//!   [`registry::Registry::close`] and [`registry::Registry::release_node`].
//! - [`http`]: the HTTP interface for batch managers and operators (axum): `POST /add?node=NAME`,
//!   `POST /remove?node=NAME`, `GET /executors`, `GET /leases`, all JSON.
//!
//! The binary `resource_manager` (`src/main.rs`) reads `resource_manager.json`, optionally
//! populates the registry from `executors_database.json` (`-i`), and serves both sides.
#![deny(missing_docs)]

pub mod http;
pub mod registry;

pub use http::{AppError, HttpState, router};
pub use registry::{
    Billing, Grant, LeaseState, LeaseView, NodeBilling, NodeSpec, NodeView, Registry, RegistryError,
};
