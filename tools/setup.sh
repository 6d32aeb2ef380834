#!/usr/bin/env bash
# The one place that knows what rFaaS-rs needs. Installs what is missing (Debian packages,
# rustup targets, Python tools in a venv in the build directory) and is quick when all is there.
# Without root it installs nothing and prints the command to run instead.
#
# Usage: tools/setup.sh [--check] PART...
#   build     compiling the workspace: cmake + libclang (the verbs provider's bindings),
#             jq (tools/build.sh), the wasm32-unknown-unknown target (functions.wasm), and
#             for the example functions the wasm32-wasip1 target and clang, lld, wasi-libc
#   tutorial  the tutorial's commands: iproute2 (device_generator.sh), curl, sqlite3 (inspecting
#             the resource manager's database)
#   clients   librfaas's C and C++ examples and the Python package: pkg-config, g++, cmake,
#             python3-dev, and maturin and numpy (PyPI) in $RFAAS_VENV
#   softroce  the SoftRoCE guest of tools/softroce.sh: QEMU, a Debian kernel with rdma_rxe,
#             rdma-core and perftest, and virtme-ng (PyPI) in $RFAAS_VENV (default build/venv)
#   fuzz      the fuzz targets in fuzz/: a nightly toolchain and cargo-fuzz
#   cluster   the multi-node tests (tools/cluster.sh, tools/slurm/): iproute2 and util-linux
#             (network namespaces), curl, jq, and Slurm (slurm-wlm) with munge
#   --check   install nothing; exit 1 and say what is missing
set -euo pipefail

usage() { sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; }
root=$(cd "$(dirname "$0")/.." && pwd)
venv=${RFAAS_VENV:-$root/build/venv}
CARGO_FUZZ_VERSION=0.13.2
check_only=0
parts=()
while [ $# -gt 0 ]; do
  case "$1" in
    --check) check_only=1 ;;
    build|tutorial|clients|softroce|fuzz|cluster) parts+=("$1") ;;
    -h|--help) usage; exit 0 ;;
    *) echo "setup.sh: unknown part or option $1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done
[ ${#parts[@]} -gt 0 ] || { usage >&2; exit 2; }

# Debian packages of each part.
declare -A packages=(
  [build]="cmake libclang-dev jq clang lld wasi-libc libclang-rt-dev-wasm32"
  [tutorial]="iproute2 curl sqlite3"
  [clients]="pkg-config g++ cmake python3-dev python3-venv"
  # busybox-static: virtme-ng's guest init; linux-image-amd64: the guest's kernel (rdma_rxe).
  [softroce]="qemu-system-x86 linux-image-amd64 busybox-static python3-venv rdma-core ibverbs-providers ibverbs-utils rdmacm-utils perftest"
  [fuzz]=""
  [cluster]="iproute2 util-linux curl jq slurm-wlm munge"
)

missing_pkgs=()
for part in "${parts[@]}"; do
  for pkg in ${packages[$part]}; do
    status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
    [ "$status" = "install ok installed" ] || missing_pkgs+=("$pkg")
  done
done
missing_targets=()
need_venv=0
need_nightly=0
need_cargo_fuzz=0
need_client_venv=0
# What the clients part installs from PyPI into the venv (pinned).
client_pips="maturin==1.16.0 numpy==2.3.5"
for part in "${parts[@]}"; do
  case "$part" in
    build)
      installed=$(rustup target list --installed 2>/dev/null)
      for t in wasm32-unknown-unknown wasm32-wasip1; do
        grep -qx "$t" <<<"$installed" || missing_targets+=("$t")
      done ;;
    softroce)
      [ -x "$venv/bin/vng" ] || need_venv=1 ;;
    fuzz)
      rustup run nightly rustc --version >/dev/null 2>&1 || need_nightly=1
      cargo fuzz --version 2>/dev/null | grep -q "$CARGO_FUZZ_VERSION" || need_cargo_fuzz=1 ;;
    clients)
      { [ -x "$venv/bin/maturin" ] && "$venv/bin/python" -c 'import numpy' 2>/dev/null; } ||
        need_client_venv=1 ;;
  esac
done

if [ ${#missing_pkgs[@]} -eq 0 ] && [ ${#missing_targets[@]} -eq 0 ] && [ $need_venv = 0 ] &&
  [ $need_nightly = 0 ] && [ $need_cargo_fuzz = 0 ] && [ $need_client_venv = 0 ]; then
  exit 0
fi

commands=()
[ ${#missing_pkgs[@]} -gt 0 ] &&
  commands+=("apt-get update && apt-get install -y ${missing_pkgs[*]}")
[ ${#missing_targets[@]} -gt 0 ] && commands+=("rustup target add ${missing_targets[*]}")
[ $need_venv = 1 ] && commands+=("python3 -m venv $venv && $venv/bin/pip install virtme-ng==1.42")
[ $need_nightly = 1 ] && commands+=("rustup toolchain install nightly --profile minimal")
[ $need_cargo_fuzz = 1 ] && commands+=("cargo install cargo-fuzz --version $CARGO_FUZZ_VERSION --locked")
[ $need_client_venv = 1 ] && commands+=("python3 -m venv $venv && $venv/bin/pip install $client_pips")

if [ $check_only = 1 ] || { [ ${#missing_pkgs[@]} -gt 0 ] && [ "$(id -u)" != 0 ]; }; then
  echo "setup.sh: missing for ${parts[*]}; run:" >&2
  for c in "${commands[@]}"; do echo "  $c" >&2; done
  exit 1
fi

if [ ${#missing_pkgs[@]} -gt 0 ]; then
  echo "==> installing Debian packages: ${missing_pkgs[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing_pkgs[@]}" >/dev/null
fi
if [ ${#missing_targets[@]} -gt 0 ]; then
  echo "==> adding the rustup targets ${missing_targets[*]}" >&2
  rustup target add "${missing_targets[@]}"
fi
if [ $need_venv = 1 ]; then
  echo "==> installing virtme-ng into $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q virtme-ng==1.42
fi
if [ $need_nightly = 1 ]; then
  echo "==> installing the nightly toolchain (for cargo-fuzz)" >&2
  rustup toolchain install nightly --profile minimal
fi
if [ $need_cargo_fuzz = 1 ]; then
  echo "==> installing cargo-fuzz $CARGO_FUZZ_VERSION" >&2
  cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked
fi
if [ $need_client_venv = 1 ]; then
  echo "==> installing $client_pips into $venv" >&2
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  # shellcheck disable=SC2086 # the pins are separate words
  "$venv/bin/pip" install -q $client_pips
fi
