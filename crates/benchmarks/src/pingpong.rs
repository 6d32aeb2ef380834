//! What the two ping-pong binaries share: `rdma_pingpong` (write-with-immediate round trips
//! through rdmalib, the raw baseline of the invocation benchmarks) and `plain_pingpong` (the
//! same round trip without rdmalib, the floor under the `shm` and `tcp` providers). Both take
//! the same `--sizes`, print the same table and write the same CSV, so their numbers sit side
//! by side.

use std::path::Path;

use anyhow::{Context as _, Result};

use crate::stats::{CsvWriter, Samples, Summary};

/// Largest payload of one round trip.
pub const MAX_SIZE: u32 = 1 << 30;

/// The columns of `--output-stats`.
pub const CSV_HEADER: [&str; 3] = ["size", "repetition", "round_trip_ns"];

/// Column titles of the table, aligned with [`row`].
pub const HEADER: &str = " #bytes     #iterations   t_min[usec]   t_median[usec]   t_p99[usec]   \
                          t_max[usec]   BW_median[MB/s]";
/// The table's rules.
pub const RULE: &str = "---------------------------------------------------------------------------------------------------";

/// The sizes of `--sizes` when none are given: every power of two from 1 B to 1 MiB.
pub fn default_sizes() -> Vec<u32> {
    (0..=20).map(|i| 1 << i).collect()
}

/// Parses one payload size of `--sizes`: bytes, with K, M or G for powers of 1024.
///
/// ```
/// use benchmarks::pingpong::parse_size;
///
/// assert_eq!(parse_size("4096"), Ok(4096));
/// assert_eq!(parse_size("64K"), Ok(65536));
/// assert!(parse_size("0").is_err() && parse_size("2G").is_err() && parse_size("1T").is_err());
/// ```
pub fn parse_size(text: &str) -> Result<u32, String> {
    let t = text.trim();
    let (digits, unit) = match t.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => t.split_at(i),
        None => (t, ""),
    };
    let not_a_size = || format!("{text:?} is not a size (expected bytes, e.g. 4096 or 64K)");
    let shift = match unit {
        "" => 0,
        "K" | "k" => 10,
        "M" | "m" => 20,
        "G" | "g" => 30,
        _ => return Err(not_a_size()),
    };
    let n: u64 = digits.parse().map_err(|_| not_a_size())?;
    let bytes = n
        .checked_shl(shift)
        .filter(|b| b >> shift == n)
        .unwrap_or(u64::MAX);
    if bytes == 0 || bytes > u64::from(MAX_SIZE) {
        return Err(format!("size {text:?} is out of range (1 B to 1G)"));
    }
    Ok(bytes as u32)
}

/// One line of the table: the summary of `size`'s round trips, in microseconds, and the
/// payload moved both ways per median round trip (MB/s, 1 MB = 10^6 B).
pub fn row(size: u32, sum: &Summary) -> String {
    let usec = |ns: f64| ns / 1000.0;
    let bw = 2.0 * f64::from(size) / usec(sum.median);
    format!(
        " {:<10} {:<13} {:<13.2} {:<16.2} {:<13.2} {:<13.2} {:.2}",
        size,
        sum.count,
        usec(sum.min as f64),
        usec(sum.median),
        usec(sum.p99 as f64),
        usec(sum.max as f64),
        bw
    )
}

/// The CSV of `--output-stats`: every measured round trip of every size.
pub struct StatsFile {
    csv: Option<CsvWriter>,
}

impl StatsFile {
    /// A file at `path`, or nothing to write without one.
    pub fn create(path: Option<&Path>) -> Result<StatsFile> {
        let csv = match path {
            Some(p) => Some(
                CsvWriter::create(p, &CSV_HEADER)
                    .with_context(|| format!("creating {}", p.display()))?,
            ),
            None => None,
        };
        Ok(StatsFile { csv })
    }

    /// Adds the samples of one size.
    pub fn add(&mut self, size: u32, samples: &Samples) -> Result<()> {
        if let Some(csv) = self.csv.as_mut() {
            for (rep, ns) in samples.as_slice().iter().enumerate() {
                csv.row(&[&size, &rep, ns])
                    .context("writing the stats CSV")?;
            }
        }
        Ok(())
    }

    /// Flushes the file.
    pub fn finish(self) -> Result<()> {
        if let Some(csv) = self.csv {
            let path = csv.path().display().to_string();
            csv.finish().with_context(|| format!("writing {path}"))?;
        }
        Ok(())
    }
}
