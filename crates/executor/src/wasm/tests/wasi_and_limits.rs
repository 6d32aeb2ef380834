//! WASI imports, the executor's hooks and the allocation's memory, on hand-written modules.

use rfaas_protocol::invocation::ReturnCode;

use super::{LAYOUT, NO_LIMITS, TempDir, pd};
use crate::sandbox::Sandbox;
use crate::wasm::limits::Budget;
use crate::wasm::{Built, WasmOptions, WasmSandbox, build};

/// The page size of a wasm memory.
const PAGE: u32 = 64 << 10;

fn sandboxes(wat: &str, names: &[&str], threads: u16, options: WasmOptions) -> Vec<WasmSandbox> {
    let code = wat::parse_str(wat).expect("the test module parses");
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let (_ctx, pd) = pd();
    let dir = TempDir::new();
    let Built { sandboxes, .. } =
        build(&pd, &code, &names, LAYOUT, threads, options, Some(&dir.0)).expect("building");
    sandboxes
}

fn build_error(wat: &str, names: &[&str], options: WasmOptions) -> String {
    let code = wat::parse_str(wat).expect("the test module parses");
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let (_ctx, pd) = pd();
    let dir = TempDir::new();
    match build(&pd, &code, &names, LAYOUT, 1, options, Some(&dir.0)) {
        Ok(_) => panic!("the module was accepted"),
        Err(e) => format!("{e:#}"),
    }
}

/// Writes `input` into slot 0 and calls function `index` on it.
fn call(s: &mut WasmSandbox, index: usize, input: &[u8]) -> Result<u32, ReturnCode> {
    s.input()
        .write(LAYOUT.payload_offset(0), input)
        .expect("writing the input");
    s.invoke(index, 0, input.len() as u32)
}

fn pages(n: u32) -> [u8; 4] {
    n.to_le_bytes()
}

/// `grow` grows the memory by the little-endian page count in its input and returns what
/// `memory.grow` returned; `grow_or_trap` traps where `memory.grow` fails.
const GROWER: &str = r#"
(module
  (memory (export "memory") 1)
  (func (export "grow") (param $args i32) (param $size i32) (param $res i32) (result i32)
    (memory.grow (i32.load (local.get $args))))
  (func (export "grow_or_trap") (param $args i32) (param $size i32) (param $res i32) (result i32)
    (if (i32.eq (memory.grow (i32.load (local.get $args))) (i32.const -1))
      (then unreachable))
    (i32.const 0)))
"#;

#[test]
fn memory_grows_up_to_the_allocation_memory_over_all_threads() {
    // 1 MiB = 16 pages for the module memory of both threads: 1 page each to start with.
    let options = WasmOptions {
        memory_mb: 1,
        ..NO_LIMITS
    };
    let mut threads = sandboxes(GROWER, &["grow", "grow_or_trap"], 2, options);
    let budget = threads[0].shared.budget.clone();
    assert_eq!(budget.used(), 2 * PAGE as usize);
    let (first, second) = threads.split_at_mut(1);
    let (first, second) = (&mut first[0], &mut second[0]);
    // The module's own growth lands after the buffer pages: 1 + 3 input + 2 output pages.
    assert_eq!(call(first, 0, &pages(10)), Ok(6));
    assert_eq!(budget.used(), 12 * PAGE as usize);
    // 12 + 5 > 16: refused, and the module sees -1 as the wasm spec says.
    assert_eq!(call(second, 0, &pages(5)), Ok(u32::MAX));
    assert_eq!(budget.used(), 12 * PAGE as usize);
    assert_eq!(call(second, 0, &pages(4)), Ok(6));
    assert_eq!(budget.used(), 16 * PAGE as usize);
    // A trap after a refused growth is the allocation running out of memory; the new
    // instance gives back what the old one held.
    assert_eq!(call(first, 1, &pages(1)), Err(ReturnCode::OutOfMemory));
    assert_eq!(first.reinstantiations(), 1);
    assert_eq!(budget.used(), 6 * PAGE as usize);
    assert_eq!(call(first, 1, &pages(9)), Ok(0));
    assert_eq!(budget.used(), 15 * PAGE as usize);
    // A refusal the function handled does not make a later, unrelated trap out-of-memory
    // (growth past 4 GiB fails whatever the budget).
    assert_eq!(call(second, 0, &pages(2)), Ok(u32::MAX));
    assert_eq!(call(second, 1, &pages(0x10000)), Err(ReturnCode::Trap));
    drop(threads);
    assert_eq!(budget.used(), 0);
}

#[test]
fn without_a_limit_memory_grows_to_the_module_maximum() {
    let mut s = sandboxes(GROWER, &["grow", "grow_or_trap"], 1, NO_LIMITS).remove(0);
    assert_eq!(call(&mut s, 0, &pages(100)), Ok(6));
    // Past 4 GiB: a trap, not out of memory.
    assert_eq!(call(&mut s, 1, &pages(0x10000)), Err(ReturnCode::Trap));
}

#[test]
fn a_module_larger_than_the_allocation_memory_is_refused() {
    let big = r#"(module (memory (export "memory") 20)
      (func (export "f") (param i32 i32 i32) (result i32) (i32.const 0)))"#;
    let e = build_error(
        big,
        &["f"],
        WasmOptions {
            memory_mb: 1,
            ..NO_LIMITS
        },
    );
    assert!(
        e.contains("own memory of 1280 KiB") && e.contains("allocation's memory of 1 MiB"),
        "{e}"
    );
}

#[test]
fn the_initialiser_and_the_output_capacity_hook_run_once_per_instance() {
    let module = r#"
    (module
      (memory (export "memory") 1)
      (global $inits (mut i32) (i32.const 0))
      (global $capacity (mut i32) (i32.const 0))
      (func (export "_initialize") (global.set $inits (i32.add (global.get $inits) (i32.const 1))))
      (func (export "__rfaas_set_output_capacity") (param i32) (global.set $capacity (local.get 0)))
      (func (export "inits") (param i32 i32 i32) (result i32) (global.get $inits))
      (func (export "capacity") (param i32 i32 i32) (result i32) (global.get $capacity))
      (func (export "trap") (param i32 i32 i32) (result i32) unreachable))
    "#;
    let mut s = sandboxes(module, &["capacity", "inits", "trap"], 1, NO_LIMITS).remove(0);
    assert_eq!(call(&mut s, 1, b""), Ok(1));
    assert_eq!(call(&mut s, 1, b""), Ok(1));
    assert_eq!(call(&mut s, 0, b""), Ok(LAYOUT.max_payload as u32));
    assert_eq!(call(&mut s, 2, b""), Err(ReturnCode::Trap));
    assert_eq!(call(&mut s, 1, b""), Ok(1));
}

/// `hello` writes "hello\n" to stdout with WASI's `fd_write`; `now` reads the realtime clock;
/// `quit` calls `proc_exit(3)`.
const WASI: &str = r#"
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "clock_time_get" (func $clock (param i32 i64 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (import "wasi_snapshot_preview1" "path_open"
    (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "hello\n")
  (data (i32.const 32) "/etc")
  (func (export "hello") (param i32 i32 i32) (result i32)
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 6))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
    (i32.load (i32.const 8)))
  (func (export "now") (param i32 i32 i32) (result i32)
    (call $clock (i32.const 0) (i64.const 1) (i32.const 64))
    (drop)
    (i32.wrap_i64 (i64.div_u (i64.load (i32.const 64)) (i64.const 1000000000000))))
  (func (export "open") (param i32 i32 i32) (result i32)
    (call $open (i32.const 3) (i32.const 0) (i32.const 32) (i32.const 4) (i32.const 0)
                (i64.const 0) (i64.const 0) (i32.const 0) (i32.const 80)))
  (func (export "quit") (param i32 i32 i32) (result i32)
    (call $exit (i32.const 3))
    (i32.const 0)))
"#;

#[test]
fn wasi_gives_stdout_and_clocks_and_no_files() {
    let mut s = sandboxes(WASI, &["hello", "now", "open", "quit"], 1, NO_LIMITS).remove(0);
    // fd_write wrote all 6 bytes (to the log).
    assert_eq!(call(&mut s, 0, b""), Ok(6));
    // Seconds / 1000 since the epoch: 2026 is about 1.8 million thousand-seconds.
    let kiloseconds = call(&mut s, 1, b"").unwrap();
    assert!((1_700_000..3_000_000).contains(&kiloseconds), "{kiloseconds}");
    // No preopened directory: fd 3 is not a descriptor (errno 8, EBADF).
    assert_eq!(call(&mut s, 2, b""), Ok(8));
    assert_eq!(call(&mut s, 3, b""), Err(ReturnCode::Trap));
    assert_eq!(call(&mut s, 0, b""), Ok(6));
}

#[test]
fn imports_other_than_wasi_are_refused_by_name() {
    let e = build_error(
        r#"(module (import "wasi_unstable" "fd_write" (func (param i32 i32 i32 i32) (result i32)))
          (memory (export "memory") 1)
          (func (export "f") (param i32 i32 i32) (result i32) (i32.const 0)))"#,
        &["f"],
        NO_LIMITS,
    );
    assert!(
        e.contains("imports function `wasi_unstable`.`fd_write`; rFaaS provides only"),
        "{e}"
    );
    let e = build_error(
        r#"(module (import "wasi_snapshot_preview1" "no_such_call" (func))
          (memory (export "memory") 1)
          (func (export "f") (param i32 i32 i32) (result i32) (i32.const 0)))"#,
        &["f"],
        NO_LIMITS,
    );
    assert!(e.contains("no_such_call"), "{e}");
}

#[test]
fn a_budget_of_zero_is_no_limit() {
    assert_eq!(Budget::new(0).limit(), None);
    assert_eq!(Budget::new(3).limit(), Some(3 << 20));
}
