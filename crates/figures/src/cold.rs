//! Cold starts by phase: one stacked bar per kind (native, wasm with an empty compile cache,
//! wasm with a warm one), each phase's median a segment, the median total written above.
//! The segments need not add up to the total's median: medians of parts are not parts of the
//! median, and `total` also covers buffer registration and deallocation.

use std::path::Path;

use anyhow::{Context as _, Result, bail};
use benchmarks::{COLD_PHASES, Samples};
use plotters::prelude::*;

use crate::table::Table;
use crate::{COLORS, FONT, legend, plot_error};

/// The phases of a cold start, in the order they happen (`total` is not one of them).
pub const PHASES: [&str; 6] = {
    let [
        lease,
        connect,
        submit,
        spawn_connect,
        initialize,
        execute,
        _total,
    ] = COLD_PHASES;
    [lease, connect, submit, spawn_connect, initialize, execute]
};

/// One bar: a kind's phase medians.
#[derive(Clone, Debug, PartialEq)]
pub struct Bar {
    /// The text under the bar.
    pub label: String,
    /// Median of each of [`PHASES`], nanoseconds.
    pub phase_median_ns: [f64; PHASES.len()],
    /// Median of `total_ns`.
    pub total_median_ns: f64,
    /// Cold starts measured.
    pub count: usize,
}

impl Bar {
    /// The phase medians of a `cold_benchmarker --output-stats` file.
    pub fn from_table(label: &str, table: &Table) -> Result<Bar> {
        let median = |column: &str| -> Result<(f64, usize)> {
            let s: Samples = table.column(column)?.into_iter().collect();
            let s = s
                .summary()
                .with_context(|| format!("{} has no cold starts", table.path().display()))?;
            Ok((s.median, s.count))
        };
        let mut phase_median_ns = [0.0; PHASES.len()];
        for (m, phase) in phase_median_ns.iter_mut().zip(PHASES) {
            *m = median(&format!("{phase}_ns"))?.0;
        }
        let (total_median_ns, count) = median("total_ns")?;
        Ok(Bar {
            label: label.to_owned(),
            phase_median_ns,
            total_median_ns,
            count,
        })
    }
}

/// Draws `bars` as an SVG file at `path`.
pub fn draw(bars: &[Bar], title: &str, path: &Path) -> Result<()> {
    if bars.is_empty() {
        bail!("nothing to draw: no bars");
    }
    let ms = |ns: f64| ns / 1e6;
    let top = bars
        .iter()
        .map(|b| ms(b.phase_median_ns.iter().sum::<f64>()).max(ms(b.total_median_ns)))
        .fold(0.0, f64::max);

    let root = SVGBackend::new(path, (960, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_error)?;
    let n = bars.len();
    // Headroom above the tallest bar holds its total and the legend.
    let mut chart = ChartBuilder::on(&root)
        .caption(title, (FONT, 22))
        .margin(16)
        .x_label_area_size(52)
        .y_label_area_size(72)
        .build_cartesian_2d(-0.5..n as f64 - 0.5, 0.0..top * 1.5)
        .map_err(plot_error)?;
    let labels: Vec<String> = bars
        .iter()
        .map(|b| format!("{} (n={})", b.label, b.count))
        .collect();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n)
        .x_label_formatter(&|x| {
            let i = x.round();
            if (x - i).abs() < 1e-6 && i >= 0.0 {
                labels.get(i as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .y_desc("milliseconds (phase medians)")
        .label_style((FONT, 14))
        .draw()
        .map_err(plot_error)?;

    for (p, phase) in PHASES.iter().enumerate() {
        let color = COLORS[p % COLORS.len()];
        chart
            .draw_series(bars.iter().enumerate().map(|(i, b)| {
                let below = ms(b.phase_median_ns[..p].iter().sum());
                let x = i as f64;
                Rectangle::new(
                    [
                        (x - 0.3, below),
                        (x + 0.3, below + ms(b.phase_median_ns[p])),
                    ],
                    color.filled(),
                )
            }))
            .map_err(plot_error)?
            .label(*phase)
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], color.filled()));
    }
    chart
        .draw_series(bars.iter().enumerate().map(|(i, b)| {
            let stacked = ms(b.phase_median_ns.iter().sum());
            Text::new(
                format!("total {:.2} ms", ms(b.total_median_ns)),
                (i as f64 - 0.3, stacked + top * 0.06),
                (FONT, 15),
            )
        }))
        .map_err(plot_error)?;
    legend(&mut chart, SeriesLabelPosition::UpperRight)?;
    root.present().map_err(plot_error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phase_medians_of_a_cold_benchmarker_file() {
        let header = "repetition,lease_ns,connect_ns,submit_ns,spawn_connect_ns,initialize_ns,execute_ns,total_ns";
        let t = Table::parse(
            Path::new("cold.csv"),
            &format!("{header}\n0,10,20,30,40,50,60,250\n1,30,20,30,40,50,60,270\n2,20,20,30,40,50,60,260\n"),
        )
        .unwrap();
        let b = Bar::from_table("native", &t).unwrap();
        assert_eq!(b.phase_median_ns, [20.0, 20.0, 30.0, 40.0, 50.0, 60.0]);
        assert_eq!((b.total_median_ns, b.count), (260.0, 3));
        let warm = Table::parse(Path::new("warm.csv"), "size,round_trip_ns\n1,5\n").unwrap();
        let e = Bar::from_table("x", &warm).unwrap_err().to_string();
        assert!(e.contains("no column \"lease_ns\""), "{e}");
    }
}
