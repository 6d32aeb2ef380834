#!/usr/bin/env bash
# Lays out the clients beyond Rust under BUILD_DIR, as C, C++ and Python users expect, from
# librfaas and the Python module that cargo built into TARGET_PROFILE_DIR (tools/build.sh
# calls it):
#   <build-dir>/include/             rfaas.h, rfaas.hpp
#   <build-dir>/lib/                 librfaas.so, librfaas.a
#   <build-dir>/lib/pkgconfig/       rfaas.pc, rfaas-static.pc
#   <build-dir>/lib/cmake/rfaas/     rfaasConfig.cmake, rfaasConfigVersion.cmake
#   <build-dir>/examples/c/          warm_benchmarker_c (built with pkg-config)
#   <build-dir>/examples/cpp/        async_calls (built with CMake's find_package)
#   <build-dir>/examples/python/     warm_benchmark.py
#   <build-dir>/python/              the rfaas wheel (maturin)
# Usage: tools/build_clients.sh BUILD_DIR TARGET_PROFILE_DIR release|debug
set -euo pipefail

[ $# = 3 ] || { sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
root=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$1"
build_dir=$(cd "$1" && pwd)
out=$2
profile=$3
venv=${RFAAS_VENV:-$root/build/venv}
cd "$root"

version=$(cargo metadata --format-version 1 --no-deps |
  jq -r '.packages[] | select(.name == "rfaas-c") | .version')
# What Rust's standard library needs beside librfaas.a (rustc --print native-static-libs).
native_libs="-lgcc_s -lutil -lrt -lpthread -lm -ldl -lc"

echo "==> laying out librfaas $version in $build_dir/{include,lib}" >&2
mkdir -p "$build_dir/include" "$build_dir/lib/pkgconfig" "$build_dir/lib/cmake/rfaas"
cp -f crates/capi/include/rfaas.h crates/capi/include/rfaas.hpp "$build_dir/include/"
cp -f "$out/librfaas.so" "$out/librfaas.a" "$build_dir/lib/"
for pc in rfaas rfaas-static; do
  sed -e "s|@VERSION@|$version|" -e "s|@NATIVE_LIBS@|$native_libs|" \
    "crates/capi/pkg/$pc.pc.in" >"$build_dir/lib/pkgconfig/$pc.pc"
done
cmake_libs=$(echo "$native_libs" | sed -e 's/-l//g' -e 's/ /;/g')
for f in rfaasConfig rfaasConfigVersion; do
  sed -e "s|@VERSION@|$version|" -e "s|@NATIVE_LIBS_CMAKE@|$cmake_libs|" \
    "crates/capi/pkg/$f.cmake.in" >"$build_dir/lib/cmake/rfaas/$f.cmake"
done

echo "==> building examples/c/warm_benchmarker_c with pkg-config" >&2
mkdir -p "$build_dir/examples/c"
# shellcheck disable=SC2046 # pkg-config prints separate flags
cc -std=c11 -O2 -Wall -Wextra -o "$build_dir/examples/c/warm_benchmarker_c" \
  examples/c/warm_benchmarker.c \
  $(PKG_CONFIG_PATH="$build_dir/lib/pkgconfig" pkg-config --cflags --libs rfaas) \
  -Wl,-rpath,'$ORIGIN/../../lib'

echo "==> building examples/cpp/async_calls with CMake" >&2
cmake -S examples/cpp/async -B "$build_dir/examples/cpp/cmake" \
  -DCMAKE_PREFIX_PATH="$build_dir" -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_BUILD_RPATH="$build_dir/lib" >/dev/null
cmake --build "$build_dir/examples/cpp/cmake" >/dev/null
cp -f "$build_dir/examples/cpp/cmake/async_calls" "$build_dir/examples/cpp/"

mkdir -p "$build_dir/examples/python"
cp -f examples/python/warm_benchmark.py "$build_dir/examples/python/"
echo "==> building the rfaas wheel into $build_dir/python ($profile)" >&2
maturin_flags=()
[ "$profile" = release ] && maturin_flags+=(--release)
rm -f "$build_dir"/python/rfaas-*.whl
"$venv/bin/maturin" build --quiet "${maturin_flags[@]}" -m crates/python/Cargo.toml \
  -i "$venv/bin/python" --out "$build_dir/python" >&2
echo "==> laid out in $build_dir/{include,lib,examples/c,examples/cpp,examples/python,python}" >&2
