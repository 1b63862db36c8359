//! The worker on a real broker: one key's records in order, different keys concurrently within the
//! bound, and on shutdown every finished record's offset committed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pizza::admin::EmbeddedBroker;
use pizza::config::SysConfig;
use pizza::shutdown::Shutdown;
use pizza::transport::kafka::KafkaTransport;
use pizza::transport::{OutRecord, Record, Transport};
use pizza::worker::{run_worker, HandleError, Handler, WorkerConfig, WorkerStats};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use crate::common::wait_for;

const KEYS: usize = 8;
const PER_KEY: u32 = 10;
const OVENS: usize = 4;

#[derive(Default)]
struct Recorder {
    log: Mutex<Vec<(String, u32)>>,
    running: AtomicUsize,
    max_running: AtomicUsize,
}

impl Handler for Recorder {
    async fn handle(&self, rec: &Record) -> Result<(), HandleError> {
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_running.fetch_max(now, Ordering::SeqCst);
        let seq: u32 = std::str::from_utf8(rec.payload()).unwrap().parse().unwrap();
        // Earlier records of a key take longer: without per-key lanes they would finish out of order.
        tokio::time::sleep(Duration::from_millis(u64::from(PER_KEY - seq) * 3)).await;
        self.log
            .lock()
            .unwrap()
            .push((rec.key_str().unwrap().to_owned(), seq));
        self.running.fetch_sub(1, Ordering::SeqCst);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_key_in_order_many_keys_at_once_offsets_committed_on_shutdown() {
    let broker = EmbeddedBroker::start(&SysConfig::default()).unwrap();
    broker.create_topic("it-worker", 3).unwrap();
    let props = broker.props();
    let transport = KafkaTransport::new(&props, "it-worker").unwrap();
    for seq in 0..PER_KEY {
        for k in 0..KEYS {
            let out = OutRecord::new("it-worker", format!("key-{k}"), seq.to_string().into_bytes());
            transport.produce(out).await.unwrap();
        }
    }
    let mut cfg = WorkerConfig::new("it", "it-worker-group", &["it-worker"], "pizza-dlq");
    cfg.concurrency = OVENS;
    let recorder = Arc::new(Recorder::default());
    let (trigger, shutdown) = Shutdown::new();
    let worker = tokio::spawn(run_worker(
        transport.clone(),
        cfg,
        recorder.clone(),
        Arc::new(WorkerStats::default()),
        shutdown,
    ));
    let total = KEYS * PER_KEY as usize;
    wait_for("every record handled", Duration::from_secs(60), || async {
        recorder.log.lock().unwrap().len() == total
    })
    .await;
    trigger.fire();
    worker.await.unwrap().expect("worker stops cleanly");

    let log = recorder.log.lock().unwrap().clone();
    let mut per_key: HashMap<String, Vec<u32>> = HashMap::new();
    for (k, seq) in log {
        per_key.entry(k).or_default().push(seq);
    }
    assert_eq!(per_key.len(), KEYS);
    for (k, seqs) in &per_key {
        assert_eq!(*seqs, (0..PER_KEY).collect::<Vec<_>>(), "key {k} out of order");
    }
    let max = recorder.max_running.load(Ordering::SeqCst);
    assert!(max > 1, "different keys ran concurrently (max {max})");
    assert!(max <= OVENS, "never more than {OVENS} at once (max {max})");

    // The group's committed offsets are the ends: nothing finished will be redone.
    let ends = transport.end_offsets("it-worker").await.unwrap();
    let consumer: BaseConsumer = transport
        .client_config()
        .set("group.id", "it-worker-group")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..ends.len() as i32 {
        tpl.add_partition("it-worker", p);
    }
    let committed = consumer.committed_offsets(tpl, Duration::from_secs(10)).unwrap();
    for (p, end) in ends.iter().enumerate() {
        let got = committed.find_partition("it-worker", p as i32).unwrap().offset();
        assert_eq!(got, Offset::Offset(*end), "partition {p}");
    }
}

/// A handler with nothing to do.
struct Nothing;

impl Handler for Nothing {
    async fn handle(&self, _: &Record) -> Result<(), HandleError> {
        Ok(())
    }
}

/// A member that leaves on shutdown hands its partitions over in one rebalance; one that just
/// vanished is only replaced after its session timeout too. An observer in the same group sees the
/// difference. On librdkafka's mock cluster a rebalance after a leave waits session timeout - 1 s
/// (5 s here, `rd_kafka_mock_cgrp_classic_rebalance`), so leaving hands over in about 5 s and
/// vanishing in about 6 + 5 = 11 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_leaves_the_group_at_once() {
    use std::sync::atomic::AtomicBool;
    use std::time::Instant;

    let broker = EmbeddedBroker::start(&SysConfig::default()).unwrap();
    broker.create_topic("it-leave", 2).unwrap();
    let props = broker.props();
    let transport = KafkaTransport::new(&props, "it-leave").unwrap();

    let observer: BaseConsumer = transport
        .client_config()
        .set("group.id", "it-leave-group")
        .set("enable.auto.commit", "false")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500")
        .create()
        .unwrap();
    observer.subscribe(&["it-leave"]).unwrap();
    let assigned = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let poller = {
        let (assigned, stop) = (assigned.clone(), stop.clone());
        tokio::task::spawn_blocking(move || {
            // Bounded, so a failing test still ends.
            let deadline = Instant::now() + Duration::from_secs(90);
            while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                let _ = observer.poll(Duration::from_millis(20));
                let n = observer.assignment().map(|a| a.count()).unwrap_or(0);
                assigned.store(n, Ordering::SeqCst);
            }
        })
    };
    wait_for(
        "the observer owns both partitions",
        Duration::from_secs(30),
        || async { assigned.load(Ordering::SeqCst) == 2 },
    )
    .await;

    let cfg = WorkerConfig::new("it", "it-leave-group", &["it-leave"], "pizza-dlq");
    let (trigger, shutdown) = Shutdown::new();
    let worker = tokio::spawn(run_worker(
        transport.clone(),
        cfg,
        Arc::new(Nothing),
        Arc::new(WorkerStats::default()),
        shutdown,
    ));
    wait_for(
        "the worker takes a partition",
        Duration::from_secs(30),
        || async { assigned.load(Ordering::SeqCst) == 1 },
    )
    .await;

    trigger.fire();
    worker.await.unwrap().expect("worker stops cleanly");
    let left = Instant::now();
    wait_for(
        "the observer owns both partitions again",
        Duration::from_secs(30),
        || async { assigned.load(Ordering::SeqCst) == 2 },
    )
    .await;
    let handover = left.elapsed();
    stop.store(true, Ordering::SeqCst);
    poller.await.unwrap();
    eprintln!("partitions handed over {handover:?} after the worker stopped");
    assert!(
        handover < Duration::from_secs(8),
        "handover took {handover:?}: the worker did not leave the group"
    );
}

/// Counts how many records run at once.
#[derive(Default)]
struct Gauge {
    running: AtomicUsize,
    max_running: AtomicUsize,
    done: AtomicUsize,
}

impl Handler for Gauge {
    async fn handle(&self, _rec: &Record) -> Result<(), HandleError> {
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_running.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(20)).await;
        self.running.fetch_sub(1, Ordering::SeqCst);
        self.done.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

/// Large records are bounded by their bytes, not only by their count: with room for 250 KiB, no
/// more than three 100 KiB records are held at once, however many ovens there are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_in_flight_are_bounded_by_their_bytes() {
    let broker = EmbeddedBroker::start(&SysConfig::default()).unwrap();
    broker.create_topic("it-bytes", 3).unwrap();
    let props = broker.props();
    let transport = KafkaTransport::new(&props, "it-bytes").unwrap();
    let n = 30;
    for i in 0..n {
        let out = OutRecord::new("it-bytes", format!("key-{i}"), vec![b'x'; 100 * 1024]);
        transport.produce(out).await.unwrap();
    }
    let mut cfg = WorkerConfig::new("it", "it-bytes-group", &["it-bytes"], "pizza-dlq");
    cfg.concurrency = 64;
    cfg.max_in_flight_bytes = 250 * 1024;
    let gauge = Arc::new(Gauge::default());
    let (trigger, shutdown) = Shutdown::new();
    let worker = tokio::spawn(run_worker(
        transport.clone(),
        cfg,
        gauge.clone(),
        Arc::new(WorkerStats::default()),
        shutdown,
    ));
    wait_for("every record handled", Duration::from_secs(60), || async {
        gauge.done.load(Ordering::SeqCst) == n
    })
    .await;
    trigger.fire();
    worker.await.unwrap().expect("worker stops cleanly");
    let max = gauge.max_running.load(Ordering::SeqCst);
    assert!(
        (2..=3).contains(&max),
        "{max} records of 100 KiB at once with room for 250 KiB"
    );
}

/// One record fails for good while another's handler is still at work: the worker ends that
/// handler before it returns, so a restarted service is alone with the records that come again.
struct SlowAndFatal {
    finished_after_stop: AtomicUsize,
    started: AtomicUsize,
}

impl Handler for SlowAndFatal {
    async fn handle(&self, rec: &Record) -> Result<(), HandleError> {
        if rec.key_str() == Some("fatal") {
            // Once the slow one is under way.
            while self.started.load(Ordering::SeqCst) == 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            return Err(HandleError::fatal("this record stops the worker"));
        }
        self.started.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(2)).await;
        self.finished_after_stop.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_stops_on_an_error_ends_its_handlers_first() {
    let broker = EmbeddedBroker::start(&SysConfig::default()).unwrap();
    broker.create_topic("it-worker-stop", 1).unwrap();
    let props = broker.props();
    let transport = KafkaTransport::new(&props, "it-worker-stop").unwrap();
    for key in ["slow", "fatal"] {
        let out = OutRecord::new("it-worker-stop", key, b"x".to_vec());
        transport.produce(out).await.unwrap();
    }
    let cfg = WorkerConfig::new("it", "it-worker-stop-group", &["it-worker-stop"], "pizza-dlq");
    let handler = Arc::new(SlowAndFatal {
        finished_after_stop: AtomicUsize::new(0),
        started: AtomicUsize::new(0),
    });
    let (_stop, shutdown) = Shutdown::new();
    let stats = Arc::new(WorkerStats::default());
    let ran = run_worker(transport, cfg, handler.clone(), stats, shutdown).await;
    assert!(ran.is_err(), "the fatal record stops the worker");
    assert_eq!(handler.started.load(Ordering::SeqCst), 1);
    // Had the slow handler been left running, it would finish 2 s after it began.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        handler.finished_after_stop.load(Ordering::SeqCst),
        0,
        "a handler of the stopped worker ran on"
    );
}

/// Fails every record retriably, counting its attempts.
struct AlwaysRetriable(AtomicUsize);

impl Handler for AlwaysRetriable {
    async fn handle(&self, _rec: &Record) -> Result<(), HandleError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Err(HandleError::Retriable("the broker is away".into()))
    }
}

/// Graceful shutdown has a deadline (issue 25, defect 8: deliver took 325 s after SIGTERM while a
/// handler retried): what is still running after `drain_within` is ended, left unmarked for the
/// partition's next owner, and the worker leaves its group.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_a_handler_still_retrying_after_the_drain_deadline() {
    let broker = EmbeddedBroker::start(&SysConfig::default()).unwrap();
    broker.create_topic("it-worker-drain", 1).unwrap();
    let props = broker.props();
    let transport = KafkaTransport::new(&props, "it-worker-drain").unwrap();
    let out = OutRecord::new("it-worker-drain", "0000d4a1", b"x".to_vec());
    transport.produce(out).await.unwrap();
    let mut cfg = WorkerConfig::new("it", "it-worker-drain-group", &["it-worker-drain"], "pizza-dlq");
    cfg.drain_within = Duration::from_secs(1);
    let handler = Arc::new(AlwaysRetriable(AtomicUsize::new(0)));
    let (trigger, shutdown) = Shutdown::new();
    let stats = Arc::new(WorkerStats::default());
    let worker = tokio::spawn(run_worker(
        transport.clone(),
        cfg,
        handler.clone(),
        stats,
        shutdown,
    ));
    wait_for("the handler retrying", Duration::from_secs(60), || async {
        handler.0.load(Ordering::SeqCst) >= 2
    })
    .await;
    trigger.fire();
    // Ten attempts with backoff would take minutes; the deadline ends them after a second (the
    // bound here only keeps a broken build from hanging).
    let stopped = tokio::time::timeout(Duration::from_secs(60), worker).await;
    stopped
        .expect("stopped by its drain deadline")
        .unwrap()
        .expect("a clean stop");
    let committed = {
        let reader = pizza::admin::group_reader(&transport, "it-worker-drain-group").unwrap();
        pizza::admin::group_lag(&reader, &[("it-worker-drain", 1)], Duration::from_secs(5)).unwrap()
    };
    assert_eq!(
        committed.lag, 1,
        "the unfinished record is left for the next owner"
    );
}
