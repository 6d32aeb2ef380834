#!/usr/bin/env bash
# A Slurm cluster over the hosts of tools/cluster.sh: munged (one, its socket shared through the
# filesystem), slurmctld on host rm, one `slurmd -N nX` per node namespace.
#
# Usage: tools/slurm/slurm_cluster.sh up DIR | down DIR | env DIR
#   up    writes DIR/slurm.conf (NodeName/NodeAddr per node, their cores) and starts the daemons;
#         waits until every node is idle
#   down  stops the daemons started by `up`
#   env   prints the environment for Slurm's commands (export SLURM_CONF=DIR/slurm.conf)
# Run Slurm's commands inside a host of the cluster: tools/cluster.sh exec cl sbatch ...
# Needs root, tools/cluster.sh up, and tools/setup.sh cluster (slurm-wlm, munge).
set -euo pipefail

usage() { sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; }
die() {
  echo "slurm_cluster.sh: $*" >&2
  exit 1
}
tools=$(cd "$(dirname "$0")/.." && pwd)
cluster=$tools/cluster.sh

cmd=${1:-}
dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || { usage >&2; exit 2; }
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
conf=$dir/slurm.conf
export SLURM_CONF=$conf

# The nodes of the cluster that is up, with their cores: n1 1, n2 2, n3 4, n4 8 ...
nodes() {
  "$cluster" status | awk '$1 ~ /^n[0-9]+$/ {print $1}'
}
cores_of() { echo $((1 << (${1#n} - 1))); }

write_conf() {
  local controller node list=""
  controller=$(hostname -s)
  mkdir -p "$dir/state" "$dir/log"
  {
    echo "ClusterName=rfaas"
    # slurmctld checks that it runs on the host named here; the address is rm's.
    echo "SlurmctldHost=$controller($("$cluster" addr rm))"
    echo "SlurmUser=root"
    echo "SlurmdUser=root"
    echo "AuthType=auth/munge"
    echo "AuthInfo=socket=$dir/munge.socket"
    echo "CredType=cred/munge"
    echo "StateSaveLocation=$dir/state"
    echo "SlurmdSpoolDir=$dir/spool-%n"
    echo "SlurmctldPidFile=$dir/slurmctld.pid"
    echo "SlurmdPidFile=$dir/slurmd-%n.pid"
    echo "SlurmctldLogFile=$dir/log/slurmctld.log"
    echo "SlurmdLogFile=$dir/log/slurmd-%n.log"
    echo "SlurmctldPort=6817"
    echo "SlurmdPort=6818"
    echo "ProctrackType=proctrack/linuxproc"
    echo "TaskPlugin=task/none"
    echo "JobAcctGatherType=jobacct_gather/none"
    echo "AccountingStorageType=accounting_storage/none"
    echo "JobCompType=jobcomp/none"
    echo "MpiDefault=none"
    echo "SelectType=select/cons_tres"
    echo "SelectTypeParameters=CR_Core"
    echo "SchedulerType=sched/backfill"
    # Node namespaces share this machine's cores: take the configured ones as given.
    echo "SlurmdParameters=config_overrides"
    echo "ReturnToService=2"
    echo "KillWait=5"
    echo "MinJobAge=30"
    echo "SlurmctldTimeout=30"
    echo "SlurmdTimeout=30"
    for node in $(nodes); do
      echo "NodeName=$node NodeAddr=$("$cluster" addr "$node") CPUs=$(cores_of "$node") RealMemory=4096 State=UNKNOWN"
      list=${list:+$list,}$node
    done
    echo "PartitionName=rfaas Nodes=$list Default=YES MaxTime=INFINITE State=UP"
  } >"$conf"
}

up() {
  command -v slurmctld >/dev/null && command -v munged >/dev/null ||
    die "slurm-wlm and munge are missing: tools/setup.sh cluster"
  [ -n "$(nodes)" ] || die "no cluster is up: tools/cluster.sh up"
  down
  write_conf
  # munged: one for all hosts; its socket is a file, and files are shared between namespaces.
  munged --force --socket="$dir/munge.socket" --pid-file="$dir/munged.pid" \
    --log-file="$dir/log/munged.log" --seed-file="$dir/munge.seed"
  # nsenter, not ip netns exec: only the network namespace changes, so slurmd keeps this
  # machine's /sys (ip netns exec mounts a fresh sysfs, without /sys/fs/cgroup).
  nsenter --net=/run/netns/rfaas-rm slurmctld -f "$conf" ||
    die "slurmctld did not start; see $dir/log/slurmctld.log"
  local node
  for node in $(nodes); do
    mkdir -p "$dir/spool-$node"
    nsenter --net="/run/netns/rfaas-$node" slurmd -f "$conf" -N "$node" ||
      die "slurmd -N $node did not start; see $dir/log/slurmd-$node.log"
  done
  for _ in $(seq 1 100); do
    if [ "$("$cluster" exec rm sinfo -h -o '%t' 2>/dev/null | sort -u)" = idle ]; then
      "$cluster" exec rm sinfo
      return 0
    fi
    sleep 0.2
  done
  "$cluster" exec rm sinfo >&2 || true
  die "the nodes did not become idle; logs in $dir/log"
}

# Stops the daemons whose pid files are given: SIGTERM to all, then SIGKILL to any left after
# 5 s (slurmctld may take that long to save its state).
stop_pidfiles() {
  local file pid pids=()
  for file in "$@"; do
    [ -f "$file" ] || continue
    pid=$(cat "$file")
    rm -f "$file"
    [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null && pids+=("$pid")
  done
  for _ in $(seq 1 50); do
    local alive=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && return 0
    sleep 0.1
  done
  for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
}

down() {
  stop_pidfiles "$dir"/slurmd-*.pid "$dir/slurmctld.pid"
  stop_pidfiles "$dir/munged.pid"
  return 0
}

case "$cmd" in
  up) [ "$(id -u)" = 0 ] || die "needs root"; up ;;
  down) down ;;
  env) echo "export SLURM_CONF=$conf" ;;
  *) usage >&2; exit 2 ;;
esac
