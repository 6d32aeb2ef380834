//! `allocation_load`: many clients allocating at once. `--clients` threads each run
//! `--allocations` times: lease (through the resource manager, or the executors database),
//! allocate, one invocation, deallocate. Prints allocations per second and the latency of an
//! allocation (lease to first result) with its p99, and writes every sample as CSV.

use std::process::ExitCode;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use benchmarks::setup::{Client, ClientArgs, InvocationArgs};
use benchmarks::{CsvWriter, Samples};
use clap::Parser;
use rfaas::Executor;

/// Allocations from many clients at once.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    #[command(flatten)]
    client: ClientArgs,
    #[command(flatten)]
    invocation: InvocationArgs,
    /// Client threads allocating at the same time.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Allocations per client.
    #[arg(long, default_value_t = 25)]
    allocations: usize,
    /// Give up after this many seconds in all.
    #[arg(long, default_value_t = 300)]
    time_limit_s: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    rfaas_cli::run("allocation_load", args.client.verbose, || run(&args))
}

fn run(args: &Args) -> Result<()> {
    let client = Client::load(&args.client)?;
    let deadline = Instant::now() + Duration::from_secs(args.time_limit_s);
    let samples = Mutex::new(Vec::with_capacity(args.clients * args.allocations));
    let started = Instant::now();
    std::thread::scope(|s| -> Result<()> {
        let workers: Vec<_> = (0..args.clients)
            .map(|c| {
                let (client, samples) = (&client, &samples);
                s.spawn(move || -> Result<()> {
                    for a in 0..args.allocations {
                        if Instant::now() > deadline {
                            anyhow::bail!(
                                "client {c}: the time limit passed after {a} allocations"
                            );
                        }
                        let latency = allocate_once(client, &args.invocation, deadline)
                            .with_context(|| format!("client {c}, allocation {a}"))?;
                        samples
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push((c, a, latency));
                    }
                    Ok(())
                })
            })
            .collect();
        for w in workers {
            w.join()
                .map_err(|_| anyhow::anyhow!("a client thread panicked"))??;
        }
        Ok(())
    })?;
    let elapsed = started.elapsed();
    let samples = samples.into_inner().unwrap_or_else(|p| p.into_inner());
    let mut latencies = Samples::with_capacity(samples.len());
    for (_, _, d) in &samples {
        latencies.push_duration(*d);
    }
    let summary = latencies
        .summary()
        .context("no allocations were asked for")?;
    if let Some(path) = &args.invocation.output_stats {
        let mut csv = CsvWriter::create(path, &["client", "allocation", "latency_ns"])?;
        for (c, a, d) in &samples {
            csv.row(&[c, a, &d.as_nanos()])?;
        }
        csv.finish()
            .with_context(|| format!("writing {}", path.display()))?;
    }
    println!(
        "{} allocations by {} clients in {:.3} s: {:.1} allocations/s; latency median {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        samples.len(),
        args.clients,
        elapsed.as_secs_f64(),
        samples.len() as f64 / elapsed.as_secs_f64(),
        summary.median / 1e6,
        latencies.percentile(99.0).unwrap_or(0) as f64 / 1e6,
        summary.max as f64 / 1e6
    );
    Ok(())
}

/// Lease, allocate, one call, deallocate; the time from asking for the lease to the result.
/// While every core is leased to the other clients, asks again until `deadline`.
fn allocate_once(
    client: &Client,
    invocation: &InvocationArgs,
    deadline: Instant,
) -> Result<Duration> {
    let start = Instant::now();
    let lease = client.lease_before(deadline)?;
    let spec = client.spec(invocation.size as u32, 1);
    let executor = Executor::allocate(&client.endpoint, &lease, &client.code, &spec)?;
    let function = executor.function(&invocation.name)?;
    let (input, output) = (
        executor.input_buffer(invocation.size)?,
        executor.output_buffer(invocation.size)?,
    );
    input.write(&vec![1u8; invocation.size])?;
    executor.execute(function, &input, invocation.size, &output)?;
    let latency = start.elapsed();
    executor.deallocate();
    Ok(latency)
}
