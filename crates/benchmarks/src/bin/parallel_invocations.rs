//! `parallel_invocations`: one invocation on every leased core at once, repeated; measures
//! the time until all results are back.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context as _, Result, bail};
use benchmarks::setup::{Client, ClientArgs, InvocationArgs};
use benchmarks::{CsvWriter, Samples};
use clap::Parser;

/// Invokes a function on all leased cores in parallel.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    #[command(flatten)]
    client: ClientArgs,
    #[command(flatten)]
    invocation: InvocationArgs,
}

fn main() -> ExitCode {
    let args = Args::parse();
    rfaas_cli::run("parallel_invocations", args.client.verbose, || run(&args))
}

fn run(args: &Args) -> Result<()> {
    tracing::info!("Executing serverless-rdma test parallel_invocations!");
    let client = Client::load(&args.client)?;
    client.pin_if_asked();
    let bench = &client.config.benchmark;
    let executor = client.allocate(args.invocation.size as u32, 1)?;
    let function = executor.function(&args.invocation.name)?;
    let cores = executor.cores();
    let mut inputs = Vec::with_capacity(cores);
    let mut outputs = Vec::with_capacity(cores);
    for core in 0..cores {
        let input = executor.input_buffer(args.invocation.size)?;
        input.write(&vec![core as u8 + 1; args.invocation.size])?;
        inputs.push(input);
        outputs.push(executor.output_buffer(args.invocation.size)?);
    }
    let calls: Vec<(&rfaas::InputBuffer, usize)> =
        inputs.iter().map(|i| (i, args.invocation.size)).collect();
    let outs: Vec<&rfaas::OutputBuffer> = outputs.iter().collect();
    for _ in 0..bench.warmup_repetitions {
        executor.execute_parallel(function, &calls, &outs)?;
    }
    let mut samples = Samples::with_capacity(bench.repetitions as usize);
    let mut lens = Vec::new();
    for _ in 0..bench.repetitions {
        let start = Instant::now();
        lens = executor.execute_parallel(function, &calls, &outs)?;
        samples.push_duration(start.elapsed());
    }
    let summary = samples
        .summary()
        .context("benchmark.json asks for 0 repetitions")?;
    tracing::info!(
        "Executed {} repetitions on {cores} cores, avg {} usec/iter, median {}",
        summary.count,
        summary.mean / 1e3,
        summary.median / 1e3
    );
    if let Some(path) = &args.invocation.output_stats {
        let mut csv = CsvWriter::create(path, &["repetition", "size", "cores", "round_trip_ns"])?;
        for (i, ns) in samples.as_slice().iter().enumerate() {
            csv.row(&[&i, &args.invocation.size, &cores, ns])?;
        }
        csv.finish()
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let mut firsts = Vec::with_capacity(cores);
    for (output, len) in outputs.iter().zip(&lens) {
        if *len as usize > args.invocation.size {
            bail!("a result of {len} bytes is larger than the payload");
        }
        firsts.push(
            output
                .to_vec(*len as usize)?
                .first()
                .map_or("-".to_string(), u8::to_string),
        );
    }
    executor.deallocate();
    println!("Data: {}", firsts.join(" "));
    Ok(())
}
