//! End-to-end tests: the tutorial's deployment with real processes over real sockets (tcp
//! provider on 127.0.0.1). The binaries must be built first; `tools/test.sh` does it.
//! `RFAAS_E2E_PROVIDER=shm` runs the tests that use the loopback device on the shm provider.

mod deployment;
mod harness;
mod native;
mod wasm;
