//! The same deployment with WebAssembly functions, and what the sandbox turns into errors.

use std::process::Command;

use rfaas::{AllocationSpec, Error, ReturnCode};

use crate::harness::*;

/// warm_benchmarker with functions.wasm, as with libfunctions.so: 1 B, 4 KiB, 1 MiB, bytes equal.
#[test]
fn warm_benchmark_with_wasm_functions() {
    let _serial = serial();
    let dir = TempDir::new("wasm-bench");
    let manager = local_manager(&dir);
    let client = client_configs(&dir, &manager, 1, -1, 100);
    for size in [1usize, 4096, 1 << 20] {
        let input: Vec<u8> = (0..size).map(|i| (i * 131 + 17) as u8).collect();
        std::fs::write(dir.path("in.bin"), &input).unwrap();
        let size_arg = size.to_string();
        let out = run(
            "warm_benchmarker",
            client.args(
                &wasm_library(),
                &[
                    "--name",
                    "empty",
                    "-s",
                    &size_arg,
                    "--input-file",
                    arg(&dir.path("in.bin")),
                    "--output-file",
                    arg(&dir.path("out.bin")),
                ],
            ),
        );
        assert!(
            out.status.success(),
            "-s {size}: {}\n{}",
            text(&out.stderr),
            manager.log()
        );
        assert!(
            text(&out.stderr).contains("Executed 100 repetitions"),
            "{}",
            text(&out.stderr)
        );
        assert!(
            text(&out.stderr).contains("1 wasm executor thread"),
            "{}",
            text(&out.stderr)
        );
        assert_eq!(
            std::fs::read(dir.path("out.bin")).unwrap(),
            input,
            "{size} B"
        );
    }
}

/// Traps, out-of-bounds accesses and an endless loop under a time limit come back as return
/// codes; after each, the same executor serves a correct call.
#[test]
fn traps_and_timeouts_are_return_codes() {
    let _serial = serial();
    let dir = TempDir::new("wasm-traps");
    let manager = local_manager(&dir);
    let code = std::fs::read(wasm_library()).unwrap();
    let spec = AllocationSpec {
        time_limit_ms: 100,
        max_payload: 64,
        ..AllocationSpec::default()
    };
    let executor = allocate(&manager, &code, &spec).unwrap();
    let (input, output) = (
        executor.input_buffer(64).unwrap(),
        executor.output_buffer(64).unwrap(),
    );
    input.write(&u32::MAX.to_le_bytes()).unwrap();
    for (name, expected) in [
        ("trap", ReturnCode::Trap),
        ("out_of_bounds", ReturnCode::Trap),
        ("spin", ReturnCode::Timeout),
    ] {
        let f = executor.function(name).unwrap();
        let started = std::time::Instant::now();
        match executor.execute(f, &input, 4, &output) {
            Err(Error::Invocation(code)) => assert_eq!(code, expected, "{name}"),
            other => panic!("{name}: expected {expected:?}, got {other:?}"),
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "{name} took {:?}",
            started.elapsed()
        );
        echo_once(&executor, 7, 48).unwrap();
    }
}

/// A minimal module exporting `f: (i32, i32, i32) -> i32` but no memory.
const NO_MEMORY: &[u8] = &[
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // magic, version
    0x01, 0x08, 0x01, 0x60, 0x03, 0x7f, 0x7f, 0x7f, 0x01, 0x7f, // type: (i32 i32 i32) -> i32
    0x03, 0x02, 0x01, 0x00, // function 0 has type 0
    0x07, 0x05, 0x01, 0x01, b'f', 0x00, 0x00, // export "f" = function 0
    0x0a, 0x06, 0x01, 0x04, 0x00, 0x41, 0x00, 0x0b, // body: i32.const 0
];

/// Wrong code is refused at allocation with a clear message, before anything runs.
#[test]
fn wrong_code_is_a_clear_error_at_allocation() {
    let _serial = serial();
    let dir = TempDir::new("wasm-wrong");
    let mut manager = local_manager(&dir);
    let native = std::fs::read(native_library()).unwrap();
    let wasm = std::fs::read(wasm_library()).unwrap();
    let as_wasm = AllocationSpec {
        sandbox: Some(rfaas::Kind::Wasm),
        ..AllocationSpec::default()
    };
    let err = allocate(&manager, &native, &as_wasm)
        .err()
        .expect("a native library sent as wasm")
        .to_string();
    assert!(
        err.contains("expected a wasm module") && err.contains("ELF"),
        "{err}"
    );
    let as_native = AllocationSpec {
        sandbox: Some(rfaas::Kind::Native),
        ..AllocationSpec::default()
    };
    let err = allocate(&manager, &wasm, &as_native)
        .err()
        .expect("a wasm module sent as native")
        .to_string();
    assert!(err.contains("expected an ELF shared library"), "{err}");
    let err = allocate(&manager, NO_MEMORY, &AllocationSpec::default())
        .err()
        .expect("no memory")
        .to_string();
    assert!(err.contains("memory"), "{err}");
    assert!(manager.is_running());
    let executor = allocate(&manager, &wasm, &AllocationSpec::default()).unwrap();
    echo_once(&executor, 3, 16).unwrap();
}

/// The main job's script runs end to end on a fresh layout (small sizes and repetitions).
#[test]
fn main_job_script_prints_the_comparison_table() {
    let _serial = serial();
    let dir = TempDir::new("main-job");
    let out = run_script(
        "warm_benchmark.sh",
        &dir,
        &["-s", "1,4096", "-r", "200", "-n", "2", "-w", "20"],
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}\n{stdout}", text(&out.stderr));
    for size in ["1", "4096"] {
        let row = stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(size))
            .unwrap_or_else(|| panic!("{stdout}"));
        let cols: Vec<f64> = row
            .split_whitespace()
            .skip(1)
            .map(|c| c.parse().unwrap())
            .collect();
        assert_eq!(cols.len(), 5, "{row}");
        assert!(cols[0] > 0.0 && cols[1] > 0.0 && cols[3] > 0.0, "{row}");
    }
    let floored = provider() != rdmalib::ProviderKind::Verbs;
    let mut csvs = vec!["raw_1.csv", "native_1.csv", "wasm_4096.csv"];
    if floored {
        csvs.push("floor_4096.csv");
        let title = stdout
            .lines()
            .position(|l| l.starts_with("The floor under"))
            .unwrap_or_else(|| panic!("no floor table:\n{stdout}"));
        let row: Vec<f64> = stdout
            .lines()
            .nth(title + 2)
            .unwrap()
            .split_whitespace()
            .map(|c| c.parse().unwrap())
            .collect();
        assert_eq!(row.len(), 5, "{stdout}");
        assert_eq!(row[0], 1.0, "{stdout}");
        assert!(row[1] > 0.0 && row[2] > 0.0, "{stdout}");
        assert!((row[4] - row[2] / row[1]).abs() < 0.02, "{stdout}");
    }
    for csv in csvs {
        let rows = std::fs::read_to_string(dir.path("results").join(csv))
            .unwrap()
            .lines()
            .count();
        assert_eq!(rows, 201, "{csv}");
    }
    let mut labels = vec!["raw", "native", "wasm", "4 KiB"];
    if floored {
        labels.push("floor");
    }
    assert_figure(&dir.path("results").join("latency.svg"), &labels);
}

/// The cold-start script runs the full deployment and prints every phase for every kind.
#[test]
fn cold_benchmark_script_prints_every_phase() {
    let _serial = serial();
    let dir = TempDir::new("cold-job");
    let out = run_script("cold_benchmark.sh", &dir, &["-r", "2"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}\n{stdout}", text(&out.stderr));
    assert_eq!(stdout.matches("== ").count(), 3, "{stdout}");
    for phase in [
        "lease",
        "connect",
        "submit",
        "spawn_connect",
        "initialize",
        "execute",
        "total",
    ] {
        let lines: Vec<&str> = stdout
            .lines()
            .filter(|l| l.split_whitespace().next() == Some(phase))
            .collect();
        assert_eq!(lines.len(), 3, "{phase}: {stdout}");
        for line in lines {
            let ms: f64 = line.split_whitespace().nth(2).unwrap().parse().unwrap();
            assert!(ms > 0.0, "{line}");
        }
    }
    assert!(stdout.contains(r#"Leases: {"closed":5}"#), "{stdout}");
    assert_figure(
        &dir.path("results").join("cold_phases.svg"),
        &[
            "native (n=2)",
            "wasm, empty cache (n=1)",
            "wasm, warm cache (n=2)",
            "spawn_connect",
        ],
    );
}

/// The script drew its figure: an SVG file with these texts among its labels.
fn assert_figure(path: &std::path::Path, labels: &[&str]) {
    let svg = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("the figure {}: {e}", path.display()));
    assert!(svg.starts_with("<svg"), "{}", path.display());
    for label in labels {
        assert!(
            svg.lines().any(|l| l.trim() == *label),
            "{} has no label {label:?}",
            path.display()
        );
    }
}

/// A build layout (bin/, benchmarks/, examples/) made of this build's files, as tools/build.sh
/// lays them out.
/// Runs `tools/SCRIPT` on a fresh layout in `dir`, with results in `dir/results`, on the
/// device and provider under test, with `extra` arguments.
fn run_script(script: &str, dir: &TempDir, extra: &[&str]) -> std::process::Output {
    Command::new(repo().join("tools").join(script))
        .args(["--no-build", "-b", arg(&layout(dir))])
        .args(["-o", arg(&dir.path("results"))])
        .args(["-d", &device_name(), "-p", provider().name()])
        .args(extra)
        .output()
        .unwrap()
}

fn layout(dir: &TempDir) -> std::path::PathBuf {
    let root = dir.path("build");
    for (sub, names) in [
        (
            "bin",
            &["executor_manager", "executor", "resource_manager"][..],
        ),
        (
            "benchmarks",
            &[
                "warm_benchmarker",
                "cold_benchmarker",
                "rdma_pingpong",
                "plain_pingpong",
                "rfaas_figure",
            ][..],
        ),
        ("examples", &[][..]),
    ] {
        std::fs::create_dir_all(root.join(sub)).unwrap();
        for name in names {
            std::os::unix::fs::symlink(bin(name), root.join(sub).join(name)).unwrap();
        }
    }
    std::os::unix::fs::symlink(native_library(), root.join("examples/libfunctions.so")).unwrap();
    std::os::unix::fs::symlink(wasm_library(), root.join("examples/functions.wasm")).unwrap();
    root
}
