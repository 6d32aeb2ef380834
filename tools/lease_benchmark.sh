#!/usr/bin/env bash
# What a lease costs at the resource manager: a resource manager, an executor manager registered
# with it, a node of many cores added with the tutorial's curl line, then lease_latency asking
# for leases back to back. Prints the median and p99; with a database (--database) also its size.
#
# Usage: tools/lease_benchmark.sh [-n LEASES] [-d DEVICE] [-o OUT_DIR] [-b BUILD_DIR] [--no-build]
#                                 [--db PATH] [--wait-bills]
#   -n            timed leases                      (default 10000)
#   -d            device (tools/device_generator.sh) (default lo)
#   -o            configs, logs, CSV and database   (default results-lease)
#   -b            build directory (tools/build.sh)  (default build)
#   --db          the resource manager's database   (default OUT_DIR/resource_manager.db, fresh)
#   --wait-bills  wait until the executor manager returned every unused lease (about a minute
#                 after the last), so the database holds every lease with its bill
set -euo pipefail

leases=10000 device=lo out=results-lease build=build do_build=1 db= wait_bills=0
usage() { sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case "$1" in
    -n) leases=$2; shift ;;
    -d) device=$2; shift ;;
    -o) out=$2; shift ;;
    -b) build=$2; shift ;;
    --db) db=$2; shift ;;
    --wait-bills) wait_bills=1 ;;
    --no-build) do_build=0 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "lease_benchmark.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
tools/setup.sh build tutorial
[ "$do_build" = 1 ] && tools/build.sh "$build"
mkdir -p "$out"
build=$(cd "$build" && pwd) out=$(cd "$out" && pwd)
[ -n "$db" ] || db=$out/resource_manager.db
rm -f "$db" "$db-wal" "$db-shm"

tools/device_generator.sh -d "$device" -o "$out/devices.json"
address=$(jq -r '.devices[0].ip_address' "$out/devices.json")
jq --arg d "$device" '.config.rdma_device = $d' config/resource_manager.json > "$out/resource_manager.json"
rm_port=$(jq -r '.config.rdma_device_port' "$out/resource_manager.json")
http_port=$(jq -r '.config.http_network_port' "$out/resource_manager.json")
jq --arg d "$device" --arg a "$address" --argjson p "$rm_port" \
  '.config.rdma_device = $d | .config.resource_manager_address = $a | .config.resource_manager_port = $p' \
  config/executor_manager.json > "$out/executor_manager.json"
manager_port=$(jq -r '.config.rdma_device_port' "$out/executor_manager.json")
jq --arg d "$device" --arg a "$address" --argjson p "$rm_port" \
  '.config.rdma_device = $d | .config.resource_manager_address = $a | .config.resource_manager_port = $p | .benchmark.memory = 0' \
  config/benchmark.json > "$out/benchmark.json"

db_args=()
"$build/bin/resource_manager" --help | grep -q -- --database && db_args=(--database "$db")
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null || true' EXIT
wait_for() { # log line
  for _ in $(seq 100); do grep -qs "$2" "$1" && return 0; sleep 0.1; done
  echo "lease_benchmark.sh: no '$2' in $1" >&2; cat "$1" >&2; exit 1
}
"$build/bin/resource_manager" -c "$out/resource_manager.json" --device-database "$out/devices.json" \
  "${db_args[@]}" 2> "$out/resource_manager.log" &
pids+=($!)
wait_for "$out/resource_manager.log" "Begin listening at"
PATH="$build/bin:$PATH" "$build/bin/executor_manager" \
  -c "$out/executor_manager.json" --device-database "$out/devices.json" 2> "$out/executor_manager.log" &
pids+=($!)
wait_for "$out/executor_manager.log" "Begin listening at"
curl -sf "http://127.0.0.1:$http_port/add?node=exec-mgr-node" -X POST \
  -d "{\"ip_address\": \"$address\", \"port\": $manager_port, \"cores\": 1000000, \"memory\": 512}" > /dev/null
wait_for "$out/resource_manager.log" "exec-mgr-node is now registered"

RUST_LOG=warn "$build/benchmarks/lease_latency" --config "$out/benchmark.json" \
  --device-database "$out/devices.json" --leases "$leases" --output-stats "$out/lease_latency.csv"
if [ "$wait_bills" = 1 ]; then
  echo "Waiting for the executor manager to return the unused leases (a minute after the last)"
  for _ in $(seq 1200); do
    active=$(curl -s "http://127.0.0.1:$http_port/leases" | jq '[.leases[] | select(.state == "active")] | length')
    [ "$active" = 0 ] && break
    sleep 0.1
  done
  echo "Leases: $(curl -s "http://127.0.0.1:$http_port/leases" | jq -c '[.leases[].state] | group_by(.) | map({(.[0]): length}) | add')"
fi
if [ ${#db_args[@]} -gt 0 ]; then
  echo "Database $db: $(stat -c %s "$db") bytes; with its -wal and -shm $(du -cb "$db"* | tail -1 | cut -f1) bytes"
  if command -v sqlite3 > /dev/null; then
    echo "In it: $(sqlite3 -readonly "$db" "SELECT (SELECT count(*) FROM leases) || ' leases, ' || (SELECT count(*) FROM bills) || ' bills'")"
  fi
fi
echo "CSV file and logs: $out"
