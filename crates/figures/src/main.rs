//! `rfaas_figure`: draws the benchmarks' CSV files as SVG figures.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand};
use rfaas_figures::table::Table;
use rfaas_figures::{cold, latency};

/// Draws benchmark results (the CSV files of `--output-stats`) as SVG figures.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    #[command(subcommand)]
    figure: Figure,
}

#[derive(Subcommand, Debug)]
enum Figure {
    /// Round trip against payload size: a line through the medians of each series, whiskers up
    /// to the 99th percentile. Reads `size` and `round_trip_ns` (rdma_pingpong,
    /// warm_benchmarker); files with the same label are one series.
    Latency {
        /// The SVG file to write.
        #[arg(short, long)]
        output: PathBuf,
        /// The figure's title.
        #[arg(long, default_value = "Round trip against payload size")]
        title: String,
        /// Series as LABEL=CSV, e.g. raw=results/raw_1.csv native=results/native_1.csv.
        #[arg(required = true, value_parser = labelled)]
        series: Vec<(String, PathBuf)>,
    },
    /// Cold-start phases stacked per kind, from cold_benchmarker's CSV files.
    Cold {
        /// The SVG file to write.
        #[arg(short, long)]
        output: PathBuf,
        /// The figure's title.
        #[arg(long, default_value = "Cold start by phase")]
        title: String,
        /// Bars as LABEL=CSV, e.g. native=results-cold/cold_native.csv.
        #[arg(required = true, value_parser = labelled)]
        bars: Vec<(String, PathBuf)>,
    },
}

fn labelled(arg: &str) -> Result<(String, PathBuf), String> {
    match arg.split_once('=') {
        Some((label, path)) if !label.is_empty() && !path.is_empty() => {
            Ok((label.to_owned(), PathBuf::from(path)))
        }
        _ => Err(format!("{arg:?} is not LABEL=CSV")),
    }
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(path) => {
            println!("{}", path.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("rfaas_figure: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<PathBuf> {
    match args.figure {
        Figure::Latency {
            output,
            title,
            series,
        } => {
            let mut labels: Vec<&str> = Vec::new();
            for (label, _) in &series {
                if !labels.contains(&label.as_str()) {
                    labels.push(label);
                }
            }
            let lines = labels
                .iter()
                .map(|&label| {
                    let tables = series
                        .iter()
                        .filter(|(l, _)| l == label)
                        .map(|(_, path)| Table::read(path))
                        .collect::<Result<Vec<_>>>()?;
                    latency::Series::from_tables(label, &tables)
                })
                .collect::<Result<Vec<_>>>()?;
            latency::draw(&lines, &title, &output)
                .with_context(|| format!("writing {}", output.display()))?;
            Ok(output)
        }
        Figure::Cold {
            output,
            title,
            bars,
        } => {
            let bars = bars
                .iter()
                .map(|(label, path)| cold::Bar::from_table(label, &Table::read(path)?))
                .collect::<Result<Vec<_>>>()?;
            cold::draw(&bars, &title, &output)
                .with_context(|| format!("writing {}", output.display()))?;
            Ok(output)
        }
    }
}
