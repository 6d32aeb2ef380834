#!/usr/bin/env python3
"""The warm benchmark of rFaaS in Python: warm_benchmarker's flags and summary line.

Allocates one executor and measures repeated blocking invocations of one function (hot or
warm, per hot_timeout in benchmark.json); the payload is copied into registered memory once
per call and the result into a preallocated bytearray (execute_into), as a Python
application that reuses its buffers would do.

    python3 warm_benchmark.py --config benchmark.json --device-database devices.json \\
        --executors-database executors_database.json --functions libfunctions.so \\
        --name empty -s 1 [--output-stats samples.csv]
"""

import argparse
import json
import os
import statistics
import sys
import time

import rfaas


def lease(args, endpoint, config):
    bench = config["benchmark"]
    if args.executors_database:
        return rfaas.Lease.from_database(args.executors_database, bench["numcores"],
                                         bench["memory"])
    address = config["config"].get("resource_manager_address", "")
    if not address:
        sys.exit("warm_benchmark.py: give --executors-database, or set "
                 "resource_manager_address in the benchmark configuration")
    port = config["config"].get("resource_manager_port", 0)
    # Cores of a lease that just ended return once its manager reaped the executor.
    deadline = time.monotonic() + 10
    while True:
        try:
            return endpoint.lease(f"{address}:{port}", bench["numcores"], bench["memory"])
        except rfaas.NoResourcesError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.002)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--device-database", required=True)
    parser.add_argument("--executors-database")
    parser.add_argument("--functions", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("-s", "--size", type=int, required=True)
    parser.add_argument("--output-stats")
    parser.add_argument("-v", "--verbose", action="count", default=0)
    args = parser.parse_args()
    rfaas.log_to_stderr(args.verbose)

    with open(args.config) as f:
        config = json.load(f)
    bench = config["benchmark"]
    endpoint = rfaas.Endpoint(args.device_database, config["config"]["rdma_device"])
    if bench.get("pin_threads"):
        # As warm_benchmarker: the calling thread on the last core (executors take the first).
        os.sched_setaffinity(0, {os.cpu_count() - 1})
    payload = bytes([1]) * args.size  # as the seed does
    result = bytearray(args.size)
    with rfaas.Executor(endpoint, lease(args, endpoint, config),
                        rfaas.read_code(args.functions), cores=bench["numcores"],
                        memory_mb=bench["memory"], hot_timeout_ms=bench["hot_timeout"],
                        max_payload=args.size, input_buf_count=1,
                        listen_port=config["config"]["rdma_device_port"]) as executor:
        for _ in range(bench.get("warmup_repetitions", 0)):
            executor.execute_into(args.name, payload, result)
        samples = []
        length = 0
        clock = time.perf_counter_ns
        for _ in range(bench["repetitions"]):
            start = clock()
            length = executor.execute_into(args.name, payload, result)
            samples.append(clock() - start)
    if not samples:
        sys.exit("warm_benchmark.py: benchmark.json asks for 0 repetitions")
    print(f"Executed {len(samples)} repetitions, avg {statistics.fmean(samples) / 1e3} "
          f"usec/iter, median {statistics.median(samples) / 1e3}", file=sys.stderr)
    if args.output_stats:
        with open(args.output_stats, "w") as f:
            f.write("repetition,size,round_trip_ns\n")
            for i, ns in enumerate(samples):
                f.write(f"{i},{args.size},{ns}\n")
    shown = " ".join(str(b) for b in result[:min(length, 16)])
    print(f"Data: {shown}{' ...' if length > 16 else ''}")


if __name__ == "__main__":
    try:
        main()
    except rfaas.Error as e:
        sys.exit(f"warm_benchmark.py: {e}")
