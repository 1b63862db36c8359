//! Time as the services see it. Everything that reads the clock or sleeps goes through here, so the
//! simulation (madsim) can drive it: `tokio` is `madsim-tokio`, which is simulated time under
//! `--cfg madsim` and real tokio otherwise.

use std::time::Duration;

/// Milliseconds since the Unix epoch, the unit of every `timestamp` on the wire.
///
/// Under madsim, `SystemTime::now` is the simulated clock (madsim intercepts the clock calls), so
/// timestamps are deterministic for a seed.
pub fn now_ms() -> i64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    skewed(t)
}

#[cfg(not(madsim))]
#[inline(always)]
fn skewed(t: i64) -> i64 {
    t
}

/// A node's clock as the simulation sets it: off by `offset_ms`, and running `drift_ppm` parts
/// per million fast (negative: slow) since `since_ms`.
#[cfg(madsim)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Skew {
    pub offset_ms: i64,
    pub drift_ppm: i64,
    pub since_ms: i64,
}

#[cfg(madsim)]
thread_local! {
    static SKEWS: std::cell::RefCell<std::collections::BTreeMap<tokio::madsim::task::NodeId, Skew>> =
        const { std::cell::RefCell::new(std::collections::BTreeMap::new()) };
}

/// Sets (or with `None` clears) the clock skew of simulated node `node`: [`now_ms`] on that node
/// reads its own clock from then on, as a machine whose NTP is off does. Per thread, as madsim
/// runs a simulation on one.
#[cfg(madsim)]
pub fn set_skew(node: tokio::madsim::task::NodeId, skew: Option<Skew>) {
    SKEWS.with(|s| match skew {
        Some(k) => s.borrow_mut().insert(node, k),
        None => s.borrow_mut().remove(&node),
    });
}

/// Clears every node's skew (a new simulation).
#[cfg(madsim)]
pub fn clear_skews() {
    SKEWS.with(|s| s.borrow_mut().clear());
}

#[cfg(madsim)]
fn skewed(t: i64) -> i64 {
    let node = tokio::madsim::plugin::node();
    SKEWS.with(|s| match s.borrow().get(&node) {
        Some(k) => t + k.offset_ms + (t - k.since_ms) * k.drift_ppm / 1_000_000,
        None => t,
    })
}

/// Scales the cooking and delivery times: 1.0 is real time, 0.0 makes every step instant.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TimeScale(f64);

impl TimeScale {
    /// Real time.
    pub const REAL: TimeScale = TimeScale(1.0);

    /// A time scale; `None` for a negative or non-finite factor.
    pub fn new(factor: f64) -> Option<TimeScale> {
        (factor.is_finite() && factor >= 0.0).then_some(TimeScale(factor))
    }

    /// The factor itself.
    pub fn factor(self) -> f64 {
        self.0
    }

    /// `seconds` of shop time as a duration on the runtime's clock.
    pub fn scale_secs(self, seconds: f64) -> Duration {
        Duration::from_secs_f64((seconds * self.0).max(0.0))
    }

    /// Sleeps for `seconds` of shop time (returns at once at scale 0).
    pub async fn sleep_secs(self, seconds: f64) {
        let d = self.scale_secs(seconds);
        if !d.is_zero() {
            tokio::time::sleep(d).await;
        }
    }
}

impl std::str::FromStr for TimeScale {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let f: f64 = s.trim().parse().map_err(|_| format!("`{s}` is not a number"))?;
        TimeScale::new(f).ok_or_else(|| format!("time scale must be a finite number >= 0, got {s}"))
    }
}

/// Parses a duration as people write it: `500ms`, `5s`, `1.5s`, `2m` (flags and scenario files).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s
        .find(|c: char| c.is_ascii_alphabetic())
        .map(|i| s.split_at(i))
        .ok_or_else(|| format!("`{s}` needs a unit (ms, s or m)"))?;
    let n: f64 = num
        .parse()
        .ok()
        .filter(|n: &f64| n.is_finite() && *n >= 0.0)
        .ok_or_else(|| format!("`{s}` is not a duration"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return Err(format!("`{s}`: unknown unit `{unit}` (ms, s or m)")),
    };
    Duration::try_from_secs_f64(secs).map_err(|_| format!("`{s}` is too long"))
}
