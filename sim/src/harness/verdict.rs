//! The verdict: the invariants a run checks, the violations it found, and the [`Outcome`] the
//! runner prints (and writes a trace from) and the tests assert on.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::time::Duration;

/// What the run checks; [`Invariant::name`] is how reports, traces and the README name each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Invariant {
    /// No status ever moves backwards in the view.
    NoRegression,
    /// A stuck mark sits only on an order that had not moved for the SLA.
    StuckOnlyWhenStuck,
    /// An order still for longer than SLA + one watchdog period (+ the time to carry the mark) is
    /// marked, unless a fault kept the watchdog from working.
    StuckMarkedInTime,
    /// A run without faults marks no order stuck.
    NoStuckWithoutFaults,
    /// After the heal, every accepted order reaches 999 in the view within the budget, and every
    /// group has committed the whole log.
    AllAcceptedDelivered,
    /// One delivery time per order (a re-sent event is fine).
    NoDoubleDelivery,
    /// The view rebuilt from the log equals the live one, row for row.
    ViewEqualsRebuild,
    /// The live view holds what the checker's own model of the spec (`oracle`) makes of
    /// pizza-status: each order's status and stuck flag.
    ViewFollowsSpec,
    /// Every status a source topic carries for an accepted order reached pizza-status.
    NoEventLost,
    /// Every record below a group's committed offset was finished by one of its members.
    CommitsFollowWork,
    /// Every hostile record that is not its topic's event was dead-lettered by every service that
    /// reads its topic.
    MalformedDeadLettered,
    /// pizza-dlq holds nothing but those.
    DlqOnlyMalformed,
    /// A service stops only because its retries ran out while the broker was out of reach.
    ServiceKeptRunning,
    /// Nothing panics.
    NoPanic,
    /// A record over `message.max.bytes` never reaches the log.
    OversizeRefused,
    /// What the customers were told is true of the log: an order told "placed" is in it, one told
    /// "not placed" is not; one told "being confirmed" may be, and is then delivered like any.
    CustomersToldTheTruth,
    /// The customers' orders are all on the menu (the command side refuses none as invalid).
    OrdersValid,
    /// Every record of a batch no client can decode was given up on by every service that reads
    /// its topic, with a note of it (its coordinates and the client's error) on pizza-dlq.
    UnreadableGivenUp,
    /// An order written in an aborted transaction is never assembled, merged, shown or delivered.
    AbortedNeverSeen,
    /// Every record is handled by every group that reads it within the scenario's `isolation`
    /// bound of its append, but on a partition a fault holds from that group: no partition waits
    /// for another's bad record or slow restore.
    PartitionsIsolated,
    /// Not the shop's: the harness could not do what the run needed (send a hostile record), so
    /// the run checked less than it says.
    Harness,
}

impl Invariant {
    /// The invariant's name in reports, traces and the README.
    pub fn name(self) -> &'static str {
        match self {
            Invariant::NoRegression => "no-regression",
            Invariant::StuckOnlyWhenStuck => "stuck-only-when-stuck",
            Invariant::StuckMarkedInTime => "stuck-marked-in-time",
            Invariant::NoStuckWithoutFaults => "no-stuck-without-faults",
            Invariant::AllAcceptedDelivered => "all-accepted-delivered",
            Invariant::NoDoubleDelivery => "no-double-delivery",
            Invariant::ViewEqualsRebuild => "view-equals-rebuild",
            Invariant::ViewFollowsSpec => "view-follows-spec",
            Invariant::NoEventLost => "no-event-lost",
            Invariant::CommitsFollowWork => "commits-follow-work",
            Invariant::MalformedDeadLettered => "malformed-dead-lettered",
            Invariant::DlqOnlyMalformed => "dlq-only-malformed",
            Invariant::ServiceKeptRunning => "service-kept-running",
            Invariant::NoPanic => "no-panic",
            Invariant::OversizeRefused => "oversize-refused",
            Invariant::OrdersValid => "orders-valid",
            Invariant::CustomersToldTheTruth => "customers-told-the-truth",
            Invariant::UnreadableGivenUp => "unreadable-given-up",
            Invariant::AbortedNeverSeen => "aborted-never-seen",
            Invariant::PartitionsIsolated => "partitions-isolated",
            Invariant::Harness => "harness",
        }
    }
}

impl fmt::Display for Invariant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How much an invariant was checked in a run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Checks {
    /// Checks that ran (and held, or are among the violations).
    pub ran: u64,
    /// Checks a fault excused (the watchdog cannot mark while status is down, say).
    pub exempted: u64,
}

/// The invariants every run must check at least once: a run that checked one of them not at all
/// passed vacuously.
pub const ALWAYS_CHECKED: [Invariant; 8] = [
    Invariant::NoRegression,
    Invariant::AllAcceptedDelivered,
    Invariant::NoDoubleDelivery,
    Invariant::ViewEqualsRebuild,
    Invariant::ViewFollowsSpec,
    Invariant::NoEventLost,
    Invariant::OrdersValid,
    Invariant::CustomersToldTheTruth,
];

/// An invariant that did not hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub invariant: Invariant,
    pub order: Option<String>,
    /// Simulated seconds since the start.
    pub at_ms: i64,
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at {:.3}s", self.invariant, self.at_ms as f64 / 1000.0)?;
        if let Some(o) = &self.order {
            write!(f, " order {o}")?;
        }
        write!(f, ": {}", self.detail)
    }
}

/// What a run found.
#[derive(Debug)]
pub struct Outcome {
    pub scenario: String,
    /// The scenario as run (a swarm's draw written out).
    pub scenario_text: String,
    pub seed: u64,
    pub mutant: Option<&'static str>,
    pub violations: Vec<Violation>,
    pub trace_hash: u64,
    pub trace: Vec<String>,
    pub accepted: usize,
    /// Orders whose placing failed (the customer was told so).
    pub refused: u64,
    /// Orders the customers were still told were being confirmed at the end.
    pub unconfirmed: u64,
    pub delivered: usize,
    /// Hostile records that reached the log.
    pub hostile: usize,
    pub dead_lettered: usize,
    pub restarts: u64,
    /// Simulated time the run took.
    pub simulated: Duration,
    /// How often each code probe fired (`pizza::probes`): which error paths the run took.
    pub probes: BTreeMap<&'static str, u64>,
    /// Per invariant, how many checks ran and how many a fault excused.
    pub checks: BTreeMap<Invariant, Checks>,
    /// Commits that moved a group's offset back (records then come again; see `check_commits`).
    pub commits_back: usize,
}

impl Outcome {
    /// The outcome of a run that panicked: `no-panic` with the panic's message, and the trace up
    /// to the panic. The runner fills in which run it was.
    pub(super) fn panicked(message: String, trace: Vec<String>, trace_hash: u64) -> Outcome {
        Outcome {
            scenario: String::new(),
            scenario_text: String::new(),
            seed: 0,
            mutant: None,
            violations: vec![Violation {
                invariant: Invariant::NoPanic,
                order: None,
                at_ms: 0,
                detail: message,
            }],
            trace_hash,
            trace,
            accepted: 0,
            refused: 0,
            unconfirmed: 0,
            delivered: 0,
            hostile: 0,
            dead_lettered: 0,
            restarts: 0,
            simulated: Duration::ZERO,
            probes: BTreeMap::new(),
            checks: BTreeMap::new(),
            commits_back: 0,
        }
    }

    /// No invariant failed, and the run checked what it must (see [`Outcome::vacuous`]).
    pub fn passed(&self) -> bool {
        self.violations.is_empty() && self.vacuous().is_empty()
    }

    /// What the run did not check at all though it should have: no accepted order, an invariant
    /// of [`ALWAYS_CHECKED`] with no check, or `malformed-dead-lettered` with hostile records in
    /// the log and no check. Empty for a run that panicked (it checked nothing, and says so).
    pub fn vacuous(&self) -> Vec<String> {
        if self.violations.iter().any(|v| v.invariant == Invariant::NoPanic) {
            return Vec::new();
        }
        let ran = |i: Invariant| self.checks.get(&i).map_or(0, |c| c.ran);
        let excused = |i: Invariant| self.checks.get(&i).map_or(0, |c| c.exempted);
        let mut out = Vec::new();
        if self.accepted == 0 {
            out.push("no order was accepted".to_owned());
        }
        for i in ALWAYS_CHECKED.into_iter().filter(|i| ran(*i) == 0) {
            out.push(format!("{i} checked nothing"));
        }
        if self.hostile > 0
            && ran(Invariant::MalformedDeadLettered) == 0
            && excused(Invariant::MalformedDeadLettered) == 0
            && ran(Invariant::DlqOnlyMalformed) == 0
        {
            out.push("hostile records in the log, and no dead-letter check ran".to_owned());
        }
        out
    }

    /// The command that replays this run.
    pub fn replay_command(&self) -> String {
        let mut c = format!("cargo sim --scenario {} --seed {}", self.scenario, self.seed);
        if let Some(m) = self.mutant {
            c.push_str(&format!(" --mutant {m}"));
        }
        c
    }

    /// Writes the trace, one event per line, after a header naming the run.
    pub fn write_trace(&self, path: &Path) -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut text = format!(
            "# scenario {} seed {} mutant {} trace hash {:016x}\n# replay: {}\n",
            self.scenario,
            self.seed,
            self.mutant.unwrap_or("none"),
            self.trace_hash,
            self.replay_command()
        );
        for v in &self.violations {
            text.push_str(&format!("# violation: {v}\n"));
        }
        text.push_str("# time(s) node topic partition offset key what\n");
        for line in &self.trace {
            text.push_str(line);
            text.push('\n');
        }
        std::fs::write(path, text)
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mutant = self.mutant.map(|m| format!(" mutant={m}")).unwrap_or_default();
        let ran: u64 = self.checks.values().map(|c| c.ran).sum();
        let excused: u64 = self.checks.values().map(|c| c.exempted).sum();
        if self.passed() {
            return write!(
                f,
                "ok scenario={} seed={}{mutant}: {} orders delivered ({} refused, {} being confirmed), {} hostile records, {} dead-lettered, {} restarts, {:.0}s simulated, {ran} checks ({excused} excused), trace {:016x}",
                self.scenario,
                self.seed,
                self.delivered,
                self.refused,
                self.unconfirmed,
                self.hostile,
                self.dead_lettered,
                self.restarts,
                self.simulated.as_secs_f64(),
                self.trace_hash
            );
        }
        writeln!(
            f,
            "FAILED scenario={} seed={}{mutant}: {} violation(s)",
            self.scenario,
            self.seed,
            self.violations.len()
        )?;
        for v in self.vacuous() {
            writeln!(f, "  vacuous: {v}")?;
        }
        for v in self.violations.iter().take(10) {
            writeln!(f, "  {v}")?;
        }
        if self.violations.len() > 10 {
            writeln!(f, "  ... and {} more", self.violations.len() - 10)?;
        }
        write!(f, "seed {}; replay: {}", self.seed, self.replay_command())
    }
}
