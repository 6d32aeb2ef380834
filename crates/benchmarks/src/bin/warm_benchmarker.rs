//! `warm_benchmarker`: allocates one executor and measures repeated invocations of one
//! function (hot or warm, per `hot_timeout` in benchmark.json), as the seed's benchmark does.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context as _, Result, bail};
use benchmarks::setup::{Client, ClientArgs, InvocationArgs};
use benchmarks::{CsvWriter, Samples};
use clap::Parser;

/// Measures warm and hot invocations of one function.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    #[command(flatten)]
    client: ClientArgs,
    #[command(flatten)]
    invocation: InvocationArgs,
    /// Take the payload from this file (default: `size` bytes of value 1, as the seed does).
    #[arg(long)]
    input_file: Option<PathBuf>,
    /// Write the last result's bytes to this file.
    #[arg(long)]
    output_file: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    rfaas_cli::run("warm_benchmarker", args.client.verbose, || run(&args))
}

fn run(args: &Args) -> Result<()> {
    tracing::info!("Executing serverless-rdma test warm_benchmarker!");
    let client = Client::load(&args.client)?;
    client.pin_if_asked();
    let payload = match &args.input_file {
        Some(path) => {
            let data =
                std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            if data.len() < args.invocation.size {
                bail!(
                    "{} has {} bytes, fewer than -s {}",
                    path.display(),
                    data.len(),
                    args.invocation.size
                );
            }
            data[..args.invocation.size].to_vec()
        }
        None => vec![1u8; args.invocation.size],
    };
    let bench = &client.config.benchmark;
    let executor = client.allocate(args.invocation.size as u32, 1)?;
    let function = executor.function(&args.invocation.name)?;
    let input = executor.input_buffer(args.invocation.size)?;
    let output = executor.output_buffer(args.invocation.size)?;
    input.write(&payload)?;

    tracing::info!("Warmups begin");
    for _ in 0..bench.warmup_repetitions {
        executor.execute(function, &input, args.invocation.size, &output)?;
    }
    tracing::info!("Warmups completed");
    let mut samples = Samples::with_capacity(bench.repetitions as usize);
    let mut result_len = 0;
    for _ in 0..bench.repetitions {
        let start = Instant::now();
        result_len = executor.execute(function, &input, args.invocation.size, &output)?;
        samples.push_duration(start.elapsed());
    }
    let summary = samples
        .summary()
        .context("benchmark.json asks for 0 repetitions")?;
    tracing::info!(
        "Executed {} repetitions, avg {} usec/iter, median {}",
        summary.count,
        summary.mean / 1e3,
        summary.median / 1e3
    );
    let result = output.to_vec(result_len as usize)?;
    if let Some(path) = &args.invocation.output_stats {
        let mut csv = CsvWriter::create(path, &["repetition", "size", "round_trip_ns"])?;
        for (i, ns) in samples.as_slice().iter().enumerate() {
            csv.row(&[&i, &args.invocation.size, ns])?;
        }
        csv.finish()
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.output_file {
        std::fs::write(path, &result).with_context(|| format!("writing {}", path.display()))?;
    }
    executor.deallocate();
    let shown: Vec<String> = result.iter().take(16).map(u8::to_string).collect();
    println!(
        "Data: {}{}",
        shown.join(" "),
        if result.len() > 16 { " ..." } else { "" }
    );
    Ok(())
}
