//! Helpers: the shop's services in this process, orders, polling for a condition.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use pizza::clock::{now_ms, TimeScale};
use pizza::command::place_order;
use pizza::config::{KafkaProps, ServiceName, SysConfig};
use pizza::domain::{OrderId, OrderRequest};
use pizza::error::Report;
use pizza::services::ServiceConfig;
use pizza::shop::Restart;
pub use pizza::shop::Shop;
use pizza::store::ViewStore;
use pizza::transport::kafka::KafkaTransport;
use pizza::transport::{read_all, Record};
use pizza::worker::WorkerCounts;

/// Polls `check` every 25 ms until it holds; panics naming `what` after `timeout`.
pub async fn wait_for<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The i-th order of a test: every menu item gets used across orders.
pub fn order_request(sys: &SysConfig, i: usize) -> OrderRequest {
    let m = &sys.menu;
    OrderRequest {
        username: format!("user{}", i % 7),
        sauce: m.sauces[i % m.sauces.len()].clone(),
        cheese: m.cheeses[(i / 2) % m.cheeses.len()].clone(),
        main_topping: m.main_toppings[(i / 3) % m.main_toppings.len()].clone(),
        extra_toppings: m.extra_toppings.iter().take(i % 3).cloned().collect(),
    }
}

/// Places `n` orders, returning their ids.
pub async fn place(transport: &KafkaTransport, sys: &SysConfig, n: usize) -> Vec<OrderId> {
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let placed = place_order(
            transport,
            sys,
            &order_request(sys, i),
            OrderId::random(),
            now_ms(),
        )
        .await
        .expect("order placed");
        ids.push(placed.order_id);
    }
    ids
}

/// Places one order and waits until the view at `path` shows it delivered (every service, in
/// whatever process, has joined its group); the view, read-only. For services run as processes;
/// an in-process [`Shop`] has [`Shop::ready`].
pub async fn warmed_up_view(customer: &KafkaTransport, sys: &SysConfig, path: &std::path::Path) -> ViewStore {
    let warm = place(customer, sys, 1).await;
    wait_for("the view file", Duration::from_secs(30), || async {
        path.exists()
    })
    .await;
    let view = ViewStore::open_read_only(path).unwrap();
    wait_for("the warm-up order delivered", Duration::from_secs(60), || async {
        count_at(&view, &warm, 999) == 1
    })
    .await;
    view
}

/// A fresh data directory.
pub fn data_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("pizza-it-")
        .tempdir()
        .expect("temp dir")
}

/// How long a test gives the shop's services to stop.
pub const STOP_WITHIN: Duration = Duration::from_secs(60);

/// Starts `which` services against `props`, in this process; a service that stops is not
/// restarted (the tests want to see it).
pub fn start_shop(props: &KafkaProps, cfg: ServiceConfig, which: &[ServiceName]) -> Shop {
    let props = props.clone();
    Shop::start(cfg, which, Restart::Never, move |service| {
        KafkaTransport::new(&props, &format!("it-{service}"))
    })
}

/// What the tests ask of a running shop.
pub trait ShopExt {
    /// Panics naming any service that has stopped (on an error or a panic) while it should run.
    fn assert_running(&mut self);
    /// Shuts down gracefully; every service must stop cleanly. What each service counted.
    fn stop_cleanly(self) -> impl Future<Output = BTreeMap<ServiceName, WorkerCounts>>;
    /// The status view, read-only, once the status service has created it.
    fn view_when_ready(&self) -> impl Future<Output = ViewStore>;
    /// The status view, read-only.
    fn view(&self) -> ViewStore;
}

impl ShopExt for Shop {
    fn assert_running(&mut self) {
        if let Err(e) = self.check_running() {
            panic!("{}", Report(&e));
        }
    }

    async fn stop_cleanly(self) -> BTreeMap<ServiceName, WorkerCounts> {
        self.stop(STOP_WITHIN)
            .await
            .unwrap_or_else(|e| panic!("{}", Report(&e)))
    }

    async fn view_when_ready(&self) -> ViewStore {
        let path = self.config().view_path();
        wait_for("the status view", Duration::from_secs(30), || {
            let exists = path.exists();
            async move { exists }
        })
        .await;
        self.view()
    }

    fn view(&self) -> ViewStore {
        ViewStore::open_read_only(&self.config().view_path()).expect("view")
    }
}

/// A service config for tests: the spec's configuration at `scale`, except that an order counts as
/// stuck only after 600 shop seconds (12 s at scale 0.02): tests of progress must not race the
/// watchdog on a slow broker. The watchdog's own test uses the spec's 45 s.
pub fn test_config(dir: PathBuf, scale: f64) -> ServiceConfig {
    let mut sys = SysConfig::default();
    sys.stuck_after_secs = 600.0;
    let mut cfg = ServiceConfig::new(sys, dir);
    cfg.time_scale = TimeScale::new(scale).expect("scale");
    cfg
}

/// Number of `ids` the view shows at `status`.
pub fn count_at(view: &ViewStore, ids: &[OrderId], status: i64) -> usize {
    ids.iter()
        .filter(|id| {
            view.status(id.as_str())
                .ok()
                .flatten()
                .is_some_and(|s| s.status == status)
        })
        .count()
}

/// Every record now on `topic`.
pub async fn topic(transport: &KafkaTransport, name: &str) -> Vec<Record> {
    read_all(transport, &[name]).await.expect("read topic")
}

/// Records of a topic grouped by key.
pub fn by_key(records: &[Record]) -> HashMap<String, Vec<&Record>> {
    let mut m: HashMap<String, Vec<&Record>> = HashMap::new();
    for r in records {
        m.entry(r.key_str().unwrap_or_default().to_owned())
            .or_default()
            .push(r);
    }
    m
}

/// A header's value as text.
pub fn header<'a>(rec: &'a Record, name: &str) -> Option<&'a str> {
    rec.headers
        .iter()
        .find(|(k, _)| k == name)
        .and_then(|(_, v)| std::str::from_utf8(v).ok())
}

/// How many records `topic` holds (the sum of its partitions' end offsets; asked again while
/// Kafka is still electing the leaders of new topics).
pub async fn records_on(transport: &KafkaTransport, topic: &str) -> i64 {
    use pizza::transport::{end_offsets_within, ENDS_WITHIN};
    end_offsets_within(transport, topic, ENDS_WITHIN)
        .await
        .expect("end offsets")
        .iter()
        .sum()
}

/// Holds a broker that must outlive a failed test's services: when a test panics, its services'
/// consumers are dropped with the runtime, after the test's locals, and librdkafka's consumer close
/// waits for ever for a broker that is gone. On a panic the broker is leaked instead of stopped,
/// so the test fails instead of hanging.
pub struct KeptOnPanic<B>(pub Option<B>);

impl<B> Drop for KeptOnPanic<B> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            std::mem::forget(self.0.take());
        }
    }
}

/// A port on 127.0.0.1 that nothing listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `pizza demo` with `args` on a free port of 127.0.0.1 and waits for its ready banner;
/// the process and the address it serves. The caller stops the process.
pub fn start_demo(args: &[&str]) -> (std::process::Child, std::net::SocketAddr) {
    let (child, addr, _) = start_demo_with_banner(args);
    (child, addr)
}

/// [`start_demo`], with the banner the demo printed.
pub fn start_demo_with_banner(args: &[&str]) -> (std::process::Child, std::net::SocketAddr, Vec<String>) {
    use std::io::BufRead;
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_pizza"))
        .args(["demo", "--listen", &addr.to_string()])
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut banner = Vec::new();
    for line in std::io::BufReader::new(child.stdout.take().unwrap())
        .lines()
        .take(20)
        .map_while(Result::ok)
    {
        let done = line.contains("Ctrl-C stops");
        banner.push(line);
        if done {
            return (child, addr, banner);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("the demo did not start: {banner:?}");
}

/// A broker a test runs on: librdkafka's mock cluster in this process, or Apache Kafka started
/// by `scripts/kafka.sh` ([`crate::kafka::KafkaCluster`]). Either has the shop's topics.
pub enum TestBroker {
    Embedded(pizza::admin::EmbeddedBroker),
    Kafka(crate::kafka::KafkaCluster),
}

impl TestBroker {
    /// The mock cluster, with the spec's topics.
    pub fn embedded() -> TestBroker {
        TestBroker::Embedded(pizza::admin::EmbeddedBroker::start(&SysConfig::default()).unwrap())
    }

    pub fn bootstrap_servers(&self) -> String {
        match self {
            TestBroker::Embedded(b) => b.bootstrap_servers(),
            TestBroker::Kafka(k) => k.bootstrap_servers().to_owned(),
        }
    }

    /// The properties of a client of this broker.
    pub fn props(&self) -> pizza::config::KafkaProps {
        match self {
            TestBroker::Embedded(b) => b.props(),
            TestBroker::Kafka(k) => pizza::config::KafkaProps::bootstrap(k.bootstrap_servers()),
        }
    }
}

/// `test` cannot run here, though it was not ignored: it fails with why. A test whose outside
/// tool this machine lacks is `ignored` with the reason (`services/build.rs` looks for each when it
/// builds; under CI it ignores none), so this is a tool gone since the build (`cargo clean -p
/// pizza` looks again), or a test asked for by `--ignored`. Never reported "ok" unrun.
pub fn cannot_run(test: &str, why: &str) -> ! {
    panic!("{test} cannot run here: {why}")
}
