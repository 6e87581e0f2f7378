//! SVG plots: latency distribution (percentile curve on a log axis, the way
//! HdrHistogram plots are usually read) and throughput over time.

use std::path::Path;

use anyhow::{anyhow, Result};
use hdrhistogram::Histogram;
use plotters::prelude::*;

/// Quantiles plotted for a latency curve; the x axis is 1/(1-q), log scale,
/// so 90 %, 99 %, 99.9 % … are evenly spaced.
const QUANTILES: &[f64] = &[
    0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 0.9995, 0.9999, 0.99999,
];

/// One colour family per system (blues for the ceiling, reds for hearsay),
/// a lighter shade for each further series of the same system, so the two
/// systems are told apart at a glance.
#[derive(Default)]
struct Shades {
    ceiling: u8,
    other: u8,
}

impl Shades {
    fn next(&mut self, label: &str) -> RGBAColor {
        let is_ceiling = label.starts_with("ceiling");
        let count = if is_ceiling {
            &mut self.ceiling
        } else {
            &mut self.other
        };
        let k = count.saturating_mul(30).min(180);
        *count = count.saturating_add(1);
        if is_ceiling {
            RGBColor(20, 40 + k, 200).to_rgba()
        } else {
            RGBColor(210, 20 + k, 30).to_rgba()
        }
    }
}

fn err<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow!("plotting: {e}")
}

/// One latency curve per labelled histogram (values in µs).
pub fn latency_svg(path: &Path, title: &str, series: &[(String, &Histogram<u64>)]) -> Result<()> {
    let curves: Vec<(String, Vec<(f64, f64)>)> = series
        .iter()
        .filter(|(_, h)| !h.is_empty())
        .map(|(label, h)| {
            let pts = QUANTILES
                .iter()
                .map(|&q| (1.0 / (1.0 - q), h.value_at_quantile(q) as f64 / 1000.0))
                .collect();
            (label.clone(), pts)
        })
        .collect();
    let y_max = curves
        .iter()
        .flat_map(|(_, p)| p.iter().map(|(_, y)| *y))
        .fold(0.01f64, f64::max)
        * 1.5;
    let y_min = curves
        .iter()
        .flat_map(|(_, p)| p.iter().map(|(_, y)| *y))
        .fold(f64::INFINITY, f64::min)
        .clamp(0.001, y_max / 10.0)
        / 1.5;
    let root = SVGBackend::new(path, (900, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d((1.0f64..100_000.0).log_scale(), (y_min..y_max).log_scale())
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("latency (ms)")
        .x_label_formatter(&|x| {
            let p = (1.0 - 1.0 / x) * 100.0;
            format!("{}%", (p * 1000.0).round() / 1000.0)
        })
        .draw()
        .map_err(err)?;
    let mut shades = Shades::default();
    for (label, pts) in curves {
        let color = shades.next(&label);
        chart
            .draw_series(LineSeries::new(pts, color.stroke_width(2)))
            .map_err(err)?
            .label(label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

/// Operations per second over time, one line per labelled series.
pub fn throughput_svg(path: &Path, title: &str, series: &[(String, Vec<f64>)]) -> Result<()> {
    let x_max = series
        .iter()
        .map(|(_, v)| v.len())
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let y_max = series
        .iter()
        .flat_map(|(_, v)| v.iter().copied())
        .fold(1.0f64, f64::max)
        * 1.15;
    let root = SVGBackend::new(path, (900, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..x_max, 0f64..y_max)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("second of measured window")
        .y_desc("operations / s")
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()
        .map_err(err)?;
    let mut shades = Shades::default();
    for (label, values) in series.iter() {
        let color = shades.next(label);
        // Plot each second's count at the second's midpoint.
        let pts = values.iter().enumerate().map(|(s, v)| (s as f64 + 0.5, *v));
        chart
            .draw_series(LineSeries::new(pts, color.stroke_width(2)))
            .map_err(err)?
            .label(label.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}
