#!/usr/bin/env bash
# The real workloads (matrix multiply, Black-Scholes, thumbnail, SHA-256; functions-workloads)
# as native and wasm functions against a local executor manager: workload_benchmark's table of
# per-call medians at two input sizes each, with the wasm/native ratio, and every sample as CSV.
#
# Usage: tools/workload_benchmark.sh [-r REPETITIONS] [-n ROUNDS] [-w WARMUPS] [-p PROVIDER]
#                                    [-o OUT_DIR] [-b BUILD_DIR] [--no-build]
#   -r  measured invocations per workload, size and kind   (default 1000)
#   -n  rounds in which native and wasm take turns         (default 5)
#   -w  warm-up invocations per workload and round         (default 20)
#   -p  provider on lo: tcp or shm                         (default tcp)
#   -o  where configs, logs and the CSV file go            (default results-workloads)
#   -b  build directory (tools/build.sh)                   (default build)
# The executor polls hot and both sides pin their threads: run it alone on the machine.
set -euo pipefail

reps=1000 rounds=5 warmups=20 provider=tcp out=results-workloads build=build do_build=1
usage() { sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case "$1" in
    -r) reps=$2; shift ;;
    -n) rounds=$2; shift ;;
    -w) warmups=$2; shift ;;
    -p) provider=$2; shift ;;
    -o) out=$2; shift ;;
    -b) build=$2; shift ;;
    --no-build) do_build=0 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "workload_benchmark.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done
case "$provider" in
  shm|tcp) ;;
  *) echo "workload_benchmark.sh: provider $provider is neither tcp nor shm" >&2; exit 2 ;;
esac

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
tools/setup.sh build tutorial
[ "$do_build" = 1 ] && tools/build.sh "$build"
mkdir -p "$out"
build=$(cd "$build" && pwd) out=$(cd "$out" && pwd)

port=$((20000 + RANDOM % 10000))
jq -n --arg p "$provider" '{devices: [{name: "lo", ip_address: "127.0.0.1", port: 10000,
  max_inline_data: 0, default_receive_buffer_size: 32, provider: $p}]}' > "$out/devices.json"
jq --argjson port "$port" '.config.rdma_device = "lo" | .config.rdma_device_port = $port
  | .executor.pin_threads = true' config/executor_manager.json > "$out/executor_manager.json"
jq --argjson port "$port" '.executors[0].port = $port' config/executors_database.json \
  > "$out/executors_database.json"
jq '.config.rdma_device = "lo" | .config.rdma_device_port = 0 | .benchmark.hot_timeout = -1
  | .benchmark.pin_threads = true' config/benchmark.json > "$out/benchmark.json"

echo "==> starting the executor manager ($provider, port $port)" >&2
. tools/lib/local_manager.sh
start_local_manager "$build" "$out"

"$build/benchmarks/workload_benchmark" --config "$out/benchmark.json" \
  --device-database "$out/devices.json" --executors-database "$out/executors_database.json" \
  --functions "$build/examples/libworkloads.so" --wasm "$build/examples/workloads.wasm" \
  -r "$reps" -n "$rounds" -w "$warmups" --output-stats "$out/workloads.csv" \
  2> "$out/workload_benchmark.log" || { cat "$out/workload_benchmark.log" >&2; exit 1; }
echo "Provider $provider on lo; CSV and logs: $out"
