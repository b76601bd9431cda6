//! The SVG plot of a run: throughput (sent, acknowledged, received per second) above end-to-end
//! latency (p50 and p99 per second), both over time.

use std::path::Path;

use plotters::prelude::*;

use crate::report::{RunResult, Sample};

/// A line of a chart: its name, colour and value per sample.
type Line<T> = (&'static str, RGBColor, fn(&Sample) -> T);

/// Drawing the plot failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot draw {path}: {reason}")]
pub struct PlotError {
    path: String,
    reason: String,
}

/// Writes the plot of `result` to `path` (SVG).
pub fn write_svg(result: &RunResult, path: &Path) -> Result<(), PlotError> {
    let fail = |e: &dyn std::fmt::Display| PlotError {
        path: path.display().to_string(),
        reason: e.to_string(),
    };
    let root = SVGBackend::new(path, (1000, 700)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(&e))?;
    let (top, bottom) = root.split_vertically(350);
    let t_max = result
        .timeline
        .iter()
        .map(|s| s.t_s)
        .fold(1.0_f64, f64::max);

    let rate_max = result
        .timeline
        .iter()
        .flat_map(|s| [s.sent_per_s, s.acked_per_s, s.received_per_s])
        .fold(1.0_f64, f64::max)
        * 1.1;
    let mut chart = ChartBuilder::on(&top)
        .caption(
            format!(
                "{} over {} against {}: messages per second",
                result.scenario, result.transport, result.target
            ),
            ("sans-serif", 18),
        )
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..t_max, 0.0..rate_max)
        .map_err(|e| fail(&e))?;
    chart
        .configure_mesh()
        .x_desc("seconds")
        .y_desc("msg/s")
        .draw()
        .map_err(|e| fail(&e))?;
    let series: [Line<f64>; 3] = [
        ("sent", BLUE, |s| s.sent_per_s),
        ("acknowledged", GREEN, |s| s.acked_per_s),
        ("received", RED, |s| s.received_per_s),
    ];
    for (name, color, value) in series {
        chart
            .draw_series(LineSeries::new(
                result.timeline.iter().map(|s| (s.t_s, value(s))),
                color.stroke_width(2),
            ))
            .map_err(|e| fail(&e))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| fail(&e))?;

    let latency_max = result
        .timeline
        .iter()
        .filter_map(|s| s.p99_ms)
        .fold(1.0_f64, f64::max)
        * 1.1;
    let mut chart = ChartBuilder::on(&bottom)
        .caption("end-to-end latency (ms)", ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..t_max, 0.0..latency_max)
        .map_err(|e| fail(&e))?;
    chart
        .configure_mesh()
        .x_desc("seconds")
        .y_desc("ms")
        .draw()
        .map_err(|e| fail(&e))?;
    let latencies: [Line<Option<f64>>; 2] =
        [("p50", BLUE, |s| s.p50_ms), ("p99", RED, |s| s.p99_ms)];
    for (name, color, value) in latencies {
        chart
            .draw_series(LineSeries::new(
                result
                    .timeline
                    .iter()
                    .filter_map(|s| value(s).map(|v| (s.t_s, v))),
                color.stroke_width(2),
            ))
            .map_err(|e| fail(&e))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| fail(&e))?;
    root.present().map_err(|e| fail(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_an_svg_with_both_charts() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("run.svg");
        write_svg(&crate::report::tests::sample_result(), &path)?;
        let svg = std::fs::read_to_string(&path)?;
        assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(100)]);
        assert!(svg.contains("latency"));
        Ok(())
    }
}
