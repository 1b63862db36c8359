//! The broker on its own simulated node, and [`SimTransport`], the services' transport to it.
//! Every request and response is a message on madsim's simulated network, so latency, loss,
//! clogged links and paused nodes apply to them.
//!
//! The client side behaves like librdkafka where the services can tell: produce retries with the
//! same sequence until it is acknowledged or `message.timeout.ms` (10 s) passes; a subscription
//! fetches ahead in the background, heartbeats every second, rejoins when its session expired, and
//! commits what is marked done every second and on close.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use framework::clock::now_ms;
use framework::transport::commits::{self, MemberOffsets, COMMIT_EVERY};
use framework::transport::errors::{self, Class, ErrorCode};
use framework::transport::unreadable::Judge;
use framework::transport::{
    Acked, Delivery, Fetched, OutRecord, RawRecord, Reader, Record, Subscription, Transport, TransportError,
    Unreadable,
};
use madsim::net::Endpoint;
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;

use crate::broker::{Broker, FetchedRecord, GroupFetch, PartFetch, ProduceError};
use crate::log::{Codec, Entry};

/// Where the broker listens: its node's address, and Kafka's port.
pub const BROKER_ADDR: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 9092));

const REQUEST_TAG: u64 = 0x006b_6166_6b61;
/// How long one request may take before the client tries again.
const RPC_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the broker holds a fetch that has nothing to return.
const FETCH_WAIT: Duration = Duration::from_millis(500);
/// How long a produce is retried (librdkafka's message.timeout.ms, as the Kafka transport sets it).
const PRODUCE_DEADLINE: Duration = Duration::from_secs(10);
/// How long the harness's own batches (undecodable ones, transactions) are asked for again.
const APPEND_DEADLINE: Duration = Duration::from_secs(300);
/// How long the harness's batch waits for its answer before it is sent again (librdkafka's
/// request.timeout.ms): a producer without idempotence writes a batch again on each retry, and
/// one every RPC_TIMEOUT through a long cut is dozens of copies (swarm seed 1009: 65 of one order).
const APPEND_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the producer waits before sending a refused record again (librdkafka's retry.backoff.ms).
const REFUSED_BACKOFF: Duration = Duration::from_millis(100);
const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);
/// Records fetched ahead of the worker (librdkafka's queued.min.messages, scaled down).
const PREFETCH: usize = 256;

#[derive(Clone)]
enum Request {
    Produce {
        producer: u64,
        seq: u64,
        record: RawRecord,
        /// Whether the producer waits for every in-sync replica (`acks=all`).
        acks_all: bool,
    },
    EndOffsets {
        topic: String,
    },
    Join {
        group: String,
        topics: Vec<String>,
    },
    Heartbeat {
        group: String,
        member: u64,
    },
    Fetch {
        group: String,
        member: u64,
        generation: u64,
        positions: Vec<(String, i32, i64)>,
        /// Partitions not to fetch now (the worker paused them).
        paused: Vec<(String, i32)>,
    },
    Commit {
        group: String,
        member: u64,
        generation: u64,
        offsets: Vec<(String, i32, i64)>,
        /// Each offset's metadata (the log it is of).
        metadata: Vec<String>,
    },
    Leave {
        group: String,
        member: u64,
        /// Why, for the trace ("" for a close).
        why: &'static str,
    },
    /// Records of `topic` past the given positions, outside any group.
    Read {
        topic: String,
        positions: Vec<(i32, i64)>,
    },
    /// Which log `topic` is (its topic id).
    LogId {
        topic: String,
    },
    /// A batch as a producer that is not ours writes it (see [`SimTransport::append_batch`]).
    Batch {
        topic: String,
        partition: i32,
        entries: Vec<Entry>,
        /// Codec, whether a client can decode it, whether its transaction was aborted.
        kind: (Codec, bool, bool),
    },
}

impl Request {
    /// Its name in Kafka's protocol, for the trace.
    fn api(&self) -> &'static str {
        match self {
            Request::Produce { .. } => "Produce",
            Request::EndOffsets { .. } => "ListOffsets",
            Request::Join { .. } => "JoinGroup",
            Request::Heartbeat { .. } => "Heartbeat",
            Request::Fetch { .. } | Request::Read { .. } => "Fetch",
            Request::Commit { .. } => "OffsetCommit",
            Request::Leave { .. } => "LeaveGroup",
            Request::LogId { .. } => "Metadata",
            Request::Batch { .. } => "Produce",
        }
    }
}

enum Response {
    Produced(Result<Acked, ProduceError>),
    EndOffsets(Result<Vec<i64>, ErrorCode>),
    Joined(u64),
    Generation(Option<u64>),
    /// What a fetch got, and the partitions the member is assigned after it; with the first
    /// fetch of a generation, what their commits say of their logs.
    Fetched(GroupFetch, Vec<(String, i32)>, Option<CommitLogs>),
    Committed(Result<usize, String>),
    Left,
    Read(Option<PartFetch>),
    LogId(Option<String>),
    Appended(Option<(i64, i64)>),
    /// The request failed with this code (a leader or coordinator moving, a member fenced).
    Failed(ErrorCode),
}

/// The broker's state and its knobs, shared with the harness (which slows it, reorders it, and
/// reads the log when the run is over).
pub struct BrokerShared {
    pub broker: Mutex<Broker>,
    /// Extra time every request takes (the "slow broker" fault).
    pub delay_ms: AtomicU64,
    /// Thousandths of the requests handled twice (the "duplicate" fault).
    pub duplicate_per_mille: AtomicU64,
    /// Millionths of the requests answered with an error Kafka sends while a leader or a
    /// coordinator moves or a member is fenced (the scenario's `errors`).
    pub errors_per_million: AtomicU64,
    appended: Notify,
}

impl BrokerShared {
    pub fn new(broker: Broker) -> Arc<BrokerShared> {
        Arc::new(BrokerShared {
            broker: Mutex::new(broker),
            delay_ms: AtomicU64::new(0),
            duplicate_per_mille: AtomicU64::new(0),
            errors_per_million: AtomicU64::new(0),
            appended: Notify::new(),
        })
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, Broker> {
        self.broker.lock().expect("broker lock")
    }
}

/// Requests the broker takes off the network at once. madsim's `recv_from_raw` costs a receiver
/// about 1 ms of simulated time per message, and waiting messages are taken out of order, so one
/// receiver capped the broker at ~1000 requests per simulated second and let a request wait past the
/// client's 2 s timeout in a busy second: a "loss" in a run with no fault. A Kafka broker has many
/// network and I/O threads for the same reason.
const RECEIVERS: usize = 64;

/// The broker's server: runs on the broker node.
pub async fn serve(shared: Arc<BrokerShared>) {
    let ep = Arc::new(Endpoint::bind(BROKER_ADDR).await.expect("bind the broker"));
    for _ in 1..RECEIVERS {
        tokio::spawn(receive(ep.clone(), shared.clone()));
    }
    receive(ep, shared).await
}

/// One receiver: takes a request, answers it on a task of its own.
async fn receive(ep: Arc<Endpoint>, shared: Arc<BrokerShared>) {
    loop {
        let Ok((msg, from)) = ep.recv_from_raw(REQUEST_TAG).await else {
            continue;
        };
        let (tag, node, req) = *msg
            .downcast::<(u64, String, Request)>()
            .expect("only requests are sent to the broker");
        let dup = shared.duplicate_per_mille.load(Ordering::Relaxed);
        if dup > 0 && madsim::rand::random::<u64>() % 1000 < dup {
            // The copy is handled as the original is; its answer is lost.
            let (copy, shared, node) = (req.clone(), shared.clone(), node.clone());
            tokio::spawn(async move {
                let _ = handle(&shared, &node, copy).await;
            });
        }
        let (ep, shared) = (ep.clone(), shared.clone());
        tokio::spawn(async move {
            let delay = shared.delay_ms.load(Ordering::Relaxed);
            if delay > 0 {
                tokio::time::sleep(Duration::from_millis(delay)).await;
            }
            // An ambiguous produce: written, and its answer lost.
            if let Some(rsp) = handle(&shared, &node, req).await {
                let _ = ep.send_to_raw(from, tag, Box::new(rsp)).await;
            }
        });
    }
}

async fn handle(shared: &BrokerShared, node: &str, req: Request) -> Option<Response> {
    let errors = shared.errors_per_million.load(Ordering::Relaxed);
    if errors > 0 && madsim::rand::random::<u64>() % 1_000_000 < errors {
        if let Some(rsp) = injected_error(shared, node, &req) {
            return Some(rsp);
        }
    }
    let rsp = match req {
        Request::Produce {
            producer,
            seq,
            record,
            acks_all,
        } => {
            let mut b = shared.lock();
            let r = b.produce_acks(now_ms(), node, (producer, seq), record, acks_all);
            let answered = b.answers(producer, seq);
            drop(b);
            if r.is_ok() {
                shared.appended.notify_waiters();
            }
            if !answered {
                return None;
            }
            Response::Produced(r)
        }
        Request::EndOffsets { topic } => {
            let b = shared.lock();
            // While leaders are being elected, a partition's end is not known (Kafka answers
            // ListOffsets with NOT_LEADER_OR_FOLLOWER).
            Response::EndOffsets(match b.end_offsets(&topic) {
                None => Err(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION),
                Some(_) if b.electing => Err(ErrorCode::NOT_LEADER_OR_FOLLOWER),
                Some(ends) => Ok(ends),
            })
        }
        Request::Join { group, topics } => {
            Response::Joined(shared.lock().join(now_ms(), node, &group, &topics))
        }
        Request::Heartbeat { group, member } => {
            Response::Generation(shared.lock().heartbeat(now_ms(), &group, member))
        }
        Request::Fetch {
            group,
            member,
            generation: seen,
            positions,
            paused,
        } => fetch(shared, &group, member, seen, &positions, &paused).await,
        Request::Commit {
            group,
            member,
            generation,
            offsets,
            metadata,
        } => {
            let commit = (&offsets[..], &metadata[..]);
            Response::Committed(shared.lock().commit(now_ms(), &group, member, generation, commit))
        }
        Request::Leave { group, member, why } => {
            shared.lock().leave_because(now_ms(), node, &group, member, why);
            Response::Left
        }
        Request::Read { topic, positions } => read(shared, node, &topic, &positions).await,
        Request::LogId { topic } => Response::LogId(shared.lock().log_id(&topic)),
        Request::Batch {
            topic,
            partition,
            entries,
            kind,
        } => {
            let batch = shared
                .lock()
                .append_batch(now_ms(), node, &topic, partition, entries, kind);
            shared.appended.notify_waiters();
            Response::Appended(batch.map(|b| (b.base, b.last)))
        }
    };
    Some(rsp)
}

/// An error Kafka answers `req` with while a partition's leader moves (produce, fetch and
/// ListOffsets), a group's coordinator moves or loads (join, heartbeat, commit), a group
/// rebalances (the broker starts one) or a member is fenced (the broker removes it): what a
/// client must ride out on every request type. `None` for requests that do not fail this way.
fn injected_error(shared: &BrokerShared, node: &str, req: &Request) -> Option<Response> {
    let pick = |codes: &[ErrorCode]| codes[madsim::rand::random::<usize>() % codes.len()];
    let leader = [
        ErrorCode::NOT_LEADER_OR_FOLLOWER,
        ErrorCode::FENCED_LEADER_EPOCH,
        ErrorCode::UNKNOWN_LEADER_EPOCH,
        ErrorCode::LEADER_NOT_AVAILABLE,
    ];
    let coordinator = [
        ErrorCode::NOT_COORDINATOR,
        ErrorCode::COORDINATOR_LOAD_IN_PROGRESS,
        ErrorCode::COORDINATOR_NOT_AVAILABLE,
    ];
    let membership = [
        ErrorCode::NOT_COORDINATOR,
        ErrorCode::COORDINATOR_LOAD_IN_PROGRESS,
        ErrorCode::REBALANCE_IN_PROGRESS,
        ErrorCode::UNKNOWN_MEMBER_ID,
    ];
    let (code, group, member) = match req {
        Request::Produce { .. } => {
            let code = pick(&[ErrorCode::NOT_LEADER_OR_FOLLOWER, ErrorCode::NOT_ENOUGH_REPLICAS]);
            (code, None, None)
        }
        Request::EndOffsets { .. } | Request::Fetch { .. } | Request::Read { .. } => {
            (pick(&leader), None, None)
        }
        Request::Join { .. } => (pick(&coordinator), None, None),
        Request::Heartbeat { group, member } | Request::Commit { group, member, .. } => {
            (pick(&membership), Some(group.as_str()), Some(*member))
        }
        Request::Leave { .. } | Request::LogId { .. } | Request::Batch { .. } => return None,
    };
    let now = now_ms();
    let mut b = shared.lock();
    match (code, group, member) {
        (ErrorCode::REBALANCE_IN_PROGRESS, Some(g), _) => b.rebalance(now, g),
        (ErrorCode::UNKNOWN_MEMBER_ID, Some(g), Some(m)) => {
            b.leave_because(now, node, g, m, " (fenced: UNKNOWN_MEMBER_ID)");
        }
        _ => {}
    }
    let t = now - b.start_ms;
    b.trace.push(format!(
        "{}.{:03} {node} {} answered {code:?}",
        t / 1000,
        t % 1000,
        req.api()
    ));
    drop(b);
    Some(match req {
        Request::Produce { .. } => Response::Produced(Err(ProduceError::Refused(code))),
        Request::EndOffsets { .. } => Response::EndOffsets(Err(code)),
        Request::Commit { .. } => Response::Committed(Err(format!("{code:?}"))),
        _ => Response::Failed(code),
    })
}

/// A group member's fetch, held for [`FETCH_WAIT`] while there is nothing to fetch.
async fn fetch(
    shared: &BrokerShared,
    group: &str,
    member: u64,
    seen: u64,
    positions: &[(String, i32, i64)],
    paused: &[(String, i32)],
) -> Response {
    let deadline = tokio::time::Instant::now() + FETCH_WAIT;
    loop {
        let appended = shared.appended.notified();
        tokio::pin!(appended);
        appended.as_mut().enable();
        let (got, assigned, logs) = {
            let mut b = shared.lock();
            let got = b.fetch(now_ms(), group, member, seen, positions, paused);
            let assigned = b.assignment(group, member);
            let fresh = matches!(got, GroupFetch::Records { generation, .. } if generation != seen);
            let logs = fresh.then(|| commit_logs(&b, group, &assigned));
            (got, assigned, logs)
        };
        match got {
            GroupFetch::Records {
                part: None,
                generation,
            } => {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                if tokio::time::timeout(left, appended).await.is_err() {
                    let empty = GroupFetch::Records {
                        generation,
                        part: None,
                    };
                    return Response::Fetched(empty, assigned, logs);
                }
            }
            other => return Response::Fetched(other, assigned, logs),
        }
    }
}

/// What the commits of a member's partitions say of their logs: per partition, its commit's
/// metadata (where it has any), and per topic, the log it is now.
#[derive(Debug)]
struct CommitLogs {
    metadata: Vec<(String, i32, String)>,
    logs: Vec<(String, Option<String>)>,
}

/// What a member starting a generation learns of its partitions' commits, with the committed
/// offsets it starts from (a Kafka consumer's OffsetFetch beside its Metadata: the simulated
/// broker starts a generation's positions at the commits itself, and says which logs they name at
/// that moment).
fn commit_logs(b: &Broker, group: &str, parts: &[(String, i32)]) -> CommitLogs {
    let topics: BTreeSet<&String> = parts.iter().map(|(t, _)| t).collect();
    CommitLogs {
        metadata: b.commit_metadata(group, parts),
        logs: topics.into_iter().map(|t| (t.clone(), b.log_id(t))).collect(),
    }
}

/// A read outside any group, held for [`FETCH_WAIT`] while there is nothing to read.
async fn read(shared: &BrokerShared, node: &str, topic: &str, positions: &[(i32, i64)]) -> Response {
    let deadline = tokio::time::Instant::now() + FETCH_WAIT;
    loop {
        let appended = shared.appended.notified();
        tokio::pin!(appended);
        appended.as_mut().enable();
        let got = shared.lock().read(now_ms(), node, topic, positions);
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if got.is_some() || tokio::time::timeout(left, appended).await.is_err() {
            return Response::Read(got);
        }
    }
}

struct Client {
    ep: Endpoint,
    broker: SocketAddr,
    node: String,
    producer: u64,
    seq: AtomicU64,
}

/// The services' transport in the simulation.
#[derive(Clone)]
pub struct SimTransport(Arc<Client>);

impl SimTransport {
    /// A client on the current node, named `node` in the trace.
    pub async fn connect(node: &str) -> SimTransport {
        let ep = Endpoint::bind("0.0.0.0:0").await.expect("bind a client endpoint");
        SimTransport(Arc::new(Client {
            ep,
            broker: BROKER_ADDR,
            node: node.to_owned(),
            producer: madsim::rand::random(),
            seq: AtomicU64::new(0),
        }))
    }

    /// One request; `None` when no answer came within `timeout` (lost, clogged, or slow).
    async fn call(&self, req: Request, timeout: Duration) -> Option<Response> {
        let c = &self.0;
        let tag: u64 = madsim::rand::random();
        c.ep.send_to_raw(c.broker, REQUEST_TAG, Box::new((tag, c.node.clone(), req)))
            .await
            .ok()?;
        let (rsp, _) = tokio::time::timeout(timeout, c.ep.recv_from_raw(tag))
            .await
            .ok()?
            .ok()?;
        Some(*rsp.downcast::<Response>().expect("responses are Response"))
    }

    /// A request retried until answered or `deadline` passes.
    async fn call_until(&self, req: impl FnMut() -> Request, deadline: Duration) -> Option<Response> {
        self.call_every(req, deadline, RPC_TIMEOUT).await
    }

    /// [`Self::call_until`], each request waited for `timeout` before it is sent again.
    async fn call_every(
        &self,
        mut req: impl FnMut() -> Request,
        deadline: Duration,
        timeout: Duration,
    ) -> Option<Response> {
        let end = tokio::time::Instant::now() + deadline;
        loop {
            if let Some(r) = self.call(req(), timeout).await {
                return Some(r);
            }
            if tokio::time::Instant::now() >= end {
                return None;
            }
        }
    }
}

fn unreachable_broker(what: &str) -> TransportError {
    errors::classify(ErrorCode::TRANSPORT, format!("{what}: the broker did not answer"))
}

impl SimTransport {
    /// Produces a record exactly as given (a null key or value, header keys that are not UTF-8):
    /// what a hostile producer sends.
    pub async fn produce_raw(&self, record: RawRecord) -> Result<Acked, TransportError> {
        let seq = self.0.seq.fetch_add(1, Ordering::Relaxed);
        let producer = self.0.producer;
        let end = tokio::time::Instant::now() + PRODUCE_DEADLINE;
        // As librdkafka keeps a message's status: not sent until a request may have reached the
        // broker unanswered; a refusal is an answer (nothing written).
        let mut may_have_been_written = false;
        let mut refused = None;
        loop {
            let req = Request::Produce {
                producer,
                seq,
                record: record.clone(),
                // What the Kafka transport sets (`acks=all`), unless a mutant says otherwise.
                acks_all: !framework::mutants::on(framework::mutants::Mutant::AcksOne),
            };
            match self.call(req, RPC_TIMEOUT).await {
                Some(Response::Produced(Ok(d))) => return Ok(d),
                // The broker's code, classed by the table the Kafka transport uses: librdkafka
                // retries a transient refusal until the message times out, and reports any
                // other at once.
                Some(Response::Produced(Err(e))) => {
                    let code = e.code();
                    if code.class() != Class::Transient {
                        return Err(errors::delivery_failed(
                            code,
                            may_have_been_written,
                            e.to_string(),
                        ));
                    }
                    refused = Some(e);
                    tokio::time::sleep(REFUSED_BACKOFF).await;
                }
                _ => may_have_been_written = true,
            }
            if tokio::time::Instant::now() >= end {
                break;
            }
        }
        let why = match refused {
            Some(e) => format!("message timed out (last refusal: {e})"),
            None => "message timed out".to_owned(),
        };
        Err(errors::delivery_failed(
            ErrorCode::MSG_TIMED_OUT,
            may_have_been_written,
            why,
        ))
    }
}

impl SimTransport {
    /// Appends `entries` to `topic`/`partition` as one batch of the given codec, decodable or
    /// not, in an aborted transaction or not (a transactional producer, a broken one): its first
    /// and last offsets. Asked again while unanswered, for up to the producer's deadline (a
    /// batch may then be written twice, as a producer without idempotence writes it).
    pub async fn append_batch(
        &self,
        topic: &str,
        partition: i32,
        entries: Vec<Entry>,
        kind: (Codec, bool, bool),
    ) -> Option<(i64, i64)> {
        let req = || Request::Batch {
            topic: topic.to_owned(),
            partition,
            entries: entries.clone(),
            kind,
        };
        // Another producer asks again until its batch is written, through a cut or a broker
        // away as long as any fault lasts (the harness's writes are not under test).
        match self
            .call_every(req, APPEND_DEADLINE, APPEND_REQUEST_TIMEOUT)
            .await
        {
            Some(Response::Appended(at)) => at,
            _ => None,
        }
    }
}

impl Transport for SimTransport {
    type Subscription = SimSubscription;
    type Reader = SimReader;

    async fn reader(&self, topic: &str) -> Result<SimReader, TransportError> {
        Ok(SimReader {
            transport: self.clone(),
            topic: topic.to_owned(),
            positions: BTreeMap::new(),
            judge: Judge::default(),
            backoff: BTreeMap::new(),
        })
    }

    async fn log_id(&self, topic: &str) -> Result<Option<String>, TransportError> {
        let req = || Request::LogId {
            topic: topic.to_owned(),
        };
        match self.call_until(req, PRODUCE_DEADLINE).await {
            Some(Response::LogId(id)) => Ok(id),
            _ => Err(unreachable_broker("metadata")),
        }
    }

    async fn watermarks(&self, topic: &str, partition: i32) -> Result<(i64, i64), TransportError> {
        let ends = self.end_offsets(topic).await?;
        let end = usize::try_from(partition)
            .ok()
            .and_then(|p| ends.get(p).copied())
            .ok_or_else(|| {
                errors::classify(
                    ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
                    format!("{topic} has no partition {partition}"),
                )
            })?;
        // Nothing is deleted from the simulated log: it starts at 0.
        Ok((0, end))
    }

    async fn produce(&self, record: OutRecord) -> Result<Acked, TransportError> {
        self.produce_raw(record.into()).await
    }

    async fn subscribe(&self, group: &str, topics: &[&str]) -> Result<SimSubscription, TransportError> {
        let topics: Vec<String> = topics.iter().map(|t| (*t).to_owned()).collect();
        let member = join(self, group, &topics).await?;
        let state = Arc::new(Mutex::new(MemberState::new(member)));
        let offsets: Offsets = Arc::new(Mutex::new(MemberOffsets::default()));
        let rejoin = Arc::new(Notify::new());
        let (tx, rx) = mpsc::channel(PREFETCH);
        let fetcher = tokio::spawn(fetch_loop(
            self.clone(),
            group.to_owned(),
            topics,
            (state.clone(), offsets.clone(), rejoin.clone()),
            tx,
        ));
        let heartbeat = tokio::spawn(heartbeat_loop(
            self.clone(),
            group.to_owned(),
            state.clone(),
            offsets.clone(),
        ));
        let committer = tokio::spawn(commit_loop(
            self.clone(),
            group.to_owned(),
            state.clone(),
            offsets.clone(),
        ));
        Ok(SimSubscription {
            transport: self.clone(),
            group: group.to_owned(),
            rejoin,
            rx,
            state,
            offsets,
            tasks: vec![fetcher, heartbeat, committer],
        })
    }

    async fn end_offsets(&self, topic: &str) -> Result<Vec<i64>, TransportError> {
        let rsp = self
            .call_until(
                || Request::EndOffsets {
                    topic: topic.to_owned(),
                },
                PRODUCE_DEADLINE,
            )
            .await;
        match rsp {
            Some(Response::EndOffsets(Ok(ends))) => Ok(ends),
            Some(Response::EndOffsets(Err(code))) => Err(errors::classify(
                code,
                format!("end offsets of {topic}: {code:?}"),
            )),
            _ => Err(unreachable_broker("end offsets")),
        }
    }
}

/// Joins `group`; a coordinator that is moving or loading is asked again (librdkafka finds the
/// coordinator again and retries), until [`PRODUCE_DEADLINE`].
async fn join(t: &SimTransport, group: &str, topics: &[String]) -> Result<u64, TransportError> {
    let end = tokio::time::Instant::now() + PRODUCE_DEADLINE;
    loop {
        let left = end.saturating_duration_since(tokio::time::Instant::now());
        let rsp = t
            .call_until(
                || Request::Join {
                    group: group.to_owned(),
                    topics: topics.to_vec(),
                },
                left,
            )
            .await;
        match rsp {
            Some(Response::Joined(m)) => return Ok(m),
            Some(Response::Failed(code)) if tokio::time::Instant::now() < end => {
                tracing::debug!(group, ?code, "join failed; asking again");
                tokio::time::sleep(REFUSED_BACKOFF).await;
            }
            _ => return Err(unreachable_broker("join group")),
        }
    }
}

/// How long a consumer leaves a partition alone after its fetch failed there (librdkafka's
/// `fetch.error.backoff.ms`).
const FETCH_ERROR_BACKOFF: Duration = Duration::from_millis(500);

/// What the consumer of one partition makes of its fetch: the deliveries for the worker (records,
/// a record given up on, a position past what is never delivered), its position updated, and
/// the partition backed off after an error. Shared by the group member and the reader.
struct PartitionReading<'a> {
    judge: &'a mut Judge,
    /// Per (topic, partition): the position, the offset of the next record it may deliver.
    positions: &'a mut BTreeMap<(String, i32), i64>,
    backoff: &'a mut BTreeMap<(String, i32), tokio::time::Instant>,
}

/// What a partition's fetch came to.
struct Taken {
    records: Vec<Record>,
    unreadable: Option<Unreadable>,
    /// The position went back to the log's start (the log ended before it).
    restarted: bool,
    /// The position, when it moved past the last record (or with none).
    passed_to: Option<i64>,
}

impl PartitionReading<'_> {
    fn take(&mut self, part: PartFetch) -> Taken {
        let key = (part.topic.clone(), part.partition);
        let from = self.positions.get(&key).copied();
        let mut taken = Taken {
            records: Vec::new(),
            unreadable: None,
            restarted: false,
            passed_to: None,
        };
        if let Some((base, code, why)) = part.error {
            if code == ErrorCode::OFFSET_OUT_OF_RANGE {
                // The topic was made again: start over at the log's start (auto.offset.reset).
                self.positions.insert(key, 0);
                taken.restarted = true;
                return taken;
            }
            let position = from.unwrap_or(base);
            match self
                .judge
                .failed(&part.topic, part.partition, position, base, &why)
            {
                Some(u) => {
                    self.positions.insert(key, u.offset + 1);
                    taken.passed_to = Some(u.offset + 1);
                    taken.unreadable = Some(u);
                }
                None => {
                    self.backoff
                        .insert(key, tokio::time::Instant::now() + FETCH_ERROR_BACKOFF);
                }
            }
            return taken;
        }
        if !part.records.is_empty() {
            self.judge.read(&part.topic, part.partition);
        }
        let after_records = part.records.last().map(|r| r.offset + 1);
        taken.records = part.records.into_iter().map(FetchedRecord::into_record).collect();
        let was = from.unwrap_or(i64::MIN);
        if part.next > after_records.unwrap_or(was).max(was) {
            taken.passed_to = Some(part.next);
        }
        self.positions.insert(key, part.next.max(from.unwrap_or(0)));
        taken
    }

    /// The member's next fetch: its positions (those the worker rewound at the log's start), and
    /// the partitions not to fetch now (paused, or backed off after an error).
    fn fetch_request(&mut self, group: &str, generation: u64, state: &Mutex<MemberState>) -> Request {
        let (member, mut paused) = {
            let mut s = state.lock().expect("state");
            for k in std::mem::take(&mut s.rewound) {
                self.positions.insert(k, 0);
            }
            (s.member, s.paused.iter().cloned().collect::<Vec<_>>())
        };
        paused.extend(self.backed_off());
        Request::Fetch {
            group: group.to_owned(),
            member,
            generation,
            positions: self
                .positions
                .iter()
                .map(|((t, p), o)| (t.clone(), *p, *o))
                .collect(),
            paused,
        }
    }

    /// What a group member's fetch of one partition gives the worker; a partition that went
    /// back to the log's start is in a new epoch in `offsets`.
    fn deliveries(&mut self, part: PartFetch, offsets: &Offsets) -> Vec<Delivery> {
        let (topic, partition) = (part.topic.clone(), part.partition);
        let taken = self.take(part);
        if taken.restarted {
            offsets
                .lock()
                .expect("offsets")
                .new_epoch(&topic, partition, None);
        }
        let mut out: Vec<Delivery> = taken.records.into_iter().map(Delivery::Record).collect();
        out.extend(taken.unreadable.map(Delivery::Unreadable));
        if let Some(offset) = taken.passed_to {
            out.push(Delivery::Position {
                topic,
                partition,
                offset,
            });
        }
        out
    }

    /// The partitions backed off now (not to fetch), forgetting those whose time is up.
    fn backed_off(&mut self) -> Vec<(String, i32)> {
        let now = tokio::time::Instant::now();
        self.backoff.retain(|_, until| *until > now);
        self.backoff.keys().cloned().collect()
    }
}

#[derive(Debug)]
struct MemberState {
    member: u64,
    /// The newest generation heard of (a heartbeat may hear of one first): records fetched in
    /// an older one are dropped.
    generation: u64,
    /// The generation whose assignment the member took (the fetcher's): its commits go in it, so
    /// a commit of work from before a rebalance the member has not taken yet is refused as
    /// stale, as a Kafka consumer never commits in a generation it has not joined.
    assigned_generation: u64,
    /// When the worker last stopped asking for a record; `None` while it asks.
    polled_at: Option<tokio::time::Instant>,
    /// The member left because the worker did not ask for [`MAX_POLL_INTERVAL`]: it joins
    /// again when the worker next asks.
    poll_expired: bool,
    /// Partitions the worker paused: not fetched until resumed, whatever the assignments between.
    paused: std::collections::BTreeSet<(String, i32)>,
    /// Partitions the worker asked to read again from the log's start.
    rewound: std::collections::BTreeSet<(String, i32)>,
    /// The assignment's version last reported to the worker by `assignment_changed`.
    assignment_seen: u64,
}

impl MemberState {
    fn new(member: u64) -> MemberState {
        MemberState {
            member,
            generation: 0,
            assigned_generation: 0,
            polled_at: Some(tokio::time::Instant::now()),
            poll_expired: false,
            paused: std::collections::BTreeSet::new(),
            rewound: std::collections::BTreeSet::new(),
            assignment_seen: 0,
        }
    }
}

/// librdkafka's `max.poll.interval.ms` (its default, which the Kafka transport keeps): a member
/// whose worker has not asked for a record for this long leaves its group, and joins again when
/// it next asks. (A worker asks whenever it has room for another record.)
pub const MAX_POLL_INTERVAL: Duration = Duration::from_secs(300);

/// In the trace, after "left": why a member left on its own.
pub const MAX_POLL_LEFT: &str = " (max.poll.interval.ms passed without a poll)";

/// Marks the worker's ask for a record over when dropped (answered or given up).
struct Polling(Arc<Mutex<MemberState>>);

impl Drop for Polling {
    fn drop(&mut self) {
        self.0.lock().expect("state").polled_at = Some(tokio::time::Instant::now());
    }
}

/// What a fetch brought, with the generation it was fetched in and its partition's epoch then.
type Fetch = (u64, u64, Delivery);

/// The member's at-least-once bookkeeping (`framework::transport::commits`, as rdkafka's transport
/// keeps it).
type Offsets = Arc<Mutex<MemberOffsets>>;

async fn fetch_loop(
    t: SimTransport,
    group: String,
    topics: Vec<String>,
    (state, offsets, rejoin): (Arc<Mutex<MemberState>>, Offsets, Arc<Notify>),
    tx: mpsc::Sender<Result<Fetch, TransportError>>,
) {
    // The consumer's own position: the generation it reads in and the next offset per partition.
    let mut generation = 0;
    let mut positions: BTreeMap<(String, i32), i64> = BTreeMap::new();
    let mut judge = Judge::default();
    let mut backoff = BTreeMap::new();
    // As librdkafka reports a lost connection to the application once, not every failed fetch.
    let mut reported = false;
    loop {
        let mut reading = PartitionReading {
            judge: &mut judge,
            positions: &mut positions,
            backoff: &mut backoff,
        };
        let req = reading.fetch_request(&group, generation, &state);
        // Each partition's epoch as the fetch went out: one read again from its start (a seek)
        // while the fetch was on its way is another epoch when it comes back.
        let asked_in = offsets.lock().expect("offsets").epochs();
        match t.call(req, RPC_TIMEOUT).await {
            Some(Response::Fetched(GroupFetch::Records { generation: g, part }, owned, logs)) => {
                reported = false;
                let rewound_since = |t: &str, p: i32| {
                    let now = offsets.lock().expect("offsets").epoch(t, p);
                    asked_in.get(&(t.to_owned(), p)).is_some_and(|e| *e != now)
                };
                // Read from where the partition was before the worker sent it back to the log's
                // start: dropped, as librdkafka drops what it fetched before a seek (its version
                // barrier). The next fetch asks from the start.
                if g == generation
                    && part
                        .as_ref()
                        .is_some_and(|p| rewound_since(&p.topic, p.partition))
                {
                    continue;
                }
                if g != generation {
                    // A rebalance: positions start again from the committed offsets. The group's
                    // protocol is eager: every partition is revoked, and those assigned again are
                    // gained in a new epoch. A pause stays with the partition, through its loss
                    // and its return, until the worker resumes it: librdkafka keeps a partition's
                    // pause across a revocation and a new assignment (librdkafka#1849, and the
                    // consumer protocol hands a partition back paused), so a worker that forgets
                    // a pause it made would never read that partition again.
                    positions.clear();
                    judge = Judge::default();
                    generation = g;
                    offsets.lock().expect("offsets").own_exactly([]);
                }
                {
                    let mut s = state.lock().expect("state");
                    s.generation = s.generation.max(g);
                    s.assigned_generation = g;
                }
                let stale = own(&group, (owned, logs), (&offsets, &state));
                // What was read from an old log's commit is dropped, and read again from the start.
                let Some(part) = part.filter(|p| !stale.contains(&(p.topic.clone(), p.partition))) else {
                    continue;
                };
                let mut reading = PartitionReading {
                    judge: &mut judge,
                    positions: &mut positions,
                    backoff: &mut backoff,
                };
                let (t, p) = (part.topic.clone(), part.partition);
                let deliveries = reading.deliveries(part, &offsets);
                let epoch = offsets.lock().expect("offsets").epoch(&t, p);
                for d in deliveries {
                    if tx.send(Ok((g, epoch, d))).await.is_err() {
                        return;
                    }
                }
            }
            Some(Response::Fetched(GroupFetch::Gone, _, _)) => {
                reported = false;
                if join_again(&t, (&group, &topics), &state, &offsets, &rejoin).await {
                    generation = 0;
                    positions.clear();
                }
            }
            // A leader moving: librdkafka asks for metadata and fetches again, telling no one.
            Some(Response::Failed(_)) => tokio::time::sleep(REFUSED_BACKOFF).await,
            _ if !reported => {
                reported = true;
                let e = errors::classify(
                    ErrorCode::TRANSPORT,
                    "broker transport failure: a fetch went unanswered",
                );
                if tx.send(Err(e)).await.is_err() {
                    return;
                }
            }
            _ => {}
        }
    }
}

/// The member owns exactly `owned` now; returns the partitions it gained whose commits are of
/// another log ([`commits_of_other_logs`], from `logs`, the generation's first fetch's).
fn own(
    group: &str,
    (owned, logs): (Vec<(String, i32)>, Option<CommitLogs>),
    (offsets, state): (&Offsets, &Mutex<MemberState>),
) -> Vec<(String, i32)> {
    let gained: Vec<(String, i32)> = {
        let mut o = offsets.lock().expect("offsets");
        let gained = owned.iter().filter(|(t, p)| !o.owns(t, *p)).cloned().collect();
        o.own_exactly(owned);
        gained
    };
    match logs {
        Some(logs) if !gained.is_empty() => commits_of_other_logs(group, (&gained, logs), (offsets, state)),
        _ => Vec::new(),
    }
}

/// The member gained `gained`: each is noted to be of the log its topic is now (its commits
/// carry it), and each whose group commit says it was made on another log (one of an old log's
/// marks, committed by name by a member that had not noticed its topic made again) is read from
/// the start in a new epoch, as the Kafka transport does on an assignment. Returns those.
fn commits_of_other_logs(
    group: &str,
    (gained, CommitLogs { metadata, logs }): (&[(String, i32)], CommitLogs),
    (offsets, state): (&Offsets, &Mutex<MemberState>),
) -> Vec<(String, i32)> {
    let log_now = |topic: &str| logs.iter().find(|(t, _)| t == topic).and_then(|(_, l)| l.clone());
    let mut o = offsets.lock().expect("offsets");
    for (topic, p) in gained {
        if let Some(log) = log_now(topic) {
            o.set_log(topic, *p, &log);
        }
    }
    let stale: Vec<(String, i32)> = metadata
        .into_iter()
        .filter(|(topic, _, m)| commits::of_another_log(m.as_bytes(), log_now(topic).as_deref()))
        .map(|(topic, p, _)| (topic, p))
        .collect();
    let mut s = state.lock().expect("state");
    for (topic, p) in &stale {
        tracing::warn!(
            group,
            topic,
            partition = p,
            "the group's commit is of another log: reading from the start"
        );
        o.new_epoch(topic, *p, log_now(topic).as_deref());
        s.rewound.insert((topic.clone(), *p));
    }
    stale
}

/// How many 10 ms steps a member that lost its partitions waits for its worker to hear of it
/// before joining again (the worker asks every `framework::worker::ASSIGNMENT_CHECK`).
const LOSS_HEARD_WITHIN_STEPS: u32 = 200;

/// The member is no longer in its group (its session expired, it left, it was fenced): it owns
/// nothing, and joins again as a new member (once the worker asks for a record, when it left
/// for want of a poll). Whether it joined.
async fn join_again(
    t: &SimTransport,
    (group, topics): (&str, &[String]),
    state: &Mutex<MemberState>,
    offsets: &Offsets,
    rejoin: &Notify,
) -> bool {
    let lost = {
        let mut o = offsets.lock().expect("offsets");
        o.own_exactly([]);
        o.version()
    };
    // The worker hears that it lost its partitions before the member joins again, as librdkafka
    // hands the lost partitions to the application's rebalance callback before it rejoins: a
    // partition it gets back is one it gains afresh (and may still be paused: the pause stays).
    for _ in 0..LOSS_HEARD_WITHIN_STEPS {
        if state.lock().expect("state").assignment_seen >= lost {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    loop {
        let asked = rejoin.notified();
        tokio::pin!(asked);
        asked.as_mut().enable();
        if !state.lock().expect("state").poll_expired {
            break;
        }
        asked.await;
    }
    let Ok(m) = join(t, group, topics).await else {
        return false;
    };
    let mut s = state.lock().expect("state");
    s.member = m;
    s.generation = 0;
    s.assigned_generation = 0;
    true
}

async fn heartbeat_loop(t: SimTransport, group: String, state: Arc<Mutex<MemberState>>, offsets: Offsets) {
    loop {
        tokio::time::sleep(HEARTBEAT_EVERY).await;
        let (member, expired, left) = {
            let s = state.lock().expect("state");
            let expired = s.polled_at.is_some_and(|t| t.elapsed() > MAX_POLL_INTERVAL);
            (s.member, expired, s.poll_expired)
        };
        if left {
            continue;
        }
        if expired {
            // As librdkafka does: leave the group (its partitions go to the others), own
            // nothing, stop heartbeating, and join again when the worker next asks.
            state.lock().expect("state").poll_expired = true;
            offsets.lock().expect("offsets").own_exactly([]);
            let req = Request::Leave {
                group: group.clone(),
                member,
                why: MAX_POLL_LEFT,
            };
            let _ = t.call(req, RPC_TIMEOUT).await;
            continue;
        }
        let req = Request::Heartbeat {
            group: group.clone(),
            member,
        };
        if let Some(Response::Generation(Some(g))) = t.call(req, RPC_TIMEOUT).await {
            let mut s = state.lock().expect("state");
            // Only forward: a late answer must not take the member back to a generation whose
            // records it already dropped.
            if s.member == member && g > s.generation {
                s.generation = g;
            }
        }
    }
}

async fn commit(t: &SimTransport, group: &str, state: &Mutex<MemberState>, offsets: &Offsets) {
    let (due, metadata) = {
        let o = offsets.lock().expect("offsets");
        let due = o.due();
        let metadata = due.iter().map(|(t, p, _)| o.metadata(t, *p)).collect();
        (due, metadata)
    };
    if due.is_empty() {
        return;
    }
    let (member, generation) = {
        let s = state.lock().expect("state");
        (s.member, s.assigned_generation)
    };
    let req = Request::Commit {
        group: group.to_owned(),
        member,
        generation,
        offsets: due.clone(),
        metadata,
    };
    match t.call(req, RPC_TIMEOUT).await {
        Some(Response::Committed(Ok(_))) => offsets.lock().expect("offsets").committed(&due),
        Some(Response::Committed(Err(e))) => tracing::debug!(group, error = %e, "commit refused"),
        _ => {}
    }
}

async fn commit_loop(t: SimTransport, group: String, state: Arc<Mutex<MemberState>>, offsets: Offsets) {
    loop {
        tokio::time::sleep(COMMIT_EVERY).await;
        commit(&t, &group, &state, &offsets).await;
    }
}

/// A consumer group membership on the simulated broker.
pub struct SimSubscription {
    transport: SimTransport,
    group: String,
    /// Wakes the fetcher to join again after the member left for want of a poll.
    rejoin: Arc<Notify>,
    rx: mpsc::Receiver<Result<Fetch, TransportError>>,
    state: Arc<Mutex<MemberState>>,
    offsets: Offsets,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for SimSubscription {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Subscription for SimSubscription {
    async fn recv(&mut self) -> Result<Delivery, TransportError> {
        {
            let mut s = self.state.lock().expect("state");
            s.polled_at = None;
            if s.poll_expired {
                s.poll_expired = false;
                self.rejoin.notify_one();
            }
        }
        let _polling = Polling(self.state.clone());
        loop {
            let (generation, epoch, delivery) = self
                .rx
                .recv()
                .await
                .ok_or_else(|| TransportError::fatal("the fetcher stopped"))??;
            // Fetched before a rebalance: dropped, as librdkafka drops what it fetched before
            // an assignment changed (its version barrier), also when the partition comes back to
            // this member. The owner, this one or another, reads it again from the commit.
            let (topic, partition) = match &delivery {
                Delivery::Record(r) => (&r.topic, r.partition),
                Delivery::Unreadable(u) => (&u.topic, u.partition),
                Delivery::Position { topic, partition, .. } => (topic, *partition),
            };
            let current = self.state.lock().expect("state").generation == generation;
            let (owned, same_epoch) = {
                let o = self.offsets.lock().expect("offsets");
                (o.owns(topic, partition), o.epoch(topic, partition) == epoch)
            };
            // Fetched before its partition was read again from the start (a new log): dropped,
            // as librdkafka drops what it fetched before a seek.
            if current && owned && same_epoch {
                return Ok(delivery);
            }
            if let Delivery::Record(rec) = &delivery {
                framework::probes::hit(
                    framework::probes::Probe::RevokedRecordDropped,
                    rec.key_str().unwrap_or_default(),
                );
            }
        }
    }

    fn mark_done(&mut self, topic: &str, partition: i32, next_offset: i64) -> Result<(), TransportError> {
        self.offsets
            .lock()
            .expect("offsets")
            .mark(topic, partition, next_offset)
    }

    fn assignment_changed(&mut self) -> Option<Vec<(String, i32)>> {
        let mut seen = self.state.lock().expect("state").assignment_seen;
        let owned = self.offsets.lock().expect("offsets").owned_since(&mut seen);
        self.state.lock().expect("state").assignment_seen = seen;
        owned
    }

    fn epoch(&self, topic: &str, partition: i32) -> u64 {
        self.offsets.lock().expect("offsets").epoch(topic, partition)
    }

    fn rewind(&mut self, topic: &str, partition: i32, log: Option<&str>) -> Result<(), TransportError> {
        self.offsets
            .lock()
            .expect("offsets")
            .new_epoch(topic, partition, log);
        self.state
            .lock()
            .expect("state")
            .rewound
            .insert((topic.to_owned(), partition));
        Ok(())
    }

    fn pause(&mut self, topic: &str, partition: i32) -> Result<(), TransportError> {
        self.state
            .lock()
            .expect("state")
            .paused
            .insert((topic.to_owned(), partition));
        Ok(())
    }

    fn resume(&mut self, topic: &str, partition: i32) -> Result<(), TransportError> {
        self.state
            .lock()
            .expect("state")
            .paused
            .remove(&(topic.to_owned(), partition));
        Ok(())
    }

    async fn close(mut self) -> Result<(), TransportError> {
        for t in self.tasks.drain(..) {
            t.abort();
        }
        commit(&self.transport, &self.group, &self.state, &self.offsets).await;
        let member = self.state.lock().expect("state").member;
        let req = Request::Leave {
            group: self.group.clone(),
            member,
            why: "",
        };
        // A lost leave costs only a session timeout of waiting for the rebalance.
        let _ = self.transport.call(req, RPC_TIMEOUT).await;
        Ok(())
    }
}

/// A reader of chosen partitions on the simulated broker: each `recv` is one read request from
/// its positions (held by the broker while there is nothing to read, as a fetch is).
pub struct SimReader {
    transport: SimTransport,
    topic: String,
    /// Followed partition -> the next offset to read.
    positions: BTreeMap<(String, i32), i64>,
    /// When an error that keeps coming back at one offset is a record to give up on.
    judge: Judge,
    /// Partitions left alone for a while after their read failed.
    backoff: BTreeMap<(String, i32), tokio::time::Instant>,
}

impl Reader for SimReader {
    fn follow(&mut self, partition: i32, from: i64) -> Result<(), TransportError> {
        self.positions
            .insert((self.topic.clone(), partition), from.max(0));
        self.judge.forget(&self.topic, partition);
        Ok(())
    }

    fn unfollow(&mut self, partition: i32) -> Result<(), TransportError> {
        self.positions.remove(&(self.topic.clone(), partition));
        self.judge.forget(&self.topic, partition);
        Ok(())
    }

    async fn recv(&mut self, max: usize) -> Result<Fetched, TransportError> {
        loop {
            let mut reading = PartitionReading {
                judge: &mut self.judge,
                positions: &mut self.positions,
                backoff: &mut self.backoff,
            };
            let backed_off = reading.backed_off();
            let asked: Vec<(i32, i64)> = self
                .positions
                .iter()
                .filter(|(k, _)| !backed_off.contains(k))
                .map(|((_, p), o)| (*p, *o))
                .collect();
            if asked.is_empty() {
                // Nothing to read now: every partition left alone, or none followed.
                match self.backoff.values().min() {
                    Some(until) => tokio::time::sleep_until(*until).await,
                    None => std::future::pending::<()>().await,
                }
                continue;
            }
            let req = Request::Read {
                topic: self.topic.clone(),
                positions: asked,
            };
            match self.transport.call(req, RPC_TIMEOUT).await {
                Some(Response::Read(None)) => continue,
                Some(Response::Read(Some(mut part))) => {
                    if part.records.len() > max.max(1) {
                        part.records.truncate(max.max(1));
                        part.next = part.records.last().map_or(part.next, |r| r.offset + 1);
                    }
                    let (topic, partition) = (part.topic.clone(), part.partition);
                    let mut reading = PartitionReading {
                        judge: &mut self.judge,
                        positions: &mut self.positions,
                        backoff: &mut self.backoff,
                    };
                    let taken = reading.take(part);
                    let mut out = Fetched {
                        records: taken.records,
                        positions: Vec::new(),
                        unreadable: taken.unreadable.into_iter().collect(),
                        restarted: Vec::new(),
                    };
                    if taken.restarted {
                        out.restarted.push((topic.clone(), partition));
                    }
                    if let Some(at) = taken.passed_to.or(out.records.last().map(|r| r.offset + 1)) {
                        out.positions.push((topic, partition, at));
                    }
                    if !out.is_empty() {
                        return Ok(out);
                    }
                }
                Some(Response::Failed(_)) => tokio::time::sleep(REFUSED_BACKOFF).await,
                _ => {
                    return Err(errors::classify(
                        ErrorCode::TRANSPORT,
                        "broker transport failure: a read went unanswered",
                    ))
                }
            }
        }
    }
}
