#!/usr/bin/env bash
# What the clients beyond Rust cost per call: warm_benchmarker (Rust), warm_benchmarker_c
# (C over librfaas) and warm_benchmark.py (Python) against one local executor manager, in
# interleaved rounds, so drift of a shared machine hits them alike. Prints each round's
# medians and the medians over all rounds, with C - Rust and Python - Rust; writes every
# sample as CSV.
#
# Usage: tools/clients_benchmark.sh [-s SIZE] [-r REPETITIONS] [-n ROUNDS] [-w WARMUPS]
#                                   [-p PROVIDER] [-f FUNCTIONS] [-o OUT_DIR] [-b BUILD_DIR]
#   -s  payload size in bytes                            (default 1)
#   -r  measured invocations per client and round        (default 10000)
#   -n  rounds                                           (default 5)
#   -w  warm-up invocations per client and round         (default 1000)
#   -p  provider on lo: shm or tcp                       (default shm)
#   -f  function library (libfunctions.so or functions.wasm in BUILD_DIR/examples)
#                                                        (default libfunctions.so)
#   -o  where configs, logs and CSV files go             (default results-clients)
#   -b  build directory of tools/build.sh (not rebuilt)  (default build)
# The executor polls hot (hot_timeout -1) and both sides pin their threads (pin_threads): run it
# alone on the machine.
set -euo pipefail

size=1 reps=10000 rounds=5 warmups=1000 provider=shm functions=libfunctions.so out=results-clients build=build
usage() { sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case "$1" in
    -s) size=$2; shift ;;
    -r) reps=$2; shift ;;
    -n) rounds=$2; shift ;;
    -w) warmups=$2; shift ;;
    -p) provider=$2; shift ;;
    -f) functions=$2; shift ;;
    -o) out=$2; shift ;;
    -b) build=$2; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "clients_benchmark.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done
case "$provider" in
  shm|tcp) ;;
  *) echo "clients_benchmark.sh: provider $provider is neither shm nor tcp" >&2; exit 2 ;;
esac

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
venv=${RFAAS_VENV:-$root/build/venv}
for f in bin/executor_manager benchmarks/warm_benchmarker examples/c/warm_benchmarker_c \
  examples/python/warm_benchmark.py "examples/$functions"; do
  [ -e "$build/$f" ] || { echo "clients_benchmark.sh: $build/$f is missing: run tools/build.sh" >&2; exit 1; }
done
mkdir -p "$out"
build=$(cd "$build" && pwd) out=$(cd "$out" && pwd)
rm -rf "$out/site"
"$venv/bin/python" -m pip install --quiet --no-deps --target "$out/site" "$build"/python/rfaas-*.whl

port=$((20000 + RANDOM % 10000))
jq -n --arg p "$provider" '{devices: [{name: "lo", ip_address: "127.0.0.1", port: 10000,
  max_inline_data: 0, default_receive_buffer_size: 32, provider: $p}]}' > "$out/devices.json"
# pin_threads on both sides: executor threads on the first cores, each client on the last.
jq --argjson port "$port" '.config.rdma_device = "lo" | .config.rdma_device_port = $port
  | .executor.pin_threads = true' config/executor_manager.json > "$out/executor_manager.json"
jq --argjson port "$port" '.executors[0].port = $port' config/executors_database.json \
  > "$out/executors_database.json"
jq --argjson r "$reps" --argjson w "$warmups" '.config.rdma_device = "lo" | .config.rdma_device_port = 0
  | .benchmark.repetitions = $r | .benchmark.warmup_repetitions = $w | .benchmark.hot_timeout = -1
  | .benchmark.pin_threads = true' \
  config/benchmark.json > "$out/benchmark.json"

echo "==> starting the executor manager ($provider, port $port)" >&2
. tools/lib/local_manager.sh
start_local_manager "$build" "$out"

# Median, in microseconds, of the round_trip_ns column of a CSV file.
median_us() {
  tail -n +2 "$1" | cut -d, -f3 | sort -n |
    awk '{ v[NR] = $1 } END { m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; printf "%.3f", m / 1000 }'
}

flags=(--config "$out/benchmark.json" --device-database "$out/devices.json"
  --executors-database "$out/executors_database.json" --functions "$build/examples/$functions"
  --name empty -s "$size")
run() { # client csv command...
  local client=$1 csv=$2
  shift 2
  "$@" "${flags[@]}" --output-stats "$csv" 2>> "$out/$client.log" >/dev/null ||
    { echo "$client failed; see $out/$client.log" >&2; exit 1; }
  if [ -f "$out/$client.csv" ]; then tail -n +2 "$csv" >> "$out/$client.csv"; else cp "$csv" "$out/$client.csv"; fi
}

rm -f "$out"/{rust,c,python}.csv "$out"/{rust,c,python}.log "$out/rounds.txt"
rust() { run rust "$out/round-rust.csv" "$build/benchmarks/warm_benchmarker"; }
c() { run c "$out/round-c.csv" "$build/examples/c/warm_benchmarker_c"; }
python() {
  run python "$out/round-python.csv" env PYTHONPATH="$out/site" "$venv/bin/python" \
    "$build/examples/python/warm_benchmark.py"
}
printf '%6s %12s %12s %12s %12s %12s\n' round rust c python c-rust python-rust
for round in $(seq "$rounds"); do
  # Every other round in the opposite order, so nothing gains from going first.
  if [ $((round % 2)) = 1 ]; then rust; c; python; else python; c; rust; fi
  r=$(median_us "$out/round-rust.csv") c=$(median_us "$out/round-c.csv") p=$(median_us "$out/round-python.csv")
  awk -v n="$round" -v r="$r" -v c="$c" -v p="$p" \
    'BEGIN { printf "%6d %12.3f %12.3f %12.3f %12.3f %12.3f\n", n, r, c, p, c - r, p - r }' |
    tee -a "$out/rounds.txt"
done
r=$(median_us "$out/rust.csv") c=$(median_us "$out/c.csv") p=$(median_us "$out/python.csv")
awk -v r="$r" -v c="$c" -v p="$p" \
  'BEGIN { printf "%6s %12.3f %12.3f %12.3f %12.3f %12.3f   (medians of all samples)\n", "all", r, c, p, c - r, p - r }'
# The per-round differences: median and range.
for col in 5:c-rust 6:python-rust; do
  awk -v c="${col%%:*}" '{ print $c }' "$out/rounds.txt" | sort -n |
    awk -v name="${col#*:}" '{ v[NR] = $1 } END { m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
      printf "per-round %s: median %.3f, from %.3f to %.3f\n", name, m, v[1], v[NR] }'
done
echo "medians of round trips of 'empty' ($size B, $functions, $provider, hot), usec; $rounds rounds of $reps each"
echo "CSV files and logs: $out"
