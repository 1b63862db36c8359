//! The simulated cluster: which node runs what, at which address, and how each is configured.
//!
//! | node | address | what runs there |
//! |---|---|---|
//! | `broker` | 10.0.0.1:9092 ([`BROKER_ADDR`]) | the simulated Kafka broker ([`crate::broker`]), served over madsim's network by [`crate::node::serve`] |
//! | `assemble` | 10.0.1.1 | the assemble service's production `run`, under its [supervisor](super::supervisor) |
//! | `bake` | 10.0.1.2 | bake, likewise |
//! | `deliver` | 10.0.1.3 | deliver, likewise |
//! | `merge` | 10.0.1.4 | merge, likewise |
//! | `status` | 10.0.1.5 | status (the view, and the watchdog that marks stuck orders), likewise |
//! | `customers` | 10.0.2.1 | the [customers](super::customers): orders through the command side the web app uses, and the scenario's bad records |
//! | `checker` | 10.0.3.1 | the [checker](super::checker): reads the view every 500 ms, and rebuilds it from the log at the end |
//!
//! A service that runs as more than one instance (the scenario's `instances`, `scale-up`) has
//! its further instances on nodes `deliver-2`, `deliver-3`, ... at 10.1.k.x, each with a data
//! directory of its own; faults that name a service hit its first instance.
//!
//! The services are numbered in `ServiceName::CONSUMERS` order ([`service_ip`]); the web app has
//! no node of its own, the customers stand in for it. Every node reaches the broker at
//! [`BROKER_ADDR`] through [`SimTransport`](crate::node::SimTransport). The harness itself (the
//! faults, phase 2's wait, the checks of the log) runs on madsim's main node, which has no address:
//! it reads and steers the broker's state directly, not over the network.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use madsim::runtime::{Handle, NodeHandle};
use madsim::task::NodeId;
use pizza::config::{ServiceName, SysConfig};
use pizza::options::{ServiceConfig, ServiceOpts};

use super::supervisor::run_service;
use super::Shared;
use crate::broker::{Broker, BrokerConfig};
use crate::node::{serve, BrokerShared, BROKER_ADDR};
use crate::scenario::Scenario;
/// The customers' node.
const CUSTOMERS_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 1);
/// The checker's node.
const CHECKER_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 3, 1);

/// The node of instance `k` of the `i`th service in `ServiceName::CONSUMERS`: 10.0.1.1
/// onwards for the first instances, 10.1.k.1 onwards for the `k`th further ones.
fn service_ip(i: usize, k: usize) -> IpAddr {
    let host = u8::try_from(i + 1).expect("fewer than 255 services");
    if k == 0 {
        return Ipv4Addr::new(10, 0, 1, host).into();
    }
    let k = u8::try_from(k).expect("fewer than 255 instances");
    Ipv4Addr::new(10, 1, k, host).into()
}

/// The node name of instance `k` of `service`: the service's name for the first, then
/// `deliver-2`, `deliver-3`, ...
pub(super) fn instance_name(service: ServiceName, k: usize) -> String {
    if k == 0 {
        service.as_str().to_owned()
    } else {
        format!("{}-{}", service.as_str(), k + 1)
    }
}

/// The shop's configuration in a run: the defaults, with the scenario's partitions.
pub(super) fn sys_config(sc: &Scenario) -> SysConfig {
    let mut sys = SysConfig::default();
    sys.num_partitions = sc.partitions;
    sys
}

/// A service's configuration in a run: its data directory under `root`, and the scenario's concurrency
/// and time scale.
pub(super) fn service_config(sc: &Scenario, root: &Path, service: ServiceName, k: usize) -> ServiceConfig {
    let opts = ServiceOpts::from_args(service_args(sc, root, service, k))
        .expect("the simulation's service options parse");
    let data_dir = opts.data_dir.clone().expect("given");
    opts.service_config(sys_config(sc), data_dir)
}

/// Where a service's first instance keeps its files (what a `lose-disk` crash deletes).
pub(super) fn data_dir(root: &Path, service: ServiceName) -> PathBuf {
    instance_dir(root, service, 0)
}

/// Where instance `k` of a service keeps its files.
pub(super) fn instance_dir(root: &Path, service: ServiceName, k: usize) -> PathBuf {
    root.join(instance_name(service, k))
}

/// The command line of a service node, as `pizza serve SERVICE` would take it: the node runs the
/// configuration the binary's own option type ([`ServiceOpts`]) makes of it.
pub(super) fn service_args(sc: &Scenario, root: &Path, service: ServiceName, k: usize) -> Vec<String> {
    let mut args = vec![
        "--data-dir".into(),
        instance_dir(root, service, k).display().to_string(),
        "--time-scale".into(),
        sc.time_scale.factor().to_string(),
        "--concurrency".into(),
        sc.concurrency.to_string(),
    ];
    if let Some(n) = sc.in_flight {
        args.extend(["--max-in-flight".into(), n.to_string()]);
    }
    args
}

/// The broker's state, with every topic of the shop created at the scenario's partitions; its
/// own choices (reordering, say) draw from `seed`.
pub(super) fn broker_state(sc: &Scenario, sys: &SysConfig, seed: u64, start_ms: i64) -> Arc<BrokerShared> {
    let mut broker = Broker::new(
        BrokerConfig {
            partitions: sc.partitions,
            ..BrokerConfig::default()
        },
        seed,
        start_ms,
    );
    for t in sys.topics.to_create() {
        broker.create_topic(t);
    }
    broker.ambiguous = sc.ambiguous;
    broker.gaps = sc.log.gaps;
    broker.codecs = sc.log.codecs;
    let shared = BrokerShared::new(broker);
    shared.errors_per_million.store(
        (sc.log.errors * 1_000_000.0) as u64,
        std::sync::atomic::Ordering::Relaxed,
    );
    shared
}

/// Starts instance `k` of a service on a node of its own; returns the node.
type Spawn = Box<dyn Fn(ServiceName, usize) -> NodeId + Send + Sync>;

/// An instance of a service.
#[derive(Clone, Copy, Debug)]
pub(super) struct Instance {
    pub id: NodeId,
    /// Not stopped by a scale-down.
    pub running: bool,
}

/// Every instance of each service, in the order they started; shared with the faults' timers.
#[derive(Clone, Default)]
pub(super) struct Instances(Arc<std::sync::Mutex<BTreeMap<ServiceName, Vec<Instance>>>>);

impl Instances {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<ServiceName, Vec<Instance>>> {
        self.0.lock().expect("instances")
    }

    /// Whether node `id` is an instance of `service` that no scale-down has stopped.
    pub fn is_running(&self, service: ServiceName, id: NodeId) -> bool {
        self.lock()
            .get(&service)
            .is_some_and(|l| l.iter().any(|i| i.id == id && i.running))
    }
}

/// The running cluster, as the faults and the checks need it.
pub(super) struct Cluster {
    pub handle: Handle,
    /// The broker's state: the harness slows and reorders it, and reads its log at the end.
    pub broker: Arc<BrokerShared>,
    /// Each service's first instance's node, for the faults that crash, stop, pause or clog one.
    pub services: BTreeMap<ServiceName, NodeId>,
    /// Every instance of each service, in the order they started.
    instances: Instances,
    spawn: Spawn,
    /// The broker's and the customers' nodes, for the faults that cut one off.
    pub others: std::sync::Mutex<BTreeMap<&'static str, NodeId>>,
}

impl Cluster {
    /// Starts the broker's node, then a node per instance of each service, running under its
    /// supervisor.
    pub fn start(
        sc: &Scenario,
        sys: &SysConfig,
        root: &Path,
        broker: Arc<BrokerShared>,
        shared: &Arc<Shared>,
    ) -> Cluster {
        let handle = Handle::current();
        let b = broker.clone();
        let broker_node = handle
            .create_node()
            .name("broker")
            .ip(BROKER_ADDR.ip())
            .init(move || serve(b.clone()))
            .build();
        let spawn: Spawn = {
            let (sc, sys, root, shared, handle) = (
                sc.clone(),
                sys.clone(),
                root.to_owned(),
                shared.clone(),
                handle.clone(),
            );
            let broker = broker.clone();
            Box::new(move |service, k| {
                let i = ServiceName::CONSUMERS
                    .iter()
                    .position(|s| *s == service)
                    .expect("a consuming service");
                let cfg = service_config(&sc, &root, service, k);
                let (shared, bs) = (shared.clone(), broker.clone());
                let period_ms = cfg.time_scale.scale_secs(sys.watchdog_period_secs).as_millis() as i64;
                let name = instance_name(service, k);
                let node_name = name.clone();
                let node = handle
                    .create_node()
                    .name(&name)
                    .ip(service_ip(i, k))
                    .init(move || {
                        run_service(
                            (service, node_name.clone()),
                            cfg.clone(),
                            shared.clone(),
                            bs.clone(),
                            period_ms,
                        )
                    })
                    .build();
                set_skew(&sc, &name, node.id());
                node.id()
            })
        };
        let mut services = BTreeMap::new();
        let mut instances = BTreeMap::new();
        for service in ServiceName::CONSUMERS {
            let started: Vec<Instance> = (0..sc.instances_of(service))
                .map(|k| Instance {
                    id: spawn(service, k),
                    running: true,
                })
                .collect();
            services.insert(service, started[0].id);
            instances.insert(service, started);
        }
        Cluster {
            handle,
            broker,
            services,
            instances: Instances(Arc::new(std::sync::Mutex::new(instances))),
            spawn,
            others: std::sync::Mutex::new(BTreeMap::from([("broker", broker_node.id())])),
        }
    }

    /// Starts one more instance of `service`; returns its name.
    pub fn scale_up(&self, service: ServiceName) -> String {
        let mut all = self.instances.lock();
        let list = all.entry(service).or_default();
        let k = list.len();
        list.push(Instance {
            id: (self.spawn)(service, k),
            running: true,
        });
        instance_name(service, k)
    }

    /// Stops the newest running instance of `service` gracefully, unless it is the only one
    /// running; returns its name.
    pub fn scale_down(&self, service: ServiceName) -> Option<String> {
        let mut all = self.instances.lock();
        let list = all.get_mut(&service)?;
        if list.iter().filter(|i| i.running).count() < 2 {
            return None;
        }
        let (k, inst) = list.iter_mut().enumerate().rev().find(|(_, i)| i.running)?;
        inst.running = false;
        self.handle.send_ctrl_c(inst.id);
        Some(instance_name(service, k))
    }

    /// The instances, for a fault's timer to ask later.
    pub fn instances_handle(&self) -> Instances {
        self.instances.clone()
    }

    /// The running instances of `service`.
    pub fn running(&self, service: ServiceName) -> Vec<NodeId> {
        self.instances
            .lock()
            .get(&service)
            .map(|l| l.iter().filter(|i| i.running).map(|i| i.id).collect())
            .unwrap_or_default()
    }

    /// The numbers of the running instances of `service` (0 for its first).
    pub fn running_instances(&self, service: ServiceName) -> Vec<usize> {
        self.instances
            .lock()
            .get(&service)
            .map(|l| (0..).zip(l).filter(|(_, i)| i.running).map(|(k, _)| k).collect())
            .unwrap_or_default()
    }

    /// The customers' node (it runs what the harness spawns on it), its clock as `sc` says.
    pub fn customers_node(&self, sc: &Scenario) -> NodeHandle {
        let node = self
            .handle
            .create_node()
            .name("customers")
            .ip(CUSTOMERS_IP.into())
            .build();
        set_skew(sc, "customers", node.id());
        self.others.lock().expect("nodes").insert("customers", node.id());
        node
    }

    /// The node named `name`: a service, the broker or the customers.
    pub fn node(&self, name: &str) -> Option<NodeId> {
        match name.parse::<ServiceName>() {
            Ok(s) => self.services.get(&s).copied(),
            Err(_) => self.others.lock().expect("nodes").get(name).copied(),
        }
    }

    /// The checker's node (it runs what the harness spawns on it).
    pub fn checker_node(&self) -> NodeHandle {
        self.handle
            .create_node()
            .name("checker")
            .ip(CHECKER_IP.into())
            .build()
    }
}

/// Sets the clock of node `id` (named `name`) as the scenario's `skew` lines say, from now.
fn set_skew(sc: &Scenario, name: &str, id: NodeId) {
    for (_, offset_ms, drift_ppm) in sc.skews.iter().filter(|(n, _, _)| n == name) {
        let skew = pizza::clock::Skew {
            offset_ms: *offset_ms,
            drift_ppm: *drift_ppm,
            since_ms: pizza::clock::now_ms(),
        };
        pizza::clock::set_skew(id, Some(skew));
    }
}
