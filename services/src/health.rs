//! What the web app's `/health-check` reports: whether the broker answers, and whether each
//! consuming service is keeping up, judged from the broker (so it tells the truth whether the
//! services run in this process or anywhere else):
//! - the broker: a metadata request answered within [`PROBE_TIMEOUT`];
//! - each service: its consumer group's committed offsets against the ends of the topics it
//!   reads. A group with records waiting whose committed offsets have not moved for longer than
//!   its longest step (scaled) plus [`STALL_SLACK`] is stalled: stopped, crash-looping, or stuck;
//! - in `pizza demo`, also what the supervisor knows of each in-process service ([`Supervised`]):
//!   a service that stopped is reported at once, with its error.
//!
//! A group's progress is measured between checks, so the first check after start can only say
//! "no progress yet"; results are kept for [`CACHE_FOR`], so health checks cannot load the broker.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use crate::config::{ServiceName, SysConfig};
use crate::transport::kafka::KafkaTransport;

/// How long one broker request of the check may take.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a whole check may take (well under the web app's 15 s request timeout).
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a check's answer is reused.
pub const CACHE_FOR: Duration = Duration::from_secs(1);
/// Added to a service's longest step before waiting records without progress count as a stall
/// (commits are every 500 ms; a rebalance takes a few seconds).
pub const STALL_SLACK: Duration = Duration::from_secs(10);

/// What a supervisor knows of the services it runs in this process.
#[derive(Clone, Debug, Default)]
pub struct Supervised(Arc<Mutex<BTreeMap<ServiceName, ServiceState>>>);

/// A supervised service's state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServiceState {
    Running,
    /// Stopped on an error; the supervisor starts it again.
    Down {
        error: String,
        restarts: u32,
    },
}

impl Supervised {
    /// Records a service's state.
    pub fn set(&self, service: ServiceName, state: ServiceState) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(service, state);
    }

    fn problems(&self) -> Vec<String> {
        let states = self.0.lock().unwrap_or_else(|p| p.into_inner());
        states
            .iter()
            .filter_map(|(service, state)| match state {
                ServiceState::Running => None,
                ServiceState::Down { error, restarts } => Some(format!(
                    "{service}: stopped ({restarts} restarts so far): {error}"
                )),
            })
            .collect()
    }
}

/// The shop's health, as seen from a web app.
pub struct ShopHealth {
    transport: KafkaTransport,
    sys: Arc<SysConfig>,
    supervised: Option<Supervised>,
    /// Per service: how long records may wait without progress before it counts as stalled.
    stall: BTreeMap<ServiceName, Duration>,
    state: tokio::sync::Mutex<Probe>,
}

#[derive(Default)]
struct Probe {
    /// The last answer and when it was made.
    answer: Option<(Instant, Vec<String>)>,
    /// A consumer per group, never subscribed (it reads the group's committed offsets only).
    consumers: HashMap<ServiceName, Arc<BaseConsumer>>,
    /// Per service: the committed offsets' sum last seen, and since when.
    progress: HashMap<ServiceName, (i64, Instant)>,
}

impl ShopHealth {
    /// The health of the shop `sys` describes, reached through `transport`. `time_scale` scales the
    /// services' steps (as their own `--time-scale` does); `supervised`, in `pizza demo`.
    pub fn new(
        transport: KafkaTransport,
        sys: Arc<SysConfig>,
        time_scale: crate::clock::TimeScale,
        supervised: Option<Supervised>,
    ) -> ShopHealth {
        // The longest step of each service at scale 1 (spec/wire.md): assembling 4-11 s, baking
        // 8-15 s, delivering up to 2 x 14 s when pending; merge and status do not wait.
        let longest = |s: ServiceName| match s {
            ServiceName::Assemble => 11.0,
            ServiceName::Bake => 15.0,
            ServiceName::Deliver => 28.0,
            _ => 0.0,
        };
        let stall = ServiceName::CONSUMERS
            .into_iter()
            .map(|s| (s, STALL_SLACK + time_scale.scale_secs(longest(s))))
            .collect();
        ShopHealth {
            transport,
            sys,
            supervised,
            stall,
            state: tokio::sync::Mutex::new(Probe::default()),
        }
    }

    /// What is wrong, a line each; empty when all is well.
    pub async fn problems(&self) -> Vec<String> {
        let mut probe = self.state.lock().await;
        if let Some((at, answer)) = &probe.answer {
            if at.elapsed() < CACHE_FOR {
                return answer.clone();
            }
        }
        let answer = match tokio::time::timeout(CHECK_TIMEOUT, self.check(&mut probe)).await {
            Ok(answer) => answer,
            Err(_) => vec![format!(
                "broker: the health check took longer than {CHECK_TIMEOUT:?}"
            )],
        };
        probe.answer = Some((Instant::now(), answer.clone()));
        answer
    }

    async fn check(&self, probe: &mut Probe) -> Vec<String> {
        let t = self.transport.clone();
        let topics = match tokio::task::spawn_blocking(move || t.topic_partitions(PROBE_TIMEOUT)).await {
            Ok(Ok(t)) => t,
            Ok(Err(e)) => return vec![format!("broker: not reachable: {e}")],
            Err(e) => return vec![format!("broker: check failed: {e}")],
        };
        let mut problems = self
            .supervised
            .as_ref()
            .map(Supervised::problems)
            .unwrap_or_default();
        for service in ServiceName::CONSUMERS {
            if problems.iter().any(|p| p.starts_with(&format!("{service}:"))) {
                continue;
            }
            let group = self.sys.group(service).to_owned();
            let consumer = match probe.consumers.get(&service) {
                Some(c) => c.clone(),
                None => match self
                    .transport
                    .client_config()
                    .set("group.id", &group)
                    .set("enable.auto.commit", "false")
                    .create::<BaseConsumer>()
                {
                    Ok(c) => probe.consumers.entry(service).or_insert(Arc::new(c)).clone(),
                    Err(e) => {
                        problems.push(format!("{service}: cannot check group {group}: {e}"));
                        continue;
                    }
                },
            };
            let mut tpl = TopicPartitionList::new();
            for topic in self.sys.topics.consumed_by(service) {
                let partitions = topics.iter().find(|(t, _)| t == topic).map_or(0, |(_, n)| *n);
                for p in 0..partitions as i32 {
                    tpl.add_partition(topic, p);
                }
            }
            let c = consumer.clone();
            let lag = tokio::task::spawn_blocking(move || group_lag(&c, &tpl)).await;
            let (lag, committed) = match lag {
                Ok(Ok(l)) => l,
                Ok(Err(e)) => {
                    problems.push(format!("{service}: cannot read group {group}'s offsets: {e}"));
                    continue;
                }
                Err(e) => {
                    problems.push(format!("{service}: check failed: {e}"));
                    continue;
                }
            };
            let now = Instant::now();
            let since = match probe.progress.get(&service) {
                Some((seen, since)) if *seen == committed && lag > 0 => *since,
                _ => now,
            };
            probe.progress.insert(service, (committed, since));
            let still = now - since;
            if lag > 0 && still > self.stall[&service] {
                problems.push(format!(
                    "{service}: {lag} records waiting and none handled for {}s (consumer group {group})",
                    still.as_secs()
                ));
            }
        }
        problems
    }
}

/// Records waiting in a group (ends minus committed offsets), and the committed offsets' sum.
fn group_lag(
    consumer: &BaseConsumer,
    tpl: &TopicPartitionList,
) -> Result<(i64, i64), rdkafka::error::KafkaError> {
    let committed = consumer.committed_offsets(tpl.clone(), PROBE_TIMEOUT)?;
    let (mut lag, mut sum) = (0, 0);
    for e in committed.elements() {
        let (_, high) = consumer.fetch_watermarks(e.topic(), e.partition(), PROBE_TIMEOUT)?;
        let at = match e.offset() {
            Offset::Offset(o) => o,
            _ => 0,
        };
        lag += (high - at).max(0);
        sum += at;
    }
    Ok((lag, sum))
}

impl Drop for ShopHealth {
    fn drop(&mut self) {
        // A consumer's drop waits for librdkafka to close it, which never ends while the broker is
        // gone: let a thread of its own do that, so nobody waits for it.
        let consumers = std::mem::take(&mut self.state.get_mut().consumers);
        if !consumers.is_empty() {
            std::thread::spawn(move || drop(consumers));
        }
    }
}

impl crate::web::HealthCheck for ShopHealth {
    fn problems(&self) -> futures::future::BoxFuture<'_, Vec<String>> {
        Box::pin(ShopHealth::problems(self))
    }
}
