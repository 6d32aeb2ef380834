//! `rdma_pingpong`: the raw RDMA baseline that rFaaS invocations are compared against.
//!
//! Two processes play ping-pong with RDMA writes with immediate, in the manner of perftest's
//! `ib_write_lat`: the client writes the payload into the server's registered buffer with an
//! immediate, the server busy-polls its receive queue, sees the immediate and writes the same
//! number of bytes back into the client's buffer with the same immediate, which the client
//! busy-polls for. One such exchange is one round trip, the unit of an rFaaS invocation; the
//! table reports full round trips (perftest reports half of one).
//!
//! ```text
//! rdma_pingpong --device-database devices.json --name lo server --port 10000
//! rdma_pingpong --device-database devices.json --name lo client --address 127.0.0.1:10000
//! rdma_pingpong client --spawn-server --sizes 1,4096,1048576 --output-stats rtt.csv
//! ```

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail, ensure};
use benchmarks::pingpong::{self, HEADER, MAX_SIZE, RULE, StatsFile, parse_size};
use benchmarks::stats::Samples;
use clap::{ArgAction, Args, Parser, Subcommand};
use rdmalib::{
    Access, CmEvent, Completion, CompletionQueue, Connection, Context, DeviceConfig,
    DeviceDatabase, MemoryRegion, Opcode, ProviderKind, QpConfig, RemoteBuffer, SendFlags, Status,
};
use tracing::{debug, info, warn};

/// Receives kept posted on each side; every exchange consumes one and reposts it.
const RECV_DEPTH: u32 = 64;
/// How long one exchange, a connection or the spawned server's start may take.
const TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Parser, Debug)]
#[command(
    name = "rdma_pingpong",
    version,
    about = "Raw RDMA baseline: write-with-immediate ping-pong between two processes, \
             timing full round trips (like perftest's ib_write_lat, which prints half of one)",
    after_help = "Examples:\n  \
        rdma_pingpong --device-database devices.json --name lo server --port 10000\n  \
        rdma_pingpong --device-database devices.json --name lo client --address 127.0.0.1:10000\n  \
        rdma_pingpong client --spawn-server --sizes 1,4096,65536,1048576 --output-stats rtt.csv"
)]
struct Cli {
    /// Device database (devices.json) that names the device. Without it: the tcp provider on
    /// 127.0.0.1.
    #[arg(long, value_name = "FILE", global = true)]
    device_database: Option<PathBuf>,

    /// Device to use from the database; empty means its first device.
    #[arg(
        long,
        value_name = "DEV",
        default_value = "",
        hide_default_value = true,
        global = true
    )]
    name: String,

    /// More log output on stderr (-v debug, -vv trace); RUST_LOG overrides it.
    #[arg(short, long, action = ArgAction::Count, global = true)]
    verbose: u8,

    #[command(subcommand)]
    role: Role,
}

#[derive(Subcommand, Debug)]
enum Role {
    /// Answer ping-pongs: write every payload back with its immediate, one client at a time.
    Server(ServerArgs),
    /// Measure round trips against a server and print the table.
    Client(ClientArgs),
}

#[derive(Args, Debug)]
struct ServerArgs {
    /// Port to listen on [default: the device's port]; 0 picks a free one. The address is
    /// printed as `listening on ADDR:PORT` once bound.
    #[arg(long)]
    port: Option<u16>,

    /// Exit after the first client has disconnected.
    #[arg(long)]
    once: bool,
}

#[derive(Args, Debug)]
struct ClientArgs {
    /// Server to measure against, as HOST:PORT.
    #[arg(
        long,
        value_name = "HOST:PORT",
        required_unless_present = "spawn_server"
    )]
    address: Option<String>,

    /// Start the server as a subprocess of this binary (same device, port 0) and measure
    /// against it; it exits when the client is done.
    #[arg(long, conflicts_with = "address")]
    spawn_server: bool,

    /// Payload sizes in bytes, comma-separated; K, M and G suffixes are powers of 1024
    /// [default: 1,2,4,... up to 1M, every power of two].
    #[arg(long, value_name = "LIST", value_delimiter = ',', value_parser = parse_size)]
    sizes: Vec<u32>,

    /// Measured round trips per size.
    #[arg(long, value_name = "N", default_value_t = 1000,
          value_parser = clap::value_parser!(u32).range(1..))]
    repetitions: u32,

    /// Unmeasured round trips per size before the measured ones.
    #[arg(long, value_name = "N", default_value_t = 100)]
    warmup: u32,

    /// Write every measured round trip as CSV: size,repetition,round_trip_ns.
    #[arg(long, value_name = "FILE")]
    output_stats: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    rfaas_cli::run("rdma_pingpong", cli.verbose, || run(&cli))
}

fn run(cli: &Cli) -> Result<()> {
    let device = device(cli)?;
    match &cli.role {
        Role::Server(args) => server(&device, args),
        Role::Client(args) => client(cli, &device, args),
    }
}

/// The device from the database, or the tcp provider on loopback without one.
fn device(cli: &Cli) -> Result<DeviceConfig> {
    match &cli.device_database {
        Some(path) => {
            let db = DeviceDatabase::load(path)?;
            Ok(db.get_or_first(&cli.name)?.clone())
        }
        None => {
            info!("No --device-database: using the tcp provider on 127.0.0.1");
            Ok(DeviceConfig {
                name: if cli.name.is_empty() {
                    "lo".into()
                } else {
                    cli.name.clone()
                },
                ip_address: "127.0.0.1".into(),
                port: 0,
                max_inline_data: 0,
                default_receive_buffer_size: RECV_DEPTH,
                provider: Some(ProviderKind::Tcp),
            })
        }
    }
}

/// What each side publishes in its connection private data: its whole buffer.
fn encode_buffer(mr: &MemoryRegion) -> [u8; 16] {
    let mut out = [0; 16];
    out[..8].copy_from_slice(&mr.addr().to_le_bytes());
    out[8..12].copy_from_slice(&mr.rkey().to_le_bytes());
    out[12..].copy_from_slice(&(mr.len() as u32).to_le_bytes());
    out
}

fn decode_buffer(data: &[u8]) -> Result<RemoteBuffer> {
    ensure!(
        data.len() >= 16,
        "{} bytes of private data, expected 16 (addr, rkey, len)",
        data.len()
    );
    let u32_at = |i: usize| u32::from_le_bytes([data[i], data[i + 1], data[i + 2], data[i + 3]]);
    let mut addr = [0; 8];
    addr.copy_from_slice(&data[..8]);
    Ok(RemoteBuffer {
        addr: u64::from_le_bytes(addr),
        rkey: u32_at(8),
        len: u32_at(12),
    })
}

/// One side of the ping-pong: a connection, its queue and its buffer.
struct Side {
    conn: Connection,
    cq: CompletionQueue,
    mr: MemoryRegion,
    remote: RemoteBuffer,
    max_inline: u32,
    writes: u64,
}

impl Side {
    fn post_recvs(&self) -> Result<()> {
        for i in 0..RECV_DEPTH {
            self.repost(u64::from(i))?;
        }
        Ok(())
    }

    /// A zero-length receive: writes with immediate only need one to carry the immediate.
    fn repost(&self, wr_id: u64) -> Result<()> {
        Ok(self.conn.post_recv(wr_id, self.mr.sge(0, 0)?)?)
    }

    /// Writes `len` bytes from the start of our buffer to the start of the peer's, with `imm`.
    fn write(&mut self, len: u32, imm: u32) -> Result<()> {
        let flags = SendFlags::selective(self.writes).with_inline(len <= self.max_inline);
        self.writes += 1;
        let sge = self.mr.sge(0, len as usize)?;
        self.conn
            .post_write_with_imm(self.writes, sge, self.remote, imm, flags)
            .with_context(|| format!("posting a write with immediate of {len} bytes"))
    }

    /// Busy-polls until the peer's write with immediate arrives and returns its completion;
    /// `None` when the connection closed (its receives were flushed). Fails after `timeout`.
    fn poll_incoming(&self, timeout: Option<Duration>) -> Result<Option<Completion>> {
        let mut wcs = [Completion::default(); 16];
        let mut spins = 0u32;
        let mut since: Option<Instant> = None;
        loop {
            let n = self.cq.poll(&mut wcs)?;
            let mut incoming = None;
            for wc in &wcs[..n] {
                match (wc.status, wc.opcode) {
                    (Status::Success, Some(Opcode::RecvRdmaWithImm)) => incoming = Some(*wc),
                    (Status::Success, Some(Opcode::Write)) => {}
                    (Status::WrFlushError, _) => return Ok(None),
                    (status, opcode) => {
                        bail!(
                            "a {opcode:?} work request (wr_id {}) completed with {status:?}",
                            wc.wr_id
                        )
                    }
                }
            }
            if let Some(wc) = incoming {
                self.repost(wc.wr_id)?;
                return Ok(Some(wc));
            }
            // This loop is the measured path: look at the clock only now and then.
            spins = spins.wrapping_add(1);
            if let Some(timeout) = timeout
                && spins.is_multiple_of(4096)
                && since.get_or_insert_with(Instant::now).elapsed() > timeout
            {
                bail!("no answer from the peer within {timeout:?}");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Server.
// ---------------------------------------------------------------------------------------------

fn server(device: &DeviceConfig, args: &ServerArgs) -> Result<()> {
    let ctx = Context::open(device).with_context(|| format!("opening device {}", device.name))?;
    let port = args.port.unwrap_or(device.port);
    let listener = ctx
        .listen(port)
        .with_context(|| format!("listening on {}:{port}", device.ip_address))?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "listening on {}", listener.local_addr())?;
    stdout.flush()?;
    drop(stdout);
    let pd = ctx.alloc_pd()?;
    loop {
        let Some(event) = listener.get_event(None)? else {
            continue;
        };
        let CmEvent::ConnectRequest(req) = event else {
            continue;
        };
        let peer = req.peer_addr();
        let client_buf = match decode_buffer(req.private_data()) {
            Ok(buf) if buf.len > 0 && buf.len <= MAX_SIZE => buf,
            Ok(buf) => {
                warn!(
                    "Rejected {peer}: asks for a buffer of {} bytes (1 B to 1 GiB allowed)",
                    buf.len
                );
                req.reject(b"buffer size out of range")?;
                continue;
            }
            Err(e) => {
                warn!("Rejected {peer}: {e}");
                req.reject(b"expected 16 bytes: addr u64, rkey u32, len u32")?;
                continue;
            }
        };
        let cq = ctx.create_cq(2 * RECV_DEPTH)?;
        let mr = pd.register(client_buf.len as usize, Access::ALL)?;
        let qp = QpConfig::new(&cq, &cq)
            .max_recv_wr(RECV_DEPTH)
            .max_inline_data(device.max_inline_data);
        let conn = req.accept(&pd, &qp, &encode_buffer(&mr))?;
        let mut side = Side {
            conn,
            cq,
            mr,
            remote: client_buf,
            max_inline: device.max_inline_data,
            writes: 0,
        };
        side.post_recvs()?;
        info!(
            "Client {peer} connected; answering writes of up to {} bytes",
            client_buf.len
        );
        match serve_client(&mut side) {
            Ok(n) => info!("Client {peer} disconnected after {n} round trips"),
            Err(e) => warn!("Client {peer}: {e:#}"),
        }
        if args.once {
            return Ok(());
        }
    }
}

/// Answers every write with immediate with one of the same length and immediate, until the
/// client goes away; returns how many it answered.
fn serve_client(side: &mut Side) -> Result<u64> {
    let mut answered = 0;
    while let Some(wc) = side.poll_incoming(None)? {
        let imm = wc
            .imm
            .ok_or_else(|| anyhow!("a write with immediate arrived without one"))?;
        side.write(wc.byte_len, imm)?;
        answered += 1;
    }
    Ok(answered)
}

// ---------------------------------------------------------------------------------------------
// Client.
// ---------------------------------------------------------------------------------------------

/// The spawned server; killed on drop unless it exited on its own.
struct SpawnedServer {
    child: Child,
}

impl SpawnedServer {
    fn start(cli: &Cli) -> Result<(SpawnedServer, SocketAddr)> {
        let exe = std::env::current_exe().context("finding this binary to spawn the server")?;
        let mut cmd = Command::new(&exe);
        if let Some(db) = &cli.device_database {
            cmd.arg("--device-database").arg(db);
        }
        cmd.args(["--name", &cli.name]);
        for _ in 0..cli.verbose {
            cmd.arg("-v");
        }
        cmd.args(["server", "--port", "0", "--once"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped());
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {}", exe.display()))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow!("no stdout pipe to the server"))?;
        let server = SpawnedServer { child };
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + TIMEOUT;
        loop {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) => {
                    if let Some(addr) = line.strip_prefix("listening on ") {
                        let addr = addr
                            .parse()
                            .with_context(|| format!("the server printed {line:?}"))?;
                        debug!("Spawned server {} listens on {addr}", server.child.id());
                        return Ok((server, addr));
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    bail!("the spawned server did not listen within {TIMEOUT:?}")
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    bail!("the spawned server exited before it listened")
                }
            }
        }
    }

    /// Waits for the server to exit after our disconnect; kills it if it does not.
    fn finish(mut self) -> Result<()> {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait()? {
                ensure!(status.success(), "the spawned server exited with {status}");
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the spawned server did not exit within {TIMEOUT:?} of the disconnect");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for SpawnedServer {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn client(cli: &Cli, device: &DeviceConfig, args: &ClientArgs) -> Result<()> {
    let sizes: Vec<u32> = if args.sizes.is_empty() {
        pingpong::default_sizes()
    } else {
        args.sizes.clone()
    };
    let max_size = sizes.iter().copied().max().unwrap_or(1);
    let mut spawned = None;
    let addr = if args.spawn_server {
        let (server, addr) = SpawnedServer::start(cli)?;
        spawned = Some(server);
        addr
    } else {
        let text = args
            .address
            .as_deref()
            .ok_or_else(|| anyhow!("--address or --spawn-server is required"))?;
        text.to_socket_addrs()
            .with_context(|| format!("resolving server address {text:?} (expected HOST:PORT)"))?
            .next()
            .ok_or_else(|| anyhow!("server address {text:?} resolves to nothing"))?
    };
    let mut stats = StatsFile::create(args.output_stats.as_deref())?;

    let ctx = Context::open(device).with_context(|| format!("opening device {}", device.name))?;
    let pd = ctx.alloc_pd()?;
    let cq = ctx.create_cq(2 * RECV_DEPTH)?;
    let mr = pd.register(max_size as usize, Access::ALL)?;
    // Payload bytes that are not all zero, so a lost write would show in a hexdump.
    let chunk: Vec<u8> = (0..64 * 1024).map(|i| (i % 251) as u8).collect();
    for offset in (0..mr.len()).step_by(chunk.len()) {
        let len = chunk.len().min(mr.len() - offset);
        mr.write(offset, &chunk[..len])?;
    }
    let qp = QpConfig::new(&cq, &cq)
        .max_recv_wr(RECV_DEPTH)
        .max_inline_data(device.max_inline_data)
        .timeout(TIMEOUT);
    let conn = ctx
        .connect(&pd, addr, &qp, &encode_buffer(&mr))
        .with_context(|| format!("connecting to {addr}"))?;
    let remote = decode_buffer(conn.peer_private_data()).context("the server's answer")?;
    ensure!(
        remote.len >= max_size,
        "the server offers {} bytes, {max_size} are needed",
        remote.len
    );
    let mut side = Side {
        conn,
        cq,
        mr,
        remote,
        max_inline: device.max_inline_data,
        writes: 0,
    };
    side.post_recvs()?;

    print_header(&ctx, addr, args);
    let mut imm = 0u32;
    for &size in &sizes {
        let mut samples = Samples::with_capacity(args.repetitions as usize);
        for i in 0..args.warmup + args.repetitions {
            imm = imm.wrapping_add(1);
            let start = Instant::now();
            side.write(size, imm)?;
            let wc = side
                .poll_incoming(Some(TIMEOUT))?
                .ok_or_else(|| anyhow!("the server closed the connection"))?;
            let elapsed = start.elapsed();
            ensure!(
                wc.imm == Some(imm) && wc.byte_len == size,
                "expected the answer to write {imm} of {size} bytes, got imm {:?} with {} bytes",
                wc.imm,
                wc.byte_len
            );
            if i >= args.warmup {
                samples.push_duration(elapsed);
            }
        }
        let sum = samples
            .summary()
            .ok_or_else(|| anyhow!("no samples for size {size}"))?;
        println!("{}", pingpong::row(size, &sum));
        stats.add(size, &samples)?;
    }
    println!("{RULE}");
    stats.finish()?;
    drop(side);
    if let Some(server) = spawned {
        server.finish()?;
    }
    Ok(())
}

fn print_header(ctx: &Context, addr: SocketAddr, args: &ClientArgs) {
    let dev = ctx.device();
    println!("{RULE}");
    println!("                     RDMA write-with-immediate ping-pong");
    println!(
        " Provider: {}   Device: {}   Server: {addr}",
        ctx.provider(),
        dev.name
    );
    println!(
        " Warm-up: {} round trips per size   Max inline: {} B",
        args.warmup, dev.max_inline_data
    );
    println!(
        " t = FULL round trip: client write+imm -> server polls -> server write+imm -> client polls"
    );
    println!(
        "     (perftest's ib_write_lat prints half of this; an rFaaS invocation is a round trip)"
    );
    println!(" BW_median = 2 x #bytes / t_median (payload moved both ways), 1 MB = 10^6 B");
    println!("{RULE}");
    println!("{HEADER}");
}
