# Sourced by the benchmark scripts: starts an executor manager of build directory $1 with
# $2/executor_manager.json and $2/devices.json, without a resource manager, logging to
# $2/executor_manager.log; waits until it listens and stops it when the script exits.
start_local_manager() { # build_dir out_dir
  PATH="$1/bin:$PATH" "$1/bin/executor_manager" -c "$2/executor_manager.json" \
    --device-database "$2/devices.json" --skip-resource-manager 2> "$2/executor_manager.log" &
  manager=$!
  trap 'kill $manager 2>/dev/null; wait $manager 2>/dev/null || true' EXIT
  for _ in $(seq 100); do
    grep -q "Begin listening at" "$2/executor_manager.log" && return 0
    kill -0 $manager 2>/dev/null || { cat "$2/executor_manager.log" >&2; exit 1; }
    sleep 0.1
  done
  echo "the executor manager did not start; its log: $2/executor_manager.log" >&2
  exit 1
}
