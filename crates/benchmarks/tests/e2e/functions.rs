//! Functions as people write them: Rust with `std` for wasm32-wasip1 and natively, C with
//! clang + wasi-libc and natively, each deployed and its results checked; what they print,
//! and the allocation's memory, enforced on both kinds.

use std::path::Path;
use std::time::Duration;

use benchmarks::workloads::{WORKLOADS, input, matches, reference};
use rfaas::{AllocationSpec, Error, Executor, ReturnCode};

use crate::harness::*;

const MAX_PAYLOAD: u32 = 1 << 20;

fn allocate_library(manager: &Manager, library: &Path, memory_mb: u32) -> Executor {
    let code = std::fs::read(library).unwrap();
    let spec = AllocationSpec {
        max_payload: MAX_PAYLOAD,
        memory_mb,
        // A debug executor in the emulated SoftRoCE guest takes more than the default 30 s to
        // compile a module with std the first time.
        timeout: Duration::from_secs(180),
        ..AllocationSpec::default()
    };
    allocate(manager, &code, &spec)
        .unwrap_or_else(|e| panic!("allocating {}: {e:#}\n{}", library.display(), manager.log()))
}

/// Calls `name` on `input`; the result bytes.
fn call(executor: &Executor, name: &str, input: &[u8]) -> rfaas::Result<Vec<u8>> {
    let f = executor.function(name)?;
    let (inbuf, outbuf) = (
        executor.input_buffer(input.len().max(1))?,
        executor.output_buffer(MAX_PAYLOAD as usize)?,
    );
    inbuf.write(input)?;
    let len = executor.execute(f, &inbuf, input.len(), &outbuf)?;
    outbuf.to_vec(len as usize)
}

fn mib(n: u32) -> [u8; 4] {
    n.to_le_bytes()
}

/// The Rust workloads, built with `std` natively and for wasm32-wasip1, compute what the
/// kernels compute here; `println!` reaches the executor's log, tagged.
#[test]
fn rust_workloads_with_std_run_natively_and_as_wasi_modules() {
    let _serial = serial();
    let dir = TempDir::new("workloads");
    let manager = local_manager(&dir);
    for library in ["libworkloads.so", "workloads.wasm"] {
        let executor = allocate_library(&manager, &example(library), 256);
        for workload in WORKLOADS {
            for scale in [0, 1] {
                let (input, what) = input(workload, scale);
                let got = call(&executor, workload, &input)
                    .unwrap_or_else(|e| panic!("{library} {workload} {what}: {e:#}"));
                assert!(
                    matches(workload, &got, &reference(workload, &input)),
                    "{library} {workload} {what}: the result differs from the reference"
                );
            }
        }
        let greeting = call(&executor, "greet", "rFaaS  users".as_bytes()).unwrap();
        assert_eq!(text(&greeting), "Hello, rFaaS users! (2 words)");
        match call(&executor, "matmul", b"\x02\0\0\0short") {
            Err(Error::Function {
                message: Some(m), ..
            }) => assert!(m.contains("n = 2 needs 36 input bytes, got 9"), "{m}"),
            other => panic!("{library}: expected the function's error, got {other:?}"),
        }
        call(&executor, "sha256", b"still serving").unwrap();
    }
    // The wasm module's stdout, tagged with its allocation, thread and function.
    assert!(
        manager.wait_for_log(
            "thread 0 `greet` stdout: Hello, rFaaS users! (2 words)",
            Duration::from_secs(5)
        ),
        "{}",
        manager.log()
    );
}

/// 64-bit FNV-1a, as `checksum` in functions-c computes it.
fn fnv1a(bytes: &[u8]) -> [u8; 8] {
    let hash = bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    hash.to_le_bytes()
}

/// The C functions, one source built with cc as a native library and with clang + wasi-libc
/// as a WASI reactor, give the same results; `printf` in wasm reaches the log.
#[test]
fn c_functions_run_natively_and_as_wasi_modules() {
    let _serial = serial();
    let dir = TempDir::new("c-functions");
    let manager = local_manager(&dir);
    let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7 + i / 13) as u8).collect();
    for library in ["libfunctions_c.so", "functions_c.wasm"] {
        let executor = allocate_library(&manager, &example(library), 256);
        assert_eq!(
            call(&executor, "upper", b"Hello, rFaaS 1!").unwrap(),
            b"HELLO, RFAAS 1!",
            "{library}"
        );
        assert_eq!(
            call(&executor, "checksum", &data).unwrap(),
            fnv1a(&data),
            "{library}"
        );
        assert_eq!(call(&executor, "allocate", &mib(8)).unwrap(), b"ok");
        assert_eq!(call(&executor, "hello", b"12345").unwrap(), b"");
        match call(&executor, "allocate", b"x") {
            Err(Error::Function {
                message: Some(m), ..
            }) => assert_eq!(m, "expected a uint32 count of MiB", "{library}"),
            other => panic!("{library}: expected the function's error, got {other:?}"),
        }
    }
    assert!(
        manager.wait_for_log(
            "`hello` stdout: hello from C: 5 bytes in",
            Duration::from_secs(5)
        ),
        "{}",
        manager.log()
    );
}

/// Going past the allocation's memory is the function's error or an out-of-memory code,
/// never a silent kill, and the executor (wasm) or the manager (native) serves on.
#[test]
fn the_allocation_memory_is_enforced_on_both_kinds() {
    let _serial = serial();
    let dir = TempDir::new("memory");
    let manager = local_manager(&dir);
    for library in ["workloads.wasm", "libworkloads.so"] {
        let executor = allocate_library(&manager, &example(library), 32);
        assert_eq!(call(&executor, "reserve", &mib(8)).unwrap(), b"");
        match call(&executor, "reserve", &mib(64)) {
            Err(Error::Function {
                message: Some(m), ..
            }) => assert!(m.starts_with("cannot allocate 64 MiB"), "{library}: {m}"),
            other => panic!("{library}: expected the function's error, got {other:?}"),
        }
        assert_eq!(
            call(&executor, "hog", &mib(8)).unwrap(),
            2048u64.to_le_bytes(),
            "{library}"
        );
    }

    // wasm: an infallible allocation past the limit traps after the refused growth.
    let wasm = allocate_library(&manager, &example("workloads.wasm"), 32);
    match call(&wasm, "hog", &mib(64)) {
        Err(Error::Invocation(ReturnCode::OutOfMemory)) => {}
        other => panic!("wasm hog: expected OutOfMemory, got {other:?}"),
    }
    assert_eq!(call(&wasm, "hog", &mib(8)).unwrap(), 2048u64.to_le_bytes());
    drop(wasm);

    // native: malloc returns null past the limit; the abort that follows is reported.
    let native = allocate_library(&manager, &example("libworkloads.so"), 32);
    match call(&native, "hog", &mib(64)) {
        Err(Error::ExecutorLost(why)) => {
            assert!(why.contains("ran out of memory"), "{why}")
        }
        other => panic!("native hog: expected the executor to be lost, got {other:?}"),
    }
    drop(native);

    // C: malloc's null is the function's to handle, in both kinds.
    for library in ["libfunctions_c.so", "functions_c.wasm"] {
        let executor = allocate_library(&manager, &example(library), 32);
        match call(&executor, "allocate", &mib(64)) {
            Err(Error::Function {
                message: Some(m), ..
            }) => assert_eq!(m, "cannot allocate 64 MiB", "{library}"),
            other => panic!("{library}: expected the function's error, got {other:?}"),
        }
        assert_eq!(call(&executor, "allocate", &mib(8)).unwrap(), b"ok");
    }
}

/// A result larger than the client's output buffer is refused as too large, not written past
/// the buffer's end.
#[test]
fn a_result_larger_than_the_output_buffer_is_output_too_large() {
    let _serial = serial();
    let dir = TempDir::new("small-output");
    let manager = local_manager(&dir);
    let (input, _) = input("matmul", 0);
    for library in ["libworkloads.so", "workloads.wasm"] {
        let executor = allocate_library(&manager, &example(library), 256);
        let f = executor.function("matmul").unwrap();
        let inbuf = executor.input_buffer(input.len()).unwrap();
        inbuf.write(&input).unwrap();
        // A 16 x 16 product is 1024 bytes.
        let small = executor.output_buffer(512).unwrap();
        match executor.execute(f, &inbuf, input.len(), &small) {
            Err(Error::Invocation(ReturnCode::OutputTooLarge)) => {}
            other => panic!("{library}: expected OutputTooLarge, got {other:?}"),
        }
        let large = executor.output_buffer(1024).unwrap();
        assert_eq!(
            executor.execute(f, &inbuf, input.len(), &large).unwrap(),
            1024
        );
    }
}
