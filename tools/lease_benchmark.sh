#!/usr/bin/env bash
# What a lease costs at the resource manager: a resource manager, an executor manager registered
# with it, a node of many cores added with the tutorial's curl line, then lease_latency asking
# for leases back to back. Prints the median and p99; with a database (--database) also its size.
#
# Usage: tools/lease_benchmark.sh [-n LEASES] [-d DEVICE] [-o OUT_DIR] [-b BUILD_DIR] [--no-build]
#                                 [--db PATH] [--wait-bills] [--fresh-connections]
#   -n            timed leases                      (default 10000)
#   -d            device (tools/device_generator.sh) (default lo)
#   -o            configs, logs, CSV and database   (default results-lease)
#   -b            build directory (tools/build.sh)  (default build)
#   --db          the resource manager's database   (default OUT_DIR/resource_manager.db, fresh)
#   --wait-bills  wait until the executor manager returned every unused lease (about a minute
#                 after the last), so the database holds every lease with its bill
#   --fresh-connections  connect to the resource manager for every lease (a client's first
#                 lease), instead of keeping the connection (its later leases)
set -euo pipefail

leases=10000 device=lo out=results-lease build=build do_build=1 db= wait_bills=0 fresh=()
usage() { sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case "$1" in
    -n) leases=$2; shift ;;
    -d) device=$2; shift ;;
    -o) out=$2; shift ;;
    -b) build=$2; shift ;;
    --db) db=$2; shift ;;
    --wait-bills) wait_bills=1 ;;
    --fresh-connections) fresh=(--fresh-connections) ;;
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
db_args=()
"$build/bin/resource_manager" --help | grep -q -- --database && db_args=(--database "$db")
. tools/lib/deployment.sh
start_deployment "$build" "$out" "$device" 1000000 "${db_args[@]}"
jq '.benchmark.memory = 0' "$out/benchmark.json" > "$out/benchmark.json.tmp"
mv "$out/benchmark.json.tmp" "$out/benchmark.json"

RUST_LOG=warn "$build/benchmarks/lease_latency" --config "$out/benchmark.json" \
  --device-database "$out/devices.json" --leases "$leases" --output-stats "$out/lease_latency.csv" \
  "${fresh[@]}"
if [ "$wait_bills" = 1 ]; then
  echo "Waiting for the executor manager to return the unused leases (a minute after the last)"
  print_lease_states 1200
fi
if [ ${#db_args[@]} -gt 0 ]; then
  echo "Database $db: $(stat -c %s "$db") bytes; with its -wal and -shm $(du -cb "$db"* | tail -1 | cut -f1) bytes"
  if command -v sqlite3 > /dev/null; then
    echo "In it: $(sqlite3 -readonly "$db" "SELECT (SELECT count(*) FROM leases) || ' leases, ' || (SELECT count(*) FROM bills) || ' bills'")"
  fi
fi
echo "CSV file and logs: $out"
