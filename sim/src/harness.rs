//! One simulated run: a broker node, one node per service running the production `run` entry
//! point, a customers node placing orders through the command side, a checker node watching the
//! view; faults applied from the scenario; then the two phases of checks.
//!
//! 1. Safety, while faults happen: no status moves backwards in the view; a stuck mark is only on
//!    an order that sat still for the SLA; an order that sits still longer than SLA + watchdog
//!    period (+ 5 s to carry the mark) while the status service is healthy is marked (counted
//!    from when the view shows that status, if an event arrived already old, and from the end of
//!    any fault that kept the watchdog from working); no order is marked at all in a fault-free run.
//! 2. Convergence, after the faults heal: within the scenario's `heal` budget every accepted order
//!    reaches 999 in the view and every group has committed the whole log. Then: no order was
//!    delivered twice; the view equals the view rebuilt from the log; every event of an accepted
//!    order made it into pizza-status; every hostile record the scenario sent that is not its
//!    topic's event was dead-lettered by every service that consumes the topic, and pizza-dlq holds
//!    nothing else. Throughout: no service stops on an error that retrying could not fix, and
//!    nothing panics.

mod customers;
mod faults;
mod supervisor;
mod verdict;

use std::collections::{BTreeMap, BTreeSet};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use madsim::runtime::Handle;
use pizza::clock::{now_ms, TimeScale};
use pizza::config::{ServiceName, SysConfig};
use pizza::domain::{decode, StatusEvent, StatusOnly};
use pizza::hostile::{self, Expect, Kind, TAG_HEADER};
use pizza::mutants::Mutant;
use pizza::services::ServiceConfig;
use pizza::store::ViewStore;

use crate::broker::{Broker, BrokerConfig};
use crate::node::{serve, BrokerShared, SimTransport};
use crate::scenario::Scenario;
use customers::place_orders;
use faults::apply_fault;
use supervisor::run_service;
pub use verdict::{Invariant, Outcome, Violation};

/// How often the checker reads the view.
const POLL_EVERY: Duration = Duration::from_millis(500);
/// Time allowed for a stuck mark to travel from the watchdog's produce into the view.
const MARK_SLACK_MS: i64 = 5_000;

/// What to run.
#[derive(Clone, Debug)]
pub struct RunOptions {
    pub scenario: Scenario,
    pub seed: u64,
    pub mutant: Option<Mutant>,
    /// Overrides the scenario's order count.
    pub orders: Option<u32>,
}

/// State the nodes share with the harness.
#[derive(Default)]
struct Shared {
    accepted: Mutex<BTreeMap<String, i64>>,
    violations: Mutex<Vec<Violation>>,
    /// Windows (epoch ms) in which the watchdog may be kept from marking.
    impaired: Mutex<Vec<(i64, i64)>>,
    /// Latest view: order -> (status, stuck).
    view: Mutex<BTreeMap<String, (i64, bool)>>,
    restarts: AtomicU64,
    /// Orders the customers were told could not be placed.
    refused: AtomicU64,
    /// The hostile records sent, by number (their `sim.hostile` header): kind and expectation.
    hostile: Mutex<BTreeMap<u32, (Kind, Expect)>>,
    start_ms: AtomicU64,
}

impl Shared {
    fn since_start(&self) -> i64 {
        now_ms() - self.start_ms.load(Ordering::Relaxed) as i64
    }

    fn violate(&self, invariant: Invariant, order: Option<&str>, detail: String) {
        self.violations.lock().expect("violations").push(Violation {
            invariant,
            order: order.map(str::to_owned),
            at_ms: self.since_start(),
            detail,
        });
    }
}

static RUN_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Runs one seed of a scenario to its verdict.
pub fn run(opts: &RunOptions) -> Outcome {
    let mut sc = opts.scenario.for_seed(opts.seed);
    if let Some(n) = opts.orders {
        sc.orders = n;
    }
    let mut config = madsim::Config::default();
    config.net.send_latency = sc.latency.0..sc.latency.1;
    let rt = madsim::runtime::Runtime::with_seed_and_config(opts.seed, config);
    let base = if Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    let dir = base.join(format!(
        "pizza-sim-{}-{}-{}",
        std::process::id(),
        opts.seed,
        RUN_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    pizza::mutants::set(opts.mutant);
    let broker = Arc::new(Mutex::new(None));
    let ran = std::panic::catch_unwind(AssertUnwindSafe(|| {
        rt.block_on(simulate(sc.clone(), opts.seed, dir.clone(), broker.clone()))
    }));
    pizza::mutants::set(None);
    let _ = std::fs::remove_dir_all(&dir);
    let mut outcome = match ran {
        Ok(o) => o,
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "a panic".into());
            let shared: Option<Arc<BrokerShared>> = broker.lock().expect("broker slot").clone();
            let (trace, trace_hash) = shared.map_or((Vec::new(), 0), |b| {
                let b = b.lock();
                (b.trace.lines().to_vec(), b.trace.hash())
            });
            Outcome {
                scenario: String::new(),
                scenario_text: String::new(),
                seed: 0,
                mutant: None,
                violations: vec![Violation {
                    invariant: Invariant::NoPanic,
                    order: None,
                    at_ms: 0,
                    detail: msg,
                }],
                trace_hash,
                trace,
                accepted: 0,
                refused: 0,
                delivered: 0,
                hostile: 0,
                dead_lettered: 0,
                restarts: 0,
                simulated: Duration::ZERO,
            }
        }
    };
    outcome.scenario = sc.name.clone();
    outcome.scenario_text = sc.to_text();
    outcome.seed = opts.seed;
    outcome.mutant = opts.mutant;
    outcome
}

fn service_config(sc: &Scenario, root: &Path, service: ServiceName) -> ServiceConfig {
    let mut sys = SysConfig::default();
    sys.num_partitions = sc.partitions;
    let mut cfg = ServiceConfig::new(sys, root.join(service.as_str()));
    cfg.concurrency = sc.ovens;
    cfg.time_scale = sc.time_scale;
    cfg.max_in_flight = (sc.ovens * 4).max(1024);
    cfg
}

async fn simulate(
    sc: Scenario,
    seed: u64,
    root: PathBuf,
    slot: Arc<Mutex<Option<Arc<BrokerShared>>>>,
) -> Outcome {
    let handle = Handle::current();
    let start = now_ms();
    let shared = Arc::new(Shared::default());
    shared.start_ms.store(start as u64, Ordering::Relaxed);
    let mut sys = SysConfig::default();
    sys.num_partitions = sc.partitions;
    let mut broker = Broker::new(
        BrokerConfig {
            partitions: sc.partitions,
            ..BrokerConfig::default()
        },
        seed,
        start,
    );
    for t in sys.topics.all() {
        broker.create_topic(t);
    }
    let bs = BrokerShared::new(broker);
    *slot.lock().expect("broker slot") = Some(bs.clone());
    for f in &sc.faults {
        if f.kind.impairs_watchdog() {
            let from = start + f.at.as_millis() as i64;
            shared
                .impaired
                .lock()
                .expect("impaired")
                .push((from, from + f.kind.lasting().as_millis() as i64));
        }
    }

    let b = bs.clone();
    handle
        .create_node()
        .name("broker")
        .ip("10.0.0.1".parse().expect("ip"))
        .init(move || serve(b.clone()))
        .build();

    let mut nodes = BTreeMap::new();
    for (i, service) in ServiceName::CONSUMERS.into_iter().enumerate() {
        let cfg = service_config(&sc, &root, service);
        let (shared, bs) = (shared.clone(), bs.clone());
        let period_ms = cfg.time_scale.scale_secs(sys.watchdog_period_secs).as_millis() as i64;
        let node = handle
            .create_node()
            .name(service.as_str())
            .ip(format!("10.0.1.{}", i + 1).parse().expect("ip"))
            .init(move || run_service(service, cfg.clone(), shared.clone(), bs.clone(), period_ms))
            .build();
        nodes.insert(service, node.id());
    }

    // Customers, on their own node, through the command side the web app uses.
    let customers = handle
        .create_node()
        .name("customers")
        .ip("10.0.2.1".parse().expect("ip"))
        .build();
    let placing = customers.spawn(place_orders(sc.clone(), seed, sys.clone(), shared.clone()));

    // The checker watches the view from its own node.
    let checker = handle
        .create_node()
        .name("checker")
        .ip("10.0.3.1".parse().expect("ip"))
        .build();
    let view_path = service_config(&sc, &root, ServiceName::Status).view_path();
    let faultless = sc.faults.is_empty();
    checker.spawn(watch_view(
        view_path.clone(),
        sys.clone(),
        sc.time_scale,
        shared.clone(),
        faultless,
    ));

    // Phase 1: the faults, in time order.
    for f in &sc.faults {
        let at = Duration::from_millis((start + f.at.as_millis() as i64 - now_ms()).max(0) as u64);
        tokio::time::sleep(at).await;
        bs.lock()
            .trace
            .push(format!("{} harness fault: {f}", fmt_t(shared.since_start())));
        apply_fault(&handle, &nodes, &bs, &f.kind, &root);
    }
    let _ = placing.await;
    let faults_end = start + sc.faults_end().as_millis() as i64;
    let wait = (faults_end - now_ms()).max(0) as u64;
    tokio::time::sleep(Duration::from_millis(wait + 1)).await;
    bs.lock()
        .trace
        .push(format!("{} harness healed", fmt_t(shared.since_start())));

    // Phase 2: converge within the heal budget.
    let budget_end = now_ms() + sc.heal.as_millis() as i64;
    let converged = loop {
        let pending = not_delivered(&shared);
        let lag: i64 = bs.lock().lag().values().sum();
        if pending.is_empty() && lag == 0 {
            break true;
        }
        if now_ms() >= budget_end {
            break false;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    if !converged {
        let view = shared.view.lock().expect("view").clone();
        for order in not_delivered(&shared) {
            let at = view
                .get(&order)
                .map_or("not in the view".to_owned(), |(s, _)| format!("at status {s}"));
            shared.violate(
                Invariant::AllAcceptedDelivered,
                Some(&order),
                format!("{at} after the {}s heal budget", sc.heal.as_secs()),
            );
        }
        let lag = bs.lock().lag();
        for (group, n) in lag.into_iter().filter(|(_, n)| *n > 0) {
            shared.violate(
                Invariant::AllAcceptedDelivered,
                None,
                format!("group {group} still has {n} records uncommitted after the heal budget"),
            );
        }
    }

    // The final checks read the log (the broker's own state) and the view.
    let rebuild_path = root.join("rebuilt.db");
    let cfg = service_config(&sc, &root, ServiceName::Status);
    let rebuilt = checker
        .spawn(async move {
            let t = SimTransport::connect("checker").await;
            pizza::view::rebuild(&t, &cfg, &rebuild_path)
                .await
                .map(|_| rebuild_path)
        })
        .await
        .expect("the checker node runs");
    match rebuilt {
        Ok(path) => compare_views(&shared, &view_path, &path),
        Err(e) => shared.violate(Invariant::ViewEqualsRebuild, None, format!("rebuild failed: {e}")),
    }
    let (delivered, hostile, dead_lettered) = check_log(&bs, &sys, &shared);
    let b = bs.lock();
    let accepted = shared.accepted.lock().expect("accepted").len();
    let violations = std::mem::take(&mut *shared.violations.lock().expect("violations"));
    Outcome {
        scenario: sc.name.clone(),
        scenario_text: String::new(),
        seed,
        mutant: None,
        violations,
        trace_hash: b.trace.hash(),
        trace: b.trace.lines().to_vec(),
        accepted,
        refused: shared.refused.load(Ordering::Relaxed),
        delivered,
        hostile,
        dead_lettered,
        restarts: shared.restarts.load(Ordering::Relaxed),
        simulated: Duration::from_millis((now_ms() - start).max(0) as u64),
    }
}

fn fmt_t(ms: i64) -> String {
    format!("{}.{:03}", ms / 1000, ms % 1000)
}

fn not_delivered(shared: &Shared) -> Vec<String> {
    let view = shared.view.lock().expect("view");
    shared
        .accepted
        .lock()
        .expect("accepted")
        .keys()
        .filter(|o| view.get(*o).is_none_or(|(s, _)| *s != 999))
        .cloned()
        .collect()
}

/// The checker's watch over the view: safety checks on every read.
async fn watch_view(path: PathBuf, sys: SysConfig, scale: TimeScale, shared: Arc<Shared>, faultless: bool) {
    let codes = &sys.codes;
    // The SLA and the watchdog's period scale with the services' time; at scale 0 the watchdog is
    // off (nothing takes time), so no order may be marked and none is due a mark.
    let watchdog_on = scale.factor() > 0.0;
    let sla_ms = scale.scale_secs(sys.stuck_after_secs).as_millis() as i64;
    let period_ms = scale.scale_secs(sys.watchdog_period_secs).as_millis() as i64;
    let mut view = None;
    // Order -> (status, when the checker first saw it at that status).
    let mut seen: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    let mut reported: BTreeSet<(Invariant, String)> = BTreeSet::new();
    loop {
        tokio::time::sleep(POLL_EVERY).await;
        if view.is_none() && path.exists() {
            view = ViewStore::open_read_only(&path).ok();
        }
        let Some(v) = &view else { continue };
        let Ok(rows) = v.status_rows() else { continue };
        let now = now_ms();
        let impaired = shared.impaired.lock().expect("impaired").clone();
        let mut violate = |inv: Invariant, order: &str, detail: String| {
            if reported.insert((inv, order.to_owned())) {
                shared.violate(inv, Some(order), detail);
            }
        };
        let mut latest = BTreeMap::new();
        for (order, status, status_ts, stuck, stuck_ts) in rows {
            let since = match seen.get(&order) {
                Some((prev, since)) if *prev == status => *since,
                Some((prev, _)) => {
                    if let (Some(a), Some(b)) = (codes.rank(*prev), codes.rank(status)) {
                        if b < a {
                            violate(
                                Invariant::NoRegression,
                                &order,
                                format!("status moved back from {prev} to {status}"),
                            );
                        }
                    }
                    now
                }
                None => now,
            };
            seen.insert(order.clone(), (status, since));
            if stuck {
                if faultless {
                    violate(
                        Invariant::NoStuckWithoutFaults,
                        &order,
                        format!("marked stuck at {status}"),
                    );
                }
                let since = stuck_ts.unwrap_or(now) - status_ts;
                if !watchdog_on {
                    violate(
                        Invariant::StuckOnlyWhenStuck,
                        &order,
                        format!("marked stuck at {status} at time scale 0, where the watchdog is off"),
                    );
                } else if since < sla_ms {
                    violate(
                        Invariant::StuckOnlyWhenStuck,
                        &order,
                        format!(
                            "marked stuck at {status} {:.1}s after reaching it (SLA {}s)",
                            since as f64 / 1000.0,
                            sla_ms / 1000
                        ),
                    );
                }
            } else if watchdog_on && !codes.is_final(status) {
                let active = impaired.iter().any(|(a, b)| *a <= now && now <= *b);
                // After a fault that kept the watchdog from working, it starts counting again.
                let healed = impaired
                    .iter()
                    .filter(|(a, b)| *b >= status_ts && *a <= now)
                    .map(|(_, b)| *b)
                    .max()
                    .unwrap_or(i64::MIN);
                // The watchdog may mark it once it is SLA old by its event time *and* the view
                // shows it (a late event can arrive already old), then within a period.
                let due = (status_ts + sla_ms).max(since).max(healed);
                if !active && now - due > period_ms + MARK_SLACK_MS {
                    violate(
                        Invariant::StuckMarkedInTime,
                        &order,
                        format!(
                            "at {status} for {:.1}s and not marked stuck (SLA {}s + period {}s)",
                            (now - status_ts) as f64 / 1000.0,
                            sla_ms / 1000,
                            period_ms / 1000
                        ),
                    );
                }
            }
            latest.insert(order, (status, stuck));
        }
        *shared.view.lock().expect("view") = latest;
    }
}

fn compare_views(shared: &Shared, live: &Path, rebuilt: &Path) {
    let dump = |p: &Path| ViewStore::open_read_only(p).and_then(|v| v.dump());
    match (dump(live), dump(rebuilt)) {
        (Ok(a), Ok(b)) if a == b => {}
        (Ok(a), Ok(b)) => {
            let diff = a
                .status
                .iter()
                .zip(&b.status)
                .find(|(x, y)| x != y)
                .map(|(x, y)| (x.0.clone(), format!("live {x:?}, rebuilt {y:?}")));
            let (order, detail) = diff.unwrap_or_else(|| {
                (
                    String::new(),
                    format!(
                        "live has {} status rows, {} timeline rows, {} details; rebuilt {}, {}, {}",
                        a.status.len(),
                        a.timeline.len(),
                        a.details.len(),
                        b.status.len(),
                        b.timeline.len(),
                        b.details.len()
                    ),
                )
            });
            let order = (!order.is_empty()).then_some(order);
            shared.violate(Invariant::ViewEqualsRebuild, order.as_deref(), detail);
        }
        (a, b) => shared.violate(
            Invariant::ViewEqualsRebuild,
            None,
            format!("could not read the views: {:?} / {:?}", a.err(), b.err()),
        ),
    }
}

/// Checks on the log itself; returns (orders delivered, hostile records in the log, records in
/// pizza-dlq).
fn check_log(bs: &BrokerShared, sys: &SysConfig, shared: &Shared) -> (usize, usize, usize) {
    let b = bs.lock();
    let topics = &sys.topics;
    let accepted = shared.accepted.lock().expect("accepted").clone();
    let tag = |r: &crate::broker::Stored| r.header(TAG_HEADER).and_then(|n| n.parse::<u32>().ok());
    // Deliveries: a redelivered input may re-send the same event, never a second delivery.
    let mut deliveries: BTreeMap<String, BTreeSet<i64>> = BTreeMap::new();
    for part in b.log(&topics.delivered) {
        for r in part.iter().filter(|r| tag(r).is_none()) {
            let key = String::from_utf8_lossy(r.key()).into_owned();
            let ts = decode::<StatusOnly>(r.payload())
                .ok()
                .and_then(|e| e.timestamp)
                .unwrap_or_default();
            deliveries.entry(key).or_default().insert(ts);
        }
    }
    for (order, times) in &deliveries {
        if times.len() > 1 {
            shared.violate(
                Invariant::NoDoubleDelivery,
                Some(order),
                format!("delivered {} times (timestamps {times:?})", times.len()),
            );
        }
    }
    // No event lost: every status a source topic carries for an accepted order reached pizza-status.
    let mut merged: BTreeSet<(String, i64)> = BTreeSet::new();
    for part in b.log(&topics.status) {
        for r in part {
            if let Ok(e) = decode::<StatusEvent>(r.payload()) {
                merged.insert((String::from_utf8_lossy(r.key()).into_owned(), e.status));
            }
        }
    }
    for topic in topics.sources() {
        for part in b.log(topic) {
            for r in part {
                let key = String::from_utf8_lossy(r.key()).into_owned();
                if !accepted.contains_key(&key) {
                    continue;
                }
                let Ok(e) = decode::<StatusOnly>(r.payload()) else {
                    continue;
                };
                if !merged.contains(&(key.clone(), e.status)) {
                    shared.violate(
                        Invariant::NoEventLost,
                        Some(&key),
                        format!("status {} on {topic} never reached {}", e.status, topics.status),
                    );
                }
            }
        }
    }
    // The hostile records that reached the log, wherever the producer was told they went.
    let sent = shared.hostile.lock().expect("hostile").clone();
    let mut hostile_in_log: BTreeMap<(String, i32, i64), (u32, Kind, Expect)> = BTreeMap::new();
    for topic in hostile::consumed_topics(topics) {
        for (p, part) in b.log(topic).iter().enumerate() {
            for (o, r) in part.iter().enumerate() {
                if let Some((n, (kind, expect))) = tag(r).and_then(|n| Some((n, *sent.get(&n)?))) {
                    hostile_in_log.insert((topic.to_owned(), p as i32, o as i64), (n, kind, expect));
                }
            }
        }
    }
    // pizza-dlq: only records that are not their topic's event, each with a reason, and every one of
    // them from every service that consumes its topic.
    let mut dead: BTreeSet<((String, i32, i64), String)> = BTreeSet::new();
    let mut dlq_records = 0;
    for part in b.log(&topics.dlq) {
        for r in part {
            dlq_records += 1;
            let source = (
                r.header("dlq.source.topic").unwrap_or_default(),
                r.header("dlq.source.partition")
                    .and_then(|p| p.parse().ok())
                    .unwrap_or(-1),
                r.header("dlq.source.offset")
                    .and_then(|o| o.parse().ok())
                    .unwrap_or(-1),
            );
            let service = r.header("dlq.service").unwrap_or_default();
            let reason = r.header("dlq.reason").unwrap_or_default();
            let reads = service
                .parse::<ServiceName>()
                .is_ok_and(|s| topics.consumers_of(&source.0).contains(&s));
            match hostile_in_log.get(&source) {
                Some((_, _, Expect::DeadLettered)) if !reason.is_empty() && reads => {
                    dead.insert((source, service));
                }
                other => {
                    let what = other.map_or("not a hostile record".to_owned(), |(n, kind, expect)| {
                        format!("hostile record #{n}, {}, expected {expect:?}", kind.name())
                    });
                    shared.violate(
                        Invariant::DlqOnlyMalformed,
                        Some(&String::from_utf8_lossy(r.key())),
                        format!(
                            "{service} dead-lettered {}/{}@{} ({what}): {reason:?}",
                            source.0, source.1, source.2
                        ),
                    );
                }
            }
        }
    }
    for (source, (n, kind, expect)) in &hostile_in_log {
        if *expect != Expect::DeadLettered {
            continue;
        }
        for service in topics.consumers_of(&source.0) {
            if !dead.contains(&(source.clone(), service.as_str().to_owned())) {
                shared.violate(
                    Invariant::MalformedDeadLettered,
                    None,
                    format!(
                        "hostile record #{n} ({}) at {}/{}@{} never reached {} from {service}",
                        kind.name(),
                        source.0,
                        source.1,
                        source.2,
                        topics.dlq
                    ),
                );
            }
        }
    }
    let delivered = accepted.keys().filter(|o| deliveries.contains_key(*o)).count();
    (delivered, hostile_in_log.len(), dlq_records)
}
