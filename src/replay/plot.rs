//! `timeline.svg`: RSS (with the budget), pending requests and the load
//! rates over time, one panel each, phase boundaries as vertical lines.

use plotters::prelude::*;

use super::phases::Kind;
use super::report::Sample;

struct Series {
    name: &'static str,
    color: RGBColor,
    points: Vec<(f64, f64)>,
}

struct Panel {
    title: &'static str,
    series: Vec<Series>,
}

fn series(
    samples: &[Sample],
    name: &'static str,
    color: RGBColor,
    f: impl Fn(&Sample) -> Option<f64>,
) -> Series {
    Series {
        name,
        color,
        points: samples
            .iter()
            .filter_map(|s| f(s).map(|v| (s.t, v)))
            .collect(),
    }
}

fn rate(kind: Kind, j: usize) -> impl Fn(&Sample) -> Option<f64> {
    move |s: &Sample| Some(s.rates[kind as usize][j])
}

fn panels(samples: &[Sample], budget: u64) -> Vec<Panel> {
    let mib = |b: u64| b as f64 / f64::from(1 << 20);
    vec![
        Panel {
            title: "target RSS (MiB)",
            series: vec![
                series(samples, "rss", RED, |s| s.rss.map(mib)),
                series(samples, "budget", BLACK, |_| Some(mib(budget))),
            ],
        },
        Panel {
            title: "gateway pending requests / overload state x100",
            series: vec![
                series(samples, "pending", BLUE, |s| s.pending),
                series(samples, "overload x100", MAGENTA, |s| {
                    s.overload.map(|o| o * 100.0)
                }),
            ],
        },
        Panel {
            title: "HTTP/2 requests per second",
            series: vec![
                series(samples, "api ok", GREEN, rate(Kind::Api, 0)),
                series(samples, "api err", RED, rate(Kind::Api, 1)),
                series(samples, "upstream ok", BLUE, rate(Kind::Upstream, 0)),
                series(samples, "upstream err", MAGENTA, rate(Kind::Upstream, 1)),
            ],
        },
        Panel {
            title: "legit DHCP DORAs per second / health (1 = up)",
            series: vec![
                series(samples, "dhcp ok", GREEN, rate(Kind::Dhcp, 0)),
                series(samples, "dhcp err", RED, rate(Kind::Dhcp, 1)),
                series(samples, "health", BLACK, |s| {
                    Some(f64::from(u8::from(s.health_ok)))
                }),
            ],
        },
        Panel {
            title: "DHCP flood packets per second",
            series: vec![
                series(samples, "sent", BLUE, rate(Kind::FloodSent, 0)),
                series(samples, "answered", GREEN, rate(Kind::FloodAnswered, 0)),
            ],
        },
    ]
}

/// Renders the SVG text.
pub fn svg(samples: &[Sample], budget: u64) -> anyhow::Result<String> {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (1200, 1500)).into_drawing_area();
        root.fill(&WHITE)
            .map_err(|e| anyhow::anyhow!("plot: {e}"))?;
        let tmax = samples.last().map_or(1.0, |s| s.t.max(1.0));
        let bounds: Vec<(f64, &'static str)> = samples
            .windows(2)
            .filter(|w| w[0].phase != w[1].phase)
            .map(|w| (w[1].t, w[1].phase.name()))
            .collect();
        let areas = root.split_evenly((5, 1));
        for (area, panel) in areas.iter().zip(panels(samples, budget)) {
            draw(area, &panel, tmax, &bounds).map_err(|e| anyhow::anyhow!("plot: {e}"))?;
        }
        root.present().map_err(|e| anyhow::anyhow!("plot: {e}"))?;
    }
    Ok(out)
}

fn draw<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    panel: &Panel,
    tmax: f64,
    bounds: &[(f64, &'static str)],
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let ymax = panel
        .series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .fold(1.0f64, f64::max)
        * 1.1;
    let mut chart = ChartBuilder::on(area)
        .caption(panel.title, ("sans-serif", 16))
        .margin(8)
        .x_label_area_size(34)
        .y_label_area_size(64)
        .build_cartesian_2d(0f64..tmax, 0f64..ymax)?;
    chart
        .configure_mesh()
        .light_line_style(WHITE)
        .x_desc("seconds")
        .draw()?;
    chart.draw_series(
        bounds
            .iter()
            .map(|(t, _)| PathElement::new(vec![(*t, 0.0), (*t, ymax)], BLACK.mix(0.35))),
    )?;
    chart.draw_series(
        bounds
            .iter()
            .map(|(t, name)| Text::new(*name, (*t, ymax), ("sans-serif", 12))),
    )?;
    for s in &panel.series {
        let color = s.color;
        chart
            .draw_series(LineSeries::new(s.points.iter().copied(), color))?
            .label(s.name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replay::phases::{Phase, KINDS};

    #[test]
    fn renders_an_svg_with_every_panel() {
        let samples: Vec<Sample> = (0..60)
            .map(|i| Sample {
                t: f64::from(i) / 10.0,
                phase: Phase::ALL[(i / 10) as usize],
                rss: Some(40 << 20),
                pending: Some(f64::from(i)),
                overload: Some(0.0),
                health_ok: true,
                rates: [[10.0, 0.0]; KINDS],
            })
            .collect();
        let text = svg(&samples, 128 << 20).unwrap();
        assert!(text.starts_with("<svg"));
        assert!(text.contains("target RSS"));
        assert!(text.contains("DHCP flood"));
    }
}
