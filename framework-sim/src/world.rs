//! The simulation of any application: its services on nodes of their own against the simulated
//! broker, each instance under a supervisor, a feeder node writing the application's inputs, and
//! the seed's faults; then the framework's invariants and the application's own, judged from the
//! broker's logs once the faults healed and every group caught up.
//!
//! An application gives its [`Application`] (what it runs in production) and a [`Workload`]
//! (what only a simulation needs); [`run`] does the rest:
//!
//! | invariant | what breaks it |
//! |---|---|
//! | `no-panic` | any node panicked |
//! | `service-kept-running` | an instance stopped on an error no retry fixes |
//! | `commits-follow-work` | a group committed past an offset none of its members finished |
//! | `whole-log-committed` | a group had not committed its topics' whole log within the settle time |
//! | `commits-move-under-rebalances` | through a storm no other fault overlaps, a group with a backlog committed nothing over 4 rebalances in a row |
//! | `readers-caught-up` | the workload's own readers had not read the whole log within the settle time ([`Workload::caught_up`]) |
//! | `partitions-isolated` | in a seed whose only faults are holds, a record of a partition no hold named was finished later than [`Workload::isolation`] after its append |
//! | `feed-finished` | the workload's feed ran past [`FEED_WITHIN`] (simulated) |
//! | `workload-well-formed` | the workload names no topics, services or groups, or reads a topic it does not make (the run does not start) |
//! | the application's | whatever [`Workload::check`] finds |
//!
//! The faults, drawn from the seed ([`Plan::draw`]): an instance crashed (its disk lost or not),
//! leaders moving, writes to a topic refused (for a while, or longer than the worker's retries
//! last), a dead-letter topic that takes only small records, a forced rebalance, and a storm (an
//! instance that hears nothing for a while, a backlog, then a rebalance every 5 s). One seed in
//! four of a workload with an [isolation](Workload::isolation) bound draws holds alone instead:
//! one partition of a topic kept from a service's reads and its group's fetches for a while.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use framework::app::{Application, Instance};
use framework::clock::now_ms;
use framework::probes::Hits;
use framework::shutdown::Shutdown;
use madsim::runtime::Handle;
use madsim::task::NodeId;

use crate::broker::{Broker, BrokerConfig, Held};
use crate::faults::{self, later};
use crate::node::{serve, BrokerShared, SimTransport, BROKER_ADDR};
use crate::rng::SplitMix64;

/// What a simulation needs of an application beyond what it runs in production.
pub trait Workload: Application {
    /// How many instances of `service` run.
    fn instances(&self, service: &str) -> usize {
        let _ = service;
        1
    }

    /// Writes one run's inputs from the feeder's node through `transport`, drawing from `rng`.
    /// The run goes on to settle once this returns.
    fn feed(&self, rng: SplitMix64, transport: SimTransport) -> impl Future<Output = ()> + Send;

    /// Each consumer group with the topics it reads: each must commit their whole log once the
    /// faults healed.
    fn groups(&self) -> Vec<(String, Vec<String>)>;

    /// The dead-letter topics (the `small-dlq` fault shrinks the records they take).
    fn dead_letter_topics(&self) -> Vec<String> {
        Vec::new()
    }

    /// The topics the seed's faults may delete and make again mid-run (the `recreate` fault):
    /// those whose checks read every life of the topic (`Broker::ever_written`) or only the new
    /// one, and whose readers must notice the new log and fold it from its start. None unless
    /// the workload says.
    fn recreatable(&self) -> Vec<String> {
        Vec::new()
    }

    /// How long the groups may take to catch up once the faults healed, beyond [`SETTLE`]: the
    /// time its inputs take to handle, say.
    fn settle(&self) -> Duration {
        Duration::ZERO
    }

    /// Whether the workload's own readers outside any group (views that follow the log) have
    /// read the whole log as it is now: the run waits for it as for the groups' commits.
    fn caught_up(&self, broker: &Broker) -> bool {
        let _ = broker;
        true
    }

    /// How soon after its append every record must be finished by its group when the only faults
    /// are holds of one partition (a partition's trouble is its own: the others go on). `None`
    /// (the default) when the workload cannot promise that; then no seed draws the hold plan.
    fn isolation(&self) -> Option<Duration> {
        None
    }

    /// The application's invariants, judged from the logs once every group caught up; `hits`
    /// is what the code probes saw.
    fn check(&self, broker: &Broker, hits: &Hits) -> Vec<Violation>;
}

/// How long the groups may take to commit the whole log once the faults healed, beyond what the
/// workload asks for.
pub const SETTLE: Duration = Duration::from_secs(120);

/// How long a supervisor waits before it runs a stopped instance again.
const RESTART_AFTER: Duration = Duration::from_secs(1);

/// How long (simulated) a workload's feed may run.
pub const FEED_WITHIN: Duration = Duration::from_secs(3_600);

/// A broken promise.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub invariant: &'static str,
    pub what: String,
}

impl Violation {
    pub fn new(invariant: &'static str, what: impl Into<String>) -> Violation {
        Violation {
            invariant,
            what: what.into(),
        }
    }
}

/// How one run goes.
#[derive(Clone, Debug)]
pub struct Options {
    pub seed: u64,
    /// A mutant switched on, by name (`framework::mutants`).
    pub mutant: Option<&'static str>,
    /// Every topic's partitions.
    pub partitions: i32,
}

impl Options {
    pub fn seed(seed: u64) -> Options {
        Options {
            seed,
            mutant: None,
            partitions: 4,
        }
    }
}

/// The verdict of one run.
#[derive(Clone, Debug, Default)]
pub struct Verdict {
    pub seed: u64,
    pub mutant: Option<&'static str>,
    /// The faults the seed drew.
    pub plan: Vec<(Duration, Fault)>,
    pub violations: Vec<Violation>,
    /// How often each code probe fired: which error paths the run took.
    pub probes: BTreeMap<&'static str, u64>,
    /// What the broker and the faults did, in order.
    pub trace: Vec<String>,
}

impl Verdict {
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }

    /// Whether `invariant` was broken.
    pub fn broke(&self, invariant: &str) -> bool {
        self.violations.iter().any(|v| v.invariant == invariant)
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if self.passed() { "passed" } else { "FAILED" };
        let mutant = self
            .mutant
            .map(|m| format!(" with mutant {m}"))
            .unwrap_or_default();
        write!(
            f,
            "seed {}{mutant} {verdict}: {} violations",
            self.seed,
            self.violations.len()
        )?;
        for v in self.violations.iter().take(10) {
            write!(f, "\n  {}: {}", v.invariant, v.what)?;
        }
        write!(f, "\n  faults: {:?}", self.plan)
    }
}

/// A fault of a run.
#[derive(Clone, Debug)]
pub enum Fault {
    /// An instance killed, up again after `down` (without its data directory when `lose_disk`).
    Crash {
        instance: String,
        down: Duration,
        lose_disk: bool,
    },
    /// An instance's power lost: killed, up again after `down` with its data directory as the
    /// disk kept it: what it held `lost` before, unless every store in it synced each commit.
    PowerLoss {
        instance: String,
        down: Duration,
        lost: Duration,
    },
    /// An instance cut off both ways for `cut`, longer than a session lasts (a long pause, a
    /// network cut): its members are expelled from their groups, their partitions dealt to the
    /// others, and when it hears again each member learns it lost them and joins again.
    Expel { instance: String, cut: Duration },
    /// Leaders move: produces are refused while they do, and what was not replicated is lost.
    LeaderChange { down: Duration },
    /// `topic` refuses writes (NOT_ENOUGH_REPLICAS) for a while.
    Refuse { topic: String, lasting: Duration },
    /// A dead-letter topic takes only records this small for a while.
    SmallDlq {
        topic: String,
        bytes: usize,
        lasting: Duration,
    },
    /// A group rebalances.
    Rebalance { group: String },
    /// `topic` is deleted and made again (one of the workload's `recreatable` topics): a new
    /// log, offsets from 0, its committed offsets gone.
    Recreate { topic: String },
    /// An instance hears nothing for `cut` (a backlog builds), then its group rebalances every
    /// 5 s, `times` times.
    Storm {
        instance: String,
        group: String,
        cut: Duration,
        times: u32,
    },
    /// `partition` of `topic` is held back from `service`'s readers and from `group`'s fetches
    /// (a partition leader far behind, for them alone).
    Hold {
        topic: String,
        partition: i32,
        service: String,
        group: String,
        lasting: Duration,
    },
}

/// The seed's faults for an application: its instances, topics, groups and dead-letter topics.
pub struct Plan;

impl Plan {
    /// 2 to 6 faults in the first 50 s; or, one seed in four of a workload with an isolation
    /// bound, 1 or 2 holds (alone, or with an instance expelled twice while they hold); or, one
    /// seed in eight of a workload whose groups read a topic it may make again, a stale commit
    /// ([`Plan::stale_commit`]).
    pub fn draw<W: Workload>(seed: u64, app: &W, partitions: i32) -> Vec<(Duration, Fault)> {
        let mut rng = SplitMix64::new(seed ^ 0xfa17_5eed);
        if app.isolation().is_some() && seed % 4 == 3 {
            return Plan::holds(&mut rng, app, partitions);
        }
        if seed % 8 == 5 {
            if let Some(plan) = Plan::stale_commit(&mut rng, app) {
                return plan;
            }
        }
        let instances = instance_names(app);
        let topics = app.topics();
        let groups: Vec<String> = app.groups().into_iter().map(|(g, _)| g).collect();
        let dlqs = app.dead_letter_topics();
        let recreatable = app.recreatable();
        fn pick<T: Clone>(rng: &mut SplitMix64, from: &[T]) -> T {
            from[rng.below(from.len() as u64) as usize].clone()
        }
        let mut faults = Vec::new();
        for _ in 0..rng.between(2, 6) {
            let at = Duration::from_millis(rng.between(2_000, 50_000));
            let ms = |rng: &mut SplitMix64| Duration::from_millis(rng.between(200, 3_000));
            let fault = match rng.below(10) {
                0 | 6 => {
                    let (instance, down) = (pick(&mut rng, &instances).0, ms(&mut rng));
                    match rng.below(10) {
                        0..=2 => Fault::PowerLoss {
                            instance,
                            down,
                            lost: Duration::from_millis(rng.between(500, 3_000)),
                        },
                        k => Fault::Crash {
                            instance,
                            down,
                            lose_disk: k < 6,
                        },
                    }
                }
                1 | 8 => Fault::LeaderChange { down: ms(&mut rng) },
                9 => Fault::Expel {
                    instance: pick(&mut rng, &instances).0,
                    cut: Duration::from_millis(rng.between(8_000, 20_000)),
                },
                // Short, or longer than the worker's retries last (10 tries of up to 10 s).
                2 | 7 => Fault::Refuse {
                    topic: pick(&mut rng, &topics),
                    lasting: Duration::from_secs(if rng.chance(0.5) {
                        rng.between(5, 30)
                    } else {
                        rng.between(140, 200)
                    }),
                },
                3 if !dlqs.is_empty() => Fault::SmallDlq {
                    topic: pick(&mut rng, &dlqs),
                    bytes: 40 + rng.below(60) as usize,
                    lasting: Duration::from_secs(rng.between(5, 30)),
                },
                4 if !recreatable.is_empty() => Fault::Recreate {
                    topic: pick(&mut rng, &recreatable),
                },
                5 if !groups.is_empty() => Fault::Storm {
                    instance: pick(&mut rng, &instances).0,
                    group: pick(&mut rng, &groups),
                    cut: Duration::from_secs(rng.between(10, 40)),
                    times: rng.between(5, 25) as u32,
                },
                _ if !groups.is_empty() => Fault::Rebalance {
                    group: pick(&mut rng, &groups),
                },
                _ => Fault::LeaderChange { down: ms(&mut rng) },
            };
            faults.push((at, fault));
        }
        faults.sort_by_key(|(at, _)| *at);
        faults
    }
}

impl Plan {
    /// An instance hears nothing for 15 to 40 s (its requests still arrive: its commits land), a
    /// topic its group reads is made again within 1 s of the cut's start (while what it received
    /// before the cut is still in hand), and the instance is killed late in the cut (the new log
    /// has grown past the old mark by then), so it never hears of the new log: what it committed
    /// meanwhile names the topic, and is one of the old log's marks (seed 222 of the testing
    /// application drew it by chance). `None` when no group reads a topic the workload may make
    /// again.
    fn stale_commit<W: Workload>(rng: &mut SplitMix64, app: &W) -> Option<Vec<(Duration, Fault)>> {
        let recreatable = app.recreatable();
        let read: Vec<(String, String)> = app
            .groups()
            .into_iter()
            .flat_map(|(g, ts)| ts.into_iter().map(move |t| (g.clone(), t)))
            .filter(|(_, t)| recreatable.contains(t))
            .collect();
        if read.is_empty() {
            return None;
        }
        let (group, topic) = read[rng.below(read.len() as u64) as usize].clone();
        // An instance of the service named as the group, where there is one (the workload does
        // not say which services read in which group).
        let all = instance_names(app);
        let named: Vec<_> = all.iter().filter(|(_, s)| *s == group).cloned().collect();
        let instances = if named.is_empty() { all } else { named };
        let instance = instances[rng.below(instances.len() as u64) as usize].0.clone();
        let at = Duration::from_millis(rng.between(5_000, 30_000));
        let cut = Duration::from_millis(rng.between(15_000, 40_000));
        let made_again = at + Duration::from_millis(rng.between(100, 1_000));
        let killed = made_again + (cut - (made_again - at)).mul_f64(0.6 + 0.35 * rng.unit());
        let down = Duration::from_millis(rng.between(200, 3_000));
        let kill = if rng.chance(0.5) {
            Fault::PowerLoss {
                instance: instance.clone(),
                down,
                lost: Duration::from_millis(rng.between(500, 3_000)),
            }
        } else {
            Fault::Crash {
                instance: instance.clone(),
                down,
                lose_disk: rng.chance(0.5),
            }
        };
        let storm = Fault::Storm {
            instance,
            group,
            cut,
            times: rng.between(0, 3) as u32,
        };
        Some(vec![
            (at, storm),
            (made_again, Fault::Recreate { topic }),
            (killed, kill),
        ])
    }

    /// 1 or 2 holds, each of one partition of a topic from a service and a group, 20 to 60 s.
    fn holds<W: Workload>(rng: &mut SplitMix64, app: &W, partitions: i32) -> Vec<(Duration, Fault)> {
        let (topics, services, groups) = (app.topics(), app.services(), app.groups());
        let mut faults = Vec::new();
        for _ in 0..rng.between(1, 2) {
            let at = Duration::from_millis(rng.between(5_000, 30_000));
            // A group, then a topic (its own, or one its services read outside it, a changelog
            // say) and a service, all of the workload's (checked non-empty by `run`).
            let group = groups[rng.below(groups.len() as u64) as usize].0.clone();
            let fault = Fault::Hold {
                topic: topics[rng.below(topics.len() as u64) as usize].clone(),
                partition: rng.below(partitions.max(1) as u64) as i32,
                service: services[rng.below(services.len() as u64) as usize].clone(),
                group,
                lasting: Duration::from_secs(rng.between(20, 60)),
            };
            faults.push((at, fault));
        }
        // Sometimes an instance is expelled twice while a partition is held: the first time it
        // gains its partitions afresh and their records pile up behind the held state (it
        // pauses them), the second time it loses them paused, and is handed them back. The run
        // then has faults other than holds, and its isolation is not judged.
        if rng.chance(0.4) {
            let instances = instance_names(app);
            let instance = instances[rng.below(instances.len() as u64) as usize].0.clone();
            let mut at = faults[0].0 + Duration::from_millis(rng.between(1_000, 5_000));
            for _ in 0..2 {
                let cut = Duration::from_millis(rng.between(7_000, 12_000));
                let fault = Fault::Expel {
                    instance: instance.clone(),
                    cut,
                };
                faults.push((at, fault));
                at += cut + Duration::from_millis(rng.between(3_000, 8_000));
            }
        }
        faults.sort_by_key(|(at, _)| *at);
        faults
    }
}

/// Every instance's name, with its service: `greet`, `greet-2`, ...
fn instance_names<W: Workload>(app: &W) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for service in app.services() {
        for k in 0..app.instances(&service).max(1) {
            let name = if k == 0 {
                service.clone()
            } else {
                format!("{service}-{}", k + 1)
            };
            out.push((name, service.clone()));
        }
    }
    out
}

/// What the nodes report while the run goes.
#[derive(Default)]
struct Reports(Mutex<Vec<Violation>>);

impl Reports {
    fn violate(&self, v: Violation) {
        let mut all = self.0.lock().expect("reports");
        if !all.contains(&v) {
            all.push(v);
        }
    }
}

static RUN_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Runs `app` for one seed, as `opts` says, to its verdict.
pub fn run<W: Workload>(app: Arc<W>, opts: &Options) -> Verdict {
    if let Err(why) = well_formed(&*app) {
        return Verdict {
            seed: opts.seed,
            mutant: opts.mutant,
            violations: vec![Violation::new("workload-well-formed", why)],
            ..Verdict::default()
        };
    }
    let plan = Plan::draw(opts.seed, &*app, opts.partitions);
    let rt = madsim::runtime::Runtime::with_seed_and_config(opts.seed, madsim::Config::default());
    framework::mutants::set(opts.mutant);
    framework::clock::clear_skews();
    framework::probes::take();
    let root = run_dir(opts.seed);
    let slot: Arc<Mutex<Option<Arc<BrokerShared>>>> = Arc::default();
    let (s, p, r) = (slot.clone(), plan.clone(), root.clone());
    let ran = std::panic::catch_unwind(AssertUnwindSafe(|| {
        rt.block_on(simulate(app, opts.clone(), p, r, s))
    }));
    framework::mutants::set(None);
    let _ = std::fs::remove_dir_all(&root);
    let mut verdict = ran.unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_else(|| "a panic".into());
        let trace = slot
            .lock()
            .expect("slot")
            .as_ref()
            .map(|b| b.lock().trace.lines().to_vec());
        Verdict {
            violations: vec![Violation::new("no-panic", what)],
            trace: trace.unwrap_or_default(),
            ..Verdict::default()
        }
    });
    verdict.seed = opts.seed;
    verdict.mutant = opts.mutant;
    verdict.plan = plan;
    verdict
}

/// Most services, and most instances of one, a run places (each gets an address of its own).
const MOST_NODES: usize = 200;

/// Whether `app` can be simulated: some topics and services, each group's topics and the
/// dead-letter topics among its topics, and at most [`MOST_NODES`] services and instances of each.
fn well_formed<W: Workload>(app: &W) -> Result<(), String> {
    let (topics, services) = (app.topics(), app.services());
    if topics.is_empty() || services.is_empty() || app.groups().is_empty() {
        return Err("a workload needs topics, services and consumer groups".into());
    }
    let named = app.groups().into_iter().flat_map(|(_, t)| t);
    if let Some(t) = named
        .chain(app.dead_letter_topics())
        .find(|t| !topics.contains(t))
    {
        return Err(format!(
            "{t} is read or dead-lettered to, but not among the topics made"
        ));
    }
    let most = services.iter().map(|s| app.instances(s)).max().unwrap_or(0);
    if services.len() > MOST_NODES || most > MOST_NODES {
        return Err(format!("at most {MOST_NODES} services, and instances of one"));
    }
    Ok(())
}

/// A fresh directory for a run's data, in memory where the machine has /dev/shm.
fn run_dir(seed: u64) -> PathBuf {
    let base = if Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    let n = RUN_COUNTER.fetch_add(1, Ordering::Relaxed);
    base.join(format!("framework-sim-{}-{seed}-{n}", std::process::id()))
}

/// The run, on madsim's main node.
async fn simulate<W: Workload>(
    app: Arc<W>,
    opts: Options,
    plan: Vec<(Duration, Fault)>,
    root: PathBuf,
    slot: Arc<Mutex<Option<Arc<BrokerShared>>>>,
) -> Verdict {
    let start_ms = now_ms();
    let bs = start_broker(&*app, &opts);
    *slot.lock().expect("slot") = Some(bs.clone());
    let handle = Handle::current();
    let reports = Arc::new(Reports::default());
    let nodes = start_instances(&app, &handle, &root, &reports);
    let feeder = handle
        .create_node()
        .name("feeder")
        .ip(IpAddr::V4(Ipv4Addr::new(10, 9, 0, 1)))
        .build();
    let rng = SplitMix64::new(opts.seed ^ 0xfeed);
    let a = app.clone();
    let feeding = feeder.spawn(async move {
        let t = SimTransport::connect("feeder").await;
        a.feed(rng, t).await;
    });
    let watches = watch_storms(&plan, &app.groups(), &bs, &reports);
    inject(&plan, &handle, &nodes, &root, &bs).await;
    for w in watches {
        let _ = w.await;
    }
    if tokio::time::timeout(FEED_WITHIN, feeding).await.is_err() {
        let what = format!("the workload's feed ran past {}s", FEED_WITHIN.as_secs());
        reports.violate(Violation::new("feed-finished", what));
    }
    settle(&*app, &bs, &reports).await;
    let hits = framework::probes::take();
    let b = bs.lock();
    let (_, broken) = crate::checks::commits_follow_work(&b, &hits.finished);
    for what in broken {
        reports.violate(Violation::new("commits-follow-work", what));
    }
    for v in app.check(&b, &hits) {
        reports.violate(v);
    }
    if let Some(bound) = app.isolation() {
        let groups = app.groups();
        for what in crate::checks::isolated(&b, &groups, (&plan, start_ms), bound, &hits.finished) {
            reports.violate(Violation::new("partitions-isolated", what));
        }
    }
    let violations = reports.0.lock().expect("reports").clone();
    Verdict {
        violations,
        probes: hits.counts,
        trace: b.trace.lines().to_vec(),
        ..Verdict::default()
    }
}

/// The broker's node, with every topic of `app` made.
fn start_broker<W: Workload>(app: &W, opts: &Options) -> Arc<BrokerShared> {
    let cfg = BrokerConfig {
        partitions: opts.partitions,
        ..BrokerConfig::default()
    };
    let mut broker = Broker::new(cfg, opts.seed, now_ms());
    for t in app.topics() {
        broker.create_topic(&t);
    }
    let bs = BrokerShared::new(broker);
    let b = bs.clone();
    Handle::current()
        .create_node()
        .name("broker")
        .ip(BROKER_ADDR.ip())
        .init(move || serve(b.clone()))
        .build();
    bs
}

/// A node per instance, each under its supervisor; their ids by name.
fn start_instances<W: Workload>(
    app: &Arc<W>,
    handle: &Handle,
    root: &Path,
    reports: &Arc<Reports>,
) -> BTreeMap<String, NodeId> {
    let mut nodes = BTreeMap::new();
    let services = app.services();
    for (i, (name, service)) in instance_names(&**app).into_iter().enumerate() {
        let s = services.iter().position(|s| *s == service).unwrap_or(0);
        let k = i - services
            .iter()
            .take(s)
            .map(|s| app.instances(s).max(1))
            .sum::<usize>();
        // Fewer than 255 of each: `well_formed` holds them to MOST_NODES.
        let ip = IpAddr::V4(Ipv4Addr::new(10, 0, s as u8 + 1, k as u8 + 1));
        let instance = Instance {
            data_dir: root.join(&name),
            name: name.clone(),
        };
        let (app, reports) = (app.clone(), reports.clone());
        let id = handle
            .create_node()
            .name(&name)
            .ip(ip)
            .init(move || supervise(app.clone(), service.clone(), instance.clone(), reports.clone()))
            .build()
            .id();
        nodes.insert(name, id);
    }
    nodes
}

/// An instance's node: runs it as a supervisor would, again a second after it stopped on an
/// error, and reports a stop no retry fixes.
async fn supervise<W: Workload>(app: Arc<W>, service: String, instance: Instance, reports: Arc<Reports>) {
    let _ = std::fs::create_dir_all(&instance.data_dir);
    loop {
        let transport = SimTransport::connect(&instance.name).await;
        let (trigger, shutdown) = Shutdown::new();
        let signal = tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                trigger.fire();
            }
            std::future::pending::<()>().await
        });
        let ran = app.run(&service, transport, instance.clone(), shutdown).await;
        signal.abort();
        match ran {
            Ok(()) => return,
            Err(e) if e.gave_up_retrying => {}
            Err(e) => reports.violate(Violation::new(
                "service-kept-running",
                format!("{} stopped on an error no retry fixes: {e}", instance.name),
            )),
        }
        tokio::time::sleep(RESTART_AFTER).await;
    }
}

/// Applies the faults at their times; returns once the last has healed.
async fn inject(
    plan: &[(Duration, Fault)],
    handle: &Handle,
    nodes: &BTreeMap<String, NodeId>,
    root: &Path,
    bs: &Arc<BrokerShared>,
) {
    let start = tokio::time::Instant::now();
    let mut healed = start;
    // What a power loss leaves is what the disk held `lost` before it: taken then.
    for (at, fault) in plan {
        if let Fault::PowerLoss { instance, lost, .. } = fault {
            let (dir, snapshot) = (root.join(instance), power_snapshot(root, instance));
            faults::snapshot_later(at.saturating_sub(*lost), dir, snapshot);
        }
    }
    for (at, fault) in plan {
        tokio::time::sleep_until(start + *at).await;
        bs.lock()
            .trace
            .push(format!("{:.3} fault {fault:?}", at.as_secs_f64()));
        let lasting = apply(fault.clone(), handle, nodes, root, bs);
        healed = healed.max(tokio::time::Instant::now() + lasting);
    }
    tokio::time::sleep_until(healed).await;
}

/// Kills node `id` now and starts it again after `down`, once `meanwhile` has done what the
/// fault does to its disk; returns `down`.
fn kill_for(
    handle: &Handle,
    id: NodeId,
    down: Duration,
    meanwhile: impl FnOnce() + Send + 'static,
) -> Duration {
    handle.kill(id);
    let h = handle.clone();
    later(down, move || {
        meanwhile();
        h.restart(id);
    });
    down
}

/// Where a power loss keeps what `instance`'s disk held before it.
fn power_snapshot(root: &Path, instance: &str) -> PathBuf {
    root.join(format!("{instance}.power-snapshot"))
}

/// Does what `fault` says now, and undoes it when it heals; returns how long it lasts.
fn apply(
    fault: Fault,
    handle: &Handle,
    nodes: &BTreeMap<String, NodeId>,
    root: &Path,
    bs: &Arc<BrokerShared>,
) -> Duration {
    match fault {
        Fault::Crash {
            instance,
            down,
            lose_disk,
        } => {
            let dir = root.join(&instance);
            kill_for(handle, nodes[&instance], down, move || {
                if lose_disk {
                    let _ = std::fs::remove_dir_all(&dir);
                }
            })
        }
        Fault::PowerLoss { instance, down, .. } => {
            let (dir, snapshot) = (root.join(&instance), power_snapshot(root, &instance));
            kill_for(handle, nodes[&instance], down, move || {
                faults::power_restored(&dir, &snapshot)
            })
        }
        Fault::Expel { instance, cut } => {
            let (net, id) = (madsim::net::NetSim::current(), nodes[&instance]);
            net.clog_node(id);
            later(cut, move || net.unclog_node(id));
            cut
        }
        Fault::LeaderChange { down } => {
            faults::leader_change(bs, down);
            down
        }
        Fault::Refuse { topic, lasting } => {
            faults::refuse_writes(bs, &topic, lasting);
            lasting
        }
        Fault::SmallDlq {
            topic,
            bytes,
            lasting,
        } => {
            faults::max_bytes(bs, &topic, bytes, lasting);
            lasting
        }
        Fault::Rebalance { group } => {
            bs.lock().rebalance(now_ms(), &group);
            Duration::ZERO
        }
        Fault::Recreate { topic } => {
            bs.lock().recreate_topic(now_ms(), &topic);
            Duration::ZERO
        }
        Fault::Storm {
            instance,
            group,
            cut,
            times,
        } => storm(nodes[&instance], (&group, cut, times), bs),
        Fault::Hold {
            topic,
            partition,
            service,
            group,
            lasting,
        } => {
            let held = Held {
                group,
                service,
                topic,
                partition: Some(partition),
            };
            faults::hold(bs, held, lasting);
            lasting
        }
    }
}

/// An instance cut off from what it hears for `cut`, then `times` rebalances of `group` 5 s
/// apart; returns how long it lasts.
fn storm(id: NodeId, (group, cut, times): (&str, Duration, u32), bs: &Arc<BrokerShared>) -> Duration {
    let net = madsim::net::NetSim::current();
    net.clog_node_in(id);
    later(cut, move || net.unclog_node_in(id));
    let every = Duration::from_secs(5);
    for n in 1..=times {
        let (b, group) = (bs.clone(), group.to_owned());
        later(cut + every * n, move || b.lock().rebalance(now_ms(), &group));
    }
    cut + every * times
}

/// Consecutive rebalances of a storm over which a group that has a backlog must commit something.
const STORM_STALL: usize = 4;

/// `commits-move-under-rebalances`: through a storm that no other fault overlaps, the group's
/// commit moves at least once every [`STORM_STALL`] rebalances while it has a backlog (each
/// rebalance hands the partitions out again, and what was received before it is dropped, not
/// handled again ahead of what comes now). Watches each such storm just before each of its
/// rebalances.
fn watch_storms(
    plan: &[(Duration, Fault)],
    groups: &[(String, Vec<String>)],
    bs: &Arc<BrokerShared>,
    reports: &Arc<Reports>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let windows: Vec<(Duration, Duration)> = plan.iter().map(|(at, f)| (*at, *at + f.lasting())).collect();
    let mut watches = Vec::new();
    for (i, (at, fault)) in plan.iter().enumerate() {
        let Fault::Storm {
            group, cut, times, ..
        } = fault
        else {
            continue;
        };
        let (from, to) = (*at + *cut, *at + fault.lasting());
        let margin = Duration::from_secs(10);
        let overlapped = windows
            .iter()
            .enumerate()
            .any(|(j, (a, b))| j != i && *a < to + margin && from < *b + margin);
        let Some((_, topics)) = groups.iter().find(|(g, _)| g == group) else {
            continue;
        };
        if overlapped || (*times as usize) < STORM_STALL {
            continue;
        }
        let (bs, reports, group, topics) = (bs.clone(), reports.clone(), group.clone(), topics.clone());
        let (start, times) = (tokio::time::Instant::now(), *times);
        watches.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            for n in 1..=times {
                let just_before = from + Duration::from_secs(5) * n - Duration::from_millis(100);
                tokio::time::sleep_until(start + just_before).await;
                samples.push(progress(&bs.lock(), &group, &topics));
            }
            let stalled = samples.windows(STORM_STALL).find(|w| {
                w.iter().all(|(_, lag)| *lag > 0) && w.iter().all(|(c, _)| *c == w[0].0)
            });
            if let Some(w) = stalled {
                let what = format!(
                    "{group} committed nothing over {STORM_STALL} rebalances of a storm with {} records behind",
                    w[0].1
                );
                reports.violate(Violation::new("commits-move-under-rebalances", what));
            }
        }));
    }
    watches
}

/// `group`'s committed offsets on `topics`, summed, and how far behind their ends it is.
fn progress(b: &Broker, group: &str, topics: &[String]) -> (i64, i64) {
    let committed = b.committed();
    let (mut sum, mut lag) = (0, 0);
    for topic in topics {
        for (p, part) in b.partitions(topic).iter().enumerate() {
            let at = committed
                .iter()
                .find(|(g, t, q, _)| g == group && t == topic && *q == p as i32)
                .map_or(0, |c| c.3);
            sum += at;
            lag += framework::transport::commits::uncommitted(part.end(), at);
        }
    }
    (sum, lag)
}

impl Fault {
    /// How long it lasts from when it hits.
    pub fn lasting(&self) -> Duration {
        match self {
            Fault::Crash { down, .. } | Fault::LeaderChange { down } => *down,
            Fault::Expel { cut, .. } => *cut,
            Fault::PowerLoss { down, .. } => *down,
            Fault::Refuse { lasting, .. } | Fault::SmallDlq { lasting, .. } | Fault::Hold { lasting, .. } => {
                *lasting
            }
            Fault::Rebalance { .. } | Fault::Recreate { .. } => Duration::ZERO,
            Fault::Storm { cut, times, .. } => *cut + Duration::from_secs(5) * *times,
        }
    }
}

/// Waits for every group to commit the whole log of its topics, at most [`SETTLE`] and what the
/// workload adds.
async fn settle<W: Workload>(app: &W, bs: &BrokerShared, reports: &Reports) {
    let within = SETTLE + app.settle();
    let deadline = tokio::time::Instant::now() + within;
    let groups = app.groups();
    loop {
        let behind: Vec<_> = groups
            .iter()
            .flat_map(|(g, topics)| {
                let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
                let b = bs.lock();
                crate::checks::behind(&b, g, &topics)
                    .into_iter()
                    .map(|(t, p, n)| (g.clone(), t, p, n))
                    .collect::<Vec<_>>()
            })
            .collect();
        let caught_up = app.caught_up(&bs.lock());
        if behind.is_empty() && caught_up {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            if !behind.is_empty() {
                let what = format!(
                    "{}s after the faults healed, still behind (group, topic, partition, records): {behind:?}",
                    within.as_secs()
                );
                reports.violate(Violation::new("whole-log-committed", what));
            }
            if !caught_up {
                let what = format!(
                    "{}s after the faults healed, the workload's readers had not read the whole log",
                    within.as_secs()
                );
                reports.violate(Violation::new("readers-caught-up", what));
            }
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
