//! `executor`: one process per allocation, one thread per leased core. Started by the
//! executor manager (or by hand, for debugging), it connects back to the client, receives the
//! function library, publishes each thread's input buffer and serves invocations.

mod billing;
mod native;
mod sandbox;
mod wasm;
mod worker;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use clap::Parser;
use function_library::{FunctionLibrary, Kind};
use rdmalib::{Access, CompletionQueue, Connection, Context, DeviceDatabase, Opcode, QpConfig};
use rfaas_protocol::Record;
use rfaas_protocol::control::{Hello, MessageKind, ThreadReady};
use rfaas_protocol::invocation::{SEND_QUEUE_DEPTH, connection_receives};
use rfaas_protocol::mailbox::{CODE_WR_ID, Mailbox, SEND_WR_ID};

use crate::native::{NativeLibrary, NativeSandbox};
use crate::sandbox::{Sandbox, SlotLayout};
use crate::worker::{Polling, Worker, WorkerStats};

/// How long the client has to send the code after the executor connected.
const CODE_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves one allocation: connects to the client, loads its code, runs its invocations.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Device database (devices.json).
    #[arg(long)]
    device_database: String,
    /// Device name in the database (empty: the first one).
    #[arg(long, default_value = "")]
    device: String,
    /// The client's address to connect back to.
    #[arg(long)]
    client: SocketAddr,
    /// Allocation id, presented to the client in every connection.
    #[arg(long, default_value_t = 0)]
    allocation_id: u32,
    /// Threads (leased cores).
    #[arg(long, default_value_t = 1)]
    cores: u16,
    /// Input slots per thread.
    #[arg(long, default_value_t = 1)]
    input_buf_count: u16,
    /// Largest payload of one invocation, in bytes.
    #[arg(long)]
    max_payload: u32,
    /// Size of the code the client sends, in bytes.
    #[arg(long)]
    code_size: u32,
    /// Sandbox: native or wasm.
    #[arg(long, default_value = "native")]
    sandbox: Kind,
    /// -1 always hot, 0 always warm, >0 ms of idle hot polling before sleeping.
    #[arg(long, default_value_t = -1, allow_hyphen_values = true)]
    hot_timeout: i32,
    /// Per-invocation time limit for wasm functions, in ms (0: none).
    #[arg(long, default_value_t = 0)]
    time_limit_ms: u32,
    /// Stop each thread after this many invocations (0: serve until the client leaves).
    #[arg(long, default_value_t = 0)]
    max_invocations: u64,
    /// The manager to report billing to (its listening address); none when started by hand.
    #[arg(long)]
    manager: Option<SocketAddr>,
    /// Pin thread i to core i.
    #[arg(long)]
    pin_threads: bool,
    /// More logging (-v info, -vv debug).
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
}

fn main() -> ExitCode {
    let args = Args::parse();
    rfaas_cli::run("executor", args.verbose, || run(&args))
}

fn run(args: &Args) -> Result<()> {
    let db = DeviceDatabase::load(&args.device_database)?;
    let device = db.get_or_first(&args.device)?;
    let ctx = Context::open(device)?;
    let pd = ctx.alloc_pd()?;
    if args.cores == 0 || args.input_buf_count == 0 {
        bail!("an executor needs at least one core and one input buffer");
    }
    let layout = SlotLayout {
        slot_count: args.input_buf_count as usize,
        max_payload: args.max_payload as usize,
    };

    let receives = connection_receives(layout.slot_count as u32);
    let mut threads = Vec::with_capacity(args.cores as usize);
    for thread in 0..args.cores {
        // Room for every request the connection can have outstanding.
        let cq = ctx.create_cq(receives + SEND_QUEUE_DEPTH)?;
        let qp = QpConfig::new(&cq, &cq)
            .max_inline_data(device.max_inline_data)
            .max_send_wr(SEND_QUEUE_DEPTH)
            .max_recv_wr(receives);
        let hello = Hello::executor(args.allocation_id, thread);
        let conn = ctx
            .connect(&pd, args.client, &qp, &hello.encode())
            .with_context(|| {
                format!(
                    "connecting thread {thread} back to the client at {}",
                    args.client
                )
            })?;
        threads.push((conn, cq));
    }
    tracing::info!(
        "Connected {} threads to the client {}",
        args.cores,
        args.client
    );

    let (code, library) = receive_code(
        &pd,
        &threads[0].0,
        &threads[0].1,
        args.code_size,
        args.sandbox,
    )
    .inspect_err(|e| report_failure(&pd, &threads, &format!("{e:#}")))?;
    let sandboxes: Vec<Box<dyn Sandbox>> = match build_sandboxes(&pd, &code, &library, layout, args)
    {
        Ok(s) => s,
        Err(e) => {
            report_failure(&pd, &threads, &format!("{e:#}"));
            return Err(e);
        }
    };
    drop(code);

    let mut handles = Vec::with_capacity(threads.len());
    for (thread, ((conn, cq), sandbox)) in threads.into_iter().zip(sandboxes).enumerate() {
        let ready = ThreadReady {
            thread: thread as u16,
            input_addr: sandbox.input().addr(),
            input_rkey: sandbox.input().rkey(),
            slot_size: layout.slot_size() as u32,
            slot_count: layout.slot_count as u16,
            function_count: library.functions().len() as u16,
            error: None,
        };
        let worker = Worker {
            thread: thread as u16,
            conn,
            cq,
            ready,
            mailbox: Mailbox::new(&pd, 1, 1)?,
            sandbox,
            layout,
            polling: Polling::from_hot_timeout(args.hot_timeout),
            max_invocations: args.max_invocations,
        };
        let pin = args.pin_threads;
        handles.push(
            std::thread::Builder::new()
                .name(format!("executor-{thread}"))
                .spawn(move || {
                    if pin {
                        pin_to_core(thread);
                    }
                    worker.run()
                })
                .context("starting an executor thread")?,
        );
    }
    let mut total = WorkerStats::default();
    for handle in handles {
        let stats = handle
            .join()
            .map_err(|_| anyhow::anyhow!("an executor thread panicked"))??;
        total.invocations += stats.invocations;
        total.hot_polling_ns += stats.hot_polling_ns;
        total.execution_ns += stats.execution_ns;
    }
    if let Some(manager) = args.manager
        && let Err(e) = billing::report(&ctx, &pd, manager, args.allocation_id, &total)
    {
        tracing::warn!("billing was not reported: {e:#}");
    }
    tracing::info!(
        "Allocation {} done: {} invocations, hot polling {:.3} ms, execution {:.3} ms",
        args.allocation_id,
        total.invocations,
        total.hot_polling_ns as f64 / 1e6,
        total.execution_ns as f64 / 1e6
    );
    Ok(())
}

/// Receives the function library on thread 0's connection and inspects it.
fn receive_code(
    pd: &rdmalib::ProtectionDomain,
    conn: &Connection,
    cq: &CompletionQueue,
    code_size: u32,
    kind: Kind,
) -> Result<(Vec<u8>, FunctionLibrary)> {
    if code_size == 0 {
        bail!("the allocation announces an empty function library");
    }
    let buf = pd.register(code_size as usize, Access::LOCAL_WRITE)?;
    conn.post_recv(CODE_WR_ID, buf.sge(0, code_size as usize)?)?;
    let wc = cq
        .wait_one(Some(CODE_TIMEOUT))?
        .with_context(|| format!("the client sent no code within {CODE_TIMEOUT:?}"))?;
    if !wc.is_ok() || wc.opcode != Some(Opcode::Recv) || wc.imm != Some(MessageKind::Code as u32) {
        bail!("expected the function library from the client, got {wc:?}");
    }
    let mut code = vec![0u8; wc.byte_len as usize];
    buf.read(0, &mut code)?;
    let library = FunctionLibrary::inspect_as(&code, kind)?;
    tracing::info!(
        "Received {} bytes of {kind} code with functions {:?}",
        code.len(),
        library.functions()
    );
    Ok((code, library))
}

fn build_sandboxes(
    pd: &rdmalib::ProtectionDomain,
    code: &[u8],
    library: &FunctionLibrary,
    layout: SlotLayout,
    args: &Args,
) -> Result<Vec<Box<dyn Sandbox>>> {
    match args.sandbox {
        Kind::Native => {
            let lib = NativeLibrary::load(code, library.functions())?;
            (0..args.cores)
                .map(|_| {
                    Ok(Box::new(NativeSandbox::new(lib.clone(), pd, layout)?) as Box<dyn Sandbox>)
                })
                .collect()
        }
        Kind::Wasm => {
            wasm::build_wasm_sandboxes(pd, code, library, layout, args.cores, args.time_limit_ms)
        }
    }
}

/// Tells the client on every connection why the allocation failed.
fn report_failure(
    pd: &rdmalib::ProtectionDomain,
    threads: &[(Connection, CompletionQueue)],
    why: &str,
) {
    for (thread, (conn, cq)) in threads.iter().enumerate() {
        let ready = ThreadReady::failed(thread as u16, why);
        if let Err(e) = send_and_wait(pd, conn, cq, MessageKind::ThreadReady, &ready.encode()) {
            tracing::warn!("could not tell the client why the allocation failed: {e:#}");
        }
    }
}

/// Sends a control message and waits until it is delivered.
fn send_and_wait(
    pd: &rdmalib::ProtectionDomain,
    conn: &Connection,
    cq: &CompletionQueue,
    kind: MessageKind,
    payload: &[u8],
) -> Result<()> {
    let mailbox = Mailbox::new(pd, 1, 1)?;
    mailbox.send(conn, kind, payload)?;
    loop {
        let wc = cq
            .wait_one(Some(Duration::from_secs(10)))?
            .context("the client did not take a control message")?;
        if wc.wr_id == SEND_WR_ID {
            if !wc.is_ok() {
                bail!("sending a control message failed: {:?}", wc.status);
            }
            return Ok(());
        }
    }
}

fn pin_to_core(core: usize) {
    use nix::sched::{CpuSet, sched_setaffinity};
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut set = CpuSet::new();
    if set.set(core % cores).is_ok()
        && sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).is_ok()
    {
        tracing::debug!("thread pinned to core {}", core % cores);
    } else {
        tracing::warn!("could not pin a thread to core {}", core % cores);
    }
}
