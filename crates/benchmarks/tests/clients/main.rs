//! The clients beyond Rust, end to end: librfaas's C benchmark and ABI checks, the C++ example
//! built with CMake's `find_package`, and the Python package, each against a real executor
//! manager with native and wasm functions.
//!
//! They use an installed prefix as C, C++ and Python users would: `tools/build.sh` lays it out
//! (`build` by default; `tools/test.sh` makes one with `tools/build.sh --debug` and names it in
//! `RFAAS_CLIENTS_PREFIX`). The Python parts use the venv of `tools/setup.sh clients`
//! (`RFAAS_VENV`, default `build/venv`). The device under test is the e2e suite's (tcp on `lo`
//! unless `RFAAS_E2E_PROVIDER`, `RDMA_DEVICE`, `RDMA_IP` say otherwise).

#[allow(
    dead_code,
    reason = "shared with the e2e suite, which uses the rest of it"
)]
#[path = "../e2e/harness.rs"]
mod harness;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use harness::*;

/// The installed prefix under test.
fn prefix() -> PathBuf {
    let prefix = std::env::var_os("RFAAS_CLIENTS_PREFIX")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("build"));
    assert!(
        prefix.join("lib/librfaas.so").is_file(),
        "{} has no lib/librfaas.so: run tools/build.sh (tools/test.sh makes its own prefix)",
        prefix.display()
    );
    prefix
}

fn venv_python() -> PathBuf {
    let venv = std::env::var_os("RFAAS_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("build/venv"));
    let python = venv.join("bin/python");
    assert!(
        python.is_file(),
        "{} is missing: tools/setup.sh clients makes it",
        python.display()
    );
    python
}

fn libraries() -> [PathBuf; 2] {
    [native_library(), wasm_library()]
}

/// Runs `cmd` to completion. Without the `LD_LIBRARY_PATH` cargo gives tests (it names
/// `target/debug/deps`, where a `librfaas.so` of another build may lie), so a client finds the
/// prefix's library through its own run path.
fn command_output(cmd: &mut Command) -> Output {
    cmd.env_remove("LD_LIBRARY_PATH")
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?} does not start: {e}"))
}

fn assert_success(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// `(repetitions, avg, median)` of warm_benchmarker's summary line.
fn summary(stderr: &str) -> Option<(u64, f64, f64)> {
    let line = stderr.lines().find(|l| l.contains(" repetitions, avg "))?;
    let rest = line.split("Executed ").nth(1)?;
    let n = rest.split_whitespace().next()?.parse().ok()?;
    let avg = rest.split("avg ").nth(1)?.split_whitespace().next()?;
    let median = rest.split("median ").nth(1)?.trim();
    Some((n, avg.parse().ok()?, median.parse().ok()?))
}

/// warm_benchmarker_c, as warm_benchmarker: same flags, the result bytes equal to the input,
/// the summary and Data lines, every sample in the CSV; a wrong function name is one error line.
#[test]
fn c_warm_benchmarker_runs_native_and_wasm_functions() {
    let _serial = serial();
    let bench = prefix().join("examples/c/warm_benchmarker_c");
    let dir = TempDir::new("clients-c");
    let manager = local_manager(&dir);
    let client = client_configs(&dir, &manager, 1, 0, 100);
    for library in libraries() {
        for size in [1usize, 4096] {
            let input: Vec<u8> = (0..size).map(|i| (i * 7 + 5) as u8).collect();
            let (input_file, output_file, stats) = (
                dir.path("in.bin"),
                dir.path("out.bin"),
                dir.path("stats.csv"),
            );
            std::fs::write(&input_file, &input).unwrap();
            let size_arg = size.to_string();
            let out = command_output(Command::new(&bench).args(client.args(
                &library,
                &[
                    "--name",
                    "empty",
                    "-s",
                    &size_arg,
                    "--input-file",
                    arg(&input_file),
                    "--output-file",
                    arg(&output_file),
                    "--output-stats",
                    arg(&stats),
                ],
            )));
            let what = format!("warm_benchmarker_c {} -s {size}", library.display());
            assert_success(&what, &out);
            let (n, avg, median) = summary(&text(&out.stderr))
                .unwrap_or_else(|| panic!("{what}: no summary in {}", text(&out.stderr)));
            assert_eq!(n, 100, "{what}");
            assert!(avg > 0.0 && median > 0.0, "{what}");
            let shown: Vec<String> = input.iter().take(16).map(u8::to_string).collect();
            let dots = if size > 16 { " ..." } else { "" };
            assert_eq!(
                text(&out.stdout).trim_end(),
                format!("Data: {}{dots}", shown.join(" ")),
                "{what}"
            );
            assert_eq!(std::fs::read(&output_file).unwrap(), input, "{what}");
            let csv = std::fs::read_to_string(&stats).unwrap();
            assert_eq!(csv.lines().next(), Some("repetition,size,round_trip_ns"));
            assert_eq!(csv.lines().count(), 101, "{what}");
        }
    }
    let out = command_output(
        Command::new(&bench).args(client.args(&native_library(), &["--name", "nope", "-s", "1"])),
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("warm_benchmarker_c: no function `nope`"),
        "{stderr}"
    );
}

/// pkg-config gives the prefix's flags; a C program linked statically through rfaas-static.pc
/// checks every call's status and message, NULLs and out-of-range arguments, blocking and
/// asynchronous calls.
#[test]
fn c_abi_from_a_statically_linked_program() {
    let _serial = serial();
    let prefix = prefix();
    let pkgconfig = prefix.join("lib/pkgconfig");
    let flags = |package: &str| {
        let out = command_output(
            Command::new("pkg-config")
                .env("PKG_CONFIG_PATH", &pkgconfig)
                .args(["--cflags", "--libs", package]),
        );
        assert_success("pkg-config", &out);
        text(&out.stdout)
    };
    let shared = flags("rfaas");
    let include = pkgconfig.join("../../include");
    assert!(
        shared.contains(&format!("-I{}", include.display())) && shared.contains("-lrfaas"),
        "{shared}"
    );
    let dir = TempDir::new("clients-abi");
    let program = dir.path("abi");
    let source = repo().join("crates/capi/tests/abi.c");
    let out = command_output(
        Command::new("cc")
            .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-o"])
            .arg(&program)
            .arg(&source)
            .args(flags("rfaas-static").split_whitespace()),
    );
    assert_success("cc abi.c", &out);
    let needed = command_output(Command::new("readelf").arg("-d").arg(&program));
    assert!(
        !text(&needed.stdout).contains("librfaas.so"),
        "linked statically, yet it needs librfaas.so"
    );
    let manager = local_manager(&dir);
    let client = client_configs(&dir, &manager, 1, 0, 1);
    for library in libraries() {
        let out = command_output(
            Command::new(&program)
                .arg(&client.devices)
                .arg(client.executors.as_ref().unwrap())
                .arg(&library),
        );
        assert_success(&format!("abi {}", library.display()), &out);
        assert!(
            text(&out.stdout).trim_end().ends_with(" passed, 0 failed"),
            "{}",
            text(&out.stdout)
        );
    }
}

/// The C++ example built by CMake through `find_package(rfaas)` against the prefix: four
/// futures, a polled call and the errors, with native and wasm functions.
#[test]
fn cpp_async_example_builds_with_cmake_and_runs() {
    let _serial = serial();
    let prefix = prefix();
    let dir = TempDir::new("clients-cpp");
    let build = dir.path("cmake");
    let configure = command_output(
        Command::new("cmake")
            .arg("-S")
            .arg(repo().join("examples/cpp/async"))
            .arg("-B")
            .arg(&build)
            .arg(format!("-DCMAKE_PREFIX_PATH={}", prefix.display()))
            .arg(format!(
                "-DCMAKE_BUILD_RPATH={}",
                prefix.join("lib").display()
            )),
    );
    assert_success("cmake configure", &configure);
    assert_success(
        "cmake --build",
        &command_output(Command::new("cmake").arg("--build").arg(&build)),
    );
    let manager = local_manager(&dir);
    let client = client_configs(&dir, &manager, 1, 0, 1);
    for library in libraries() {
        let out = command_output(
            Command::new(build.join("async_calls"))
                .arg("--device-database")
                .arg(&client.devices)
                .arg("--executors-database")
                .arg(client.executors.as_ref().unwrap())
                .arg("--functions")
                .arg(&library)
                .args(["-s", "4096"]),
        );
        assert_success(&format!("async_calls {}", library.display()), &out);
        let stdout = text(&out.stdout);
        for i in 0..4 {
            assert!(
                stdout.contains(&format!("future {i}: 4096 bytes back, equal to the input")),
                "{stdout}"
            );
        }
        assert!(
            stdout.contains("polled: done after ") && stdout.contains("equal to the input"),
            "{stdout}"
        );
        assert!(
            stdout.contains("oversize: RFAAS_ERROR_INVOCATION (return code 3)"),
            "{stdout}"
        );
        assert!(
            stdout.contains("unknown function: RFAAS_ERROR_CODE: no function `no_such_function`"),
            "{stdout}"
        );
    }
}

/// Installs the prefix's wheel into `dir/site` (not into the venv, so the test uses this
/// prefix's build); returns the directory for PYTHONPATH.
fn install_wheel(dir: &TempDir) -> PathBuf {
    let wheels: Vec<PathBuf> = std::fs::read_dir(prefix().join("python"))
        .expect("the prefix has python/")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "whl"))
        .collect();
    assert_eq!(wheels.len(), 1, "one wheel in the prefix: {wheels:?}");
    let site = dir.path("site");
    let out = command_output(
        Command::new(venv_python())
            .args(["-m", "pip", "install", "--quiet", "--no-deps", "--target"])
            .arg(&site)
            .arg(&wheels[0]),
    );
    assert_success("pip install the wheel", &out);
    site
}

/// The package's own tests (buffers, futures, typed errors, the GIL, stubs) and the Python
/// warm benchmark, with native and wasm functions.
#[test]
fn python_package_and_warm_benchmark() {
    let _serial = serial();
    let dir = TempDir::new("clients-python");
    let site = install_wheel(&dir);
    let manager = local_manager(&dir);
    let client = client_configs(&dir, &manager, 1, 0, 100);
    let python = |script: &Path| {
        let mut cmd = Command::new(venv_python());
        cmd.arg(script).env("PYTHONPATH", &site);
        cmd
    };
    for library in libraries() {
        let out = command_output(
            python(&repo().join("crates/python/tests/test_rfaas.py"))
                .env("RFAAS_TEST_DEVICES", &client.devices)
                .env("RFAAS_TEST_EXECUTORS", client.executors.as_ref().unwrap())
                .env("RFAAS_TEST_FUNCTIONS", &library),
        );
        assert_success(&format!("test_rfaas.py {}", library.display()), &out);

        let out = command_output(
            python(&prefix().join("examples/python/warm_benchmark.py"))
                .args(client.args(&library, &["--name", "empty", "-s", "64"])),
        );
        let what = format!("warm_benchmark.py {}", library.display());
        assert_success(&what, &out);
        let (n, _, median) = summary(&text(&out.stderr))
            .unwrap_or_else(|| panic!("{what}: no summary in {}", text(&out.stderr)));
        assert!(n == 100 && median > 0.0, "{what}");
        assert_eq!(
            text(&out.stdout).trim_end(),
            format!("Data: {} ...", ["1"; 16].join(" ")),
            "{what}"
        );
    }
}
