//! Latency against payload size: one line per series (raw ping-pong, native, wasm) through the
//! medians, with a whisker from each median up to its 99th percentile. Both axes are
//! logarithmic: payloads span 1 B to MiB, round trips microseconds to milliseconds.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Result, bail};
use benchmarks::Samples;
use plotters::prelude::*;

use crate::table::Table;
use crate::{COLORS, FONT, format_bytes, legend, plot_error};

/// One payload size of a series.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Point {
    /// Payload in bytes.
    pub size: u64,
    /// Median round trip, nanoseconds.
    pub median_ns: f64,
    /// 99th percentile (nearest rank), nanoseconds.
    pub p99_ns: u64,
    /// Round trips measured.
    pub count: usize,
}

/// A line of the figure.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// The legend's text.
    pub label: String,
    /// One point per payload size, by size.
    pub points: Vec<Point>,
}

impl Series {
    /// The round trips of `tables` (columns `size` and `round_trip_ns`, as `rdma_pingpong` and
    /// `warm_benchmarker` write them), grouped by size over all tables.
    pub fn from_tables(label: &str, tables: &[Table]) -> Result<Series> {
        let mut by_size: BTreeMap<u64, Samples> = BTreeMap::new();
        for t in tables {
            for (size, ns) in t
                .column("size")?
                .into_iter()
                .zip(t.column("round_trip_ns")?)
            {
                by_size.entry(size).or_default().push(ns);
            }
        }
        if by_size.is_empty() {
            bail!("series {label:?} has no round trips");
        }
        if by_size.contains_key(&0) {
            bail!("series {label:?} has payloads of 0 bytes, which a logarithmic axis cannot show");
        }
        let points = by_size
            .into_iter()
            .filter_map(|(size, samples)| {
                let s = samples.summary()?;
                Some(Point {
                    size,
                    median_ns: s.median,
                    p99_ns: s.p99,
                    count: s.count,
                })
            })
            .collect();
        Ok(Series {
            label: label.to_owned(),
            points,
        })
    }
}

/// Draws `series` as an SVG file at `path`.
pub fn draw(series: &[Series], title: &str, path: &Path) -> Result<()> {
    let points = || series.iter().flat_map(|s| &s.points);
    let Some(first) = points().next() else {
        bail!("nothing to draw: no series");
    };
    let us = |ns: f64| ns / 1e3;
    let (mut lo_size, mut hi_size) = (first.size, first.size);
    let (mut lo_us, mut hi_us) = (f64::MAX, 0f64);
    for p in points() {
        lo_size = lo_size.min(p.size);
        hi_size = hi_size.max(p.size);
        lo_us = lo_us.min(us(p.median_ns));
        hi_us = hi_us.max(us(p.p99_ns as f64));
    }
    let mut sizes: Vec<f64> = points().map(|p| p.size as f64).collect();
    sizes.sort_by(f64::total_cmp);
    sizes.dedup();

    let root = SVGBackend::new(path, (960, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_error)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, (FONT, 22))
        .margin(16)
        .x_label_area_size(52)
        .y_label_area_size(72)
        .build_cartesian_2d(
            (lo_size as f64 / 2.0..hi_size as f64 * 2.0)
                .log_scale()
                .with_key_points(sizes),
            (lo_us / 1.5..hi_us * 1.5).log_scale(),
        )
        .map_err(plot_error)?;
    chart
        .configure_mesh()
        .x_desc("payload")
        .y_desc("round trip (µs): median, whisker to p99")
        .x_label_formatter(&|x| format_bytes(x.round() as u64))
        .y_label_formatter(&|y| format!("{y}"))
        .label_style((FONT, 14))
        .draw()
        .map_err(plot_error)?;

    for (k, s) in series.iter().enumerate() {
        let color = COLORS[k % COLORS.len()];
        // Series side by side around each size, so whiskers of equal sizes do not hide each other.
        let shift = 1.06f64.powf(k as f64 - (series.len() as f64 - 1.0) / 2.0);
        let at = |p: &Point| p.size as f64 * shift;
        chart
            .draw_series(LineSeries::new(
                s.points.iter().map(|p| (at(p), us(p.median_ns))),
                color.stroke_width(2),
            ))
            .map_err(plot_error)?
            .label(&s.label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 24, y)], color.stroke_width(2))
            });
        chart
            .draw_series(s.points.iter().map(|p| {
                let m = us(p.median_ns);
                ErrorBar::new_vertical(at(p), m, m, us(p.p99_ns as f64), color.stroke_width(1), 8)
            }))
            .map_err(plot_error)?;
        chart
            .draw_series(
                s.points
                    .iter()
                    .map(|p| Circle::new((at(p), us(p.median_ns)), 4, color.filled())),
            )
            .map_err(plot_error)?;
    }
    legend(&mut chart, SeriesLabelPosition::UpperLeft)?;
    root.present().map_err(plot_error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_grouped_over_tables() {
        let a = Table::parse(
            Path::new("r1.csv"),
            "size,repetition,round_trip_ns\n1,0,100\n1,1,300\n64,0,900\n",
        )
        .unwrap();
        let b = Table::parse(
            Path::new("r2.csv"),
            "repetition,size,round_trip_ns\n0,1,200\n",
        )
        .unwrap();
        let s = Series::from_tables("raw", &[a, b]).unwrap();
        assert_eq!(
            s.points,
            [
                Point {
                    size: 1,
                    median_ns: 200.0,
                    p99_ns: 300,
                    count: 3
                },
                Point {
                    size: 64,
                    median_ns: 900.0,
                    p99_ns: 900,
                    count: 1
                },
            ]
        );
        let zero = Table::parse(Path::new("z.csv"), "size,round_trip_ns\n0,5\n").unwrap();
        let e = Series::from_tables("z", &[zero]).unwrap_err().to_string();
        assert!(e.contains("0 bytes"), "{e}");
    }
}
