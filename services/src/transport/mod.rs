//! The one seam: every service talks to the log through [`Transport`], and knows nothing of which
//! implementation it runs on. Two implement it: Kafka with rdkafka ([`kafka`], production, the demo,
//! load tests) and the simulated broker in `sim/` (deterministic tests under madsim).

pub mod errors;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod offsets;

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
    /// `None` for a tombstone (an empty pizza-baked value is `Some(vec![])`).
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

    /// The first offset still in the log and the end offset of `topic`/`partition`.
    fn watermarks(
        &self,
        topic: &str,
        partition: i32,
    ) -> impl Future<Output = Result<(i64, i64), TransportError>> + Send;
}

/// Reads chosen partitions of one topic, in order within each, outside any group.
pub trait Reader: Send + 'static {
    /// Reads `partition` from offset `from` on (the log's first offset, when `from` is gone).
    /// Following a partition again starts it over at `from`.
    fn follow(&mut self, partition: i32, from: i64) -> Result<(), TransportError>;

    /// Stops reading `partition`: none of its records come any more, fetched or not.
    fn unfollow(&mut self, partition: i32) -> Result<(), TransportError>;

    /// The next records of the followed partitions (at least one, at most `max`), each
    /// partition's in order. Waits while there are none. Cancel-safe.
    fn recv(&mut self, max: usize) -> impl Future<Output = Result<Vec<Record>, TransportError>> + Send;
}

/// One member of a consumer group.
pub trait Subscription: Send + 'static {
    /// The next record of any assigned partition. Cancel-safe.
    fn recv(&mut self) -> impl Future<Output = Result<Record, TransportError>> + Send;

    /// Marks every record of `topic`/`partition` before `next_offset` done: the next commit stores
    /// `next_offset`, so a restart resumes there.
    fn mark_done(&mut self, topic: &str, partition: i32, next_offset: i64) -> Result<(), TransportError>;

    /// The partitions this member owns now, when they changed since the last call (`None`
    /// when they did not).
    fn assignment_changed(&mut self) -> Option<Vec<(String, i32)>>;

    /// Commits what is marked done and leaves the group.
    fn close(self) -> impl Future<Output = Result<(), TransportError>> + Send;
}

/// Reads topics from the beginning up to the end offsets they had when it was opened, in a
/// consumer group of its own (so it disturbs no service). Rebuilding the view, tests and the load
/// generator read the log this way.
pub struct ReadToEnd<S> {
    sub: S,
    /// Per partition still to read: the end offset to reach.
    remaining: std::collections::HashMap<(String, i32), i64>,
}

/// How long [`ReadToEnd::next`] waits after a retriable error before it asks again.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// How long [`ReadToEnd::open`] asks again for end offsets a retriable error kept from it.
pub const ENDS_WITHIN: Duration = Duration::from_secs(30);

/// `topic`'s end offsets; a retriable error is asked again, [`RETRY_PAUSE`] apart, until
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
    /// No record came for the stall time; the last retriable error the consumer gave meanwhile,
    /// if it gave one, is the cause.
    #[error("no record for {0:?} while {1} were still to read")]
    Stalled(Duration, i64, #[source] Option<TransportError>),
}

impl<S: Subscription> ReadToEnd<S> {
    /// Takes the end offsets of `topics` now, and joins `group` (which should be new) to read them.
    /// A retriable error (a partition whose leader is being elected, as right after a topic is
    /// created) is asked again for up to [`ENDS_WITHIN`].
    pub async fn open<T: Transport<Subscription = S>>(
        transport: &T,
        group: &str,
        topics: &[&str],
    ) -> Result<ReadToEnd<S>, TransportError> {
        let mut remaining = std::collections::HashMap::new();
        for t in topics {
            for (p, end) in end_offsets_within(transport, t, ENDS_WITHIN)
                .await?
                .into_iter()
                .enumerate()
            {
                if end > 0 {
                    remaining.insert(((*t).to_owned(), p as i32), end);
                }
            }
        }
        let sub = transport.subscribe(group, topics).await?;
        Ok(ReadToEnd { sub, remaining })
    }

    /// The next record below the end offsets, or `None` once every partition is read; gives up
    /// when no such record comes for `stall` (retriable errors and records past the ends included:
    /// they do not restart the wait).
    pub async fn next(&mut self, stall: Duration) -> Result<Option<Record>, ReadError> {
        let deadline = tokio::time::Instant::now() + stall;
        let mut last_error = None;
        while !self.remaining.is_empty() {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let rec = match tokio::time::timeout(left, self.sub.recv()).await {
                Err(_) => {
                    let left_to_read = self.remaining.values().sum();
                    return Err(ReadError::Stalled(stall, left_to_read, last_error));
                }
                Ok(Err(e)) if e.is_retriable() => {
                    last_error = Some(e);
                    tokio::time::sleep(RETRY_PAUSE.min(left)).await;
                    continue;
                }
                Ok(r) => r?,
            };
            let key = (rec.topic.clone(), rec.partition);
            let Some(end) = self.remaining.get(&key).copied() else {
                continue;
            };
            if rec.offset + 1 >= end {
                self.remaining.remove(&key);
            }
            if rec.offset < end {
                return Ok(Some(rec));
            }
        }
        Ok(None)
    }

    /// Leaves the group.
    pub async fn close(self) -> Result<(), TransportError> {
        self.sub.close().await
    }
}

/// Every record of `topics` up to their current ends (a fresh group each call).
pub async fn read_all<T: Transport>(transport: &T, topics: &[&str]) -> Result<Vec<Record>, ReadError> {
    let group = fresh_group("pizza-read");
    let mut reader = ReadToEnd::open(transport, &group, topics).await?;
    let mut out = Vec::new();
    while let Some(r) = reader.next(Duration::from_secs(30)).await? {
        out.push(r);
    }
    reader.close().await?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

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
