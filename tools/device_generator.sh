#!/usr/bin/env bash
# Generates the rFaaS device database (devices.json) for this host.
set -euo pipefail

usage() {
  cat <<'USAGE'
Usage: device_generator.sh [-d DEVICE] [-p PORT] [-o OUTPUT] [-h]

Writes the rFaaS device database of this host as JSON:

  {"devices": [{"name": ..., "ip_address": ..., "port": ..., "max_inline_data": 0,
                "default_receive_buffer_size": 32, "provider": ...}]}

Devices are the ACTIVE RDMA devices listed by `rdma link`, with the IPv4 address of their
network interface (provider "verbs"). Where `rdma` is missing or lists no active device, the
host's IPv4 interfaces (from `ip -4 -o addr`, loopback included) are listed instead as devices
of the "tcp" provider, named after the interface.

Options:
  -d DEVICE  keep only this device (an error if it is not found)
  -p PORT    port of every device (default: 10000)
  -o OUTPUT  write to the file OUTPUT instead of standard output
  -h         show this help

Example:
  tools/device_generator.sh > devices_$(hostname).json
USAGE
}

die() {
  echo "device_generator.sh: $*" >&2
  exit 1
}

device=""
port=10000
output=""
while getopts ":d:p:o:h" option; do
  case "$option" in
    d) device="$OPTARG" ;;
    p) port="$OPTARG" ;;
    o) output="$OPTARG" ;;
    h) usage; exit 0 ;;
    :) die "option -$OPTARG needs a value (see -h)" ;;
    *) die "unknown option -$OPTARG (see -h)" ;;
  esac
done
shift $((OPTIND - 1))
[[ $# -eq 0 ]] || die "unexpected argument '$1' (see -h)"

[[ "$port" =~ ^[0-9]{1,5}$ ]] && ((10#$port >= 1 && 10#$port <= 65535)) ||
  die "invalid port '$port': expected a number from 1 to 65535"
port=$((10#$port))

command -v jq >/dev/null || die "jq is required but not installed"
command -v ip >/dev/null || die "ip (iproute2) is required but not installed"

# The first IPv4 address of a network interface, or nothing.
ipv4_of() {
  ip -4 -o addr show dev "$1" 2>/dev/null | awk '{ split($4, a, "/"); print a[1]; exit }'
}

# Devices as lines "name<TAB>ip_address<TAB>provider".
devices=""
if command -v rdma >/dev/null; then
  # Lines like: link rocep61s0/1 state ACTIVE physical_state LINK_UP netdev enp61s0
  links="$(rdma link 2>/dev/null || true)"
  while read -r rdma_device netdev; do
    [[ -n "$rdma_device" ]] || continue
    if [[ -z "$netdev" ]]; then
      echo "device_generator.sh: skipping RDMA device $rdma_device: no network interface" >&2
      continue
    fi
    address="$(ipv4_of "$netdev")"
    if [[ -z "$address" ]]; then
      echo "device_generator.sh: skipping RDMA device $rdma_device: $netdev has no IPv4 address" >&2
      continue
    fi
    # One entry per device, even when several of its ports are active.
    if ! awk -F '\t' -v name="$rdma_device" '$1 == name { found = 1 } END { exit !found }' <<<"$devices"; then
      devices+="${rdma_device}"$'\t'"${address}"$'\t'"verbs"$'\n'
    fi
  done < <(awk '$1 == "link" && / state ACTIVE / {
      split($2, name, "/")
      netdev = ""
      for (i = 3; i < NF; i++) if ($i == "netdev") netdev = $(i + 1)
      print name[1], netdev
    }' <<<"$links")
  [[ -n "$devices" ]] ||
    echo "device_generator.sh: rdma lists no active RDMA device; listing IPv4 interfaces as tcp devices" >&2
else
  echo "device_generator.sh: rdma (iproute2) is not installed; listing IPv4 interfaces as tcp devices" >&2
fi

if [[ -z "$devices" ]]; then
  # Lines like: 1: lo    inet 127.0.0.1/8 scope host lo\       valid_lft forever ...
  devices="$(ip -4 -o addr | awk '!seen[$2]++ { split($4, a, "/"); printf "%s\t%s\ttcp\n", $2, a[1] }')"
fi
[[ -n "$devices" ]] || die "no RDMA device and no IPv4 interface found"

if [[ -n "$device" ]]; then
  selected="$(awk -F '\t' -v name="$device" '$1 == name' <<<"$devices")"
  if [[ -z "$selected" ]]; then
    available="$(cut -f1 <<<"$devices" | grep -v '^$' | paste -sd ',' | sed 's/,/, /g')"
    die "device '$device' not found (available: $available)"
  fi
  devices="$selected"
fi

json="$(jq -R -s --argjson port "$port" '
  split("\n")
  | map(select(length > 0) | split("\t") | {
      name: .[0],
      ip_address: .[1],
      port: $port,
      max_inline_data: 0,
      default_receive_buffer_size: 32,
      provider: .[2]
    })
  | {devices: .}' <<<"$devices")"

if [[ -n "$output" ]]; then
  printf '%s\n' "$json" >"$output" || die "cannot write '$output'"
else
  printf '%s\n' "$json"
fi
