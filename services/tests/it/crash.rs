//! The services as separate `pizza serve` processes: SIGKILL mid-flight loses nothing and delivers
//! nothing twice; SIGTERM finishes in-flight work, commits, and leaves the group.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pizza::config::{KafkaProps, ServiceName, SysConfig};
use pizza::domain::{OrderId, StatusCodes};
use pizza::store::ViewStore;
use pizza::transport::kafka::KafkaTransport;
use pizza::transport::Record;
use pizza::view::RegressionWatch;

use crate::common::*;

/// A `pizza serve` process; killed if the test ends early.
struct Proc {
    service: ServiceName,
    child: Child,
}

impl Proc {
    /// `pizza serve SERVICE` with the client properties of `dir`'s kafka.ini ([`write_kafka_ini`]).
    fn spawn(service: ServiceName, dir: &Path, scale: &str) -> Proc {
        Proc::spawn_with(service, dir, scale, &[])
    }

    fn spawn_with(service: ServiceName, dir: &Path, scale: &str, extra: &[&str]) -> Proc {
        Proc::spawn_in(service, dir, dir, scale, extra)
    }

    /// Instance `n` of `service`, with a data directory of its own under `dir` (instance 0 has
    /// `dir` itself).
    fn instance(service: ServiceName, dir: &Path, n: usize, scale: &str) -> Proc {
        let data = if n == 0 {
            dir.to_owned()
        } else {
            dir.join(format!("{service}-{n}"))
        };
        Proc::spawn_in(service, dir, &data, scale, &[])
    }

    /// `pizza serve SERVICE` with `dir`'s kafka.ini, its data in `data`, its log in `data`.
    fn spawn_in(service: ServiceName, dir: &Path, data: &Path, scale: &str, extra: &[&str]) -> Proc {
        std::fs::create_dir_all(data).unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(data.join(format!("{service}.log")))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_pizza"))
            .args(["serve", service.as_str(), "--time-scale", scale])
            .arg("--kafka-config")
            .arg(dir.join("kafka.ini"))
            .arg("--data-dir")
            .arg(data)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        Proc { service, child }
    }

    fn kill9(&mut self) {
        self.child.kill().unwrap(); // SIGKILL
        self.child.wait().unwrap();
    }

    async fn terminate(&mut self) -> ExitStatus {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success());
        let mut status = None;
        wait_for("the process to exit", Duration::from_secs(60), || {
            status = self.child.try_wait().unwrap();
            let done = status.is_some();
            async move { done }
        })
        .await;
        status.unwrap()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The last lines of every service's log in `dir` and in its instances' directories beneath.
fn dump_logs(dir: &Path) {
    let mut dirs = vec![dir.to_owned()];
    if let Ok(entries) = std::fs::read_dir(dir) {
        dirs.extend(entries.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
    }
    for d in dirs {
        for s in ServiceName::CONSUMERS {
            let path = d.join(format!("{s}.log"));
            if let Ok(l) = std::fs::read_to_string(&path) {
                let tail: Vec<&str> = l.lines().rev().take(15).collect();
                eprintln!(
                    "--- {} (last lines)\n{}",
                    path.display(),
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
        }
    }
}

/// Writes `props` as `dir`/kafka.ini, the `[kafka]` file the processes are given; returns its path.
pub fn write_kafka_ini(dir: &Path, props: &KafkaProps) -> PathBuf {
    let mut ini = String::from("[kafka]\n");
    for (k, v) in &props.0 {
        ini.push_str(&format!("{k} = {v}\n"));
    }
    let path = dir.join("kafka.ini");
    std::fs::write(&path, ini).unwrap();
    path
}

/// Polls the view every 20 ms and records each status that moved back in rank, each final status
/// that changed, and each order that left the view.
async fn watch_regressions(path: PathBuf, regressions: Arc<Mutex<Vec<String>>>) {
    let view = ViewStore::open_read_only(&path).unwrap();
    let mut watch = RegressionWatch::new(StatusCodes::default());
    loop {
        if let Ok(rows) = view.status_rows() {
            let found = watch.observe(rows.iter().map(|r| (r.0.as_str(), r.1)));
            regressions.lock().unwrap().extend(found);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every order of `ids` has pizza-delivered records, all carrying the one delivery's time.
fn assert_delivered_once(groups: &HashMap<String, Vec<&Record>>, ids: &[OrderId]) {
    for id in ids {
        let recs = groups
            .get(id.as_str())
            .unwrap_or_else(|| panic!("{id} has a pizza-delivered record"));
        let mut stamps: Vec<i64> = recs
            .iter()
            .map(|r| {
                serde_json::from_slice::<serde_json::Value>(r.payload()).unwrap()["timestamp"]
                    .as_i64()
                    .unwrap()
            })
            .collect();
        stamps.dedup();
        assert_eq!(stamps.len(), 1, "order {id} delivered {} times", stamps.len());
    }
}

/// Waits (150 s at most) until every order of `ids` is at 999 in `view`, then checks that the
/// watch of the view saw no status move back and that every order has one delivery time;
/// returns the pizza-delivered records. On a timeout the services' logs in `dir` are printed.
async fn all_delivered_once(
    view: &ViewStore,
    ids: &[OrderId],
    dir: &Path,
    customer: &KafkaTransport,
    (monitor, regressions): (tokio::task::JoinHandle<()>, Arc<Mutex<Vec<String>>>),
    after: &str,
) -> Vec<Record> {
    let all = ids.len();
    if tokio::time::timeout(Duration::from_secs(150), async {
        while count_at(view, ids, 999) < all {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .is_err()
    {
        dump_logs(dir);
        panic!(
            "only {} of {all} orders delivered after {after}",
            count_at(view, ids, 999)
        );
    }
    monitor.abort();
    assert_eq!(
        *regressions.lock().unwrap(),
        Vec::<String>::new(),
        "no status moved backwards"
    );
    // Delivered once: every pizza-delivered record of an order carries the one delivery's time.
    let delivered = topic(customer, &SysConfig::default().topics.delivered).await;
    assert_delivered_once(&by_key(&delivered), ids);
    delivered
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_flight_loses_nothing_and_delivers_once() {
    sigkill_mid_flight_loses_nothing_and_delivers_once_on(&TestBroker::embedded()).await;
}

/// The test on `broker` (the embedded one above, Apache Kafka in `kafka.rs`).
pub async fn sigkill_mid_flight_loses_nothing_and_delivers_once_on(broker: &TestBroker) {
    sigkill_mid_flight_loses_nothing_and_delivers_once_with(&broker.props()).await;
}

/// The test with the services' client properties `props` (e.g. another group protocol).
pub async fn sigkill_mid_flight_loses_nothing_and_delivers_once_with(props: &KafkaProps) {
    const ORDERS: usize = 40;
    let sys = SysConfig::default();
    let customer = KafkaTransport::new(props, "it-customer").unwrap();
    let dir = data_dir();
    write_kafka_ini(dir.path(), props);
    let scale = "0.05";
    let mut procs: Vec<Proc> = ServiceName::CONSUMERS
        .iter()
        .map(|s| Proc::spawn(*s, dir.path(), scale))
        .collect();

    let view_path = dir.path().join("orders.db");
    let view = warmed_up_view(&customer, &sys, &view_path).await;

    let ids = place(&customer, &sys, ORDERS).await;
    // Watch every order's status for a step backwards while services die and come back.
    let regressions = Arc::new(Mutex::new(Vec::<String>::new()));
    let monitor = tokio::spawn(watch_regressions(view_path.clone(), regressions.clone()));

    // Kill while orders are in every stage: some delivered, most not.
    wait_for("some orders delivered", Duration::from_secs(60), || async {
        count_at(&view, &ids, 999) >= 3
    })
    .await;
    let delivered_before = count_at(&view, &ids, 999);
    assert!(delivered_before < ORDERS, "orders still in flight when killed");
    let stateful = |p: &&mut Proc| {
        matches!(
            p.service,
            ServiceName::Bake | ServiceName::Deliver | ServiceName::Status
        )
    };
    for p in procs.iter_mut().filter(stateful) {
        p.kill9();
    }
    for p in procs.iter_mut().filter(stateful) {
        *p = Proc::spawn(p.service, dir.path(), scale);
    }
    let watched = (monitor, regressions);
    let delivered = all_delivered_once(&view, &ids, dir.path(), &customer, watched, "the restart").await;
    let resent = delivered.len() - by_key(&delivered).len();
    eprintln!("{delivered_before} delivered before the kill; {resent} pizza-delivered events re-sent (same delivery) after it");
    for p in &mut procs {
        assert!(p.terminate().await.success(), "{} exits cleanly", p.service);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_hand_partitions_over_without_losing_or_repeating_a_delivery() {
    instances_hand_partitions_over_without_losing_or_repeating_a_delivery_with(
        &TestBroker::embedded().props(),
    )
    .await;
}

/// The test on `broker` (the embedded one above, Apache Kafka in `kafka.rs`).
pub async fn instances_hand_partitions_over_without_losing_or_repeating_a_delivery_on(broker: &TestBroker) {
    instances_hand_partitions_over_without_losing_or_repeating_a_delivery_with(&broker.props()).await;
}

/// Issue 15: two instances of every service, each service one consumer group. Mid-flight one
/// deliver, one bake and one status instance are SIGKILLed, and a third deliver and a third
/// status instance start; later another deliver instance stops gracefully. Their partitions move
/// with orders half way through them: nothing is lost, no status moves back in the first status
/// instance's view (the one watched), every order has one delivery time, and the new status
/// instance's view, folded from the log, shows every order delivered too.
pub async fn instances_hand_partitions_over_without_losing_or_repeating_a_delivery_with(props: &KafkaProps) {
    const ORDERS: usize = 60;
    let sys = SysConfig::default();
    let customer = KafkaTransport::new(props, "it-customer").unwrap();
    let dir = data_dir();
    write_kafka_ini(dir.path(), props);
    let scale = "0.05";
    let mut procs = vec![
        Proc::instance(ServiceName::Status, dir.path(), 0, scale),
        Proc::instance(ServiceName::Status, dir.path(), 1, scale),
    ];
    for service in [
        ServiceName::Assemble,
        ServiceName::Bake,
        ServiceName::Deliver,
        ServiceName::Merge,
    ] {
        procs.extend((0..2).map(|n| Proc::instance(service, dir.path(), n, scale)));
    }
    let view_path = dir.path().join("orders.db");
    let view = warmed_up_view(&customer, &sys, &view_path).await;
    let ids = place(&customer, &sys, ORDERS).await;
    let regressions = Arc::new(Mutex::new(Vec::<String>::new()));
    let monitor = tokio::spawn(watch_regressions(view_path.clone(), regressions.clone()));

    wait_for("some orders delivered", Duration::from_secs(60), || async {
        count_at(&view, &ids, 999) >= 3
    })
    .await;
    let delivered_before = count_at(&view, &ids, 999);
    assert!(delivered_before < ORDERS, "orders still in flight when killed");
    // procs: status 0 1, assemble 0 1, bake 0 1, deliver 0 1, merge 0 1.
    procs[1].kill9();
    procs[4].kill9();
    procs[6].kill9();
    procs.push(Proc::instance(ServiceName::Deliver, dir.path(), 2, scale));
    procs.push(Proc::instance(ServiceName::Status, dir.path(), 2, scale));
    wait_for("more orders delivered", Duration::from_secs(90), || async {
        count_at(&view, &ids, 999) >= delivered_before + 5
    })
    .await;
    // It finishes what it holds and leaves; amid the rebalance the kill started, the classic
    // protocol may take longer to let it go than the close waits (`CLOSE_TIMEOUT`), and it then
    // exits with that error. Either way the orders it held must all be delivered once (below).
    let stopped = procs[7].terminate().await;
    eprintln!("the deliver instance stopped mid-rebalance exited with {stopped}");
    let watched = (monitor, regressions);
    all_delivered_once(&view, &ids, dir.path(), &customer, watched, "the handovers").await;
    let added = dir.path().join("status-2").join("orders.db");
    wait_for(
        "the added status instance's view shows every order delivered",
        Duration::from_secs(60),
        || async { ViewStore::open_read_only(&added).is_ok_and(|v| count_at(&v, &ids, 999) == ORDERS) },
    )
    .await;
    for (i, p) in procs.iter_mut().enumerate() {
        if ![1, 4, 6, 7].contains(&i) {
            assert!(p.terminate().await.success(), "{} exits cleanly", p.service);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_what_it_holds_and_a_restart_resumes_without_duplicates() {
    sigterm_finishes_what_it_holds_and_a_restart_resumes_without_duplicates_on(&TestBroker::embedded()).await;
}

/// The test on `broker` (the embedded one above, Apache Kafka in `kafka.rs`).
pub async fn sigterm_finishes_what_it_holds_and_a_restart_resumes_without_duplicates_on(broker: &TestBroker) {
    const ORDERS: usize = 30;
    let sys = SysConfig::default();
    let customer = KafkaTransport::new(&broker.props(), "it-customer").unwrap();
    let dir = data_dir();
    write_kafka_ini(dir.path(), &broker.props());
    let assembled = || async { records_on(&customer, &sys.topics.assembled).await };

    // Two ovens and at most four orders held: a shutdown leaves most orders to the next run.
    let small = ["--concurrency", "2", "--max-in-flight", "4"];
    let mut assemble = Proc::spawn_with(ServiceName::Assemble, dir.path(), "0.05", &small);
    place(&customer, &sys, 1).await;
    wait_for("the warm-up order assembled", Duration::from_secs(60), || async {
        assembled().await == 1
    })
    .await;
    place(&customer, &sys, ORDERS).await;
    wait_for("assembling under way", Duration::from_secs(60), || async {
        assembled().await >= 3
    })
    .await;
    let status = assemble.terminate().await;
    assert!(status.success(), "graceful exit: {status:?}");
    let after_first = assembled().await;
    assert!(
        after_first < ORDERS as i64 + 1,
        "stopped mid-way ({after_first} assembled)"
    );
    // What it held was finished, not dropped: no order is half-way in a stopped service.
    assert!(
        after_first >= 3,
        "finished what it held ({after_first} assembled)"
    );

    // A restart resumes where it committed: each order assembled exactly once.
    let mut assemble = Proc::spawn_with(ServiceName::Assemble, dir.path(), "0.05", &small);
    wait_for("every order assembled", Duration::from_secs(90), || async {
        assembled().await > ORDERS as i64
    })
    .await;
    assert!(assemble.terminate().await.success());
    let records = topic(&customer, &sys.topics.assembled).await;
    let groups = by_key(&records);
    assert_eq!(groups.len(), ORDERS + 1);
    let twice: Vec<&String> = groups
        .iter()
        .filter(|(_, r)| r.len() > 1)
        .map(|(k, _)| k)
        .collect();
    assert!(twice.is_empty(), "assembled twice: {twice:?}");
}
