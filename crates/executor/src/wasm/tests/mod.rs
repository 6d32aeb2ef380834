//! Tests of the wasm sandbox with the real `functions.wasm` and the tcp provider on 127.0.0.1.

mod wasi_and_limits;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use function_library::FunctionLibrary;
use rdmalib::{
    Access, CmEvent, Context, DeviceConfig, Opcode, ProtectionDomain, ProviderKind, QpConfig,
    RemoteBuffer, SendFlags, Status,
};
use rfaas_protocol::invocation::ReturnCode;

use super::cache::CacheOutcome;
use super::{Built, WasmOptions, WasmSandbox, build};
use crate::sandbox::{Sandbox, SlotLayout};

const T: Option<Duration> = Some(Duration::from_secs(10));
/// No time limit, no memory limit.
const NO_LIMITS: WasmOptions = WasmOptions {
    allocation_id: 0,
    time_limit_ms: 0,
    memory_mb: 0,
};

fn dev() -> DeviceConfig {
    DeviceConfig {
        name: "lo".into(),
        ip_address: "127.0.0.1".into(),
        port: 0,
        max_inline_data: 64,
        default_receive_buffer_size: 32,
        provider: Some(ProviderKind::Tcp),
    }
}

/// Builds `functions-wasm` (its own workspace and target dir) and returns `functions.wasm`.
fn functions_wasm() -> &'static [u8] {
    static CODE: OnceLock<Vec<u8>> = OnceLock::new();
    CODE.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let manifest = root.join("functions-wasm/Cargo.toml");
        let target_dir = root.join("functions-wasm/target");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let out = Command::new(cargo)
            .args(["build", "--release", "--target", "wasm32-unknown-unknown"])
            .arg("--manifest-path")
            .arg(&manifest)
            .arg("--target-dir")
            .arg(&target_dir)
            .env_remove("CARGO_TARGET_DIR")
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .output()
            .expect("running cargo to build functions-wasm");
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            if stderr.contains("may not be installed") || stderr.contains("can't find crate for") {
                panic!(
                    "the wasm32-unknown-unknown target is missing: run `rustup target add \
                     wasm32-unknown-unknown`\n{stderr}"
                );
            }
            panic!("building functions-wasm failed:\n{stderr}");
        }
        let path = target_dir.join("wasm32-unknown-unknown/release/functions.wasm");
        std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
    })
}

/// A fresh cache directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "rfaas-wasm-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A cache directory shared by the tests of this process, so functions.wasm compiles once.
fn shared_cache() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        // Fixed, so repeated runs reuse it instead of leaving one directory per run.
        std::env::temp_dir().join("rfaas-wasm-test-cache")
    })
}

fn pd() -> (Context, ProtectionDomain) {
    let ctx = Context::open(&dev()).expect("tcp context");
    let pd = ctx.alloc_pd().expect("pd");
    (ctx, pd)
}

const LAYOUT: SlotLayout = SlotLayout {
    slot_count: 2,
    max_payload: 64 << 10,
};

struct Functions {
    sandbox: WasmSandbox,
    library: FunctionLibrary,
}

impl Functions {
    fn new(pd: &ProtectionDomain, time_limit_ms: u32) -> Functions {
        let code = functions_wasm();
        let library = FunctionLibrary::inspect(code).expect("functions.wasm inspects");
        let Built { mut sandboxes, .. } = build(
            pd,
            code,
            library.functions(),
            LAYOUT,
            1,
            WasmOptions {
                time_limit_ms,
                ..NO_LIMITS
            },
            Some(shared_cache()),
        )
        .expect("building the sandbox");
        Functions {
            sandbox: sandboxes.pop().unwrap(),
            library,
        }
    }

    fn index(&self, name: &str) -> usize {
        self.library.index_of(name).expect("function exists") as usize
    }

    fn call(&mut self, name: &str, slot: usize, input: &[u8]) -> Result<u32, ReturnCode> {
        self.sandbox
            .input()
            .write(LAYOUT.payload_offset(slot), input)
            .unwrap();
        let index = self.index(name);
        self.sandbox.invoke(index, slot, input.len() as u32)
    }

    fn output(&self, slot: usize, len: usize) -> Vec<u8> {
        let mut out = vec![0u8; len];
        self.sandbox
            .output()
            .read(LAYOUT.output_offset(slot), &mut out)
            .unwrap();
        out
    }

    /// `empty` on `slot` round-trips a fresh payload.
    fn assert_works(&mut self, slot: usize) {
        let payload: Vec<u8> = (0..1000u32).map(|i| (i * 13 + 1) as u8).collect();
        assert_eq!(self.call("empty", slot, &payload), Ok(1000));
        assert_eq!(self.output(slot, 1000), payload);
    }
}

#[test]
fn functions_run_in_place_and_failures_are_return_codes() {
    let (_ctx, pd) = pd();
    let mut f = Functions::new(&pd, 50);
    f.assert_works(0);
    f.assert_works(1);

    // pattern
    assert_eq!(f.call("pattern", 1, &[0u8; 3000]), Ok(3000));
    let expected: Vec<u8> = (0..3000u32)
        .map(|i| i.wrapping_mul(7).wrapping_add(3) as u8)
        .collect();
    assert_eq!(f.output(1, 3000), expected);
    // The full 64 KiB payload.
    let big: Vec<u8> = (0..LAYOUT.max_payload).map(|i| (i % 251) as u8).collect();
    assert_eq!(f.call("empty", 0, &big), Ok(big.len() as u32));
    assert_eq!(f.output(0, big.len()), big);

    let input_addr = f.sandbox.input().addr();
    let output_addr = f.sandbox.output().addr();

    // A payload that has already landed in slot 1 survives a trap on slot 0.
    let pending = b"in flight in slot 1".to_vec();
    f.sandbox
        .input()
        .write(LAYOUT.payload_offset(1), &pending)
        .unwrap();

    // trap: unreachable.
    assert_eq!(f.call("trap", 0, b"x"), Err(ReturnCode::Trap));
    assert_eq!(f.sandbox.reinstantiations(), 1);
    let empty = f.index("empty");
    assert_eq!(f.sandbox.invoke(empty, 1, pending.len() as u32), Ok(19));
    assert_eq!(f.output(1, pending.len()), pending);
    f.assert_works(0);

    // out-of-bounds load.
    assert_eq!(f.call("out_of_bounds", 0, b"x"), Err(ReturnCode::Trap));
    assert_eq!(f.sandbox.reinstantiations(), 2);
    f.assert_works(0);

    // spin forever: interrupted by the 50 ms limit.
    let started = Instant::now();
    assert_eq!(
        f.call("spin", 1, &u32::MAX.to_le_bytes()),
        Err(ReturnCode::Timeout)
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(45) && took < Duration::from_secs(1),
        "timeout after {took:?}"
    );
    assert_eq!(f.sandbox.reinstantiations(), 3);
    f.assert_works(1);
    // A short spin finishes well within the limit.
    assert_eq!(f.call("spin", 0, &1000u32.to_le_bytes()), Ok(4));

    // oversize: the worker rejects the size, the sandbox reports it as is (the SDK caps a
    // size below the error flag).
    assert_eq!(f.call("oversize", 0, b""), Ok(0x7FFF_FFFF));
    assert_eq!(f.sandbox.reinstantiations(), 3);

    // Unknown index, too large a payload, a slot out of range.
    let n = f.library.functions().len();
    assert_eq!(f.sandbox.invoke(n, 0, 1), Err(ReturnCode::UnknownFunction));
    assert_eq!(
        f.sandbox.invoke(empty, 0, LAYOUT.max_payload as u32 + 1),
        Err(ReturnCode::PayloadTooLarge)
    );
    assert_eq!(
        f.sandbox.invoke(empty, 2, 1),
        Err(ReturnCode::PayloadTooLarge)
    );

    // The published buffers never moved.
    assert_eq!(f.sandbox.input().addr(), input_addr);
    assert_eq!(f.sandbox.output().addr(), output_addr);
    let (input_base, output_base) = f.sandbox.buffer_offsets();
    let memory = f.sandbox.wasm_memory().as_ptr() as u64;
    assert_eq!(input_addr, memory + input_base as u64);
    assert_eq!(output_addr, memory + output_base as u64);
    f.assert_works(0);
}

#[test]
fn reinstantiation_zeroes_the_module_memory_but_keeps_the_buffers() {
    let (_ctx, pd) = pd();
    let mut f = Functions::new(&pd, 0);
    // The shadow stack lives in the module's part (below 1 MiB). Scribble there through the
    // host view of a region we own, then check a re-instantiation cleans it.
    let (input_base, _) = f.sandbox.buffer_offsets();
    // SAFETY: no wasm code runs, no peer is connected and no reference into the memory is
    // live; `4096..8192` is inside the module's own accessible memory (16 pages).
    unsafe { std::ptr::write_bytes(f.sandbox.wasm_memory_ptr().add(4096), 0xAB, 4096) };
    assert!(
        f.sandbox.wasm_memory()[4096..8192]
            .iter()
            .all(|b| *b == 0xAB)
    );
    let before = f.sandbox.wasm_memory().as_ptr();
    f.sandbox
        .input()
        .write(LAYOUT.payload_offset(0), b"kept")
        .unwrap();
    assert_eq!(f.call("trap", 1, b""), Err(ReturnCode::Trap));
    let view = f.sandbox.wasm_memory();
    assert_eq!(view.as_ptr(), before, "the linear memory moved");
    assert!(
        view[4096..8192].iter().all(|b| *b == 0),
        "module memory not reset"
    );
    let at = input_base + LAYOUT.payload_offset(0);
    assert_eq!(&view[at..at + 4], b"kept");
    f.assert_works(0);
}

#[test]
fn sandboxes_move_to_their_threads_and_recover_there() {
    let (_ctx, pd) = pd();
    let code = functions_wasm();
    let library = FunctionLibrary::inspect(code).unwrap();
    let built = build(
        &pd,
        code,
        library.functions(),
        LAYOUT,
        3,
        WasmOptions {
            time_limit_ms: 1000,
            ..NO_LIMITS
        },
        Some(shared_cache()),
    )
    .unwrap();
    let mut addrs: Vec<u64> = built.sandboxes.iter().map(|s| s.input().addr()).collect();
    addrs.dedup();
    assert_eq!(addrs.len(), 3, "each thread has its own buffers");
    let trap = library.index_of("trap").unwrap() as usize;
    let empty = library.index_of("empty").unwrap() as usize;
    let handles: Vec<_> = built
        .sandboxes
        .into_iter()
        .map(|mut s| {
            std::thread::spawn(move || {
                for round in 0..3u8 {
                    assert_eq!(s.invoke(trap, 0, 0), Err(ReturnCode::Trap));
                    s.input()
                        .write(LAYOUT.payload_offset(0), &[round; 100])
                        .unwrap();
                    assert_eq!(s.invoke(empty, 0, 100), Ok(100));
                    let mut out = [0u8; 100];
                    s.output().read(0, &mut out).unwrap();
                    assert_eq!(out, [round; 100]);
                }
                s.reinstantiations()
            })
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap(), 3);
    }
}

#[test]
fn zero_copy_over_a_tcp_connection() {
    let (tx_addr, rx_addr) = std::sync::mpsc::channel();
    let (tx_input, rx_input) = std::sync::mpsc::channel::<(RemoteBuffer, usize)>();
    let (tx_result, rx_result) = std::sync::mpsc::channel::<RemoteBuffer>();
    let (tx_done, rx_done) = std::sync::mpsc::channel::<()>();
    let payload: Vec<u8> = (0..5000u32).map(|i| (i * 31 + 7) as u8).collect();
    let client_payload = payload.clone();

    // The client: listens, writes the payload into the executor's input buffer and waits for
    // the result written back into its own buffer.
    let client = std::thread::spawn(move || {
        let ctx = Context::open(&dev()).unwrap();
        let pd = ctx.alloc_pd().unwrap();
        let cq = ctx.create_cq(16).unwrap();
        let mr = pd.register(2 << 16, Access::ALL).unwrap();
        let listener = ctx.listen(0).unwrap();
        tx_addr.send(listener.local_addr()).unwrap();
        let Some(CmEvent::ConnectRequest(req)) = listener.get_event(T).unwrap() else {
            panic!("no connect request")
        };
        let conn = req.accept(&pd, &QpConfig::new(&cq, &cq), b"").unwrap();
        assert!(matches!(
            listener.get_event(T).unwrap(),
            Some(CmEvent::Established { .. })
        ));
        conn.post_recv(2, mr.sge(0, 0).unwrap()).unwrap();
        tx_result.send(mr.remote().offset(1 << 16)).unwrap();
        let (input, offset) = rx_input.recv().unwrap();
        mr.write(0, &client_payload).unwrap();
        conn.post_write_with_imm(
            1,
            mr.sge(0, client_payload.len()).unwrap(),
            input.offset(offset as u32),
            77,
            SendFlags::SIGNALED,
        )
        .unwrap();
        let mut seen_result = false;
        let mut seen_write = false;
        while !(seen_result && seen_write) {
            let wc = cq.wait_one(T).unwrap().expect("a completion");
            assert_eq!(wc.status, Status::Success, "{wc:?}");
            match wc.opcode {
                Some(Opcode::Write) => seen_write = true,
                Some(Opcode::RecvRdmaWithImm) => {
                    assert_eq!(
                        (wc.imm, wc.byte_len as usize),
                        (Some(5), client_payload.len())
                    );
                    seen_result = true;
                }
                other => panic!("unexpected completion {other:?}"),
            }
        }
        let mut result = vec![0u8; client_payload.len()];
        mr.read(1 << 16, &mut result).unwrap();
        assert_eq!(result, client_payload);
        // Stay connected until the executor saw its write complete.
        let _ = rx_done.recv_timeout(Duration::from_secs(10));
        drop(conn);
    });

    // The executor side.
    let ctx = Context::open(&dev()).unwrap();
    let pd = ctx.alloc_pd().unwrap();
    let cq = ctx.create_cq(16).unwrap();
    let mut f = Functions::new(&pd, 1000);
    let addr = rx_addr.recv().unwrap();
    let conn = ctx
        .connect(&pd, addr, &QpConfig::new(&cq, &cq), b"executor")
        .unwrap();
    conn.post_recv(0, f.sandbox.input().sge(0, 0).unwrap())
        .unwrap();
    let result_buffer = rx_result.recv().unwrap();
    let slot = 1;
    tx_input
        .send((f.sandbox.input().remote(), LAYOUT.payload_offset(slot)))
        .unwrap();
    let wc = cq.wait_one(T).unwrap().expect("the client's write");
    assert_eq!(
        (wc.status, wc.opcode, wc.imm, wc.byte_len as usize),
        (
            Status::Success,
            Some(Opcode::RecvRdmaWithImm),
            Some(77),
            payload.len()
        )
    );
    // The bytes are in the wasm linear memory, where we published the buffer: no copy.
    let (input_base, output_base) = f.sandbox.buffer_offsets();
    let at = input_base + LAYOUT.payload_offset(slot);
    assert_eq!(
        &f.sandbox.wasm_memory()[at..at + payload.len()],
        &payload[..]
    );
    assert_eq!(
        f.sandbox.input().as_ptr() as usize,
        f.sandbox.wasm_memory().as_ptr() as usize + input_base
    );
    // The function reads them in place and writes its output into the output buffer.
    let empty = f.index("empty");
    assert_eq!(
        f.sandbox.invoke(empty, slot, payload.len() as u32),
        Ok(payload.len() as u32)
    );
    let at = output_base + LAYOUT.output_offset(slot);
    assert_eq!(
        &f.sandbox.wasm_memory()[at..at + payload.len()],
        &payload[..]
    );
    // The result goes out from where the function wrote it.
    conn.post_write_with_imm(
        9,
        f.sandbox
            .output()
            .sge(LAYOUT.output_offset(slot), payload.len())
            .unwrap(),
        RemoteBuffer {
            len: payload.len() as u32,
            ..result_buffer
        },
        5,
        SendFlags::SIGNALED,
    )
    .unwrap();
    let wc = cq.wait_one(T).unwrap().expect("the result write");
    assert_eq!(
        (wc.status, wc.opcode),
        (Status::Success, Some(Opcode::Write))
    );
    tx_done.send(()).unwrap();
    client.join().unwrap();
}

/// The worker loop with the real sandbox over a real tcp connection: a write too short for
/// the input header is answered with `BadRequest`, and the next invocation is served.
#[test]
fn the_worker_answers_a_short_invocation_with_bad_request() {
    use std::sync::Arc;

    use rfaas_protocol::Record;
    use rfaas_protocol::control::{MessageKind, ThreadReady};
    use rfaas_protocol::invocation::{
        INPUT_HEADER_LEN, InputHeader, invocation_imm, parse_result_imm,
    };
    use rfaas_protocol::mailbox::Mailbox;

    use crate::meter::Meter;
    use crate::worker::{Polling, Worker};

    let (tx_addr, rx_addr) = std::sync::mpsc::channel();
    let client = std::thread::spawn(move || {
        let ctx = Context::open(&dev()).unwrap();
        let pd = ctx.alloc_pd().unwrap();
        let cq = ctx.create_cq(16).unwrap();
        let mr = pd.register(1 << 16, Access::ALL).unwrap();
        let listener = ctx.listen(0).unwrap();
        tx_addr.send(listener.local_addr()).unwrap();
        let req = loop {
            if let Some(CmEvent::ConnectRequest(req)) = listener.get_event(T).unwrap() {
                break req;
            }
        };
        let conn = req.accept(&pd, &QpConfig::new(&cq, &cq), b"").unwrap();
        // The announcement, then one receive per result.
        conn.post_recv(0, mr.sge(0, 512).unwrap()).unwrap();
        let wc = cq.wait_one(T).unwrap().expect("the thread's announcement");
        assert_eq!(wc.imm, Some(MessageKind::ThreadReady as u32), "{wc:?}");
        let mut raw = vec![0u8; wc.byte_len as usize];
        mr.read(0, &mut raw).unwrap();
        let ready = ThreadReady::decode(&raw).unwrap();
        let input = RemoteBuffer {
            addr: ready.input_addr,
            rkey: ready.input_rkey,
            len: ready.slot_size * u32::from(ready.slot_count),
        };
        let result_of = |wc: rdmalib::Completion| parse_result_imm(wc.imm.unwrap());
        let wait_result = || loop {
            let wc = cq.wait_one(T).unwrap().expect("a completion");
            assert!(wc.is_ok(), "{wc:?}");
            if wc.opcode == Some(Opcode::RecvRdmaWithImm) {
                return wc;
            }
        };
        // Four bytes: no room for the 12-byte header.
        conn.post_recv(1, mr.sge(0, 0).unwrap()).unwrap();
        conn.post_write_with_imm(
            1,
            mr.sge(1024, 4).unwrap(),
            input,
            invocation_imm(5, 0, false),
            SendFlags::SIGNALED,
        )
        .unwrap();
        let wc = wait_result();
        assert_eq!(result_of(wc), (5, ReturnCode::BadRequest as u16));
        assert_eq!(wc.byte_len, 0);
        // A proper call of `empty` on the same thread.
        let header = InputHeader {
            result_addr: mr.remote().offset(4096).addr,
            result_rkey: mr.rkey(),
            result_capacity: 64,
        };
        mr.write(1024, &header.encode()).unwrap();
        mr.write(1024 + INPUT_HEADER_LEN, b"after").unwrap();
        conn.post_recv(2, mr.sge(0, 0).unwrap()).unwrap();
        let empty = FunctionLibrary::inspect(functions_wasm())
            .unwrap()
            .index_of("empty")
            .unwrap();
        conn.post_write_with_imm(
            2,
            mr.sge(1024, INPUT_HEADER_LEN + 5).unwrap(),
            // Invocation 6 goes into slot 6 % slot_count.
            input.offset(ready.slot_size * (6 % u32::from(ready.slot_count))),
            invocation_imm(6, empty, false),
            SendFlags::SIGNALED,
        )
        .unwrap();
        let wc = wait_result();
        assert_eq!((result_of(wc), wc.byte_len), ((6, 0), 5));
        let mut back = [0u8; 5];
        mr.read(4096, &mut back).unwrap();
        assert_eq!(&back, b"after");
    });

    let ctx = Context::open(&dev()).unwrap();
    let pd = ctx.alloc_pd().unwrap();
    let cq = ctx.create_cq(32).unwrap();
    let f = Functions::new(&pd, 0);
    let addr = rx_addr.recv().unwrap();
    let conn = ctx
        .connect(&pd, addr, &QpConfig::new(&cq, &cq), b"executor")
        .unwrap();
    let ready = ThreadReady {
        thread: 0,
        input_addr: f.sandbox.input().addr(),
        input_rkey: f.sandbox.input().rkey(),
        slot_size: LAYOUT.slot_size() as u32,
        slot_count: LAYOUT.slot_count as u16,
        function_count: f.library.functions().len() as u16,
        error: None,
    };
    let worker = Worker {
        thread: 0,
        conn: Arc::new(conn),
        cq,
        ready,
        mailbox: Mailbox::new(&pd, 1, 1).unwrap(),
        sandbox: f.sandbox,
        layout: LAYOUT,
        polling: Polling::Warm,
        max_invocations: 0,
        meter: Arc::new(Meter::default()),
    };
    let served = std::thread::spawn(move || worker.run());
    client.join().unwrap();
    // The client left: the worker ends on its own.
    served.join().unwrap().unwrap();
}

#[test]
fn second_build_is_a_cache_hit() {
    let (_ctx, pd) = pd();
    let dir = TempDir::new();
    let code = functions_wasm();
    let library = FunctionLibrary::inspect(code).unwrap();
    let names = library.functions();
    let first = build(&pd, code, names, LAYOUT, 1, NO_LIMITS, Some(&dir.0)).unwrap();
    assert_eq!(first.cache, CacheOutcome::Miss { stored: true });
    let entries: Vec<_> = std::fs::read_dir(&dir.0).unwrap().collect();
    assert_eq!(entries.len(), 1, "one entry, no temporary file left");
    let second = build(&pd, code, names, LAYOUT, 1, NO_LIMITS, Some(&dir.0)).unwrap();
    assert_eq!(second.cache, CacheOutcome::Hit);
    let mut s = second.sandboxes.into_iter().next().unwrap();
    s.input().write(LAYOUT.payload_offset(0), b"hit").unwrap();
    let empty = library.index_of("empty").unwrap() as usize;
    assert_eq!(s.invoke(empty, 0, 3), Ok(3));

    // A damaged entry is a warning and a recompilation, not a failure. (It is replaced by a
    // rename, as the cache itself does: `s` still maps the old file, which must not change.)
    let entry = entries[0].as_ref().unwrap().path();
    let damaged = dir.0.join("damaged");
    std::fs::write(&damaged, b"not a module").unwrap();
    std::fs::rename(&damaged, &entry).unwrap();
    let third = build(&pd, code, names, LAYOUT, 1, NO_LIMITS, Some(&dir.0)).unwrap();
    assert_eq!(third.cache, CacheOutcome::Miss { stored: true });
    assert_eq!(
        build(&pd, code, names, LAYOUT, 1, NO_LIMITS, Some(&dir.0))
            .unwrap()
            .cache,
        CacheOutcome::Hit
    );

    // A cache that cannot be written is a warning too.
    let file = dir.0.join("a-file");
    std::fs::write(&file, b"").unwrap();
    let unwritable = build(&pd, code, names, LAYOUT, 1, NO_LIMITS, Some(&file)).unwrap();
    assert_eq!(unwritable.cache, CacheOutcome::Miss { stored: false });
}

// ---- hand-written modules for the build errors ----

fn leb(mut n: u32, out: &mut Vec<u8>) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn name(s: &str) -> Vec<u8> {
    let mut v = vec![];
    leb(s.len() as u32, &mut v);
    v.extend_from_slice(s.as_bytes());
    v
}

/// A section with a vector of `items`.
fn section(id: u8, items: &[Vec<u8>]) -> Vec<u8> {
    let mut body = vec![];
    leb(items.len() as u32, &mut body);
    for item in items {
        body.extend_from_slice(item);
    }
    let mut s = vec![id];
    leb(body.len() as u32, &mut s);
    s.extend(body);
    s
}

fn module(sections: &[Vec<u8>]) -> Vec<u8> {
    let mut m = b"\0asm\x01\0\0\0".to_vec();
    for s in sections {
        m.extend_from_slice(s);
    }
    m
}

const I32: u8 = 0x7f;
/// `(func (param i32 i32 i32) (result i32))`
fn rfaas_type() -> Vec<u8> {
    vec![0x60, 3, I32, I32, I32, 1, I32]
}
/// A body returning local 0 (the first parameter).
fn body() -> Vec<u8> {
    vec![4, 0x00, 0x20, 0x00, 0x0b]
}
fn limits(min: u32, max: Option<u32>) -> Vec<u8> {
    let mut v = vec![u8::from(max.is_some())];
    leb(min, &mut v);
    if let Some(max) = max {
        leb(max, &mut v);
    }
    v
}
fn export(n: &str, kind: u8, index: u32) -> Vec<u8> {
    let mut v = name(n);
    v.push(kind);
    leb(index, &mut v);
    v
}

/// A module with one function `f` of type `ty` and a memory with `memory` limits, exported
/// as `memory` when `export_memory`.
fn simple(ty: Vec<u8>, memory: Vec<u8>, export_memory: bool) -> Vec<u8> {
    let mut exports = vec![export("f", 0, 0)];
    if export_memory {
        exports.push(export("memory", 2, 0));
    }
    module(&[
        section(1, &[ty]),
        section(3, &[vec![0]]),
        section(5, &[memory]),
        section(7, &exports),
        section(10, &[body()]),
    ])
}

fn build_error(code: &[u8]) -> String {
    let (_ctx, pd) = pd();
    let dir = TempDir::new();
    match build(&pd, code, &["f".to_string()], LAYOUT, 1, NO_LIMITS, Some(&dir.0)) {
        Ok(_) => panic!("the module was accepted"),
        Err(e) => format!("{e:#}"),
    }
}

#[test]
fn hand_written_valid_module_runs() {
    let code = simple(rfaas_type(), limits(1, None), true);
    let (_ctx, pd) = pd();
    let dir = TempDir::new();
    let built = build(&pd, &code, &["f".to_string()], LAYOUT, 1, NO_LIMITS, Some(&dir.0)).unwrap();
    let mut s = built.sandboxes.into_iter().next().unwrap();
    // `f` returns its first argument: the input offset of the payload.
    let (input_base, _) = s.buffer_offsets();
    assert_eq!(
        s.invoke(0, 1, 0),
        Ok((input_base + LAYOUT.payload_offset(1)) as u32)
    );
}

#[test]
fn stack_overflow_is_a_trap_and_the_sandbox_recovers() {
    // `f` calls itself forever; `g` returns its first argument.
    let recursive = vec![
        10, 0x00, 0x20, 0x00, 0x20, 0x01, 0x20, 0x02, 0x10, 0x00, 0x0b,
    ];
    let code = module(&[
        section(1, &[rfaas_type()]),
        section(3, &[vec![0], vec![0]]),
        section(5, &[limits(1, None)]),
        section(
            7,
            &[export("f", 0, 0), export("g", 0, 1), export("memory", 2, 0)],
        ),
        section(10, &[recursive, body()]),
    ]);
    let (_ctx, pd) = pd();
    let dir = TempDir::new();
    let names = ["f".to_string(), "g".to_string()];
    let built = build(&pd, &code, &names, LAYOUT, 1, NO_LIMITS, Some(&dir.0)).unwrap();
    let mut s = built.sandboxes.into_iter().next().unwrap();
    assert_eq!(s.invoke(0, 0, 0), Err(ReturnCode::Trap));
    assert_eq!(s.reinstantiations(), 1);
    let (input_base, _) = s.buffer_offsets();
    assert_eq!(
        s.invoke(1, 0, 0),
        Ok((input_base + LAYOUT.payload_offset(0)) as u32)
    );
}

#[test]
fn build_errors_are_clear() {
    let e = build_error(&simple(rfaas_type(), limits(1, None), false));
    assert!(e.contains("does not export a memory named `memory`"), "{e}");

    let imported_memory = module(&[
        section(1, &[rfaas_type()]),
        section(
            2,
            &[[name("env"), name("memory"), vec![2], limits(1, None)].concat()],
        ),
        section(3, &[vec![0]]),
        section(7, &[export("f", 0, 0), export("memory", 2, 0)]),
        section(10, &[body()]),
    ]);
    let e = build_error(&imported_memory);
    assert!(e.contains("imports its memory (`env`.`memory`)"), "{e}");

    let e = build_error(&simple(vec![0x60, 1, I32, 1, I32], limits(1, None), true));
    assert!(
        e.contains("`f` has the type (type (func (param i32) (result i32)))"),
        "{e}"
    );

    let imported_function = module(&[
        section(1, &[rfaas_type()]),
        section(2, &[[name("env"), name("log"), vec![0, 0]].concat()]),
        section(3, &[vec![0]]),
        section(5, &[limits(1, None)]),
        section(7, &[export("f", 0, 1), export("memory", 2, 0)]),
        section(10, &[body()]),
    ]);
    let e = build_error(&imported_function);
    assert!(
        e.contains("imports function `env`.`log`; rFaaS provides only the functions of `wasi_snapshot_preview1`"),
        "{e}"
    );

    // 1 page of its own + 3 input + 2 output pages for LAYOUT.
    let e = build_error(&simple(rfaas_type(), limits(1, Some(2)), true));
    assert!(
        e.contains("may grow to 2 pages") && e.contains("at least 6 pages"),
        "{e}"
    );

    let e = build_error(b"\0asm\x01\0\0\0\x01");
    assert!(e.contains("compiling the wasm module failed"), "{e}");
}

/// Typed call cost of `empty` through `invoke`. Run with
/// `cargo test -p executor --release -- --ignored --nocapture call_cost`.
#[test]
#[ignore = "benchmark"]
fn call_cost() {
    let (_ctx, pd) = pd();
    let mut f = Functions::new(&pd, 1000);
    let empty = f.index("empty");
    for size in [1usize, 64 << 10] {
        f.sandbox
            .input()
            .write(LAYOUT.payload_offset(0), &vec![7u8; size])
            .unwrap();
        let batch = if size == 1 { 10_000 } else { 200 };
        let mut per_call = vec![];
        for _ in 0..50 {
            let started = Instant::now();
            for _ in 0..batch {
                assert_eq!(f.sandbox.invoke(empty, 0, size as u32), Ok(size as u32));
            }
            per_call.push(started.elapsed().as_nanos() as f64 / batch as f64);
        }
        per_call.sort_by(f64::total_cmp);
        println!(
            "invoke(empty) with {size} B: median {:.0} ns, min {:.0} ns",
            per_call[per_call.len() / 2],
            per_call[0]
        );
    }
    let code = functions_wasm();
    let dir = TempDir::new();
    let library = FunctionLibrary::inspect(code).unwrap();
    for round in ["compile", "cache load"] {
        let started = Instant::now();
        let built = build(&pd, code, library.functions(), LAYOUT, 1, NO_LIMITS, Some(&dir.0)).unwrap();
        println!(
            "{round}: {:?} ({:?}) including one instantiation",
            started.elapsed(),
            built.cache
        );
    }
    let started = Instant::now();
    let trap = f.index("trap");
    for _ in 0..100 {
        assert_eq!(f.sandbox.invoke(trap, 0, 0), Err(ReturnCode::Trap));
    }
    println!(
        "trap + re-instantiation: {:?} each",
        started.elapsed() / 100
    );
}
