#!/usr/bin/env bash
# The main job: the tutorial's warm benchmark against a local executor manager, for native
# and wasm functions, with the raw write-with-immediate ping-pong of the same provider beside
# it in the same run. On tcp and shm, the floor under the provider runs too: plain_pingpong,
# the same round trip over a busy-polled TCP socket or shared memory without rdmalib.
# Prints medians (round trips), writes every sample as CSV and draws them (latency.svg:
# medians against payload size, whiskers to p99).
#
# All are interleaved in rounds, so drift of a shared machine hits them alike; medians are
# taken over all rounds' samples.
#
# Usage: tools/warm_benchmark.sh [-s SIZES] [-r REPETITIONS] [-n ROUNDS] [-w WARMUPS]
#                                [-d DEVICE] [-p PROVIDER] [-o OUT_DIR] [-b BUILD_DIR] [--no-build]
#   -s  comma-separated payload sizes in bytes      (default 1,65536)
#   -r  measured invocations per size, all rounds   (default 10000)
#   -n  rounds per size                             (default 5)
#   -w  warm-up invocations per round               (default 1000)
#   -d  device from tools/device_generator.sh       (default lo)
#   -p  provider of that device: verbs, tcp or shm  (default: what the generator says)
#   -o  where configs, logs and CSV files go        (default results)
#   -b  build directory (tools/build.sh)            (default build)
set -euo pipefail

sizes=1,65536 reps=10000 rounds=5 warmups=1000 device=lo provider_opt= out=results build=build do_build=1
usage() { sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case "$1" in
    -s) sizes=$2; shift ;;
    -r) reps=$2; shift ;;
    -n) rounds=$2; shift ;;
    -w) warmups=$2; shift ;;
    -d) device=$2; shift ;;
    -p) provider_opt=$2; shift ;;
    -o) out=$2; shift ;;
    -b) build=$2; shift ;;
    --no-build) do_build=0 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "warm_benchmark.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
tools/setup.sh build tutorial
[ "$do_build" = 1 ] && tools/build.sh "$build"
mkdir -p "$out"
build=$(cd "$build" && pwd) out=$(cd "$out" && pwd)

echo "==> configuration in $out" >&2
tools/device_generator.sh -d "$device" -o "$out/devices.json"
if [ -n "$provider_opt" ]; then
  case "$provider_opt" in
    verbs|tcp|shm) ;;
    *) echo "warm_benchmark.sh: unknown provider $provider_opt (verbs, tcp or shm)" >&2; exit 2 ;;
  esac
  jq --arg p "$provider_opt" '.devices[0].provider = $p' "$out/devices.json" > "$out/devices.json.tmp"
  mv "$out/devices.json.tmp" "$out/devices.json"
fi
address=$(jq -r '.devices[0].ip_address' "$out/devices.json")
provider=$(jq -r '.devices[0].provider // "detected"' "$out/devices.json")
jq --arg device "$device" '.config.rdma_device = $device' config/executor_manager.json > "$out/executor_manager.json"
jq --arg address "$address" '.executors[0].address = $address' config/executors_database.json > "$out/executors_database.json"
case "$provider" in
  shm) floor_medium=memory ;;
  tcp) floor_medium=tcp ;;
  *) floor_medium= ;;
esac
per_round=$(( (reps + rounds - 1) / rounds ))
jq --arg device "$device" --argjson r "$per_round" --argjson w "$warmups" \
  '.config.rdma_device = $device | .benchmark.repetitions = $r | .benchmark.warmup_repetitions = $w' \
  config/benchmark.json > "$out/benchmark.json"

echo "==> starting the executor manager" >&2
. tools/lib/local_manager.sh
start_local_manager "$build" "$out"

# Median, in microseconds, of the round_trip_ns column of a CSV file.
median_us() {
  awk -F, 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == "round_trip_ns") c = i; next } { print $c }' "$1" \
    | sort -n | awk '{ v[NR] = $1 } END { m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; printf "%.3f", m / 1000 }'
}

# Appends the rows of a round's CSV ($2) to the size's CSV ($1), keeping one header, and
# records the round's median (us) in $1.rounds.
collect() {
  median_us "$2" >> "$1.rounds"; echo >> "$1.rounds"
  if [ -f "$1" ]; then tail -n +2 "$2" >> "$1"; else cp "$2" "$1"; fi
  rm -f "$2"
}

# The lowest of the per-round medians of a size's CSV ($1).
best_round_us() { sort -n "$1.rounds" | head -1; }

bench() { # kind size library
  "$build/benchmarks/warm_benchmarker" --config "$out/benchmark.json" --device-database "$out/devices.json" \
    --name empty --functions "$3" --executors-database "$out/executors_database.json" -s "$2" \
    --output-stats "$out/round.csv" 2>> "$out/warm_benchmarker.log" | sed "s/^/[$1 $2 B] /" >&2
  collect "$out/$1_$2.csv" "$out/round.csv"
}

rows=() best=() floors=()
for size in ${sizes//,/ }; do
  rm -f "$out"/{floor,raw,native,wasm}_"$size".csv{,.rounds}
  for round in $(seq "$rounds"); do
    echo "==> $size B, round $round/$rounds: ${floor_medium:+floor, }raw ping-pong, native, wasm" >&2
    if [ -n "$floor_medium" ]; then
      "$build/benchmarks/plain_pingpong" --medium "$floor_medium" --address "$address" \
        --repetitions "$per_round" --warmup "$warmups" --sizes "$size" --output-stats "$out/round.csv" \
        >> "$out/plain_pingpong.log" 2>&1
      collect "$out/floor_$size.csv" "$out/round.csv"
    fi
    "$build/benchmarks/rdma_pingpong" --device-database "$out/devices.json" --name "$device" client --spawn-server \
      --repetitions "$per_round" --warmup "$warmups" --sizes "$size" --output-stats "$out/round.csv" \
      >> "$out/rdma_pingpong.log" 2>&1
    collect "$out/raw_$size.csv" "$out/round.csv"
    bench native "$size" "$build/examples/libfunctions.so"
    bench wasm "$size" "$build/examples/functions.wasm"
  done
  raw=$(median_us "$out/raw_$size.csv") native=$(median_us "$out/native_$size.csv") wasm=$(median_us "$out/wasm_$size.csv")
  rows+=("$(awk -v s="$size" -v r="$raw" -v n="$native" -v w="$wasm" \
    'BEGIN { printf "%10d %14.3f %14.3f %14.3f %14.3f %14.3f", s, r, n, n - r, w, w - n }')")
  if [ -n "$floor_medium" ]; then
    floor=$(median_us "$out/floor_$size.csv")
    floors+=("$(awk -v s="$size" -v f="$floor" -v r="$raw" \
      'BEGIN { printf "%10d %14.3f %14.3f %14.3f %14.2f", s, f, r, r - f, r / f }')")
  fi
  raw=$(best_round_us "$out/raw_$size.csv") native=$(best_round_us "$out/native_$size.csv")
  wasm=$(best_round_us "$out/wasm_$size.csv")
  best+=("$(awk -v s="$size" -v r="$raw" -v n="$native" -v w="$wasm" \
    'BEGIN { printf "%10d %14.3f %14.3f %14.3f %14.3f %14.3f", s, r, n, n - r, w, w - n }')")
done

echo
echo "Warm benchmark of 'empty' on provider $provider, device $device ($address)"
echo "medians of $((per_round * rounds)) round trips in $rounds interleaved rounds, usec"
printf '%s\n' "--------------------------------------------------------------------------------------------"
printf '%10s %14s %14s %14s %14s %14s\n' "#bytes" "raw_rtt" "native" "native-raw" "wasm" "wasm-native"
printf '%s\n' "${rows[@]}"
echo "lowest of the $rounds per-round medians (a shared machine drifts between rounds), usec"
printf '%s\n' "${best[@]}"
printf '%s\n' "--------------------------------------------------------------------------------------------"
if [ -n "$floor_medium" ]; then
  echo "The floor under the $provider provider: plain_pingpong --medium $floor_medium, medians, usec"
  printf '%10s %14s %14s %14s %14s\n' "#bytes" "floor_rtt" "raw_rtt" "raw-floor" "raw/floor"
  printf '%s\n' "${floors[@]}"
  printf '%s\n' "--------------------------------------------------------------------------------------------"
fi
series=()
for kind in ${floor_medium:+floor} raw native wasm; do
  for size in ${sizes//,/ }; do series+=("$kind=$out/${kind}_$size.csv"); done
done
"$build/benchmarks/rfaas_figure" latency -o "$out/latency.svg" \
  --title "Warm invocations of 'empty' against the raw ping-pong, $provider provider" "${series[@]}" >/dev/null
echo "CSV files and logs: $out; figure: $out/latency.svg"
