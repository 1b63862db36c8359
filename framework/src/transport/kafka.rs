//! The Kafka transport on rdkafka (librdkafka). At least once through the bookkeeping both
//! transports share (`commits::MemberOffsets`): a record's offset is marked only once it is done,
//! and what is marked is committed every 500 ms, before a revocation, and on close; a mark of a
//! partition not owned is refused. What stays here is the adapter to librdkafka.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::bindings as rd;
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, DefaultConsumerContext, Rebalance,
};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::{BorrowedHeaders, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};

use super::commits::{MemberOffsets, COMMIT_EVERY};
use super::errors::{self, ErrorCode};
use super::unreadable::Judge;
use super::KafkaProps;
use super::{
    header_from_raw, Acked, Delivery, Fetched, OutRecord, RawRecord, Reader, Subscription, Transport,
    TransportError, Unreadable,
};
use crate::error::Report;

mod consumer;
mod describe;
mod embedded;

pub use embedded::EmbeddedBroker;

use consumer::{Event, Polled};

/// librdkafka's `message.timeout.ms` unless the user sets it: 10 s, below the web app's 15 s
/// request timeout (`web::REQUEST_TIMEOUT`).
pub const MESSAGE_TIMEOUT_MS: &str = "10000";

/// How long a metadata or watermark request may take.
pub const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

/// How long leaving a consumer group may take (the final commit and the leave). librdkafka's own
/// close waits for ever for a broker that is gone; past this the member is left to expire.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// The producer's context: each delivery report goes back to the produce that waits for it, with
/// librdkafka's own word on whether a failed record may have been written.
pub struct Deliveries;

impl ClientContext for Deliveries {}

/// What a produce waits on.
type DeliveryTx = Box<tokio::sync::oneshot::Sender<Result<Acked, TransportError>>>;

impl ProducerContext for Deliveries {
    type DeliveryOpaque = DeliveryTx;

    fn delivery(&self, report: &DeliveryResult<'_>, tx: DeliveryTx) {
        let out = match report {
            Ok(m) => Ok(Acked {
                partition: m.partition(),
                offset: m.offset(),
            }),
            Err((e, m)) => {
                // SAFETY: the message is librdkafka's, valid for the callback's duration.
                let status = unsafe { rd::rd_kafka_message_status(m.ptr()) };
                let sent = status != rd::rd_kafka_msg_status_t::RD_KAFKA_MSG_STATUS_NOT_PERSISTED;
                Err(match e.rdkafka_error_code() {
                    Some(code) => errors::delivery_failed(ErrorCode(code as i32), sent, e.clone()),
                    None => classify(e.clone()),
                })
            }
        };
        let _ = tx.send(out);
    }
}

/// A Kafka cluster reached with librdkafka. Cloning shares one idempotent producer.
#[derive(Clone)]
pub struct KafkaTransport {
    producer: Arc<ThreadedProducer<Deliveries>>,
    /// The user's properties (bootstrap, security), applied to every client before ours.
    props: Arc<KafkaProps>,
    client_id: Arc<str>,
}

impl KafkaTransport {
    /// Connects a producer (lazily: librdkafka connects in the background).
    pub fn new(props: &KafkaProps, client_id: &str) -> Result<KafkaTransport, TransportError> {
        // A produce fails for good after MESSAGE_TIMEOUT_MS (the user's [kafka] section may change
        // it). It stays below the web app's request timeout, so a customer told "not placed" gets
        // the producer's final answer, not a timeout after which the order could still appear.
        let defaults = [("message.timeout.ms", MESSAGE_TIMEOUT_MS), ("linger.ms", "2")];
        // The consumers' fetch settings (the embedded broker's props carry them) would only make
        // librdkafka warn that a producer ignores them.
        let producer = base_config(props, client_id, &defaults, CONSUMER_DEFAULTS)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            // Java's default partitioner, so keys land where the original's do (docs/wire.md).
            .set("partitioner", "murmur2_random")
            // Producing to a missing topic must fail, not create it with broker defaults.
            .set("allow.auto.create.topics", "false")
            .create_with_context(Deliveries)
            .map_err(classify)?;
        Ok(KafkaTransport {
            producer: Arc::new(producer),
            props: Arc::new(props.clone()),
            client_id: client_id.into(),
        })
    }

    /// A config with the user's properties and our client id.
    pub fn client_config(&self) -> ClientConfig {
        base_config(&self.props, &self.client_id, &[], &[])
    }

    /// Waits until every produced record is acknowledged (or `timeout` passes).
    pub fn flush(&self, timeout: Duration) -> Result<(), TransportError> {
        self.producer.flush(timeout).map_err(classify)
    }

    /// Partition counts of the topics that exist, by name; waits at most `timeout` for the broker.
    pub fn topic_partitions(&self, timeout: Duration) -> Result<Vec<(String, usize)>, TransportError> {
        let md = self
            .producer
            .client()
            .fetch_metadata(None, timeout)
            .map_err(classify)?;
        Ok(md
            .topics()
            .iter()
            .filter(|t| t.error().is_none())
            .map(|t| (t.name().to_owned(), t.partitions().len()))
            .collect())
    }
}

// `produce_raw` relies on a `&BorrowedHeaders` being the address of librdkafka's headers object,
// as rdkafka 0.39 makes it (a zero-sized type behind the native pointer). Should that change, this
// stops the build instead of the pointer cast going wrong.
const _: () = assert!(std::mem::size_of::<BorrowedHeaders>() == 0);

impl KafkaTransport {
    /// Produces a record exactly as given: a null key or value, header keys that are not UTF-8
    /// (what tools and tests that play a hostile producer send). The services' [`OutRecord`]s
    /// come this way too.
    pub async fn produce_raw(&self, record: &RawRecord) -> Result<Acked, TransportError> {
        let headers = OwnedHeaders::new_with_capacity(record.headers.len());
        // rdkafka's `Header` takes the key as `&str`; librdkafka itself takes any bytes.
        let native = headers.as_borrowed() as *const BorrowedHeaders as *mut rd::rd_kafka_headers_t;
        for (k, v) in &record.headers {
            let (value, value_len) = match v {
                Some(v) => (v.as_ptr().cast(), v.len() as isize),
                None => (std::ptr::null(), 0),
            };
            // SAFETY: a `BorrowedHeaders` reference is the address of librdkafka's headers object
            // (that is how rdkafka itself passes it to librdkafka), owned by `headers`, alive here.
            // librdkafka copies the key and value, whose lengths are given explicitly.
            let err = unsafe {
                rd::rd_kafka_header_add(native, k.as_ptr().cast(), k.len() as isize, value, value_len)
            };
            if err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
                return Err(TransportError::fatal(format!("adding a header: {err:?}")));
            }
        }
        self.send(
            (&record.topic, record.partition),
            record.key.as_deref(),
            record.payload.as_deref(),
            headers,
        )
        .await
    }

    async fn send(
        &self,
        (topic, partition): (&str, Option<i32>),
        key: Option<&[u8]>,
        payload: Option<&[u8]>,
        headers: OwnedHeaders,
    ) -> Result<Acked, TransportError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let mut br: BaseRecord<'_, [u8], [u8], DeliveryTx> =
            BaseRecord::with_opaque_to(topic, Box::new(tx)).headers(headers);
        if let Some(k) = key {
            br = br.key(k);
        }
        if let Some(p) = payload {
            br = br.payload(p);
        }
        if let Some(p) = partition {
            br = br.partition(p);
        }
        // Refused before it was queued (a full queue, a record too large): never sent.
        self.producer.send(br).map_err(|(e, _)| classify(e))?;
        match rx.await {
            Ok(result) => result,
            Err(_) => Err(TransportError::maybe_written(
                "producer dropped the delivery report",
            )),
        }
    }
}

/// A consumed message's headers, read as bytes through librdkafka's C API (rdkafka's
/// `Headers::iter` unwraps the key as UTF-8 and panics on anything else), then decoded by
/// [`header_from_raw`].
fn headers_from_ptr(m: *const rd::rd_kafka_message_t) -> Vec<(String, Vec<u8>)> {
    let mut hdrs: *mut rd::rd_kafka_headers_t = std::ptr::null_mut();
    // SAFETY: `m` is the consumer's message, valid for the call; the headers belong to it.
    let err = unsafe { rd::rd_kafka_message_headers(m, &mut hdrs) };
    if err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR || hdrs.is_null() {
        return Vec::new();
    }
    // SAFETY: `hdrs` is valid while the message is.
    let count = unsafe { rd::rd_kafka_header_cnt(hdrs) };
    let mut out = Vec::with_capacity(count);
    for idx in 0..count {
        let mut name: *const std::os::raw::c_char = std::ptr::null();
        let mut value: *const std::os::raw::c_void = std::ptr::null();
        let mut size = 0usize;
        // SAFETY: `idx` < count; librdkafka fills the three out-pointers with pointers into the
        // message's headers, valid while the message is (we copy before returning).
        let err = unsafe { rd::rd_kafka_header_get_all(hdrs, idx, &mut name, &mut value, &mut size) };
        if err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR || name.is_null() {
            continue;
        }
        // SAFETY: librdkafka stores header names NUL-terminated; values as `size` bytes.
        let key = unsafe { std::ffi::CStr::from_ptr(name) }.to_bytes();
        let value =
            (!value.is_null()).then(|| unsafe { std::slice::from_raw_parts(value.cast::<u8>(), size) });
        out.push(header_from_raw(key, value));
    }
    out
}

/// Our consumers' tuning, which the user's properties may change. A fetch waits for 64 KiB or
/// 3 ms, whichever comes first. Apache Kafka answers a fetch as soon as `fetch.min.bytes` are
/// there: at 1 byte (librdkafka's default) each of the five services fetched again the moment a
/// record came, and the broker's request handling took a core; waiting 3 ms for more halved
/// end-to-end p50 and p99 at 1000 orders/s on one node (docs/figures.md). The mock cluster holds
/// every fetch for the whole wait whatever is there, so the embedded broker waits 10 ms
/// (`admin::EmbeddedBroker::props`).
const CONSUMER_DEFAULTS: &[(&str, &str)] = &[("fetch.min.bytes", "65536"), ("fetch.wait.max.ms", "3")];

/// How soon the classic group protocol notices a member gone. The consumer group protocol
/// (KIP-848, `group.protocol=consumer` in the user's properties) takes these from the broker
/// (`group.consumer.session.timeout.ms`, `group.consumer.heartbeat.interval.ms`), and librdkafka
/// refuses them on the client, so they are left out there.
const CLASSIC_GROUP_DEFAULTS: &[(&str, &str)] =
    &[("session.timeout.ms", "6000"), ("heartbeat.interval.ms", "1000")];

/// A client's config: our client id, then `defaults`, then the user's properties (which win over
/// the defaults, not over what the caller sets after), but those in `leave_out`.
fn base_config(
    props: &KafkaProps,
    client_id: &str,
    defaults: &[(&str, &str)],
    leave_out: &[(&str, &str)],
) -> ClientConfig {
    let mut cfg = ClientConfig::new();
    cfg.set("client.id", client_id);
    cfg.set("log_level", "4");
    for (k, v) in defaults {
        cfg.set(*k, *v);
    }
    for (k, v) in props
        .0
        .iter()
        .filter(|(k, _)| leave_out.iter().all(|(l, _)| l != k))
    {
        cfg.set(k, v);
    }
    cfg
}

/// librdkafka's error as the transport's, classed by the table both transports share
/// ([`errors::ErrorCode::class`]); the error is kept as the cause. An error without a code is a
/// client that could not be created or configured (final) or a local hiccup (retriable).
pub fn classify(e: KafkaError) -> TransportError {
    match e.rdkafka_error_code() {
        Some(code) => errors::classify(ErrorCode(code as i32), e),
        None if matches!(e, KafkaError::ClientCreation(_) | KafkaError::ClientConfig(..)) => {
            TransportError::fatal(e)
        }
        None => TransportError::retriable(e),
    }
}

impl Transport for KafkaTransport {
    type Subscription = KafkaSubscription;
    type Reader = KafkaReader;

    async fn reader(&self, topic: &str) -> Result<KafkaReader, TransportError> {
        // Assigned partitions only: the group id is never joined nor committed to (librdkafka
        // wants one on a consumer), and the group protocol is a member's setting.
        let consumer: BaseConsumer = base_config(
            &self.props,
            &self.client_id,
            CONSUMER_DEFAULTS,
            &[("group.protocol", ""), ("group.remote.assignor", "")],
        )
        .set("group.id", super::fresh_group("log-reader"))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        // The fetch position at the end of a partition: how a log that ends with a transaction
        // marker is known to be read to its end.
        .set("enable.partition.eof", "true")
        .set("allow.auto.create.topics", "false")
        .create()
        .map_err(classify)?;
        Ok(KafkaReader {
            consumer: Polled::new(consumer).map_err(TransportError::fatal)?,
            topic: topic.to_owned(),
            from: std::collections::HashMap::new(),
            at: std::collections::HashMap::new(),
            judge: Judge::default(),
        })
    }

    async fn watermarks(&self, topic: &str, partition: i32) -> Result<(i64, i64), TransportError> {
        let producer = self.producer.clone();
        let topic = topic.to_owned();
        tokio::task::spawn_blocking(move || {
            producer
                .client()
                .fetch_watermarks(&topic, partition, METADATA_TIMEOUT)
                .map_err(classify)
        })
        .await
        .map_err(|e| TransportError::fatal(format!("watermark task: {e}")))?
    }

    async fn log_id(&self, topic: &str) -> Result<Option<String>, TransportError> {
        let producer = self.producer.clone();
        let topic = topic.to_owned();
        tokio::task::spawn_blocking(move || log_id_of(producer.client(), &topic, METADATA_TIMEOUT))
            .await
            .map_err(|e| TransportError::fatal(format!("log id task: {e}")))?
    }

    async fn produce(&self, record: OutRecord) -> Result<Acked, TransportError> {
        // One path to librdkafka for every record, as the simulated transport has.
        self.produce_raw(&record.into()).await
    }

    async fn subscribe(&self, group: &str, topics: &[&str]) -> Result<KafkaSubscription, TransportError> {
        let offsets: Offsets = Arc::new(Mutex::new(MemberOffsets::default()));
        // Commits are ours (`commits::MemberOffsets`, the same bookkeeping as the simulation's
        // consumer): every COMMIT_EVERY, on a revocation, and on close.
        let mut defaults = CONSUMER_DEFAULTS.to_vec();
        let protocol = self.props.get("group.protocol").unwrap_or_default();
        if !protocol.trim().eq_ignore_ascii_case("consumer") {
            defaults.extend(CLASSIC_GROUP_DEFAULTS);
        }
        let consumer: BaseConsumer<AtLeastOnce> = base_config(&self.props, &self.client_id, &defaults, &[])
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            // The fetch position at the end of a partition: committed past a transaction marker.
            .set("enable.partition.eof", "true")
            .set("allow.auto.create.topics", "false")
            .create_with_context(AtLeastOnce {
                offsets: offsets.clone(),
                checked: Mutex::default(),
            })
            .map_err(classify)?;
        consumer.subscribe(topics).map_err(classify)?;
        let consumer = Arc::new(Polled::new(consumer).map_err(TransportError::fatal)?);
        let committer = tokio::spawn(commit_loop(consumer.clone(), offsets.clone()));
        Ok(KafkaSubscription {
            consumer,
            offsets,
            assignment_seen: 0,
            committer,
            at: std::collections::HashMap::new(),
            judge: Judge::default(),
        })
    }

    async fn end_offsets(&self, topic: &str) -> Result<Vec<i64>, TransportError> {
        let producer = self.producer.clone();
        let topic = topic.to_owned();
        tokio::task::spawn_blocking(move || {
            let client = producer.client();
            let md = client
                .fetch_metadata(Some(&topic), METADATA_TIMEOUT)
                .map_err(classify)?;
            let t = md
                .topics()
                .first()
                .ok_or_else(|| TransportError::fatal(format!("no metadata for topic {topic}")))?;
            if let Some(e) = t.error() {
                return Err(TransportError::fatal(format!("topic {topic}: {e:?}")));
            }
            let mut ends = Vec::with_capacity(t.partitions().len());
            for p in 0..t.partitions().len() as i32 {
                let (_, high) = client
                    .fetch_watermarks(&topic, p, METADATA_TIMEOUT)
                    .map_err(classify)?;
                ends.push(high);
            }
            Ok(ends)
        })
        .await
        .map_err(|e| TransportError::fatal(format!("watermark task: {e}")))?
    }
}

/// Which log `topic` is ([`super::LogId`] written out), each request given `timeout`.
fn log_id_of<C: ClientContext>(
    client: &rdkafka::client::Client<C>,
    topic: &str,
    timeout: Duration,
) -> Result<Option<String>, TransportError> {
    let md = client.fetch_metadata(Some(topic), timeout).map_err(classify)?;
    let cluster = client.fetch_cluster_id(timeout);
    // Topic ids come from DescribeTopics, which an admin client sends to the controller;
    // librdkafka's mock cluster names none (its brokers are 1.., its controller 0), and then
    // only the cluster id says which log it is.
    // SAFETY: `client` is alive for the call.
    let controller = unsafe { rd::rd_kafka_controllerid(client.native_ptr(), 1000) };
    let topic_id = if md.brokers().iter().any(|b| b.id() == controller) {
        // SAFETY: as above.
        unsafe { describe::topic_id(client.native_ptr(), topic, timeout) }?
    } else {
        None
    };
    Ok(super::LogId::new(cluster.as_deref(), topic_id.as_deref()).map(|l| l.to_string()))
}

type Offsets = Arc<Mutex<MemberOffsets>>;

/// How long an assignment's check of its commits' logs may take in all (it holds the consumer's
/// poll, inside librdkafka's rebalance callback), and each request of it at most.
const ASSIGN_CHECK_BUDGET: Duration = Duration::from_secs(5);
const ASSIGN_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// What an assignment's check found, for when the assignment is taken: each partition's log,
/// and those to read from the start.
#[derive(Default)]
struct Checked {
    logs: Vec<(String, i32, String)>,
    from_start: Vec<(String, i32)>,
}

/// The consumer's context: carries out the shared bookkeeping on librdkafka's callbacks. Before
/// partitions are revoked, what is due for them is committed (synchronously, as librdkafka
/// requires inside the callback); after an assignment the partitions are owned; a commit that
/// succeeded is recorded.
pub struct AtLeastOnce {
    offsets: Offsets,
    checked: Mutex<Checked>,
}

impl ClientContext for AtLeastOnce {}

impl consumer::BeforeAssign for AtLeastOnce {
    /// Which log each partition assigned is now, for its commits to carry; a partition whose
    /// group commit says it was made on another log (one of an old log's marks, committed by
    /// name by a member that had not noticed its topic made again: `commits::of_another_log`)
    /// starts at the log's start. When the check cannot be made within [`ASSIGN_CHECK_BUDGET`]
    /// (the coordinator or the metadata out of reach, a partition's commit not read), it is said,
    /// those partitions are read from their commits as they are, and their commits name no log,
    /// as every commit did before this check.
    fn before_assign(&self, base: &BaseConsumer<Self>, assigned: &mut TopicPartitionList) {
        let until = std::time::Instant::now() + ASSIGN_CHECK_BUDGET;
        let left = || {
            until
                .saturating_duration_since(std::time::Instant::now())
                .min(ASSIGN_CHECK_TIMEOUT)
        };
        let mut logs: std::collections::BTreeMap<String, Option<String>> = Default::default();
        for (t, _) in partitions_of(assigned) {
            if let std::collections::btree_map::Entry::Vacant(v) = logs.entry(t) {
                let log = match log_id_of(base.client(), v.key(), left()) {
                    Ok(log) => log,
                    Err(e) => {
                        tracing::warn!(topic = v.key(), error = %e, "could not ask which log the topic is: its commits are read as they are");
                        None
                    }
                };
                v.insert(log);
            }
        }
        let committed = match base.committed_offsets(assigned.clone(), left()) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "could not ask which logs the commits are of: reading on from them");
                return;
            }
        };
        let failed: Vec<(String, i32)> = committed
            .elements()
            .iter()
            .filter(|e| e.error().is_err())
            .map(|e| (e.topic().to_owned(), e.partition()))
            .collect();
        let mut checked = Checked::default();
        for (t, p, meta) in consumer::metadata_of(&committed) {
            let Some(now) = logs.get(&t).cloned().flatten() else {
                continue;
            };
            if failed.contains(&(t.clone(), p)) {
                tracing::warn!(
                    topic = t,
                    partition = p,
                    "could not read the partition's commit: reading on from it"
                );
                continue;
            }
            let stale = super::commits::of_another_log(&meta, Some(&now));
            if stale && assigned.set_partition_offset(&t, p, Offset::Beginning).is_ok() {
                tracing::warn!(
                    topic = t,
                    partition = p,
                    "the group's commit is of another log: reading from the start"
                );
                checked.from_start.push((t.clone(), p));
            }
            checked.logs.push((t, p, now));
        }
        *lock_checked(&self.checked) = checked;
    }
}

fn lock_checked(c: &Mutex<Checked>) -> std::sync::MutexGuard<'_, Checked> {
    c.lock().unwrap_or_else(|p| p.into_inner())
}

impl ConsumerContext for AtLeastOnce {
    fn pre_rebalance(&self, base: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let (due, list) = {
                let mut o = lock(&self.offsets);
                let parts = partitions_of(tpl);
                let metadata: Vec<String> = parts.iter().map(|(t, p)| o.metadata(t, *p)).collect();
                let due = o.revoke(&parts);
                let meta = |t: &str, p: i32| {
                    let at = parts.iter().position(|(pt, pp)| pt == t && *pp == p);
                    at.map(|i| metadata[i].clone()).unwrap_or_default()
                };
                let list = list_of(&due, meta);
                (due, list)
            };
            if let Some(list) = list {
                match base.commit(&list, CommitMode::Sync) {
                    Ok(()) => lock(&self.offsets).committed(&due),
                    Err(e) => {
                        tracing::warn!(error = %e, "commit on revocation failed: those records come again")
                    }
                }
            }
        }
    }

    fn post_rebalance(&self, _base: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            let checked = std::mem::take(&mut *lock_checked(&self.checked));
            let mut offsets = lock(&self.offsets);
            offsets.assign(partitions_of(tpl));
            for (t, p, log) in &checked.logs {
                offsets.set_log(t, *p, log);
            }
            // The new log's start is committed at once, over the old log's mark.
            for (t, p) in &checked.from_start {
                let log = checked.logs.iter().find(|(lt, lp, _)| lt == t && lp == p);
                offsets.new_epoch(t, *p, log.map(|(_, _, l)| l.as_str()));
            }
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        if let Err(e) = &result {
            // E.g. the coordinator fenced this member (its session ended while it could not be
            // reached). What this commit carried goes with the next one while the partitions are
            // still ours; otherwise their next owner reads those records again. (A failed commit
            // on revocation is said here and in pre_rebalance.)
            tracing::warn!(
                error = %e,
                partitions = offsets.count(),
                "commit failed: the next commit carries it, or the partitions' next owner reads it again"
            );
            return;
        }
        let done: Vec<(String, i32, i64)> = offsets
            .elements()
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(o) => Some((e.topic().to_owned(), e.partition(), o)),
                _ => None,
            })
            .collect();
        lock(&self.offsets).committed(&done);
    }
}

fn lock(offsets: &Offsets) -> std::sync::MutexGuard<'_, MemberOffsets> {
    offsets.lock().unwrap_or_else(|p| p.into_inner())
}

fn partitions_of(tpl: &TopicPartitionList) -> Vec<(String, i32)> {
    tpl.elements()
        .iter()
        .map(|e| (e.topic().to_owned(), e.partition()))
        .collect()
}

/// The offsets to commit as librdkafka's list, each with its metadata (the log it is of:
/// `MemberOffsets::metadata`); `None` when there are none.
fn list_of(due: &[(String, i32, i64)], metadata: impl Fn(&str, i32) -> String) -> Option<TopicPartitionList> {
    if due.is_empty() {
        return None;
    }
    let mut tpl = TopicPartitionList::with_capacity(due.len());
    for (t, p, o) in due {
        tpl.add_partition_offset(t, *p, Offset::Offset(*o)).ok()?;
        let meta = metadata(t, *p);
        if !meta.is_empty() {
            tpl.find_partition(t, *p)?.set_metadata(meta);
        }
    }
    Some(tpl)
}

/// What is due to commit now, as librdkafka's list with its metadata.
fn due_list(offsets: &Offsets) -> Option<TopicPartitionList> {
    let o = lock(offsets);
    list_of(&o.due(), |t, p| o.metadata(t, p))
}

/// Commits what is due every COMMIT_EVERY (asynchronously: the commit callback records it).
async fn commit_loop(consumer: Arc<Polled<AtLeastOnce>>, offsets: Offsets) {
    loop {
        tokio::time::sleep(COMMIT_EVERY).await;
        if let Some(list) = due_list(&offsets) {
            if let Err(e) = consumer.consumer().commit(&list, CommitMode::Async) {
                tracing::warn!(error = %e, "commit failed; the next one carries it");
            }
        }
    }
}

/// A consumer group member on librdkafka, its queue polled by `Polled` (its own queue handle).
pub struct KafkaSubscription {
    consumer: Arc<Polled<AtLeastOnce>>,
    offsets: Offsets,
    /// The assignment's version last reported by `assignment_changed`.
    assignment_seen: u64,
    committer: tokio::task::JoinHandle<()>,
    /// Per partition read, the offset of the next record it would deliver.
    at: std::collections::HashMap<(String, i32), i64>,
    /// When an error that keeps coming back at one offset is a record to give up on.
    judge: Judge,
}

/// What a consumer error means to a member or a reader: a record given up on, one to wait on,
/// or the consumer's own trouble.
enum Judged {
    GaveUp(Unreadable),
    Again,
    Failed(TransportError),
}

/// An error event of a consumer at `at` (its positions per partition), judged: an error about
/// a record's content at an offset counts towards giving that record up; any other is the
/// consumer's (classed by the shared table).
fn judge_error(
    judge: &mut Judge,
    at: &std::collections::HashMap<(String, i32), i64>,
    code: ErrorCode,
    fatal: bool,
    where_: Option<(String, i32, i64)>,
    message: String,
) -> Judged {
    match where_ {
        Some((topic, partition, offset)) if code.unreadable_record() && !fatal => {
            let position = at.get(&(topic.clone(), partition)).copied().unwrap_or(offset);
            tracing::debug!(topic, partition, offset, position, error = %message, "a record that cannot be read");
            match judge.failed(&topic, partition, position, offset, &message) {
                Some(u) => Judged::GaveUp(u),
                None => Judged::Again,
            }
        }
        _ if fatal => Judged::Failed(TransportError::fatal(message)),
        _ => Judged::Failed(errors::classify(code, message)),
    }
}

impl KafkaSubscription {
    /// Moves past a record given up on: the consumer seeks one offset on.
    fn pass(&mut self, u: &Unreadable) {
        let next = u.offset + 1;
        self.at.insert((u.topic.clone(), u.partition), next);
        if let Err(e) =
            self.consumer
                .consumer()
                .seek(&u.topic, u.partition, Offset::Offset(next), Duration::ZERO)
        {
            // Not ours any more (a rebalance): its next owner meets it again.
            tracing::warn!(topic = %u.topic, partition = u.partition, error = %e, "could not seek past a record that cannot be read");
        }
    }
}

impl Subscription for KafkaSubscription {
    async fn recv(&mut self) -> Result<Delivery, TransportError> {
        loop {
            match self.consumer.next().await {
                Event::Record(r) => {
                    self.judge.read(&r.topic, r.partition);
                    self.at.insert((r.topic.clone(), r.partition), r.offset + 1);
                    return Ok(Delivery::Record(r));
                }
                Event::Eof {
                    topic,
                    partition,
                    offset,
                } => {
                    let at = self.at.entry((topic.clone(), partition)).or_insert(offset);
                    *at = (*at).max(offset);
                    return Ok(Delivery::Position {
                        topic,
                        partition,
                        offset,
                    });
                }
                Event::Error {
                    at: Some((topic, partition, _)),
                    code,
                    message,
                    ..
                } if code.position_reset() => {
                    // The log ended before the position (a topic made again): librdkafka reads
                    // it from its start; what was received before is of another log.
                    tracing::warn!(topic, partition, error = %message, "the position went back to the log's start");
                    lock(&self.offsets).new_epoch(&topic, partition, None);
                    self.at.remove(&(topic.clone(), partition));
                }
                Event::Error {
                    code,
                    fatal,
                    at,
                    message,
                } => match judge_error(&mut self.judge, &self.at, code, fatal, at, message) {
                    Judged::GaveUp(u) => {
                        self.pass(&u);
                        return Ok(Delivery::Unreadable(u));
                    }
                    Judged::Again => {}
                    Judged::Failed(e) => return Err(e),
                },
            }
        }
    }

    fn mark_done(&mut self, topic: &str, partition: i32, next_offset: i64) -> Result<(), TransportError> {
        lock(&self.offsets).mark(topic, partition, next_offset)
    }

    fn assignment_changed(&mut self) -> Option<Vec<(String, i32)>> {
        let owned = lock(&self.offsets).owned_since(&mut self.assignment_seen)?;
        self.at.retain(|k, _| owned.contains(k));
        Some(owned)
    }

    fn epoch(&self, topic: &str, partition: i32) -> u64 {
        lock(&self.offsets).epoch(topic, partition)
    }

    fn rewind(&mut self, topic: &str, partition: i32, log: Option<&str>) -> Result<(), TransportError> {
        lock(&self.offsets).new_epoch(topic, partition, log);
        self.at.remove(&(topic.to_owned(), partition));
        self.judge.forget(topic, partition);
        self.consumer
            .consumer()
            .seek(topic, partition, Offset::Beginning, Duration::ZERO)
            .map_err(classify)
    }

    fn pause(&mut self, topic: &str, partition: i32) -> Result<(), TransportError> {
        let mut tpl = TopicPartitionList::with_capacity(1);
        tpl.add_partition(topic, partition);
        self.consumer.consumer().pause(&tpl).map_err(classify)
    }

    fn resume(&mut self, topic: &str, partition: i32) -> Result<(), TransportError> {
        let mut tpl = TopicPartitionList::with_capacity(1);
        tpl.add_partition(topic, partition);
        self.consumer.consumer().resume(&tpl).map_err(classify)
    }

    async fn close(self) -> Result<(), TransportError> {
        self.committer.abort();
        let _ = self.committer.await;
        let (consumer, offsets) = (self.consumer, self.offsets);
        let closing = tokio::task::spawn_blocking(move || {
            let committed = match due_list(&offsets)
                .map(|list| consumer.consumer().commit(&list, CommitMode::Sync))
            {
                // The group is moving these partitions (another member joined or left as this
                // one closes): their next owner reads what this commit carried again, as after
                // a crash. Leaving is still clean.
                Some(Err(e))
                    if e.rdkafka_error_code()
                        .is_some_and(|c| ErrorCode(c as i32).membership_moved()) =>
                {
                    tracing::warn!(error = %e, "the final commit was refused while the group rebalances: those records come again to their next owner");
                    Ok(())
                }
                Some(r) => r.map_err(classify),
                None => Ok(()),
            };
            consumer.consumer().unsubscribe();
            // Dropping the consumer closes it: librdkafka leaves the group.
            drop(consumer);
            committed
        });
        match tokio::time::timeout(CLOSE_TIMEOUT, closing).await {
            Ok(joined) => joined.map_err(|e| TransportError::fatal(format!("close task: {e}")))?,
            Err(_) => Err(TransportError::retriable(format!(
                "leaving the group took longer than {CLOSE_TIMEOUT:?}; the broker will expire the membership"
            ))),
        }
    }
}

/// A reader of chosen partitions on librdkafka, assigned, never subscribed.
pub struct KafkaReader {
    consumer: Polled<DefaultConsumerContext>,
    topic: String,
    /// Per followed partition, the offset it was followed from: a record of it below that was
    /// fetched before it was followed again, and is passed over.
    from: std::collections::HashMap<i32, i64>,
    /// Per followed partition, the offset of the next record it would deliver.
    at: std::collections::HashMap<(String, i32), i64>,
    /// When an error that keeps coming back at one offset is a record to give up on.
    judge: Judge,
}

impl KafkaReader {
    fn one(&self, partition: i32, offset: Offset) -> Result<TopicPartitionList, TransportError> {
        let mut tpl = TopicPartitionList::with_capacity(1);
        tpl.add_partition_offset(&self.topic, partition, offset)
            .map_err(classify)?;
        Ok(tpl)
    }

    /// Takes one event into `out`; `Err` for the reader's own trouble.
    fn take(&mut self, event: Event, out: &mut Fetched) -> Result<(), TransportError> {
        match event {
            Event::Record(r) => {
                let Some(from) = self.from.get(&r.partition).copied() else {
                    return Ok(());
                };
                if r.offset < from {
                    return Ok(());
                }
                self.judge.read(&r.topic, r.partition);
                self.moved(r.partition, r.offset + 1, out);
                out.records.push(r);
            }
            Event::Eof {
                partition, offset, ..
            } => {
                if self.from.get(&partition).is_some_and(|from| offset >= *from) {
                    self.moved(partition, offset, out);
                }
            }
            Event::Error {
                code,
                fatal,
                at,
                message,
            } => {
                let followed = at.as_ref().is_none_or(|(_, p, _)| self.from.contains_key(p));
                if !followed {
                    return Ok(());
                }
                if let Some((topic, partition, _)) = at.as_ref().filter(|_| code.position_reset()) {
                    tracing::warn!(topic, partition, error = %message, "the reader's position went back to the log's start");
                    out.restarted.push((topic.clone(), *partition));
                    return Ok(());
                }
                match judge_error(&mut self.judge, &self.at, code, fatal, at, message) {
                    Judged::GaveUp(u) => {
                        let tpl = self.one(u.partition, Offset::Offset(u.offset + 1))?;
                        self.consumer
                            .consumer()
                            .seek_partitions(tpl, Duration::ZERO)
                            .map_err(classify)?;
                        self.moved(u.partition, u.offset + 1, out);
                        out.unreadable.push(u);
                    }
                    Judged::Again => {}
                    Judged::Failed(e) => return Err(e),
                }
            }
        }
        Ok(())
    }

    /// `partition`'s position moved to `to`.
    fn moved(&mut self, partition: i32, to: i64, out: &mut Fetched) {
        let at = self.at.entry((self.topic.clone(), partition)).or_insert(to);
        *at = (*at).max(to);
        let to = *at;
        match out.positions.iter_mut().find(|(_, p, _)| *p == partition) {
            Some((.., was)) => *was = to,
            None => out.positions.push((self.topic.clone(), partition, to)),
        }
    }
}

impl Reader for KafkaReader {
    fn follow(&mut self, partition: i32, from: i64) -> Result<(), TransportError> {
        if self.from.contains_key(&partition) {
            self.unfollow(partition)?;
        }
        let tpl = self.one(partition, Offset::Offset(from))?;
        self.consumer
            .consumer()
            .incremental_assign(&tpl)
            .map_err(classify)?;
        self.from.insert(partition, from);
        Ok(())
    }

    fn unfollow(&mut self, partition: i32) -> Result<(), TransportError> {
        if self.from.remove(&partition).is_some() {
            let tpl = self.one(partition, Offset::Invalid)?;
            self.consumer
                .consumer()
                .incremental_unassign(&tpl)
                .map_err(classify)?;
            self.at.remove(&(self.topic.clone(), partition));
            self.judge.forget(&self.topic, partition);
        }
        Ok(())
    }

    async fn recv(&mut self, max: usize) -> Result<Fetched, TransportError> {
        let mut out = Fetched::default();
        while out.is_empty() {
            let event = self.consumer.next().await;
            self.take(event, &mut out)?;
        }
        while out.records.len() < max.max(1) {
            let Some(event) = self.consumer.poll() else {
                break;
            };
            if let Err(e) = self.take(event, &mut out) {
                // Taken off librdkafka's queue: a lasting condition comes again with the next
                // recv, a passing one is gone.
                tracing::warn!(error = %Report(&e), topic = %self.topic, "reader error after records");
                break;
            }
        }
        Ok(out)
    }
}
