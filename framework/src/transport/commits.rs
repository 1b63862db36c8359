//! A consumer-group member's at-least-once bookkeeping, the same for both transports (rdkafka's
//! and the simulation's): which partitions it owns, the offset marked done per partition (the next
//! to read after a restart), and what the group has committed. The transports only carry it out:
//! commit what is [`MemberOffsets::due`] every [`COMMIT_EVERY`], on a partition's revocation and
//! on close; drop records of partitions not owned; refuse to mark one not owned.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::TransportError;

/// How often a member commits what was marked done.
pub const COMMIT_EVERY: Duration = Duration::from_millis(500);

type Partition = (String, i32);

/// See the module. What the member knows of a partition holds only while it owns it: another
/// owner may commit in between, and the log under it may be another (a topic made again), so a
/// partition lost forgets its marks, and one gained again starts with nothing known committed.
/// Each gain starts a new epoch of the partition ([`MemberOffsets::epoch`]): a record received
/// in an earlier epoch is not this owner's to mark any more (it comes again from the group's
/// commit, to whoever owns it now), as a generation fences a Kafka consumer.
#[derive(Debug, Default)]
pub struct MemberOffsets {
    owned: BTreeSet<Partition>,
    /// Counts the changes of `owned`, so a reader of it learns when to read it again.
    version: u64,
    marked: BTreeMap<Partition, i64>,
    committed: BTreeMap<Partition, i64>,
    /// Per partition, how many times this member gained it.
    gains: BTreeMap<Partition, u64>,
    /// Per owned partition, the log its marks are of ([`super::LogId`] written out), when known:
    /// its commits carry it ([`commit_metadata`]).
    logs: BTreeMap<Partition, String>,
}

impl MemberOffsets {
    /// The member now owns exactly `parts` (an assignment read whole, as each fetch tells the
    /// simulated consumer, which learns of a revocation only after it). What it marked of the
    /// partitions it no longer owns is forgotten: their next owner reads on from the group's
    /// commit (and a partition regained may be another log by then).
    pub fn own_exactly(&mut self, parts: impl IntoIterator<Item = Partition>) {
        let owned: BTreeSet<Partition> = parts.into_iter().collect();
        if owned != self.owned {
            for lost in self.owned.difference(&owned) {
                self.marked.remove(lost);
                self.logs.remove(lost);
            }
            for gained in owned.difference(&self.owned) {
                self.committed.remove(gained);
                self.logs.remove(gained);
                *self.gains.entry(gained.clone()).or_default() += 1;
            }
            self.owned = owned;
            self.version += 1;
        }
    }

    /// The member was assigned `parts` (an incremental assignment).
    pub fn assign(&mut self, parts: impl IntoIterator<Item = Partition>) {
        for p in parts {
            self.committed.remove(&p);
            self.logs.remove(&p);
            *self.gains.entry(p.clone()).or_default() += 1;
            self.owned.insert(p);
        }
        self.version += 1;
    }

    /// `topic`/`partition` is read again from the log's start (its log is another one now: a
    /// topic made again under the same name): a new epoch, with nothing known committed of it,
    /// and the log's start marked, to commit at once. A commit by name carries no log: one of
    /// the old log's marks committed between the new log's making and the member's noticing it
    /// would otherwise stand on the new log, and the partition's next owner would pass over
    /// the new log's first records (swarm seed 567: three orders never assembled).
    ///
    /// `log` is the log it is now, when known: its commits carry it from now on. When it is not
    /// known, they carry the log the partition was known to be before (which its next owner
    /// takes for another than the current one, and reads from the start: twice at worst), or
    /// none when none was known (as every commit before this check: read as it is).
    pub fn new_epoch(&mut self, topic: &str, partition: i32, log: Option<&str>) {
        let k = (topic.to_owned(), partition);
        if let Some(log) = log.filter(|_| self.owned.contains(&k)) {
            self.logs.insert(k.clone(), log.to_owned());
        }
        self.committed.remove(&k);
        if self.owned.contains(&k) && !crate::mutants::on(crate::mutants::Mutant::OldLogMarkStands) {
            self.marked.insert(k.clone(), 0);
        } else {
            self.marked.remove(&k);
        }
        *self.gains.entry(k).or_default() += 1;
    }

    /// How many times the member gained `topic`/`partition`: a record received while it was one
    /// number is marked only while it still is.
    pub fn epoch(&self, topic: &str, partition: i32) -> u64 {
        self.gains
            .get(&(topic.to_owned(), partition))
            .copied()
            .unwrap_or(0)
    }

    /// Every partition's epoch now ([`MemberOffsets::epoch`]).
    pub fn epochs(&self) -> BTreeMap<Partition, u64> {
        self.gains.clone()
    }

    /// The assignment's version: it moves on every change of the partitions owned.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The partitions owned now, when they changed since `seen` (which it brings up to date).
    pub fn owned_since(&self, seen: &mut u64) -> Option<Vec<Partition>> {
        if *seen == self.version {
            return None;
        }
        *seen = self.version;
        Some(self.owned.iter().cloned().collect())
    }

    /// `parts` are taken away: returns what is still to commit for them (commit it before the
    /// partitions go), and forgets their marks.
    pub fn revoke(&mut self, parts: &[Partition]) -> Vec<(String, i32, i64)> {
        let due: Vec<_> = self
            .due()
            .into_iter()
            .filter(|(t, p, _)| parts.iter().any(|(pt, pp)| pt == t && pp == p))
            .collect();
        for k in parts {
            self.owned.remove(k);
            self.marked.remove(k);
            self.logs.remove(k);
        }
        self.version += 1;
        due
    }

    /// Whether the member owns `topic`/`partition`: a record of one it does not own is dropped.
    pub fn owns(&self, topic: &str, partition: i32) -> bool {
        self.owned.contains(&(topic.to_owned(), partition))
    }

    /// Marks every record of `topic`/`partition` before `next` done; refused for a partition the
    /// member does not own (as librdkafka refuses to store its offset).
    pub fn mark(&mut self, topic: &str, partition: i32, next: i64) -> Result<(), TransportError> {
        let k = (topic.to_owned(), partition);
        if !self.owned.contains(&k) {
            return Err(TransportError::retriable(format!(
                "{topic}/{partition} is not assigned to this member: offset not stored"
            )));
        }
        self.marked.insert(k, next);
        Ok(())
    }

    /// The marks of owned partitions that are ahead of what was committed.
    pub fn due(&self) -> Vec<(String, i32, i64)> {
        self.marked
            .iter()
            .filter(|(k, m)| self.owned.contains(*k) && self.committed.get(*k) != Some(*m))
            .map(|((t, p), m)| (t.clone(), *p, *m))
            .collect()
    }

    /// The records of `topic`/`partition` this member reads are of `log` (learned when it gained
    /// the partition): its commits carry it. Ignored for a partition it does not own.
    pub fn set_log(&mut self, topic: &str, partition: i32, log: &str) {
        let k = (topic.to_owned(), partition);
        if self.owned.contains(&k) {
            self.logs.insert(k, log.to_owned());
        }
    }

    /// The metadata a commit of `topic`/`partition` carries: the log its marks are of
    /// ([`commit_metadata`]), or nothing when that is not known.
    pub fn metadata(&self, topic: &str, partition: i32) -> String {
        self.logs
            .get(&(topic.to_owned(), partition))
            .map(|l| commit_metadata(l))
            .unwrap_or_default()
    }

    /// `offsets` were committed.
    pub fn committed(&mut self, offsets: &[(String, i32, i64)]) {
        for (t, p, o) in offsets {
            self.committed.insert((t.clone(), *p), *o);
        }
    }
}

/// How many records of a partition ending at `end` a group that committed `committed` has yet
/// to commit. A commit past the log's end is of a log the topic was before (committed by name
/// after it was made again): a consumer reads this one from its start (`auto.offset.reset`), so
/// the group owes all of it.
pub fn uncommitted(end: i64, committed: i64) -> i64 {
    if committed > end {
        end
    } else {
        end - committed
    }
}

/// What a commit's metadata starts with when it names the log its offset is of.
const LOG_METADATA: &str = "log:";

/// A commit's metadata naming `log` (a [`super::LogId`] written out). A commit names a topic,
/// not a log (Kafka's classic group protocol): one of an old log's marks, committed by a member
/// that had not noticed its topic made again, would stand on the new log, and the partition's
/// next owner would start there, past the new log's first records. Its metadata says which log
/// it is of, so the next owner can tell ([`of_another_log`]).
pub fn commit_metadata(log: &str) -> String {
    format!("{LOG_METADATA}{log}")
}

/// Whether a commit whose metadata is `metadata` was made on another log than `current` (the
/// topic's log now, when the broker said): its offset is not this log's, and the partition is
/// read from its start. Metadata this harness did not write (another client's, none) is trusted,
/// as is any when the log now is not known. Both transports decide by it (the mutant
/// `old-log-mark-stands` trusts every commit).
pub fn of_another_log(metadata: &[u8], current: Option<&str>) -> bool {
    if crate::mutants::on(crate::mutants::Mutant::OldLogMarkStands) {
        return false;
    }
    let Some(log) = metadata.strip_prefix(LOG_METADATA.as_bytes()) else {
        return false;
    };
    let Ok(log) = std::str::from_utf8(log) else {
        return false;
    };
    current.is_some_and(|now| super::other_log(log, now))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(p: i32) -> Partition {
        ("t".to_owned(), p)
    }

    #[test]
    fn a_partition_regained_is_a_new_epoch_with_nothing_marked() {
        let mut m = MemberOffsets::default();
        m.own_exactly([part(0)]);
        assert_eq!(m.epoch("t", 0), 1);
        m.mark("t", 0, 50).unwrap();
        // Lost and gained again (a rebalance, or the topic made again under the same name):
        // what was marked of it is not this epoch's.
        m.own_exactly([]);
        m.own_exactly([part(0)]);
        assert_eq!(m.epoch("t", 0), 2);
        assert!(m.due().is_empty(), "the old epoch's mark is gone");
        m.revoke(&[part(0)]);
        m.assign([part(0)]);
        assert_eq!(m.epoch("t", 0), 3);
        // Its log made again: read from the start in a new epoch.
        m.mark("t", 0, 7).unwrap();
        m.new_epoch("t", 0, None);
        assert_eq!(m.epoch("t", 0), 4);
        assert_eq!(
            m.due(),
            [("t".into(), 0, 0)],
            "the new log's start, over any old mark"
        );
        assert!(m.owns("t", 0));
    }

    #[test]
    fn marks_of_owned_partitions_are_due_until_committed() {
        let mut m = MemberOffsets::default();
        assert!(m.mark("t", 0, 5).is_err(), "not owned yet");
        m.assign([part(0), part(1)]);
        m.mark("t", 0, 5).unwrap();
        m.mark("t", 1, 3).unwrap();
        assert_eq!(m.due(), [("t".into(), 0, 5), ("t".into(), 1, 3)]);
        m.committed(&[("t".into(), 0, 5)]);
        assert_eq!(m.due(), [("t".into(), 1, 3)]);
        // Revoked: what is due for it comes back to be committed first, then it is gone.
        assert_eq!(m.revoke(&[part(1)]), [("t".into(), 1, 3)]);
        assert!(m.due().is_empty() && !m.owns("t", 1) && m.owns("t", 0));
        assert!(m.mark("t", 1, 4).is_err());
        // A whole new assignment forgets the marks of what it no longer holds.
        m.mark("t", 0, 9).unwrap();
        m.own_exactly([part(2)]);
        assert!(m.due().is_empty());
        m.own_exactly([part(0), part(2)]);
        assert!(m.due().is_empty());
    }

    /// Swarm seed 165 with issue 15's instances: a member committed 33, another moved the
    /// group's offset back to 26, and when the partition came back the first read 26..33 again
    /// and never committed 33, which it remembered as committed.
    #[test]
    fn a_partition_gained_again_commits_what_it_remembered_as_committed() {
        let mut m = MemberOffsets::default();
        m.own_exactly([part(2)]);
        m.mark("t", 2, 33).unwrap();
        m.committed(&[("t".into(), 2, 33)]);
        assert!(m.due().is_empty());
        m.own_exactly([]);
        m.own_exactly([part(2)]);
        m.mark("t", 2, 33).unwrap();
        assert_eq!(m.due(), [("t".into(), 2, 33)]);
        m.committed(&[("t".into(), 2, 33)]);
        m.revoke(&[part(2)]);
        m.assign([part(2)]);
        m.mark("t", 2, 33).unwrap();
        assert_eq!(
            m.due(),
            [("t".into(), 2, 33)],
            "after an incremental assignment too"
        );
    }

    #[test]
    fn a_reader_of_the_assignment_hears_of_each_change_once() {
        let mut m = MemberOffsets::default();
        let mut seen = 0;
        assert_eq!(m.owned_since(&mut seen), None);
        m.assign([part(0), part(1)]);
        assert_eq!(m.owned_since(&mut seen), Some(vec![part(0), part(1)]));
        assert_eq!(m.owned_since(&mut seen), None);
        m.own_exactly([part(0), part(1)]);
        assert_eq!(m.owned_since(&mut seen), None, "the same assignment is no change");
        m.revoke(&[part(0)]);
        assert_eq!(m.owned_since(&mut seen), Some(vec![part(1)]));
    }

    #[test]
    fn a_commit_says_which_log_its_offset_is_of() {
        let mut m = MemberOffsets::default();
        m.set_log("t", 0, "c/old");
        assert_eq!(m.metadata("t", 0), "", "not owned: nothing known");
        m.own_exactly([part(0), part(1)]);
        m.set_log("t", 0, "c/old");
        assert_eq!(m.metadata("t", 0), "log:c/old");
        assert_eq!(m.metadata("t", 1), "");
        // Read again from the start of a log not known: still the old one's, so the next owner
        // reads from the start (twice at worst).
        m.new_epoch("t", 0, None);
        assert_eq!(m.metadata("t", 0), "log:c/old");
        m.new_epoch("t", 0, Some("c/new"));
        assert_eq!(m.metadata("t", 0), "log:c/new");
        m.own_exactly([part(1)]);
        m.new_epoch("t", 0, Some("c/newer"));
        m.own_exactly([part(0), part(1)]);
        assert_eq!(
            m.metadata("t", 0),
            "",
            "lost (a log noted meanwhile not kept) and gained again: not known yet"
        );
        assert_eq!(
            (uncommitted(10, 4), uncommitted(10, 10), uncommitted(10, 55)),
            (6, 0, 10)
        );
        let other = |meta: &str, now| of_another_log(meta.as_bytes(), now);
        assert!(other("log:c/old", Some("c/new")));
        assert!(!other("log:c/new", Some("c/new")));
        assert!(!other("log:c/-", Some("c/new")), "names less: not another");
        assert!(!other("log:c/old", None), "the log now not known");
        assert!(!other("", Some("c/new")), "none: trusted");
        assert!(!other("c/old", Some("c/new")), "not ours: trusted");
        assert!(!of_another_log(b"log:\xff", Some("c/new")), "not UTF-8: trusted");
    }
}
