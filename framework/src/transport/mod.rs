//! The one seam: every service talks to the log through [`Transport`], and knows nothing of which
//! implementation it runs on. Two implement it: Kafka with rdkafka ([`kafka`], production, the demo,
//! load tests) and the simulated broker in `sim/` (deterministic tests under madsim).

pub mod commits;
pub mod errors;
#[cfg(feature = "kafka")]
pub mod kafka;
mod props;
pub mod unreadable;

pub use props::KafkaProps;

use std::future::Future;
use std::time::Duration;

use crate::error::BoxError;
use crate::mutants::{self, Mutant};

/// A record read from a topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    /// `None` for a tombstone (an empty value is `Some(vec![])`).
    pub payload: Option<Vec<u8>>,
    pub headers: Vec<(String, Vec<u8>)>,
    /// The record's timestamp in epoch milliseconds, when the broker gave one.
    pub timestamp_ms: Option<i64>,
}

impl Record {
    /// The key as text, when it has one and it is UTF-8.
    pub fn key_str(&self) -> Option<&str> {
        self.key.as_deref().and_then(|k| std::str::from_utf8(k).ok())
    }

    /// The payload, empty for a tombstone.
    pub fn payload(&self) -> &[u8] {
        self.payload.as_deref().unwrap_or_default()
    }
}

/// A header as a consumer reads it from the wire: the key's bytes are untrusted, so they are
/// decoded as UTF-8 with every invalid sequence replaced by U+FFFD, as Kafka's Java client decodes
/// header keys; a null value reads as empty. The key ends at its first NUL byte, because
/// librdkafka hands header names over as C strings. Both transports read headers through this
/// function (rdkafka's own header iterator panics on a key that is not UTF-8).
pub fn header_from_raw(key: &[u8], value: Option<&[u8]>) -> (String, Vec<u8>) {
    let key = key.split(|b| *b == 0).next().unwrap_or_default();
    if mutants::on(Mutant::HeaderKeyPanics) {
        // What rdkafka's `Headers::iter` does: `CStr::to_str().unwrap()`.
        let key = std::str::from_utf8(key).expect("header key is UTF-8");
        return (key.to_owned(), value.unwrap_or_default().to_vec());
    }
    (
        String::from_utf8_lossy(key).into_owned(),
        value.unwrap_or_default().to_vec(),
    )
}

/// A record exactly as bytes: no key or payload at all (null), and header keys that need not be
/// UTF-8. The services never write such records; tools and tests that play a hostile producer do
/// (`KafkaTransport::produce_raw`, the simulation's transport).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawRecord {
    pub topic: String,
    /// The partition to write to; `None`: where the key says (murmur2, as Java's producer).
    pub partition: Option<i32>,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    pub headers: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

impl RawRecord {
    /// Its size as a producer counts it against `message.max.bytes`: a record's framing, key,
    /// value, and each header's key and value with their varint lengths (librdkafka's
    /// `rd_kafka_msg_max_wire_size`, which `rd_kafka_msg_new0` checks; a null value's length is -1).
    pub fn size(&self) -> usize {
        let len = |b: &Option<Vec<u8>>| b.as_ref().map_or(0, Vec::len);
        let headers: usize = self
            .headers
            .iter()
            .map(|(k, v)| {
                let value_len = v.as_ref().map_or(-1, |v| v.len() as i64);
                varint_len(k.len() as i64) + k.len() + varint_len(value_len) + len(v)
            })
            .sum();
        RECORD_OVERHEAD + len(&self.key) + len(&self.payload) + headers
    }
}

/// Bytes of a zig-zag varint, as Kafka's record format writes lengths (`rd_uvarint_enc_i64`).
fn varint_len(n: i64) -> usize {
    let zigzag = ((n << 1) ^ (n >> 63)) as u64;
    (64 - zigzag.max(1).leading_zeros() as usize).div_ceil(7)
}

/// Bytes a record adds besides its key, value and headers at most: its length, attributes,
/// timestamp and offset deltas, key and value lengths and header count, as varints
/// (librdkafka's `RD_KAFKAP_MESSAGE_V2_MAX_OVERHEAD`).
pub const RECORD_OVERHEAD: usize = 36;

impl From<OutRecord> for RawRecord {
    fn from(r: OutRecord) -> RawRecord {
        RawRecord {
            topic: r.topic,
            partition: r.partition,
            key: Some(r.key),
            payload: Some(r.payload),
            headers: r
                .headers
                .into_iter()
                .map(|(k, v)| (k.into_bytes(), Some(v)))
                .collect(),
        }
    }
}

/// A record to produce.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutRecord {
    pub topic: String,
    /// The partition to write to; `None`: where the key says.
    pub partition: Option<i32>,
    pub key: Vec<u8>,
    pub payload: Vec<u8>,
    pub headers: Vec<(String, Vec<u8>)>,
}

impl OutRecord {
    /// A keyed record without headers.
    pub fn new(topic: &str, key: impl Into<Vec<u8>>, payload: Vec<u8>) -> OutRecord {
        OutRecord {
            topic: topic.to_owned(),
            partition: None,
            key: key.into(),
            payload,
            headers: Vec::new(),
        }
    }
}

/// Where a produced record became durable: the broker acknowledged it at this partition and offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Acked {
    pub partition: i32,
    pub offset: i64,
}

/// A transport failure, split by what the caller should do about it; the cause is its source.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// Worth retrying, and nothing was written: a broker was unreachable before the request went
    /// out, a queue was full, the broker refused the write for now.
    #[error("retriable transport error")]
    Retriable(#[source] BoxError),
    /// A produce failed to the client after its request may have reached the broker (it timed
    /// out waiting for the answer): the record may be in the log, or may not. Worth retrying where
    /// a duplicate is harmless; never to be reported as "not written" (librdkafka's
    /// `RD_KAFKA_MSG_STATUS_POSSIBLY_PERSISTED`).
    #[error("the outcome is unknown: the record may have been written")]
    MaybeWritten(#[source] BoxError),
    /// Retrying will not help: bad configuration, a fenced producer, an unknown topic.
    #[error("fatal transport error")]
    Fatal(#[source] BoxError),
    /// This record is larger than the producer or the broker accepts (`message.max.bytes`):
    /// retrying it will not help, but a smaller record would go through.
    #[error("record too large")]
    TooLarge(#[source] BoxError),
}

impl TransportError {
    /// Whether retrying may succeed.
    pub fn is_retriable(&self) -> bool {
        matches!(
            self,
            TransportError::Retriable(_) | TransportError::MaybeWritten(_)
        )
    }

    /// Whether the record may have been written although the produce failed.
    pub fn may_have_been_written(&self) -> bool {
        matches!(self, TransportError::MaybeWritten(_))
    }

    pub fn maybe_written(cause: impl Into<BoxError>) -> TransportError {
        crate::probes::hit(crate::probes::Probe::ProduceMaybeWritten, "");
        TransportError::MaybeWritten(cause.into())
    }

    pub fn retriable(cause: impl Into<BoxError>) -> TransportError {
        TransportError::Retriable(cause.into())
    }

    pub fn fatal(cause: impl Into<BoxError>) -> TransportError {
        TransportError::Fatal(cause.into())
    }

    pub fn too_large(cause: impl Into<BoxError>) -> TransportError {
        TransportError::TooLarge(cause.into())
    }
}

/// Produce keyed records and learn when they are durable; join consumer groups.
pub trait Transport: Clone + Send + Sync + 'static {
    /// A consumer group membership.
    type Subscription: Subscription;

    /// Produces a record; resolves once it is durable (acknowledged by the broker).
    fn produce(&self, record: OutRecord) -> impl Future<Output = Result<Acked, TransportError>> + Send;

    /// Joins `group` as a member consuming `topics`, reading from the group's committed offsets
    /// (from the beginning when it has none).
    fn subscribe(
        &self,
        group: &str,
        topics: &[&str],
    ) -> impl Future<Output = Result<Self::Subscription, TransportError>> + Send;

    /// The end offset (the offset the next record will get) of every partition of `topic`.
    fn end_offsets(&self, topic: &str) -> impl Future<Output = Result<Vec<i64>, TransportError>> + Send;

    /// A reader of `topic`'s partitions outside any consumer group, at offsets the caller
    /// chooses: a state's owner restoring and following its changelog.
    type Reader: Reader;

    /// Opens a [`Reader`] of `topic`, following no partition yet.
    fn reader(&self, topic: &str) -> impl Future<Output = Result<Self::Reader, TransportError>> + Send;

    /// Which log `topic` names now: its cluster's id and its topic id (KIP-516), as one string;
    /// `None` when the broker gives neither. A topic deleted and made again, a new cluster, the
    /// embedded broker started again: each is another log under the same name, with offsets from
    /// 0 again, and a reader that kept offsets of the old one must start over.
    fn log_id(&self, topic: &str) -> impl Future<Output = Result<Option<String>, TransportError>> + Send;

    /// The first offset still in the log and the end offset of `topic`/`partition`.
    fn watermarks(
        &self,
        topic: &str,
        partition: i32,
    ) -> impl Future<Output = Result<(i64, i64), TransportError>> + Send;
}

/// A record a consumer could not read, given up on: the same error came back at the same offset
/// (a batch the client cannot decode, a corrupt record) until the consumer moved past it
/// ([`unreadable::Judge`]). Every reader hands it on once, so its caller can say so (the worker
/// dead-letters a note of it) instead of the partition waiting on it for ever.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unreadable {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// The client's error, as it said it.
    pub error: String,
}

/// Which log a topic name stands for: its cluster's id and its topic id (KIP-516), either of
/// which a broker may not give. Written `cluster/topic` (`-` for one not known).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogId {
    pub cluster: Option<String>,
    pub topic: Option<String>,
}

impl LogId {
    /// `None` when neither is known.
    pub fn new(cluster: Option<&str>, topic: Option<&str>) -> Option<LogId> {
        (cluster.is_some() || topic.is_some()).then(|| LogId {
            cluster: cluster.map(str::to_owned),
            topic: topic.map(str::to_owned),
        })
    }

    /// Reads one written by `Display` (any text without a `/` is a cluster id alone).
    pub fn parse(s: &str) -> LogId {
        let part = |p: &str| (p != "-" && !p.is_empty()).then(|| p.to_owned());
        match s.split_once('/') {
            Some((c, t)) => LogId {
                cluster: part(c),
                topic: part(t),
            },
            None => LogId {
                cluster: part(s),
                topic: None,
            },
        }
    }

    /// Whether `other` is certainly another log: a cluster id or a topic id both name, and they
    /// differ. One that names less is not taken for another log.
    pub fn is_other_than(&self, other: &LogId) -> bool {
        let differ = |a: &Option<String>, b: &Option<String>| a.is_some() && b.is_some() && a != b;
        differ(&self.cluster, &other.cluster) || differ(&self.topic, &other.topic)
    }
}

impl std::fmt::Display for LogId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let dash = |p: &Option<String>| p.clone().unwrap_or_else(|| "-".to_owned());
        write!(f, "{}/{}", dash(&self.cluster), dash(&self.topic))
    }
}

/// Whether the log written `a` is certainly another than the one written `b` ([`LogId`]).
pub fn other_log(a: &str, b: &str) -> bool {
    LogId::parse(a).is_other_than(&LogId::parse(b))
}

/// What a [`Reader`] brought: records, each partition's position, and records given up on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Fetched {
    /// Records of the followed partitions, each partition's in order.
    pub records: Vec<Record>,
    /// Per partition whose position moved (topic, partition, offset): the offset of the next
    /// record it can bring. Past
    /// every record in `records`, and past the offsets a consumer never delivers: transaction
    /// markers, records of aborted transactions, offsets compaction removed, records given up
    /// on. "Read to the end" is this reaching the end offset, never the last record + 1 (a log
    /// may end with a marker).
    pub positions: Vec<(String, i32, i64)>,
    /// Records given up on, each once; `positions` is already past them.
    pub unreadable: Vec<Unreadable>,
    /// Partitions whose position went back to the log's start because the log ended before it
    /// (the topic was made again, a new cluster): what the caller read of them is of another
    /// log.
    pub restarted: Vec<(String, i32)>,
}

impl Fetched {
    /// Nothing at all.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
            && self.positions.is_empty()
            && self.unreadable.is_empty()
            && self.restarted.is_empty()
    }

    /// Adds `more`, which came after (positions only move forward).
    pub fn extend(&mut self, more: Fetched) {
        self.records.extend(more.records);
        self.unreadable.extend(more.unreadable);
        self.restarted.extend(more.restarted);
        for (t, p, at) in more.positions {
            match self.positions.iter_mut().find(|(u, q, _)| *u == t && *q == p) {
                Some((.., was)) => *was = (*was).max(at),
                None => self.positions.push((t, p, at)),
            }
        }
    }
}

/// Reads chosen partitions of one topic, in order within each, outside any group.
pub trait Reader: Send + 'static {
    /// Reads `partition` from offset `from` on (the log's first offset, when `from` is gone).
    /// Following a partition again starts it over at `from`.
    fn follow(&mut self, partition: i32, from: i64) -> Result<(), TransportError>;

    /// Stops reading `partition`: none of its records come any more, fetched or not.
    fn unfollow(&mut self, partition: i32) -> Result<(), TransportError>;

    /// What the followed partitions bring next (at most `max` records): waits until there is a
    /// record, a position that moved, or a record given up on. An error is the whole reader's
    /// (the broker out of reach); one partition's trouble never holds the others. Cancel-safe.
    fn recv(&mut self, max: usize) -> impl Future<Output = Result<Fetched, TransportError>> + Send;
}

/// What a consumer group member's [`Subscription::recv`] brings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// A record to handle.
    Record(Record),
    /// A record the consumer gave up on: the worker dead-letters a note of it, and it is done.
    Unreadable(Unreadable),
    /// The consumer's position in a partition passed offsets it never delivers (a transaction
    /// marker at the end of the log, an aborted transaction): once every record before it is
    /// done, the group may commit up to here.
    Position {
        topic: String,
        partition: i32,
        offset: i64,
    },
}

impl Delivery {
    /// The topic and partition it is of.
    pub fn at(&self) -> (&str, i32) {
        match self {
            Delivery::Record(r) => (&r.topic, r.partition),
            Delivery::Unreadable(u) => (&u.topic, u.partition),
            Delivery::Position { topic, partition, .. } => (topic, *partition),
        }
    }
}

/// One member of a consumer group.
pub trait Subscription: Send + 'static {
    /// What the assigned partitions bring next. Cancel-safe.
    fn recv(&mut self) -> impl Future<Output = Result<Delivery, TransportError>> + Send;

    /// Marks every record of `topic`/`partition` before `next_offset` done: the next commit stores
    /// `next_offset`, so a restart resumes there.
    fn mark_done(&mut self, topic: &str, partition: i32, next_offset: i64) -> Result<(), TransportError>;

    /// The partitions this member owns now, when they changed since the last call (`None`
    /// when they did not).
    fn assignment_changed(&mut self) -> Option<Vec<(String, i32)>>;

    /// How many times this member gained `topic`/`partition` (`commits::MemberOffsets::epoch`):
    /// the worker marks a record only in the epoch it was received in.
    fn epoch(&self, topic: &str, partition: i32) -> u64;

    /// Reads `topic`/`partition` again from the log's start, in a new epoch (its log is another
    /// one now: a topic made again under the same name). What was received of it before marks
    /// nothing. `log` is the log it is now ([`LogId`] written out), when known: the partition's
    /// commits say so from now on (`commits::commit_metadata`).
    fn rewind(&mut self, topic: &str, partition: i32, log: Option<&str>) -> Result<(), TransportError>;

    /// Stops fetching `topic`/`partition` (what was fetched already may still come) until
    /// [`Subscription::resume`], or until a rebalance assigns it afresh.
    fn pause(&mut self, topic: &str, partition: i32) -> Result<(), TransportError>;

    /// Fetches `topic`/`partition` again.
    fn resume(&mut self, topic: &str, partition: i32) -> Result<(), TransportError>;

    /// Commits what is marked done and leaves the group.
    fn close(self) -> impl Future<Output = Result<(), TransportError>> + Send;
}

/// Reads topics from their start up to the end offsets they had when it was opened, outside any
/// consumer group (so it disturbs no service), one topic after another. Rebuilding the view,
/// tests and the load generator read the log this way. A partition is read to its end when the
/// reader's position reaches the end offset, not when a record at end - 1 comes (a log may end
/// with a transaction marker, which is never delivered).
pub struct ReadToEnd<R> {
    /// The topics still to read, each with its end offset per partition; the first is being read.
    topics: std::collections::VecDeque<(String, Vec<i64>)>,
    /// The reader of the first topic, once opened, with each partition's position.
    reading: Option<(R, std::collections::BTreeMap<i32, i64>)>,
    /// Records read ahead of the one returned.
    ahead: std::collections::VecDeque<Record>,
    /// Records given up on (a batch that cannot be decoded): passed over, and said here.
    pub unreadable: Vec<Unreadable>,
    /// Each topic's partition count when it was opened.
    counts: std::collections::BTreeMap<String, i32>,
}

/// How long [`ReadToEnd::next`] waits after a retriable error before it asks again.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// How long [`ReadToEnd::open`] asks again for end offsets a retriable error kept from it.
pub const ENDS_WITHIN: Duration = Duration::from_secs(30);

/// `topic`'s end offsets; a retriable error is asked again, `RETRY_PAUSE` apart, until
/// `within` has passed.
pub async fn end_offsets_within<T: Transport>(
    transport: &T,
    topic: &str,
    within: Duration,
) -> Result<Vec<i64>, TransportError> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match transport.end_offsets(topic).await {
            Err(e) if e.is_retriable() && tokio::time::Instant::now() < deadline => {
                crate::probes::hit(crate::probes::Probe::ConsumerRetried, "");
                tokio::time::sleep(RETRY_PAUSE).await;
            }
            done => return done,
        }
    }
}

/// A consumer group name no one else uses: `prefix` and 32 random bits, for readers that must not
/// share offsets with anyone (a rebuild, a test reading the log).
pub fn fresh_group(prefix: &str) -> String {
    let mut bytes = [0u8; 4];
    getrandom::fill(&mut bytes).expect("the OS has randomness");
    format!("{prefix}-{:08x}", u32::from_be_bytes(bytes))
}

/// Why reading to the end stopped early.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// Nothing came for the stall time; the last retriable error the consumer gave meanwhile,
    /// if it gave one, is the cause.
    #[error("nothing read for {0:?} while {1} were still to read")]
    Stalled(Duration, i64, #[source] Option<TransportError>),
}

impl<R: Reader> ReadToEnd<R> {
    /// Takes the end offsets of `topics` now. A retriable error (a partition whose leader is
    /// being elected, as right after a topic is created) is asked again for up to
    /// [`ENDS_WITHIN`].
    pub async fn open<T: Transport<Reader = R>>(
        transport: &T,
        topics: &[&str],
    ) -> Result<ReadToEnd<R>, TransportError> {
        let mut ends = std::collections::VecDeque::new();
        let mut counts = std::collections::BTreeMap::new();
        for t in topics {
            let e = end_offsets_within(transport, t, ENDS_WITHIN).await?;
            counts.insert((*t).to_owned(), e.len() as i32);
            ends.push_back(((*t).to_owned(), e));
        }
        Ok(ReadToEnd {
            topics: ends,
            reading: None,
            ahead: std::collections::VecDeque::new(),
            unreadable: Vec::new(),
            counts,
        })
    }

    /// `topic`'s partition count when this was opened.
    pub fn partitions(&self, topic: &str) -> Option<i32> {
        self.counts.get(topic).copied()
    }

    /// The next record below the end offsets, or `None` once every partition is read; gives up
    /// when nothing comes for `stall` (retriable errors do not restart the wait).
    pub async fn next<T: Transport<Reader = R>>(
        &mut self,
        transport: &T,
        stall: Duration,
    ) -> Result<Option<Record>, ReadError> {
        let mut deadline = tokio::time::Instant::now() + stall;
        let mut last_error = None;
        loop {
            if let Some(r) = self.ahead.pop_front() {
                return Ok(Some(r));
            }
            let Some((topic, ends)) = self.topics.front() else {
                return Ok(None);
            };
            let (reader, at) = match &mut self.reading {
                Some(r) => r,
                None => {
                    let mut reader = transport.reader(topic).await?;
                    let mut at = std::collections::BTreeMap::new();
                    for (p, end) in (0..).zip(ends) {
                        if *end > 0 {
                            reader.follow(p, 0)?;
                            at.insert(p, 0);
                        }
                    }
                    self.reading.insert((reader, at))
                }
            };
            let left_to_read = |at: &std::collections::BTreeMap<i32, i64>| -> i64 {
                at.iter().map(|(p, o)| (ends[*p as usize] - o).max(0)).sum()
            };
            if left_to_read(at) == 0 {
                self.topics.pop_front();
                self.reading = None;
                continue;
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let got = match tokio::time::timeout(left, reader.recv(REBUILD_READ)).await {
                Err(_) => return Err(ReadError::Stalled(stall, left_to_read(at), last_error)),
                Ok(Err(e)) if e.is_retriable() => {
                    last_error = Some(e);
                    tokio::time::sleep(RETRY_PAUSE.min(left)).await;
                    continue;
                }
                Ok(got) => got?,
            };
            deadline = tokio::time::Instant::now() + stall;
            let positions = got
                .positions
                .iter()
                .filter(|_| !mutants::on(Mutant::EndByLastRecord));
            for (_, p, pos) in positions {
                if let Some(was) = at.get_mut(p) {
                    *was = (*was).max(*pos);
                }
            }
            if let Some((t, p)) = got.restarted.first() {
                return Err(ReadError::Transport(TransportError::retriable(format!(
                    "{t}/{p} went back to its start while it was read: it is another log now"
                ))));
            }
            for u in got.unreadable {
                tracing::warn!(topic = %u.topic, partition = u.partition, offset = u.offset, error = %u.error, "a record that cannot be read: passed over");
                self.unreadable.push(u);
            }
            for r in &got.records {
                if let Some(was) = at.get_mut(&r.partition) {
                    *was = (*was).max(r.offset + 1);
                }
            }
            self.ahead.extend(
                got.records
                    .into_iter()
                    .filter(|r| ends.get(r.partition as usize).is_some_and(|end| r.offset < *end)),
            );
            for p in at.keys().copied().collect::<Vec<_>>() {
                if at[&p] >= ends[p as usize] {
                    reader.unfollow(p)?;
                }
            }
        }
    }
}

/// Records a [`ReadToEnd`] asks its reader for at a time.
const REBUILD_READ: usize = 1000;

/// Every record of `topics` up to their current ends.
pub async fn read_all<T: Transport>(transport: &T, topics: &[&str]) -> Result<Vec<Record>, ReadError> {
    let mut reader = ReadToEnd::open(transport, topics).await?;
    let mut out = Vec::new();
    while let Some(r) = reader.next(transport, Duration::from_secs(30)).await? {
        out.push(r);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_is_another_only_when_an_id_both_name_differs() {
        assert!(other_log("c1/t1", "c2/t1"), "another cluster");
        assert!(other_log("c1/t1", "c1/t2"), "the topic made again");
        assert!(!other_log("c1/t1", "c1/t1"));
        assert!(
            !other_log("c1/-", "c1/t1"),
            "a broker that named no topic id then"
        );
        assert!(!other_log("-/t1", "c9/t1"));
        assert!(other_log("c1", "c2/t1"), "a cluster id alone");
        assert_eq!(LogId::new(Some("c"), None).unwrap().to_string(), "c/-");
        assert_eq!(LogId::new(None, None), None);
    }

    #[test]
    fn sizes_count_as_librdkafka_counts() {
        assert_eq!(
            [0, -1, 1, 63, 64, 8191, 8192].map(varint_len),
            [1, 1, 1, 1, 2, 2, 3]
        );
        let r = RawRecord {
            topic: "t".into(),
            partition: None,
            key: Some(vec![0; 8]),
            payload: Some(vec![0; 100]),
            headers: vec![(b"k".to_vec(), None), (b"key".to_vec(), Some(vec![0; 64]))],
        };
        // 36 of framing, 8 + 100, then (1 + 1 + 1 + 0) and (1 + 3 + 2 + 64).
        assert_eq!(r.size(), 36 + 108 + 3 + 70);
    }
}
