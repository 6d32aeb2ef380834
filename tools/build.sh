#!/usr/bin/env bash
# Builds rFaaS-rs and lays it out as the tutorial expects:
#   <build-dir>/bin/         executor_manager, executor, resource_manager
#   <build-dir>/benchmarks/  warm_benchmarker, cold_benchmarker, parallel_invocations, ...
#   <build-dir>/examples/    libfunctions.so, functions.wasm, and from tools/build_functions.sh
#                            libworkloads.so, workloads.wasm, libfunctions_c.so, functions_c.wasm
#   and the clients beyond Rust (librfaas for C and C++, the Python wheel): see
#   tools/build_clients.sh
# Usage: tools/build.sh [--debug] [--no-verbs] [BUILD_DIR]   (default: build, release mode)
set -euo pipefail

usage() { sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; }
profile=release
features=()
build_dir=build
while [ $# -gt 0 ]; do
  case "$1" in
    --debug) profile=debug ;;
    --no-verbs) features=(--no-default-features) ;;
    -h|--help) usage; exit 0 ;;
    -*) echo "build.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
    *) build_dir=$1 ;;
  esac
  shift
done

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
tools/setup.sh build
cargo_flags=()
[ "$profile" = release ] && cargo_flags+=(--release)

echo "==> building the workspace ($profile)" >&2
cargo build "${cargo_flags[@]}" "${features[@]}" --workspace --bins
cargo build "${cargo_flags[@]}" -p functions
echo "==> building functions.wasm" >&2
cargo build --release --target wasm32-unknown-unknown --manifest-path functions-wasm/Cargo.toml \
  --target-dir functions-wasm/target

target=$(cargo metadata --format-version 1 --no-deps | jq -r .target_directory)
out="$target/$profile"
mkdir -p "$build_dir/bin" "$build_dir/benchmarks" "$build_dir/examples"
for b in executor_manager executor resource_manager; do
  [ -f "$out/$b" ] && cp -f "$out/$b" "$build_dir/bin/"
done
for b in warm_benchmarker cold_benchmarker parallel_invocations api_walkthrough rdma_pingpong plain_pingpong workload_benchmark lease_latency allocation_load rfaas_figure; do
  [ -f "$out/$b" ] && cp -f "$out/$b" "$build_dir/benchmarks/"
done
cp -f "$out/libfunctions.so" "$build_dir/examples/"
cp -f functions-wasm/target/wasm32-unknown-unknown/release/functions.wasm "$build_dir/examples/"
debug_flag=()
[ "$profile" = debug ] && debug_flag+=(--debug)
tools/build_functions.sh "${debug_flag[@]}" "$build_dir"
echo "==> laid out in $build_dir/{bin,benchmarks,examples}" >&2

# Clients beyond Rust: librfaas (C ABI, rfaas.hpp), its examples, the Python wheel.
tools/setup.sh clients
cargo build "${cargo_flags[@]}" "${features[@]}" -p rfaas-c
tools/build_clients.sh "$build_dir" "$out" "$profile"
