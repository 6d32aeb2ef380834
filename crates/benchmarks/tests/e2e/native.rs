//! The tutorial's first deployment with native functions, and what goes wrong in it.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rfaas::{AllocationSpec, Error, ReturnCode};

use crate::harness::*;

/// A seeded pseudo-random payload, so a wrong byte anywhere is caught.
fn payload(size: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..size)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn summary_line(stderr: &str) -> Option<(u64, f64, f64)> {
    let line = stderr
        .lines()
        .find(|l| l.contains("Executed ") && l.contains(" repetitions, avg "))?;
    let rest = line.split("Executed ").nth(1)?;
    let n = rest.split_whitespace().next()?.parse().ok()?;
    let avg = rest
        .split("avg ")
        .nth(1)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let median = rest.split("median ").nth(1)?.trim().parse().ok()?;
    Some((n, avg, median))
}

fn jq(filter: &str, args: &[&str], input: &std::path::Path, output: &std::path::Path) {
    let out = Command::new("jq")
        .args(args)
        .arg(filter)
        .arg(input)
        .output()
        .expect("jq is installed");
    assert!(out.status.success(), "jq failed: {}", text(&out.stderr));
    std::fs::write(output, out.stdout).unwrap();
}

/// The tutorial's commands as written: device file from tools/device_generator.sh, configs
/// made with jq from config/, the manager with --skip-resource-manager and PATH set, then
/// warm_benchmarker for 1 B, 4 KiB and 1 MiB; the result bytes must equal the input bytes.
#[test]
fn tutorial_warm_benchmark_native() {
    let _serial = serial();
    let dir = TempDir::new("tutorial");
    let src = repo();
    let devices = dir.path("server_devices.json");
    let generated = Command::new(src.join("tools/device_generator.sh"))
        .args(["-d", &device_name(), "-o", arg(&devices)])
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(
        generated.status.success(),
        "device_generator.sh: {}",
        text(&generated.stderr)
    );
    let (device, address) = (device_name(), device_ip());
    // The tutorial's three jq lines.
    for (file, filter, var, value) in [
        (
            "executor_manager.json",
            ".config.rdma_device = $device",
            "device",
            &device,
        ),
        (
            "executors_database.json",
            ".executors[0].address = $address",
            "address",
            &address,
        ),
        (
            "benchmark.json",
            ".config.rdma_device = $device",
            "device",
            &device,
        ),
    ] {
        let shipped = src.join("config").join(file);
        jq(filter, &["--arg", var, value], &shipped, &dir.path(file));
    }
    let manager_config = dir.path("executor_manager.json");
    let executors = dir.path("executors_database.json");
    let bench = dir.path("benchmark.json");

    let mut manager = Manager::start(&manager_config, &devices, &["--skip-resource-manager"]);
    let client = ClientFiles {
        config: bench,
        devices,
        executors: Some(executors),
    };
    assert_eq!(
        manager.addr.port(),
        10005,
        "the shipped configuration's port"
    );
    assert!(
        manager.log().contains(&format!(
            "Listening on device {}, port 10005",
            device_name()
        )),
        "{}",
        manager.log()
    );

    for (size, seed) in [(1usize, 7u64), (4096, 11), (1 << 20, 13)] {
        let input = payload(size, seed);
        let input_file = dir.path("input.bin");
        let output_file = dir.path("output.bin");
        std::fs::write(&input_file, &input).unwrap();
        let size_arg = size.to_string();
        let out = run(
            "warm_benchmarker",
            client.args(
                &native_library(),
                &[
                    "--name",
                    "empty",
                    "-s",
                    &size_arg,
                    "--input-file",
                    arg(&input_file),
                    "--output-file",
                    arg(&output_file),
                ],
            ),
        );
        let stderr = text(&out.stderr);
        assert!(
            out.status.success(),
            "warm_benchmarker -s {size} failed: {stderr}\nmanager: {}",
            manager.log()
        );
        let (n, avg, median) =
            summary_line(&stderr).unwrap_or_else(|| panic!("no summary line in {stderr}"));
        assert_eq!(n, 100, "benchmark.json asks for 100 repetitions");
        assert!(avg > 0.0 && median > 0.0, "{stderr}");
        assert!(
            text(&out.stdout).starts_with("Data: "),
            "{}",
            text(&out.stdout)
        );
        assert_eq!(
            std::fs::read(&output_file).unwrap(),
            input,
            "result bytes differ from the input at {size} B"
        );
    }
    assert!(manager.is_running(), "the manager keeps serving");
}

/// Hot (-1), warm (0), and hot for 20 ms then warm: calls before and after idle gaps longer
/// than the timeout all return the right bytes.
#[test]
fn polling_modes_hot_warm_and_switching() {
    let _serial = serial();
    let dir = TempDir::new("polling");
    let manager = local_manager(&dir);
    let code = std::fs::read(native_library()).unwrap();
    for hot_timeout_ms in [-1, 0, 20] {
        let spec = AllocationSpec {
            hot_timeout_ms,
            max_payload: 256,
            ..AllocationSpec::default()
        };
        let executor = allocate(&manager, &code, &spec).unwrap();
        for round in 0..3u8 {
            echo_once(&executor, round + 1, 200).unwrap();
            std::thread::sleep(Duration::from_millis(60));
        }
        executor.deallocate();
    }
}

/// Two cores at once: parallel_invocations returns one result per core (warm polling, so
/// two executor threads and the client do not starve each other on a two-core machine).
#[test]
fn two_cores_in_parallel() {
    let _serial = serial();
    let dir = TempDir::new("parallel");
    let manager = local_manager(&dir);
    let client = client_configs(&dir, &manager, 2, 0, 20);
    let out = run(
        "parallel_invocations",
        client.args(&native_library(), &["--name", "empty", "-s", "64"]),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout).trim(),
        "Data: 1 2",
        "core i echoes bytes of value i+1"
    );
    assert!(
        text(&out.stderr).contains("Executed 20 repetitions on 2 cores"),
        "{}",
        text(&out.stderr)
    );
}

/// Blocking, asynchronous, mixed and two-buffer asynchronous calls, checked byte for byte.
#[test]
fn async_and_mixed_calls() {
    let _serial = serial();
    let dir = TempDir::new("async");
    let manager = local_manager(&dir);
    let client = client_configs(&dir, &manager, 1, -1, 10);
    let out = run(
        "api_walkthrough",
        client.args(&native_library(), &["-s", "1000"]),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    for step in [
        "blocking:",
        "async:",
        "mixed: blocking:",
        "mixed: async:",
        "two buffers: first:",
        "two buffers: second:",
    ] {
        assert!(
            stdout
                .lines()
                .any(|l| l.contains(step) && l.ends_with("equal to the input")),
            "{step} missing in {stdout}"
        );
    }
}

/// More calls in flight than a thread has input slots: the extra one is refused as busy (a
/// transient error), and goes through once a slot is free again.
#[test]
fn a_call_beyond_the_input_slots_is_busy() {
    let _serial = serial();
    let dir = TempDir::new("busy");
    let manager = local_manager(&dir);
    let code = std::fs::read(native_library()).unwrap();
    let spec = AllocationSpec {
        input_buf_count: 1,
        hot_timeout_ms: 0,
        max_payload: 64,
        ..AllocationSpec::default()
    };
    let executor = allocate(&manager, &code, &spec).unwrap();
    let sleep = executor.function("sleep").unwrap();
    let buffers = || {
        let input = executor.input_buffer(4).unwrap();
        input.write(&200u32.to_le_bytes()).unwrap();
        (input, executor.output_buffer(4).unwrap())
    };
    let (first_in, first_out) = buffers();
    let (second_in, second_out) = buffers();
    let first = executor.submit(0, sleep, &first_in, 4, &first_out).unwrap();
    match executor.submit(0, sleep, &second_in, 4, &second_out) {
        Err(
            e @ Error::Busy {
                thread: 0,
                slots: 1,
            },
        ) => assert!(e.is_transient(), "{e}"),
        Err(e) => panic!("expected busy, got {e}"),
        Ok(_) => panic!("two calls in flight on one input slot"),
    }
    assert_eq!(first.wait().unwrap(), 4);
    let second = executor
        .submit(0, sleep, &second_in, 4, &second_out)
        .unwrap();
    assert_eq!(second.wait().unwrap(), 4);
}

/// A call that outlives its deadline fails with a timeout; its input slot is free again once
/// the late result is in, and the executor serves the next calls. Dropping an invocation
/// unanswered returns at once.
#[test]
fn calls_past_their_deadline_time_out() {
    let _serial = serial();
    let dir = TempDir::new("deadline");
    let manager = local_manager(&dir);
    let code = std::fs::read(native_library()).unwrap();
    let spec = AllocationSpec {
        input_buf_count: 2,
        max_payload: 64,
        call_timeout: Duration::from_millis(300),
        ..AllocationSpec::default()
    };
    let executor = allocate(&manager, &code, &spec).unwrap();
    let sleep = executor.function("sleep").unwrap();
    let call = |millis: u32| {
        let input = executor.input_buffer(4).unwrap();
        input.write(&millis.to_le_bytes()).unwrap();
        let output = executor.output_buffer(4).unwrap();
        (input, output)
    };
    let (slow_in, slow_out) = call(1000);
    match executor.execute(sleep, &slow_in, 4, &slow_out) {
        Err(Error::Timeout(why)) => assert!(why.contains("did not answer within"), "{why}"),
        other => panic!("expected a timeout, got {other:?}"),
    }
    // The executor thread finishes the slow call first; then both slots serve again.
    for _ in 0..3 {
        let (input, output) = call(0);
        let len = executor
            .execute_on_within(0, sleep, &input, 4, &output, Duration::from_secs(5))
            .unwrap();
        assert_eq!(len, 4);
    }
    let (input, output) = call(500);
    let pending = executor.submit(0, sleep, &input, 4, &output).unwrap();
    let started = Instant::now();
    drop(pending);
    assert!(
        started.elapsed() < Duration::from_millis(100),
        "dropping an unanswered invocation waited {:?}",
        started.elapsed()
    );
    // The next call waits for the dropped one to finish on the executor, then is served.
    let (input, output) = call(0);
    let len = executor
        .execute_on_within(0, sleep, &input, 4, &output, Duration::from_secs(5))
        .unwrap();
    assert_eq!(len, 4);
}

/// A blocking call that sleeps on the completion channel instead of polling: right result,
/// and the calling thread spends almost no CPU time while the function runs.
#[test]
fn a_sleeping_call_spends_no_core() {
    let _serial = serial();
    let dir = TempDir::new("sleeping");
    let manager = local_manager(&dir);
    let code = std::fs::read(native_library()).unwrap();
    let spec = AllocationSpec {
        max_payload: 64,
        wait: rfaas::Wait::Sleep,
        ..AllocationSpec::default()
    };
    let executor = allocate(&manager, &code, &spec).unwrap();
    let sleep = executor.function("sleep").unwrap();
    let input = executor.input_buffer(4).unwrap();
    input.write(&300u32.to_le_bytes()).unwrap();
    let output = executor.output_buffer(4).unwrap();
    let (cpu_before, started) = (thread_cpu_time(), Instant::now());
    assert_eq!(executor.execute(sleep, &input, 4, &output).unwrap(), 4);
    let (cpu, wall) = (thread_cpu_time() - cpu_before, started.elapsed());
    assert!(wall >= Duration::from_millis(300), "{wall:?}");
    assert!(
        cpu < Duration::from_millis(100),
        "the sleeping call spent {cpu:?} of CPU in {wall:?}"
    );
    echo_once(&executor, 6, 32).unwrap();
}

/// CPU time of the calling thread so far (from the scheduler's statistics).
fn thread_cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap();
    let ns: u64 = stat.split_whitespace().next().unwrap().parse().unwrap();
    Duration::from_nanos(ns)
}

/// A function name the library does not have: one clear error naming the available ones.
#[test]
fn unknown_function_name_is_a_clear_error() {
    let _serial = serial();
    let dir = TempDir::new("unknown");
    let mut manager = local_manager(&dir);
    let client = client_configs(&dir, &manager, 1, -1, 10);
    let out = run(
        "warm_benchmarker",
        client.args(&native_library(), &["--name", "nosuch", "-s", "1"]),
    );
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.contains("nosuch")
            && last.contains("available: crash, empty, oversize, pattern, sleep"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(manager.is_running());
}

/// A payload larger than the allocation's: refused at the client before anything is sent;
/// a function that returns more than its output buffer: a defined error code from the
/// executor. The executor serves the next call either way.
#[test]
fn oversized_payload_and_oversized_result() {
    let _serial = serial();
    let dir = TempDir::new("oversize");
    let manager = local_manager(&dir);
    let code = std::fs::read(native_library()).unwrap();
    let spec = AllocationSpec {
        max_payload: 64,
        ..AllocationSpec::default()
    };
    let executor = allocate(&manager, &code, &spec).unwrap();
    let empty = executor.function("empty").unwrap();
    let (input, output) = (
        executor.input_buffer(128).unwrap(),
        executor.output_buffer(128).unwrap(),
    );
    match executor.execute(empty, &input, 128, &output) {
        Err(Error::InvalidArgument(msg)) => assert!(
            msg.contains("exceeds the allocation's max payload of 64"),
            "{msg}"
        ),
        other => panic!("expected a payload error, got {other:?}"),
    }
    let oversize = executor.function("oversize").unwrap();
    match executor.execute(oversize, &input, 8, &output) {
        Err(Error::Invocation(ReturnCode::OutputTooLarge)) => {}
        other => panic!("expected OutputTooLarge, got {other:?}"),
    }
    echo_once(&executor, 9, 64).unwrap();
}

/// A native function that crashes takes its executor down: the client gets an error that
/// says so (never a hang), and the manager serves the next client.
#[test]
fn crashing_function_is_an_error_and_the_manager_keeps_serving() {
    let _serial = serial();
    let dir = TempDir::new("crash");
    let mut manager = local_manager(&dir);
    let code = std::fs::read(native_library()).unwrap();
    let executor = allocate(&manager, &code, &AllocationSpec::default()).unwrap();
    let crash = executor.function("crash").unwrap();
    let (input, output) = (
        executor.input_buffer(16).unwrap(),
        executor.output_buffer(16).unwrap(),
    );
    match executor.execute(crash, &input, 16, &output) {
        Err(Error::ExecutorLost(why)) => assert!(why.contains("was killed by signal"), "{why}"),
        other => panic!("expected the executor to be lost, got {other:?}"),
    }
    assert!(matches!(
        executor.execute(crash, &input, 16, &output),
        Err(Error::ExecutorLost(_))
    ));
    drop(executor);
    assert!(
        manager.wait_for_log("was killed by signal", Duration::from_secs(5)),
        "{}",
        manager.log()
    );
    let next = allocate(&manager, &code, &AllocationSpec::default()).unwrap();
    echo_once(&next, 3, 32).unwrap();
    assert!(manager.is_running());
}

/// The manager keeps one executor started ahead: the next allocation runs on it and a new
/// spare follows; a spare that died before it was needed is replaced by a process started on
/// the spot; `--no-spare-executor` keeps none.
#[test]
fn allocations_run_on_the_spare_executor_started_ahead() {
    let _serial = serial();
    let dir = TempDir::new("spare");
    let manager = local_manager(&dir);
    let code = std::fs::read(native_library()).unwrap();
    let first = wait_for_spare(&manager, None);
    let executor = allocate(&manager, &code, &AllocationSpec::default()).unwrap();
    echo_once(&executor, 3, 32).unwrap();
    assert!(
        manager.log().contains(&format!("executor pid {first}")),
        "{}",
        manager.log()
    );
    let second = wait_for_spare(&manager, Some(first));
    drop(executor);

    let pid = nix::unistd::Pid::from_raw(second as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::SIGKILL).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while process_state(second) != Some('Z') {
        assert!(Instant::now() < deadline, "the spare did not die");
        std::thread::sleep(Duration::from_millis(10));
    }
    let next = allocate(&manager, &code, &AllocationSpec::default()).unwrap();
    echo_once(&next, 5, 64).unwrap();
    // The manager finds the spare dead when it looks (try_wait), or, while the dead spare's
    // other threads are still exiting (its main thread already shows Z; seen in the SoftRoCE
    // guest), when its pipe is broken. Either way a process started on the spot serves.
    let log = manager.log();
    assert!(
        log.contains("the spare executor was killed by signal 9 before it was needed")
            || log.contains("the spare executor could not take allocation 2 (writing to its pipe"),
        "{log}"
    );
    assert!(!log.contains(&format!("executor pid {second}")), "{log}");
    drop(next);

    let dir = TempDir::new("no-spare");
    let manager = local_manager_with(&dir, &["--no-spare-executor"]);
    let executor = allocate(&manager, &code, &AllocationSpec::default()).unwrap();
    echo_once(&executor, 7, 16).unwrap();
    assert!(spares(&manager).is_empty(), "{:?}", spares(&manager));
}

/// The manager's executors started as spares (`executor --spare` children), waiting or
/// serving the allocation they took.
fn spares(manager: &Manager) -> Vec<u32> {
    let ppid = manager.daemon.pid().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| {
            let dir = e.ok()?.path();
            let pid: u32 = dir.file_name()?.to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
            let (_, rest) = stat.split_once(") ")?;
            let cmdline = std::fs::read(dir.join("cmdline")).ok()?;
            (rest.split_whitespace().nth(1) == Some(ppid.as_str())
                && cmdline.split(|b| *b == 0).any(|arg| arg == b"--spare"))
            .then_some(pid)
        })
        .collect()
}

/// Waits until the manager has one spare other than `not` (a spare that took an allocation
/// keeps its command line), and returns its pid.
fn wait_for_spare(manager: &Manager, not: Option<u32>) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now: Vec<u32> = spares(manager)
            .into_iter()
            .filter(|pid| Some(*pid) != not)
            .collect();
        if let [pid] = now.as_slice() {
            return *pid;
        }
        assert!(
            Instant::now() < deadline,
            "spares: {now:?}\n{}",
            manager.log()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The state letter of process `pid` (R, S, Z, …), if it exists.
fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.split_once(") ")?.1.chars().next()
}

/// A client killed in the middle of its lease: its executor notices and exits, the manager
/// reaps it and serves the next client.
#[test]
fn client_that_disconnects_mid_lease() {
    let _serial = serial();
    let dir = TempDir::new("disconnect");
    let manager = local_manager(&dir);
    let client = client_configs(&dir, &manager, 1, -1, 100_000_000);
    let args = client.args(&native_library(), &["--name", "empty", "-s", "8"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut benchmark = Daemon::start("warm_benchmarker", &args);
    // Killed once it is measuring, so its executor is serving: mid-lease.
    assert!(
        benchmark.wait_for_log("Warmups completed", Duration::from_secs(20)),
        "{}\nmanager: {}",
        benchmark.log(),
        manager.log()
    );
    benchmark.kill();
    assert!(
        manager.wait_for_log("Executor of allocation 1 finished", Duration::from_secs(10)),
        "{}",
        manager.log()
    );
    let code = std::fs::read(native_library()).unwrap();
    let next = allocate(&manager, &code, &AllocationSpec::default())
        .unwrap_or_else(|e| panic!("{e}; manager log:\n{}", manager.log()));
    echo_once(&next, 5, 8).unwrap();
}

/// Bad input to the binaries: one clear line naming the problem, a non-zero exit, no panic.
#[test]
fn bad_input_is_one_clear_line() {
    let _serial = serial();
    let dir = TempDir::new("bad-input");
    let devices = test_devices(&dir);
    let broken = dir.path("broken.json");
    std::fs::write(&broken, "{\"config\": {").unwrap();
    let mut unknown_device = shipped_config("executor_manager.json");
    unknown_device["config"]["rdma_device"] = "mlx5_0".into();
    let unknown_device = dir.write_json("unknown_device.json", &unknown_device);
    let verbs = dir.write_json(
        "verbs_devices.json",
        &serde_json::json!({"devices": [{"name": "lo", "ip_address": "127.0.0.1", "port": 0,
            "max_inline_data": 0, "default_receive_buffer_size": 32, "provider": "verbs"}]}),
    );
    let shipped = repo().join("config");
    let bench = shipped.join("benchmark.json");
    let executors = shipped.join("executors_database.json");
    let no_manager = dir.write_json(
        "no_manager.json",
        &serde_json::json!({"executors": [{"node": "n", "address": device_ip(), "port": 1, "cores": 1, "memory": 512}]}),
    );
    let has_devices = format!("it has: {}", device_name());
    let unknown_device_needles = ["\"mlx5_0\"", has_devices.as_str()];
    let unreachable = format!("{}:1", device_ip());
    let unreachable_needles = ["cannot reach the executor manager", unreachable.as_str()];
    let library = native_library();
    // The binaries are built with the same features as this test.
    let no_verbs: &[&str] = if cfg!(feature = "verbs") {
        &["no RDMA device \"lo\"", "use the tcp provider"]
    } else {
        &["provider verbs is not compiled into this build"]
    };
    let cases: Vec<(&str, Vec<&str>, &[&str])> = vec![
        (
            "executor_manager",
            vec![
                "-c",
                arg(&broken),
                "--device-database",
                arg(&devices),
                "--skip-resource-manager",
            ],
            &["broken.json", "EOF"],
        ),
        (
            "executor_manager",
            vec![
                "-c",
                arg(&unknown_device),
                "--device-database",
                arg(&devices),
                "--skip-resource-manager",
            ],
            &unknown_device_needles,
        ),
        (
            "executor_manager",
            vec![
                "-c",
                arg(&unknown_device),
                "--device-database",
                "/nonexistent.json",
                "--skip-resource-manager",
            ],
            &["/nonexistent.json"],
        ),
        (
            "resource_manager",
            vec!["-c", arg(&broken), "--device-database", arg(&devices)],
            &["broken.json"],
        ),
        (
            "warm_benchmarker",
            vec![
                "--config",
                arg(&bench),
                "--device-database",
                arg(&devices),
                "--name",
                "empty",
                "--functions",
                "/etc/hostname",
                "--executors-database",
                arg(&executors),
                "-s",
                "1",
            ],
            &["neither an ELF shared library nor a WebAssembly module"],
        ),
        (
            "warm_benchmarker",
            vec![
                "--config",
                arg(&bench),
                "--device-database",
                arg(&devices),
                "--name",
                "empty",
                "--functions",
                arg(&library),
                "--executors-database",
                arg(&no_manager),
                "-s",
                "1",
            ],
            &unreachable_needles,
        ),
        (
            "rdma_pingpong",
            vec!["--device-database", arg(&verbs), "--name", "lo", "server"],
            no_verbs,
        ),
    ];
    for (program, args, needles) in cases {
        let out = run(program, &args);
        let stderr = text(&out.stderr);
        assert!(!out.status.success(), "{program} {args:?} succeeded");
        assert!(!stderr.contains("panicked"), "{program}: {stderr}");
        let last = stderr.lines().last().unwrap_or_default();
        assert!(
            last.starts_with(&format!("{program}: ")),
            "{program}: {stderr}"
        );
        for needle in needles {
            assert!(
                last.contains(needle),
                "{program}: {needle:?} not in {last:?}"
            );
        }
    }
}
