#!/usr/bin/env bash
# Builds the example function libraries beyond libfunctions.so and functions.wasm, each as a
# native library and as a WASI module, into <build-dir>/examples/:
#   libworkloads.so, workloads.wasm      Rust with std (functions-workloads, the function SDK;
#                                        the module for wasm32-wasip1)
#   libfunctions_c.so, functions_c.wasm  C (functions-c, include/rfaas_function.h; the module
#                                        with clang and wasi-libc, as a WASI reactor)
# and installs the C header as <build-dir>/include/rfaas_function.h.
# Usage: tools/build_functions.sh [--debug] [BUILD_DIR]   (default: build; native in release)
# Needs what `tools/setup.sh build` installs (clang, lld, wasi-libc, the wasm32-wasip1 target).
set -euo pipefail

usage() { sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; }
profile=release
build_dir=build
while [ $# -gt 0 ]; do
  case "$1" in
    --debug) profile=debug ;;
    -h|--help) usage; exit 0 ;;
    -*) echo "build_functions.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
    *) build_dir=$1 ;;
  esac
  shift
done

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
tools/setup.sh build
mkdir -p "$build_dir/examples" "$build_dir/include"
target=$(cargo metadata --format-version 1 --no-deps | jq -r .target_directory)
cargo_flags=()
[ "$profile" = release ] && cargo_flags+=(--release)

echo "==> building the workloads (Rust): native ($profile) and wasm32-wasip1" >&2
cargo build "${cargo_flags[@]}" -p workloads
# wasmtime compiles wasm SIMD to SSE: matmul's 64 x 64 product takes about 0.6 of the time.
CARGO_TARGET_WASM32_WASIP1_RUSTFLAGS="-C target-feature=+simd128" \
  cargo build --release -p workloads --target wasm32-wasip1
cp -f "$target/$profile/libworkloads.so" "$build_dir/examples/"
cp -f "$target/wasm32-wasip1/release/workloads.wasm" "$build_dir/examples/"

echo "==> building the C functions: native (cc) and wasm (clang + wasi-libc)" >&2
header=crates/function-sdk/include/rfaas_function.h
cp -f "$header" "$build_dir/include/"
cflags=(-O2 -Wall -Wextra -Werror -I crates/function-sdk/include)
cc "${cflags[@]}" -shared -fPIC -fvisibility=hidden functions-c/functions.c \
  -o "$build_dir/examples/libfunctions_c.so"
clang "${cflags[@]}" --target=wasm32-wasi -mexec-model=reactor -Wl,--strip-debug \
  functions-c/functions.c -o "$build_dir/examples/functions_c.wasm"
# The header is C++ too.
c++ -std=c++17 -fsyntax-only -Wall -Wextra -Werror -x c++ "$header"
echo "==> laid out in $build_dir/examples: libworkloads.so workloads.wasm libfunctions_c.so functions_c.wasm" >&2
