# Sourced by the benchmark scripts that run the tutorial's full deployment on one host.

# Writes $2/{resource_manager,executor_manager,benchmark}.json for device $3 (described in
# $2/devices.json), starts a resource manager (given the further arguments) and an executor
# manager of build directory $1, adds the node with $4 cores over HTTP and waits until its
# manager has registered; both stop when the script exits. Sets http_port.
start_deployment() { # build_dir out_dir device cores [resource_manager arguments...]
  local build=$1 out=$2 device=$3 cores=$4 address rm_port manager_port
  shift 4
  address=$(jq -r '.devices[0].ip_address' "$out/devices.json")
  jq --arg d "$device" '.config.rdma_device = $d' config/resource_manager.json > "$out/resource_manager.json"
  rm_port=$(jq -r '.config.rdma_device_port' "$out/resource_manager.json")
  http_port=$(jq -r '.config.http_network_port' "$out/resource_manager.json")
  for file in executor_manager benchmark; do
    jq --arg d "$device" --arg a "$address" --argjson p "$rm_port" \
      '.config.rdma_device = $d | .config.resource_manager_address = $a | .config.resource_manager_port = $p' \
      "config/$file.json" > "$out/$file.json"
  done
  manager_port=$(jq -r '.config.rdma_device_port' "$out/executor_manager.json")

  deployment_pids=()
  trap 'kill "${deployment_pids[@]}" 2>/dev/null; wait 2>/dev/null || true' EXIT
  "$build/bin/resource_manager" -c "$out/resource_manager.json" --device-database "$out/devices.json" \
    "$@" 2> "$out/resource_manager.log" &
  deployment_pids+=($!)
  wait_for_line "$out/resource_manager.log" "Begin listening at"
  PATH="$build/bin:$PATH" "$build/bin/executor_manager" \
    -c "$out/executor_manager.json" --device-database "$out/devices.json" 2> "$out/executor_manager.log" &
  deployment_pids+=($!)
  wait_for_line "$out/executor_manager.log" "Begin listening at"
  curl -sf "http://127.0.0.1:$http_port/add?node=exec-mgr-node" -X POST \
    -d "{\"ip_address\": \"$address\", \"port\": $manager_port, \"cores\": $cores, \"memory\": 512}" > /dev/null
  wait_for_line "$out/resource_manager.log" "exec-mgr-node is now registered"
}

# Waits (at most 10 s) until log file $1 has a line with $2; else shows the log and exits.
wait_for_line() { # log line
  for _ in $(seq 100); do grep -qs "$2" "$1" && return 0; sleep 0.1; done
  echo "$(basename "$0"): no '$2' in $1" >&2; cat "$1" >&2; exit 1
}

# Waits until the resource manager lists no active lease (at most $1 tenths of a second), then
# prints how many leases it has in each state.
print_lease_states() { # tenths
  local active
  for _ in $(seq "$1"); do
    active=$(curl -s "http://127.0.0.1:$http_port/leases" | jq '[.leases[] | select(.state == "active")] | length')
    [ "$active" = 0 ] && break
    sleep 0.1
  done
  echo "Leases: $(curl -s "http://127.0.0.1:$http_port/leases" | jq -c '[.leases[].state] | group_by(.) | map({(.[0]): length}) | add')"
}
