//! `workload_benchmark`: the real workloads of `functions-workloads` (matrix multiply,
//! Black-Scholes, thumbnail, SHA-256) invoked hot, warm_benchmarker-style, as a native library
//! and as a WASI module, at two input sizes each; prints per-call medians and the wasm/native
//! ratio.
//!
//! The two kinds take turns in rounds (native, then wasm, per round), one executor at a time so
//! that an idle hot-polling executor takes no core from the measured one. Every result is
//! checked against the benchmark's own computation of it before anything is timed.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context as _, Result, bail};
use benchmarks::setup::{Client, ClientArgs};
use benchmarks::workloads::{WORKLOADS, input, matches, reference};
use benchmarks::{CsvWriter, Samples};
use clap::Parser;
use rfaas::Executor;

/// Times the workloads as native and wasm functions.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// `--functions` is the native library (libworkloads.so).
    #[command(flatten)]
    client: ClientArgs,
    /// The same workloads as a WASI module (workloads.wasm).
    #[arg(long)]
    wasm: PathBuf,
    /// Comma-separated workloads (default: all).
    #[arg(long, value_delimiter = ',', default_values_t = WORKLOADS.map(String::from))]
    workloads: Vec<String>,
    /// Measured invocations per workload, size and kind, over all rounds.
    #[arg(short = 'r', long, default_value_t = 1000)]
    repetitions: usize,
    /// Rounds in which native and wasm take turns.
    #[arg(short = 'n', long, default_value_t = 5)]
    rounds: usize,
    /// Unmeasured invocations before each measured run.
    #[arg(short = 'w', long, default_value_t = 20)]
    warmups: usize,
    /// Write every sample to this CSV file.
    #[arg(long)]
    output_stats: Option<PathBuf>,
}

const KINDS: [&str; 2] = ["native", "wasm"];
const SCALES: [usize; 2] = [0, 1];

/// One workload at one size: its input, the result it must give, and the samples per kind.
struct Case {
    workload: String,
    scale: usize,
    description: String,
    input: Vec<u8>,
    expected: Vec<u8>,
    samples: [Samples; 2],
}

fn main() -> ExitCode {
    let args = Args::parse();
    rfaas_cli::run("workload_benchmark", args.client.verbose, || run(&args))
}

fn run(args: &Args) -> Result<()> {
    if args.rounds == 0 || args.repetitions == 0 {
        bail!("-r and -n must be at least 1");
    }
    let client = Client::load(&args.client)?;
    client.pin_if_asked();
    let wasm = std::fs::read(&args.wasm)
        .with_context(|| format!("cannot read the wasm module {}", args.wasm.display()))?;
    let mut cases = Vec::new();
    for workload in &args.workloads {
        if !WORKLOADS.contains(&workload.as_str()) {
            bail!("no workload {workload}; there are {}", WORKLOADS.join(", "));
        }
        for scale in SCALES {
            let (input, description) = input(workload, scale);
            let expected = reference(workload, &input);
            cases.push(Case {
                workload: workload.clone(),
                scale,
                description,
                input,
                expected,
                samples: Default::default(),
            });
        }
    }
    let max_payload = cases
        .iter()
        .map(|c| c.input.len().max(c.expected.len()))
        .max()
        .unwrap_or(0);
    let per_round = args.repetitions.div_ceil(args.rounds);
    for round in 1..=args.rounds {
        for (k, code) in [&client.code, &wasm].into_iter().enumerate() {
            let kind = KINDS[k];
            tracing::info!("round {round}/{}: {kind}", args.rounds);
            let executor = client.allocate_code(code, max_payload as u32, 1)?;
            for case in &mut cases {
                let samples = measure(&executor, case, per_round, args.warmups)
                    .with_context(|| format!("{} ({kind})", case.workload))?;
                case.samples[k].extend(samples.as_slice().iter().copied());
            }
            executor.deallocate();
        }
    }

    if let Some(path) = &args.output_stats {
        let mut csv = CsvWriter::create(
            path,
            &["workload", "scale", "kind", "repetition", "round_trip_ns"],
        )?;
        for case in &cases {
            for (kind, samples) in KINDS.iter().zip(&case.samples) {
                for (i, ns) in samples.as_slice().iter().enumerate() {
                    csv.row(&[&case.workload, &case.scale, kind, &i, ns])?;
                }
            }
        }
        csv.finish()
            .with_context(|| format!("writing {}", path.display()))?;
    }

    println!(
        "Workloads, medians of {} hot invocations per row in {} rounds, usec (p99 in brackets)",
        per_round * args.rounds,
        args.rounds
    );
    println!(
        "{:<14} {:<18} {:>9} {:>22} {:>22} {:>11}",
        "workload", "input", "bytes", "native", "wasm", "wasm/native"
    );
    for case in &cases {
        let [native, wasm] = [&case.samples[0], &case.samples[1]].map(|s| {
            s.summary()
                .expect("every case has at least one sample per kind")
        });
        let cell =
            |s: &benchmarks::Summary| format!("{:.3} [{:.3}]", s.median / 1e3, s.p99 as f64 / 1e3);
        println!(
            "{:<14} {:<18} {:>9} {:>22} {:>22} {:>11.3}",
            case.workload,
            case.description,
            case.input.len(),
            cell(&native),
            cell(&wasm),
            wasm.median / native.median
        );
    }
    Ok(())
}

/// Checks one result of `case`, then times `repetitions` invocations after `warmups`.
fn measure(
    executor: &Executor,
    case: &Case,
    repetitions: usize,
    warmups: usize,
) -> Result<Samples> {
    let function = executor.function(&case.workload)?;
    let input = executor.input_buffer(case.input.len())?;
    let output = executor.output_buffer(case.expected.len())?;
    input.write(&case.input)?;
    let len = executor.execute(function, &input, case.input.len(), &output)?;
    let got = output.to_vec(len as usize)?;
    if !matches(&case.workload, &got, &case.expected) {
        bail!(
            "wrong result for {} bytes of input: {} bytes, expected {}",
            case.input.len(),
            got.len(),
            case.expected.len()
        );
    }
    for _ in 0..warmups {
        executor.execute(function, &input, case.input.len(), &output)?;
    }
    let mut samples = Samples::with_capacity(repetitions);
    for _ in 0..repetitions {
        let start = Instant::now();
        executor.execute(function, &input, case.input.len(), &output)?;
        samples.push_duration(start.elapsed());
    }
    Ok(samples)
}
