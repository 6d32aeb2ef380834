//! `lease_latency`: what one lease costs at the resource manager. Asks for `--leases` leases
//! back to back (after `--warmup` untimed ones) on one endpoint, which keeps its connection to
//! the resource manager (`--fresh-connections`: a new one for each lease, as a client's first
//! lease has): lease request, the resource manager picks a node, stores the lease, tells its
//! executor manager, answers. Prints the median and p99 and writes every sample as CSV
//! (`--output-stats`).
//!
//! The leases are not allocated on: the executor manager returns each one to the pool (closes
//! it with an empty bill) once it was unused for a minute. Give the node enough cores for all
//! of them (e.g. `"cores": 100000` in `POST /add`), or the resource manager runs out.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use benchmarks::{CsvWriter, Samples};
use clap::Parser;
use rdmalib::DeviceDatabase;
use rfaas::{Endpoint, Lease};
use rfaas_protocol::config::{BenchmarkConfig, load_json};

/// Back-to-back leases through the resource manager.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Benchmark configuration (benchmark.json): the resource manager's address, and the cores
    /// (`numcores`) and memory (`memory`) of each lease.
    #[arg(long)]
    config: PathBuf,
    /// Device database (devices.json).
    #[arg(long)]
    device_database: PathBuf,
    /// Timed leases.
    #[arg(long, default_value_t = 1000)]
    leases: usize,
    /// Untimed leases first.
    #[arg(long, default_value_t = 20)]
    warmup: usize,
    /// Write every timed lease as CSV (`lease,latency_ns`).
    #[arg(long)]
    output_stats: Option<PathBuf>,
    /// Connect to the resource manager for every lease, as a client's first lease does (by
    /// default the endpoint keeps its connection, as for a client's later leases).
    #[arg(long)]
    fresh_connections: bool,
    /// More logging (-v debug); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
}

fn main() -> ExitCode {
    let args = Args::parse();
    rfaas_cli::run("lease_latency", args.verbose, || run(&args))
}

fn run(args: &Args) -> Result<()> {
    let config: BenchmarkConfig = load_json(&args.config, "benchmark configuration")?;
    let devices = DeviceDatabase::load(&args.device_database)?;
    let endpoint = Endpoint::open(devices.get_or_first(&config.config.rdma_device)?)?;
    let address = config
        .config
        .resource_manager()?
        .context("set resource_manager_address in the benchmark configuration")?;
    let (cores, memory) = (config.benchmark.numcores, config.benchmark.memory);
    let timeout = Duration::from_secs(10);
    let mut samples = Samples::with_capacity(args.leases);
    for i in 0..args.warmup + args.leases {
        let start = Instant::now();
        let lease = Lease::from_resource_manager(&endpoint, address, cores, memory, timeout)
            .with_context(|| format!("lease {i}"))?;
        let took = start.elapsed();
        tracing::debug!("lease {} in {took:?}", lease.lease_id);
        if args.fresh_connections {
            endpoint.close_resource_manager_connections();
        }
        if i >= args.warmup {
            samples.push_duration(took);
        }
    }
    let summary = samples.summary().context("no leases were asked for")?;
    if let Some(path) = &args.output_stats {
        let mut csv = CsvWriter::create(path, &["lease", "latency_ns"])?;
        for (i, ns) in samples.as_slice().iter().enumerate() {
            csv.row(&[&i, ns])?;
        }
        csv.finish()
            .with_context(|| format!("writing {}", path.display()))?;
    }
    println!(
        "{} leases of {cores} core(s), {memory} MiB back to back: median {:.1} us, p99 {:.1} us, min {:.1} us, max {:.1} us",
        summary.count,
        summary.median / 1e3,
        samples.percentile(99.0).unwrap_or(0) as f64 / 1e3,
        summary.min as f64 / 1e3,
        summary.max as f64 / 1e3
    );
    Ok(())
}
