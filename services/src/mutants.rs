//! Known bug classes, switchable in the simulation only. The switch exists in every build, so the
//! services have one code path (`if mutants::on(..)`, no `cfg`); outside `--cfg madsim`, [`on`] is
//! a constant `false` and `set` does not exist, so the compiler drops every mutant branch and no
//! production build can turn one on. The simulation's tests switch one on and assert that some
//! fault scenario catches it within a fixed number of seeds (`sim/`).
//!
//! The switch is per thread: madsim runs a whole simulated cluster on one thread, so parallel
//! simulations (test threads, the runner's jobs) each see only their own.

/// A deliberate bug.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Mutant {
    /// The worker marks an input done when it arrives, before its outputs are durable.
    CommitBeforeDurable,
    /// Delivery keeps its early warnings (and deliveries) in memory only, with no changelog (the
    /// design before issue 13): a restart forgets them.
    DeliveryStateInMemory,
    /// The status fold applies any known status, even one ranked below the current.
    NoMonotonicGuard,
    /// Delivery does not recognise a redelivered input: it delivers again.
    NoDedup,
    /// The watchdog's stuck mark does not carry the status it observed, so a mark decided before
    /// progress lands after it.
    WatchdogRace,
    /// The committed offset follows the latest finished record, past unfinished earlier ones.
    OffsetPassesUnfinished,
    /// The watchdog sends a round's marks one after another and starts the next round a period
    /// after this one ended (the bug the simulation found first): after an outage, orders are
    /// marked long past the SLA plus one period.
    WatchdogDrift,
    /// Reading a record's headers panics on a key that is not UTF-8, as rdkafka's `Headers::iter`
    /// does (the fix reads the raw bytes: issue 11, defect 1).
    HeaderKeyPanics,
    /// Dead-lettering only ever tries the whole record, and a record too large for that stops the
    /// service (the fix writes what fits: issue 11, defect 2).
    DlqWholeOnly,
    /// The rank table puts in-the-oven (200) above out-for-delivery (300), so a late 200 moves an
    /// order back from 300. The fold, the rebuild and any checker using the same table agree
    /// with it; only a checker with its own order of codes sees it.
    OvenOutranksBaked,
    /// Deliver sends a driver again for a pizza it already delivered, but announces the first
    /// delivery's time: the log shows one delivery, the customer got two.
    RedriveKeepsTime,
    /// The command side tells the customer "not placed" whenever the produce failed, also when
    /// it timed out after the record may have been written (the behaviour before issue 13).
    TimeoutSaysNotPlaced,
    /// When a record's retries run out, the worker passes over it (marks it done) instead of
    /// stopping so that a restart redelivers it: a produce-only outage loses what it refused.
    SkipWhenRetriesRunOut,
    /// The watchdog ages an order by its event's timestamp, stamped by another node's clock,
    /// instead of by when its own view took the status (the behaviour before issue 13).
    WatchdogTrustsEventTime,
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
    /// Deliver's facts stay in its own store: nothing goes to its changelog, and a partition
    /// newly assigned to it is not restored (the design before issue 15): what earlier owners of
    /// the partition knew stays on their instances.
    DeliverStateStaysLocal,
    /// Deliver handles the records of a newly assigned partition without restoring the
    /// partition's changelog first: it reads on from the end, as a restore from a checkpoint past
    /// the history would.
    RestoreSkipped,
    /// The shared error table takes a produce refused for now (NOT_ENOUGH_REPLICAS: the in-sync
    /// replicas are short, a leader is moving) as refused for good, so a produce-only outage
    /// fails records at once instead of retrying them.
    RefusalIsFinal,
    /// Each status instance folds only what its group gives it into its view, and nothing else
    /// does (the design before issue 15): with several instances, each view holds some orders.
    StatusFoldsItsPartitions,
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
    /// new log is done, and a closing worker does not ask whether its logs are still the ones
    /// it read: a mark of the old log, committed by name just after the topic was made again,
    /// stands on the new log (swarm seeds 567 and 754).
    OldLogMarkStands,
}

impl Mutant {
    /// Every mutant.
    pub const ALL: [Mutant; 27] = [
        Mutant::CommitBeforeDurable,
        Mutant::DeliveryStateInMemory,
        Mutant::NoMonotonicGuard,
        Mutant::NoDedup,
        Mutant::WatchdogRace,
        Mutant::OffsetPassesUnfinished,
        Mutant::WatchdogDrift,
        Mutant::HeaderKeyPanics,
        Mutant::DlqWholeOnly,
        Mutant::OvenOutranksBaked,
        Mutant::RedriveKeepsTime,
        Mutant::TimeoutSaysNotPlaced,
        Mutant::SkipWhenRetriesRunOut,
        Mutant::WatchdogTrustsEventTime,
        Mutant::AcksOne,
        Mutant::StoreSyncNormal,
        Mutant::EmptyViewNotRebuilt,
        Mutant::DeliverStateStaysLocal,
        Mutant::RestoreSkipped,
        Mutant::RefusalIsFinal,
        Mutant::StatusFoldsItsPartitions,
        Mutant::UnreadableRetriedForever,
        Mutant::RestoreHoldsSlot,
        Mutant::EndByLastRecord,
        Mutant::NewLogNotNoticed,
        Mutant::StaleRecordsHandled,
        Mutant::OldLogMarkStands,
    ];

    /// Its name on the command line (`commit-before-durable`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Mutant::CommitBeforeDurable => "commit-before-durable",
            Mutant::DeliveryStateInMemory => "delivery-state-in-memory",
            Mutant::NoMonotonicGuard => "no-monotonic-guard",
            Mutant::NoDedup => "no-dedup",
            Mutant::WatchdogRace => "watchdog-race",
            Mutant::OffsetPassesUnfinished => "offset-passes-unfinished",
            Mutant::WatchdogDrift => "watchdog-drift",
            Mutant::HeaderKeyPanics => "header-key-panics",
            Mutant::DlqWholeOnly => "dlq-whole-only",
            Mutant::OvenOutranksBaked => "oven-outranks-baked",
            Mutant::RedriveKeepsTime => "redrive-keeps-time",
            Mutant::TimeoutSaysNotPlaced => "timeout-says-not-placed",
            Mutant::SkipWhenRetriesRunOut => "skip-when-retries-run-out",
            Mutant::WatchdogTrustsEventTime => "watchdog-trusts-event-time",
            Mutant::AcksOne => "acks-one",
            Mutant::StoreSyncNormal => "store-sync-normal",
            Mutant::EmptyViewNotRebuilt => "empty-view-not-rebuilt",
            Mutant::DeliverStateStaysLocal => "deliver-state-stays-local",
            Mutant::RestoreSkipped => "restore-skipped",
            Mutant::RefusalIsFinal => "refusal-is-final",
            Mutant::StatusFoldsItsPartitions => "status-folds-its-partitions",
            Mutant::UnreadableRetriedForever => "unreadable-retried-forever",
            Mutant::RestoreHoldsSlot => "restore-holds-slot",
            Mutant::EndByLastRecord => "end-by-last-record",
            Mutant::NewLogNotNoticed => "new-log-not-noticed",
            Mutant::StaleRecordsHandled => "stale-records-handled",
            Mutant::OldLogMarkStands => "old-log-mark-stands",
        }
    }
}

impl std::str::FromStr for Mutant {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Mutant::ALL.into_iter().find(|m| m.name() == s).ok_or_else(|| {
            let names: Vec<_> = Mutant::ALL.iter().map(|m| m.name()).collect();
            format!("unknown mutant `{s}` (one of: {})", names.join(", "))
        })
    }
}

#[cfg(madsim)]
thread_local! {
    static ACTIVE: std::cell::Cell<Option<Mutant>> = const { std::cell::Cell::new(None) };
}

/// Switches `mutant` on (or every mutant off) for this thread's simulations.
#[cfg(madsim)]
pub fn set(mutant: Option<Mutant>) {
    ACTIVE.with(|a| a.set(mutant));
}

/// Whether `mutant` is on.
#[cfg(madsim)]
pub fn on(mutant: Mutant) -> bool {
    ACTIVE.with(|a| a.get() == Some(mutant))
}

/// Whether `mutant` is on: never, outside the simulation.
#[cfg(not(madsim))]
#[inline(always)]
pub const fn on(_: Mutant) -> bool {
    false
}
