//! The simulated broker's state: Kafka's semantics that matter to the shop, as a plain data
//! structure (no runtime, no clock of its own: every call gets `now`), so it is unit-tested in the
//! normal build and driven over madsim's network in the simulation ([`crate::node`]).
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

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use pizza::partitioner::partition_for;
use pizza::transport::errors::ErrorCode;
use pizza::transport::{header_from_raw, Acked, RawRecord, Record};

use crate::rng::SplitMix64;
use crate::trace::Trace;

/// A record as the broker stores it: bytes, as a producer sent them (a null key or value, header
/// keys that are not UTF-8).
#[derive(Clone, Debug)]
pub struct Stored {
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    pub headers: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    /// When the broker appended it (epoch ms).
    pub timestamp_ms: i64,
    /// When the in-sync replicas have it: at once for a producer that waits for all of them
    /// (`acks=all`, answered only then), [`REPLICATION_LAG_MS`] later for one that does not.
    /// Consumers read only what is replicated (the high watermark), and a leader change loses
    /// what is not.
    pub replicated_at_ms: i64,
    /// The producer and sequence that wrote it.
    pub origin: (u64, u64),
}

/// How long a record written with `acks=1` waits for its followers.
pub const REPLICATION_LAG_MS: i64 = 200;

impl Stored {
    /// The key's bytes (empty when null).
    pub fn key(&self) -> &[u8] {
        self.key.as_deref().unwrap_or_default()
    }

    /// The value's bytes (empty when null).
    pub fn payload(&self) -> &[u8] {
        self.payload.as_deref().unwrap_or_default()
    }

    /// The first header named `name`, as text.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(k, _)| k == name.as_bytes())
            .map(|(_, v)| String::from_utf8_lossy(v.as_deref().unwrap_or_default()).into_owned())
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
    /// The record as a consumer reads it: headers through `pizza::transport::header_from_raw`,
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
}

impl ProduceError {
    /// The code Kafka answers with.
    pub fn code(&self) -> ErrorCode {
        match self {
            ProduceError::UnknownTopic(_) => ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
            ProduceError::NotEnoughReplicas(_) => ErrorCode::NOT_ENOUGH_REPLICAS,
            ProduceError::TooLarge { .. } => ErrorCode::MESSAGE_TOO_LARGE,
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
}

/// What a fetch got.
#[derive(Debug)]
pub enum GroupFetch {
    /// Records (maybe none yet) and the group's generation.
    Records {
        generation: u64,
        records: Vec<FetchedRecord>,
    },
    /// The member is no longer in the group (its session expired or it left): join again.
    Gone,
}

/// The broker.
#[derive(Debug)]
pub struct Broker {
    cfg: BrokerConfig,
    topics: BTreeMap<String, Vec<Vec<Stored>>>,
    groups: BTreeMap<String, Group>,
    /// Producer id -> sequence -> where that record went.
    producers: BTreeMap<u64, BTreeMap<u64, Acked>>,
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
    /// (group, topic) pairs whose records the broker holds back from the group for now: a
    /// partition leader far behind for that reader, and the way the pending path is forced
    /// (deliver sees pizza-baked before pizza-ordered).
    pub held: BTreeSet<(String, String)>,
    /// When the simulation started (epoch ms), for trace times.
    pub start_ms: i64,
    pub trace: Trace,
    /// Commits that moved a group's offset back: group, topic, partition, from, to.
    pub commits_back: Vec<(String, String, i32, i64, i64)>,
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
        let n = self.cfg.partitions.max(1) as usize;
        self.topics
            .entry(topic.to_owned())
            .or_insert_with(|| vec![Vec::new(); n]);
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
        if let Some(d) = self.producers.get(&producer).and_then(|p| p.get(&seq)) {
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
        let log = &mut parts[partition as usize];
        let offset = log.len() as i64;
        log.push(Stored {
            key: rec.key,
            payload: rec.payload,
            headers: rec.headers,
            timestamp_ms: now,
            replicated_at_ms: if acks_all { now } else { now + REPLICATION_LAG_MS },
            origin: (producer, seq),
        });
        let d = Acked { partition, offset };
        self.producers.entry(producer).or_default().insert(seq, d);
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
                while log.last().is_some_and(|r| r.replicated_at_ms > now) {
                    let r = log.pop().expect("checked");
                    lost.push((topic.clone(), p, log.len(), r.origin, trace_key(r.key.as_deref())));
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
            .map(|ps| ps.iter().map(|p| p.len() as i64).collect())
    }

    /// Every partition's records of `topic` (the checkers read the log through this).
    pub fn log(&self, topic: &str) -> &[Vec<Stored>] {
        self.topics.get(topic).map(Vec::as_slice).unwrap_or_default()
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

    /// Whether every group has committed everything of the topics its members read, counted
    /// also while the group has no member (a service restarting, a session expired).
    pub fn lag(&self) -> BTreeMap<String, i64> {
        let mut out = BTreeMap::new();
        for (name, g) in &self.groups {
            let mut lag = 0;
            for t in &g.topics {
                for (p, log) in self.log(t).iter().enumerate() {
                    let c = g.committed.get(&(t.clone(), p as i32)).copied().unwrap_or(0);
                    lag += log.len() as i64 - c;
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

    /// Up to `max_batch` records of one partition the member owns.
    ///
    /// The consumer says which generation it reads in and where it is (the next offset of each
    /// partition it has received records of), as a Kafka consumer keeps its own position: a lost
    /// response is fetched again from there. Partitions it has no position for, and every
    /// partition of a consumer still in an older generation (as after a rebalance), start at the
    /// committed offset.
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
        let ready: Vec<(String, i32)> = m
            .cursors
            .iter()
            .filter(|((t, p), at)| {
                self.topics
                    .get(t)
                    .is_some_and(|ps| (ps[*p as usize].len() as i64) > **at)
                    && !self.held.iter().any(|(g, h)| g == group && h == t)
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
                records: Vec::new(),
            };
        }
        let (topic, partition) = ready[self.rng.below(ready.len() as u64) as usize].clone();
        let batch = 1 + self.rng.below(self.cfg.max_batch as u64) as usize;
        let cursor = m.cursors.get_mut(&(topic.clone(), partition)).expect("ready");
        let log = &self.topics[&topic][partition as usize];
        let from = *cursor as usize;
        // Up to the high watermark: what every in-sync replica has.
        let replicated = log[from..]
            .iter()
            .take_while(|r| r.replicated_at_ms <= now)
            .count();
        let to = from + batch.min(replicated);
        if to == from {
            return GroupFetch::Records {
                generation,
                records: Vec::new(),
            };
        }
        *cursor = to as i64;
        let node = m.node.clone();
        let records: Vec<FetchedRecord> = (from..to)
            .map(|o| FetchedRecord {
                topic: topic.clone(),
                partition,
                offset: o as i64,
                stored: log[o].clone(),
            })
            .collect();
        for r in &records {
            let key = trace_key(r.stored.key.as_deref());
            self.event(
                now,
                &node,
                format_args!("{topic} {partition} {} {key} fetched by {group}", r.offset),
            );
        }
        GroupFetch::Records { generation, records }
    }

    /// Up to `max_batch` records of one partition of `topic` that has records past the position
    /// `positions` gives it (and below its high watermark), read outside any group.
    pub fn read(&mut self, now: i64, topic: &str, positions: &[(i32, i64)]) -> Vec<FetchedRecord> {
        let Some(parts) = self.topics.get(topic) else {
            return Vec::new();
        };
        let ready: Vec<(i32, usize)> = positions
            .iter()
            .filter_map(|(p, at)| {
                let log = parts.get(usize::try_from(*p).ok()?)?;
                let from = usize::try_from((*at).max(0)).ok()?;
                let replicated = log
                    .get(from..)?
                    .iter()
                    .take_while(|r| r.replicated_at_ms <= now)
                    .count();
                (replicated > 0).then_some((*p, from))
            })
            .collect();
        if ready.is_empty() {
            return Vec::new();
        }
        let (partition, from) = ready[self.rng.below(ready.len() as u64) as usize];
        let batch = 1 + self.rng.below(self.cfg.max_batch as u64) as usize;
        let log = &self.topics[topic][partition as usize];
        log[from..]
            .iter()
            .take_while(|r| r.replicated_at_ms <= now)
            .take(batch)
            .enumerate()
            .map(|(i, r)| FetchedRecord {
                topic: topic.to_owned(),
                partition,
                offset: (from + i) as i64,
                stored: r.clone(),
            })
            .collect()
    }

    /// The partitions `member` of `group` is assigned now (none when it is not a member).
    pub fn assignment(&self, group: &str, member: u64) -> Vec<(String, i32)> {
        self.groups
            .get(group)
            .and_then(|g| g.members.get(&member))
            .map(|m| m.cursors.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Commits offsets for the partitions the member owns in this generation; returns how many
    /// were taken, or why none were.
    pub fn commit(
        &mut self,
        now: i64,
        group: &str,
        member: u64,
        generation: u64,
        offsets: &[(String, i32, i64)],
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
        for (t, p, next) in offsets {
            let k = (t.clone(), *p);
            if m.cursors.contains_key(&k) && g.committed.get(&k) != Some(next) {
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

/// A bare dead-letter note's service and source coordinates (`pizza::worker::DlqForm::Bare`: an
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
        pizza::transport::OutRecord::new(topic, key, b"{}".to_vec()).into()
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
                GroupFetch::Records {
                    generation: g,
                    records,
                } => {
                    if g != generation {
                        pos.clear();
                        generation = g;
                    }
                    if records.is_empty() {
                        break;
                    }
                    for r in &records {
                        pos.insert((r.topic.clone(), r.partition), r.offset + 1);
                    }
                    got.extend(records);
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
        let GroupFetch::Records { generation, records } = b.fetch(0, "g", m, 0, &[], &[]) else {
            panic!()
        };
        assert_eq!(records.len(), 1);
        // The response never arrived: the consumer asks again from where it was.
        let GroupFetch::Records { records: again, .. } = b.fetch(0, "g", m, generation, &[], &[]) else {
            panic!()
        };
        let offsets = |rs: &[FetchedRecord]| rs.iter().map(|r| (r.partition, r.offset)).collect::<Vec<_>>();
        assert_eq!(offsets(&again), offsets(&records));
        let p = records[0].partition;
        let GroupFetch::Records { records: none, .. } =
            b.fetch(0, "g", m, generation, &[("t".into(), p, 1)], &[])
        else {
            panic!()
        };
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
        let rec = pizza::transport::Record {
            topic: "t".into(),
            partition: 2,
            offset: 46,
            key: None,
            payload: Some(b"{}".to_vec()),
            headers: Vec::new(),
            timestamp_ms: None,
        };
        b.topic_max_bytes.insert("dlq".into(), 64);
        for (seq, form) in pizza::worker::DlqForm::ALL.into_iter().enumerate() {
            let note = pizza::worker::dlq_record(&rec, "dlq", "bake", "no key", form);
            assert!(b.produce(0, "bake", 1, seq as u64, note.into()).is_err());
        }
        // Only the bare form says the service had nothing smaller left to try.
        assert_eq!(
            b.refused_notes.iter().collect::<Vec<_>>(),
            [&("bake".to_owned(), "t".to_owned(), 2, 46)]
        );
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
            let batch = b.read(0, "t", &[(p, at)]);
            assert!(!batch.is_empty());
            at = batch.last().unwrap().offset + 1;
            got.extend(batch.into_iter().map(|r| r.offset));
        }
        assert_eq!(got, (4..10).collect::<Vec<i64>>());
        assert!(b.read(0, "t", &[(p, 10)]).is_empty(), "nothing past the end");
        assert!(b.read(0, "t", &[(p + 100, 0)]).is_empty(), "no such partition");
        assert!(b.read(0, "nope", &[(p, 0)]).is_empty(), "no such topic");
        // Not yet on every in-sync replica: not readable.
        b.produce_acks(0, "p", (1, 99), out("t", "k"), false).unwrap();
        assert!(b.read(0, "t", &[(p, 10)]).is_empty());
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
        assert_eq!(b.commit(0, "g", m, generation, &[("t".into(), p, 12)]), Ok(1));
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
        assert!(b.commit(0, "g", m, 1, &[("t".into(), 0, 1)]).is_err());
        // Partitions are shared out: each member owns three of six.
        let GroupFetch::Records { generation, .. } = b.fetch(0, "g", m, 0, &[], &[]) else {
            panic!()
        };
        let all: Vec<_> = (0..6).map(|p| ("t".to_string(), p, 0i64)).collect();
        // Offsets equal to the committed default (none) count as changes only for owned ones.
        let taken = b.commit(0, "g", m, generation, &all).unwrap();
        assert_eq!(taken, 3);
    }
}
