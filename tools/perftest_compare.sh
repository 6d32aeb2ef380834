#!/usr/bin/env bash
# rdma_pingpong beside perftest on one verbs device: round trips against ib_write_lat -R
# (perftest prints half a round trip; both are shown as full ones here) and ping-pong
# bandwidth against ib_write_bw -R (a stream of writes, 128 in flight). Both ends run on this
# host, on the device that RDMA_DEVICE and RDMA_IP name, so run it in the SoftRoCE guest:
#
#   tools/build.sh && tools/softroce.sh -- tools/perftest_compare.sh
#
# Usage: tools/perftest_compare.sh [-s SIZES] [-r REPETITIONS] [-b BUILD_DIR] [-o OUT_DIR]
#   -s  comma-separated payload sizes in bytes  (default 2,4096,65536)
#   -r  measured round trips / writes per size  (default 5000)
#   -b  build directory (tools/build.sh)        (default build)
#   -o  logs and CSV files                      (default results-perftest)
set -euo pipefail

sizes=2,4096,65536 reps=5000 build=build out=results-perftest
usage() { sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case "$1" in
    -s) sizes=$2; shift ;;
    -r) reps=$2; shift ;;
    -b) build=$2; shift ;;
    -o) out=$2; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "perftest_compare.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done
: "${RDMA_DEVICE:?perftest_compare.sh: set RDMA_DEVICE and RDMA_IP (tools/softroce.sh does)}"
: "${RDMA_IP:?perftest_compare.sh: set RDMA_IP}"
for tool in ib_write_lat ib_write_bw jq; do
  command -v "$tool" >/dev/null || { echo "perftest_compare.sh: $tool is missing (tools/setup.sh softroce)" >&2; exit 1; }
done
pingpong="$build/benchmarks/rdma_pingpong"
[ -x "$pingpong" ] || { echo "perftest_compare.sh: $pingpong is missing; run tools/build.sh" >&2; exit 1; }
mkdir -p "$out"

jq -n --arg name "$RDMA_DEVICE" --arg ip "$RDMA_IP" \
  '{devices: [{name: $name, ip_address: $ip, port: 10000, max_inline_data: 0,
     default_receive_buffer_size: 32, provider: "verbs"}]}' > "$out/devices.json"

# perftest's server and client in turn on one port; the client's output goes to stdout.
perftest() { # tool, size, extra arguments...
  local tool=$1 size=$2 port=18515
  shift 2
  "$tool" -R -F -d "$RDMA_DEVICE" -s "$size" -n "$reps" -p "$port" "$@" > "$out/$tool-$size-server.log" 2>&1 &
  local server=$!
  sleep 1
  "$tool" -R -F -d "$RDMA_DEVICE" -s "$size" -n "$reps" -p "$port" "$@" "$RDMA_IP" 2> "$out/$tool-$size-client.err"
  wait "$server" || true
}

# The data row of a perftest table: the line that starts with the size.
perftest_row() { # size
  awk -v s="$1" '$1 == s { print; exit }'
}

echo "==> rdma_pingpong on $RDMA_DEVICE ($RDMA_IP)" >&2
"$pingpong" --device-database "$out/devices.json" --name "$RDMA_DEVICE" client --spawn-server \
  --sizes "$sizes" --repetitions "$reps" --output-stats "$out/rdma_pingpong.csv" \
  | tee "$out/rdma_pingpong.txt" >&2

echo "==> perftest" >&2
table=()
for size in ${sizes//,/ }; do
  lat=$(perftest ib_write_lat "$size" | tee "$out/ib_write_lat-$size.txt" | perftest_row "$size")
  bw=$(perftest ib_write_bw "$size" | tee "$out/ib_write_bw-$size.txt" | perftest_row "$size")
  # rdma_pingpong's median round trip for this size, in µs, from its CSV.
  ours=$(awk -F, -v s="$size" 'NR == 1 { for (i = 1; i <= NF; i++) { if ($i == "size") c = i; if ($i == "round_trip_ns") r = i } next }
      $c == s { print $r }' "$out/rdma_pingpong.csv" | sort -n |
    awk '{ v[NR] = $1 } END { m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; printf "%.2f", m / 1000 }')
  # ib_write_lat: #bytes #iterations t_min t_max t_typical t_avg ...; t_typical is the median.
  theirs=$(awk '{ printf "%.2f", 2 * $5 }' <<<"$lat")
  ratio=$(awk -v a="$ours" -v b="$theirs" 'BEGIN { printf "%.2f", (b > 0) ? a / b : 0 }')
  pp_bw=$(awk -v s="$size" -v t="$ours" 'BEGIN { printf "%.1f", (t > 0) ? s / (t / 2) : 0 }')
  # ib_write_bw: #bytes #iterations BW_peak BW_average MsgRate (MB/s).
  stream_bw=$(awk '{ print $4 }' <<<"$bw")
  table+=("$(printf '%8s %14s %18s %8s %16s %16s' "$size" "$ours" "$theirs" "$ratio" "$pp_bw" "$stream_bw")")
done

echo
echo "Round trips (median, µs) and bandwidth (MB/s), $reps per size, on $RDMA_DEVICE:"
printf '%8s %14s %18s %8s %16s %16s\n' bytes rdma_pingpong "ib_write_lat x2" ratio "ping-pong BW" "ib_write_bw avg"
printf '%s\n' "${table[@]}"
echo "Logs and CSV: $out"
