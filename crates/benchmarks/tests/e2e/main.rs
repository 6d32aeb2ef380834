//! End-to-end tests: the tutorial's deployment with real processes over real sockets. The
//! binaries must be built first; `tools/test.sh` does it.
//!
//! The device under test is `lo` (127.0.0.1) on tcp unless the environment says otherwise:
//! `RFAAS_E2E_PROVIDER` names the provider (`shm`, `verbs`), `RDMA_DEVICE` and `RDMA_IP` the
//! device and its address (as `tools/softroce.sh` sets them). `tools/test.sh` runs the suite on
//! tcp, on shm, and on verbs in the SoftRoCE guest.

mod code_cache;
mod deployment;
mod faults;
mod functions;
mod harness;
mod lease_notice;
mod native;
mod persistence;
mod wasm;
