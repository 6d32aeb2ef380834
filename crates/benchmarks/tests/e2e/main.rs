//! End-to-end tests: the tutorial's deployment with real processes over real sockets (tcp
//! provider on 127.0.0.1). The binaries must be built first; `tools/test.sh` does it.

mod deployment;
mod harness;
mod native;
mod wasm;
