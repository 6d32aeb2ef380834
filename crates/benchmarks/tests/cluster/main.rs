//! Multi-node tests: a cluster of network namespaces on one machine (`tools/cluster.sh`), the
//! resource manager on host `rm` (10.77.0.1), executor managers on `n1`, `n2`, `n3` (1, 2 and 4
//! cores) and clients on `cl` (10.77.0.21), all on the tcp provider over veth pairs into a
//! bridge; and a Slurm cluster over the same hosts (`tools/slurm/`).
//!
//! They need root (network namespaces) and the binaries built (`cargo build --workspace
//! --bins`), and run one at a time: `cargo test -p benchmarks --test cluster -- --ignored
//! --test-threads=1` (`tools/test.sh` does it, as its stage "tcp cluster").

#[allow(
    dead_code,
    reason = "shared with the end-to-end suite, which uses all of it"
)]
#[path = "../e2e/harness.rs"]
mod harness;

mod behaviour;
mod fixture;
mod slurm;
