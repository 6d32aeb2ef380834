#!/usr/bin/env bash
# A test cluster on one machine: network namespaces joined by veth pairs into a bridge.
#
# Usage: tools/cluster.sh up [-n NODES] | down | status | exec HOST CMD... |
#                         cut HOST | restore HOST | devices HOST PORT OUT | addr HOST
#
#   up       (re)creates the cluster: the namespaces below, each with lo and eth0 up, eth0
#            a veth whose other end is a port of the bridge br0 in the namespace rfaas-sw
#   down     stops every process in the cluster's namespaces and deletes them
#   status   lists the hosts, their addresses and whether their link is up
#   exec     runs CMD inside HOST's namespace (ip netns exec)
#   cut      takes HOST's bridge port down: HOST keeps its address, nothing reaches it
#   restore  brings HOST's bridge port up again
#   devices  writes HOST's device database (tcp provider on eth0, port PORT) to OUT
#   addr     prints HOST's address
#
# Hosts (namespace rfaas-HOST, on 10.77.0.0/24):
#   rm       10.77.0.1        the resource manager (and slurmctld)
#   n1..nN   10.77.0.11..     executor servers (default N = 3)
#   cl       10.77.0.21       clients
#
# Needs root (ip netns). Nothing of the cluster touches the initial namespace's interfaces.
set -euo pipefail

usage() { sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; }
die() {
  echo "cluster.sh: $*" >&2
  exit 1
}

PREFIX=rfaas-
SWITCH=${PREFIX}sw
SUBNET=10.77.0
STATE=/run/rfaas-cluster.nodes

# The number of executor servers of the cluster that is up (3 when none is).
node_count() {
  if [ -f "$STATE" ]; then cat "$STATE"; else echo 3; fi
}

hosts() {
  local n
  n=$(node_count)
  echo rm
  for i in $(seq 1 "$n"); do echo "n$i"; done
  echo cl
}

addr_of() {
  case "$1" in
    rm) echo "$SUBNET.1" ;;
    cl) echo "$SUBNET.21" ;;
    n[0-9] | n[0-9][0-9])
      local i=${1#n}
      ((i >= 1 && i <= 9)) || die "node $1: nodes are n1..n9"
      echo "$SUBNET.$((10 + i))"
      ;;
    *) die "unknown host '$1': expected rm, cl or n1..n9" ;;
  esac
}

need_root() {
  [ "$(id -u)" = 0 ] || die "needs root (network namespaces); run it with sudo"
  command -v ip >/dev/null || die "ip (iproute2) is missing: tools/setup.sh cluster"
}

# Whether host $1 reaches address $2 (a refused connection counts: something answered).
reachable() {
  local out
  out=$(ip netns exec "$PREFIX$1" timeout 2 bash -c "exec 3<>/dev/tcp/$2/9" 2>&1) && return 0
  grep -q refused <<<"$out"
}

ns_exists() { ip netns list | awk '{print $1}' | grep -qx "$1"; }

# Kills every process in namespace $1, then deletes it.
delete_ns() {
  local ns=$1 pids
  ns_exists "$ns" || return 0
  pids=$(ip netns pids "$ns" 2>/dev/null || true)
  if [ -n "$pids" ]; then
    # shellcheck disable=SC2086 # one pid per word
    kill -TERM $pids 2>/dev/null || true
    for _ in $(seq 1 20); do
      pids=$(ip netns pids "$ns" 2>/dev/null || true)
      [ -z "$pids" ] && break
      sleep 0.1
    done
    # shellcheck disable=SC2086
    [ -n "$pids" ] && kill -KILL $pids 2>/dev/null || true
  fi
  ip netns del "$ns"
}

down() {
  local ns
  for ns in $(ip netns list | awk '{print $1}' | grep "^$PREFIX" || true); do
    delete_ns "$ns"
  done
  rm -f "$STATE"
}

up() {
  local nodes=3
  while [ $# -gt 0 ]; do
    case "$1" in
      -n) nodes=${2:?-n needs a number}; shift ;;
      *) die "up: unknown option $1" ;;
    esac
    shift
  done
  [[ "$nodes" =~ ^[1-9]$ ]] || die "up: -n must be 1..9, got '$nodes'"
  down
  echo "$nodes" >"$STATE"
  ip netns add "$SWITCH"
  ip -n "$SWITCH" link set lo up
  ip -n "$SWITCH" link add name br0 type bridge
  ip -n "$SWITCH" link set br0 up
  local host ns
  for host in $(hosts); do
    ns=$PREFIX$host
    ip netns add "$ns"
    ip -n "$ns" link set lo up
    # The bridge's port is named after the host; the host's end is eth0.
    ip -n "$SWITCH" link add name "$host" type veth peer name eth0 netns "$ns"
    ip -n "$SWITCH" link set "$host" master br0 up
    ip -n "$ns" addr add "$(addr_of "$host")/24" dev eth0
    ip -n "$ns" link set eth0 up
  done
  # The resource manager's host reaches every other before we say we are up (no ping here:
  # a TCP connection to a closed port is refused by a host that is reachable).
  for host in $(hosts); do
    [ "$host" = rm ] && continue
    reachable rm "$(addr_of "$host")" || die "rm cannot reach $host"
  done
  status
}

status() {
  local host link
  for host in $(hosts); do
    if ! ns_exists "$PREFIX$host"; then
      echo "$host $(addr_of "$host") absent"
      continue
    fi
    link=$(ip -n "$SWITCH" -o link show "$host" 2>/dev/null | grep -q ',UP' && echo up || echo cut)
    echo "$host $(addr_of "$host") $link"
  done
}

port_of() {
  ns_exists "$PREFIX$1" || die "host $1 is not up (tools/cluster.sh up)"
  ip -n "$SWITCH" link show "$1" >/dev/null 2>&1 || die "host $1 has no bridge port"
}

cmd=${1:-}
[ -n "$cmd" ] || { usage >&2; exit 2; }
shift
case "$cmd" in
  -h | --help) usage ;;
  up) need_root; up "$@" ;;
  down) need_root; down ;;
  status) need_root; status ;;
  exec)
    need_root
    [ $# -ge 2 ] || die "exec HOST CMD..."
    addr_of "$1" >/dev/null
    ns=$PREFIX$1
    shift
    ns_exists "$ns" || die "namespace $ns does not exist (tools/cluster.sh up)"
    exec ip netns exec "$ns" "$@"
    ;;
  cut) need_root; [ $# -eq 1 ] || die "cut HOST"; port_of "$1"; ip -n "$SWITCH" link set "$1" down ;;
  restore) need_root; [ $# -eq 1 ] || die "restore HOST"; port_of "$1"; ip -n "$SWITCH" link set "$1" up ;;
  devices)
    need_root
    [ $# -eq 3 ] || die "devices HOST PORT OUT"
    ns_exists "$PREFIX$1" || die "host $1 is not up (tools/cluster.sh up)"
    ip netns exec "$PREFIX$1" "$(dirname "$0")/device_generator.sh" -d eth0 -p "$2" -o "$3"
    ;;
  addr) addr_of "${1:?addr HOST}" ;;
  *) echo "cluster.sh: unknown command $cmd" >&2; usage >&2; exit 2 ;;
esac
