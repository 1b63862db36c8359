//! The simulated broker's state: Kafka's semantics that matter to services, as a plain data
//! structure (no runtime, no clock of its own: every call gets `now`), so it is unit-tested in the
//! normal build and driven over madsim's network in the simulation (`crate::node`).
//!
//! - Topics with partitions chosen by Java's murmur2 partitioner; offsets per partition; order
//!   only within a partition.
//! - The idempotent producer: a retried produce (same producer id and sequence) is appended once.
//! - Consumer groups: members join, are assigned partitions round-robin, and read from the group's
//!   committed offsets. Any change of membership (join, leave, a member's session expiring, or a
//!   forced rebalance) starts a new generation and resets every member to the committed offsets,
//!   so whatever was read but not committed is delivered again. Commits of an older generation,
//!   or for a partition the member does not own, are refused.
//! - Fetches pick one partition at random among those with records, and may hold partitions back
//!   (`reorder`), so topics and partitions interleave differently for every seed.
//! - Each partition is a log as Kafka keeps it ([`crate::log`]): batches with a codec, batches no
//!   client can decode, transaction markers and aborted transactions, gaps in the offsets. A
//!   fetch returns what a `read_committed` consumer gets and its position after it.
//! - A topic can be deleted and made again: a new topic id, offsets from 0, and every group's
//!   committed offsets of it gone.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use framework::partitioner::partition_for;
use framework::transport::errors::ErrorCode;
use framework::transport::{header_from_raw, Acked, RawRecord, Record};

use crate::rng::SplitMix64;
use crate::trace::Trace;

pub use crate::log::Stored;
use crate::log::{Batch, Codec, Entry, PartRead, Partition};

/// How long a record written with `acks=1` waits for its followers.
pub const REPLICATION_LAG_MS: i64 = 200;

/// What [`Broker::held`] holds back: `topic` (its `partition`, or all) from `group` and from the
/// readers of `service`'s nodes.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Held {
    pub group: String,
    pub service: String,
    pub topic: String,
    pub partition: Option<i32>,
}

impl Held {
    fn covers(&self, topic: &str, partition: i32) -> bool {
        self.topic == topic && self.partition.is_none_or(|p| p == partition)
    }

    /// Whether `node` is one of the service's nodes (`greet`, `greet-2`, ...).
    fn of_node(&self, node: &str) -> bool {
        node == self.service
            || node
                .strip_prefix(self.service.as_str())
                .is_some_and(|rest| rest.starts_with('-'))
    }
}

/// A record a fetch returns, as bytes: the consumer's transport decodes it ([`Self::into_record`]).
#[derive(Clone, Debug)]
pub struct FetchedRecord {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub stored: Stored,
}

impl FetchedRecord {
    /// The record as a consumer reads it: headers through `framework::transport::header_from_raw`,
    /// as the Kafka transport reads them.
    pub fn into_record(self) -> Record {
        Record {
            topic: self.topic,
            partition: self.partition,
            offset: self.offset,
            key: self.stored.key,
            payload: self.stored.payload,
            headers: self
                .stored
                .headers
                .iter()
                .map(|(k, v)| header_from_raw(k, v.as_deref()))
                .collect(),
            timestamp_ms: Some(self.stored.timestamp_ms),
        }
    }
}

/// Why a produce was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProduceError {
    UnknownTopic(String),
    /// The topic takes no writes for now (Kafka's NOT_ENOUGH_REPLICAS while the ISR is short, or
    /// NOT_LEADER_OR_FOLLOWER while a leader moves): nothing was written, and a retry may be taken.
    NotEnoughReplicas(String),
    /// Larger than `message.max.bytes`, as Kafka refuses it (MESSAGE_TOO_LARGE).
    TooLarge {
        size: usize,
        max: usize,
    },
    /// Refused for now with this code while a leader moves (NOT_LEADER_OR_FOLLOWER, ...):
    /// nothing was written.
    Refused(ErrorCode),
}

impl ProduceError {
    /// The code Kafka answers with.
    pub fn code(&self) -> ErrorCode {
        match self {
            ProduceError::UnknownTopic(_) => ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
            ProduceError::NotEnoughReplicas(_) => ErrorCode::NOT_ENOUGH_REPLICAS,
            ProduceError::TooLarge { .. } => ErrorCode::MESSAGE_TOO_LARGE,
            ProduceError::Refused(code) => *code,
        }
    }
}

impl std::fmt::Display for ProduceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProduceError::UnknownTopic(t) => write!(f, "unknown topic {t}"),
            ProduceError::NotEnoughReplicas(t) => write!(f, "not enough replicas for {t}"),
            ProduceError::TooLarge { size, max } => {
                write!(f, "record of {size} bytes is larger than message.max.bytes {max}")
            }
            ProduceError::Refused(code) => write!(f, "refused for now: {code:?}"),
        }
    }
}

/// How the broker behaves.
#[derive(Clone, Debug)]
pub struct BrokerConfig {
    pub partitions: i32,
    /// A member not heard from for this long leaves its group (librdkafka's session.timeout.ms).
    pub session_timeout_ms: i64,
    /// Most records one fetch returns.
    pub max_batch: usize,
    /// The largest record accepted (Kafka's and librdkafka's `message.max.bytes`), counted as
    /// `RawRecord::size` counts it.
    pub max_record_bytes: usize,
}

/// librdkafka's default `message.max.bytes`, which the services' producers use.
pub const MAX_RECORD_BYTES: usize = 1_000_000;

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            partitions: 6,
            session_timeout_ms: 6_000,
            max_batch: 64,
            max_record_bytes: MAX_RECORD_BYTES,
        }
    }
}

#[derive(Debug)]
struct Member {
    node: String,
    topics: Vec<String>,
    last_seen_ms: i64,
    /// Partition -> next offset this member is served.
    cursors: BTreeMap<(String, i32), i64>,
}

#[derive(Debug, Default)]
struct Group {
    generation: u64,
    members: BTreeMap<u64, Member>,
    /// Every topic a member of the group ever read: its lag counts while no member is in it.
    topics: BTreeSet<String>,
    committed: BTreeMap<(String, i32), i64>,
    /// The metadata each commit carried (the log its offset is of, as the harness writes it).
    metadata: BTreeMap<(String, i32), String>,
}

/// What a fetch got.
#[derive(Debug)]
pub enum GroupFetch {
    /// What one partition gave (nothing yet, when `None`) and the group's generation.
    Records {
        generation: u64,
        part: Option<PartFetch>,
    },
    /// The member is no longer in the group (its session expired or it left): join again.
    Gone,
}

/// What a fetch of one partition got: its records, the consumer's position after them, or the
/// error a client reports there (a batch it cannot decode, an offset out of range).
#[derive(Clone, Debug)]
pub struct PartFetch {
    pub topic: String,
    pub partition: i32,
    pub records: Vec<FetchedRecord>,
    /// The offset of the next record the consumer may be given: past markers, aborted records
    /// and gaps (see [`crate::log`]).
    pub next: i64,
    /// Where the error came (the undecodable batch's base offset), its code and text.
    pub error: Option<(i64, ErrorCode, String)>,
}

impl PartFetch {
    /// Whether it brings anything: a record, a position that moved past `from`, or an error.
    pub fn is_news(&self, from: i64) -> bool {
        !self.records.is_empty() || self.error.is_some() || self.next > from
    }
}

/// The broker.
#[derive(Debug)]
pub struct Broker {
    cfg: BrokerConfig,
    topics: BTreeMap<String, Vec<Partition>>,
    /// Each topic's id: a topic made again gets a new one.
    topic_ids: BTreeMap<String, u64>,
    groups: BTreeMap<String, Group>,
    /// Producer id -> sequence -> the topic and where that record went.
    producers: BTreeMap<u64, BTreeMap<u64, (String, Acked)>>,
    next_member: u64,
    rng: SplitMix64,
    /// Chance that a fetch skips a partition that has records (reordering across partitions).
    pub reorder: f64,
    /// Chance that a new record is written but its producer never hears so: every answer to it
    /// (the retries' too) is lost, and the producer gives up with the record in the log. An
    /// ambiguous produce, as a broker that appended and then lost its connection makes one.
    pub ambiguous: f64,
    /// The (producer, sequence) pairs whose answers are withheld.
    unanswered: BTreeSet<(u64, u64)>,
    /// Topics that refuse writes for now (NOT_ENOUGH_REPLICAS), while fetches and commits work.
    pub refusing: BTreeSet<String>,
    /// Leaders are being elected: every produce is refused (NOT_LEADER_OR_FOLLOWER).
    pub electing: bool,
    /// Topics whose `max.message.bytes` is lowered below the broker's.
    pub topic_max_bytes: BTreeMap<String, usize>,
    /// What the broker holds back from a service for now: its group's fetches and its readers'
    /// reads of a topic (of one partition of it, or all): a partition leader far behind for that
    /// reader, the way one input is made to come long before another, and a restore that does not
    /// move.
    pub held: BTreeSet<Held>,
    /// When the simulation started (epoch ms), for trace times.
    pub start_ms: i64,
    pub trace: Trace,
    /// Commits that moved a group's offset back: group, topic, partition, from, to.
    pub commits_back: Vec<(String, String, i32, i64, i64)>,
    /// Chance that an append skips a few offsets first, as compaction leaves gaps.
    pub gaps: f64,
    /// Whether the services' producers compress (each batch drawn from every codec Kafka has).
    pub codecs: bool,
    /// The orders whose history a topic made again took with it (the checkers excuse what
    /// depended on it; the harness says which, `harness::faults`).
    pub gone: BTreeSet<Vec<u8>>,
    /// The topics made again.
    pub recreated: BTreeSet<String>,
    /// What each topic made again held before (its partitions per former life, oldest first):
    /// records written there were written, though no reader will see them again.
    former: BTreeMap<String, Vec<Vec<Partition>>>,
    /// Bare dead-letter notes refused for their size (a record of where a malformed record is,
    /// with neither its key nor its value): the service that wrote it (`dlq.service`) and the
    /// record's coordinates (`dlq.source.*`). A service passes over a record whose bare note is
    /// refused; this is the broker's word that it was.
    pub refused_notes: BTreeSet<(String, String, i32, i64)>,
}

impl Broker {
    pub fn new(cfg: BrokerConfig, seed: u64, start_ms: i64) -> Broker {
        Broker {
            cfg,
            topics: BTreeMap::new(),
            groups: BTreeMap::new(),
            commits_back: Vec::new(),
            refused_notes: BTreeSet::new(),
            topic_ids: BTreeMap::new(),
            gone: BTreeSet::new(),
            recreated: BTreeSet::new(),
            former: BTreeMap::new(),
            gaps: 0.0,
            codecs: false,
            producers: BTreeMap::new(),
            next_member: 1,
            rng: SplitMix64::new(seed ^ 0xb5ad_4ece_da1c_e2a9),
            reorder: 0.0,
            ambiguous: 0.0,
            unanswered: BTreeSet::new(),
            refusing: BTreeSet::new(),
            electing: false,
            topic_max_bytes: BTreeMap::new(),
            held: BTreeSet::new(),
            start_ms,
            trace: Trace::default(),
        }
    }

    /// Creates `topic` with the configured number of partitions (no-op when it exists).
    pub fn create_topic(&mut self, topic: &str) {
        if self.topics.contains_key(topic) {
            return;
        }
        let n = self.cfg.partitions.max(1) as usize;
        self.topics
            .insert(topic.to_owned(), vec![Partition::default(); n]);
        let id = self.rng.next_u64();
        self.topic_ids.insert(topic.to_owned(), id);
    }

    /// Deletes `topic` and makes it again, as an operator does (or a new cluster, or the embedded
    /// broker started again under a kept data directory): a new topic id, every partition empty
    /// with offsets from 0, every group's committed offsets of it gone, and what producers wrote
    /// to it forgotten by their idempotence. No group rebalances: a member keeps its assignment
    /// and its position, as a Kafka consumer does (past the new log's end, its fetch is out of
    /// range, and it starts over at the log's start; short of it, it reads on). Returns the keys
    /// of the records it took.
    pub fn recreate_topic(&mut self, now: i64, topic: &str) -> BTreeSet<Vec<u8>> {
        let Some(old) = self.topics.remove(topic) else {
            return BTreeSet::new();
        };
        let mut took = BTreeSet::new();
        for part in &old {
            for s in part.slots() {
                if let Entry::Record(r) = &s.entry {
                    took.insert(r.key().to_vec());
                }
            }
        }
        self.former.entry(topic.to_owned()).or_default().push(old);
        self.create_topic(topic);
        self.recreated.insert(topic.to_owned());
        for seqs in self.producers.values_mut() {
            seqs.retain(|_, (t, _)| t != topic);
        }
        for g in self.groups.values_mut() {
            g.committed.retain(|(t, _), _| t != topic);
            g.metadata.retain(|(t, _), _| t != topic);
        }
        self.event(now, "broker", format_args!("{topic} - - - made-again"));
        took
    }

    /// Which log `topic` is: the cluster's id and the topic's (`Transport::log_id`).
    pub fn log_id(&self, topic: &str) -> Option<String> {
        self.topic_ids
            .get(topic)
            .map(|id| format!("sim-cluster/{id:016x}"))
    }

    fn event(&mut self, now: i64, node: &str, what: std::fmt::Arguments<'_>) {
        let mut line = String::with_capacity(96);
        let t = now - self.start_ms;
        let _ = write!(line, "{}.{:03} {node} {what}", t / 1000, t % 1000);
        self.trace.push(line);
    }

    /// Appends a record, once per (producer, sequence); refuses one over `max_record_bytes`.
    pub fn produce(
        &mut self,
        now: i64,
        node: &str,
        producer: u64,
        seq: u64,
        rec: RawRecord,
    ) -> Result<Acked, ProduceError> {
        self.produce_acks(now, node, (producer, seq), rec, true)
    }

    /// [`Broker::produce`] from a producer that waits for every in-sync replica (`acks_all`,
    /// the services' setting) or only for the leader.
    pub fn produce_acks(
        &mut self,
        now: i64,
        node: &str,
        (producer, seq): (u64, u64),
        rec: RawRecord,
        acks_all: bool,
    ) -> Result<Acked, ProduceError> {
        self.expire(now);
        let key = trace_key(rec.key.as_deref());
        let size = rec.size();
        let max = self
            .topic_max_bytes
            .get(&rec.topic)
            .copied()
            .unwrap_or(self.cfg.max_record_bytes);
        if size > max {
            if let Some(note) = bare_note_of(&rec) {
                self.refused_notes.insert(note);
            }
            self.event(
                now,
                node,
                format_args!("{} - - {key} produce-refused-too-large {size}", rec.topic),
            );
            return Err(ProduceError::TooLarge { size, max });
        }
        if let Some((_, d)) = self.producers.get(&producer).and_then(|p| p.get(&seq)) {
            let d = *d;
            self.event(
                now,
                node,
                format_args!(
                    "{} {} {} {key} produce-retry-deduplicated",
                    rec.topic, d.partition, d.offset
                ),
            );
            return Ok(d);
        }
        if self.electing || self.refusing.contains(&rec.topic) {
            self.event(
                now,
                node,
                format_args!("{} - - {key} produce-refused-not-enough-replicas", rec.topic),
            );
            return Err(ProduceError::NotEnoughReplicas(rec.topic));
        }
        let ambiguous = self.ambiguous > 0.0 && self.rng.chance(self.ambiguous);
        let gap = self.draw_gap();
        let codec = self.draw_codec();
        let Some(parts) = self.topics.get_mut(&rec.topic) else {
            return Err(ProduceError::UnknownTopic(rec.topic));
        };
        // A chosen partition; else a null key goes to any partition (Java's producer spreads
        // them), a key where murmur2 says.
        let partition = match (&rec.partition, &rec.key) {
            (Some(p), _) if *p < 0 || *p >= parts.len() as i32 => {
                return Err(ProduceError::UnknownTopic(format!("{}/{p}", rec.topic)));
            }
            (Some(p), _) => *p,
            (None, Some(k)) => partition_for(k, parts.len() as i32),
            (None, None) => self.rng.below(parts.len() as u64) as i32,
        };
        let replicated = if acks_all { now } else { now + REPLICATION_LAG_MS };
        let offset = append_one(
            &mut parts[partition as usize],
            (rec.key, rec.payload, rec.headers),
            (codec, gap, now),
            (replicated, (producer, seq)),
        );
        let d = Acked { partition, offset };
        self.producers
            .entry(producer)
            .or_default()
            .insert(seq, (rec.topic.clone(), d));
        let what = if ambiguous {
            self.unanswered.insert((producer, seq));
            "produced-unanswered"
        } else {
            "produced"
        };
        self.event(
            now,
            node,
            format_args!("{} {partition} {offset} {key} {what}", rec.topic),
        );
        Ok(d)
    }

    /// Whether the producer may hear of its record `seq` (see [`Broker::ambiguous`]).
    pub fn answers(&self, producer: u64, seq: u64) -> bool {
        !self.unanswered.contains(&(producer, seq))
    }

    /// Every partition's leader moves to another broker: what its followers had not yet
    /// replicated is gone (records written with `acks=1` in the last moments, acknowledged or
    /// not), and every group's coordinator moves too, so every group rebalances.
    pub fn leader_change(&mut self, now: i64) {
        let mut lost = Vec::new();
        for (topic, parts) in &mut self.topics {
            for (p, log) in parts.iter_mut().enumerate() {
                for s in log.truncate_unreplicated(now) {
                    let key = match &s.entry {
                        Entry::Record(r) => trace_key(r.key.as_deref()),
                        Entry::Marker { .. } => "marker".to_owned(),
                    };
                    lost.push((topic.clone(), p, s.offset, s.origin, key));
                }
            }
        }
        for (topic, p, offset, (producer, seq), key) in lost {
            // The producer's retry of it is a new write now.
            if let Some(seqs) = self.producers.get_mut(&producer) {
                seqs.remove(&seq);
            }
            self.unanswered.remove(&(producer, seq));
            self.event(
                now,
                "broker",
                format_args!("{topic} {p} {offset} {key} lost-unreplicated"),
            );
        }
        let groups: Vec<String> = self.groups.keys().cloned().collect();
        for g in groups {
            self.rebalance(now, &g);
        }
    }

    /// End offsets of every partition of `topic`.
    pub fn end_offsets(&self, topic: &str) -> Option<Vec<i64>> {
        self.topics
            .get(topic)
            .map(|ps| ps.iter().map(Partition::end).collect())
    }

    /// Every partition's records of `topic` that a consumer reads, with their offsets (the
    /// checkers read the log through this): no marker, no record of an aborted transaction, no
    /// record of a batch no one can decode.
    pub fn log(&self, topic: &str) -> Vec<Vec<(i64, &Stored)>> {
        self.partitions(topic)
            .iter()
            .map(|p| p.delivered().collect())
            .collect()
    }

    /// Every record ever written to `topic`, in each of its lives (a topic made again included):
    /// the checkers look for a dead-letter note here, which counts though it went with its log.
    pub fn ever_written(&self, topic: &str) -> impl Iterator<Item = &Stored> {
        let former = self.former.get(topic).into_iter().flatten().flatten();
        former
            .chain(self.partitions(topic))
            .flat_map(|p| p.delivered().map(|(_, r)| r))
    }

    /// Every life of `topic` (those it had before it was made again, oldest first, then its log
    /// now), each as `log` gives it.
    pub fn lives(&self, topic: &str) -> Vec<Vec<Vec<(i64, &Stored)>>> {
        let former = self.former.get(topic).into_iter().flatten();
        former
            .map(|parts| parts.iter().map(|p| p.delivered().collect()).collect())
            .chain(std::iter::once(self.log(topic)))
            .collect()
    }

    /// Every partition of `topic`, whole (the checkers find markers and undecodable batches
    /// through this).
    pub fn partitions(&self, topic: &str) -> &[Partition] {
        self.topics.get(topic).map(Vec::as_slice).unwrap_or_default()
    }

    /// A gap to leave before an append (see [`Broker::gaps`]).
    fn draw_gap(&mut self) -> i64 {
        if self.gaps > 0.0 && self.rng.chance(self.gaps) {
            1 + self.rng.below(3) as i64
        } else {
            0
        }
    }

    /// The codec of a service's batch (see [`Broker::codecs`]).
    fn draw_codec(&mut self) -> Codec {
        if self.codecs {
            Codec::ALL[self.rng.below(Codec::ALL.len() as u64) as usize]
        } else {
            Codec::None
        }
    }

    /// Appends `entries` to `topic`/`partition` as one batch, as a producer that is not ours
    /// writes them: compressed with `codec`, which a client can decode or not (`decodable`), in
    /// an aborted transaction or not. No idempotence, no size check: a hostile producer's.
    #[allow(clippy::too_many_arguments)]
    pub fn append_batch(
        &mut self,
        now: i64,
        node: &str,
        topic: &str,
        partition: i32,
        entries: Vec<Entry>,
        (codec, decodable, aborted): (Codec, bool, bool),
    ) -> Option<Batch> {
        let gap = self.draw_gap();
        let log = self
            .topics
            .get_mut(topic)?
            .get_mut(usize::try_from(partition).ok()?)?;
        // The broker stamps what it appends (LogAppendTime), as for the services' records.
        let entries = entries
            .into_iter()
            .map(|e| match e {
                Entry::Record(r) => Entry::Record(Stored {
                    timestamp_ms: now,
                    ..r
                }),
                marker => marker,
            })
            .collect();
        let batch = log.append(entries, (codec, decodable, aborted), gap, (now, (0, 0)));
        let what = match (decodable, aborted) {
            (false, _) => "batch-undecodable",
            (_, true) => "batch-aborted",
            _ => "batch",
        };
        self.event(
            now,
            node,
            format_args!("{topic} {partition} {}..={} - {what}", batch.base, batch.last),
        );
        Some(batch)
    }

    /// Every group's committed offsets: group, topic, partition, the next offset to read.
    pub fn committed(&self) -> Vec<(String, String, i32, i64)> {
        self.groups
            .iter()
            .flat_map(|(name, g)| {
                g.committed
                    .iter()
                    .map(move |((t, p), c)| (name.clone(), t.clone(), *p, *c))
            })
            .collect()
    }

    /// Per group, how many records of the topics its members read it has not committed, counted
    /// also while the group has no member (a service restarting, a session expired).
    pub fn lag(&self) -> BTreeMap<String, i64> {
        let mut out = BTreeMap::new();
        for (name, g) in &self.groups {
            let mut lag = 0;
            for t in &g.topics {
                for (p, log) in self.partitions(t).iter().enumerate() {
                    let c = g.committed.get(&(t.clone(), p as i32)).copied().unwrap_or(0);
                    lag += framework::transport::commits::uncommitted(log.end(), c);
                }
            }
            out.insert(name.clone(), lag);
        }
        out
    }

    /// Adds a member to `group`; returns its id. Starts a new generation.
    pub fn join(&mut self, now: i64, node: &str, group: &str, topics: &[String]) -> u64 {
        self.expire(now);
        let id = self.next_member;
        self.next_member += 1;
        let g = self.groups.entry(group.to_owned()).or_default();
        g.topics.extend(topics.iter().cloned());
        g.members.insert(
            id,
            Member {
                node: node.to_owned(),
                topics: topics.to_vec(),
                last_seen_ms: now,
                cursors: BTreeMap::new(),
            },
        );
        self.event(now, node, format_args!("{group} member {id} joined"));
        self.rebalance(now, group);
        id
    }

    /// Removes a member (a clean leave).
    pub fn leave(&mut self, now: i64, node: &str, group: &str, member: u64) {
        self.leave_because(now, node, group, member, "");
    }

    /// [`Broker::leave`], with why in the trace (after "left").
    pub fn leave_because(&mut self, now: i64, node: &str, group: &str, member: u64, why: &str) {
        let removed = self
            .groups
            .get_mut(group)
            .is_some_and(|g| g.members.remove(&member).is_some());
        if removed {
            self.event(now, node, format_args!("{group} member {member} left{why}"));
            self.rebalance(now, group);
        }
    }

    /// Removes members whose session expired.
    pub fn expire(&mut self, now: i64) {
        let timeout = self.cfg.session_timeout_ms;
        let mut expired = Vec::new();
        for (name, g) in &mut self.groups {
            let gone: Vec<u64> = g
                .members
                .iter()
                .filter(|(_, m)| now - m.last_seen_ms > timeout)
                .map(|(id, _)| *id)
                .collect();
            for id in gone {
                let m = g.members.remove(&id).expect("listed above");
                expired.push((name.clone(), id, m.node));
            }
        }
        let mut groups = BTreeSet::new();
        for (group, id, node) in expired {
            self.event(now, &node, format_args!("{group} member {id} session expired"));
            groups.insert(group);
        }
        for g in groups {
            self.rebalance(now, &g);
        }
    }

    /// A new generation: partitions dealt round-robin to the members that read their topic, every
    /// member reset to the committed offsets (what was read and not committed comes again).
    pub fn rebalance(&mut self, now: i64, group: &str) {
        let Some(g) = self.groups.get_mut(group) else {
            return;
        };
        g.generation += 1;
        let generation = g.generation;
        let mut topics: BTreeSet<String> = BTreeSet::new();
        for m in g.members.values_mut() {
            m.cursors.clear();
            topics.extend(m.topics.iter().cloned());
        }
        let mut next = 0usize;
        for t in &topics {
            let n = self.topics.get(t).map_or(0, Vec::len);
            for p in 0..n as i32 {
                let eligible: Vec<u64> = g
                    .members
                    .iter()
                    .filter(|(_, m)| m.topics.contains(t))
                    .map(|(id, _)| *id)
                    .collect();
                if eligible.is_empty() {
                    continue;
                }
                let owner = eligible[next % eligible.len()];
                next += 1;
                let at = g.committed.get(&(t.clone(), p)).copied().unwrap_or(0);
                g.members
                    .get_mut(&owner)
                    .expect("eligible")
                    .cursors
                    .insert((t.clone(), p), at);
            }
        }
        let members = g.members.len();
        self.event(
            now,
            "broker",
            format_args!("{group} generation {generation} with {members} members"),
        );
    }

    /// Marks a member alive; returns the group's generation, `None` when the member is gone.
    pub fn heartbeat(&mut self, now: i64, group: &str, member: u64) -> Option<u64> {
        self.expire(now);
        let g = self.groups.get_mut(group)?;
        g.members.get_mut(&member)?.last_seen_ms = now;
        Some(g.generation)
    }

    /// Up to `max_batch` records of one partition the member owns, or that partition's error.
    ///
    /// The consumer says which generation it reads in and where it is (its position in each
    /// partition it has read), as a Kafka consumer keeps its own position: a lost response is
    /// fetched again from there. Partitions it has no position for, and every partition of a
    /// consumer still in an older generation (as after a rebalance), start at the committed
    /// offset. `paused` partitions are not fetched.
    pub fn fetch(
        &mut self,
        now: i64,
        group: &str,
        member: u64,
        seen_generation: u64,
        positions: &[(String, i32, i64)],
        paused: &[(String, i32)],
    ) -> GroupFetch {
        let Some(generation) = self.heartbeat(now, group, member) else {
            return GroupFetch::Gone;
        };
        let g = self.groups.get_mut(group).expect("heartbeat found it");
        let m = g.members.get_mut(&member).expect("heartbeat found it");
        for (k, at) in &mut m.cursors {
            let known = positions.iter().find(|(t, p, _)| *t == k.0 && *p == k.1);
            *at = match known {
                Some((_, _, pos)) if seen_generation == generation => *pos,
                _ => g.committed.get(k).copied().unwrap_or(0),
            };
        }
        // A position past a partition's end (its topic made again): out of range.
        let past_end = m.cursors.iter().find(|((t, p), at)| {
            self.topics.get(t).is_some_and(|ps| **at > ps[*p as usize].end())
                && !self.held.iter().any(|h| h.group == group && h.covers(t, *p))
        });
        if let Some(((topic, partition), at)) = past_end {
            return GroupFetch::Records {
                generation,
                part: Some(out_of_range(topic, *partition, *at)),
            };
        }
        let ready: Vec<(String, i32)> = m
            .cursors
            .iter()
            .filter(|((t, p), at)| {
                self.topics
                    .get(t)
                    .is_some_and(|ps| ps[*p as usize].high_watermark(now) > **at)
                    && !self.held.iter().any(|h| h.group == group && h.covers(t, *p))
                    && !paused.iter().any(|(pt, pp)| pt == t && pp == p)
            })
            .map(|(k, _)| k.clone())
            .collect();
        let reorder = self.reorder;
        let ready: Vec<_> = ready
            .into_iter()
            .filter(|_| reorder <= 0.0 || !self.rng.chance(reorder))
            .collect();
        if ready.is_empty() {
            return GroupFetch::Records {
                generation,
                part: None,
            };
        }
        let (topic, partition) = ready[self.rng.below(ready.len() as u64) as usize].clone();
        let batch = 1 + self.rng.below(self.cfg.max_batch as u64) as usize;
        let node = m.node.clone();
        let cursor = m.cursors.get_mut(&(topic.clone(), partition)).expect("ready");
        let from = *cursor;
        let read = self.topics[&topic][partition as usize].read(from, batch, now);
        *cursor = read.next;
        let part = part_fetch(&topic, partition, read);
        for r in &part.records {
            let key = trace_key(r.stored.key.as_deref());
            self.event(
                now,
                &node,
                format_args!("{topic} {partition} {} {key} fetched by {group}", r.offset),
            );
        }
        if let Some((base, code, _)) = &part.error {
            self.event(
                now,
                &node,
                format_args!("{topic} {partition} {base} - fetch-failed {code:?} by {group}"),
            );
        }
        GroupFetch::Records {
            generation,
            part: Some(part),
        }
    }

    /// Up to `max_batch` records of one partition of `topic` that has something past the
    /// position `positions` gives it (below its high watermark), read outside any group; or
    /// that partition's error. A position past the partition's end (the topic was made again)
    /// is out of range: the client starts over at the log's start, as `auto.offset.reset =
    /// earliest` has librdkafka do.
    pub fn read(&mut self, now: i64, node: &str, topic: &str, positions: &[(i32, i64)]) -> Option<PartFetch> {
        let parts = self.topics.get(topic)?;
        let held = |p: i32| self.held.iter().any(|h| h.of_node(node) && h.covers(topic, p));
        if let Some((p, at)) = positions
            .iter()
            .find(|(p, at)| parts.get(*p as usize).is_some_and(|l| *at > l.end()))
        {
            return Some(out_of_range(topic, *p, *at));
        }
        let ready: Vec<(i32, i64)> = positions
            .iter()
            .filter(|(p, at)| {
                usize::try_from(*p)
                    .ok()
                    .and_then(|i| parts.get(i))
                    .is_some_and(|l| l.high_watermark(now) > (*at).max(0))
                    && !held(*p)
            })
            .copied()
            .collect();
        if ready.is_empty() {
            return None;
        }
        let (partition, from) = ready[self.rng.below(ready.len() as u64) as usize];
        let batch = 1 + self.rng.below(self.cfg.max_batch as u64) as usize;
        let read = self.topics[topic][partition as usize].read(from.max(0), batch, now);
        Some(part_fetch(topic, partition, read))
    }

    /// The partitions `member` of `group` is assigned now (none when it is not a member).
    pub fn assignment(&self, group: &str, member: u64) -> Vec<(String, i32)> {
        self.groups
            .get(group)
            .and_then(|g| g.members.get(&member))
            .map(|m| m.cursors.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// The metadata the group's commits of `parts` carried (those with any): what a consumer's
    /// OffsetFetch returns beside the offsets.
    pub fn commit_metadata(&self, group: &str, parts: &[(String, i32)]) -> Vec<(String, i32, String)> {
        let Some(g) = self.groups.get(group) else {
            return Vec::new();
        };
        parts
            .iter()
            .filter_map(|k| g.metadata.get(k).map(|m| (k.0.clone(), k.1, m.clone())))
            .collect()
    }

    /// Commits offsets for the partitions the member owns in this generation, each with the
    /// metadata of the same place in `metadata` (none when it is shorter); returns how many were
    /// taken, or why none were.
    pub fn commit(
        &mut self,
        now: i64,
        group: &str,
        member: u64,
        generation: u64,
        (offsets, metadata): (&[(String, i32, i64)], &[String]),
    ) -> Result<usize, String> {
        self.expire(now);
        let g = self
            .groups
            .get_mut(group)
            .ok_or_else(|| format!("unknown group {group}"))?;
        if g.generation != generation {
            return Err(format!("generation {generation} is stale (now {})", g.generation));
        }
        let m = g
            .members
            .get_mut(&member)
            .ok_or_else(|| format!("unknown member {member}"))?;
        m.last_seen_ms = now;
        let node = m.node.clone();
        let mut taken = Vec::new();
        for (i, (t, p, next)) in offsets.iter().enumerate() {
            let k = (t.clone(), *p);
            if !m.cursors.contains_key(&k) {
                continue;
            }
            match metadata.get(i).filter(|m| !m.is_empty()) {
                Some(meta) => g.metadata.insert(k.clone(), meta.clone()),
                None => g.metadata.remove(&k),
            };
            if g.committed.get(&k) != Some(next) {
                if let Some(before) = g.committed.get(&k).filter(|c| **c > *next) {
                    self.commits_back
                        .push((group.to_owned(), t.clone(), *p, *before, *next));
                }
                g.committed.insert(k, *next);
                taken.push((t.clone(), *p, *next));
            }
        }
        for (t, p, next) in &taken {
            self.event(now, &node, format_args!("{t} {p} {next} - committed by {group}"));
        }
        Ok(taken.len())
    }
}

/// A bare dead-letter note's service and source coordinates (`framework::worker::DlqForm::Bare`: an
/// empty key and value, and the `dlq.*` headers); `None` for any other record.
fn bare_note_of(rec: &RawRecord) -> Option<(String, String, i32, i64)> {
    let empty = |b: &Option<Vec<u8>>| b.as_ref().is_none_or(Vec::is_empty);
    if !empty(&rec.key) || !empty(&rec.payload) {
        return None;
    }
    let header = |name: &str| {
        rec.headers
            .iter()
            .find(|(k, _)| k == name.as_bytes())
            .and_then(|(_, v)| String::from_utf8(v.clone()?).ok())
    };
    header("dlq.truncated")?;
    Some((
        header("dlq.service")?,
        header("dlq.source.topic")?,
        header("dlq.source.partition")?.parse().ok()?,
        header("dlq.source.offset")?.parse().ok()?,
    ))
}

/// Appends one of the services' records as its own batch; its offset.
#[allow(clippy::type_complexity)]
fn append_one(
    log: &mut Partition,
    (key, payload, headers): (Option<Vec<u8>>, Option<Vec<u8>>, Vec<(Vec<u8>, Option<Vec<u8>>)>),
    (codec, gap, now): (Codec, i64, i64),
    written: (i64, (u64, u64)),
) -> i64 {
    let stored = Stored {
        key,
        payload,
        headers,
        timestamp_ms: now,
    };
    log.append(vec![Entry::Record(stored)], (codec, true, false), gap, written)
        .base
}

/// The answer to a fetch from `at`, past the end of `topic`/`partition` (made again since).
fn out_of_range(topic: &str, partition: i32, at: i64) -> PartFetch {
    PartFetch {
        topic: topic.to_owned(),
        partition,
        records: Vec::new(),
        next: at,
        error: Some((
            at,
            ErrorCode::OFFSET_OUT_OF_RANGE,
            format!("offset {at} is past the log's end"),
        )),
    }
}

/// A partition's read as a fetch answers it.
fn part_fetch(topic: &str, partition: i32, read: PartRead) -> PartFetch {
    PartFetch {
        topic: topic.to_owned(),
        partition,
        records: read
            .records
            .into_iter()
            .map(|(offset, stored)| FetchedRecord {
                topic: topic.to_owned(),
                partition,
                offset,
                stored,
            })
            .collect(),
        next: read.next,
        error: read.error,
    }
}

/// Most characters of a key a trace line shows.
const TRACE_KEY_CHARS: usize = 24;

/// A key as one column of a trace line: `""` for an empty key and `null` for none, so the columns
/// stay in place; a long one cut short with its length.
fn trace_key(key: Option<&[u8]>) -> String {
    match key {
        None => "null".to_owned(),
        Some([]) => "\"\"".to_owned(),
        Some(k) => {
            let text = String::from_utf8_lossy(k).replace(|c: char| c.is_whitespace() || c.is_control(), "_");
            match text.char_indices().nth(TRACE_KEY_CHARS) {
                Some((cut, _)) => format!("{}...({}B)", &text[..cut], k.len()),
                None => text,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(topic: &str, key: &str) -> RawRecord {
        framework::transport::OutRecord::new(topic, key, b"{}".to_vec()).into()
    }

    fn broker() -> Broker {
        let mut b = Broker::new(BrokerConfig::default(), 7, 0);
        b.create_topic("t");
        b
    }

    /// Fetches like a consumer: keeps its generation and positions, until nothing is left.
    fn fetch_all(b: &mut Broker, now: i64, group: &str, member: u64) -> Vec<FetchedRecord> {
        let mut generation = 0;
        let mut pos: BTreeMap<(String, i32), i64> = BTreeMap::new();
        let mut got = Vec::new();
        for _ in 0..1000 {
            let at: Vec<_> = pos.iter().map(|((t, p), o)| (t.clone(), *p, *o)).collect();
            match b.fetch(now, group, member, generation, &at, &[]) {
                GroupFetch::Records { generation: g, part } => {
                    if g != generation {
                        pos.clear();
                        generation = g;
                    }
                    let Some(part) = part else {
                        break;
                    };
                    pos.insert((part.topic.clone(), part.partition), part.next);
                    got.extend(part.records);
                }
                GroupFetch::Gone => panic!("member gone"),
            }
        }
        got
    }

    #[test]
    fn a_lost_fetch_response_is_served_again() {
        let mut b = broker();
        b.produce(0, "p", 1, 0, out("t", "k")).unwrap();
        let m = b.join(0, "c", "g", &["t".into()]);
        let records = |f: GroupFetch| match f {
            GroupFetch::Records { part, .. } => part.map(|p| p.records).unwrap_or_default(),
            GroupFetch::Gone => panic!("gone"),
        };
        let first = b.fetch(0, "g", m, 0, &[], &[]);
        let GroupFetch::Records { generation, .. } = first else {
            panic!()
        };
        let got = records(first);
        assert_eq!(got.len(), 1);
        // The response never arrived: the consumer asks again from where it was.
        let again = records(b.fetch(0, "g", m, generation, &[], &[]));
        let offsets = |rs: &[FetchedRecord]| rs.iter().map(|r| (r.partition, r.offset)).collect::<Vec<_>>();
        assert_eq!(offsets(&again), offsets(&got));
        let p = got[0].partition;
        let none = records(b.fetch(0, "g", m, generation, &[("t".into(), p, 1)], &[]));
        assert!(none.is_empty());
    }

    #[test]
    fn keys_land_on_the_java_partition_in_order() {
        let mut b = broker();
        for i in 0..50 {
            let key = format!("{i:08x}");
            let d = b.produce(0, "p", 1, i, out("t", &key)).unwrap();
            assert_eq!(d.partition, partition_for(key.as_bytes(), 6));
        }
        let m = b.join(0, "c", "g", &["t".into()]);
        let got = fetch_all(&mut b, 0, "g", m);
        assert_eq!(got.len(), 50);
        for p in 0..6 {
            let offs: Vec<i64> = got
                .iter()
                .filter(|r| r.partition == p)
                .map(|r| r.offset)
                .collect();
            assert!(
                offs.windows(2).all(|w| w[1] == w[0] + 1),
                "partition {p}: {offs:?}"
            );
        }
    }

    #[test]
    fn records_over_message_max_bytes_are_refused_and_bytes_are_kept() {
        let mut b = broker();
        let max = BrokerConfig::default().max_record_bytes;
        let mut rec = out("t", "00000001");
        rec.headers = vec![(b"\xff\xfe".to_vec(), None)];
        rec.payload = Some(Vec::new());
        let fixed = rec.size();
        rec.payload = Some(vec![b'x'; max - fixed + 1]);
        assert_eq!(
            b.produce(0, "p", 1, 0, rec.clone()),
            Err(ProduceError::TooLarge { size: max + 1, max })
        );
        rec.payload = Some(vec![b'x'; max - fixed]);
        let at = b.produce(0, "p", 1, 1, rec).unwrap();
        // A null key lands somewhere; nothing is lost of what was sent.
        let mut null = out("t", "k");
        null.key = None;
        null.payload = None;
        b.produce(0, "p", 1, 2, null).unwrap();
        let m = b.join(0, "c", "g", &["t".into()]);
        let got = fetch_all(&mut b, 0, "g", m);
        assert_eq!(got.len(), 2);
        let big = got
            .iter()
            .find(|r| r.offset == at.offset && r.partition == at.partition)
            .unwrap();
        let rec = big.clone().into_record();
        assert_eq!(rec.headers, vec![("\u{fffd}\u{fffd}".to_owned(), vec![])]);
        assert_eq!(rec.payload().len(), max - fixed);
        assert!(got
            .iter()
            .any(|r| r.stored.key.is_none() && r.stored.payload.is_none()));
    }

    #[test]
    fn the_broker_remembers_which_bare_dead_letter_notes_it_refused() {
        let mut b = broker();
        b.create_topic("dlq");
        let rec = framework::transport::Record {
            topic: "t".into(),
            partition: 2,
            offset: 46,
            key: None,
            payload: Some(b"{}".to_vec()),
            headers: Vec::new(),
            timestamp_ms: None,
        };
        b.topic_max_bytes.insert("dlq".into(), 64);
        for (seq, form) in framework::worker::DlqForm::ALL.into_iter().enumerate() {
            let note = framework::worker::dlq_record(&rec, "dlq", "bake", "no key", form);
            assert!(b.produce(0, "bake", 1, seq as u64, note.into()).is_err());
        }
        // Only the bare form says the service had nothing smaller left to try.
        assert_eq!(
            b.refused_notes.iter().collect::<Vec<_>>(),
            [&("bake".to_owned(), "t".to_owned(), 2, 46)]
        );
    }

    #[test]
    fn a_topic_made_again_is_another_log_and_its_groups_start_over() {
        let mut b = broker();
        for i in 0..5 {
            b.produce(0, "p", 1, i, out("t", "same")).unwrap();
        }
        let m = b.join(0, "c", "g", &["t".into()]);
        assert_eq!(fetch_all(&mut b, 0, "g", m).len(), 5);
        let p = partition_for(b"same", 6);
        let GroupFetch::Records { generation, .. } = b.fetch(0, "g", m, 0, &[], &[]) else {
            panic!()
        };
        b.commit(0, "g", m, generation, (&[("t".into(), p, 5)], &[]))
            .unwrap();
        let before = b.log_id("t");
        assert_eq!(b.recreate_topic(1, "t"), BTreeSet::from([b"same".to_vec()]));
        assert_ne!(b.log_id("t"), before, "a new topic id");
        assert_eq!(b.end_offsets("t").unwrap().iter().sum::<i64>(), 0);
        assert!(
            b.committed().is_empty(),
            "the group's offsets went with the topic"
        );
        // The producer's next record is a new write at offset 0, even with a sequence it used.
        assert_eq!(b.produce(2, "p", 1, 0, out("t", "same")).unwrap().offset, 0);
        let again = fetch_all(&mut b, 2, "g", m);
        assert_eq!(again.iter().map(|r| r.offset).collect::<Vec<_>>(), [0]);
    }

    #[test]
    fn a_group_fetch_passes_markers_and_stops_at_a_batch_no_one_can_decode() {
        let mut b = broker();
        b.create_topic("u");
        let m = b.join(0, "c", "g", &["u".into()]);
        let rec = |n: u8| {
            Entry::Record(Stored {
                key: Some(vec![n]),
                payload: Some(vec![n]),
                headers: Vec::new(),
                timestamp_ms: 0,
            })
        };
        b.append_batch(0, "x", "u", 2, vec![rec(1)], (Codec::Zstd, true, false));
        b.append_batch(
            0,
            "x",
            "u",
            2,
            vec![Entry::Marker { commit: true }],
            (Codec::None, true, false),
        );
        let GroupFetch::Records {
            part: Some(part),
            generation,
        } = b.fetch(0, "g", m, 0, &[], &[])
        else {
            panic!()
        };
        assert_eq!((part.partition, part.records.len(), part.next), (2, 1, 2));
        b.append_batch(0, "x", "u", 2, vec![rec(2), rec(3)], (Codec::Gzip, false, false));
        let at = [("u".to_owned(), 2, 2)];
        let GroupFetch::Records { part: Some(part), .. } = b.fetch(0, "g", m, generation, &at, &[]) else {
            panic!()
        };
        let (base, code, _) = part.error.expect("undecodable");
        assert_eq!((base, code, part.next), (2, ErrorCode::BAD_COMPRESSION, 2));
        assert_eq!(b.log("u")[2].len(), 1, "the checkers see what a consumer reads");
    }

    #[test]
    fn a_retried_produce_is_appended_once() {
        let mut b = broker();
        let a = b.produce(0, "p", 9, 1, out("t", "k")).unwrap();
        let again = b.produce(5, "p", 9, 1, out("t", "k")).unwrap();
        assert_eq!(a, again);
        assert_eq!(b.end_offsets("t").unwrap().iter().sum::<i64>(), 1);
        assert!(b.produce(0, "p", 9, 2, out("nope", "k")).is_err());
    }

    #[test]
    fn a_read_outside_groups_starts_where_asked_and_stops_at_the_high_watermark() {
        let mut b = broker();
        for i in 0..10 {
            b.produce(0, "p", 1, i, out("t", "k")).unwrap();
        }
        let p = b.end_offsets("t").unwrap().iter().position(|e| *e == 10).unwrap() as i32;
        let mut at = 4;
        let mut got = Vec::new();
        while at < 10 {
            let part = b.read(0, "c", "t", &[(p, at)]).expect("something to read");
            assert!(!part.records.is_empty());
            at = part.next;
            got.extend(part.records.into_iter().map(|r| r.offset));
        }
        assert_eq!(got, (4..10).collect::<Vec<i64>>());
        assert!(b.read(0, "c", "t", &[(p, 10)]).is_none(), "nothing past the end");
        assert!(
            b.read(0, "c", "t", &[(p + 100, 0)]).is_none(),
            "no such partition"
        );
        assert!(b.read(0, "c", "nope", &[(p, 0)]).is_none(), "no such topic");
        // Not yet on every in-sync replica: not readable.
        b.produce_acks(0, "p", (1, 99), out("t", "k"), false).unwrap();
        assert!(b.read(0, "c", "t", &[(p, 10)]).is_none());
        // Past the end (the topic was made again): out of range.
        let far = b.read(0, "c", "t", &[(p, 500)]).expect("an error");
        assert_eq!(far.error.map(|e| e.1), Some(ErrorCode::OFFSET_OUT_OF_RANGE));
    }

    #[test]
    fn a_record_goes_to_the_partition_it_names() {
        let mut b = broker();
        let mut r = out("t", "k");
        r.partition = Some(5);
        assert_eq!(b.produce(0, "p", 1, 0, r.clone()).unwrap().partition, 5);
        r.partition = Some(6);
        assert!(b.produce(0, "p", 1, 1, r).is_err(), "6 partitions: 0..=5");
    }

    #[test]
    fn a_new_member_reads_from_the_last_commit() {
        let mut b = broker();
        for i in 0..20 {
            b.produce(0, "p", 1, i, out("t", "same-key")).unwrap();
        }
        let m = b.join(0, "c", "g", &["t".into()]);
        let got = fetch_all(&mut b, 0, "g", m);
        assert_eq!(got.len(), 20);
        let p = got[0].partition;
        let GroupFetch::Records { generation, .. } = b.fetch(0, "g", m, 0, &[], &[]) else {
            panic!()
        };
        assert_eq!(
            b.commit(0, "g", m, generation, (&[("t".into(), p, 12)], &[])),
            Ok(1)
        );
        // The member dies; its session expires; a new one gets the rest again.
        let m2 = b.join(10_000, "c", "g", &["t".into()]);
        let again = fetch_all(&mut b, 10_000, "g", m2);
        assert_eq!(again.first().map(|r| r.offset), Some(12));
        assert_eq!(again.len(), 8);
        assert!(matches!(b.fetch(10_000, "g", m, 0, &[], &[]), GroupFetch::Gone));
    }

    #[test]
    fn a_group_without_members_still_shows_its_lag() {
        let mut b = broker();
        for i in 0..5 {
            b.produce(0, "p", 1, i, out("t", "k")).unwrap();
        }
        let m = b.join(0, "c", "g", &["t".into()]);
        assert_eq!(b.lag()["g"], 5);
        b.leave(0, "c", "g", m);
        // Nobody reads the topic now, but nobody committed it either: convergence must wait.
        assert_eq!(b.lag()["g"], 5);
    }

    #[test]
    fn stale_commits_are_refused() {
        let mut b = broker();
        let m = b.join(0, "c", "g", &["t".into()]);
        let _ = b.join(0, "c2", "g", &["t".into()]);
        assert!(b.commit(0, "g", m, 1, (&[("t".into(), 0, 1)], &[])).is_err());
        // Partitions are shared out: each member owns three of six.
        let GroupFetch::Records { generation, .. } = b.fetch(0, "g", m, 0, &[], &[]) else {
            panic!()
        };
        let all: Vec<_> = (0..6).map(|p| ("t".to_string(), p, 0i64)).collect();
        // Offsets equal to the committed default (none) count as changes only for owned ones.
        let taken = b.commit(0, "g", m, generation, (&all, &[])).unwrap();
        assert_eq!(taken, 3);
    }
}
