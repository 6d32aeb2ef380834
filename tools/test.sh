#!/usr/bin/env bash
# Runs every test of rFaaS-rs on every provider: the workspace's tests (tcp), rdmalib's
# two-process suite, the end-to-end suite and the clients suite (C, C++ and Python, from a
# prefix laid out by tools/build.sh --debug) again on shm, every fuzz target for a while, and,
# in a SoftRoCE guest (tools/softroce.sh), rdmalib's two-process suite, verbs_loopback and the
# end-to-end suite on verbs; as root, the cluster suite on tcp (network namespaces from
# tools/cluster.sh, and Slurm). Installs what they need (tools/setup.sh), builds the binaries
# the end-to-end tests start, and ends with passed / failed / ignored per provider and suite.
#
# Usage: tools/test.sh [--no-verbs] [--no-cluster]
#   --no-verbs    leave the verbs stage out (it needs QEMU and a kernel with rdma_rxe); the
#                 summary then says that verbs was not tested.
#   --no-cluster  leave the cluster stage out (it needs root); the summary says so. Without
#                 root and without this flag the stage is NOT RUN and the summary fails.
# RFAAS_FUZZ_SECONDS (default 30) is how long each fuzz target runs.
set -uo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; }
verbs=1
cluster=1
while [ $# -gt 0 ]; do
  case "$1" in
    --no-verbs) verbs=0 ;;
    --no-cluster) cluster=0 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "test.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done

parts=(build tutorial clients fuzz)
[ $verbs = 1 ] && parts+=(softroce)
[ $cluster = 1 ] && [ "$(id -u)" = 0 ] && parts+=(cluster)
tools/setup.sh "${parts[@]}" || exit 1

logs=build/test-logs
rm -rf "$logs"
mkdir -p "$logs"
started=$SECONDS
summary=()
failed=0

# Records a suite's outcome from its log: the sums of libtest's "test result:" lines.
record() { # provider, suite, log, exit status
  local counts
  counts=$(awk '{ sub(/^[0-9][0-9]:[0-9][0-9]:[0-9][0-9] /, "") }
    /^test result:/ { p += $4; f += $6; i += $8 }
    END { printf "%4d passed %4d failed %4d ignored", p, f, i }' "$3")
  if [ "$4" != 0 ]; then
    counts+="  FAILED (exit $4)"
    failed=1
  fi
  summary+=("$(printf '%-6s %-16s %s' "$1" "$2" "$counts")")
}

# Runs a suite here, showing its output and keeping it in the log.
suite() { # provider, suite, command...
  local provider=$1 name=$2 log="$logs/$1-$2.log"
  shift 2
  echo "==> $name on $provider" >&2
  "$@" 2>&1 | tee "$log"
  record "$provider" "$name" "$log" "${PIPESTATUS[0]}"
}

# The executable cargo built for test target $2 of package $1.
test_binary() {
  cargo test -p "$1" --test "$2" --no-run --message-format=json 2>/dev/null |
    jq -r --arg t "$2" 'select(.reason == "compiler-artifact" and .target.name == $t) | .executable // empty'
}

echo "==> building binaries and function libraries" >&2
cargo build --workspace --bins &&
  cargo build -p functions &&
  cargo build --release --target wasm32-unknown-unknown --manifest-path functions-wasm/Cargo.toml \
    --target-dir functions-wasm/target &&
  cargo test --workspace --no-run || exit 1
# The clients beyond Rust are tested as users get them: from an installed prefix.
tools/build.sh --debug build/test-prefix >"$logs/build-test-prefix.log" 2>&1 ||
  { cat "$logs/build-test-prefix.log"; exit 1; }
export RFAAS_CLIENTS_PREFIX=$PWD/build/test-prefix

suite tcp workspace cargo test --workspace
suite shm two_process env RDMALIB_TEST_PROVIDER=shm cargo test -p rdmalib --test two_process
suite shm e2e env RFAAS_E2E_PROVIDER=shm cargo test -p benchmarks --test e2e
suite shm clients env RFAAS_E2E_PROVIDER=shm cargo test -p benchmarks --test clients

# Multi-node: namespaces joined by a bridge (tools/cluster.sh), the resource manager, three
# executor managers and clients on hosts of their own, node failures, and Slurm.
if [ $cluster = 0 ]; then
  summary+=("$(printf '%-6s %-16s %s' tcp cluster "NOT RUN (--no-cluster): multi-node deployments and Slurm were not tested")")
elif [ "$(id -u)" != 0 ]; then
  summary+=("$(printf '%-6s %-16s %s' tcp cluster "NOT RUN: needs root (network namespaces); run as root or pass --no-cluster")")
  failed=1
else
  suite tcp cluster cargo test -p benchmarks --test cluster -- --ignored --test-threads=1
fi

# Each fuzz target from its committed seeds (fuzz/seeds) plus what earlier runs found
# (fuzz/corpus), for a bounded time; a crash fails the stage and leaves its input in
# fuzz/artifacts.
fuzz_seconds=${RFAAS_FUZZ_SECONDS:-30}
echo "==> building the fuzz targets" >&2
(cd fuzz && cargo +nightly fuzz build) || failed=1
for target in records handshake frames http_add; do
  log="$logs/fuzz-$target.log"
  mkdir -p "fuzz/corpus/$target"
  echo "==> fuzzing $target for ${fuzz_seconds} s" >&2
  (cd fuzz && cargo +nightly fuzz run "$target" "corpus/$target" "seeds/$target" -- \
    -max_total_time="$fuzz_seconds" -print_final_stats=1) > "$log" 2>&1
  status=$?
  runs=$(sed -n 's/^Done \([0-9]*\) runs in \([0-9]*\) second.*/\1 runs in \2 s/p' "$log" | tail -1)
  if [ $status = 0 ]; then
    summary+=("$(printf '%-6s %-16s %s' fuzz "$target" "${runs:-?}, no crash")")
  else
    summary+=("$(printf '%-6s %-16s %s' fuzz "$target" "FAILED (exit $status): see $log and fuzz/artifacts/$target")")
    failed=1
  fi
done

if [ $verbs = 1 ]; then
  two_process=$(test_binary rdmalib two_process)
  loopback=$(test_binary rdmalib verbs_loopback)
  e2e=$(test_binary benchmarks e2e)
  # In the guest: the same binaries, on rxe0; each suite's output goes to its log as well, the
  # e2e suite's with the time each line came (a test's line comes when it ends), because the
  # guest runs it 30 times slower than the host and it is the stage that can outgrow CI.
  guest_suites='
    stamp() { while IFS= read -r line; do printf "%(%H:%M:%S)T %s\n" -1 "$line"; done; }
    echo "==> two_process on verbs" >&2
    RDMALIB_TEST_PROVIDER=verbs "$2" --test-threads=1 2>&1 | tee "$1/verbs-two_process.log"
    echo "${PIPESTATUS[0]}" > "$1/verbs-two_process.status"
    echo "==> verbs_loopback on verbs" >&2
    "$3" --ignored 2>&1 | tee "$1/verbs-verbs_loopback.log"
    echo "${PIPESTATUS[0]}" > "$1/verbs-verbs_loopback.status"
    echo "==> e2e on verbs" >&2
    RFAAS_E2E_PROVIDER=verbs "$4" --test-threads=1 2>&1 | stamp | tee "$1/verbs-e2e.log"
    echo "${PIPESTATUS[0]}" > "$1/verbs-e2e.status"'
  verbs_started=$SECONDS
  tools/softroce.sh -- bash -c "$guest_suites" guest "$PWD/$logs" "$two_process" "$loopback" "$e2e"
  guest=$?
  for name in two_process verbs_loopback e2e; do
    if [ -f "$logs/verbs-$name.status" ]; then
      record verbs "$name" "$logs/verbs-$name.log" "$(cat "$logs/verbs-$name.status")"
    else
      summary+=("$(printf '%-6s %-16s %s' verbs "$name" "NOT RUN: the SoftRoCE guest failed (exit $guest)")")
      failed=1
    fi
  done
  verbs_time=$((SECONDS - verbs_started))
else
  summary+=("$(printf '%-6s %-16s %s' verbs '*' "NOT RUN (--no-verbs): the verbs provider was not tested")")
fi

echo
echo "Summary (logs in $logs; $((SECONDS - started)) s${verbs_time:+, of which verbs stage ${verbs_time} s}):"
printf '  %s\n' "${summary[@]}"
exit $failed
