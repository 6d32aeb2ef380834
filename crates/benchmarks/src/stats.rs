//! Measurements shared by the benchmark binaries: [`Samples`] of nanosecond timings with
//! their order statistics, and a small [`CsvWriter`] for the raw data behind every summary.
//!
//! ```
//! use benchmarks::stats::Samples;
//!
//! let mut s = Samples::new();
//! for ns in [300, 100, 200, 400] {
//!     s.push(ns);
//! }
//! let sum = s.summary().expect("not empty");
//! assert_eq!((sum.min, sum.median, sum.max), (100, 250.0, 400));
//! assert_eq!(s.percentile(99.0), Some(400));
//! ```

use std::fmt::Display;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Timings in nanoseconds, in the order they were measured.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Samples {
    ns: Vec<u64>,
}

impl Samples {
    /// No samples.
    pub fn new() -> Samples {
        Samples::default()
    }

    /// No samples, with room for `n`.
    pub fn with_capacity(n: usize) -> Samples {
        Samples {
            ns: Vec::with_capacity(n),
        }
    }

    /// Adds one timing in nanoseconds.
    pub fn push(&mut self, ns: u64) {
        self.ns.push(ns);
    }

    /// Adds one timing (saturating at `u64::MAX` nanoseconds, about 584 years).
    pub fn push_duration(&mut self, d: Duration) {
        self.push(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    }

    /// The timings in measurement order.
    pub fn as_slice(&self) -> &[u64] {
        &self.ns
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.ns.len()
    }

    /// `true` when nothing was measured.
    pub fn is_empty(&self) -> bool {
        self.ns.is_empty()
    }

    /// Smallest sample.
    pub fn min(&self) -> Option<u64> {
        self.ns.iter().copied().min()
    }

    /// Largest sample.
    pub fn max(&self) -> Option<u64> {
        self.ns.iter().copied().max()
    }

    /// Arithmetic mean.
    pub fn mean(&self) -> Option<f64> {
        (!self.is_empty())
            .then(|| self.ns.iter().map(|&x| x as f64).sum::<f64>() / self.len() as f64)
    }

    /// Median: the middle sample, or the mean of the two middle ones for an even count.
    pub fn median(&self) -> Option<f64> {
        (!self.is_empty()).then(|| median_of_sorted(&self.sorted()))
    }

    /// The `p`-th percentile (0 < `p` ≤ 100) by the nearest-rank method: the smallest sample
    /// that at least `p` % of the samples do not exceed. `percentile(100.0)` is the maximum.
    pub fn percentile(&self, p: f64) -> Option<u64> {
        (!self.is_empty()).then(|| percentile_of_sorted(&self.sorted(), p))
    }

    /// All order statistics at once, sorting only once.
    pub fn summary(&self) -> Option<Summary> {
        if self.is_empty() {
            return None;
        }
        let sorted = self.sorted();
        let mean = self.mean()?;
        let variance = sorted
            .iter()
            .map(|&x| (x as f64 - mean).powi(2))
            .sum::<f64>()
            / sorted.len() as f64;
        Some(Summary {
            count: sorted.len(),
            min: sorted[0],
            max: sorted[sorted.len() - 1],
            mean,
            stdev: variance.sqrt(),
            median: median_of_sorted(&sorted),
            p99: percentile_of_sorted(&sorted, 99.0),
            p999: percentile_of_sorted(&sorted, 99.9),
        })
    }

    fn sorted(&self) -> Vec<u64> {
        let mut v = self.ns.clone();
        v.sort_unstable();
        v
    }
}

impl Extend<u64> for Samples {
    fn extend<I: IntoIterator<Item = u64>>(&mut self, iter: I) {
        self.ns.extend(iter);
    }
}

impl FromIterator<u64> for Samples {
    fn from_iter<I: IntoIterator<Item = u64>>(iter: I) -> Samples {
        Samples {
            ns: iter.into_iter().collect(),
        }
    }
}

fn median_of_sorted(v: &[u64]) -> f64 {
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2] as f64
    } else {
        (v[n / 2 - 1] as f64 + v[n / 2] as f64) / 2.0
    }
}

fn percentile_of_sorted(v: &[u64], p: f64) -> u64 {
    let rank = (p.clamp(0.0, 100.0) / 100.0 * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

/// Order statistics of a [`Samples`], in nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Summary {
    /// Number of samples.
    pub count: usize,
    /// Smallest sample.
    pub min: u64,
    /// Largest sample.
    pub max: u64,
    /// Arithmetic mean.
    pub mean: f64,
    /// Population standard deviation.
    pub stdev: f64,
    /// Median (mean of the two middle samples for an even count).
    pub median: f64,
    /// 99th percentile, nearest rank.
    pub p99: u64,
    /// 99.9th percentile, nearest rank.
    pub p999: u64,
}

/// Writes comma-separated rows with a fixed header, checking every row's width.
///
/// Values are written with `Display` and are not quoted: use it for numbers and plain names.
pub struct CsvWriter {
    out: BufWriter<File>,
    path: PathBuf,
    columns: usize,
}

impl CsvWriter {
    /// Creates (or truncates) `path` and writes the header line.
    pub fn create(path: impl AsRef<Path>, header: &[&str]) -> io::Result<CsvWriter> {
        let path = path.as_ref().to_path_buf();
        let mut out = BufWriter::new(File::create(&path)?);
        writeln!(out, "{}", header.join(","))?;
        Ok(CsvWriter {
            out,
            path,
            columns: header.len(),
        })
    }

    /// The file being written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes one row; it must have as many values as the header has columns.
    pub fn row(&mut self, values: &[&dyn Display]) -> io::Result<()> {
        if values.len() != self.columns {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "a CSV row of {} values for {} columns",
                    values.len(),
                    self.columns
                ),
            ));
        }
        for (i, v) in values.iter().enumerate() {
            if i > 0 {
                self.out.write_all(b",")?;
            }
            write!(self.out, "{v}")?;
        }
        self.out.write_all(b"\n")
    }

    /// Flushes and closes the file, reporting any write error (dropping it would hide them).
    pub fn finish(mut self) -> io::Result<()> {
        self.out.flush()?;
        self.out.get_ref().sync_all()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_statistics() {
        let s: Samples = (1..=100).rev().collect();
        assert_eq!((s.min(), s.max()), (Some(1), Some(100)));
        assert_eq!(s.median(), Some(50.5));
        assert_eq!(s.mean(), Some(50.5));
        assert_eq!(s.percentile(99.0), Some(99));
        assert_eq!(s.percentile(100.0), Some(100));
        assert_eq!(s.percentile(1.0), Some(1));
        assert_eq!(s.percentile(0.0), Some(1));
        let sum = s.summary().unwrap();
        assert_eq!(
            (sum.count, sum.p99, sum.p999, sum.median),
            (100, 99, 100, 50.5)
        );
        assert!((sum.stdev - 28.866).abs() < 0.001, "{}", sum.stdev);
        assert_eq!(s.as_slice()[0], 100, "measurement order is kept");
    }

    #[test]
    fn odd_count_median_and_empty() {
        let s: Samples = [5, 1, 3].into_iter().collect();
        assert_eq!(s.median(), Some(3.0));
        assert_eq!(Samples::new().summary(), None);
        assert_eq!(Samples::new().percentile(50.0), None);
    }

    #[test]
    fn csv_rows_are_checked_and_written() {
        let path =
            std::env::temp_dir().join(format!("benchmarks-stats-{}.csv", std::process::id()));
        let mut w = CsvWriter::create(&path, &["size", "repetition", "round_trip_ns"]).unwrap();
        w.row(&[&1, &0, &1500]).unwrap();
        assert!(w.row(&[&1, &2]).is_err());
        w.finish().unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "size,repetition,round_trip_ns\n1,0,1500\n"
        );
        std::fs::remove_file(path).unwrap();
    }
}
