//! Fault scenarios as data: `scenarios/*.scn`, one setting or fault per line.
//!
//! ```text
//! # comments run to the end of the line
//! orders 1000            # orders the customers place
//! rate 10                # orders per simulated second
//! concurrency 256        # records each service handles at once
//! in-flight 16           # records each service holds received but unfinished (default: its own)
//! partitions 6
//! malformed 4            # malformed events the scenario itself produces (they must end in pizza-dlq)
//! hostile 0.2            # per order placed, the chance of a hostile record beside it (pizza::hostile)
//! latency 1ms..10ms      # one-way network latency, drawn per message
//! heal 600s              # after the faults: time allowed to converge
//! time-scale 1           # cooking, delivery and the watchdog's clock (0: every step instant, no watchdog)
//! ambiguous 0.002        # per record produced, the chance it is written and its producer never hears so
//! skew bake -20s drift 300  # bake's clock is 20 s behind and gains 300 µs a second (customers too)
//! buggify on             # seams between a read and its write sometimes wait (pizza::probes::seam)
//! swarm 12               # draw 12 faults (and the knobs) from the seed instead of listing them
//! undecodable 0.02       # per order, the chance of a batch no client can decode beside it
//! transactions 0.02      # per order, the chance of a transaction beside it (committed, aborted,
//!                        # or a bare marker), as a transactional producer writes one
//! gaps 0.05              # per record appended, the chance of an offset gap before it
//! codecs on              # the services' producers compress (each batch with any codec)
//! errors 0.001           # per request, the chance of an error Kafka sends while a leader or a
//!                        # coordinator moves or a member is fenced
//! isolation 20s          # every record is handled by every group that reads it within 20 s
//!                        # of its append, but on a partition a fault holds
//!
//! at 20s crash bake for 5s             # kill the node, restart it 5 s later (disk kept)
//! at 30s crash merge for 2s lose-disk  # ... with its data directory wiped (stateless services only)
//! at 40s stop deliver for 3s           # graceful: Ctrl-C (finish, commit, leave), start again
//! at 60s pause bake for 60s            # the node stops running; a backlog builds; then resumes
//! at 70s clog status for 10s           # messages between the service and the broker are dropped
//! at 90s redeliver merge               # the broker rebalances the group: uncommitted reads come again
//! at 100s reorder for 30s              # fetches hold partitions back, interleaving them differently
//! at 130s slow broker 50ms for 20s     # every broker request takes 50 ms longer
//! at 150s loss 0.05 for 10s            # 5% of all messages are lost
//! at 170s refuse-writes pizza-baked for 90s  # the topic refuses produces (NOT_ENOUGH_REPLICAS);
//!                                            # fetches and commits go on
//! at 200s hold pizza-ordered from deliver for 60s  # the broker serves deliver no pizza-ordered:
//!                                                  # pizzas are baked before deliver knows them
//! at 210s cut broker in for 20s        # one way: nothing reaches the broker (also out, both;
//!                                      # any service, broker, customers)
//! at 240s duplicate 0.2 for 30s        # a fifth of the requests reach the broker twice
//! at 280s leader-change for 2s         # leaders move: what is not replicated is lost, groups
//!                                      # rebalance, produces are refused while they are elected
//! at 300s power-loss deliver for 5s losing 2s  # a crash that loses the disk's last 2 s of
//!                                              # commits, unless SQLite synced them (synchronous)
//! at 320s slow disk status 30ms for 60s  # every store access of the service takes 30 ms more
//! at 330s busy disk deliver 0.2 for 30s  # a fifth of its store accesses fail SQLITE_BUSY
//! at 340s max-bytes pizza-dlq 64 for 30s # the topic takes no record over 64 bytes
//! at 345s recreate pizza-status        # the topic deleted and made again (`all`: every topic, a
//!                                      # new cluster): a new topic id, offsets from 0
//! at 346s hold pizza-deliver-changelog/2 from deliver for 60s  # one partition, readers too
//! instances deliver 3                  # three instances of deliver in its group (`instances 3`:
//!                                      # of assemble, bake, deliver and merge)
//! at 350s scale-up bake                # one more bake instance joins the group
//! at 360s scale-down deliver           # the newest deliver instance stops gracefully (one stays)
//! at 370s rolling-restart merge every 4s  # each merge instance in turn: stopped gracefully,
//!                                         # started again half a period later
//! ```

use std::fmt;
use std::path::Path;
use std::time::Duration;

pub use pizza::clock::parse_duration;
use pizza::clock::TimeScale;
use pizza::config::{ServiceName, SysConfig};

use crate::rng::SplitMix64;

/// A scenario: the load, the knobs, and the faults in time order.
#[derive(Clone, Debug, PartialEq)]
pub struct Scenario {
    pub name: String,
    pub orders: u32,
    /// Orders per simulated second.
    pub rate: f64,
    pub concurrency: usize,
    /// Records each service holds received but unfinished (`pizza serve --max-in-flight`); the
    /// service's default when `None`. A small bound makes the workers stop taking records, so
    /// fetched records wait in the consumer when a rebalance comes.
    pub in_flight: Option<usize>,
    pub partitions: i32,
    pub malformed: u32,
    /// Per order placed, the chance that a record from `pizza::hostile`'s catalogue (any kind, any
    /// consumed topic, drawn from the seed) goes out beside it.
    pub hostile: f64,
    pub latency: (Duration, Duration),
    pub heal: Duration,
    /// The services' time scale: 1 is the shop's real timings, 0 makes every step instant (and
    /// turns the watchdog off, as `pizza --time-scale 0` does).
    pub time_scale: TimeScale,
    /// Per record produced, the chance that the broker writes it and every answer to its producer
    /// is lost: the produce fails to the client with the record in the log (an ambiguous produce).
    pub ambiguous: f64,
    /// Whether the services' seams sometimes wait (`pizza::probes::seam`, BUGGIFY), so that a read and the write
    /// that depends on it interleave with other tasks as on a multi-threaded runtime.
    pub buggify: bool,
    /// Nodes whose clock is off: (node: a service or `customers`, offset ms, drift ppm).
    pub skews: Vec<(String, i64, i64)>,
    /// Draw this many faults from the seed.
    pub swarm: Option<u32>,
    /// Instances each service starts with, in its consumer group (1 when not listed).
    pub instances: std::collections::BTreeMap<ServiceName, usize>,
    /// What Kafka's log carries (issue 25): see [`LogKnobs`].
    pub log: LogKnobs,
    /// When set, every record must be handled by every group that reads it within this long of
    /// its append, unless a fault holds its partition (`hold`) from that group.
    pub isolation: Option<Duration>,
    pub faults: Vec<Fault>,
}

/// What the log carries besides the services' own records, as real clusters' logs do.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LogKnobs {
    /// Per order placed, the chance of a batch no client can decode (1 to 3 records) on a topic
    /// the shop reads: every reader must give its records up, with a note of each.
    pub undecodable: f64,
    /// Per order placed, the chance of a transaction: orders committed with a marker (they must
    /// be delivered), orders aborted (never), or a bare commit marker on a topic the shop reads.
    pub transactions: f64,
    /// Per record appended, the chance of a gap of 1 to 3 offsets before it (as compaction
    /// leaves them).
    pub gaps: f64,
    /// Whether the services' producers compress, each batch with a codec of Kafka's.
    pub codecs: bool,
    /// Per request, the chance the broker answers with an error Kafka sends while a leader or
    /// coordinator moves (and starts a rebalance, or fences the member, where the error says so).
    pub errors: f64,
}

impl Default for Scenario {
    fn default() -> Self {
        Scenario {
            name: "unnamed".into(),
            orders: 200,
            rate: 10.0,
            concurrency: 256,
            in_flight: None,
            partitions: 6,
            malformed: 0,
            hostile: 0.0,
            latency: (Duration::from_millis(1), Duration::from_millis(10)),
            heal: Duration::from_secs(600),
            time_scale: TimeScale::REAL,
            ambiguous: DEFAULT_AMBIGUOUS,
            skews: Vec::new(),
            buggify: true,
            swarm: None,
            instances: std::collections::BTreeMap::new(),
            log: LogKnobs::default(),
            isolation: None,
            faults: Vec::new(),
        }
    }
}

/// Most instances of one service a scenario may start with.
pub const MAX_INSTANCES: usize = 6;

/// The services that may run as more than one instance: every consuming service (issue 15; the
/// status service since each instance folds the whole log into its own view).
pub const SCALABLE: [ServiceName; 5] = ServiceName::CONSUMERS;

impl Scenario {
    /// How many instances of `service` start.
    pub fn instances_of(&self, service: ServiceName) -> usize {
        self.instances.get(&service).copied().unwrap_or(1)
    }
}

/// Ambiguous produces in every scenario that does not say otherwise: about one record in 500
/// (a run of 200 orders produces some 1,400 records).
pub const DEFAULT_AMBIGUOUS: f64 = 0.002;

/// One fault at a point of simulated time.
#[derive(Clone, Debug, PartialEq)]
pub struct Fault {
    pub at: Duration,
    pub kind: FaultKind,
}

impl Fault {
    /// When it is in force (epoch ms) in a run that started at `start_ms`.
    pub fn window(&self, start_ms: i64) -> (i64, i64) {
        let from = start_ms + self.at.as_millis() as i64;
        (from, from + self.kind.lasting().as_millis() as i64)
    }
}

/// What a fault does.
#[derive(Clone, Debug, PartialEq)]
pub enum FaultKind {
    Crash {
        service: ServiceName,
        down: Duration,
        lose_disk: bool,
    },
    Stop {
        service: ServiceName,
        down: Duration,
    },
    Pause {
        service: ServiceName,
        down: Duration,
    },
    Clog {
        service: ServiceName,
        down: Duration,
    },
    Redeliver {
        service: ServiceName,
    },
    /// One more instance of the service joins its group.
    ScaleUp {
        service: ServiceName,
    },
    /// The newest running instance of the service stops gracefully, unless it is the only one.
    ScaleDown {
        service: ServiceName,
    },
    /// Each instance of the service in turn, `every` apart: stopped gracefully, started again
    /// half a period later.
    RollingRestart {
        service: ServiceName,
        every: Duration,
    },
    Reorder {
        lasting: Duration,
    },
    SlowBroker {
        delay: Duration,
        lasting: Duration,
    },
    Loss {
        rate: f64,
        lasting: Duration,
    },
    /// The topic refuses every produce (Kafka's NOT_ENOUGH_REPLICAS, or a leader moving) while
    /// fetches and commits go on: a produce-only outage.
    RefuseWrites {
        topic: String,
        lasting: Duration,
    },
    /// The broker serves `service`'s group and readers no record of `topic` (of one partition
    /// of it, when `partition` says which).
    Hold {
        topic: String,
        partition: Option<i32>,
        service: ServiceName,
        lasting: Duration,
    },
    /// `topic` (every topic, when `None`: a new cluster) is deleted and made again.
    Recreate {
        topic: Option<String>,
    },
    /// Messages to (`In`), from (`Out`) or both ways of a node are dropped: a service, the broker
    /// or the customers.
    Cut {
        node: String,
        direction: Direction,
        down: Duration,
    },
    /// A share of the requests reach the broker twice (a retry racing its original).
    Duplicate {
        rate: f64,
        lasting: Duration,
    },
    /// Every partition's leader moves: unreplicated records are lost, every group rebalances,
    /// and produces are refused for `down` while leaders are elected.
    LeaderChange {
        down: Duration,
    },
    /// Every store access of `service` takes `delay` longer (simulated time).
    SlowDisk {
        service: ServiceName,
        delay: Duration,
        lasting: Duration,
    },
    /// A share of `service`'s store accesses fail as if the database were locked (SQLITE_BUSY).
    BusyDisk {
        service: ServiceName,
        chance: f64,
        lasting: Duration,
    },
    /// `topic` takes no record larger than `bytes` (its `max.message.bytes` lowered).
    MaxBytes {
        topic: String,
        bytes: usize,
        lasting: Duration,
    },
    /// The node loses power: a crash after which its stores hold only what was synced. SQLite in
    /// WAL mode syncs every commit under `synchronous=FULL`; under NORMAL the commits of the last
    /// `lost` may roll back.
    PowerLoss {
        service: ServiceName,
        down: Duration,
        lost: Duration,
    },
}

/// Which way a cut drops messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    In,
    Out,
    Both,
}

impl Direction {
    fn as_str(self) -> &'static str {
        match self {
            Direction::In => "in",
            Direction::Out => "out",
            Direction::Both => "both",
        }
    }
}

impl FaultKind {
    /// How long the fault lasts (zero for instant ones).
    pub fn lasting(&self) -> Duration {
        match self {
            FaultKind::Crash { down, .. }
            | FaultKind::Stop { down, .. }
            | FaultKind::Pause { down, .. }
            | FaultKind::Clog { down, .. }
            | FaultKind::Cut { down, .. }
            | FaultKind::LeaderChange { down }
            | FaultKind::PowerLoss { down, .. } => *down,
            FaultKind::Redeliver { .. }
            | FaultKind::ScaleUp { .. }
            | FaultKind::ScaleDown { .. }
            | FaultKind::Recreate { .. } => Duration::ZERO,
            FaultKind::RollingRestart { every, .. } => *every * MAX_INSTANCES as u32,
            FaultKind::Reorder { lasting }
            | FaultKind::SlowBroker { lasting, .. }
            | FaultKind::Loss { lasting, .. }
            | FaultKind::RefuseWrites { lasting, .. }
            | FaultKind::Hold { lasting, .. }
            | FaultKind::Duplicate { lasting, .. }
            | FaultKind::SlowDisk { lasting, .. }
            | FaultKind::BusyDisk { lasting, .. }
            | FaultKind::MaxBytes { lasting, .. } => *lasting,
        }
    }

    /// The service it hits, if one.
    pub fn service(&self) -> Option<ServiceName> {
        match self {
            FaultKind::Crash { service, .. }
            | FaultKind::Stop { service, .. }
            | FaultKind::Pause { service, .. }
            | FaultKind::Clog { service, .. }
            | FaultKind::Redeliver { service }
            | FaultKind::ScaleUp { service }
            | FaultKind::ScaleDown { service }
            | FaultKind::RollingRestart { service, .. }
            | FaultKind::Hold { service, .. }
            | FaultKind::PowerLoss { service, .. }
            | FaultKind::SlowDisk { service, .. }
            | FaultKind::BusyDisk { service, .. } => Some(*service),
            FaultKind::Cut { node, .. } => parse_service(node).ok(),
            _ => None,
        }
    }

    /// Whether it can keep the status service's watchdog from marking stuck orders on time.
    pub fn impairs_watchdog(&self) -> bool {
        match self {
            FaultKind::Redeliver { .. } => false,
            // Reorder holds partitions back from every consumer, the status service reading its
            // own marks included: with one partition a mark can wait seconds, as on a slow broker.
            FaultKind::Reorder { .. } | FaultKind::SlowBroker { .. } | FaultKind::Loss { .. } => true,
            // The watchdog's marks go to pizza-status.
            FaultKind::RefuseWrites { topic, .. } => *topic == SysConfig::default().topics.status,
            // Cut off, the broker hears no one; a cut that only slows customers impairs nothing.
            FaultKind::Cut { node, .. } if node == "broker" => true,
            // Requests twice: a duplicated JoinGroup leaves a phantom member whose session must
            // expire before the group settles, as a slow broker does.
            FaultKind::Duplicate { .. } => true,
            // The watchdog's marks are refused while leaders are elected.
            FaultKind::LeaderChange { .. } => true,
            // A new log: every view folds it anew and ages its orders from then.
            FaultKind::Recreate { .. } => true,
            other => other.service() == Some(ServiceName::Status),
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at {} ", secs(self.at))?;
        match &self.kind {
            FaultKind::Crash {
                service,
                down,
                lose_disk,
            } => {
                write!(f, "crash {} for {}", service.as_str(), secs(*down))?;
                if *lose_disk {
                    write!(f, " lose-disk")?;
                }
                Ok(())
            }
            FaultKind::Stop { service, down } => write!(f, "stop {} for {}", service.as_str(), secs(*down)),
            FaultKind::Pause { service, down } => write!(f, "pause {} for {}", service.as_str(), secs(*down)),
            FaultKind::Clog { service, down } => write!(f, "clog {} for {}", service.as_str(), secs(*down)),
            FaultKind::Redeliver { service } => write!(f, "redeliver {}", service.as_str()),
            FaultKind::ScaleUp { service } => write!(f, "scale-up {}", service.as_str()),
            FaultKind::ScaleDown { service } => write!(f, "scale-down {}", service.as_str()),
            FaultKind::RollingRestart { service, every } => {
                write!(f, "rolling-restart {} every {}", service.as_str(), secs(*every))
            }
            FaultKind::Reorder { lasting } => write!(f, "reorder for {}", secs(*lasting)),
            FaultKind::SlowBroker { delay, lasting } => {
                write!(f, "slow broker {}ms for {}", delay.as_millis(), secs(*lasting))
            }
            FaultKind::Loss { rate, lasting } => write!(f, "loss {rate} for {}", secs(*lasting)),
            FaultKind::RefuseWrites { topic, lasting } => {
                write!(f, "refuse-writes {topic} for {}", secs(*lasting))
            }
            FaultKind::Hold { .. } | FaultKind::Recreate { .. } => fmt_log_fault(&self.kind, f),
            FaultKind::Cut {
                node,
                direction,
                down,
            } => {
                write!(f, "cut {node} {} for {}", direction.as_str(), secs(*down))
            }
            FaultKind::Duplicate { rate, lasting } => write!(f, "duplicate {rate} for {}", secs(*lasting)),
            FaultKind::LeaderChange { down } => write!(f, "leader-change for {}", secs(*down)),
            FaultKind::SlowDisk {
                service,
                delay,
                lasting,
            } => write!(
                f,
                "slow disk {} {}ms for {}",
                service.as_str(),
                delay.as_millis(),
                secs(*lasting)
            ),
            FaultKind::BusyDisk {
                service,
                chance,
                lasting,
            } => write!(
                f,
                "busy disk {} {chance} for {}",
                service.as_str(),
                secs(*lasting)
            ),
            FaultKind::MaxBytes {
                topic,
                bytes,
                lasting,
            } => write!(f, "max-bytes {topic} {bytes} for {}", secs(*lasting)),
            FaultKind::PowerLoss { service, down, lost } => write!(
                f,
                "power-loss {} for {} losing {}",
                service.as_str(),
                secs(*down),
                secs(*lost)
            ),
        }
    }
}

/// `hold <topic>[/<partition>] from <service> for <duration>` and `recreate <topic|all>`.
fn fmt_log_fault(kind: &FaultKind, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    match kind {
        FaultKind::Hold {
            topic,
            partition,
            service,
            lasting,
        } => {
            write!(f, "hold {topic}")?;
            if let Some(p) = partition {
                write!(f, "/{p}")?;
            }
            write!(f, " from {} for {}", service.as_str(), secs(*lasting))
        }
        FaultKind::Recreate { topic } => write!(f, "recreate {}", topic.as_deref().unwrap_or("all")),
        other => unreachable!("{other:?} is written elsewhere"),
    }
}

fn secs(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// A line of a scenario file that could not be read.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {message}")]
pub struct ScenarioError {
    pub file: String,
    pub line: usize,
    pub message: String,
}

fn parse_service(s: &str) -> Result<ServiceName, String> {
    match s.parse::<ServiceName>() {
        Ok(ServiceName::Web) | Err(_) => Err(format!(
            "unknown service `{s}` (assemble, bake, deliver, merge, status)"
        )),
        Ok(n) => Ok(n),
    }
}

fn number<T: std::str::FromStr>(what: &str, s: &str) -> Result<T, String> {
    s.parse()
        .map_err(|_| format!("{what}: `{s}` is not a valid number"))
}

impl Scenario {
    /// Reads a scenario file; its name is the file's stem.
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|e| ScenarioError {
            file: path.display().to_string(),
            line: 0,
            message: e.to_string(),
        })?;
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        Scenario::parse(&name, &path.display().to_string(), &text)
    }

    /// Parses scenario text.
    pub fn parse(name: &str, file: &str, text: &str) -> Result<Scenario, ScenarioError> {
        let mut sc = Scenario {
            name: name.to_owned(),
            ..Scenario::default()
        };
        for (i, raw) in text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or_default().trim();
            if line.is_empty() {
                continue;
            }
            let words: Vec<&str> = line.split_whitespace().collect();
            sc.parse_line(&words).map_err(|message| ScenarioError {
                file: file.to_owned(),
                line: i + 1,
                message,
            })?;
        }
        sc.faults.sort_by_key(|f| f.at);
        Ok(sc)
    }

    fn parse_line(&mut self, w: &[&str]) -> Result<(), String> {
        let one = |what: &str| -> Result<&str, String> {
            match w {
                [_, v] => Ok(*v),
                _ => Err(format!("`{what}` takes one value")),
            }
        };
        match w[0] {
            "orders" => self.orders = number("orders", one("orders")?)?,
            "rate" => {
                self.rate = number("rate", one("rate")?)?;
                if !(self.rate > 0.0 && self.rate.is_finite()) {
                    return Err("rate must be above 0".into());
                }
            }
            "concurrency" => {
                self.concurrency = number("concurrency", one("concurrency")?)?;
                // What `pizza serve --concurrency` takes.
                if !(1..=100_000).contains(&self.concurrency) {
                    return Err("concurrency must be 1..=100000".into());
                }
            }
            "in-flight" => {
                let n: usize = number("in-flight", one("in-flight")?)?;
                // What `pizza serve --max-in-flight` takes.
                if !(1..=u32::MAX as usize).contains(&n) {
                    return Err("in-flight must be at least 1".into());
                }
                self.in_flight = Some(n);
            }
            "ovens" => return Err("`ovens` is now `concurrency` (as `pizza serve --concurrency`)".into()),
            "partitions" => {
                self.partitions = number("partitions", one("partitions")?)?;
                if !(1..=1000).contains(&self.partitions) {
                    return Err("partitions must be 1..=1000".into());
                }
            }
            "malformed" => self.malformed = number("malformed", one("malformed")?)?,
            "hostile" => {
                self.hostile = number("hostile", one("hostile")?)?;
                if !(0.0..=1.0).contains(&self.hostile) {
                    return Err("hostile must be a chance in [0, 1]".into());
                }
            }
            "heal" => self.heal = parse_duration(one("heal")?)?,
            "time-scale" => {
                self.time_scale = one("time-scale")?.parse()?;
            }
            "swarm" => self.swarm = Some(number("swarm", one("swarm")?)?),
            "instances" => self.parse_instances(&w[1..])?,
            "skew" => self.skews.push(parse_skew(&w[1..])?),
            "buggify" => self.buggify = on_off("buggify", one("buggify")?)?,
            "ambiguous" => {
                self.ambiguous = number("ambiguous", one("ambiguous")?)?;
                if !(0.0..=0.5).contains(&self.ambiguous) {
                    return Err("ambiguous must be a chance in [0, 0.5]".into());
                }
            }
            "undecodable" | "transactions" | "gaps" | "errors" | "codecs" | "isolation" => {
                self.parse_log_line(w[0], one(w[0])?)?;
            }
            "latency" => {
                let v = one("latency")?;
                let (lo, hi) = v
                    .split_once("..")
                    .ok_or_else(|| format!("latency: `{v}` is not a range like 1ms..10ms"))?;
                let (lo, hi) = (parse_duration(lo)?, parse_duration(hi)?);
                if lo >= hi {
                    return Err("latency: the range is empty".into());
                }
                self.latency = (lo, hi);
            }
            "at" => {
                let at = parse_duration(w.get(1).ok_or("`at` needs a time")?)?;
                let kind = parse_fault(&w[2..])?;
                self.faults.push(Fault { at, kind });
            }
            other => return Err(format!("unknown setting `{other}`")),
        }
        Ok(())
    }

    /// Issue 25's settings: what the log carries, and the isolation bound.
    fn parse_log_line(&mut self, what: &str, v: &str) -> Result<(), String> {
        match what {
            "undecodable" => self.log.undecodable = chance(what, v)?,
            "transactions" => self.log.transactions = chance(what, v)?,
            "gaps" => self.log.gaps = chance(what, v)?,
            "errors" => self.log.errors = chance(what, v)?,
            "codecs" => self.log.codecs = on_off(what, v)?,
            _ => self.isolation = Some(parse_duration(v)?),
        }
        Ok(())
    }

    /// `instances <n>` (every service that scales) or `instances <service> <n>`.
    fn parse_instances(&mut self, w: &[&str]) -> Result<(), String> {
        let (services, n) = match w {
            [n] => (SCALABLE.to_vec(), *n),
            [svc, n] => (vec![parse_service(svc)?], *n),
            _ => return Err("expected `instances [<service>] <n>`".into()),
        };
        let n: usize = number("instances", n)?;
        if !(1..=MAX_INSTANCES).contains(&n) {
            return Err(format!("instances must be 1..={MAX_INSTANCES}"));
        }
        for service in services {
            self.instances.insert(service, n);
        }
        Ok(())
    }

    /// The scenario a seed runs: the file's faults, or for a swarm scenario faults and knobs
    /// drawn from the seed.
    pub fn for_seed(&self, seed: u64) -> Scenario {
        let Some(n) = self.swarm else {
            return self.clone();
        };
        let mut rng = SplitMix64::new(seed ^ 0x5eed_5a1a_d000_0001);
        let mut sc = self.clone();
        sc.latency = match rng.below(3) {
            0 => (Duration::from_millis(1), Duration::from_millis(10)),
            1 => (Duration::from_micros(100), Duration::from_millis(2)),
            _ => (Duration::from_millis(5), Duration::from_millis(50)),
        };
        sc.partitions = [1, 3, 6, 12][rng.below(4) as usize];
        sc.concurrency = [64, 128, 256][rng.below(3) as usize];
        let arrival = Duration::from_secs_f64(f64::from(sc.orders) / sc.rate);
        let window = arrival.as_millis() as u64 + 60_000;
        let services = ServiceName::CONSUMERS;
        let mut faults = Vec::new();
        for _ in 0..n {
            let at = Duration::from_millis(rng.between(1_000, window));
            let service = services[rng.below(services.len() as u64) as usize];
            let down = Duration::from_millis(rng.between(500, 70_000));
            let kind = match rng.below(8) {
                0 => FaultKind::Crash {
                    service,
                    down,
                    lose_disk: rng.chance(0.5),
                },
                1 => FaultKind::Stop { service, down },
                2 => FaultKind::Pause { service, down },
                3 => FaultKind::Clog { service, down },
                4 => FaultKind::Redeliver { service },
                5 => FaultKind::Reorder { lasting: down },
                6 => FaultKind::SlowBroker {
                    delay: Duration::from_millis(rng.between(5, 200)),
                    lasting: down.min(Duration::from_secs(20)),
                },
                _ => FaultKind::Loss {
                    rate: [0.01, 0.05, 0.2][rng.below(3) as usize],
                    lasting: down.min(Duration::from_secs(20)),
                },
            };
            faults.push(Fault { at, kind });
        }
        faults.sort_by_key(|f| f.at);
        sc.faults = faults;
        // Drawn after the faults, so a seed's faults are what they were before this knob existed.
        // Hostile records in half the runs, beside one order in 100 or one in 20.
        sc.hostile = [0.0f64, 0.0, 0.01, 0.05][rng.below(4) as usize].max(sc.hostile);
        // Issue 13's faults, drawn after the rest so the faults above stay what they were.
        sc.ambiguous = [0.0, DEFAULT_AMBIGUOUS, 0.01][rng.below(3) as usize];
        for _ in 0..rng.below(4) {
            let at = Duration::from_millis(rng.between(1_000, window));
            sc.faults.push(Fault {
                at,
                kind: draw_new_fault(&mut rng),
            });
        }
        sc.faults.sort_by_key(|f| f.at);
        // Clocks: in half the runs, up to three nodes off by up to 30 s either way, drifting.
        if rng.chance(0.5) {
            let nodes = ["assemble", "bake", "deliver", "merge", "status", "customers"];
            for _ in 0..=rng.below(3) {
                let node = nodes[rng.below(nodes.len() as u64) as usize].to_owned();
                let offset = rng.between(0, 60_000) as i64 - 30_000;
                let drift = rng.between(0, 2_000) as i64 - 1_000;
                sc.skews.push((node, offset, drift));
            }
        }
        // Back-pressure in a quarter of the runs: workers that hold at most 64 records, so
        // fetched ones queue in the consumer (and a rebalance drops them).
        if rng.chance(0.25) {
            sc.in_flight = Some(64);
        }
        draw_scaling(&mut sc, &mut rng, window);
        draw_log(&mut sc, &mut rng);
        sc.swarm = None;
        sc
    }

    /// When the last fault is over.
    pub fn faults_end(&self) -> Duration {
        self.faults
            .iter()
            .map(|f| f.at + f.kind.lasting())
            .max()
            .unwrap_or_default()
    }

    /// The scenario as text, in the file format (a swarm draw, written out, replays as a file).
    pub fn to_text(&self) -> String {
        let mut s = format!(
            "# {}\norders {}\nrate {}\nconcurrency {}\npartitions {}\nmalformed {}\nlatency {}..{}\nheal {}\n",
            self.name,
            self.orders,
            self.rate,
            self.concurrency,
            self.partitions,
            self.malformed,
            micros(self.latency.0),
            micros(self.latency.1),
            secs(self.heal)
        );
        if self.hostile > 0.0 {
            s.push_str(&format!("hostile {}\n", self.hostile));
        }
        if let Some(n) = self.in_flight {
            s.push_str(&format!("in-flight {n}\n"));
        }
        for (node, offset, drift) in &self.skews {
            let sign = if *offset < 0 { "-" } else { "" };
            s.push_str(&format!("skew {node} {sign}{}ms drift {drift}\n", offset.abs()));
        }
        if !self.buggify {
            s.push_str("buggify off\n");
        }
        if self.ambiguous != DEFAULT_AMBIGUOUS {
            s.push_str(&format!("ambiguous {}\n", self.ambiguous));
        }
        if self.time_scale != TimeScale::REAL {
            s.push_str(&format!("time-scale {}\n", self.time_scale.factor()));
        }
        if let Some(n) = self.swarm {
            s.push_str(&format!("swarm {n}\n"));
        }
        for (service, n) in self.instances.iter().filter(|(_, n)| **n != 1) {
            s.push_str(&format!("instances {} {n}\n", service.as_str()));
        }
        let l = &self.log;
        for (name, p) in [
            ("undecodable", l.undecodable),
            ("transactions", l.transactions),
            ("gaps", l.gaps),
            ("errors", l.errors),
        ] {
            if p > 0.0 {
                s.push_str(&format!("{name} {p}\n"));
            }
        }
        if l.codecs {
            s.push_str("codecs on\n");
        }
        if let Some(d) = self.isolation {
            s.push_str(&format!("isolation {}\n", secs(d)));
        }
        for f in &self.faults {
            s.push_str(&format!("{f}\n"));
        }
        s
    }
}

/// A chance in [0, 1].
fn chance(what: &str, v: &str) -> Result<f64, String> {
    let p: f64 = number(what, v)?;
    if !(0.0..=1.0).contains(&p) {
        return Err(format!("{what} must be a chance in [0, 1]"));
    }
    Ok(p)
}

fn on_off(what: &str, v: &str) -> Result<bool, String> {
    match v {
        "on" => Ok(true),
        "off" => Ok(false),
        other => Err(format!("{what}: `{other}` is not on or off")),
    }
}

fn micros(d: Duration) -> String {
    if d.as_micros() % 1000 == 0 {
        format!("{}ms", d.as_millis())
    } else {
        format!("{}ms", d.as_secs_f64() * 1000.0)
    }
}

/// `<node> <±duration> [drift <ppm>]`: a service or the customers, whose clock is that far off.
fn parse_skew(w: &[&str]) -> Result<(String, i64, i64), String> {
    let (node, offset, drift) = match w {
        [node, offset] => (*node, *offset, "0"),
        [node, offset, "drift", ppm] => (*node, *offset, *ppm),
        _ => return Err("expected `skew <node> <offset> [drift <ppm>]`".into()),
    };
    if node != "customers" {
        parse_service(node)?;
    }
    let (sign, magnitude) = match offset.strip_prefix('-') {
        Some(m) => (-1, m),
        None => (1, offset.strip_prefix('+').unwrap_or(offset)),
    };
    let offset_ms = sign * parse_duration(magnitude)?.as_millis() as i64;
    let drift: i64 = number("drift", drift)?;
    if offset_ms.abs() > 3_600_000 || drift.abs() > 100_000 {
        return Err("skew: at most an hour off and 100000 ppm of drift".into());
    }
    Ok((node.to_owned(), offset_ms, drift))
}

/// Issue 13's faults: `refuse-writes <topic>`, `hold <topic> from <service>`, `cut <node> <in|out|both>`,
/// `duplicate <rate>` and `leader-change`, each `for <duration>`; `power-loss <service> for
/// <duration> losing <duration>`; `slow disk <service> <delay> for <duration>`.
fn parse_more_fault(w: &[&str]) -> Result<FaultKind, String> {
    match w {
        ["hold", topic, "from", svc, rest @ ..] => {
            let (topic, partition) = match topic.split_once('/') {
                Some((t, p)) => (t, Some(number::<i32>("hold's partition", p)?)),
                None => (*topic, None),
            };
            Ok(FaultKind::Hold {
                topic: known_topic(topic)?,
                partition,
                service: parse_service(svc)?,
                lasting: for_exactly(rest)?,
            })
        }
        ["cut", node, dir, rest @ ..] => {
            if *node != "broker" && *node != "customers" {
                parse_service(node)?;
            }
            let direction = match *dir {
                "in" => Direction::In,
                "out" => Direction::Out,
                "both" => Direction::Both,
                other => return Err(format!("cut: `{other}` is not in, out or both")),
            };
            Ok(FaultKind::Cut {
                node: (*node).to_owned(),
                direction,
                down: for_exactly(rest)?,
            })
        }
        ["leader-change", rest @ ..] => Ok(FaultKind::LeaderChange { down: for_exactly(rest)? }),
        ["refuse-writes", topic, rest @ ..] => Ok(FaultKind::RefuseWrites {
            topic: known_topic(topic)?,
            lasting: for_exactly(rest)?,
        }),
        ["power-loss" | "max-bytes", ..] | ["slow" | "busy", "disk", ..] => parse_disk_fault(w),
        ["duplicate", rate, rest @ ..] => {
            let rate: f64 = number("duplicate", rate)?;
            if !(0.0..=1.0).contains(&rate) {
                return Err("duplicate must be a chance in [0, 1]".into());
            }
            Ok(FaultKind::Duplicate {
                rate,
                lasting: for_exactly(rest)?,
            })
        }
        _ => Err("expected `hold <topic> from <service>`, `cut <node> <in|out|both>` or `duplicate <rate>`, then `for <duration>`".into()),
    }
}

/// `power-loss <service> for <duration> losing <duration>`, `slow disk <service> <delay> for
/// <duration>`, `busy disk <service> <chance> for <duration>` and `max-bytes <topic> <bytes> for
/// <duration>`.
fn parse_disk_fault(w: &[&str]) -> Result<FaultKind, String> {
    match w {
        ["power-loss", svc, "for", down, "losing", lost] => Ok(FaultKind::PowerLoss {
            service: parse_service(svc)?,
            down: parse_duration(down)?,
            lost: parse_duration(lost)?,
        }),
        ["power-loss", ..] => Err("expected `power-loss <service> for <duration> losing <duration>`".into()),
        ["busy", "disk", svc, chance, "for", lasting] => {
            let chance: f64 = number("busy disk", chance)?;
            if !(0.0..=1.0).contains(&chance) {
                return Err("busy disk: the chance must be in [0, 1]".into());
            }
            Ok(FaultKind::BusyDisk {
                service: parse_service(svc)?,
                chance,
                lasting: parse_duration(lasting)?,
            })
        }
        ["max-bytes", topic, bytes, rest @ ..] => Ok(FaultKind::MaxBytes {
            topic: known_topic(topic)?,
            bytes: number("max-bytes", bytes)?,
            lasting: for_exactly(rest)?,
        }),
        ["slow", "disk", svc, delay, "for", lasting] => Ok(FaultKind::SlowDisk {
            service: parse_service(svc)?,
            delay: parse_duration(delay)?,
            lasting: parse_duration(lasting)?,
        }),
        _ => Err(format!("cannot read `{}`", w.join(" "))),
    }
}

/// `for <duration>` and nothing after it.
fn for_exactly(rest: &[&str]) -> Result<Duration, String> {
    match rest {
        ["for", d] => parse_duration(d),
        ["for", _, extra, ..] => Err(format!("unexpected `{extra}`")),
        _ => Err("expected `for <duration>`".into()),
    }
}

/// `topic` if it is one of the shop's (deliver's changelog included).
fn known_topic(topic: &str) -> Result<String, String> {
    let topics = SysConfig::default().topics;
    if topics.to_create().contains(&topic) {
        Ok(topic.to_owned())
    } else {
        Err(format!(
            "unknown topic `{topic}` ({})",
            topics.to_create().join(", ")
        ))
    }
}

/// Issue 15's knobs, drawn last: each service starts as one to three instances, and in half the
/// runs instances are added, removed or restarted one by one. The status service's are drawn
/// after the others' (it scaled last), so a seed draws what it drew before for the others.
fn draw_scaling(sc: &mut Scenario, rng: &mut SplitMix64, window: u64) {
    let (groups, [status]) = SCALABLE.split_at(4) else {
        unreachable!("the status service is the last consumer");
    };
    for service in groups {
        sc.instances.insert(*service, 1 + rng.below(3) as usize);
    }
    let at = |rng: &mut SplitMix64| Duration::from_millis(rng.between(1_000, window));
    let mut scale_fault = |rng: &mut SplitMix64, at: Duration, service: ServiceName| {
        let kind = match rng.below(3) {
            0 => FaultKind::ScaleUp { service },
            1 => FaultKind::ScaleDown { service },
            _ => FaultKind::RollingRestart {
                service,
                every: Duration::from_millis(rng.between(1_000, 10_000)),
            },
        };
        sc.faults.push(Fault { at, kind });
    };
    if rng.chance(0.5) {
        for _ in 0..=rng.below(3) {
            let at = at(rng);
            let service = groups[rng.below(groups.len() as u64) as usize];
            scale_fault(rng, at, service);
        }
    }
    let instances = 1 + rng.below(3) as usize;
    if rng.chance(0.25) {
        let at = at(rng);
        scale_fault(rng, at, *status);
    }
    sc.instances.insert(*status, instances);
    sc.faults.sort_by_key(|f| f.at);
}

/// Issue 25's knobs, drawn last: what Kafka's log carries (batches no client can decode and
/// transactions in half the runs each, gaps and compressed batches in half, request errors in a
/// third), and in one run in eight a topic made again (every topic, in a third of those).
fn draw_log(sc: &mut Scenario, rng: &mut SplitMix64) {
    sc.log = LogKnobs {
        undecodable: [0.0, 0.0, 0.005, 0.02][rng.below(4) as usize],
        transactions: [0.0, 0.0, 0.005, 0.02][rng.below(4) as usize],
        gaps: [0.0, 0.05][rng.below(2) as usize],
        codecs: rng.chance(0.5),
        errors: [0.0, 0.0005, 0.003][rng.below(3) as usize],
    };
    if rng.chance(0.125) {
        let topics = SysConfig::default().topics;
        let all = topics.all();
        let topic = (!rng.chance(1.0 / 3.0)).then(|| all[rng.below(all.len() as u64) as usize].to_owned());
        // While orders still come: a run whose every order went with the old logs checks
        // nothing.
        let arrival = (f64::from(sc.orders) / sc.rate * 1000.0) as u64;
        let at = Duration::from_millis(rng.between(1_000, (arrival * 2 / 3).max(1_001)));
        sc.faults.push(Fault {
            at,
            kind: FaultKind::Recreate { topic },
        });
        sc.faults.sort_by_key(|f| f.at);
    }
}

/// One of the faults issue 13 added, drawn for a swarm run. Outages run up to three minutes:
/// longer than a worker's retry budget, so the supervisor restarts what gives up.
fn draw_new_fault(rng: &mut SplitMix64) -> FaultKind {
    let lasting = Duration::from_millis(rng.between(1_000, 180_000));
    let topics = SysConfig::default().topics;
    let all = topics.all();
    let topic = all[rng.below(all.len() as u64) as usize].to_owned();
    let nodes = [
        "assemble",
        "bake",
        "deliver",
        "merge",
        "status",
        "broker",
        "customers",
    ];
    let node = nodes[rng.below(nodes.len() as u64) as usize].to_owned();
    match rng.below(9) {
        8 => FaultKind::MaxBytes {
            topic: topics.dlq,
            bytes: 64,
            lasting: lasting.min(Duration::from_secs(60)),
        },
        7 => FaultKind::BusyDisk {
            service: [ServiceName::Deliver, ServiceName::Status][rng.below(2) as usize],
            chance: [0.05, 0.2, 0.5][rng.below(3) as usize],
            lasting: lasting.min(Duration::from_secs(60)),
        },
        6 => FaultKind::SlowDisk {
            service: [ServiceName::Deliver, ServiceName::Status][rng.below(2) as usize],
            delay: Duration::from_millis(rng.between(1, 100)),
            lasting: lasting.min(Duration::from_secs(60)),
        },
        5 => FaultKind::PowerLoss {
            service: [ServiceName::Deliver, ServiceName::Status][rng.below(2) as usize],
            down: Duration::from_millis(rng.between(500, 30_000)),
            lost: Duration::from_millis(rng.between(100, 5_000)),
        },
        4 => FaultKind::LeaderChange {
            down: Duration::from_millis(rng.between(200, 5_000)),
        },
        // Every topic a service or a customer writes (pizza-dlq's refusals run a dead-letter's
        // retries out too).
        0 => FaultKind::RefuseWrites { topic, lasting },
        // Mostly the pending path: deliver kept from pizza-ordered.
        1 => FaultKind::Hold {
            topic: topics.ordered,
            partition: None,
            service: ServiceName::Deliver,
            lasting: lasting.min(Duration::from_secs(90)),
        },
        2 => FaultKind::Cut {
            node,
            direction: [Direction::In, Direction::Out, Direction::Both][rng.below(3) as usize],
            down: lasting,
        },
        _ => FaultKind::Duplicate {
            rate: [0.05, 0.2, 0.5][rng.below(3) as usize],
            lasting: lasting.min(Duration::from_secs(60)),
        },
    }
}

/// Issue 15's faults: `scale-up <service>`, `scale-down <service>`, `rolling-restart <service>
/// every <duration>`.
fn parse_scale_fault(w: &[&str]) -> Result<FaultKind, String> {
    let scalable = parse_service;
    match w {
        ["scale-up", svc] => Ok(FaultKind::ScaleUp {
            service: scalable(svc)?,
        }),
        ["scale-down", svc] => Ok(FaultKind::ScaleDown {
            service: scalable(svc)?,
        }),
        ["rolling-restart", svc, "every", every] => {
            let every = parse_duration(every)?;
            if every.is_zero() {
                return Err("rolling-restart: `every` must be above 0".into());
            }
            Ok(FaultKind::RollingRestart {
                service: scalable(svc)?,
                every,
            })
        }
        _ => Err("expected `scale-up <service>`, `scale-down <service>` or `rolling-restart <service> every <duration>`".into()),
    }
}

fn parse_fault(w: &[&str]) -> Result<FaultKind, String> {
    let for_ = |rest: &[&str]| -> Result<Duration, String> {
        match rest {
            ["for", d, ..] => parse_duration(d),
            _ => Err("expected `for <duration>`".into()),
        }
    };
    let no_more = |rest: &[&str], n: usize| -> Result<(), String> {
        match rest.get(n) {
            None => Ok(()),
            Some(extra) => Err(format!("unexpected `{extra}`")),
        }
    };
    match w {
        ["crash", svc, rest @ ..] => {
            let service = parse_service(svc)?;
            let down = for_(rest)?;
            let lose_disk = match rest.get(2) {
                None => false,
                Some(&"lose-disk") => true,
                Some(other) => return Err(format!("unexpected `{other}` (lose-disk?)")),
            };
            no_more(rest, 3)?;
            Ok(FaultKind::Crash {
                service,
                down,
                lose_disk,
            })
        }
        [verb @ ("stop" | "pause" | "clog"), svc, rest @ ..] => {
            let service = parse_service(svc)?;
            let down = for_(rest)?;
            no_more(rest, 2)?;
            Ok(match *verb {
                "stop" => FaultKind::Stop { service, down },
                "pause" => FaultKind::Pause { service, down },
                _ => FaultKind::Clog { service, down },
            })
        }
        ["redeliver", svc] => Ok(FaultKind::Redeliver {
            service: parse_service(svc)?,
        }),
        ["recreate", "all"] => Ok(FaultKind::Recreate { topic: None }),
        ["recreate", topic] => Ok(FaultKind::Recreate {
            topic: Some(known_topic(topic)?),
        }),
        ["scale-up" | "scale-down" | "rolling-restart", ..] => parse_scale_fault(w),
        ["reorder", rest @ ..] => {
            no_more(rest, 2)?;
            Ok(FaultKind::Reorder { lasting: for_(rest)? })
        }
        ["slow", "broker", delay, rest @ ..] => {
            no_more(rest, 2)?;
            Ok(FaultKind::SlowBroker {
                delay: parse_duration(delay)?,
                lasting: for_(rest)?,
            })
        }
        ["loss", rate, rest @ ..] => {
            let rate: f64 = number("loss", rate)?;
            if !(0.0..1.0).contains(&rate) {
                return Err("loss must be in [0, 1)".into());
            }
            no_more(rest, 2)?;
            Ok(FaultKind::Loss {
                rate,
                lasting: for_(rest)?,
            })
        }
        ["refuse-writes" | "hold" | "cut" | "duplicate" | "leader-change" | "power-loss" | "max-bytes", ..]
        | ["slow" | "busy", "disk", ..] => {
            parse_more_fault(w)
        }
        [] => Err("`at <time>` needs a fault".into()),
        [other, ..] => Err(format!(
            "unknown fault `{other}` (crash, stop, pause, clog, redeliver, reorder, slow broker, loss, refuse-writes, hold, cut, duplicate, leader-change, power-loss, slow disk, busy disk, max-bytes, recreate)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = "
        orders 50   # few
        rate 2.5
        time-scale 0.5
        malformed 3
        hostile 0.25
        latency 1ms..20ms
        at 20s crash bake for 5s
        at 3s crash merge for 2s lose-disk
        at 40s stop deliver for 1.5s
        at 90s redeliver merge
        at 100s reorder for 30s
        at 130s slow broker 50ms for 20s
        at 150s loss 0.05 for 10s
        at 1m pause status for 500ms
        at 61s clog bake for 2s
        at 70s refuse-writes pizza-baked for 90s
        at 71s hold pizza-ordered from deliver for 30s
        at 72s cut broker in for 5s
        at 73s duplicate 0.2 for 10s
        at 74s leader-change for 2s
        at 75s power-loss deliver for 5s losing 1.5s
        at 76s slow disk status 30ms for 10s
        at 77s busy disk deliver 0.2 for 10s
        at 78s max-bytes pizza-dlq 64 for 10s
        ambiguous 0.01
        skew bake -20s drift 300
        skew customers 1.5s
    ";

    #[test]
    fn a_scenario_reads_and_writes_back_the_same() {
        let sc = Scenario::parse("ex", "ex.scn", EXAMPLE).unwrap();
        assert_eq!((sc.orders, sc.rate, sc.malformed, sc.hostile), (50, 2.5, 3, 0.25));
        assert_eq!(sc.time_scale.factor(), 0.5);
        assert_eq!(sc.faults.len(), 18);
        assert_eq!(sc.ambiguous, 0.01);
        assert_eq!(
            sc.skews,
            [("bake".into(), -20_000, 300), ("customers".into(), 1_500, 0)]
        );
        assert_eq!(sc.faults[0].at, Duration::from_secs(3), "sorted by time");
        assert_eq!(sc.faults_end(), Duration::from_secs(160));
        let again = Scenario::parse("ex", "ex.scn", &sc.to_text()).unwrap();
        assert_eq!(again, sc);
    }

    #[test]
    fn bad_lines_name_file_line_and_why() {
        let err = |t: &str| Scenario::parse("x", "x.scn", t).unwrap_err().to_string();
        assert_eq!(
            err("orders 5\nat 5s crash oven for 1s"),
            "x.scn:2: unknown service `oven` (assemble, bake, deliver, merge, status)"
        );
        for service in ["status", "deliver"] {
            let line = format!("at 5s crash {service} for 1s lose-disk");
            assert!(Scenario::parse("x", "x.scn", &line).is_ok(), "{line}");
        }
        assert!(err("at 5 crash bake for 1s").contains("needs a unit"));
        assert!(err("rate 0").contains("above 0"));
        assert!(err("hostile 1.5").contains("chance in [0, 1]"));
        assert!(err("time-scale -1").contains("time scale must be a finite number >= 0"));
        assert!(err("concurrency many").contains("not a valid number"));
        assert!(err("concurrency 0").contains("1..=100000"));
        assert!(err("in-flight 0").contains("at least 1"));
        let sc = Scenario::parse("x", "x.scn", "in-flight 64").unwrap();
        assert_eq!(sc.in_flight, Some(64));
        assert_eq!(Scenario::parse("x", "x.scn", &sc.to_text()).unwrap(), sc);
        assert!(err("ovens 64").contains("now `concurrency`"));
        assert!(err("at 1s pause bake").contains("for <duration>"));
        assert!(err("at 1s explode").contains("unknown fault"));
        assert!(err("colour blue").contains("unknown setting"));
        assert!(err("at 1s refuse-writes pizza-cake for 1s").contains("unknown topic `pizza-cake`"));
        assert!(err("ambiguous 0.9").contains("[0, 0.5]"));
        assert!(err("skew oven 1s").contains("unknown service"));
        assert!(err("at 1s cut broker sideways for 1s").contains("not in, out or both"));
        assert!(err("at 1s hold pizza-ordered from web for 1s").contains("unknown service"));
        assert!(err("at 1s duplicate 2 for 1s").contains("[0, 1]"));
        assert!(err("skew bake 120m").contains("at most an hour"));
    }

    #[test]
    fn instances_and_the_faults_that_change_them() {
        let text = "instances 2\ninstances deliver 3\nat 5s scale-up bake\n\
                    at 6s scale-down deliver\nat 7s rolling-restart merge every 2s\n";
        let sc = Scenario::parse("x", "x.scn", text).unwrap();
        assert_eq!(sc.instances_of(ServiceName::Deliver), 3);
        assert_eq!(sc.instances_of(ServiceName::Bake), 2);
        assert_eq!(sc.instances_of(ServiceName::Status), 2);
        assert_eq!(sc.faults.len(), 3);
        assert_eq!(sc.faults_end(), Duration::from_secs(7 + 2 * MAX_INSTANCES as u64));
        assert_eq!(Scenario::parse("x", "x.scn", &sc.to_text()).unwrap(), sc);
        let err = |t: &str| Scenario::parse("x", "x.scn", t).unwrap_err().to_string();
        assert_eq!(
            Scenario::parse("x", "x.scn", "instances status 3")
                .unwrap()
                .instances_of(ServiceName::Status),
            3
        );
        assert!(err("instances 0").contains("1..=6"));
        assert!(err("instances deliver 7").contains("1..=6"));
        assert!(err("at 1s scale-up web").contains("unknown service"));
        assert!(err("at 1s rolling-restart bake every 0s").contains("above 0"));
        assert!(err("at 1s rolling-restart bake").contains("expected"));
        // A swarm draw starts each service that scales as one to three instances.
        let drawn = Scenario::parse("s", "s.scn", "swarm 3").unwrap().for_seed(5);
        assert!(SCALABLE.iter().all(|s| (1..=3).contains(&drawn.instances_of(*s))));
    }

    #[test]
    fn a_swarm_draw_is_a_function_of_the_seed() {
        let sc = Scenario::parse("s", "s.scn", "orders 100\nswarm 10").unwrap();
        let a = sc.for_seed(42);
        assert_eq!(a, sc.for_seed(42));
        assert_ne!(a.faults, sc.for_seed(43).faults);
        // Ten of the older kinds, up to three of issue 13's and up to four of issue 15's.
        assert!((10..=17).contains(&a.faults.len()));
        assert!(a.faults.windows(2).all(|w| w[0].at <= w[1].at));
        // Written out, a draw replays as a plain file.
        let replay = Scenario::parse("s", "s.scn", &a.to_text()).unwrap();
        assert_eq!(replay.faults, a.faults);
    }
}
