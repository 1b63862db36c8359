//! Code probes (FoundationDB's `CODE_PROBE`): a named marker at each error-handling branch of the
//! worker and the services, so the simulation can show which of them its runs took, and fail when
//! a branch that must be exercised never is. Like the mutant switches, probes exist in every build
//! so the code has one path; outside `--cfg madsim` [`hit`] does nothing and compiles away.
//!
//! The framework's probes are [`Probe`]; an application declares its own as an enum that
//! implements [`ProbeKind`], and marks them with the same [`hit`].
//!
//! Under madsim the hits are counted per thread (one simulation per thread), by name, and a
//! [keyed](ProbeKind::keyed) probe also keeps which key each hit was for (the shop counts a
//! driver's drives per order, not the timestamps they leave on the log).

/// A family of probes (the framework's [`Probe`], or an application's own enum).
pub trait ProbeKind: Copy + 'static {
    /// Its name in reports: unique across every family a simulation knows.
    fn name(self) -> &'static str;
    /// Whether the simulation also counts its hits per key (a drive per order, say), not only in
    /// all.
    fn keyed(self) -> bool {
        false
    }
}

/// An error-handling branch of the framework the simulation must see taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Probe {
    /// A handler failed in a way worth retrying, and the worker will try again.
    HandlerRetried,
    /// A record's retries ran out: the worker stops without marking it.
    RetriesExhausted,
    /// A record that is not its topic's event went to the dead-letter topic whole.
    DeadLettered,
    /// Its dead-letter copy was too large: a prefix or a bare note went instead.
    DeadLetteredInPart,
    /// Not even a bare dead-letter note was accepted: the record was passed over.
    DeadLetterDropped,
    /// The consumer reported a retriable error; the worker waits and reads again.
    ConsumerRetried,
    /// The consumer refused to mark a finished record's offset (its partition moved away).
    MarkDoneRefused,
    /// A produce of the service's own output failed (any cause).
    ProduceFailed,
    /// A store was busy or locked (retriable).
    StoreBusy,
    /// The consumer dropped a record fetched for a partition a rebalance has since taken away.
    RevokedRecordDropped,
    /// A produce failed after its request may have reached the broker: the record may be written.
    ProduceMaybeWritten,
    /// A consumer gave up on a record it could not read (the same error at one offset, again and
    /// again) and moved past it.
    RecordUnreadable,
    /// A reader's position passed offsets it never delivers (a transaction marker, an aborted
    /// transaction, a gap).
    PositionPastRecords,
}

impl Probe {
    /// Every one of them.
    pub const ALL: [Probe; 13] = [
        Probe::HandlerRetried,
        Probe::RetriesExhausted,
        Probe::DeadLettered,
        Probe::DeadLetteredInPart,
        Probe::DeadLetterDropped,
        Probe::ConsumerRetried,
        Probe::MarkDoneRefused,
        Probe::ProduceFailed,
        Probe::StoreBusy,
        Probe::RevokedRecordDropped,
        Probe::ProduceMaybeWritten,
        Probe::RecordUnreadable,
        Probe::PositionPastRecords,
    ];
}

impl ProbeKind for Probe {
    fn name(self) -> &'static str {
        match self {
            Probe::HandlerRetried => "handler-retried",
            Probe::RetriesExhausted => "retries-exhausted",
            Probe::DeadLettered => "dead-lettered",
            Probe::DeadLetteredInPart => "dead-lettered-in-part",
            Probe::DeadLetterDropped => "dead-letter-dropped",
            Probe::ConsumerRetried => "consumer-retried",
            Probe::MarkDoneRefused => "mark-done-refused",
            Probe::ProduceFailed => "produce-failed",
            Probe::StoreBusy => "store-busy",
            Probe::RevokedRecordDropped => "revoked-record-dropped",
            Probe::ProduceMaybeWritten => "produce-maybe-written",
            Probe::RecordUnreadable => "record-unreadable",
            Probe::PositionPastRecords => "position-past-records",
        }
    }
}

/// Marks that the code took `probe`'s branch (for `key`, an order id, where it matters).
#[cfg(not(madsim))]
#[inline(always)]
pub fn hit(_probe: impl ProbeKind, _key: &str) {}

/// Marks that `group` finished the record at `topic`/`partition`@`offset` (its handler returned):
/// the simulation holds the group's committed offsets to what its members finished.
#[cfg(not(madsim))]
#[inline(always)]
pub fn finished(_group: &str, _topic: &str, _partition: i32, _offset: i64) {}

mod disk;
mod seams;

pub use disk::{disk_busy, disk_io};
#[cfg(madsim)]
pub use disk::{set_disk_busy, set_disk_latency};
#[cfg(madsim)]
pub use seams::set_seams;
pub use seams::{seam, SEAM_CHANCE_PER_MILLE, SEAM_MAX_MS};

/// Notes that `service` passed over the record at `topic`/`partition`@`offset` because not even
/// a bare dead-letter note of it was accepted (the simulation excuses it where the dead-letter
/// topic took no record that small). Nothing outside madsim.
#[cfg(not(madsim))]
#[inline(always)]
pub fn dead_letter_dropped(_service: &str, _topic: &str, _partition: i32, _offset: i64) {}

/// Notes that a store was opened for writing at `path` with SQLite's `synchronous` setting as the
/// connection reports it (0 OFF, 1 NORMAL, 2 FULL, 3 EXTRA). The simulation's power-loss fault
/// reads it: in WAL mode a commit under NORMAL may roll back on a power loss, under FULL it may
/// not. Nothing outside madsim.
#[cfg(not(madsim))]
#[inline(always)]
pub fn store_opened(_path: &std::path::Path, _synchronous: i64) {}

#[cfg(madsim)]
pub use sim::{dead_letter_dropped, finished, hit, store_opened, store_synchronous, take};

#[cfg(madsim)]
mod sim {
    use std::cell::RefCell;
    use std::collections::BTreeMap;

    use super::ProbeKind;

    /// Per group, topic and partition (a few dozen): the offsets its members finished, each with
    /// when it was first finished (simulated epoch ms).
    pub type Finished = Vec<((String, String, i32), BTreeMap<i64, i64>)>;

    /// What one simulation's probes saw: hits per probe (by name), and per key for the keyed ones.
    #[derive(Clone, Debug, Default, PartialEq, Eq)]
    pub struct Hits {
        pub counts: BTreeMap<&'static str, u64>,
        /// Per keyed probe, its hits per key.
        pub keyed: BTreeMap<&'static str, BTreeMap<String, u64>>,
        /// Per group, topic and partition: the offsets its members finished.
        pub finished: Finished,
        /// Records passed over without a dead-letter note: service, topic, partition, offset.
        pub dropped: Vec<(String, String, i32, i64)>,
    }

    thread_local! {
        static HITS: RefCell<Hits> = RefCell::new(Hits::default());
        static STORES: RefCell<BTreeMap<std::path::PathBuf, i64>> = const { RefCell::new(BTreeMap::new()) };
    }

    /// See the non-simulated `dead_letter_dropped`.
    pub fn dead_letter_dropped(service: &str, topic: &str, partition: i32, offset: i64) {
        HITS.with(|h| {
            h.borrow_mut()
                .dropped
                .push((service.to_owned(), topic.to_owned(), partition, offset));
        });
    }

    /// See the non-simulated `store_opened`.
    pub fn store_opened(path: &std::path::Path, synchronous: i64) {
        STORES.with(|s| s.borrow_mut().insert(path.to_owned(), synchronous));
    }

    /// The `synchronous` setting the store at `path` was last opened with.
    pub fn store_synchronous(path: &std::path::Path) -> Option<i64> {
        STORES.with(|s| s.borrow().get(path).copied())
    }

    /// Marks that the code took `probe`'s branch (for `key`, an order id, where it matters).
    pub fn hit(probe: impl ProbeKind, key: &str) {
        HITS.with(|h| {
            let mut h = h.borrow_mut();
            *h.counts.entry(probe.name()).or_default() += 1;
            if probe.keyed() {
                let keys = h.keyed.entry(probe.name()).or_default();
                *keys.entry(key.to_owned()).or_default() += 1;
            }
        });
    }

    /// Marks that `group` finished the record at `topic`/`partition`@`offset`.
    pub fn finished(group: &str, topic: &str, partition: i32, offset: i64) {
        HITS.with(|h| {
            let mut h = h.borrow_mut();
            // Looked up by reference first: this runs for every record, and allocates only for
            // a partition seen the first time.
            let key = (group, topic, partition);
            // The simulation's own time, not the node's (perhaps skewed) clock.
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64);
            let found = h
                .finished
                .iter_mut()
                .find(|((g, t, p), _)| (g.as_str(), t.as_str(), *p) == key);
            match found {
                Some((_, offsets)) => {
                    offsets.entry(offset).or_insert(now);
                }
                None => {
                    h.finished.push((
                        (group.to_owned(), topic.to_owned(), partition),
                        BTreeMap::from([(offset, now)]),
                    ));
                }
            }
        });
    }

    /// This thread's hits since the last call, which starts counting afresh (and forgets the
    /// stores opened).
    pub fn take() -> Hits {
        STORES.with(|s| s.borrow_mut().clear());
        super::disk::forget_all();
        HITS.with(|h| std::mem::take(&mut *h.borrow_mut()))
    }
}

#[cfg(madsim)]
pub use sim::{Finished, Hits};
