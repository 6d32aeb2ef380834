//! `plain_pingpong`: the floor under the `shm` and `tcp` providers. It times the round trip of
//! `rdma_pingpong` (the client sends a payload, the server answers with as many bytes) without
//! rdmalib, so that what a provider adds over its medium is a difference of two medians.
//!
//! - `--medium memory`: the client and a forked server share one mapping. A side copies the
//!   payload into the other's area, then publishes a sequence number on its own cache line,
//!   which the other side spins on. One copy per direction, as a write into remote memory; at
//!   1 B it is the two-process cache-line ping-pong. This is the floor of `shm`.
//! - `--medium tcp`: a loopback TCP connection with `TCP_NODELAY`, both sides busy-polling
//!   non-blocking sockets. This is the floor of `tcp`.
//!
//! ```text
//! plain_pingpong --medium memory --sizes 1,4096,1M --output-stats floor.csv
//! ```

mod shared;

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::ops::Range;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail, ensure};
use benchmarks::pingpong::{self, HEADER, RULE, StatsFile, parse_size};
use benchmarks::stats::Samples;
use clap::{ArgAction, Parser, ValueEnum};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::Pid;
use shared::{SharedPages, fork_child};

/// How long one round trip, the connection or the server's exit may take.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Spins between looks at the clock in the measured loops.
const SPINS_PER_CLOCK: u32 = 4096;

#[derive(Parser, Debug)]
#[command(
    name = "plain_pingpong",
    version,
    about = "The floor under the shm and tcp providers: rdma_pingpong's round trip without \
             rdmalib, over shared memory (one copy each way, a cache-line flag) or a \
             busy-polled loopback TCP socket, against a forked server",
    after_help = "Examples:\n  \
        plain_pingpong --medium memory --sizes 1,4096,1M --output-stats floor.csv\n  \
        plain_pingpong --medium tcp --sizes 1,65536"
)]
struct Cli {
    /// What carries the bytes.
    #[arg(long, value_enum)]
    medium: Medium,

    /// Address the tcp server listens on and the client connects to.
    #[arg(long, value_name = "IP", default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    address: IpAddr,

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

    /// More log output on stderr (-v debug, -vv trace); RUST_LOG overrides it.
    #[arg(short, long, action = ArgAction::Count)]
    verbose: u8,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Medium {
    /// Shared memory: one copy each way and a flag on its own cache line (the floor of shm).
    Memory,
    /// A loopback TCP socket, busy-polled (the floor of tcp).
    Tcp,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    rfaas_cli::run("plain_pingpong", cli.verbose, || run(&cli))
}

/// One side's end of the medium: sends `len` payload bytes, waits for the peer's.
trait Exchange {
    fn send(&mut self, len: u32) -> Result<()>;
    /// Waits for the peer's next payload and returns its length; `None` when the peer is done.
    fn receive(&mut self, timeout: Option<Duration>) -> Result<Option<u32>>;
}

fn run(cli: &Cli) -> Result<()> {
    let sizes = if cli.sizes.is_empty() {
        pingpong::default_sizes()
    } else {
        cli.sizes.clone()
    };
    let max_size = sizes.iter().copied().max().unwrap_or(1);
    let mut stats = StatsFile::create(cli.output_stats.as_deref())?;
    // The server is forked before this process starts any thread (see `fork_child`).
    match cli.medium {
        Medium::Memory => {
            let pages = SharedPages::new(Memory::WORDS, max_size as usize)?;
            let server = fork_child(|| serve(Memory::new(&pages, Memory::SERVER, max_size)))?;
            let mut client = Memory::new(&pages, Memory::CLIENT, max_size);
            measure(cli, &sizes, &mut client, &mut stats)?;
            drop(client);
            wait_for(server)?;
        }
        Medium::Tcp => {
            let listener = TcpListener::bind(SocketAddr::new(cli.address, 0))
                .with_context(|| format!("listening on {}", cli.address))?;
            let addr = listener.local_addr()?;
            let server = fork_child(|| match Tcp::accept(&listener, max_size) {
                Ok(tcp) => serve(tcp),
                Err(e) => {
                    eprintln!("plain_pingpong server: {e:#}");
                    1
                }
            })?;
            drop(listener);
            let mut client = Tcp::connect(addr, max_size)?;
            measure(cli, &sizes, &mut client, &mut stats)?;
            drop(client);
            wait_for(server)?;
        }
    }
    stats.finish()
}

/// Times `cli.repetitions` round trips of each size and prints the table.
fn measure(
    cli: &Cli,
    sizes: &[u32],
    client: &mut impl Exchange,
    stats: &mut StatsFile,
) -> Result<()> {
    print_header(cli);
    for &size in sizes {
        let mut samples = Samples::with_capacity(cli.repetitions as usize);
        for i in 0..cli.warmup + cli.repetitions {
            let start = Instant::now();
            client.send(size)?;
            let got = client
                .receive(Some(TIMEOUT))?
                .ok_or_else(|| anyhow!("the server went away"))?;
            let elapsed = start.elapsed();
            ensure!(got == size, "sent {size} bytes, the server answered {got}");
            if i >= cli.warmup {
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
    Ok(())
}

/// Waits for the forked server, which exits once the client is done.
fn wait_for(server: Pid) -> Result<()> {
    match waitpid(server, None).context("waiting for the server")? {
        WaitStatus::Exited(_, 0) => Ok(()),
        status => bail!("the server ended with {status:?}"),
    }
}

/// The server's loop: answer every payload with as many bytes until the client is done.
/// Returns the exit status of the forked process.
fn serve(mut side: impl Exchange) -> i32 {
    loop {
        match side.receive(Some(TIMEOUT)) {
            Ok(Some(len)) => {
                if let Err(e) = side.send(len) {
                    eprintln!("plain_pingpong server: {e:#}");
                    return 1;
                }
            }
            Ok(None) => return 0,
            Err(e) => {
                eprintln!("plain_pingpong server: {e:#}");
                return 1;
            }
        }
    }
}

fn print_header(cli: &Cli) {
    println!("{RULE}");
    println!("                     Plain ping-pong: the floor under rdmalib's providers");
    match cli.medium {
        Medium::Memory => println!(
            " Medium: shared memory (one copy each way, then a sequence number on its own cache line)"
        ),
        Medium::Tcp => println!(
            " Medium: TCP over {} (TCP_NODELAY, both sides busy-polling)",
            cli.address
        ),
    }
    println!(" Warm-up: {} round trips per size", cli.warmup);
    println!(
        " t = FULL round trip: client sends -> server answers with as many bytes -> client has them"
    );
    println!(" BW_median = 2 x #bytes / t_median (payload moved both ways), 1 MB = 10^6 B");
    println!("{RULE}");
    println!("{HEADER}");
}

/// Spins on `ready` until it holds, looking at the clock every [`SPINS_PER_CLOCK`] spins.
fn spin_until(timeout: Option<Duration>, mut ready: impl FnMut() -> Result<bool>) -> Result<()> {
    let mut spins = 0u32;
    let mut since: Option<Instant> = None;
    while !ready()? {
        std::hint::spin_loop();
        spins = spins.wrapping_add(1);
        if let Some(timeout) = timeout
            && spins.is_multiple_of(SPINS_PER_CLOCK)
            && since.get_or_insert_with(Instant::now).elapsed() > timeout
        {
            bail!("no answer from the peer within {timeout:?}");
        }
    }
    Ok(())
}

/// One side of the shared-memory ping-pong.
///
/// Control words: per side, `seq` (how many payloads it published) and `len` (the length of
/// the last one), written only by that side. The client's payloads go to area 0, the
/// server's to area 1. A side writes the other's area only while the other waits for it, and
/// nobody reads the areas: as with a remote write, the bytes just land.
struct Memory<'a> {
    pages: &'a SharedPages,
    me: usize,
    payload: Vec<u8>,
    sent: u64,
    received: u64,
}

impl<'a> Memory<'a> {
    const CLIENT: usize = 0;
    const SERVER: usize = 1;
    const WORDS: usize = 4;
    /// The client's `seq` value that tells the server to exit.
    const DONE: u64 = u64::MAX;

    fn new(pages: &'a SharedPages, me: usize, max_size: u32) -> Memory<'a> {
        Memory {
            pages,
            me,
            payload: (0..max_size).map(|i| (i % 251) as u8).collect(),
            sent: 0,
            received: 0,
        }
    }

    fn seq(&self, side: usize) -> &'a AtomicU64 {
        self.pages.word(2 * side)
    }

    fn len(&self, side: usize) -> &'a AtomicU64 {
        self.pages.word(2 * side + 1)
    }

    fn peer(&self) -> usize {
        1 - self.me
    }
}

impl Exchange for Memory<'_> {
    fn send(&mut self, len: u32) -> Result<()> {
        // The other side's area: the client writes area 0, the server area 1.
        self.pages.copy_into(self.me, &self.payload[..len as usize]);
        self.len(self.me).store(u64::from(len), Ordering::Relaxed);
        self.sent += 1;
        self.seq(self.me).store(self.sent, Ordering::Release);
        Ok(())
    }

    fn receive(&mut self, timeout: Option<Duration>) -> Result<Option<u32>> {
        let want = self.received + 1;
        let seq = self.seq(self.peer());
        spin_until(timeout, || {
            let s = seq.load(Ordering::Acquire);
            Ok(s == want || s == Self::DONE)
        })?;
        if seq.load(Ordering::Acquire) == Self::DONE {
            return Ok(None);
        }
        self.received = want;
        Ok(Some(self.len(self.peer()).load(Ordering::Relaxed) as u32))
    }
}

impl Drop for Memory<'_> {
    fn drop(&mut self) {
        if self.me == Self::CLIENT {
            self.seq(self.me).store(Self::DONE, Ordering::Release);
        }
    }
}

/// One side of the TCP ping-pong: a non-blocking socket and a buffer of the largest payload
/// behind a 4-byte length (the frame a stream needs, as the tcp provider's header).
struct Tcp {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Tcp {
    fn connect(addr: SocketAddr, max_size: u32) -> Result<Tcp> {
        let stream = TcpStream::connect_timeout(&addr, TIMEOUT)
            .with_context(|| format!("connecting to the server at {addr}"))?;
        Tcp::new(stream, max_size)
    }

    /// Takes the one client, giving up after [`TIMEOUT`].
    fn accept(listener: &TcpListener, max_size: u32) -> Result<Tcp> {
        listener.set_nonblocking(true)?;
        let deadline = Instant::now() + TIMEOUT;
        loop {
            match listener.accept() {
                Ok((stream, _)) => return Tcp::new(stream, max_size),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(e) => return Err(e).context("waiting for the client"),
            }
        }
    }

    fn new(stream: TcpStream, max_size: u32) -> Result<Tcp> {
        stream.set_nodelay(true)?;
        stream.set_nonblocking(true)?;
        Ok(Tcp {
            stream,
            buf: (0..4 + max_size).map(|i| (i % 251) as u8).collect(),
        })
    }

    /// Fills `buf[range]` from the socket; `false` if the peer closed it before the first
    /// byte.
    fn fill(&mut self, range: Range<usize>, timeout: Option<Duration>) -> Result<bool> {
        let mut at = range.start;
        let mut closed = false;
        spin_until(timeout, || {
            if at == range.end {
                return Ok(true);
            }
            match self.stream.read(&mut self.buf[at..range.end]) {
                Ok(0) => {
                    closed = true;
                    Ok(true)
                }
                Ok(k) => {
                    at += k;
                    Ok(at == range.end)
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
                Err(e) => Err(e).context("reading from the peer"),
            }
        })?;
        ensure!(
            !closed || at == range.start,
            "the peer closed the connection in the middle of a payload"
        );
        Ok(!closed)
    }
}

impl Exchange for Tcp {
    fn send(&mut self, len: u32) -> Result<()> {
        self.buf[..4].copy_from_slice(&len.to_le_bytes());
        let total = 4 + len as usize;
        let mut sent = 0;
        spin_until(Some(TIMEOUT), || {
            match self.stream.write(&self.buf[sent..total]) {
                Ok(k) => {
                    sent += k;
                    Ok(sent == total)
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
                Err(e) => Err(e).context("writing to the peer"),
            }
        })
    }

    fn receive(&mut self, timeout: Option<Duration>) -> Result<Option<u32>> {
        if !self.fill(0..4, timeout)? {
            return Ok(None);
        }
        let len = u32::from_le_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]);
        let total = 4 + len as usize;
        ensure!(
            total <= self.buf.len(),
            "the peer announced {len} bytes, more than the largest payload"
        );
        ensure!(
            self.fill(4..total, timeout)?,
            "the peer closed the connection in the middle of a payload"
        );
        Ok(Some(len))
    }
}
