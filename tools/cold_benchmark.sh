#!/usr/bin/env bash
# Cold starts through the tutorial's full deployment: a resource manager, an executor manager
# registered with it, the node added with the tutorial's curl line, then cold_benchmarker for
# native functions, wasm with an empty compile cache, and wasm with a warm one. Prints the
# phase medians (lease, connect, submit, spawn_connect, initialize, execute, total) and draws
# them stacked per kind (cold_phases.svg).
#
# Usage: tools/cold_benchmark.sh [-r REPETITIONS] [-d DEVICE] [-p PROVIDER] [-o OUT_DIR]
#                                [-b BUILD_DIR] [--no-build]
#   -r  cold starts per kind           (default 100)
#   -d  device (tools/device_generator.sh)  (default lo)
#   -p  provider of that device: verbs, tcp or shm  (default: what the generator says)
#   -o  configs, logs, CSV files and the resource manager's database (default results-cold)
#   -b  build directory (tools/build.sh)    (default build)
set -euo pipefail

reps=100 device=lo provider= out=results-cold build=build do_build=1
usage() { sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case "$1" in
    -r) reps=$2; shift ;;
    -d) device=$2; shift ;;
    -p) provider=$2; shift ;;
    -o) out=$2; shift ;;
    -b) build=$2; shift ;;
    --no-build) do_build=0 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "cold_benchmark.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
tools/setup.sh build tutorial
[ "$do_build" = 1 ] && tools/build.sh "$build"
mkdir -p "$out"
build=$(cd "$build" && pwd) out=$(cd "$out" && pwd)
rm -rf "$out/wasm-cache" "$out/code-cache"
# A fresh deployment: no nodes or leases from an earlier run (the node is added below).
rm -f "$out/resource_manager.db" "$out/resource_manager.db-wal" "$out/resource_manager.db-shm"

tools/device_generator.sh -d "$device" -o "$out/devices.json"
if [ -n "$provider" ]; then
  case "$provider" in
    verbs|tcp|shm) ;;
    *) echo "cold_benchmark.sh: unknown provider $provider (verbs, tcp or shm)" >&2; exit 2 ;;
  esac
  jq --arg p "$provider" '.devices[0].provider = $p' "$out/devices.json" > "$out/devices.json.tmp"
  mv "$out/devices.json.tmp" "$out/devices.json"
fi
# The executors of this deployment compile wasm into a cache of their own, and the manager keeps
# the libraries it was sent in a code cache of its own; both are empty at first, so the first
# cold start of each kind sends its library and the others load the manager's copy.
export RFAAS_CACHE_DIR="$out/wasm-cache" RFAAS_CODE_CACHE_DIR="$out/code-cache"
. tools/lib/deployment.sh
start_deployment "$build" "$out" "$device" 1

cold() { # title, csv, cold_benchmarker arguments...
  echo "== $1"
  "$build/benchmarks/cold_benchmarker" --config "$out/benchmark.json" --device-database "$out/devices.json" \
    --name empty -s 1 --output-stats "$out/$2" "${@:3}" 2>> "$out/cold_benchmarker.log" >/dev/null
  local columns i name
  columns=$(head -1 "$out/$2" | tr ',' ' ')
  i=1
  for name in $columns; do
    if [ "$i" -gt 1 ]; then
      tail -n +2 "$out/$2" | cut -d, -f"$i" | sort -n |
        awk -v name="${name%_ns}" '{ v[NR] = $1 } END {
          m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
          printf "  %-14s median %10.3f ms\n", name, m / 1e6 }'
    fi
    i=$((i + 1))
  done
}
cold "native, $reps cold starts" cold_native.csv --functions "$build/examples/libfunctions.so" --repetitions "$reps"
cold "wasm, empty compile cache (1 cold start)" cold_wasm_first.csv --functions "$build/examples/functions.wasm" --repetitions 1
cold "wasm, warm compile cache, $reps cold starts" cold_wasm.csv --functions "$build/examples/functions.wasm" --repetitions "$reps"
# The last executor is reaped (and its lease closed) a moment after its client left.
print_lease_states 50
"$build/benchmarks/rfaas_figure" cold -o "$out/cold_phases.svg" --title "Cold starts by phase, $(jq -r '.devices[0].provider // "detected"' "$out/devices.json") provider" \
  "native=$out/cold_native.csv" "wasm, empty cache=$out/cold_wasm_first.csv" "wasm, warm cache=$out/cold_wasm.csv" >/dev/null
echo "CSV files and logs: $out; figure: $out/cold_phases.svg"
