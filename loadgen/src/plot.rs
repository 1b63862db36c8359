//! The SVG plot of a run (`--plot`): each stage's latency over time above the send and completion
//! rates, and each stage's percentile distribution on HdrHistogram's log scale.
//!
//! Drawn with plotters' SVG backend and none of its font features: text goes out as `<text>` for
//! the viewer to lay out, so no font file is read or shipped. plotters only estimates text sizes
//! (from the byte count) to place captions and tick labels.

use anyhow::{anyhow, Result};
use hdrhistogram::Histogram;
use plotters::coord::Shift;
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::report::{Latencies, Timeline, STAGES};

const WIDTH: u32 = 1000;
const HEIGHT: u32 = 1180;
/// Room right of every chart for its legend, so no legend hides a line.
const LEGEND_W: u32 = 190;
const FONT: &str = "sans-serif";
/// One colour per stage, the same in every chart (in `STAGES` order).
const STAGE_COLORS: [RGBColor; 5] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
];
/// The quantile each window shows in the latency-over-time chart.
const OVER_TIME_Q: f64 = 0.99;

/// The plot as an SVG document.
pub fn svg(lat: &Latencies, target_rate: f64) -> Result<String> {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (WIDTH, HEIGHT)).into_drawing_area();
        draw(&root, lat, target_rate).map_err(|e| anyhow!("drawing the plot: {e}"))?;
    }
    Ok(out)
}

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;
type DrawResult = Result<(), Box<dyn std::error::Error + 'static>>;

fn draw(root: &Area, lat: &Latencies, target_rate: f64) -> DrawResult {
    root.fill(&WHITE)?;
    let (over_time, rest) = root.split_vertically(430);
    let (rates, percentiles) = rest.split_vertically(260);
    let end_s = timeline_end_s(&lat.timeline);
    draw_latency_over_time(&over_time, &lat.timeline, end_s)?;
    draw_rates(&rates, &lat.timeline, target_rate, end_s)?;
    draw_percentiles(&percentiles, &lat.stages)?;
    root.present()?;
    Ok(())
}

/// A chart on `area` with the shared look: caption, margins, room for the legend on the right.
fn chart_builder<'a, 'b>(area: &'a Area<'b>, caption: &str) -> ChartBuilder<'a, 'b, SVGBackend<'b>> {
    let mut b = ChartBuilder::on(area);
    b.caption(caption, (FONT, 21))
        .margin(12)
        .margin_right(LEGEND_W)
        .x_label_area_size(44)
        .y_label_area_size(64);
    b
}

/// One entry of a legend.
struct Key<'a> {
    label: &'a str,
    color: RGBAColor,
    dashed: bool,
}

/// The legend, in the room right of the chart (plotters' own legend stays inside the plotting
/// area, where it would hide lines).
fn draw_legend(area: &Area, keys: &[Key]) -> DrawResult {
    const ROW: i32 = 20;
    let (x, y) = ((WIDTH - LEGEND_W) as i32 + 6, 40);
    let bottom = y + 8 + ROW * keys.len() as i32;
    area.draw(&Rectangle::new(
        [(x, y), (x + LEGEND_W as i32 - 18, bottom)],
        BLACK.mix(0.4),
    ))?;
    for (i, key) in keys.iter().enumerate() {
        let row_y = y + 14 + ROW * i as i32;
        let line = [(x + 8, row_y), (x + 32, row_y)];
        let style = key.color.stroke_width(2);
        if key.dashed {
            area.draw(&DashedPathElement::new(line, 5, 3, style))?;
        } else {
            area.draw(&PathElement::new(line, style))?;
        }
        let text = (FONT, 16)
            .into_font()
            .color(&BLACK)
            .pos(Pos::new(HPos::Left, VPos::Center));
        area.draw(&Text::new(key.label, (x + 40, row_y), text))?;
    }
    Ok(())
}

/// A number on an axis without trailing zeros: 2, 2.5, 0.25.
/// A chart over the run's time (seconds since measuring started) up to `end_s`, with its axes
/// drawn: `y_desc` from 0 to `top`.
fn time_chart<'a, 'b>(
    area: &'a Area<'b>,
    caption: &str,
    end_s: f64,
    top: f64,
    y_desc: &str,
) -> Result<TimeChart<'a, 'b>, Box<dyn std::error::Error + 'static>> {
    let mut chart = chart_builder(area, caption).build_cartesian_2d(0.0..end_s, 0.0..top)?;
    chart
        .configure_mesh()
        .x_desc("time since measuring started (s)")
        .y_desc(y_desc)
        .x_label_formatter(&axis_number)
        .y_label_formatter(&axis_number)
        .axis_desc_style((FONT, 16))
        .label_style((FONT, 15))
        .light_line_style(TRANSPARENT)
        .draw()?;
    Ok(chart)
}

type TimeChart<'a, 'b> = ChartContext<
    'a,
    SVGBackend<'b>,
    Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
>;

fn axis_number(v: &f64) -> String {
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

fn draw_latency_over_time(area: &Area, tl: &Timeline, end_s: f64) -> DrawResult {
    let series: Vec<(usize, Vec<(f64, f64)>)> = (0..STAGES.len())
        .map(|s| (s, over_time(tl, s, OVER_TIME_Q)))
        .filter(|(_, pts)| !pts.is_empty())
        .collect();
    let top_ms = nice_top(series.iter().flat_map(|(_, pts)| pts.iter().map(|p| p.1)));
    let caption = format!(
        "Latency over time: p99 of each stage per {} s window, by intended send time",
        tl.window_s
    );
    let mut chart = time_chart(area, &caption, end_s, top_ms, "p99 latency (ms)")?;
    let mut keys = Vec::new();
    for (stage, pts) in series {
        let color = STAGE_COLORS[stage];
        chart.draw_series(LineSeries::new(pts, color.stroke_width(2)).point_size(2))?;
        keys.push(Key {
            label: STAGES[stage],
            color: color.to_rgba(),
            dashed: false,
        });
    }
    draw_legend(area, &keys)
}

fn draw_rates(area: &Area, tl: &Timeline, target_rate: f64, end_s: f64) -> DrawResult {
    let sent = rates(&tl.sent, tl.window_s, Some(tl.duration_s));
    let completed = rates(&tl.completed, tl.window_s, None);
    let top = nice_top(sent.iter().chain(&completed).map(|p| p.1).chain([target_rate]));
    let caption = format!("Throughput per {} s window", tl.window_s);
    let mut chart = time_chart(area, &caption, end_s, top, "orders/s")?;
    let target = BLACK.mix(0.6);
    let mut keys = vec![Key {
        label: "target rate",
        color: target,
        dashed: true,
    }];
    for (label, color, pts) in [
        ("sent", STAGE_COLORS[0], sent),
        ("completed", STAGE_COLORS[2], completed),
    ] {
        if !pts.is_empty() {
            chart.draw_series(LineSeries::new(pts, color.stroke_width(2)))?;
            let color = color.to_rgba();
            keys.push(Key {
                label,
                color,
                dashed: false,
            });
        }
    }
    // On top, so it shows where the achieved rate is right on it.
    let line = [(0.0, target_rate), (tl.duration_s, target_rate)];
    chart.draw_series(DashedLineSeries::new(line, 6, 4, target.stroke_width(2)))?;
    draw_legend(area, &keys)
}

fn draw_percentiles(area: &Area, stages: &[Histogram<u64>]) -> DrawResult {
    let count = stages.iter().map(Histogram::len).max().unwrap_or(0);
    let ticks = percentile_ticks(count);
    let x_max = *ticks.last().expect("at least one tick");
    let curves: Vec<(usize, Vec<(f64, f64)>)> = (stages.iter().enumerate())
        .filter(|(_, h)| !h.is_empty())
        .map(|(stage, h)| (stage, percentile_curve(h, x_max)))
        .collect();
    // From the curves, which end at the last tick: the maximum may lie beyond it.
    let top_ms = nice_top(curves.iter().flat_map(|(_, pts)| pts.iter().map(|p| p.1)));
    let x = (1.0..x_max).log_scale().with_key_points(ticks);
    let caption = "Latency by percentile (HdrHistogram's scale: x is 1/(1-percentile), log)";
    let mut chart = chart_builder(area, caption).build_cartesian_2d(x, 0.0..top_ms)?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("latency (ms)")
        .x_label_formatter(&|x| percentile_label(*x))
        .y_label_formatter(&axis_number)
        .axis_desc_style((FONT, 16))
        .label_style((FONT, 15))
        .light_line_style(TRANSPARENT)
        .draw()?;
    let mut keys = Vec::new();
    for (stage, pts) in curves {
        let color = STAGE_COLORS[stage];
        chart.draw_series(LineSeries::new(pts, color.stroke_width(2)))?;
        keys.push(Key {
            label: STAGES[stage],
            color: color.to_rgba(),
            dashed: false,
        });
    }
    draw_legend(area, &keys)
}

/// Where the time axis ends: the last window anything happened in (at least one window).
fn timeline_end_s(tl: &Timeline) -> f64 {
    let windows = tl.latency.len().max(tl.sent.len()).max(tl.completed.len()).max(1);
    windows as f64 * tl.window_s
}

/// Per window in which `stage` has samples: (the window's middle in seconds, its quantile `q` in ms).
fn over_time(tl: &Timeline, stage: usize, q: f64) -> Vec<(f64, f64)> {
    tl.latency
        .iter()
        .enumerate()
        .filter(|(_, w)| !w[stage].is_empty())
        .map(|(i, w)| {
            (
                (i as f64 + 0.5) * tl.window_s,
                w[stage].value_at_quantile(q) as f64 / 1000.0,
            )
        })
        .collect()
}

/// Events per second in each window, as steps: (start, rate), (end, rate) per window, so a window
/// that holds a few stragglers reads as a low step, not as a slope down from the one before. A
/// window cut short by `until_s` (the end of the schedule) is divided by the part of it that was
/// open; windows after it (sends that fell behind the schedule) by their whole length.
fn rates(counts: &[u64], window_s: f64, until_s: Option<f64>) -> Vec<(f64, f64)> {
    let mut steps = Vec::with_capacity(2 * counts.len());
    for (i, &n) in counts.iter().enumerate() {
        let from = i as f64 * window_s;
        let to = match until_s {
            Some(u) if u > from => u.min(from + window_s),
            _ => from + window_s,
        };
        let rate = n as f64 / (to - from);
        steps.extend([(from, rate), (to, rate)]);
    }
    steps
}

/// A round top for an axis a little above the highest value (1 when there is none).
fn nice_top(values: impl Iterator<Item = f64>) -> f64 {
    let max = values.fold(0.0_f64, f64::max) * 1.08;
    if max <= 0.0 {
        return 1.0;
    }
    let step = 10f64.powf(max.log10().floor());
    [1.0, 1.2, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0]
        .into_iter()
        .map(|m| m * step)
        .find(|&top| top >= max)
        .unwrap_or(10.0 * step)
}

/// The ticks of the percentile axis, as 1/(1-q): 50%, 90%, 99%, 99.9%, 99.99%, and one more nine
/// for every tenfold the data reaches beyond 10,000 values. The last tick is the axis's end.
pub fn percentile_ticks(count: u64) -> Vec<f64> {
    let mut ticks = vec![2.0, 10.0, 100.0, 1_000.0, 10_000.0];
    while ticks.len() < 12 && *ticks.last().expect("not empty") * 10.0 <= count as f64 {
        ticks.push(ticks.last().expect("not empty") * 10.0);
    }
    ticks
}

/// The percentile at `x` = 1/(1-q), as people write it: 50%, 90%, 99.9%.
pub fn percentile_label(x: f64) -> String {
    if x <= 1.0 {
        return "0%".into();
    }
    let pct = 100.0 * (1.0 - 1.0 / x);
    // As many decimals as the nines need (99.99% has two), and no trailing zeros.
    let decimals = (x.log10().round() as usize).saturating_sub(2);
    format!("{pct:.decimals$}%")
}

/// The curve of one histogram: (1/(1-q), latency in ms) at 400 points spread evenly on the log
/// axis from 0% to `x_max`. Past the data's last value it stays at the maximum.
fn percentile_curve(h: &Histogram<u64>, x_max: f64) -> Vec<(f64, f64)> {
    const POINTS: u32 = 400;
    (0..=POINTS)
        .map(|i| {
            let x = x_max.powf(f64::from(i) / f64::from(POINTS));
            (x, h.value_at_quantile(1.0 - 1.0 / x) as f64 / 1000.0)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run of 2,000 orders over 10 s: end-to-end and produce ack measured, the other stages not.
    fn sample() -> Latencies {
        let mut lat = Latencies::new(10.0);
        for i in 0..2_000u64 {
            let at_s = i as f64 / 200.0;
            lat.record(0, at_s, 10_000 + i * 20);
            lat.record(4, at_s, 1_000 + i);
            lat.timeline.sent(at_s);
            lat.timeline.completed(at_s + 0.05);
        }
        lat
    }

    /// The x positions of the `<text>` elements that say exactly `label`.
    fn text_x(svg: &str, label: &str) -> Vec<f64> {
        let lines: Vec<&str> = svg.lines().collect();
        lines
            .windows(2)
            .filter(|w| w[0].starts_with("<text") && w[1].trim() == label)
            .map(|w| {
                let x = w[0].split("x=\"").nth(1).expect("an x attribute");
                x[..x.find('"').expect("quoted")].parse().expect("a number")
            })
            .collect()
    }

    #[test]
    fn percentile_ticks_are_nines_and_grow_with_the_data() {
        let labels = |count| {
            percentile_ticks(count)
                .into_iter()
                .map(percentile_label)
                .collect::<Vec<_>>()
        };
        assert_eq!(labels(1_000), ["50%", "90%", "99%", "99.9%", "99.99%"]);
        assert_eq!(labels(99_999), ["50%", "90%", "99%", "99.9%", "99.99%"]);
        assert_eq!(
            labels(250_000),
            ["50%", "90%", "99%", "99.9%", "99.99%", "99.999%"]
        );
        assert_eq!(percentile_ticks(1_000_000).last(), Some(&1_000_000.0));
        assert_eq!(percentile_label(1.0), "0%");
    }

    #[test]
    fn the_plot_labels_its_axes_legends_and_percentiles() {
        let svg = svg(&sample(), 200.0).expect("drawn");
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        for label in [
            "50%",
            "90%",
            "99%",
            "99.9%",
            "99.99%",
            "target rate",
            "sent",
            "completed",
        ] {
            assert_eq!(text_x(&svg, label).len(), 1, "one {label:?} in\n{svg}");
        }
        // In the legends of the latency-over-time and the percentile charts.
        assert_eq!(text_x(&svg, "end-to-end").len(), 2);
        assert_eq!(text_x(&svg, "produce ack").len(), 2);
        assert!(
            text_x(&svg, "placed→assembled").is_empty(),
            "a stage without data has no key"
        );
        for desc in ["p99 latency (ms)", "orders/s", "latency (ms)", "percentile"] {
            assert_eq!(text_x(&svg, desc).len(), 1, "axis {desc:?}");
        }
        assert!(
            text_x(&svg, "99.999%").is_empty(),
            "2,000 values do not reach 99.999%"
        );
    }

    #[test]
    fn the_percentile_axis_is_logarithmic() {
        let svg = svg(&sample(), 200.0).expect("drawn");
        let x = |label| text_x(&svg, label)[0];
        let decade = x("99%") - x("90%");
        assert!(decade > 100.0, "{decade}");
        for (a, b) in [("99%", "99.9%"), ("99.9%", "99.99%")] {
            assert!(
                (x(b) - x(a) - decade).abs() <= 2.0,
                "{a}..{b} is not a decade wide"
            );
        }
        // 50% is 2 = 10^0.301 on the 1/(1-q) axis.
        let fifty = (x("90%") - x("50%")) / decade;
        assert!((fifty - (1.0 - 2f64.log10())).abs() < 0.02, "{fifty}");
    }

    #[test]
    fn series_come_from_the_timeline() {
        let lat = sample();
        let e2e = over_time(&lat.timeline, 0, 0.99);
        assert_eq!(e2e.len(), 10);
        assert_eq!(e2e[0].0, 0.5);
        // Window 0 holds orders 0..200: p99 is order 198's 10 ms + 3.96 ms (to 2 digits).
        assert!((e2e[0].1 - 13.9).abs() < 0.2, "{:?}", e2e[0]);
        assert!(over_time(&lat.timeline, 1, 0.99).is_empty());
        let sent = rates(&lat.timeline.sent, 1.0, Some(10.0));
        assert!(sent.iter().all(|&(_, r)| r == 200.0), "{sent:?}");
        // The last completions spill into an eleventh window.
        assert_eq!(rates(&lat.timeline.completed, 1.0, None).len(), 2 * 11);
        // A window cut short by the end of sending counts per second of it that was open.
        assert_eq!(
            rates(&[10, 5], 1.0, Some(1.5)),
            [(0.0, 10.0), (1.0, 10.0), (1.0, 10.0), (1.5, 10.0)]
        );
        // Sends that fell behind the schedule, after its end: a rate over the whole window.
        assert_eq!(
            rates(&[10, 3], 1.0, Some(1.0)),
            [(0.0, 10.0), (1.0, 10.0), (1.0, 3.0), (2.0, 3.0)]
        );
    }

    #[test]
    fn axes_end_on_round_numbers() {
        assert_eq!(nice_top([98.5].into_iter()), 120.0);
        assert_eq!(nice_top([9.0, 4.0].into_iter()), 10.0);
        assert_eq!(nice_top([500.0].into_iter()), 600.0);
        assert_eq!(nice_top(std::iter::empty()), 1.0);
        assert_eq!(axis_number(&2.0), "2");
        assert_eq!(axis_number(&0.25), "0.25");
    }

    #[test]
    fn an_empty_run_still_draws() {
        let svg = svg(&Latencies::new(10.0), 100.0).expect("drawn");
        assert_eq!(text_x(&svg, "target rate").len(), 1);
        assert!(text_x(&svg, "end-to-end").is_empty());
    }
}
