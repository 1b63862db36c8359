//! Health by consumer lag: whether the broker answers, and whether each consuming service keeps
//! up, judged from the broker (so it tells the truth whether the services run in this process or
//! anywhere else):
//! - the broker: a metadata request answered within [`PROBE_TIMEOUT`];
//! - each service: its consumer group's committed offsets against the ends of the topics it
//!   reads, partition by partition. A partition with records waiting whose committed offset has
//!   not moved for longer than the service's stall window ([`Watched::stall`]: its longest step
//!   plus [`STALL_SLACK`], say) is stalled: the service stopped, crash-looping, or stuck on it (a
//!   sum over partitions would hide one stuck partition while the others move);
//! - where a supervisor runs the services in this process, what it knows of each
//!   ([`Supervised`]): a service that stopped is reported at once, with its error.
//!
//! A group's progress is measured between checks, so the first check after start can only say
//! "no progress yet"; results are kept for [`CACHE_FOR`], so health checks cannot load the broker.
//!
//! ```no_run
//! # async fn example(transport: framework::transport::kafka::KafkaTransport) {
//! use std::time::Duration;
//! use framework::health::{GroupHealth, Watched};
//!
//! let tally = Watched {
//!     service: "tally".into(),
//!     group: "tally".into(),
//!     topics: vec!["tally-in".into()],
//!     stall: Duration::from_secs(10),
//! };
//! let health = GroupHealth::new(transport, vec![tally], None);
//! for problem in health.problems().await {
//!     println!("{problem}");
//! }
//! # }
//! ```

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::BaseConsumer;

use crate::error::Report;
use crate::groups::{group_lag, group_reader, GroupLag};
use crate::supervised::Supervised;
use crate::transport::kafka::KafkaTransport;

/// How long one broker request of the check may take.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a check waits for its measurement (well under a web request's timeout).
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a check's answer is reused.
pub const CACHE_FOR: Duration = Duration::from_secs(1);
/// What a service's stall window usually adds to its longest step (commits are every 500 ms; a
/// rebalance takes a few seconds).
pub const STALL_SLACK: Duration = Duration::from_secs(10);

/// A consuming service whose group the check watches.
#[derive(Clone, Debug)]
pub struct Watched {
    /// Its name, as the supervisor knows it and the problems say it.
    pub service: String,
    /// Its consumer group.
    pub group: String,
    /// The topics it reads in that group.
    pub topics: Vec<String>,
    /// How long records may wait without progress before it counts as stalled.
    pub stall: Duration,
}

/// The services' health, as seen from the broker (and the supervisor, where there is one).
pub struct GroupHealth {
    transport: KafkaTransport,
    watched: Arc<Vec<Watched>>,
    supervised: Option<Supervised>,
    /// Per service, a consumer that reads its group's committed offsets (made on first use).
    readers: Arc<Mutex<BTreeMap<String, BaseConsumer>>>,
    state: tokio::sync::Mutex<Probe>,
}

#[derive(Default)]
struct Probe {
    /// The last answer and when it was made.
    answer: Option<(Instant, Vec<String>)>,
    /// A measurement that outlived its check: the next check waits for it instead of starting
    /// another, so a slow broker never has more than one measurement's requests at once.
    running: Option<tokio::task::JoinHandle<Measured>>,
    /// Per service, per topic and partition: its committed offset last seen, and since when
    /// records have waited at it (`None` while none waits or after progress).
    progress: BTreeMap<String, Waiting>,
}

/// Per topic and partition: the committed offset last seen, and since when records wait at it.
type Waiting = BTreeMap<(String, i32), (i64, Option<Instant>)>;

/// Most stalled partitions named per service (the rest are counted).
const STALLED_NAMED: usize = 3;

/// The partitions of `lag` whose records have waited without progress for longer than `stall`
/// at `now`, with how many wait and for how long; `seen` is brought up to date.
fn stalled(
    seen: &mut Waiting,
    lag: &GroupLag,
    now: Instant,
    stall: Duration,
) -> Vec<(String, i32, i64, Duration)> {
    seen.retain(|k, _| lag.partitions.contains_key(k));
    let mut out = Vec::new();
    for (k, p) in &lag.partitions {
        let (committed, waiting) = seen.entry(k.clone()).or_insert((p.committed, None));
        if p.lag == 0 || *committed != p.committed {
            // Nothing waits, or the group committed since: it keeps up.
            *committed = p.committed;
            *waiting = (p.lag > 0).then_some(now);
        } else if waiting.is_none() {
            *waiting = Some(now);
        }
        let still = waiting.map_or(Duration::ZERO, |since| now - since);
        if still > stall {
            out.push((k.0.clone(), k.1, p.lag, still));
        }
    }
    out
}

/// What one measurement found: per service its group's position or why it could not be read; or
/// the broker's silence.
type Measured = Result<BTreeMap<String, Result<GroupLag, String>>, String>;

impl GroupHealth {
    /// The health of the `watched` services' groups, reached through `transport`; `supervised`
    /// where a supervisor runs them in this process.
    pub fn new(
        transport: KafkaTransport,
        watched: Vec<Watched>,
        supervised: Option<Supervised>,
    ) -> GroupHealth {
        GroupHealth {
            transport,
            watched: Arc::new(watched),
            supervised,
            readers: Arc::default(),
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
        let answer = self.check(&mut probe).await;
        probe.answer = Some((Instant::now(), answer.clone()));
        answer
    }

    async fn check(&self, probe: &mut Probe) -> Vec<String> {
        let down: Vec<String> = self
            .supervised
            .as_ref()
            .map(Supervised::problems)
            .unwrap_or_default();
        let mut job = match probe.running.take() {
            Some(job) => job,
            None => {
                let (transport, watched, readers) =
                    (self.transport.clone(), self.watched.clone(), self.readers.clone());
                tokio::task::spawn_blocking(move || measure(&transport, &watched, &readers))
            }
        };
        let measured = match tokio::time::timeout(CHECK_TIMEOUT, &mut job).await {
            Ok(Ok(m)) => m,
            Ok(Err(e)) => Err(format!("check failed: {e}")),
            Err(_) => {
                probe.running = Some(job);
                Err(format!("no answer within {CHECK_TIMEOUT:?}"))
            }
        };
        let mut groups = match measured {
            Ok(g) => g,
            Err(e) => return vec![format!("broker: not reachable: {e}")],
        };
        let mut problems = down;
        let now = Instant::now();
        for w in self.watched.iter() {
            let (service, group) = (&w.service, &w.group);
            let Some(lag) = groups.remove(service) else {
                continue;
            };
            if self.supervised.as_ref().is_some_and(|s| s.is_down(service)) {
                // Down: its progress starts again from nothing once it runs.
                probe.progress.remove(service);
                continue;
            }
            let lag = match lag {
                Ok(l) => l,
                Err(e) => {
                    problems.push(format!("{service}: cannot read consumer group {group}: {e}"));
                    continue;
                }
            };
            let seen = probe.progress.entry(service.clone()).or_default();
            let stuck = stalled(seen, &lag, now, w.stall);
            if stuck.is_empty() {
                continue;
            }
            let named: Vec<String> = stuck
                .iter()
                .take(STALLED_NAMED)
                .map(|(t, p, n, still)| {
                    format!(
                        "{n} records waiting on {t}/{p}, none handled for {}s",
                        still.as_secs()
                    )
                })
                .collect();
            let more = stuck.len().saturating_sub(STALLED_NAMED);
            let more = if more > 0 {
                format!(" and {more} partitions more")
            } else {
                String::new()
            };
            problems.push(format!(
                "{service}: {}{more} (consumer group {group})",
                named.join("; ")
            ));
        }
        problems
    }
}

/// One measurement, on a blocking thread: the topics' partitions, then each watched service's
/// group position. Every request waits at most [`PROBE_TIMEOUT`].
fn measure(
    transport: &KafkaTransport,
    watched: &[Watched],
    readers: &Mutex<BTreeMap<String, BaseConsumer>>,
) -> Measured {
    let topics = transport
        .topic_partitions(PROBE_TIMEOUT)
        .map_err(|e| Report(&e).to_string())?;
    let mut readers = readers.lock().unwrap_or_else(|p| p.into_inner());
    let mut out = BTreeMap::new();
    for w in watched {
        let reader = match readers.entry(w.service.clone()) {
            std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::btree_map::Entry::Vacant(v) => match group_reader(transport, &w.group) {
                Ok(r) => v.insert(r),
                Err(e) => {
                    out.insert(w.service.clone(), Err(Report(&e).to_string()));
                    continue;
                }
            },
        };
        let read: Vec<(&str, usize)> = w
            .topics
            .iter()
            .map(|t| {
                let n = topics.iter().find(|(name, _)| name == t).map_or(0, |(_, n)| *n);
                (t.as_str(), n)
            })
            .collect();
        out.insert(
            w.service.clone(),
            group_lag(reader, &read, PROBE_TIMEOUT).map_err(|e| Report(&e).to_string()),
        );
    }
    Ok(out)
}

impl Drop for GroupHealth {
    fn drop(&mut self) {
        // A consumer's drop waits for librdkafka to close it, which never ends while the broker is
        // gone: let a thread of its own do that, so nobody waits for it.
        // (A measurement still running holds them; they go when it ends, on its thread.)
        if let Ok(mut readers) = self.readers.try_lock() {
            let readers = std::mem::take(&mut *readers);
            if !readers.is_empty() {
                std::thread::spawn(move || drop(readers));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::groups::PartitionLag;

    fn lag(parts: &[(i32, i64, i64)]) -> GroupLag {
        let mut l = GroupLag::default();
        for (p, committed, waiting) in parts {
            l.lag += waiting;
            l.partitions.insert(
                ("t".to_owned(), *p),
                PartitionLag {
                    committed: *committed,
                    lag: *waiting,
                },
            );
        }
        l
    }

    /// One partition stuck while the others move is a stall (issue 25, defect 8: the sum of the
    /// committed offsets moved, and hid it).
    #[test]
    fn a_stuck_partition_is_a_stall_while_the_others_move() {
        let mut seen = Waiting::new();
        let stall = Duration::from_secs(10);
        let t0 = Instant::now();
        assert!(stalled(&mut seen, &lag(&[(0, 5, 3), (1, 7, 4)]), t0, stall).is_empty());
        // Partition 0 moves on every check; partition 1 does not, with records waiting.
        let later = t0 + Duration::from_secs(11);
        let stuck = stalled(&mut seen, &lag(&[(0, 9, 3), (1, 7, 4)]), later, stall);
        assert_eq!(stuck, [("t".to_owned(), 1, 4, Duration::from_secs(11))]);
        // It commits: no stall; nothing waiting is never a stall however long it stays.
        let even_later = later + Duration::from_secs(30);
        assert!(stalled(&mut seen, &lag(&[(0, 9, 0), (1, 11, 0)]), even_later, stall).is_empty());
        let much_later = even_later + Duration::from_secs(60);
        assert!(stalled(&mut seen, &lag(&[(0, 9, 0), (1, 11, 0)]), much_later, stall).is_empty());
    }
}
