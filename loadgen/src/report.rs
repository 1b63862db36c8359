//! What a run measured: HDR histograms (microseconds) of every stage, and the report as a table,
//! as JSON and as an HdrHistogram interval log (the SVG plot is `plot.rs`).

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

/// One histogram per stage for the whole run, and the run window by window for the plot.
pub struct Latencies {
    pub stages: Vec<Histogram<u64>>,
    pub timeline: Timeline,
}

impl Default for Latencies {
    fn default() -> Self {
        Latencies::new(1.0)
    }
}

impl Latencies {
    /// Histograms for a run that measures for `duration_s` (which sets the plot's window).
    pub fn new(duration_s: f64) -> Latencies {
        let h = || Histogram::new_with_bounds(1, MAX_US, 3).expect("histogram bounds");
        Latencies {
            stages: STAGES.iter().map(|_| h()).collect(),
            timeline: Timeline::new(duration_s),
        }
    }

    /// Records `us` for stage `i` of an order intended to be sent `at_s` seconds after measuring
    /// started (saturating at the histogram's bound).
    pub fn record(&mut self, stage: usize, at_s: f64, us: u64) {
        self.stages[stage].saturating_record(us.max(1));
        self.timeline.record(stage, at_s, us);
    }
}

/// Most windows a timeline keeps; anything later is not plotted (a bound on its memory).
const MAX_WINDOWS: usize = 2_000;

/// The run cut into windows of equal length: latencies by the order's intended send time, sends
/// and completions by the moment they happened, in seconds since measuring started.
pub struct Timeline {
    /// Length of one window: whole seconds, chosen so a run has at most about 120 of them.
    pub window_s: f64,
    /// How long the run measures (sends end then; completions may go on).
    pub duration_s: f64,
    /// Per window, one coarse (2 significant digits) histogram per stage.
    pub latency: Vec<Vec<Histogram<u64>>>,
    /// Per window, measured orders the client sent.
    pub sent: Vec<u64>,
    /// Per window, measured orders seen final on pizza-status.
    pub completed: Vec<u64>,
}

impl Timeline {
    /// A timeline for a run that measures for `duration_s`.
    pub fn new(duration_s: f64) -> Timeline {
        let window_s = [1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0]
            .into_iter()
            .find(|w| duration_s / w <= 120.0)
            .unwrap_or(600.0);
        Timeline {
            window_s,
            duration_s,
            latency: Vec::new(),
            sent: Vec::new(),
            completed: Vec::new(),
        }
    }

    /// The window `at_s` falls in, if any.
    fn window(&self, at_s: f64) -> Option<usize> {
        let i = (at_s / self.window_s).floor();
        (at_s >= 0.0 && i < MAX_WINDOWS as f64).then_some(i as usize)
    }

    fn record(&mut self, stage: usize, at_s: f64, us: u64) {
        let Some(i) = self.window(at_s) else { return };
        while self.latency.len() <= i {
            let h = || Histogram::new_with_bounds(1, MAX_US, 2).expect("histogram bounds");
            self.latency.push(STAGES.iter().map(|_| h()).collect());
        }
        self.latency[i][stage].saturating_record(us.max(1));
    }

    /// Counts a measured order sent at `at_s`.
    pub fn sent(&mut self, at_s: f64) {
        if let Some(i) = self.window(at_s) {
            count(&mut self.sent, i);
        }
    }

    /// Counts a measured order seen final at `at_s`.
    pub fn completed(&mut self, at_s: f64) {
        if let Some(i) = self.window(at_s) {
            count(&mut self.completed, i);
        }
    }
}

fn count(counts: &mut Vec<u64>, i: usize) {
    if counts.len() <= i {
        counts.resize(i + 1, 0);
    }
    counts[i] += 1;
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
    /// Orders first answered "being confirmed" (the produce may or may not have written them),
    /// then confirmed by sending them again; counted as sent, not as errors.
    pub confirmed_late: u64,
    /// Of the errors: orders whose fate stayed unknown (never confirmed). They are followed, but
    /// one that never shows is not lost: nobody was told it was placed.
    pub unknown: u64,
    /// Orders whose final status came with two different delivery timestamps: delivered twice.
    pub delivered_twice: u64,
    /// The longest time in which no measured order became final: how long the shop stalled.
    pub longest_gap_ms: f64,
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
            "completed {}  lost {}  errors {} (fate unknown {})  confirmed late {}  delivered twice {}",
            self.completed, self.lost, self.errors, self.unknown, self.confirmed_late, self.delivered_twice
        );
        let _ = writeln!(
            t,
            "longest time without a completion: {:.1} ms",
            self.longest_gap_ms
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

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Summary {
        let mut lat = Latencies::default();
        for i in 1..=1000u64 {
            lat.record(0, 0.0, i * 100);
            lat.record(4, 0.0, i * 10);
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
            confirmed_late: 0,
            unknown: 0,
            delivered_twice: 0,
            longest_gap_ms: 12.5,
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
    fn the_timeline_keeps_a_bounded_number_of_windows() {
        assert_eq!(Timeline::new(10.0).window_s, 1.0);
        assert_eq!(Timeline::new(120.0).window_s, 1.0);
        assert_eq!(Timeline::new(600.0).window_s, 5.0);
        assert_eq!(Timeline::new(3_600.0).window_s, 30.0);
        assert_eq!(Timeline::new(86_400.0).window_s, 600.0);
        let mut t = Timeline::new(10.0);
        t.sent(-0.5);
        t.sent(0.0);
        t.sent(2.5);
        t.completed(1e9);
        assert_eq!(t.sent, [1, 0, 1]);
        assert!(t.completed.is_empty(), "past the last window: not kept");
        let mut lat = Latencies::new(10.0);
        lat.record(2, 3.2, 5_000);
        assert_eq!(lat.stages[2].len(), 1);
        assert_eq!(lat.timeline.latency.len(), 4);
        assert_eq!(lat.timeline.latency[3][2].len(), 1);
    }
}
