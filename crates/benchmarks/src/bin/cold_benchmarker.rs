//! `cold_benchmarker`: repeated cold starts. Each repetition takes a lease, allocates an
//! executor (connect, submit, spawn and connect back, initialize), runs the first invocation
//! and deallocates; the phases are timed separately, as rFaaS reports them.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context as _, Result};
use benchmarks::setup::{Client, ClientArgs, InvocationArgs};
use benchmarks::{COLD_PHASES as PHASES, CsvWriter, Samples};
use clap::Parser;
use rfaas::Executor;

/// Measures cold invocations phase by phase.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    #[command(flatten)]
    client: ClientArgs,
    #[command(flatten)]
    invocation: InvocationArgs,
    /// Cold starts to measure (default: `repetitions` of benchmark.json).
    #[arg(long)]
    repetitions: Option<u64>,
    /// Idle time before each cold start (not measured), so the previous allocation has ended
    /// and its lease returned: a cold start on a quiet node.
    #[arg(long, default_value_t = 50)]
    gap_ms: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    rfaas_cli::run("cold_benchmarker", args.client.verbose, || run(&args))
}

fn run(args: &Args) -> Result<()> {
    tracing::info!("Executing serverless-rdma test cold_benchmarker!");
    let client = Client::load(&args.client)?;
    client.pin_if_asked();
    let repetitions = args
        .repetitions
        .unwrap_or(client.config.benchmark.repetitions);
    let mut phases: Vec<Samples> = PHASES
        .iter()
        .map(|_| Samples::with_capacity(repetitions as usize))
        .collect();
    let payload = vec![1u8; args.invocation.size];
    for _ in 0..repetitions {
        std::thread::sleep(std::time::Duration::from_millis(args.gap_ms));
        let start = Instant::now();
        let lease = client.lease()?;
        let leased = start.elapsed();
        let spec = client.spec(args.invocation.size as u32, 1);
        let executor = Executor::allocate(&client.endpoint, &lease, &client.code, &spec)
            .with_context(|| format!("allocating on {} ({})", lease.node, lease.address))?;
        let function = executor.function(&args.invocation.name)?;
        let (input, output) = (
            executor.input_buffer(args.invocation.size)?,
            executor.output_buffer(args.invocation.size)?,
        );
        input.write(&payload)?;
        let first = Instant::now();
        executor.execute(function, &input, args.invocation.size, &output)?;
        let execute = first.elapsed();
        let times = executor.allocation_times();
        executor.deallocate();
        let total = start.elapsed();
        for (samples, d) in phases.iter_mut().zip([
            leased,
            times.connect,
            times.submit,
            times.spawn_connect,
            times.initialize,
            execute,
            total,
        ]) {
            samples.push_duration(d);
        }
    }
    for (name, samples) in PHASES.iter().zip(&phases) {
        let s = samples.summary().context("no repetitions were asked for")?;
        tracing::info!(
            "{name:>13}: median {:10.3} usec, min {:10.3}, max {:10.3}",
            s.median / 1e3,
            s.min as f64 / 1e3,
            s.max as f64 / 1e3
        );
    }
    if let Some(path) = &args.invocation.output_stats {
        let columns: Vec<String> = std::iter::once("repetition".to_owned())
            .chain(PHASES.iter().map(|p| format!("{p}_ns")))
            .collect();
        let columns: Vec<&str> = columns.iter().map(String::as_str).collect();
        let mut csv = CsvWriter::create(path, &columns)?;
        for i in 0..repetitions as usize {
            let row: Vec<u64> = phases.iter().map(|p| p.as_slice()[i]).collect();
            csv.row(&[
                &i, &row[0], &row[1], &row[2], &row[3], &row[4], &row[5], &row[6],
            ])?;
        }
        csv.finish()
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let total = phases[6].summary().context("no repetitions")?;
    tracing::info!(
        "Executed {repetitions} cold starts, median {:.3} usec",
        total.median / 1e3
    );
    Ok(())
}
