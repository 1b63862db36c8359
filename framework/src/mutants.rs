//! Known bug classes, switchable in the simulation only. The switch exists in every build, so the
//! services have one code path (`if mutants::on(..)`, no `cfg`); outside `--cfg madsim`, [`on`] is
//! a constant `false` and `set` does not exist, so the compiler drops every mutant branch and no
//! production build can turn one on. The simulation's tests switch one on and assert that some
//! fault scenario catches it within a fixed number of seeds.
//!
//! The framework's own bug classes are [`Mutant`]. An application declares its own as an enum
//! that implements [`BugClass`] and switches them with the same [`on`]: the switch holds a name,
//! so one simulation can turn on a bug of either kind.
//!
//! ```
//! use framework::mutants::{self, BugClass};
//!
//! #[derive(Clone, Copy)]
//! enum MyBug {
//!     /// The fold applies a record twice.
//!     DoubleApply,
//! }
//!
//! impl BugClass for MyBug {
//!     fn name(self) -> &'static str {
//!         match self {
//!             MyBug::DoubleApply => "double-apply",
//!         }
//!     }
//! }
//!
//! // Outside the simulation no mutant is ever on.
//! assert!(!mutants::on(MyBug::DoubleApply));
//! ```
//!
//! The switch is per thread: madsim runs a whole simulated cluster on one thread, so parallel
//! simulations (test threads, the runner's jobs) each see only their own.

/// A family of deliberate bugs (the framework's [`Mutant`], or an application's own enum).
pub trait BugClass: Copy + 'static {
    /// Its name on the command line (`commit-before-durable`, ...): unique across every family a
    /// simulation knows.
    fn name(self) -> &'static str;
}

/// A deliberate bug of the framework (the worker, the transport seam, the stores' base, the state
/// that follows partitions).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Mutant {
    /// The worker marks an input done when it arrives, before its outputs are durable.
    CommitBeforeDurable,
    /// The committed offset follows the latest finished record, past unfinished earlier ones.
    OffsetPassesUnfinished,
    /// Reading a record's headers panics on a key that is not UTF-8, as rdkafka's `Headers::iter`
    /// does (the fix reads the raw bytes: issue 11, defect 1).
    HeaderKeyPanics,
    /// Dead-lettering only ever tries the whole record, and a record too large for that stops the
    /// service (the fix writes what fits: issue 11, defect 2).
    DlqWholeOnly,
    /// When a record's retries run out, the worker passes over it (marks it done) instead of
    /// stopping so that a restart redelivers it: a produce-only outage loses what it refused.
    SkipWhenRetriesRunOut,
    /// The producer does not wait for every in-sync replica (`acks=1`; the simulation's
    /// transport plays it, as the Kafka transport would set it): a leader change loses records
    /// it already acknowledged.
    AcksOne,
    /// The stores commit with SQLite's `synchronous=NORMAL` (the setting before issue 13): in WAL
    /// mode a power loss may roll back their last commits.
    StoreSyncNormal,
    /// A view with nothing read yet (a new file, its disk lost) follows the log from its end,
    /// not its start: what came before is never folded (the status service's behaviour before
    /// issue 13, which went on from its group's committed offsets).
    EmptyViewNotRebuilt,
    /// A service handles the records of a newly assigned partition without restoring the
    /// partition's changelog first: it reads on from the end, as a restore from a checkpoint past
    /// the history would.
    RestoreSkipped,
    /// The shared error table takes a produce refused for now (NOT_ENOUGH_REPLICAS: the in-sync
    /// replicas are short, a leader is moving) as refused for good, so a produce-only outage
    /// fails records at once instead of retrying them.
    RefusalIsFinal,
    /// A consumer asks again for ever at an offset whose record it cannot read (a batch it
    /// cannot decode): the partition behind it waits for good (the behaviour before issue 25,
    /// defect 1).
    UnreadableRetriedForever,
    /// A record of a partition whose changelog is being restored waits for the restore inside
    /// its concurrency slot, so a long restore takes the slots every partition needs (before
    /// issue 25, defect 2).
    RestoreHoldsSlot,
    /// A partition counts as read to its end when its last record came, not when the reader's
    /// position reached the end offset: a log that ends with a transaction marker is never read
    /// to its end (before issue 25, defect 3).
    EndByLastRecord,
    /// A view keeps its read positions when the log under it is a new one (a topic made again,
    /// a new cluster), raising them only: the new log's first records are never folded (before
    /// issue 25, defect 4).
    NewLogNotNoticed,
    /// The worker hands the next record of a key to its handler though it was received in an
    /// epoch of its partition that is over (before a rebalance): every rebalance queues another
    /// copy of the backlog ahead of the current one, and the group's commit stops moving (swarm
    /// seeds 51, 457 and 518 before issue 25 closed).
    StaleRecordsHandled,
    /// A partition read again from its new log's start commits nothing until a record of the
    /// new log is done, a closing worker does not ask whether its logs are still the ones it
    /// read, and a member that gains a partition takes a commit naming another log as it is: a
    /// mark of the old log, committed by name just after the topic was made again, stands on the
    /// new log (swarm seeds 567 and 754; the testing application's seed 13).
    OldLogMarkStands,
    /// A partition lost while the worker had it paused, and later handed back, is not resumed:
    /// the consumer keeps the pause across the loss (librdkafka does, and the consumer protocol
    /// hands a partition back paused) while the worker stopped counting it paused, so nothing of
    /// it comes again (CI, a controller fault under the consumer protocol: deliver's partitions
    /// waited 8 minutes).
    RegainedStaysPaused,
}

impl Mutant {
    /// Every one of them.
    pub const ALL: [Mutant; 17] = [
        Mutant::CommitBeforeDurable,
        Mutant::OffsetPassesUnfinished,
        Mutant::HeaderKeyPanics,
        Mutant::DlqWholeOnly,
        Mutant::SkipWhenRetriesRunOut,
        Mutant::AcksOne,
        Mutant::StoreSyncNormal,
        Mutant::EmptyViewNotRebuilt,
        Mutant::RestoreSkipped,
        Mutant::RefusalIsFinal,
        Mutant::UnreadableRetriedForever,
        Mutant::RestoreHoldsSlot,
        Mutant::EndByLastRecord,
        Mutant::NewLogNotNoticed,
        Mutant::StaleRecordsHandled,
        Mutant::OldLogMarkStands,
        Mutant::RegainedStaysPaused,
    ];
}

impl BugClass for Mutant {
    fn name(self) -> &'static str {
        match self {
            Mutant::CommitBeforeDurable => "commit-before-durable",
            Mutant::OffsetPassesUnfinished => "offset-passes-unfinished",
            Mutant::HeaderKeyPanics => "header-key-panics",
            Mutant::DlqWholeOnly => "dlq-whole-only",
            Mutant::SkipWhenRetriesRunOut => "skip-when-retries-run-out",
            Mutant::AcksOne => "acks-one",
            Mutant::StoreSyncNormal => "store-sync-normal",
            Mutant::EmptyViewNotRebuilt => "empty-view-not-rebuilt",
            Mutant::RestoreSkipped => "restore-skipped",
            Mutant::RefusalIsFinal => "refusal-is-final",
            Mutant::UnreadableRetriedForever => "unreadable-retried-forever",
            Mutant::RestoreHoldsSlot => "restore-holds-slot",
            Mutant::EndByLastRecord => "end-by-last-record",
            Mutant::NewLogNotNoticed => "new-log-not-noticed",
            Mutant::StaleRecordsHandled => "stale-records-handled",
            Mutant::OldLogMarkStands => "old-log-mark-stands",
            Mutant::RegainedStaysPaused => "regained-stays-paused",
        }
    }
}

/// The one of `all` called `name`, or an error that lists them.
pub fn parse<M: BugClass>(all: &[M], name: &str) -> Result<M, String> {
    all.iter().copied().find(|m| m.name() == name).ok_or_else(|| {
        let names: Vec<_> = all.iter().map(|m| m.name()).collect();
        format!("unknown mutant `{name}` (one of: {})", names.join(", "))
    })
}

#[cfg(madsim)]
thread_local! {
    static ACTIVE: std::cell::Cell<Option<&'static str>> = const { std::cell::Cell::new(None) };
}

/// Switches the mutant called `name` on (or every mutant off) for this thread's simulations.
#[cfg(madsim)]
pub fn set(name: Option<&'static str>) {
    ACTIVE.with(|a| a.set(name));
}

/// Whether `mutant` is on.
#[cfg(madsim)]
pub fn on(mutant: impl BugClass) -> bool {
    ACTIVE.with(|a| a.get() == Some(mutant.name()))
}

/// Whether `mutant` is on: never, outside the simulation.
#[cfg(not(madsim))]
#[inline(always)]
pub fn on(_: impl BugClass) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_parse_back() {
        let mut names: Vec<_> = Mutant::ALL.iter().map(|m| m.name()).collect();
        for m in Mutant::ALL {
            assert_eq!(parse(&Mutant::ALL, m.name()), Ok(m));
        }
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Mutant::ALL.len());
        assert!(parse(&Mutant::ALL, "nope").unwrap_err().contains("acks-one"));
    }
}
