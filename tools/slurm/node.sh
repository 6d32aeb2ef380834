#!/usr/bin/env bash
# One Slurm task per node of an allocation (started by rfaas_managers.sbatch through srun):
# starts this node's executor manager, adds the node to the resource manager over HTTP
# (POST /add, the tutorial's curl line), and removes it (POST /remove) and stops the manager
# when the job ends or is cancelled (SIGTERM, or the manager exiting).
#
# Environment (rfaas_managers.sbatch passes it on; see there):
#   RFAAS_BIN_DIR          directory with executor_manager and executor (required)
#   RFAAS_WORK_DIR         shared directory for the per-node files (default: submit directory)
#   RFAAS_RM_ADDRESS       resource manager's address (required)
#   RFAAS_RM_PORT          its RDMA port (default 10000)
#   RFAAS_RM_HTTP          its HTTP interface, host:port (default RFAAS_RM_ADDRESS:5000)
#   RFAAS_SECRET           the shared secret (resource_manager_secret / rdma-secret; required)
#   RFAAS_HTTP_TOKEN       bearer token of /add and /remove (optional)
#   RFAAS_MANAGER_PORT     the executor manager's port (default 10005)
#   RFAAS_DEVICE           network interface for the tcp provider (default: the one that
#                          routes to the resource manager)
#   RFAAS_NODE_MEMORY      memory offered, in MiB (default: the job's memory on the node, else 4096)
set -uo pipefail

log() { echo "rfaas[$node]: $*"; }
die() { log "error: $*"; exit 1; }

node=${SLURMD_NODENAME:-$(hostname -s)}
: "${RFAAS_BIN_DIR:?RFAAS_BIN_DIR must name the directory with executor_manager}"
: "${RFAAS_RM_ADDRESS:?RFAAS_RM_ADDRESS must name the resource manager}"
: "${RFAAS_SECRET:?RFAAS_SECRET must be the shared secret}"
work=${RFAAS_WORK_DIR:-${SLURM_SUBMIT_DIR:-$PWD}}
rm_port=${RFAAS_RM_PORT:-10000}
http=${RFAAS_RM_HTTP:-$RFAAS_RM_ADDRESS:5000}
port=${RFAAS_MANAGER_PORT:-10005}
# This node's cores in the job: entry SLURM_NODEID of SLURM_JOB_CPUS_PER_NODE ("1,2,4" or
# "4(x2),1"); a step's SLURM_CPUS_ON_NODE counts only the step's.
job_cpus() {
  local entry count times i=0 IFS=,
  for entry in $SLURM_JOB_CPUS_PER_NODE; do
    count=${entry%%(*}
    times=1
    [[ "$entry" == *"(x"* ]] && times=${entry##*(x} && times=${times%)}
    if ((SLURM_NODEID < i + times)); then echo "$count"; return; fi
    i=$((i + times))
  done
}
cores=""
[ -n "${SLURM_JOB_CPUS_PER_NODE:-}" ] && [ -n "${SLURM_NODEID:-}" ] && cores=$(job_cpus)
cores=${cores:-${SLURM_CPUS_ON_NODE:-$(nproc)}}
memory=${RFAAS_NODE_MEMORY:-${SLURM_MEM_PER_NODE:-4096}}
[ "$memory" -gt 0 ] 2>/dev/null || memory=4096

# The interface and address that reach the resource manager.
route=$(ip -4 -o route get "$RFAAS_RM_ADDRESS" 2>/dev/null) || die "no route to $RFAAS_RM_ADDRESS"
device=${RFAAS_DEVICE:-$(awk '{for (i = 1; i < NF; i++) if ($i == "dev") print $(i + 1)}' <<<"$route")}
address=$(ip -4 -o addr show dev "$device" | awk '{split($4, a, "/"); print a[1]; exit}')
[ -n "$address" ] || die "interface $device has no IPv4 address"

devices=$work/devices_$node.json
config=$work/executor_manager_$node.json
manager_log=$work/executor_manager_$node.log
jq -n --arg name "$device" --arg ip "$address" --argjson port "$port" \
  '{devices: [{name: $name, ip_address: $ip, port: $port, max_inline_data: 0,
               default_receive_buffer_size: 32, provider: "tcp"}]}' >"$devices"
# A numeric secret stays a number, as in the seed's files; anything else is a string.
if [[ "$RFAAS_SECRET" =~ ^[0-9]+$ ]]; then secret=$RFAAS_SECRET; else secret=$(jq -n --arg s "$RFAAS_SECRET" '$s'); fi
jq -n --arg device "$device" --argjson port "$port" --arg node "$node" \
  --arg rm "$RFAAS_RM_ADDRESS" --argjson rm_port "$rm_port" --argjson secret "$secret" \
  '{config: {rdma_device: $device, rdma_device_port: $port, node_name: $node,
             resource_manager_address: $rm, resource_manager_port: $rm_port,
             resource_manager_secret: $secret, "rdma-sleep": true},
    executor: {use_docker: false, repetitions: 0, warmup_iters: 0, pin_threads: false}}' >"$config"

auth=()
[ -n "${RFAAS_HTTP_TOKEN:-}" ] && auth=(-H "Authorization: Bearer $RFAAS_HTTP_TOKEN")
# POST /PATH?node=NODE [BODY]: prints the status code.
post() {
  curl -s -o "$work/http_$node.out" -w '%{http_code}' --max-time 5 "${auth[@]}" \
    -X POST "http://$http/$1?node=$node" ${2:+-d "$2"}
}

manager=""
added=0
cleanup() {
  trap - TERM INT EXIT
  if [ "$added" = 1 ]; then
    log "removing the node from the resource manager at $http: $(post remove) $(cat "$work/http_$node.out" 2>/dev/null)"
  fi
  if [ -n "$manager" ] && kill -0 "$manager" 2>/dev/null; then
    kill -TERM "$manager" 2>/dev/null
    wait "$manager" 2>/dev/null
    log "executor manager stopped"
  fi
}
trap 'log "job ends (SIGTERM)"; cleanup; exit 0' TERM INT
trap cleanup EXIT

PATH=$RFAAS_BIN_DIR:$PATH "$RFAAS_BIN_DIR/executor_manager" -c "$config" \
  --device-database "$devices" 2>"$manager_log" &
manager=$!
for _ in $(seq 1 100); do
  grep -q "Begin listening at" "$manager_log" 2>/dev/null && break
  kill -0 "$manager" 2>/dev/null || die "the executor manager exited: $(tail -3 "$manager_log")"
  sleep 0.1
done
grep -q "Begin listening at" "$manager_log" || die "the executor manager did not start: $(tail -3 "$manager_log")"
log "executor manager pid $manager listening at $address:$port ($cores cores, $memory MiB), log $manager_log"

status=$(post add "{\"ip_address\": \"$address\", \"port\": $port, \"cores\": $cores, \"memory\": $memory}")
log "added to the resource manager at $http: $status $(cat "$work/http_$node.out")"
case "$status" in
  201) added=1 ;;
  *) die "the resource manager did not add $node" ;;
esac
# Until the manager exits or the job is cancelled (the trap interrupts wait).
wait "$manager"
code=$?
manager=""
log "executor manager exited with status $code"
exit "$code"
