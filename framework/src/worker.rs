//! The driver every consuming service runs on: at least once, concurrent across keys, in order
//! within one.
//!
//! - Records of one key run one after another (a *lane*); different keys run concurrently, at most
//!   `concurrency` at a time (a kitchen's ovens, a fleet's drivers).
//! - A record's offset is marked done only when its handler returned, i.e. after every output it
//!   caused was acknowledged durable; and the mark per partition never passes a record that is
//!   still unfinished ([`OffsetTracker`]).
//! - A malformed record goes to the dead-letter topic with the reason, then counts as done.
//! - Retriable failures are retried with a bounded backoff; when retries run out the worker stops
//!   without marking the record, so a restart redelivers it.
//! - On shutdown it stops reading, finishes everything received, commits, and leaves the group.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, Semaphore};

use crate::error::{BoxError, Malformed, Report};
use crate::mutants::{self, Mutant};
use crate::probes::{self, Probe};
use crate::shutdown::Shutdown;
use crate::transport::{Delivery, OutRecord, Record, Subscription, Transport, TransportError, Unreadable};

/// Why a handler could not finish a record.
#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    /// The record itself is bad: dead-letter it.
    #[error("malformed event: {0}")]
    Malformed(#[from] Malformed),
    /// Try again later.
    #[error("retriable")]
    Retriable(#[source] BoxError),
    /// Stop the service.
    #[error("fatal")]
    Fatal(#[source] BoxError),
    /// The record's partition is not ready after all (its state's log stopped moving while the
    /// record was handled): the record gives its concurrency slot back, waits at the handler's
    /// gate ([`Handler::ready`]), and is handled again. Only a gated handler says this.
    #[error("the record's partition is not ready")]
    NotReady(#[source] BoxError),
}

impl HandleError {
    pub fn retriable(cause: impl Into<BoxError>) -> HandleError {
        HandleError::Retriable(cause.into())
    }

    pub fn fatal(cause: impl Into<BoxError>) -> HandleError {
        HandleError::Fatal(cause.into())
    }

    pub fn not_ready(cause: impl Into<BoxError>) -> HandleError {
        HandleError::NotReady(cause.into())
    }
}

/// A store failure, as a handler reports it: a busy or locked database clears, anything else will
/// not.
impl From<crate::store::StoreError> for HandleError {
    fn from(e: crate::store::StoreError) -> Self {
        if e.is_busy() {
            probes::hit(Probe::StoreBusy, "");
            HandleError::retriable(e)
        } else {
            HandleError::fatal(e)
        }
    }
}

impl From<TransportError> for HandleError {
    fn from(e: TransportError) -> Self {
        probes::hit(Probe::ProduceFailed, "");
        if e.is_retriable() {
            HandleError::retriable(e)
        } else {
            // A service's own outputs are small: one refused for its size will be refused again.
            HandleError::fatal(e)
        }
    }
}

/// A service's logic for one record: do every effect, return once outputs are durable.
pub trait Handler: Send + Sync + 'static {
    /// Handles one record. Called again with the same record after a retriable failure or a
    /// redelivery, so it must be idempotent.
    fn handle(&self, record: &Record) -> impl Future<Output = Result<(), HandleError>> + Send;

    /// The member now owns exactly `partitions` (told when they change, before the next record
    /// is handled). A handler whose state follows partitions lets go of those it lost.
    fn assigned(&self, partitions: &[(String, i32)]) {
        let _ = partitions;
    }

    /// Whether [`Handler::ready`] may wait (a changelog's restore does); when not, it is never
    /// called.
    const GATED: bool = false;

    /// Returns once `record` may be handled (its partition's state restored). Awaited before the
    /// record takes a concurrency slot, so a partition that waits never holds the slots the other
    /// partitions' records need; the worker stops fetching a partition whose records pile up
    /// here ([`WorkerConfig::gate_bound`]) until they pass.
    fn ready(&self, record: &Record) -> impl Future<Output = Result<(), HandleError>> + Send {
        let _ = record;
        std::future::ready(Ok(()))
    }
}

/// The default of [`WorkerConfig::gate_bound`].
pub const GATE_BOUND: usize = 64;

/// How a worker runs.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// The service's name, in logs and on dead-lettered records.
    pub name: String,
    pub group: String,
    pub topics: Vec<String>,
    /// How many records may be handled at once (ovens, drivers).
    pub concurrency: usize,
    /// How many records may be received but unfinished (running or queued behind their key).
    pub max_in_flight: usize,
    /// How many bytes (keys, values, headers) those records may hold together: records near the
    /// size limit would otherwise take `max_in_flight` megabytes. One record is always taken,
    /// whatever its size.
    pub max_in_flight_bytes: usize,
    pub dlq_topic: String,
    /// Attempts per record before a retriable failure becomes fatal.
    pub max_attempts: u32,
    /// How long a shutdown waits for the records in flight to finish; past it the handlers still
    /// running are ended (their records are not marked, and come again to the partition's next
    /// owner), what finished is committed and the member leaves its group.
    pub drain_within: Duration,
    /// Whether every keyed record must sit where an ordinary producer puts its key (Java's
    /// murmur2 partitioner, or librdkafka's default CRC-32 one, over the topic's partitions):
    /// one that does not was placed by hand, and is dead-lettered without reaching the handler
    /// ([`crate::partitioner::Placement`]).
    pub keys_placed: bool,
    /// Most records of one partition waiting at a gated handler's [`Handler::ready`] before the
    /// worker pauses fetching that partition (it resumes once they passed).
    pub gate_bound: usize,
}

/// The default of [`WorkerConfig::drain_within`]: 20 s, inside the 30 s most supervisors give a
/// process between SIGTERM and SIGKILL.
pub const DRAIN_WITHIN: Duration = Duration::from_secs(20);

/// The default bound on the bytes a worker holds in flight: 64 MiB, librdkafka's default for its
/// own queue of fetched records (`queued.max.messages.kbytes`).
pub const MAX_IN_FLIGHT_BYTES: usize = 64 * 1024 * 1024;

impl WorkerConfig {
    /// Defaults for a service: concurrency 64, 1024 (and 64 MiB) in flight, 10 attempts, 20 s to
    /// drain on shutdown, 64 records of a partition waiting at the gate.
    pub fn new(name: &str, group: &str, topics: &[&str], dlq_topic: &str) -> WorkerConfig {
        WorkerConfig {
            name: name.to_owned(),
            group: group.to_owned(),
            topics: topics.iter().map(|t| (*t).to_owned()).collect(),
            concurrency: 64,
            max_in_flight: 1024,
            max_in_flight_bytes: MAX_IN_FLIGHT_BYTES,
            dlq_topic: dlq_topic.to_owned(),
            max_attempts: 10,
            drain_within: DRAIN_WITHIN,
            keys_placed: true,
            gate_bound: GATE_BOUND,
        }
    }
}

/// Why a worker stopped other than by shutdown.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("{service}")]
    Transport { service: String, source: TransportError },
    #[error("{service}: record {topic}/{partition}@{offset}")]
    Handler {
        service: String,
        topic: String,
        partition: i32,
        offset: i64,
        source: HandleError,
    },
}

impl WorkerError {
    /// Whether the worker stopped because retries ran out (the broker or a store stayed
    /// unavailable), rather than on an error no retry could fix.
    pub fn gave_up_retrying(&self) -> bool {
        match self {
            WorkerError::Transport { source, .. } => source.is_retriable(),
            WorkerError::Handler { source, .. } => {
                matches!(source, HandleError::Retriable(_) | HandleError::NotReady(_))
            }
        }
    }
}

/// Counters a worker keeps, readable while it runs.
#[derive(Debug, Default)]
pub struct WorkerStats {
    pub done: AtomicU64,
    pub dead_lettered: AtomicU64,
    /// Records dead-lettered in part (a prefix of the key and value, or none of them: see
    /// [`DlqForm`]) because the whole was too large.
    pub dead_lettered_in_part: AtomicU64,
    /// Malformed records that not even a bare dead-letter record could carry: logged with where
    /// they are (they stay on their source topic) and passed over.
    pub dead_letter_dropped: AtomicU64,
    pub retries: AtomicU64,
    /// Records the consumer could not read (given up on, a note of each dead-lettered).
    pub unreadable: AtomicU64,
}

/// What a worker counted, read once.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WorkerCounts {
    pub done: u64,
    pub dead_lettered: u64,
    pub dead_lettered_in_part: u64,
    pub dead_letter_dropped: u64,
    pub retries: u64,
    pub unreadable: u64,
}

impl WorkerStats {
    /// The counters now.
    pub fn counts(&self) -> WorkerCounts {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        WorkerCounts {
            done: get(&self.done),
            dead_lettered: get(&self.dead_lettered),
            dead_lettered_in_part: get(&self.dead_lettered_in_part),
            dead_letter_dropped: get(&self.dead_letter_dropped),
            retries: get(&self.retries),
            unreadable: get(&self.unreadable),
        }
    }
}

/// Per partition, which received records are unfinished, so the offset marked done never passes one.
#[derive(Debug, Default)]
pub struct OffsetTracker {
    parts: BTreeMap<(String, i32), PartitionTrack>,
}

#[derive(Debug, Default)]
struct PartitionTrack {
    /// The member's epoch of the partition these records came in (`Subscription::epoch`): a
    /// record of an earlier epoch marks nothing.
    epoch: u64,
    /// Unfinished offsets, with a count: a redelivered record may be in flight twice.
    unfinished: BTreeMap<i64, u32>,
    /// One past the highest offset received.
    received_end: i64,
    /// The last offset marked done (the next to read after a restart).
    marked: i64,
    /// The last mark the consumer took (a mark of a partition it no longer owns is refused).
    stored: i64,
}

impl OffsetTracker {
    /// A record was received in the member's `epoch` of its partition.
    pub fn begin(&mut self, topic: &str, partition: i32, offset: i64, epoch: u64) {
        // The first record seen (of this epoch) is where the group's committed position was:
        // nothing to mark before it.
        let p = self.track(topic, partition, || PartitionTrack {
            epoch,
            marked: offset,
            stored: offset,
            ..PartitionTrack::default()
        });
        *p.unfinished.entry(offset).or_default() += 1;
        p.received_end = p.received_end.max(offset + 1);
    }

    /// The track of `topic`/`partition`, `fresh` when there is none or it is of another epoch.
    fn track(
        &mut self,
        topic: &str,
        partition: i32,
        fresh: impl Fn() -> PartitionTrack,
    ) -> &mut PartitionTrack {
        let p = self
            .parts
            .entry((topic.to_owned(), partition))
            .or_insert_with(&fresh);
        let new = fresh();
        if p.epoch != new.epoch {
            *p = new;
        }
        p
    }

    /// A record of `epoch` finished; returns the new offset to mark done, if it moved forward (and
    /// the partition is still in that epoch).
    pub fn finish(&mut self, topic: &str, partition: i32, offset: i64, epoch: u64) -> Option<i64> {
        let p = self
            .parts
            .get_mut(&(topic.to_owned(), partition))
            .filter(|p| p.epoch == epoch)?;
        if let Some(n) = p.unfinished.get_mut(&offset) {
            *n -= 1;
            if *n == 0 {
                p.unfinished.remove(&offset);
            }
        }
        let next = if mutants::on(Mutant::OffsetPassesUnfinished) {
            offset + 1
        } else {
            p.unfinished.keys().next().copied().unwrap_or(p.received_end)
        };
        (next > p.marked).then(|| {
            p.marked = next;
            next
        })
    }

    /// The consumer took the mark `next` (or, `taken` false, refused it: the partition was not
    /// its own for the moment). A refused mark is made again by the next record of the partition
    /// that finishes, so when a rebalance gives the partition back and its records come again
    /// from the last commit, their marks are stored and committed (else the group's lag stays).
    pub fn stored(&mut self, topic: &str, partition: i32, next: i64, taken: bool) {
        if let Some(p) = self.parts.get_mut(&(topic.to_owned(), partition)) {
            if taken {
                p.stored = next;
            } else {
                p.marked = p.stored;
            }
        }
    }

    /// The consumer's position in `topic`/`partition` reached `position` past offsets it never
    /// delivers (a transaction marker): returns the new offset to mark done, when nothing before
    /// it is unfinished and it moved forward.
    pub fn reached(&mut self, topic: &str, partition: i32, position: i64, epoch: u64) -> Option<i64> {
        let p = self.track(topic, partition, || PartitionTrack {
            epoch,
            // Nothing received yet: whatever the group committed, the position is past it only
            // by offsets that hold no record to handle.
            marked: i64::MIN,
            stored: i64::MIN,
            received_end: position,
            ..PartitionTrack::default()
        });
        p.received_end = p.received_end.max(position);
        if !p.unfinished.is_empty() || p.received_end <= p.marked {
            return None;
        }
        p.marked = p.received_end;
        Some(p.marked)
    }

    /// How many received records are unfinished.
    pub fn unfinished(&self) -> usize {
        self.parts
            .values()
            .map(|p| p.unfinished.values().map(|n| *n as usize).sum::<usize>())
            .sum()
    }
}

/// What the worker holds for one offset: a record to handle, or a record the consumer could not
/// read (a note of it is dead-lettered).
#[derive(Debug)]
enum Work {
    Record(Record),
    Unreadable(Unreadable),
}

impl Work {
    fn topic(&self) -> &str {
        match self {
            Work::Record(r) => &r.topic,
            Work::Unreadable(u) => &u.topic,
        }
    }

    fn partition(&self) -> i32 {
        match self {
            Work::Record(r) => r.partition,
            Work::Unreadable(u) => u.partition,
        }
    }

    fn offset(&self) -> i64 {
        match self {
            Work::Record(r) => r.offset,
            Work::Unreadable(u) => u.offset,
        }
    }

    /// Its lane: the record's key (a keyless record's, and an unreadable one's, is empty).
    fn key(&self) -> Vec<u8> {
        match self {
            Work::Record(r) => r.key.clone().unwrap_or_default(),
            Work::Unreadable(_) => Vec::new(),
        }
    }

    fn bytes(&self) -> usize {
        match self {
            Work::Record(r) => record_bytes(r),
            Work::Unreadable(_) => 0,
        }
    }
}

/// What a handler task tells the worker.
enum Msg {
    /// Its record passed the handler's gate ([`Handler::ready`]).
    Passed { task: u64 },
    /// Its record is finished, or could not be.
    Done(Done),
}

struct Done {
    /// The task that handled it.
    task: u64,
    /// The member's epoch of the partition when the record was received.
    epoch: u64,
    key: Vec<u8>,
    /// What the record counted against the byte bound.
    bytes: usize,
    topic: String,
    partition: i32,
    offset: i64,
    result: Result<(), HandleError>,
}

/// How often the worker asks its subscription whether its assignment changed, besides on each
/// record.
const ASSIGNMENT_CHECK: Duration = Duration::from_secs(1);

/// Runs a service's handler until shutdown (`Ok`) or a fatal error.
pub async fn run_worker<T: Transport, H: Handler>(
    transport: T,
    cfg: WorkerConfig,
    handler: Arc<H>,
    stats: Arc<WorkerStats>,
    mut shutdown: Shutdown,
) -> Result<(), WorkerError> {
    let topics: Vec<&str> = cfg.topics.iter().map(String::as_str).collect();
    let mut sub = match transport.subscribe(&cfg.group, &topics).await {
        Ok(sub) => sub,
        Err(e) => return Err(transport_error(&cfg, e)),
    };
    tracing::info!(service = %cfg.name, group = %cfg.group, topics = ?cfg.topics, "subscribed");
    // Room for every message of every record in flight (two at most each), so a task never
    // waits on the channel.
    let (msg_tx, mut msg_rx) = mpsc::channel::<Msg>(2 * cfg.max_in_flight.max(1));
    // Which log each topic is: a topic made again under the running worker is read again from
    // its start (a consumer whose assignment did not change reads on at its old position).
    let (log_tx, mut new_logs) = mpsc::channel::<String>(cfg.topics.len().max(1));
    let partitions = Partitions::first(&transport, &cfg).await;
    let known = KnownLogs::default();
    let log_watch = tokio::spawn(watch_logs(
        transport.clone(),
        cfg.topics.clone(),
        (log_tx, partitions.clone(), known.clone()),
    ));
    let _log_watch = AbortOnDrop(log_watch);
    let mut d = Driver::new(transport, cfg, handler, stats, msg_tx);
    d.partitions = partitions;
    d.known = known.clone();
    let mut draining: Option<tokio::time::Instant> = None;
    // An assignment that changes while no record comes (an idle shop, a partition handed over
    // with nothing in it) still reaches the handler: the status service's watchdog must know.
    let mut assignment_checks = tokio::time::interval(ASSIGNMENT_CHECK);
    assignment_checks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let failure = loop {
        if draining.is_some() && d.in_flight == 0 {
            break None;
        }
        let drained_by = draining.unwrap_or_else(tokio::time::Instant::now);
        tokio::select! {
            biased;
            Some(msg) = msg_rx.recv() => {
                if let Err(f) = d.message(&mut sub, msg) {
                    break Some(f);
                }
            }
            _ = shutdown.wait(), if draining.is_none() => {
                tracing::info!(service = %d.cfg.name, in_flight = d.in_flight, "shutting down: finishing what is in flight");
                draining = Some(tokio::time::Instant::now() + d.cfg.drain_within);
            }
            _ = tokio::time::sleep_until(drained_by), if draining.is_some() => {
                tracing::warn!(service = %d.cfg.name, in_flight = d.in_flight, within = ?d.cfg.drain_within, "shutting down: what is still in flight is left for the partitions' next owner");
                d.end_tasks().await;
                break None;
            }
            _ = assignment_checks.tick() => {
                if let Some(owned) = sub.assignment_changed() {
                    d.assigned(&mut sub, &owned);
                }
            }
            Some(topic) = new_logs.recv() => d.new_log(&mut sub, &topic),
            received = sub.recv(), if draining.is_none() && d.has_room() => match received {
                Ok(delivery) => d.got(&mut sub, delivery),
                Err(e) if e.is_retriable() => {
                    probes::hit(Probe::ConsumerRetried, "");
                    tracing::warn!(service = %d.cfg.name, error = %Report(&e), "consumer error");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => break Some(transport_error(&d.cfg, e)),
            }
        }
    };
    if failure.is_some() {
        d.end_tasks().await;
    }
    logs_before_close(&mut d, &mut sub, &known).await;
    // Commit what is done (never past an unfinished record) and leave the group.
    let closed = sub.close().await;
    if let Some(f) = failure {
        tracing::error!(error = %Report(&f), "worker stopped");
        return Err(f);
    }
    closed.map_err(|e| transport_error(&d.cfg, e))?;
    tracing::info!(service = %d.cfg.name, done = d.stats.done.load(Ordering::Relaxed), "stopped");
    Ok(())
}

/// How often a worker asks which log each of its topics is.
pub const LOG_CHECK: Duration = Duration::from_secs(10);

/// Aborts its task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Each topic's partition count, as the worker last asked: where a key belongs.
#[derive(Clone, Debug, Default)]
struct Partitions(Arc<std::sync::Mutex<BTreeMap<String, i32>>>);

impl Partitions {
    /// Where keys belong, known before the first record is handled (asked for a few seconds;
    /// the worker's watch asks again every [`LOG_CHECK`]); nothing when placement is not judged.
    async fn first<T: Transport>(transport: &T, cfg: &WorkerConfig) -> Partitions {
        let partitions = Partitions::default();
        for topic in cfg.topics.iter().filter(|_| cfg.keys_placed) {
            let ends = crate::transport::end_offsets_within(transport, topic, Duration::from_secs(5)).await;
            if let Ok(ends) = ends {
                partitions.set(topic, ends.len() as i32);
            }
        }
        partitions
    }

    fn of(&self, topic: &str) -> Option<i32> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(topic)
            .copied()
    }

    fn set(&self, topic: &str, n: i32) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(topic.to_owned(), n);
    }
}

/// Every [`LOG_CHECK`] (the first at once): asks how many partitions each of `topics` has (into
/// `partitions`), and which log it is (`Transport::log_id`), and sends each topic whose log is
/// another one than it was (made again under the same name, a new cluster). An answer that does
/// not come is asked again next time.
async fn watch_logs<T: Transport>(
    transport: T,
    topics: Vec<String>,
    (changed, partitions, known): (mpsc::Sender<String>, Partitions, KnownLogs),
) {
    let mut every = tokio::time::interval(LOG_CHECK);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        for topic in &topics {
            if let Ok(ends) = transport.end_offsets(topic).await {
                partitions.set(topic, ends.len() as i32);
            }
        }
        if mutants::on(Mutant::NewLogNotNoticed) {
            continue;
        }
        for topic in &topics {
            let Ok(Some(id)) = transport.log_id(topic).await else {
                continue;
            };
            if known.learn(topic, &id) {
                tracing::warn!(
                    topic,
                    "the topic is another log now: reading it again from its start"
                );
                if changed.send(topic.clone()).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Which log each topic was when the worker last asked, shared by its watch and its close.
#[derive(Clone, Debug, Default)]
struct KnownLogs(Arc<std::sync::Mutex<BTreeMap<String, crate::transport::LogId>>>);

impl KnownLogs {
    /// `topic` is the log `id` names: whether that is another log than the one known.
    fn learn(&self, topic: &str, id: &str) -> bool {
        let now = crate::transport::LogId::parse(id);
        let mut known = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let other = known.get(topic).is_some_and(|was| was.is_other_than(&now));
        // What either answer named, the newer first.
        let merged = match known.remove(topic) {
            Some(was) if !other => crate::transport::LogId {
                cluster: now.cluster.or(was.cluster),
                topic: now.topic.or(was.topic),
            },
            _ => now,
        };
        known.insert(topic.to_owned(), merged);
        other
    }

    /// The log `topic` was when last asked, written out.
    fn get(&self, topic: &str) -> Option<String> {
        let known = self.0.lock().unwrap_or_else(|p| p.into_inner());
        known.get(topic).map(ToString::to_string)
    }
}

/// How long a closing worker asks which log its topics are, before its last commit.
const LOG_CLOSE_CHECK: Duration = Duration::from_secs(2);

/// Before the last commit: a topic made again since the watch last looked is read from its
/// start, so what is committed for it is the new log's start and not one of the old log's
/// marks (a commit names a topic, not a log: the partition's next owner would start there,
/// past the new log's first records; swarm seed 754 lost 14 orders to a stop 1 s after
/// `recreate all`). The topics are asked for [`LOG_CLOSE_CHECK`] at most in all, so a broker out
/// of reach adds no more than that to a shutdown.
async fn logs_before_close<T: Transport, H: Handler, S: Subscription>(
    d: &mut Driver<T, H>,
    sub: &mut S,
    known: &KnownLogs,
) {
    if mutants::on(Mutant::NewLogNotNoticed) || mutants::on(Mutant::OldLogMarkStands) {
        return;
    }
    let until = tokio::time::Instant::now() + LOG_CLOSE_CHECK;
    for topic in d.cfg.topics.clone() {
        let left = until.saturating_duration_since(tokio::time::Instant::now());
        let asked = tokio::time::timeout(left, d.transport.log_id(&topic)).await;
        if let Ok(Ok(Some(id))) = asked {
            if known.learn(&topic, &id) {
                tracing::warn!(topic, "the topic is another log now: committing its start");
                d.new_log(sub, &topic);
            }
        }
    }
}

fn transport_error(cfg: &WorkerConfig, source: TransportError) -> WorkerError {
    WorkerError::Transport {
        service: cfg.name.clone(),
        source,
    }
}

/// A handler task the worker runs: its handle, and its record's partition while the record waits
/// at the handler's gate.
struct Running {
    handle: tokio::task::JoinHandle<()>,
    at_gate: Option<(String, i32)>,
}

/// The worker's bookkeeping between the consumer and the handler tasks: what is in flight, the
/// lanes of records waiting behind their key, and the offsets safe to mark done.
struct Driver<T, H> {
    transport: T,
    cfg: WorkerConfig,
    handler: Arc<H>,
    stats: Arc<WorkerStats>,
    /// Handler tasks running at once: `concurrency` permits.
    concurrency: Arc<Semaphore>,
    msgs: mpsc::Sender<Msg>,
    tracker: OffsetTracker,
    /// Key -> records waiting behind the one of that key now running, with the epoch of their
    /// partition they came in.
    lanes: BTreeMap<Vec<u8>, VecDeque<(Work, u64)>>,
    in_flight: usize,
    in_flight_bytes: usize,
    /// Offsets are marked done when a record finishes (the mutant marks them on arrival instead).
    mark_on_arrival: bool,
    /// The handler tasks running, by task number: a worker that stops ends them first.
    running: BTreeMap<u64, Running>,
    next_task: u64,
    /// Per partition, its records waiting at the handler's gate.
    at_gate: BTreeMap<(String, i32), usize>,
    /// Partitions whose fetching is paused because too many of their records wait at the gate.
    paused: BTreeSet<(String, i32)>,
    /// The partitions the member owns, as it last heard.
    owned: Vec<(String, i32)>,
    /// Each topic's partition count (where a record's key belongs).
    partitions: Partitions,
    /// The topics found to be new logs, with the partitions read from their start since.
    new_logs: BTreeMap<String, BTreeSet<i32>>,
    /// Each owned partition's epoch, for the tasks.
    epochs: Epochs,
    /// Which log each topic was when the worker last asked.
    known: KnownLogs,
}

impl<T: Transport, H: Handler> Driver<T, H> {
    fn new(
        transport: T,
        cfg: WorkerConfig,
        handler: Arc<H>,
        stats: Arc<WorkerStats>,
        msgs: mpsc::Sender<Msg>,
    ) -> Self {
        Driver {
            transport,
            concurrency: Arc::new(Semaphore::new(cfg.concurrency.max(1))),
            cfg,
            handler,
            stats,
            msgs,
            tracker: OffsetTracker::default(),
            lanes: BTreeMap::new(),
            in_flight: 0,
            in_flight_bytes: 0,
            running: BTreeMap::new(),
            next_task: 0,
            mark_on_arrival: mutants::on(Mutant::CommitBeforeDurable),
            at_gate: BTreeMap::new(),
            paused: BTreeSet::new(),
            owned: Vec::new(),
            partitions: Partitions::default(),
            new_logs: BTreeMap::new(),
            epochs: Epochs::default(),
            known: KnownLogs::default(),
        }
    }

    /// `topic` is another log now: each of its partitions the member owns is read again from the
    /// start, in a new epoch (what was received of the old log marks nothing).
    fn new_log<S: Subscription>(&mut self, sub: &mut S, topic: &str) {
        let owned: Vec<i32> = self
            .owned
            .iter()
            .filter(|(t, _)| t == topic)
            .map(|(_, p)| *p)
            .collect();
        self.new_logs
            .insert(topic.to_owned(), owned.iter().copied().collect());
        for p in owned {
            self.rewind(sub, topic, p);
        }
        self.epochs.set(sub, &self.owned);
    }

    fn rewind<S: Subscription>(&self, sub: &mut S, topic: &str, partition: i32) {
        let log = self.known.get(topic);
        if let Err(e) = sub.rewind(topic, partition, log.as_deref()) {
            tracing::warn!(service = %self.cfg.name, topic, partition, error = %Report(&e), "could not read a new log from its start");
        }
    }

    /// Whether another record may be received: below both in-flight bounds.
    fn has_room(&self) -> bool {
        self.in_flight < self.cfg.max_in_flight.max(1)
            && self.in_flight_bytes < self.cfg.max_in_flight_bytes.max(1)
    }

    /// The member owns exactly `owned` now: the handler hears of it, and partitions it lost are no
    /// longer counted paused (a rebalance assigns them afresh).
    ///
    /// A partition gained of a topic whose log this worker found to be a new one, and did not
    /// read from its start since, is read from its start: the group's commit of it may be one
    /// of the old log's marks, committed by name just after the new log was made by a member
    /// that lost the partition before it noticed (swarm seed 939: deliver, paused past its
    /// session, came back to its own stale commit). Read again, the new log's records are
    /// handled twice at worst.
    fn assigned<S: Subscription>(&mut self, sub: &mut S, owned: &[(String, i32)]) {
        for (t, p) in owned {
            let again = self.new_logs.get_mut(t).is_some_and(|rewound| rewound.insert(*p));
            if again && !mutants::on(Mutant::OldLogMarkStands) {
                self.rewind(sub, t, *p);
            }
        }
        self.handler.assigned(owned);
        // A partition gained afresh is fetched from now on: the consumer may keep a pause it had
        // when it was lost (the consumer protocol, KIP-848, hands a partition back without
        // forgetting it), and this worker stopped counting it paused when it was lost; left
        // paused, nothing of it would come again (CI, controller fault: deliver's partitions 1
        // and 4 of pizza-ordered waited 8 minutes, until deliver was killed). Resuming a
        // partition that is not paused does nothing.
        let regained = owned.iter().filter(|_| !mutants::on(Mutant::RegainedStaysPaused));
        for (t, p) in regained {
            let at = (t.clone(), *p);
            if !self.owned.contains(&at) && !self.paused.contains(&at) {
                if let Err(e) = sub.resume(t, *p) {
                    tracing::warn!(service = %self.cfg.name, topic = %t, partition = p, error = %Report(&e), "could not resume fetching a partition gained");
                }
            }
        }
        self.paused.retain(|p| owned.contains(p));
        self.owned = owned.to_vec();
        self.epochs.set(sub, owned);
    }

    /// What the consumer brought, after the news of the assignment it came with.
    fn got<S: Subscription>(&mut self, sub: &mut S, delivery: Delivery) {
        let (topic, partition) = delivery.at();
        let epoch = sub.epoch(topic, partition);
        if let Some(owned) = sub.assignment_changed() {
            self.assigned(sub, &owned);
        }
        // Its partition sent back to the log's start on that news (a new log): it was read
        // before, and is not of this epoch (swarm seed 939).
        let (topic, partition) = delivery.at();
        if sub.epoch(topic, partition) == epoch {
            // The epoch the consumer began without news to the driver (a position reset to
            // the log's start) is the one its records are of from now.
            self.epochs.note(topic, partition, epoch);
            self.received(sub, delivery);
        }
    }

    /// What the consumer brought: a record starts now or waits in its key's lane; a record it
    /// could not read is dead-lettered as a note; a position past what it never delivers may be
    /// marked.
    fn received<S: Subscription>(&mut self, sub: &mut S, delivery: Delivery) {
        let work = match delivery {
            Delivery::Record(rec) => Work::Record(rec),
            Delivery::Unreadable(u) => Work::Unreadable(u),
            Delivery::Position {
                topic,
                partition,
                offset,
            } => {
                if mutants::on(Mutant::EndByLastRecord) {
                    return;
                }
                let epoch = sub.epoch(&topic, partition);
                if let Some(next) = self.tracker.reached(&topic, partition, offset, epoch) {
                    probes::hit(Probe::PositionPastRecords, "");
                    self.mark(sub, &topic, partition, next);
                }
                return;
            }
        };
        self.in_flight += 1;
        self.in_flight_bytes += work.bytes();
        let epoch = sub.epoch(work.topic(), work.partition());
        self.tracker
            .begin(work.topic(), work.partition(), work.offset(), epoch);
        if self.mark_on_arrival {
            let _ = sub.mark_done(work.topic(), work.partition(), work.offset() + 1);
        }
        let key = work.key();
        match self.lanes.get_mut(&key) {
            Some(lane) => lane.push_back((work, epoch)),
            None => {
                self.lanes.insert(key, VecDeque::new());
                self.start(sub, work, epoch);
            }
        }
    }

    /// A message from a handler task.
    fn message<S: Subscription>(&mut self, sub: &mut S, msg: Msg) -> Result<(), WorkerError> {
        match msg {
            Msg::Passed { task } => {
                if let Some(at) = self.running.get_mut(&task).and_then(|r| r.at_gate.take()) {
                    self.left_gate(sub, at);
                }
                Ok(())
            }
            Msg::Done(done) => self.finished(sub, done),
        }
    }

    /// A record of `at` left the handler's gate: when none of the partition's waits any more,
    /// fetching it resumes.
    fn left_gate<S: Subscription>(&mut self, sub: &mut S, at: (String, i32)) {
        let Some(n) = self.at_gate.get_mut(&at) else {
            return;
        };
        *n -= 1;
        if *n == 0 {
            self.at_gate.remove(&at);
            if self.paused.remove(&at) {
                if let Err(e) = sub.resume(&at.0, at.1) {
                    tracing::warn!(service = %self.cfg.name, topic = %at.0, partition = at.1, error = %Report(&e), "could not resume fetching");
                }
            }
        }
    }

    /// Marks `next` done for `topic`/`partition`, as far as the consumer takes it.
    fn mark<S: Subscription>(&mut self, sub: &mut S, topic: &str, partition: i32, next: i64) {
        let marked = sub.mark_done(topic, partition, next);
        self.tracker.stored(topic, partition, next, marked.is_ok());
        if let Err(e) = marked {
            probes::hit(Probe::MarkDoneRefused, "");
            // The partition may have moved to another member; it re-reads from the last
            // commit, which redelivers at most what we finished since.
            tracing::warn!(service = %self.cfg.name, topic, partition, error = %Report(&e), "could not mark offset");
        }
    }

    /// A record's handler returned: mark what is now safe, start the next of its key. An error
    /// the task could not get past stops the worker.
    fn finished<S: Subscription>(&mut self, sub: &mut S, done: Done) -> Result<(), WorkerError> {
        if let Some(at) = self.running.remove(&done.task).and_then(|r| r.at_gate) {
            self.left_gate(sub, at);
        }
        self.in_flight -= 1;
        self.in_flight_bytes -= done.bytes;
        if let Err(source) = done.result {
            return Err(WorkerError::Handler {
                service: self.cfg.name.clone(),
                topic: done.topic,
                partition: done.partition,
                offset: done.offset,
                source,
            });
        }
        probes::finished(&self.cfg.group, &done.topic, done.partition, done.offset);
        // Received in an epoch of its partition that is over (the partition was lost, and maybe
        // gained again, or its topic made again): not this owner's to mark any more.
        let current = sub.epoch(&done.topic, done.partition) == done.epoch;
        let finished = self
            .tracker
            .finish(&done.topic, done.partition, done.offset, done.epoch)
            .filter(|_| current);
        if let Some(next) = finished.filter(|_| !self.mark_on_arrival) {
            self.mark(sub, &done.topic, done.partition, next);
        }
        // The next of its key, past those received in an epoch of their partition that is over:
        // they come again from the group's commit (to this member or the partition's owner),
        // and baked here first they would hold the lane, and the slots, from this epoch's records
        // of the key, so the mark would wait behind every rebalance's copy of the backlog.
        loop {
            let lane = self
                .lanes
                .get_mut(&done.key)
                .expect("a finished record's lane exists");
            match lane.pop_front() {
                Some((next, epoch))
                    if sub.epoch(next.topic(), next.partition()) != epoch
                        && !mutants::on(Mutant::StaleRecordsHandled) =>
                {
                    self.forget(next, epoch);
                }
                Some((next, epoch)) => {
                    self.start(sub, next, epoch);
                    break;
                }
                None => {
                    self.lanes.remove(&done.key);
                    break;
                }
            }
        }
        Ok(())
    }

    /// A record received in an epoch of its partition that is over, dropped before it started
    /// (as librdkafka drops what it fetched before a rebalance): it is no longer in flight.
    fn forget(&mut self, work: Work, epoch: u64) {
        self.in_flight -= 1;
        self.in_flight_bytes -= work.bytes();
        let _ = self
            .tracker
            .finish(work.topic(), work.partition(), work.offset(), epoch);
        probes::hit(Probe::RevokedRecordDropped, &String::from_utf8_lossy(&work.key()));
    }

    /// Ends every handler task still running and waits until each is gone. A worker that stops
    /// on an error must not leave them behind: the service restarts, the records come again, and
    /// a task of the old worker still handling a record would race the new one's handling of it
    /// (swarm seed 57 drove 48 orders twice that way). Ended mid-way, a task is as a crash leaves
    /// it: its record was not marked, and comes again.
    async fn end_tasks(&mut self) {
        for (_, task) in std::mem::take(&mut self.running) {
            task.handle.abort();
            let _ = task.handle.await;
        }
    }

    fn start<S: Subscription>(&mut self, sub: &mut S, work: Work, epoch: u64) {
        let id = self.next_task;
        self.next_task += 1;
        let gated = H::GATED && matches!(work, Work::Record(_)) && !mutants::on(Mutant::RestoreHoldsSlot);
        let at_gate = gated.then(|| (work.topic().to_owned(), work.partition()));
        if let Some(at) = &at_gate {
            let n = self.at_gate.entry(at.clone()).or_default();
            *n += 1;
            if *n > self.cfg.gate_bound.max(1) && self.paused.insert(at.clone()) {
                if let Err(e) = sub.pause(&at.0, at.1) {
                    self.paused.remove(at);
                    tracing::warn!(service = %self.cfg.name, topic = %at.0, partition = at.1, error = %Report(&e), "could not pause fetching");
                }
            }
        }
        let task = Task {
            id,
            transport: self.transport.clone(),
            handler: self.handler.clone(),
            concurrency: self.concurrency.clone(),
            stats: self.stats.clone(),
            msgs: self.msgs.clone(),
            service: self.cfg.name.clone(),
            dlq: self.cfg.dlq_topic.clone(),
            max_attempts: self.cfg.max_attempts.max(1),
            gated,
            epoch,
            partitions: self.cfg.keys_placed.then(|| self.partitions.clone()),
            epochs: self.epochs.clone(),
        };
        let handle = tokio::spawn(task.run(work));
        self.running.insert(id, Running { handle, at_gate });
    }
}

/// One record's processing, on its own task.
struct Task<T, H> {
    id: u64,
    transport: T,
    handler: Arc<H>,
    concurrency: Arc<Semaphore>,
    stats: Arc<WorkerStats>,
    msgs: mpsc::Sender<Msg>,
    service: String,
    dlq: String,
    max_attempts: u32,
    /// Whether the record waits at the handler's gate before it takes a slot.
    gated: bool,
    /// The member's epoch of the record's partition when it was received.
    epoch: u64,
    /// Partition counts, when records must sit where their key belongs.
    partitions: Option<Partitions>,
    /// The member's epoch of each partition it owns, as the driver last heard.
    epochs: Epochs,
}

/// The member's epoch of each partition it owns (`Subscription::epoch`), as the driver last
/// heard, for the tasks: a record of an epoch that is over is not handled.
#[derive(Clone, Debug, Default)]
struct Epochs(Arc<std::sync::Mutex<BTreeMap<(String, i32), u64>>>);

impl Epochs {
    /// The member owns `owned` now, each in the epoch `sub` says.
    fn set<S: Subscription>(&self, sub: &S, owned: &[(String, i32)]) {
        let now = owned
            .iter()
            .map(|(t, p)| ((t.clone(), *p), sub.epoch(t, *p)))
            .collect();
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = now;
    }

    /// `topic`/`partition` is in `epoch` now (a record of it came in that epoch).
    fn note(&self, topic: &str, partition: i32, epoch: u64) {
        let mut known = self.0.lock().unwrap_or_else(|p| p.into_inner());
        known.insert((topic.to_owned(), partition), epoch);
    }

    /// Whether a record received in `epoch` of `topic`/`partition` is of an epoch that is over
    /// (never under the mutant that handles such records).
    fn is_over(&self, topic: &str, partition: i32, epoch: u64) -> bool {
        if mutants::on(Mutant::StaleRecordsHandled) {
            return false;
        }
        let known = self.0.lock().unwrap_or_else(|p| p.into_inner());
        known.get(&(topic.to_owned(), partition)) != Some(&epoch)
    }
}

impl<T: Transport, H: Handler> Task<T, H> {
    async fn run(self, work: Work) {
        let result = match &work {
            Work::Record(rec) => self.handle(rec).await,
            Work::Unreadable(u) => {
                let _slot = self.slot().await;
                self.stats.unreadable.fetch_add(1, Ordering::Relaxed);
                let rec = unreadable_record(u);
                let reason = format!("the record cannot be read: {}", u.error);
                self.dead_letter(&rec, &reason).await
            }
        };
        if result.is_ok() {
            self.stats.done.fetch_add(1, Ordering::Relaxed);
        }
        // Between a record's outputs becoming durable and its offset being marked, other records
        // finish and rebalances happen.
        probes::seam().await;
        let done = Done {
            task: self.id,
            epoch: self.epoch,
            bytes: work.bytes(),
            key: work.key(),
            topic: work.topic().to_owned(),
            partition: work.partition(),
            offset: work.offset(),
            result,
        };
        // Fails only when the worker already stopped; nothing is waiting for this record then.
        let _ = self.msgs.send(Msg::Done(done)).await;
    }

    async fn slot(&self) -> tokio::sync::SemaphorePermit<'_> {
        self.concurrency
            .acquire()
            .await
            .expect("the semaphore is never closed")
    }

    /// Passes the handler's gate (without a slot), then handles the record in a slot.
    /// A record that finds its partition not ready after all goes back to the gate, at most
    /// `max_attempts` times.
    async fn handle(&self, rec: &Record) -> Result<(), HandleError> {
        let placement = self.partitions.as_ref().and_then(|p| {
            let n = p.of(&rec.topic)?;
            let why = crate::partitioner::misplaced(rec.key.as_deref()?, rec.partition, n)?;
            Some(format!("{why}: not that key's record"))
        });
        if let Some(why) = placement {
            return self.dead_letter(rec, &why).await;
        }
        let mut passed = false;
        let mut not_ready = 0;
        loop {
            if self.gated {
                let ready = self.retried(rec, || self.handler.ready(rec)).await;
                if !std::mem::replace(&mut passed, true) {
                    let _ = self.msgs.send(Msg::Passed { task: self.id }).await;
                }
                ready?;
            }
            let outcome = {
                let _slot = self.slot().await;
                // Its partition's epoch ended while it waited for the slot (a rebalance, a new
                // log): it comes again from the group's commit, to whoever owns the partition,
                // and handled here it would only hold the slot from this epoch's records.
                if self.epochs.is_over(&rec.topic, rec.partition, self.epoch) {
                    probes::hit(Probe::RevokedRecordDropped, key_of(rec));
                    return Ok(());
                }
                if H::GATED && !self.gated {
                    // The mutant: the wait for the record's partition happens inside the slot.
                    self.retried(rec, || self.handler.ready(rec)).await?;
                }
                self.process(rec).await
            };
            match outcome {
                Err(HandleError::NotReady(why)) if not_ready + 1 < self.max_attempts => {
                    not_ready += 1;
                    probes::hit(Probe::HandlerRetried, key_of(rec));
                    tracing::debug!(service = %self.service, topic = %rec.topic, offset = rec.offset, error = %Report(&*why), "the record's partition is not ready: back to the gate");
                }
                Err(HandleError::NotReady(why)) => return Err(HandleError::Retriable(why)),
                other => return other,
            }
        }
    }

    /// `attempt` until it succeeds, a failure is not retriable, or the attempts run out (with the
    /// worker's backoff).
    async fn retried<F: Future<Output = Result<(), HandleError>>>(
        &self,
        rec: &Record,
        attempt: impl Fn() -> F,
    ) -> Result<(), HandleError> {
        let mut n = 0;
        loop {
            n += 1;
            match attempt().await {
                Err(HandleError::Retriable(m)) if n < self.max_attempts => {
                    probes::hit(Probe::HandlerRetried, key_of(rec));
                    self.stats.retries.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(service = %self.service, topic = %rec.topic, offset = rec.offset, attempt = n, error = %Report(&*m), "retrying");
                    tokio::time::sleep(backoff(n)).await;
                }
                Err(e @ HandleError::Retriable(_)) => {
                    probes::hit(Probe::RetriesExhausted, key_of(rec));
                    if mutants::on(Mutant::SkipWhenRetriesRunOut) {
                        return Ok(());
                    }
                    return Err(e);
                }
                other => return other,
            }
        }
    }

    async fn process(&self, rec: &Record) -> Result<(), HandleError> {
        self.retried(rec, || async {
            match self.handler.handle(rec).await {
                Err(HandleError::Malformed(reason)) => self.dead_letter(rec, &reason.0).await,
                other => other,
            }
        })
        .await
    }

    /// Sends the record to the dead-letter topic with where it came from and why: whole when it
    /// fits, else a prefix of it, else a bare note of it. A dead-letter write is never what stops
    /// a service: a record refused for its size at every form is logged and passed over (it stays
    /// on its source topic, at the offset the log names).
    async fn dead_letter(&self, rec: &Record, reason: &str) -> Result<(), HandleError> {
        tracing::warn!(service = %self.service, topic = %rec.topic, partition = rec.partition, offset = rec.offset, reason, "dead-lettering");
        let forms: &[DlqForm] = if mutants::on(Mutant::DlqWholeOnly) {
            &[DlqForm::Whole]
        } else {
            &DlqForm::ALL
        };
        for form in forms {
            match self
                .transport
                .produce(dlq_record(rec, &self.dlq, &self.service, reason, *form))
                .await
            {
                Ok(_) => {
                    self.stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
                    if *form == DlqForm::Whole {
                        probes::hit(Probe::DeadLettered, key_of(rec));
                    } else {
                        probes::hit(Probe::DeadLetteredInPart, key_of(rec));
                        self.stats.dead_lettered_in_part.fetch_add(1, Ordering::Relaxed);
                    }
                    return Ok(());
                }
                Err(TransportError::TooLarge(e)) => {
                    tracing::warn!(service = %self.service, topic = %rec.topic, offset = rec.offset, ?form, error = %Report(&*e), "dead-letter record too large; trying a smaller one");
                }
                Err(e) => return Err(e.into()),
            }
        }
        if mutants::on(Mutant::DlqWholeOnly) {
            return Err(HandleError::fatal("dead-letter record too large"));
        }
        tracing::error!(service = %self.service, topic = %rec.topic, partition = rec.partition, offset = rec.offset, reason, "not even a bare dead-letter record was accepted; the record stays on its source topic and is passed over");
        probes::hit(Probe::DeadLetterDropped, key_of(rec));
        probes::dead_letter_dropped(&self.service, &rec.topic, rec.partition, rec.offset);
        self.stats.dead_letter_dropped.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// The worker's backoff before attempt `n + 1`: 200 ms doubling, at most 6.4 s.
fn backoff(n: u32) -> Duration {
    Duration::from_millis(100 << n.min(6))
}

/// What a record the consumer could not read is dead-lettered as: its coordinates only, no key,
/// value or headers (the consumer never had them).
fn unreadable_record(u: &Unreadable) -> Record {
    Record {
        topic: u.topic.clone(),
        partition: u.partition,
        offset: u.offset,
        key: None,
        payload: None,
        headers: Vec::new(),
        timestamp_ms: None,
    }
}

/// A record's key as a probe names it.
fn key_of(rec: &Record) -> &str {
    rec.key_str().unwrap_or_default()
}

/// What a record counts against [`WorkerConfig::max_in_flight_bytes`].
fn record_bytes(rec: &Record) -> usize {
    let headers: usize = rec.headers.iter().map(|(k, v)| k.len() + v.len()).sum();
    rec.key.as_ref().map_or(0, Vec::len) + rec.payload().len() + headers
}

/// How much of a malformed record its dead-letter record carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DlqForm {
    /// The original key and payload bytes, and the headers as the consumer read them (keys decoded
    /// by `transport::header_from_raw`, null values as empty).
    Whole,
    /// At most [`DLQ_KEY_BYTES`] of the key and [`DLQ_PAYLOAD_BYTES`] of the payload, no original
    /// headers; the original lengths in headers.
    Prefix,
    /// Only where the record is and why: empty key and payload.
    Bare,
}

impl DlqForm {
    /// The forms in the order tried: each smaller than the one before.
    pub const ALL: [DlqForm; 3] = [DlqForm::Whole, DlqForm::Prefix, DlqForm::Bare];
}

/// Most bytes of the payload a partial dead-letter record keeps.
pub const DLQ_PAYLOAD_BYTES: usize = 64 * 1024;
/// Most bytes of the key a partial dead-letter record keeps.
pub const DLQ_KEY_BYTES: usize = 256;
/// Most bytes of the reason header.
pub const DLQ_REASON_BYTES: usize = 1024;
/// Prefix given to an original header whose key is in our `dlq.` namespace, so a record cannot
/// pass off its own `dlq.reason` or `dlq.source.offset` as ours.
pub const DLQ_ORIGINAL_PREFIX: &str = "dlq.original.";

/// The dead-letter record for `rec` in the given form. Headers: `dlq.source.topic`,
/// `dlq.source.partition`, `dlq.source.offset`, `dlq.service`, `dlq.reason`; in part, also
/// `dlq.truncated`, `dlq.key.length`, `dlq.payload.length` (the original lengths) and
/// `dlq.headers.count`; whole, the record's headers as read first (any `dlq.*` one renamed
/// `dlq.original.*`).
pub fn dlq_record(rec: &Record, dlq_topic: &str, service: &str, reason: &str, form: DlqForm) -> OutRecord {
    let key = rec.key.as_deref().unwrap_or_default();
    let payload = rec.payload();
    let (key, payload) = match form {
        DlqForm::Whole => (key, payload),
        DlqForm::Prefix => (prefix(key, DLQ_KEY_BYTES), prefix(payload, DLQ_PAYLOAD_BYTES)),
        DlqForm::Bare => (&[][..], &[][..]),
    };
    let mut out = OutRecord::new(dlq_topic, key.to_vec(), payload.to_vec());
    if form == DlqForm::Whole {
        out.headers = rec
            .headers
            .iter()
            .map(|(k, v)| match k.starts_with("dlq.") {
                true => (format!("{DLQ_ORIGINAL_PREFIX}{k}"), v.clone()),
                false => (k.clone(), v.clone()),
            })
            .collect();
    }
    let h = &mut out.headers;
    h.push(("dlq.source.topic".into(), rec.topic.clone().into_bytes()));
    h.push((
        "dlq.source.partition".into(),
        rec.partition.to_string().into_bytes(),
    ));
    h.push(("dlq.source.offset".into(), rec.offset.to_string().into_bytes()));
    h.push(("dlq.service".into(), service.as_bytes().to_vec()));
    h.push((
        "dlq.reason".into(),
        prefix(reason.as_bytes(), DLQ_REASON_BYTES).to_vec(),
    ));
    if form != DlqForm::Whole {
        let len = |b: Option<&Vec<u8>>| b.map_or("null".to_owned(), |b| b.len().to_string());
        h.push(("dlq.truncated".into(), b"true".to_vec()));
        h.push(("dlq.key.length".into(), len(rec.key.as_ref()).into_bytes()));
        h.push((
            "dlq.payload.length".into(),
            len(rec.payload.as_ref()).into_bytes(),
        ));
        h.push((
            "dlq.headers.count".into(),
            rec.headers.len().to_string().into_bytes(),
        ));
    }
    out
}

fn prefix(b: &[u8], n: usize) -> &[u8] {
    &b[..b.len().min(n)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mark_never_passes_an_unfinished_record() {
        let mut t = OffsetTracker::default();
        for o in 0..4 {
            t.begin("t", 0, o, 1);
        }
        // 1..3 finish first; 0 is still cooking, so nothing may be marked.
        assert_eq!(t.finish("t", 0, 2, 1), None);
        assert_eq!(t.finish("t", 0, 1, 1), None);
        assert_eq!(t.finish("t", 0, 3, 1), None);
        // 0 finishes: everything up to 4 is done.
        assert_eq!(t.finish("t", 0, 0, 1), Some(4));
        assert_eq!(t.unfinished(), 0);
    }

    #[test]
    fn partitions_are_tracked_apart() {
        let mut t = OffsetTracker::default();
        t.begin("t", 0, 10, 1);
        t.begin("t", 1, 5, 1);
        t.begin("t", 0, 11, 1);
        assert_eq!(t.finish("t", 1, 5, 1), Some(6));
        assert_eq!(t.finish("t", 0, 11, 1), None);
        assert_eq!(t.finish("t", 0, 10, 1), Some(12));
    }

    #[test]
    fn dead_letter_records_shrink_form_by_form_and_keep_where_and_why() {
        let rec = Record {
            topic: "pizza-ordered".into(),
            partition: 3,
            offset: 77,
            key: Some(vec![b'k'; 1000]),
            payload: Some(vec![b'v'; 500_000]),
            headers: vec![
                ("dlq.reason".into(), b"spoofed".to_vec()),
                ("origin".into(), b"x".to_vec()),
            ],
            timestamp_ms: None,
        };
        let size = |o: &OutRecord| crate::transport::RawRecord::from(o.clone()).size();
        let forms: Vec<OutRecord> = DlqForm::ALL
            .iter()
            .map(|f| dlq_record(&rec, "my-dlq", "assemble", "bad", *f))
            .collect();
        assert!(size(&forms[0]) > size(&forms[1]) && size(&forms[1]) > size(&forms[2]));
        let h = |o: &OutRecord, k: &str| {
            o.headers
                .iter()
                .filter(|(n, _)| n == k)
                .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
                .collect::<Vec<_>>()
        };
        for o in &forms {
            assert_eq!(o.topic, "my-dlq");
            assert_eq!(h(o, "dlq.source.topic"), ["pizza-ordered"]);
            assert_eq!(h(o, "dlq.source.partition"), ["3"]);
            assert_eq!(h(o, "dlq.source.offset"), ["77"]);
            assert_eq!(h(o, "dlq.reason"), ["bad"], "ours only, once");
        }
        // Whole: the original bytes and headers, a spoofed `dlq.*` renamed.
        assert_eq!((forms[0].key.len(), forms[0].payload.len()), (1000, 500_000));
        assert_eq!(h(&forms[0], "dlq.original.dlq.reason"), ["spoofed"]);
        assert_eq!(h(&forms[0], "origin"), ["x"]);
        // In part: prefixes and the original lengths.
        assert_eq!(
            (forms[1].key.len(), forms[1].payload.len()),
            (DLQ_KEY_BYTES, DLQ_PAYLOAD_BYTES)
        );
        assert_eq!(h(&forms[1], "dlq.payload.length"), ["500000"]);
        assert_eq!(h(&forms[1], "dlq.key.length"), ["1000"]);
        assert_eq!(h(&forms[1], "dlq.headers.count"), ["2"]);
        assert!(h(&forms[1], "origin").is_empty());
        // Bare: nothing of the record but where it is and why.
        assert!(forms[2].key.is_empty() && forms[2].payload.is_empty());
        assert_eq!(h(&forms[2], "dlq.truncated"), ["true"]);
    }

    #[test]
    fn a_record_in_flight_twice_holds_the_mark_until_both_finish() {
        let mut t = OffsetTracker::default();
        t.begin("t", 0, 0, 1);
        t.begin("t", 0, 0, 1); // redelivered while the first is still running
        t.begin("t", 0, 1, 1);
        assert_eq!(t.finish("t", 0, 1, 1), None);
        assert_eq!(t.finish("t", 0, 0, 1), None);
        assert_eq!(t.finish("t", 0, 0, 1), Some(2));
    }

    /// A record received before its partition was lost and gained again (a rebalance, the topic
    /// made again) marks nothing: the partition's records come again from the group's commit,
    /// and an old log's offset must never be committed on a new one (the simulation's
    /// `recreate` scenario skipped 50 records of the new log that way).
    #[test]
    fn a_record_of_an_earlier_epoch_marks_nothing() {
        let mut t = OffsetTracker::default();
        t.begin("t", 0, 50, 1);
        t.begin("t", 0, 0, 2); // the partition regained: a new epoch from offset 0
        assert_eq!(t.finish("t", 0, 50, 1), None, "the old epoch's record");
        assert_eq!(t.finish("t", 0, 0, 2), Some(1));
    }
}
