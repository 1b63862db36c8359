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

mod checker;
mod customers;
mod faults;
mod supervisor;
mod verdict;

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use madsim::runtime::Handle;
use pizza::clock::now_ms;
use pizza::config::{ServiceName, SysConfig};
use pizza::hostile::{Expect, Kind};
use pizza::mutants::Mutant;
use pizza::services::ServiceConfig;

use crate::broker::{Broker, BrokerConfig};
use crate::node::{serve, BrokerShared};
use crate::scenario::Scenario;
use checker::{check_log, check_rebuild, converge, watch_view};
use customers::place_orders;
use faults::apply_fault;
use supervisor::run_service;
pub use verdict::{Invariant, Outcome, Violation};

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
    converge(&sc, &bs, &shared).await;

    // The final checks read the log (the broker's own state) and the view.
    let cfg = service_config(&sc, &root, ServiceName::Status);
    check_rebuild(&checker, cfg, &root, &view_path, &shared).await;
    let counts = check_log(&bs, &sys, &shared);
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
        delivered: counts.delivered,
        hostile: counts.hostile,
        dead_lettered: counts.dead_lettered,
        restarts: shared.restarts.load(Ordering::Relaxed),
        simulated: Duration::from_millis((now_ms() - start).max(0) as u64),
    }
}

fn fmt_t(ms: i64) -> String {
    format!("{}.{:03}", ms / 1000, ms % 1000)
}
