//! The rFaaS resource manager, as a library.
//!
//! The resource manager knows the executor servers of a deployment (one executor manager per
//! node) and hands out *leases*: a number of cores and an amount of memory on one node, granted
//! to a client, returned when the client closes the lease (with its billing) or released without
//! billing when the node's executor manager goes away.
//!
//! - [`registry`]: the servers and their leases, thread-safe, kept in a [`store::Store`] when it
//!   has one. The RDMA side (executor managers connecting, clients asking for leases) drives it
//!   through [`registry::Registry::set_manager_connected`], [`registry::Registry::grant`],
//!   [`registry::Registry::close`], [`registry::Registry::release_node`] and, after a restart,
//!   [`registry::Registry::reconcile`].
//! - [`store`]: the database (SQLite): nodes, leases and bills, each change committed before
//!   it is acknowledged; its schema versioned and migrated on start.
//! - [`billing`]: the bills by node and time range, with their totals, as JSON or CSV.
//! - [`http`]: the HTTP interface for batch managers and operators (axum): `POST /add?node=NAME`,
//!   `POST /remove?node=NAME`, `GET /executors`, `GET /leases`, `GET /billing`.
//!
//! The binary `resource_manager` (`src/main.rs`) opens its database (`--database`, by default
//! `resource_manager.db` beside the configuration), optionally imports servers from
//! `executors_database.json` (`-i`), and serves both sides.
#![deny(missing_docs)]

pub mod billing;
pub mod http;
pub mod registry;
pub mod store;

pub use http::{AppError, HttpState, router};
pub use registry::{
    Billing, Grant, LeaseState, LeaseView, NodeBilling, NodeSpec, NodeView, Reconciled, Registry,
    RegistryError, Restored,
};
pub use store::{Store, StoreError};
