//! State that follows partitions: facts per key in a changelog topic, written to the partition of
//! the input they come from, and folded in log order into the instance's own store (a cache the
//! application defines, through [`FactStore`]), for a service that must remember what it decided.
//!
//! - **Facts, not states.** A record says one thing about its key. Two instances that own a
//!   partition at once (a rebalance hands it over while the old owner still works on it; a member
//!   cut off from the group that does not know it yet) can both write, and nothing is lost: the
//!   fold keeps every fact. The topic is therefore not compacted (compaction keeps one record per
//!   key, and would drop all but the last of a key's facts).
//! - **Decided after the log.** [`Changelog::write`] returns only once the tail has folded the
//!   fact and everything before it, so the decision that follows sees every earlier fact of its
//!   key, whoever wrote it.
//! - **Restored before handled.** When a record of a partition this instance has not followed
//!   comes, the partition's changelog is read from its start to the end it had then, before the
//!   record is handled ([`Changelog::ready`], which a gated [`crate::worker::Handler::ready`]
//!   awaits outside the concurrency slots). A record's offset is committed only after its facts
//!   were acknowledged by the broker, and a commit from a member that lost the partition is
//!   refused, so the end read after an assignment covers every committed input.
//! - **Followed while owned.** The instance reads the partitions it owns for as long as it owns
//!   them, so facts written by another owner in a handover reach its store; when the worker says
//!   a partition went, it stops reading it ([`Changelog::assigned`]).
//! - **A new log is a new history.** Every `LOG_CHECK` (10 s), and whenever a reader's position
//!   went back, the tail asks which log the topic is
//!   ([`crate::transport::Transport::log_id`]); when it is another one than the store's facts
//!   came from, the store forgets them ([`FactStore::follow_log`]) and every partition is
//!   restored anew from the new log.
//! - **A fact is where its key puts it.** A changelog record on a partition where neither
//!   murmur2 nor librdkafka's CRC-32 puts its key was not written by a service, and is passed
//!   over, as a record that does not decode is.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, Notify};

use crate::error::Report;
use crate::mutants::{self, Mutant};
use crate::transport::{Fetched, OutRecord, Reader, Record, Transport};
use crate::worker::HandleError;

/// How long a handler waits for a partition's restore, or for its own fact to be read back,
/// before it fails (retriably: the worker tries the record again).
pub const WAIT_WITHIN: Duration = Duration::from_secs(30);

/// Most changelog records folded in one transaction.
pub const FOLD_BATCH: usize = 512;

/// How long a batch is folded again while the store is busy, [`BUSY_PAUSE`] apart, before the
/// tail gives up (the handlers then fail retriably, and the worker stops for a restart).
const BUSY_FOR: Duration = Duration::from_secs(60);
const BUSY_PAUSE: Duration = Duration::from_millis(50);

/// The commands the tail takes (one per partition gained or lost at most).
const COMMANDS: usize = 1024;

/// The store a changelog folds into, and its facts' encoding: what an application gives.
pub trait FactStore: Send + Sync + 'static {
    /// One thing said about a key.
    type Fact: Send + Sync + 'static;
    /// The store's error.
    type Error: std::error::Error + Send + Sync + 'static;

    /// A fact as its record's value.
    fn encode(fact: &Self::Fact) -> Vec<u8>;

    /// A changelog record's key and fact; `Err` says why it is not one (it is passed over).
    fn decode(rec: &Record) -> Result<(String, Self::Fact), String>;

    /// Folds `facts` (key, offset, fact), in log order, in one transaction.
    fn apply(&self, facts: &[(String, i64, Self::Fact)]) -> Result<(), Self::Error>;

    /// Notes that `topic` is the log `identity`; `true` when the store held facts of another log
    /// under that name, which it then forgot.
    fn follow_log(&self, topic: &str, identity: &str) -> Result<bool, Self::Error>;

    /// Whether `error` may pass (the store busy or locked): the fold is tried again.
    fn is_busy(error: &Self::Error) -> bool;
}

/// A partition this instance follows.
#[derive(Debug)]
struct Part {
    /// The end the partition had when it was first needed; `None` while that is being asked.
    restore_to: Option<i64>,
    /// The next offset to fold.
    applied: i64,
    /// One past the last fact this instance wrote to it: the partition is ready for the next
    /// record once that is folded too.
    written: i64,
}

impl Part {
    /// Restored, and every fact this instance wrote to it folded.
    fn ready(&self) -> bool {
        self.restore_to.is_some_and(|end| self.applied >= end) && self.applied >= self.written
    }
}

/// How long a handler waits in its concurrency slot for its own fact to be folded; past it the
/// record goes back to the worker's gate (`HandleError::NotReady`), where it waits for the
/// partition without a slot.
pub const IN_SLOT_WAIT: Duration = Duration::from_secs(2);

#[derive(Debug, Default)]
struct Parts {
    parts: HashMap<i32, Part>,
    /// The changelog's partition count, once the tail has asked it.
    partitions: Option<i32>,
    /// Why the tail stopped (the store failed, the reader failed); every wait then fails.
    failed: Option<(bool, String)>,
}

struct Shared {
    parts: Mutex<Parts>,
    /// Woken on every change of `parts`.
    changed: Notify,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Parts> {
        self.parts.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn fail(&self, busy: bool, why: String) {
        tracing::error!(error = %why, "the changelog stopped");
        self.lock().failed = Some((busy, why));
        self.changed.notify_waiters();
    }
}

enum Cmd {
    Follow(i32, i64),
    Unfollow(i32),
}

/// A changelog: writes facts, restores and follows partitions, folds them into the store.
pub struct Changelog<T, S> {
    transport: T,
    topic: String,
    store: Arc<S>,
    shared: Arc<Shared>,
    cmds: mpsc::Sender<Cmd>,
    tail: tokio::task::JoinHandle<()>,
    /// Facts go to the store only, not to the log (an application's mutant: state kept on the
    /// instance).
    local_only: bool,
    /// Offsets of facts kept on the instance only.
    local_offsets: AtomicI64,
}

impl<T: Transport, S: FactStore> Changelog<T, S> {
    /// The changelog `topic`, folded into `store` (call within a runtime: the tail is a task).
    /// `local_only` keeps facts on the instance, out of the log (for an application's mutants).
    pub fn start(transport: T, topic: &str, store: Arc<S>, local_only: bool) -> Changelog<T, S> {
        let shared = Arc::new(Shared {
            parts: Mutex::new(Parts::default()),
            changed: Notify::new(),
        });
        let (cmds, rx) = mpsc::channel(COMMANDS);
        let tail = tokio::spawn(tail(
            transport.clone(),
            topic.to_owned(),
            store.clone(),
            shared.clone(),
            rx,
        ));
        Changelog {
            transport,
            topic: topic.to_owned(),
            store,
            shared,
            cmds,
            tail,
            local_only,
            local_offsets: AtomicI64::new(0),
        }
    }

    /// Ends the tail.
    pub fn stop(&self) {
        self.tail.abort();
    }

    /// Returns once `partition`'s changelog is folded up to the end it had when this instance
    /// first needed it (restoring it then).
    pub async fn ready(&self, partition: i32) -> Result<(), HandleError> {
        if self.local_only {
            return Ok(());
        }
        let first = {
            let mut s = self.shared.lock();
            match s.parts.entry(partition) {
                std::collections::hash_map::Entry::Occupied(_) => false,
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(Part {
                        restore_to: None,
                        applied: 0,
                        written: 0,
                    });
                    true
                }
            }
        };
        if first {
            self.restore(partition).await?;
        }
        if let Err(e) = self.wait(partition, Part::ready, WAIT_WITHIN).await {
            // Start over next time (the log's start may have moved under a stalled restore).
            self.let_go(partition);
            return Err(e);
        }
        Ok(())
    }

    /// Asks where `partition` starts and ends, and has the tail read it from its start.
    async fn restore(&self, partition: i32) -> Result<(), HandleError> {
        let marks = self.transport.watermarks(&self.topic, partition).await;
        let (start, end) = match marks {
            Ok(m) => m,
            Err(e) => {
                self.let_go(partition);
                return Err(match e {
                    e if e.is_retriable() => HandleError::retriable(e),
                    e => HandleError::fatal(format!(
                        "the changelog {} has no partition {partition} ({}): it needs as many \
                         partitions as the topics its service reads",
                        self.topic,
                        Report(&e)
                    )),
                });
            }
        };
        // The mutant reads on from the end, as a restore from a checkpoint past the history would.
        let from = if mutants::on(Mutant::RestoreSkipped) {
            end
        } else {
            start
        };
        {
            let mut s = self.shared.lock();
            let Some(p) = s.parts.get_mut(&partition) else {
                return Err(HandleError::retriable("the partition was let go while restoring"));
            };
            p.applied = from;
            p.restore_to = Some(end);
        }
        self.shared.changed.notify_waiters();
        tracing::debug!(topic = %self.topic, partition, start, end, "restoring");
        self.cmds
            .send(Cmd::Follow(partition, from))
            .await
            .map_err(|_| HandleError::fatal("the changelog's tail stopped"))
    }

    /// Stops following `partition`: it is restored anew when next needed.
    pub fn let_go(&self, partition: i32) {
        if self.shared.lock().parts.remove(&partition).is_some() {
            // A full queue means the tail is stuck; the partition's records are passed over
            // anyway, as it is no longer in `parts`.
            let _ = self.cmds.try_send(Cmd::Unfollow(partition));
        }
        self.shared.changed.notify_waiters();
    }

    /// The worker's word on what this instance owns: partitions of no topic it owns are let go.
    pub fn assigned(&self, owned: &[(String, i32)]) {
        let followed: Vec<i32> = self.shared.lock().parts.keys().copied().collect();
        for p in followed {
            if !owned.iter().any(|(_, o)| *o == p) {
                self.let_go(p);
            }
        }
    }

    /// Waits until `done` holds for `partition`, while the tail makes progress: it fails once
    /// the partition's fold has not moved for `within` (a restore of any length finishes).
    async fn wait(
        &self,
        partition: i32,
        done: impl Fn(&Part) -> bool,
        within: Duration,
    ) -> Result<(), HandleError> {
        let mut deadline = tokio::time::Instant::now() + within;
        let mut seen = i64::MIN;
        loop {
            let changed = self.shared.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            {
                let s = self.shared.lock();
                if let Some((busy, why)) = &s.failed {
                    let e = format!("the changelog stopped: {why}");
                    return Err(if *busy {
                        HandleError::retriable(e)
                    } else {
                        HandleError::fatal(e)
                    });
                }
                match s.parts.get(&partition) {
                    None => {
                        return Err(HandleError::retriable(format!(
                            "partition {partition} of {} was let go",
                            self.topic
                        )))
                    }
                    Some(p) if done(p) => return Ok(()),
                    Some(p) if p.applied > seen => {
                        seen = p.applied;
                        deadline = tokio::time::Instant::now() + within;
                    }
                    Some(_) => {}
                }
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if tokio::time::timeout(left, changed).await.is_err() {
                return Err(HandleError::retriable(format!(
                    "{} partition {partition}: no progress for {within:?}",
                    self.topic
                )));
            }
        }
    }

    /// The store the changelog folds into.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The changelog's topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Writes `fact` about `key` to `partition` (the partition of the input it comes from) and
    /// returns its offset once the tail has folded it, and everything before it in the log. A
    /// decision taken on the store after that sees every fact written before this one, by any
    /// instance: of two instances that write facts of one key from two inputs at once (each owns
    /// one input's partition), the one whose fact is later sees both.
    ///
    /// A fact must be written where its key puts it (murmur2, or librdkafka's CRC-32: the
    /// partition of an input keyed like it, on topics of as many partitions): the fold passes over
    /// a fact anywhere else, so writing one there fails for good.
    pub async fn write(&self, partition: i32, key: &str, fact: S::Fact) -> Result<i64, HandleError> {
        let partitions = self.shared.lock().partitions;
        if let Some(why) =
            partitions.and_then(|n| crate::partitioner::misplaced(key.as_bytes(), partition, n))
        {
            return Err(HandleError::fatal(format!(
                "a fact of {key} written to {} partition {partition} would be passed over: {why}",
                self.topic
            )));
        }
        if self.local_only {
            let offset = self.local_offsets.fetch_add(1, Ordering::Relaxed);
            self.store
                .apply(&[(key.to_owned(), offset, fact)])
                .map_err(store_error::<S>)?;
            return Ok(offset);
        }
        let mut out = OutRecord::new(&self.topic, key, S::encode(&fact));
        out.partition = Some(partition);
        let acked = self.transport.produce(out).await?;
        if acked.partition != partition {
            return Err(HandleError::fatal(format!(
                "{} wrote to partition {}, not {partition}",
                self.topic, acked.partition
            )));
        }
        if let Some(p) = self.shared.lock().parts.get_mut(&partition) {
            p.written = p.written.max(acked.offset + 1);
        }
        // Its own fact folded, within the slot's patience: else the record waits for it at the
        // gate, and its slot goes to a partition that moves (the fact is in the log; handled
        // again, the record finds it).
        match self
            .wait(partition, |p| p.applied > acked.offset, IN_SLOT_WAIT)
            .await
        {
            Err(HandleError::Retriable(e)) if !mutants::on(Mutant::RestoreHoldsSlot) => {
                return Err(HandleError::not_ready(e))
            }
            Err(HandleError::Retriable(_)) => {
                // The mutant waits on in its slot, as before issue 25.
                self.wait(partition, |p| p.applied > acked.offset, WAIT_WITHIN)
                    .await?;
            }
            other => other?,
        }
        Ok(acked.offset)
    }
}

impl<T, S> Drop for Changelog<T, S> {
    fn drop(&mut self) {
        self.tail.abort();
    }
}

/// Reads the followed partitions and folds their facts into the store, in log order.
async fn tail<T: Transport, S: FactStore>(
    transport: T,
    topic: String,
    store: Arc<S>,
    shared: Arc<Shared>,
    mut cmds: mpsc::Receiver<Cmd>,
) {
    let mut reader = match transport.reader(&topic).await {
        Ok(r) => r,
        Err(e) => return shared.fail(false, format!("opening a reader of {topic}: {}", Report(&e))),
    };
    // Its partition count: a fact off its key's partition was not written by a service.
    let partitions = crate::transport::end_offsets_within(&transport, &topic, crate::transport::ENDS_WITHIN)
        .await
        .map(|e| e.len() as i32)
        .ok();
    shared.lock().partitions = partitions;
    // Which log the changelog is: asked first, and again every LOG_CHECK.
    let mut log_checks = tokio::time::interval(LOG_CHECK);
    log_checks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = log_checks.tick() => {
                if let Err(e) = check_log(&transport, &topic, &*store, &shared, &mut reader).await {
                    return shared.fail(S::is_busy(&e), format!("noting which log {topic} is: {}", Report(&e)));
                }
            }
            cmd = cmds.recv() => {
                let done = match cmd {
                    None => return,
                    Some(Cmd::Follow(p, from)) => reader.follow(p, from),
                    Some(Cmd::Unfollow(p)) => reader.unfollow(p),
                };
                if let Err(e) = done {
                    return shared.fail(false, format!("following {topic}: {}", Report(&e)));
                }
            }
            got = reader.recv(FOLD_BATCH) => match got {
                Ok(got) => {
                    if !got.restarted.is_empty() && !mutants::on(Mutant::NewLogNotNoticed) {
                        // Another log under the name: forget the old one's facts now, not at the
                        // next check, and restore what is needed from the new one.
                        if let Err(e) = check_log(&transport, &topic, &*store, &shared, &mut reader).await {
                            return shared.fail(S::is_busy(&e), format!("noting which log {topic} is: {}", Report(&e)));
                        }
                        for (_, p) in &got.restarted {
                            if shared.lock().parts.remove(p).is_some() {
                                let _ = reader.unfollow(*p);
                            }
                        }
                        shared.changed.notify_waiters();
                        // The rest of the batch is folded below: a partition let go is skipped.
                    }
                    for u in &got.unreadable {
                        // A fact lost to the log itself: what it said is not known to anyone.
                        tracing::error!(topic = %u.topic, partition = u.partition, offset = u.offset, error = %u.error, "a changelog record cannot be read: passed over");
                    }
                    if let Err(e) = fold(&*store, (&shared, partitions), &got).await {
                        return shared.fail(S::is_busy(&e), format!("folding {topic}: {}", Report(&e)));
                    }
                    // The store's write, as the simulation's disk faults cost it.
                    crate::probes::disk_io().await;
                }
                Err(e) if e.is_retriable() => {
                    tracing::warn!(topic = %topic, error = %Report(&e), "reading the changelog");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return shared.fail(false, format!("reading {topic}: {}", Report(&e))),
            }
        }
    }
}

/// How often the tail asks whether the changelog is still the log its store holds facts of.
const LOG_CHECK: Duration = Duration::from_secs(10);

/// Asks which log the changelog is; when it is another one than the store's facts came from (the
/// topic made again, a new cluster), the store forgets them and every partition is let go, so
/// each is restored from the new log when next needed. A broker that names no log, or does not
/// answer now, changes nothing.
async fn check_log<T: Transport, S: FactStore>(
    transport: &T,
    topic: &str,
    store: &S,
    shared: &Shared,
    reader: &mut T::Reader,
) -> Result<(), S::Error> {
    if mutants::on(Mutant::NewLogNotNoticed) {
        return Ok(());
    }
    let Ok(Some(id)) = transport.log_id(topic).await else {
        return Ok(());
    };
    match store.follow_log(topic, &id) {
        Ok(true) => {}
        Ok(false) => return Ok(()),
        // A busy store is asked again at the next check.
        Err(e) if S::is_busy(&e) => {
            crate::probes::hit(crate::probes::Probe::StoreBusy, "");
            return Ok(());
        }
        Err(e) => return Err(e),
    }
    tracing::warn!(topic, "the changelog is another log than the store's facts came from: forgotten, and restored anew as needed");
    let parts: Vec<i32> = shared.lock().parts.drain().map(|(p, _)| p).collect();
    for p in parts {
        // A reader that cannot let go is stopped with the tail when its follow fails next.
        let _ = reader.unfollow(p);
    }
    shared.changed.notify_waiters();
    Ok(())
}

/// Folds the records of followed partitions not folded yet, then moves their partitions on, to
/// the reader's positions (past transaction markers and records that cannot be read, which a
/// restore would otherwise wait for).
async fn fold<S: FactStore>(
    store: &S,
    (shared, partitions): (&Shared, Option<i32>),
    got: &Fetched,
) -> Result<(), S::Error> {
    let fresh: Vec<&Record> = {
        let s = shared.lock();
        got.records
            .iter()
            .filter(|r| s.parts.get(&r.partition).is_some_and(|p| r.offset >= p.applied))
            .collect()
    };
    let placed = |r: &&&Record| {
        let key = r.key.as_deref().unwrap_or_default();
        partitions.is_none_or(|n| crate::partitioner::misplaced(key, r.partition, n).is_none())
    };
    let facts: Vec<(String, i64, S::Fact)> = fresh
        .iter()
        .filter(placed)
        .filter_map(|r| match S::decode(r) {
            Ok((order, fact)) => Some((order, r.offset, fact)),
            Err(why) => {
                static NOT_A_FACT: crate::throttle::Throttle = crate::throttle::Throttle::new();
                if let Some(held) = NOT_A_FACT.allow() {
                    tracing::warn!(
                        partition = r.partition,
                        offset = r.offset,
                        why,
                        more_since = held,
                        "not a fact: passed over"
                    );
                }
                None
            }
        })
        .collect();
    let give_up = tokio::time::Instant::now() + BUSY_FOR;
    loop {
        match store.apply(&facts) {
            Ok(()) => break,
            Err(e) if S::is_busy(&e) && tokio::time::Instant::now() < give_up => {
                crate::probes::hit(crate::probes::Probe::StoreBusy, "");
                tokio::time::sleep(BUSY_PAUSE).await;
            }
            Err(e) => return Err(e),
        }
    }
    {
        let mut s = shared.lock();
        let moved = fresh.iter().map(|r| (r.partition, r.offset + 1)).chain(
            got.positions
                .iter()
                .map(|(_, p, at)| (*p, *at))
                .filter(|_| !mutants::on(Mutant::EndByLastRecord)),
        );
        for (partition, next) in moved {
            if let Some(p) = s.parts.get_mut(&partition) {
                p.applied = p.applied.max(next);
            }
        }
    }
    shared.changed.notify_waiters();
    Ok(())
}

/// A store's error as the handler's: retriable when the store was busy.
fn store_error<S: FactStore>(e: S::Error) -> HandleError {
    if S::is_busy(&e) {
        HandleError::retriable(e)
    } else {
        HandleError::fatal(e)
    }
}
