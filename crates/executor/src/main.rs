//! `executor`: one process per allocation, one thread per leased core. Started by the
//! executor manager (or by hand, for debugging), it connects back to the client, receives the
//! function library, publishes each thread's input buffer and serves invocations.

mod atomic_file;
mod billing;
mod code;
mod meter;
mod native;
mod native_memory;
mod sandbox;
mod wasm;
mod watchdog;
mod worker;

use std::io::BufRead as _;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use clap::Parser;
use function_library::{FunctionLibrary, Kind};
use rdmalib::{
    Access, CompletionQueue, Connection, Context, DeviceConfig, DeviceDatabase, ProtectionDomain,
    QpConfig, SendFlags,
};
use rfaas_protocol::Record;
use rfaas_protocol::control::{
    BILLING_TOKEN_ENV, CLIENT_TOKEN_ENV, CodeDigest, Credential, EXIT_MANAGER_LOST, Hello,
    MessageKind, ThreadReady, parse_credential,
};
use rfaas_protocol::invocation::ReturnCode;
use rfaas_protocol::invocation::{SEND_QUEUE_DEPTH, connection_receives};
use rfaas_protocol::mailbox::{Mailbox, SEND_WR_ID};

use crate::billing::Billing;
use crate::code::{Code, CodeOrigin};
use crate::meter::{Meter, Reading, now_ns};
use crate::native::{NativeLibrary, NativeSandbox};
use crate::sandbox::{Sandbox, SlotLayout};
use crate::watchdog::Watched;
use crate::worker::{Polling, Worker, answer};

/// Work-request id of the shutdown notices.
const SHUTDOWN_WR_ID: u64 = u64::MAX - 3;

/// Serves one allocation: connects to the client, loads its code, runs its invocations.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    #[command(flatten)]
    device: DeviceArgs,
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
    /// Per-invocation time limit, in ms (0: none).
    #[arg(long, default_value_t = 0)]
    time_limit_ms: u32,
    /// The allocation's memory in MiB: what its functions may allocate (0: no limit).
    #[arg(long, default_value_t = 0)]
    memory_mb: u32,
    /// Stop each thread after this many invocations (0: serve until the client leaves).
    #[arg(long, default_value_t = 0)]
    max_invocations: u64,
    /// The manager to report billing to (its listening address); none when started by hand.
    #[arg(long)]
    manager: Option<SocketAddr>,
    /// Pin thread i to core i.
    #[arg(long)]
    pin_threads: bool,
    /// Load the function library from this file (the manager's code cache) instead of
    /// receiving it from the client.
    #[arg(long, value_name = "PATH", conflicts_with_all = ["code_digest", "store_code"])]
    code_file: Option<PathBuf>,
    /// The SHA-256 (64 hex digits) that the library the client sends must have.
    #[arg(long, value_name = "HEX", value_parser = parse_digest)]
    code_digest: Option<CodeDigest>,
    /// Store the library the client sends in this file (the manager's code cache).
    #[arg(long, value_name = "PATH", requires = "code_digest")]
    store_code: Option<PathBuf>,
    /// More logging (-v info, -vv debug).
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
}

fn parse_digest(hex: &str) -> Result<CodeDigest, String> {
    parse_credential(hex).ok_or_else(|| "expected 64 hex digits".to_string())
}

/// A spare executor, started by the executor manager before any allocation needs it: it
/// opens its device, then waits on standard input for its allocation, so a cold start does
/// not wait for the process to start. The allocation comes as one line of NUL-separated
/// fields: the client's token and the billing token (hex), then [`Args`] without the device
/// options.
#[derive(Parser, Debug)]
#[command(
    about = "A spare executor: opens the device, then serves the allocation its executor manager writes to standard input"
)]
struct SpareArgs {
    /// Wait for the allocation on standard input.
    #[arg(long, required = true)]
    spare: bool,
    #[command(flatten)]
    device: DeviceArgs,
    /// More logging (-v info, -vv debug).
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
}

/// The device an executor serves on, for an executor and a spare alike.
#[derive(clap::Args, Debug)]
struct DeviceArgs {
    /// Device database (devices.json).
    #[arg(long = "device-database")]
    database: String,
    /// Device name in the database (empty: the first one).
    #[arg(long = "device", default_value = "")]
    name: String,
}

impl DeviceArgs {
    /// Opens the device: its configuration, a context and a protection domain.
    fn open(&self) -> Result<(DeviceConfig, Context, ProtectionDomain)> {
        let db = DeviceDatabase::load(&self.database)?;
        let device = db.get_or_first(&self.name)?.clone();
        let ctx = Context::open(&device)?;
        let pd = ctx.alloc_pd()?;
        Ok((device, ctx, pd))
    }

    /// The options as a command line gives them.
    fn options(&self) -> [&str; 4] {
        ["--device-database", &self.database, "--device", &self.name]
    }
}

/// What the executor presents: to its client when it connects back, and to its manager on the
/// billing connection (none when started by hand without a manager).
struct Tokens {
    client: Credential,
    billing: Option<Credential>,
}

fn main() -> ExitCode {
    if std::env::args_os().nth(1).is_some_and(|a| a == "--spare") {
        let spare = SpareArgs::parse();
        return rfaas_cli::run("executor", spare.verbose, || run_spare(&spare));
    }
    let args = Args::parse();
    rfaas_cli::run("executor", args.verbose, || run(&args))
}

fn run(args: &Args) -> Result<()> {
    let (device, ctx, pd) = args.device.open()?;
    let tokens = Tokens {
        client: credential_from_env(CLIENT_TOKEN_ENV)?,
        billing: match args.manager {
            Some(_) => Some(credential_from_env(BILLING_TOKEN_ENV)?),
            None => None,
        },
    };
    serve(args, &ctx, &device, &pd, tokens)
}

fn run_spare(spare: &SpareArgs) -> Result<()> {
    let (device, ctx, pd) = spare.device.open()?;
    // The allocation may be either kind; only wasm has work that can be done before it.
    wasm::prepare();
    let mut line = Vec::new();
    std::io::stdin()
        .lock()
        .read_until(b'\n', &mut line)
        .context("reading the allocation from the executor manager")?;
    let Some(line) = line.strip_suffix(b"\n") else {
        // The manager retired this spare, or went away.
        return Ok(());
    };
    let fields: Vec<&str> = std::str::from_utf8(line)
        .context("the allocation from the executor manager is not UTF-8")?
        .split('\0')
        .collect();
    let [client, billing, rest @ ..] = fields.as_slice() else {
        bail!("the allocation from the executor manager lacks its tokens");
    };
    let args = Args::try_parse_from(
        std::iter::once("executor")
            .chain(spare.device.options())
            .chain(rest.iter().copied()),
    )
    .context("the allocation from the executor manager")?;
    let tokens = Tokens {
        client: parse_credential(client).context("the client's token")?,
        billing: Some(parse_credential(billing).context("the billing token")?),
    };
    serve(&args, &ctx, &device, &pd, tokens)
}

/// Serves one allocation on an open device.
fn serve(
    args: &Args,
    ctx: &Context,
    device: &DeviceConfig,
    pd: &ProtectionDomain,
    tokens: Tokens,
) -> Result<()> {
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
        let hello = Hello::executor(args.allocation_id, thread, tokens.client);
        let conn = ctx
            .connect(pd, args.client, &qp, &hello.encode())
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

    let origin = CodeOrigin {
        file: args.code_file.as_deref(),
        digest: args.code_digest,
        store: args.store_code.as_deref(),
        size: args.code_size,
        kind: args.sandbox,
    };
    let code = origin
        .obtain(pd, &threads[0].0, &threads[0].1)
        .inspect_err(|e| report_failure(pd, &threads, &format!("{e:#}")))?;
    let loading = Instant::now();
    let sandboxes: Vec<Box<dyn Sandbox>> = match build_sandboxes(pd, &code, layout, args) {
        Ok(s) => s,
        Err(e) => {
            report_failure(pd, &threads, &format!("{e:#}"));
            return Err(e);
        }
    };
    tracing::info!(
        "Loaded the library into {} sandbox(es) in {:.3} ms",
        args.cores,
        loading.elapsed().as_secs_f64() * 1e3
    );
    let library = code.library.clone();
    let storing = origin.store(code);

    let (workers, ended) = spawn_workers(threads, sandboxes, pd, layout, &library, args)?;
    if args.sandbox == Kind::Native && args.time_limit_ms > 0 {
        let watched = workers
            .iter()
            .map(|w| Watched {
                meter: w.meter.clone(),
                conn: w.conn.clone(),
            })
            .collect();
        let limit = Duration::from_millis(u64::from(args.time_limit_ms));
        watchdog::start(watched, limit, pd.register(1, Access::LOCAL_WRITE)?)
            .context("starting the watchdog")?;
    }
    let total = serve_until_done(ctx, pd, &workers, &ended, args, tokens.billing)?;
    tracing::info!(
        "Allocation {} done: {} invocations, hot polling {:.3} ms, execution {:.3} ms",
        args.allocation_id,
        total.invocations,
        total.hot_polling_ns as f64 / 1e6,
        total.execution_ns as f64 / 1e6
    );
    if let Some(storing) = storing {
        let _ = storing.join();
    }
    Ok(())
}

/// A worker thread started, and what the rest of the executor shares with it.
struct Started {
    meter: Arc<Meter>,
    conn: Arc<Connection>,
}

/// The worker threads ended with this (index, outcome).
type Ended = mpsc::Receiver<(usize, Result<()>)>;

fn spawn_workers(
    threads: Vec<(Connection, CompletionQueue)>,
    sandboxes: Vec<Box<dyn Sandbox>>,
    pd: &rdmalib::ProtectionDomain,
    layout: SlotLayout,
    library: &FunctionLibrary,
    args: &Args,
) -> Result<(Vec<Started>, Ended)> {
    let (ended_tx, ended) = mpsc::channel();
    let mut started = Vec::with_capacity(threads.len());
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
        let meter = Arc::new(Meter::default());
        let conn = Arc::new(conn);
        let worker = Worker {
            thread: thread as u16,
            conn: conn.clone(),
            cq,
            ready,
            mailbox: Mailbox::new(pd, 1, 1)?,
            sandbox,
            layout,
            polling: Polling::from_hot_timeout(args.hot_timeout),
            max_invocations: args.max_invocations,
            meter: meter.clone(),
        };
        let (pin, ended_tx) = (args.pin_threads, ended_tx.clone());
        std::thread::Builder::new()
            .name(format!("executor-{thread}"))
            .spawn(move || {
                if pin {
                    pin_to_core(thread);
                }
                let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| worker.run()))
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("executor thread {thread} panicked")));
                let _ = ended_tx.send((thread, outcome));
            })
            .context("starting an executor thread")?;
        started.push(Started { meter, conn });
    }
    Ok((started, ended))
}

/// Waits for the worker threads to end, adding their billing into the manager's record every
/// [`billing::FLUSH_INTERVAL`]; ends the executor if the manager goes away. The totals.
fn serve_until_done(
    ctx: &Context,
    pd: &rdmalib::ProtectionDomain,
    workers: &[Started],
    ended: &Ended,
    args: &Args,
    billing_token: Option<Credential>,
) -> Result<Reading> {
    let total = || {
        let now = now_ns();
        workers
            .iter()
            .fold(Reading::default(), |sum, w| sum.plus(w.meter.read(now)))
    };
    let mut billing = match (args.manager, billing_token) {
        (Some(manager), Some(token)) => {
            match Billing::connect(ctx, pd, manager, args.allocation_id, token) {
                Ok(b) => Some(b),
                Err(e) => manager_lost(pd, workers, &format!("{e:#}")),
            }
        }
        _ => None,
    };
    let mut running = workers.len();
    let mut failure = None;
    while running > 0 {
        match ended.recv_timeout(billing::FLUSH_INTERVAL) {
            Ok((thread, outcome)) => {
                running -= 1;
                if let Err(e) = outcome {
                    tracing::error!("executor thread {thread}: {e:#}");
                    failure.get_or_insert(e);
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        if let Some(b) = &mut billing {
            if !b.is_connected() {
                manager_lost(pd, workers, "the billing connection closed");
            }
            if let Err(e) = b.flush(total()) {
                manager_lost(pd, workers, &format!("{e:#}"));
            }
        }
    }
    if let Some(b) = billing {
        b.close();
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(total()),
    }
}

/// The manager is gone: tell every client, then end.
fn manager_lost(pd: &rdmalib::ProtectionDomain, workers: &[Started], why: &str) -> ! {
    tracing::error!("the executor manager went away ({why}); stopping");
    if let Ok(empty) = pd.register(1, Access::LOCAL_WRITE) {
        for w in workers {
            let told = empty.sge(0, 0).and_then(|sge| {
                answer(
                    &w.conn,
                    sge,
                    SHUTDOWN_WR_ID,
                    0,
                    ReturnCode::Shutdown,
                    SendFlags::SIGNALED.with_solicited(true),
                )
            });
            if let Err(e) = told {
                tracing::warn!("could not tell a client: {e}");
            }
        }
    }
    std::thread::sleep(watchdog::LINGER);
    std::process::exit(EXIT_MANAGER_LOST);
}

/// A credential the manager passed in the environment variable `var` (64 hex digits).
fn credential_from_env(var: &str) -> Result<Credential> {
    let hex = std::env::var(var).with_context(|| {
        format!("{var} is not set: executors are started by their executor manager, which sets it")
    })?;
    parse_credential(&hex).with_context(|| format!("{var} does not hold 64 hex digits"))
}

fn build_sandboxes(
    pd: &rdmalib::ProtectionDomain,
    code: &Code,
    layout: SlotLayout,
    args: &Args,
) -> Result<Vec<Box<dyn Sandbox>>> {
    let library = &code.library;
    match args.sandbox {
        Kind::Native => {
            let lib = match &code.cached {
                Some(path) => NativeLibrary::open(path, library.functions(), args.max_payload)?,
                None => NativeLibrary::load(&code.bytes, library.functions(), args.max_payload)?,
            };
            let sandboxes = (0..args.cores)
                .map(|_| {
                    Ok(Box::new(NativeSandbox::new(lib.clone(), pd, layout)?) as Box<dyn Sandbox>)
                })
                .collect::<Result<Vec<_>>>()?;
            if args.memory_mb > 0 {
                native_memory::limit(args.memory_mb, args.cores)?;
            }
            Ok(sandboxes)
        }
        Kind::Wasm => {
            let options = wasm::WasmOptions {
                allocation_id: args.allocation_id,
                time_limit_ms: args.time_limit_ms,
                memory_mb: args.memory_mb,
            };
            wasm::build_wasm_sandboxes(pd, &code.bytes, library, layout, args.cores, options)
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
