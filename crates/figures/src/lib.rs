//! Figures of the benchmarks' CSV files, drawn as SVG with `plotters`:
//!
//! - [`latency`]: round trip against payload size for several series (raw ping-pong, native,
//!   wasm), medians with whiskers to the 99th percentile;
//! - [`cold`]: cold-start phases stacked per kind.
//!
//! `rfaas_figure` (this crate's binary) draws them from the files `tools/warm_benchmark.sh` and
//! `tools/cold_benchmark.sh` write, and those scripts call it after a run.
#![deny(missing_docs)]

pub mod cold;
pub mod latency;
pub mod table;

use plotters::chart::{ChartContext, SeriesLabelPosition};
use plotters::coord::CoordTranslate;
use plotters::prelude::{BLACK, Color as _, DrawingBackend, WHITE};
use plotters::style::RGBColor;

/// Series colours, in order: distinguishable, and readable in grey scale.
const COLORS: [RGBColor; 6] = [
    RGBColor(68, 68, 68),
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(214, 39, 40),
];

/// The font family named in the SVG (the viewer picks the face).
const FONT: &str = "sans-serif";

/// plotters' drawing errors carry the backend's error type; the figures report them as text.
fn plot_error<E: std::error::Error + Send + Sync>(
    e: plotters::drawing::DrawingAreaErrorKind<E>,
) -> anyhow::Error {
    anyhow::anyhow!("drawing the figure: {e}")
}

/// Draws the legend of the series drawn so far, at `position` inside the plot.
fn legend<'a, DB: DrawingBackend + 'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, DB, CT>,
    position: SeriesLabelPosition,
) -> anyhow::Result<()> {
    chart
        .configure_series_labels()
        .position(position)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .label_font((FONT, 15))
        .draw()
        .map_err(plot_error)
}

/// `1 B`, `64 B`, `4 KiB`, `1 MiB`: sizes as the benchmarks are asked for them.
pub fn format_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut unit = 0;
    let mut v = n;
    while unit + 1 < UNITS.len() && v >= 1024 && v.is_multiple_of(1024) {
        v /= 1024;
        unit += 1;
    }
    format!("{v} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    #[test]
    fn bytes_in_binary_units() {
        let f = super::format_bytes;
        assert_eq!(
            [f(1), f(64), f(4096), f(65536), f(1 << 20), f(1000)],
            ["1 B", "64 B", "4 KiB", "64 KiB", "1 MiB", "1000 B"]
        );
    }
}
