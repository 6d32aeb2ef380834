#!/usr/bin/env bash
# SoftRoCE for hosts without an RDMA NIC. Boots this host's Debian kernel in a QEMU guest
# (virtme-ng, over the host's own filesystem, read-only but for the checkout, the cargo target
# directory and /tmp), brings up the rxe device rxe0 on a veth interface with address
# 10.99.0.1, and runs COMMAND there in the current directory (an interactive shell without one).
#
# Usage: tools/softroce.sh [--cpus N] [--memory SIZE] [--kvm] [--rwdir DIR]... [--] [COMMAND [ARG]...]
#   --cpus N       guest CPUs (default 2)
#   --memory SIZE  guest memory (default 2G)
#   --kvm          use KVM instead of TCG (on the project's machines KVM guests hang at boot)
#   --rwdir DIR    also make DIR writable in the guest (repeatable)
#
# Inside, RDMA_DEVICE=rxe0 and RDMA_IP=10.99.0.1 are set, which rdmalib's and the end-to-end
# tests read, and tools/device_generator.sh lists rxe0 as a verbs device. The exit status is
# COMMAND's. Both ends of a connection use rxe0 (with different ports): rxe's UDP socket lives
# in the initial network namespace, so a device in another namespace gets no answers.
# Everything runs several times slower than on the host: compare timings only with each other.
set -euo pipefail

device=rxe0 netdev=veth0 address=10.99.0.1

if [ "${1:-}" = --in-guest ]; then
  # The host's PATH and the command come NUL-separated in a file: virtme-ng hands its command
  # line to sh -c, which would mangle arguments that are not plain words.
  mapfile -d '' -t command < "$2"
  export PATH=${command[0]}
  command=("${command[@]:1}")
  # The first bytes a guest writes to its console can be lost; let it settle first.
  sleep 1
  modprobe rdma_rxe
  ip link set lo up
  ip link add "$netdev" type veth peer name veth1
  ip addr add "$address/24" dev "$netdev"
  ip link set "$netdev" up
  ip link set veth1 up
  rdma link add "$device" type rxe netdev "$netdev"
  for _ in $(seq 50); do
    rdma link show "$device/1" 2>/dev/null | grep -q 'state ACTIVE' && break
    sleep 0.1
  done
  rdma link show "$device/1" | grep -q 'state ACTIVE' || {
    echo "softroce.sh: $device did not become active:" >&2
    rdma link show >&2
    exit 1
  }
  export RDMA_DEVICE=$device RDMA_IP=$address
  # $HOME is read-only in the guest; caches (the wasm module cache) go to /tmp.
  export XDG_CACHE_HOME=/tmp/softroce-cache
  echo "softroce.sh: $device is up on $netdev ($address), kernel $(uname -r)" >&2
  if [ ${#command[@]} -eq 0 ]; then
    exec bash -i
  fi
  exec "${command[@]}"
fi

usage() { sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; }
root=$(cd "$(dirname "$0")/.." && pwd)
cpus=2 memory=2G kvm=--disable-kvm
rwdirs=()
while [ $# -gt 0 ]; do
  case "$1" in
    --cpus) cpus=$2; shift ;;
    --memory) memory=$2; shift ;;
    --kvm) kvm= ;;
    --rwdir) rwdirs+=("$2"); shift ;;
    -h|--help) usage; exit 0 ;;
    --) shift; break ;;
    -*) echo "softroce.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
    *) break ;;
  esac
  shift
done

"$root/tools/setup.sh" softroce
venv=${RFAAS_VENV:-$root/build/venv}

# The newest installed kernel that has the rxe module.
kernel=
for image in $(ls -1v /boot/vmlinuz-* 2>/dev/null | sort -rV); do
  release=${image#/boot/vmlinuz-}
  if find "/lib/modules/$release" -name 'rdma_rxe.ko*' 2>/dev/null | grep -q .; then
    kernel=$image
    break
  fi
done
[ -n "$kernel" ] || {
  echo "softroce.sh: no kernel in /boot with the rdma_rxe module (apt-get install linux-image-amd64)" >&2
  exit 1
}
if [ ! -r "$kernel" ]; then
  echo "softroce.sh: $kernel is not readable; run as root or make it readable" >&2
  exit 1
fi

# Writable in the guest: the checkout, the current directory and the cargo target directory.
# /var/tmp is an empty tmpfs in the guest, so a target directory there must be passed in.
dirs=("$root" "$PWD" "${rwdirs[@]}")
[ -n "${CARGO_TARGET_DIR:-}" ] && mkdir -p "$CARGO_TARGET_DIR" && dirs+=("$(cd "$CARGO_TARGET_DIR" && pwd)")
vng_args=(-r "$kernel" $kvm --force-9p --memory "$memory" --cpus "$cpus")
declare -A seen=()
for d in "${dirs[@]}"; do
  [ -n "${seen[$d]:-}" ] && continue
  seen[$d]=1
  vng_args+=("--rwdir=$d")
done

mkdir -p "$root/build"
command_file=$(mktemp "$root/build/softroce-command.XXXXXX")
trap 'rm -f "$command_file"' EXIT
printf '%s\0' "$PATH" "$@" > "$command_file"
export PATH="$venv/bin:$PATH"
echo "==> booting $(basename "$kernel") under QEMU ($cpus CPUs, $memory${kvm:+, TCG})" >&2
guest_command="cd $(printf '%q' "$PWD") && $(printf '%q' "$root/tools/softroce.sh") --in-guest $(printf '%q' "$command_file")"
if [ $# -eq 0 ]; then
  vng "${vng_args[@]}" -- "$guest_command"
else
  # QEMU leaves a long run of spaces on the console when the guest powers off. It also opens
  # /proc/self/fd/2 afresh, which truncates a file that stderr points to (a log of the caller's):
  # give it a pipe.
  set -o pipefail
  vng "${vng_args[@]}" -- "$guest_command" 2> >(cat >&2) | sed -E 's/ {80,}//'
fi
