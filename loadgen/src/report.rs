//! What a run measured: HDR histograms (microseconds) of every stage, and the report as a table,
//! as JSON, as an HdrHistogram interval log, and as an SVG plot.

use std::fmt::Write;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Highest latency a histogram holds: 10 minutes, in microseconds.
const MAX_US: u64 = 600_000_000;

/// The measured stages, in report order.
pub const STAGES: [&str; 5] = [
    "end-to-end",
    "placed→assembled",
    "assembled→baked",
    "baked→delivered",
    "produce ack",
];

/// One histogram per stage, plus end-to-end samples over time for the plot.
pub struct Latencies {
    pub stages: Vec<Histogram<u64>>,
    /// (seconds since the measured start, end-to-end microseconds).
    pub over_time: Vec<(f64, u64)>,
}

impl Default for Latencies {
    fn default() -> Self {
        let h = || Histogram::new_with_bounds(1, MAX_US, 3).expect("histogram bounds");
        Latencies {
            stages: STAGES.iter().map(|_| h()).collect(),
            over_time: Vec::new(),
        }
    }
}

impl Latencies {
    /// Records `us` for stage `i` (saturating at the histogram's bound).
    pub fn record(&mut self, stage: usize, us: u64) {
        self.stages[stage].saturating_record(us.max(1));
    }
}

/// Percentiles of one stage, in milliseconds.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Percentiles {
    pub stage: String,
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

fn ms(us: u64) -> f64 {
    (us as f64 / 1000.0 * 100.0).round() / 100.0
}

impl Percentiles {
    pub fn of(stage: &str, h: &Histogram<u64>) -> Percentiles {
        Percentiles {
            stage: stage.to_owned(),
            count: h.len(),
            p50_ms: ms(h.value_at_quantile(0.5)),
            p90_ms: ms(h.value_at_quantile(0.9)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
        }
    }
}

/// The run's summary (what `--json` prints).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Summary {
    pub via: String,
    pub brokers: String,
    pub seed: u64,
    pub services_time_scale: f64,
    pub target_rate: f64,
    pub duration_s: f64,
    pub warmup_s: f64,
    pub sent: u64,
    pub achieved_rate: f64,
    /// Whether the client itself sent on schedule (its worst lag behind the schedule was small).
    pub client_kept_up: bool,
    pub max_send_lag_ms: f64,
    pub completed: u64,
    pub lost: u64,
    pub errors: u64,
    pub latency: Vec<Percentiles>,
    /// Per consumer group, records not yet committed when the run ended.
    pub consumer_lag: Vec<(String, i64)>,
}

impl Summary {
    /// The table printed at the end.
    pub fn table(&self) -> String {
        let mut t = String::new();
        let _ = writeln!(
            t,
            "loadgen: {} orders/s for {} s (+{} s warm-up) via {} to {}, seed {}; services' time scale {}",
            self.target_rate,
            self.duration_s,
            self.warmup_s,
            self.via,
            self.brokers,
            self.seed,
            self.services_time_scale
        );
        let kept = if self.client_kept_up {
            "yes".to_owned()
        } else {
            "NO: the client could not send at this rate; latencies still count from the schedule".to_owned()
        };
        let _ = writeln!(
            t,
            "sent {} ({:.1}/s achieved); client kept up: {} (max lag behind schedule {:.1} ms)",
            self.sent, self.achieved_rate, kept, self.max_send_lag_ms
        );
        let _ = writeln!(
            t,
            "completed {}  lost {}  errors {}",
            self.completed, self.lost, self.errors
        );
        let _ = writeln!(
            t,
            "{:<18} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "latency (ms)", "count", "p50", "p90", "p99", "p99.9", "max"
        );
        for p in &self.latency {
            let _ = writeln!(
                t,
                "{:<18} {:>8} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
                p.stage, p.count, p.p50_ms, p.p90_ms, p.p99_ms, p.p999_ms, p.max_ms
            );
        }
        if !self.consumer_lag.is_empty() {
            let lags: Vec<String> = self
                .consumer_lag
                .iter()
                .map(|(g, l)| format!("{g} {l}"))
                .collect();
            let _ = writeln!(t, "consumer lag at end: {}", lags.join(", "));
        }
        t
    }
}

/// An SVG with end-to-end latency over time (p50/p99/max per second) and the percentile curve.
pub fn svg(lat: &Latencies) -> String {
    const W: f64 = 720.0;
    const H: f64 = 260.0;
    let mut per_sec: Vec<Histogram<u64>> = Vec::new();
    for &(t, us) in &lat.over_time {
        let s = t.max(0.0) as usize;
        while per_sec.len() <= s {
            per_sec.push(Histogram::new_with_bounds(1, MAX_US, 2).expect("bounds"));
        }
        per_sec[s].saturating_record(us.max(1));
    }
    let e2e = &lat.stages[0];
    let top_ms = (ms(e2e.max()) * 1.1).max(1.0);
    let y = |v_ms: f64, y0: f64| y0 + H - 30.0 - (v_ms / top_ms) * (H - 50.0);
    let mut out = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{}" font-family="sans-serif" font-size="12">"#,
        2.0 * H + 20.0
    );
    let line = |out: &mut String, pts: &[(f64, f64)], color: &str| {
        let p: Vec<String> = pts.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
        let _ = write!(
            out,
            r#"<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{}"/>"#,
            p.join(" ")
        );
    };
    let axes = |out: &mut String, y0: f64, title: &str, xlabel: &str| {
        let _ = write!(
            out,
            r#"<text x="10" y="{}" font-weight="bold">{title}</text><line x1="60" y1="{b}" x2="{r}" y2="{b}" stroke="black"/><line x1="60" y1="{}" x2="60" y2="{b}" stroke="black"/><text x="5" y="{}">{top_ms:.1} ms</text><text x="{}" y="{}">{xlabel}</text>"#,
            y0 + 15.0,
            y0 + 20.0,
            y0 + 25.0,
            W / 2.0,
            y0 + H - 8.0,
            b = y0 + H - 30.0,
            r = W - 10.0
        );
    };
    axes(
        &mut out,
        0.0,
        "end-to-end latency over time (p50 blue, p99 orange, max red)",
        "seconds",
    );
    let n = per_sec.len().max(2) as f64;
    let x = |i: usize| 60.0 + (i as f64 / (n - 1.0)) * (W - 80.0);
    for (q, color) in [(0.5, "#1f77b4"), (0.99, "#ff7f0e"), (1.0, "#d62728")] {
        let pts: Vec<(f64, f64)> = per_sec
            .iter()
            .enumerate()
            .filter(|(_, h)| !h.is_empty())
            .map(|(i, h)| (x(i), y(ms(h.value_at_quantile(q)), 0.0)))
            .collect();
        line(&mut out, &pts, color);
    }
    let y0 = H + 20.0;
    axes(
        &mut out,
        y0,
        "end-to-end percentile curve",
        "percentile: 0, 90, 99, 99.9, 99.99",
    );
    let pts: Vec<(f64, f64)> = (0..=400)
        .map(|i| {
            // x is log-scaled in 1/(1-q): each 9 adds a fixed step.
            let nines = i as f64 / 100.0;
            let q = 1.0 - 10f64.powf(-nines);
            (
                60.0 + nines / 4.0 * (W - 80.0),
                y(ms(e2e.value_at_quantile(q)), y0),
            )
        })
        .collect();
    line(&mut out, &pts, "#1f77b4");
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Summary {
        let mut lat = Latencies::default();
        for i in 1..=1000u64 {
            lat.record(0, i * 100);
            lat.record(4, i * 10);
        }
        Summary {
            via: "kafka".into(),
            brokers: "127.0.0.1:9092".into(),
            seed: 1,
            services_time_scale: 0.0,
            target_rate: 100.0,
            duration_s: 10.0,
            warmup_s: 2.0,
            sent: 1000,
            achieved_rate: 100.0,
            client_kept_up: true,
            max_send_lag_ms: 1.5,
            completed: 1000,
            lost: 0,
            errors: 0,
            latency: STAGES
                .iter()
                .zip(&lat.stages)
                .map(|(s, h)| Percentiles::of(s, h))
                .collect(),
            consumer_lag: vec![("pizza_assemble".into(), 0)],
        }
    }

    #[test]
    fn percentiles_come_from_the_histogram() {
        let s = sample();
        let e2e = &s.latency[0];
        assert_eq!(e2e.count, 1000);
        assert!((e2e.p50_ms - 50.0).abs() < 0.1, "{e2e:?}");
        assert!((e2e.p99_ms - 99.0).abs() < 0.2, "{e2e:?}");
        assert!((e2e.max_ms - 100.0).abs() < 0.1, "{e2e:?}");
    }

    #[test]
    fn snapshot_table() {
        insta::assert_snapshot!(sample().table());
    }

    #[test]
    fn the_plot_is_svg_with_both_charts() {
        let mut lat = Latencies::default();
        for i in 0..100u64 {
            lat.record(0, 1000 + i * 10);
            lat.over_time.push((i as f64 / 10.0, 1000 + i * 10));
        }
        let s = svg(&lat);
        assert!(s.starts_with("<svg") && s.trim_end().ends_with("</svg>"));
        assert_eq!(s.matches("<polyline").count(), 4);
    }
}
