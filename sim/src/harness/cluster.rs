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

/// The node of the `i`th service in `ServiceName::CONSUMERS`: 10.0.1.1 onwards.
fn service_ip(i: usize) -> IpAddr {
    let host = u8::try_from(i + 1).expect("fewer than 255 services");
    Ipv4Addr::new(10, 0, 1, host).into()
}

/// The shop's configuration in a run: the defaults, with the scenario's partitions.
pub(super) fn sys_config(sc: &Scenario) -> SysConfig {
    let mut sys = SysConfig::default();
    sys.num_partitions = sc.partitions;
    sys
}

/// A service's configuration in a run: its data directory under `root`, and the scenario's concurrency
/// and time scale.
pub(super) fn service_config(sc: &Scenario, root: &Path, service: ServiceName) -> ServiceConfig {
    let opts = ServiceOpts::from_args(service_args(sc, root, service))
        .expect("the simulation's service options parse");
    let data_dir = opts.data_dir.clone().expect("given");
    opts.service_config(sys_config(sc), data_dir)
}

/// Where a service node keeps its files (what a `lose-disk` crash deletes).
pub(super) fn data_dir(root: &Path, service: ServiceName) -> PathBuf {
    root.join(service.as_str())
}

/// The command line of a service node, as `pizza serve SERVICE` would take it: the node runs the
/// configuration the binary's own option type ([`ServiceOpts`]) makes of it.
pub(super) fn service_args(sc: &Scenario, root: &Path, service: ServiceName) -> Vec<String> {
    let mut args = vec![
        "--data-dir".into(),
        data_dir(root, service).display().to_string(),
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
    for t in sys.topics.all() {
        broker.create_topic(t);
    }
    broker.ambiguous = sc.ambiguous;
    BrokerShared::new(broker)
}

/// The running cluster, as the faults and the checks need it.
pub(super) struct Cluster {
    pub handle: Handle,
    /// The broker's state: the harness slows and reorders it, and reads its log at the end.
    pub broker: Arc<BrokerShared>,
    /// Each service's node, for the faults that crash, stop, pause or clog one.
    pub services: BTreeMap<ServiceName, NodeId>,
    /// The broker's and the customers' nodes, for the faults that cut one off.
    pub others: std::sync::Mutex<BTreeMap<&'static str, NodeId>>,
}

impl Cluster {
    /// Starts the broker's node, then one node per service running under its supervisor.
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
        let mut services = BTreeMap::new();
        for (i, service) in ServiceName::CONSUMERS.into_iter().enumerate() {
            let cfg = service_config(sc, root, service);
            let (shared, bs) = (shared.clone(), broker.clone());
            let period_ms = cfg.time_scale.scale_secs(sys.watchdog_period_secs).as_millis() as i64;
            let node = handle
                .create_node()
                .name(service.as_str())
                .ip(service_ip(i))
                .init(move || run_service(service, cfg.clone(), shared.clone(), bs.clone(), period_ms))
                .build();
            set_skew(sc, service.as_str(), node.id());
            services.insert(service, node.id());
        }
        Cluster {
            handle,
            broker,
            services,
            others: std::sync::Mutex::new(BTreeMap::from([("broker", broker_node.id())])),
        }
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
