#!/usr/bin/env bash
# Runs every test of rFaaS-rs. The end-to-end tests start the real binaries, so the
# workspace's binaries, libfunctions.so and functions.wasm are built first.
# Needs: cmake, libclang-dev, jq (Debian) and the wasm32-unknown-unknown target.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown; then
  echo "test.sh: the wasm32-unknown-unknown target is missing; run: rustup target add wasm32-unknown-unknown" >&2
  exit 1
fi
command -v jq >/dev/null || { echo "test.sh: jq is missing (apt-get install jq)" >&2; exit 1; }

echo "==> building binaries and function libraries" >&2
cargo build --workspace --bins
cargo build -p functions
cargo build --release --target wasm32-unknown-unknown --manifest-path functions-wasm/Cargo.toml \
  --target-dir functions-wasm/target

echo "==> cargo test" >&2
cargo test --workspace

echo "==> rdmalib two-process tests and the end-to-end suite on the shm provider" >&2
RDMALIB_TEST_PROVIDER=shm cargo test -p rdmalib --test two_process
RFAAS_E2E_PROVIDER=shm cargo test -p benchmarks --test e2e
