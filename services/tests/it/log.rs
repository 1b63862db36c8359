//! What real Kafka logs carry, on the embedded broker (issue 25): batches compressed with every
//! codec Kafka has, a batch no client can decode, transaction markers. No record and no marker
//! may wedge a partition for any reader: the worker, the views' followers, deliver's changelog.

use std::sync::Arc;
use std::time::Duration;

use pizza::admin::{group_lag, group_reader, EmbeddedBroker};
use pizza::config::{KafkaProps, ServiceName, SysConfig};
use pizza::partitioner::partition_for;
use pizza::store::ViewStore;
use pizza::transport::kafka::KafkaTransport;
use pizza::view::ViewFollower;

use crate::common::*;
use crate::rawlog::{commit_marker, produce_batch, undecodable_batch};

/// The codecs Kafka's producers may compress with (`compression.type`).
pub const CODECS: [&str; 4] = ["gzip", "snappy", "lz4", "zstd"];

/// A producer that compresses every batch with `codec`.
pub fn compressing(props: &KafkaProps, codec: &str) -> KafkaTransport {
    let mut props = props.clone();
    props.0.push(("compression.codec".into(), codec.into()));
    KafkaTransport::new(&props, &format!("it-{codec}")).expect("a compressing producer")
}

/// A web app's view started now on `transport`: a fresh file, folded from the log's start.
fn new_view(transport: &KafkaTransport, dir: &std::path::Path) -> (ViewFollower, Arc<ViewStore>) {
    let view = Arc::new(ViewStore::open(&dir.join("new-view.db")).unwrap());
    let follower = pizza::view::follow(transport.clone(), &Arc::new(SysConfig::default()), view.clone());
    (follower, view)
}

/// Orders written by producers of every codec are assembled, baked, delivered and shown: a
/// consumer built without a codec (rdkafka without its `zstd` feature, before issue 25) failed
/// every fetch of such a batch, for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_of_every_codec_are_read_by_every_service() {
    let sys = SysConfig::default();
    let broker = KeptOnPanic(Some(EmbeddedBroker::start(&sys).unwrap()));
    let props = broker.0.as_ref().unwrap().props();
    let dir = data_dir();
    let shop = start_shop(
        &props,
        test_config(dir.path().to_owned(), 0.0),
        &ServiceName::CONSUMERS,
    );
    let mut ids = Vec::new();
    for codec in CODECS {
        ids.extend(place(&compressing(&props, codec), &sys, 5).await);
    }
    let view = shop.view_when_ready().await;
    wait_for("every order delivered", Duration::from_secs(60), || async {
        count_at(&view, &ids, 999) == ids.len()
    })
    .await;
    shop.stop_cleanly().await;
}

/// A batch no client can decode, on pizza-ordered and on deliver's changelog: each reader gives
/// its records up after a few fetches (a note of each dead-lettered by every service that reads
/// pizza-ordered, with where it is and why), the orders behind it on its partition are
/// delivered, deliver's restore passes it, and a view started afterwards finishes its first
/// fold. Before issue 25 every reader asked for that offset again for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_no_client_can_decode_is_given_up_and_its_partition_moves_on() {
    let sys = SysConfig::default();
    let broker = KeptOnPanic(Some(EmbeddedBroker::start(&sys).unwrap()));
    let (props, addr) = {
        let b = broker.0.as_ref().unwrap();
        (b.props(), b.bootstrap_servers())
    };
    let producer = KafkaTransport::new(&props, "it-undecodable").unwrap();
    // The orders' partition: where the first of them lands.
    let probe = pizza::domain::OrderId::nth(0, 0x0bad_ba7c);
    let p = partition_for(probe.as_str().as_bytes(), sys.num_partitions);
    let bad = 3;
    let at = produce_batch(&addr, &sys.topics.ordered, p, &undecodable_batch(bad));
    produce_batch(&addr, &sys.topics.deliver_changelog, p, &undecodable_batch(2));
    let dir = data_dir();
    let shop = start_shop(
        &props,
        test_config(dir.path().to_owned(), 0.0),
        &ServiceName::CONSUMERS,
    );
    let mut ids = vec![probe];
    for i in 1..40 {
        ids.push(pizza::domain::OrderId::nth(i, 0x0bad_ba7c));
    }
    for (i, id) in ids.iter().enumerate() {
        pizza::command::place_order(
            &producer,
            &sys,
            &order_request(&sys, i),
            id.clone(),
            pizza::clock::now_ms(),
        )
        .await
        .unwrap();
    }
    let view = shop.view_when_ready().await;
    wait_for("every order delivered", Duration::from_secs(90), || async {
        count_at(&view, &ids, 999) == ids.len()
    })
    .await;
    let readers = sys.topics.consumers_of(&sys.topics.ordered);
    let expected = readers.len() * bad as usize;
    wait_for(
        "a note of each record from each reader",
        Duration::from_secs(30),
        || async { records_on(&producer, &sys.topics.dlq).await >= expected as i64 },
    )
    .await;
    let notes = unreadable_notes(&producer, &sys, p).await;
    let mut want: Vec<(String, i64)> = readers
        .iter()
        .flat_map(|s| (at..at + i64::from(bad)).map(move |o| (s.as_str().to_owned(), o)))
        .collect();
    want.sort();
    assert_eq!(notes, want, "one note per record per reader, nothing else");
    // A view started now reads past it to the end.
    let (follower, _new) = new_view(&producer, dir.path());
    let last = pizza::transport::read_all(&producer, &[&sys.topics.ordered])
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.partition == p)
        .map(|r| r.offset)
        .max()
        .unwrap();
    assert!(
        follower
            .reached(&sys.topics.ordered, p, last, Duration::from_secs(30))
            .await,
        "a new view's first fold got past the batch: {:?}",
        follower.trouble()
    );
    let counts = shop.stop_cleanly().await;
    for s in &readers {
        assert_eq!(counts[s].unreadable, u64::from(bad as u32), "{s}");
    }
}

/// The dead-letter notes on pizza-dlq, each of a record of pizza-ordered/`p` that could not be
/// read: (service, offset), sorted.
async fn unreadable_notes(producer: &KafkaTransport, sys: &SysConfig, p: i32) -> Vec<(String, i64)> {
    let mut notes: Vec<(String, i64)> = topic(producer, &sys.topics.dlq)
        .await
        .iter()
        .map(|r| {
            assert_eq!(header(r, "dlq.source.topic"), Some(sys.topics.ordered.as_str()));
            assert_eq!(header(r, "dlq.source.partition"), Some(&*p.to_string()));
            let reason = header(r, "dlq.reason").unwrap_or_default();
            assert!(reason.starts_with("the record cannot be read"), "{reason}");
            (
                header(r, "dlq.service").unwrap().to_owned(),
                header(r, "dlq.source.offset").unwrap().parse().unwrap(),
            )
        })
        .collect();
    notes.sort();
    notes
}

/// A log whose last offset holds a transaction marker (what a transactional producer leaves, such
/// as ksqlDB with exactly-once in place of merge): a new view finishes its first fold, and every
/// consumer group commits past the marker (its lag reaches 0). Before issue 25 the first fold
/// waited for a record at the end offset - 1, which never comes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_that_ends_with_a_transaction_marker_is_read_to_its_end() {
    let sys = SysConfig::default();
    let broker = KeptOnPanic(Some(EmbeddedBroker::start(&sys).unwrap()));
    let (props, addr) = {
        let b = broker.0.as_ref().unwrap();
        (b.props(), b.bootstrap_servers())
    };
    let producer = KafkaTransport::new(&props, "it-marker").unwrap();
    let dir = data_dir();
    let shop = start_shop(
        &props,
        test_config(dir.path().to_owned(), 0.0),
        &ServiceName::CONSUMERS,
    );
    let ids = place(&producer, &sys, 12).await;
    let view = shop.view_when_ready().await;
    wait_for("every order delivered", Duration::from_secs(60), || async {
        count_at(&view, &ids, 999) == ids.len()
    })
    .await;
    // Markers at the end of every partition of both topics a view reads.
    for t in [&sys.topics.ordered, &sys.topics.status] {
        for p in 0..sys.num_partitions {
            produce_batch(&addr, t, p, &commit_marker());
        }
    }
    let (follower, new) = new_view(&producer, dir.path());
    wait_for("the new view's first fold", Duration::from_secs(30), || async {
        !new.followed().unwrap().is_empty()
    })
    .await;
    let ends = pizza::transport::end_offsets_within(&producer, &sys.topics.status, Duration::from_secs(10))
        .await
        .unwrap();
    for (p, end) in (0..).zip(ends) {
        assert!(
            follower
                .reached(&sys.topics.status, p, end - 1, Duration::from_secs(10))
                .await,
            "the view read pizza-status/{p} to {end}, past its marker"
        );
    }
    assert_eq!(
        new.dump().unwrap(),
        view.dump().unwrap(),
        "the new view is the live one"
    );
    // Every group commits past the markers.
    let readers = [ServiceName::Assemble, ServiceName::Merge, ServiceName::Status];
    every_group_commits_to_the_end(&producer, &sys, &readers).await;
    shop.stop_cleanly().await;
}

/// Which log a topic is: the embedded broker names its cluster (librdkafka's mock cluster has no
/// controller to give topic ids), the same answer twice, and another broker (a restarted `pizza
/// broker`) is another log. Apache Kafka names each topic too (`kafka::a_topic_made_again_...`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_id_names_the_cluster_and_the_topic() {
    use pizza::transport::Transport;
    let sys = SysConfig::default();
    let a = EmbeddedBroker::start(&sys).unwrap();
    let b = EmbeddedBroker::start(&sys).unwrap();
    let ta = KafkaTransport::new(&a.props(), "it-log-id").unwrap();
    let tb = KafkaTransport::new(&b.props(), "it-log-id").unwrap();
    let ordered = ta
        .log_id(&sys.topics.ordered)
        .await
        .unwrap()
        .expect("a cluster id");
    assert!(ordered.ends_with("/-"), "no topic id: {ordered}");
    assert_eq!(
        ta.log_id(&sys.topics.ordered).await.unwrap().as_ref(),
        Some(&ordered)
    );
    let other = tb
        .log_id(&sys.topics.ordered)
        .await
        .unwrap()
        .expect("a cluster id");
    assert!(
        pizza::transport::other_log(&ordered, &other),
        "another cluster: {ordered} {other}"
    );
}

/// On the embedded broker: a group's commit says which log its offset is of, and a member that
/// gains a partition whose commit names another log reads it from the start (issue 26: a commit
/// names a topic, not a log, and one of an old log's marks committed by a member that had not
/// noticed its topic made again would stand on the new log). Apache Kafka runs it too
/// (`kafka::a_commit_of_another_log_is_read_from_the_start`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_of_another_log_is_read_from_the_start() {
    a_commit_of_another_log_is_read_from_the_start_on(&TestBroker::embedded()).await;
}

/// See [`a_commit_of_another_log_is_read_from_the_start`]: three groups find the same offsets
/// committed past every record, one with metadata naming another log, one with none (as any
/// other client commits), one naming the log itself; only the first reads the records again,
/// and what its member commits names the log it read.
pub async fn a_commit_of_another_log_is_read_from_the_start_on(broker: &TestBroker) {
    use pizza::transport::commits::commit_metadata;
    use pizza::transport::{Delivery, OutRecord, Subscription, Transport};
    let sys = SysConfig::default();
    let topic = sys.topics.ordered.clone();
    let producer = KafkaTransport::new(&broker.props(), "it-commit-log").unwrap();
    for i in 0..12 {
        let rec = OutRecord::new(&topic, format!("k{i}"), b"{}".to_vec());
        producer.produce(rec).await.unwrap();
    }
    let ends = producer.end_offsets(&topic).await.unwrap();
    let log = producer.log_id(&topic).await.unwrap().expect("a log id");
    let other = pizza::transport::LogId::parse(&log);
    let other = pizza::transport::LogId {
        cluster: Some(format!("{}-before", other.cluster.unwrap_or_default())),
        topic: other.topic.map(|t| format!("{t}-before")),
    }
    .to_string();
    let group = |name: &str| pizza::transport::fresh_group(&format!("it-commit-log-{name}"));
    let (stale, foreign, own) = (group("stale"), group("foreign"), group("own"));
    for (g, meta) in [
        (&stale, commit_metadata(&other)),
        (&foreign, String::new()),
        (&own, commit_metadata(&log)),
    ] {
        commit_at(broker, g, &topic, &ends, &meta);
    }
    let read = |g: String| {
        let (producer, topic) = (producer.clone(), topic.clone());
        async move {
            let mut sub = producer.subscribe(&g, &[&topic]).await.unwrap();
            let mut records = 0;
            let until = tokio::time::Instant::now() + Duration::from_secs(15);
            while let Ok(Ok(d)) = tokio::time::timeout_at(until, sub.recv()).await {
                if let Delivery::Record(r) = d {
                    records += 1;
                    sub.mark_done(&r.topic, r.partition, r.offset + 1).unwrap();
                }
            }
            sub.close().await.unwrap();
            records
        }
    };
    let (s, f, o) = tokio::join!(read(stale.clone()), read(foreign), read(own));
    assert_eq!((s, f, o), (12, 0, 0), "records read by each group");
    let committed = committed_metadata(broker, &stale, &topic, ends.len());
    assert!(
        committed.iter().all(|m| *m == commit_metadata(&log)),
        "the stale group's new commits name the log read ({log}): {committed:?}"
    );
}

/// A client of `group` that joins nothing: it commits and reads the group's offsets.
fn group_client(broker: &TestBroker, group: &str) -> rdkafka::consumer::BaseConsumer {
    rdkafka::ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap_servers())
        .set("group.id", group)
        .create()
        .unwrap()
}

/// Commits `ends` for `group` as any client does, each with `metadata`.
fn commit_at(broker: &TestBroker, group: &str, topic: &str, ends: &[i64], metadata: &str) {
    use rdkafka::consumer::{CommitMode, Consumer};
    let c = group_client(broker, group);
    let mut tpl = rdkafka::TopicPartitionList::new();
    for (p, end) in ends.iter().enumerate() {
        tpl.add_partition_offset(topic, p as i32, rdkafka::Offset::Offset(*end))
            .unwrap();
        if !metadata.is_empty() {
            tpl.find_partition(topic, p as i32)
                .unwrap()
                .set_metadata(metadata);
        }
    }
    c.commit(&tpl, CommitMode::Sync).unwrap();
}

/// The metadata of `group`'s commits of the topic's `partitions` partitions.
fn committed_metadata(broker: &TestBroker, group: &str, topic: &str, partitions: usize) -> Vec<String> {
    use rdkafka::consumer::Consumer;
    let c = group_client(broker, group);
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p as i32);
    }
    let got = c.committed_offsets(tpl, Duration::from_secs(10)).unwrap();
    got.elements().iter().map(|e| e.metadata().to_owned()).collect()
}

/// Waits until the groups of `services` have committed every partition they read to its end
/// offset (past any marker at the end), within a minute.
async fn every_group_commits_to_the_end(
    producer: &KafkaTransport,
    sys: &SysConfig,
    services: &[ServiceName],
) {
    for service in services {
        let reader = group_reader(producer, sys.group(*service)).unwrap();
        let topics: Vec<(&str, usize)> = sys
            .topics
            .consumed_by(*service)
            .into_iter()
            .map(|t| (t, sys.num_partitions as usize))
            .collect();
        wait_for(
            &format!("{service} committed to the end"),
            Duration::from_secs(60),
            || async { group_lag(&reader, &topics, Duration::from_secs(5)).is_ok_and(|l| l.lag == 0) },
        )
        .await;
    }
}

/// A transactional producer as Kafka's own writes it (ksqlDB with exactly-once, Kafka Streams):
/// `transactional.id`, murmur2 as the shop's producers place keys.
fn transactional(props: &KafkaProps, id: &str) -> rdkafka::producer::BaseProducer {
    use rdkafka::config::ClientConfig;
    use rdkafka::producer::Producer;
    let mut cfg = ClientConfig::new();
    for (k, v) in &props.0 {
        cfg.set(k, v);
    }
    let p: rdkafka::producer::BaseProducer = cfg
        .set("transactional.id", id)
        .set("partitioner", "murmur2_random")
        .create()
        .expect("a transactional producer");
    p.init_transactions(Duration::from_secs(30))
        .expect("init transactions");
    p
}

/// Writes `records` (topic, key, value) in one transaction, committed or aborted.
fn transaction(p: &rdkafka::producer::BaseProducer, records: &[(String, String, Vec<u8>)], commit: bool) {
    use rdkafka::producer::{BaseRecord, Producer};
    p.begin_transaction().unwrap();
    for (topic, key, value) in records {
        p.send(BaseRecord::to(topic).key(key).payload(value))
            .map_err(|(e, _)| e)
            .unwrap();
    }
    p.flush(Duration::from_secs(30)).unwrap();
    if commit {
        p.commit_transaction(Duration::from_secs(30)).unwrap();
    } else {
        p.abort_transaction(Duration::from_secs(30)).unwrap();
    }
}

/// On Apache Kafka: orders written by producers of every codec, orders in a committed
/// transaction, and an order in an aborted one; commit markers left at the end of every partition
/// of pizza-ordered and pizza-status. Every order but the aborted one is delivered, the aborted
/// one is never seen, every group's lag reaches 0 past the markers, and a view started afterwards
/// finishes its first fold and equals the live one.
pub async fn codecs_and_transactions_on(kafka: &TestBroker) {
    use pizza::domain::{encode, OrderId, StatusOnly};
    let sys = SysConfig::default();
    let props = kafka.props();
    let dir = data_dir();
    let shop = start_shop(
        &props,
        test_config(dir.path().to_owned(), 0.0),
        &ServiceName::CONSUMERS,
    );
    let mut ids = Vec::new();
    for codec in CODECS {
        ids.extend(place(&compressing(&props, codec), &sys, 3).await);
    }
    let txn = transactional(&props, "it-transactions");
    let ordered = |i: u32| {
        let id = OrderId::nth(i, 0x7a5_0001);
        let event =
            pizza::command::ordered_event(&sys, &order_request(&sys, i as usize), pizza::clock::now_ms())
                .unwrap();
        (id, encode(&event))
    };
    let committed: Vec<(OrderId, Vec<u8>)> = (0..12).map(ordered).collect();
    let records: Vec<_> = committed
        .iter()
        .map(|(id, v)| (sys.topics.ordered.clone(), id.as_str().to_owned(), v.clone()))
        .collect();
    tokio::task::block_in_place(|| transaction(&txn, &records, true));
    let (aborted, value) = ordered(99);
    tokio::task::block_in_place(|| {
        transaction(
            &txn,
            &[(sys.topics.ordered.clone(), aborted.as_str().to_owned(), value)],
            false,
        )
    });
    ids.extend(committed.iter().map(|(id, _)| id.clone()));
    let view = shop.view_when_ready().await;
    wait_for("every order delivered", Duration::from_secs(90), || async {
        count_at(&view, &ids, 999) == ids.len()
    })
    .await;
    // Markers at the ends of pizza-status: a committed status each order already has.
    let again: Vec<_> = committed
        .iter()
        .map(|(id, _)| {
            let v = encode(&StatusOnly {
                status: 999,
                timestamp: Some(pizza::clock::now_ms()),
            });
            (sys.topics.status.clone(), id.as_str().to_owned(), v)
        })
        .collect();
    tokio::task::block_in_place(|| transaction(&txn, &again, true));
    assert!(
        view.status(aborted.as_str()).unwrap().is_none(),
        "the aborted order is never seen"
    );
    let (follower, new) = new_view(&KafkaTransport::new(&props, "it-txn-view").unwrap(), dir.path());
    wait_for("the new view's first fold", Duration::from_secs(60), || async {
        !new.followed().unwrap().is_empty()
    })
    .await;
    drop(follower);
    let producer = KafkaTransport::new(&props, "it-txn-check").unwrap();
    every_group_commits_to_the_end(&producer, &sys, &ServiceName::CONSUMERS).await;
    assert_eq!(
        new.dump().unwrap().status,
        view.dump().unwrap().status,
        "the new view is the live one"
    );
    shop.stop_cleanly().await;
}

/// On Apache Kafka: pizza-ordered and pizza-status deleted and made again under a running shop
/// (new topic ids, offsets from 0), then new orders. Every view notices that the logs it read are
/// gone and folds the new ones from their start: the status service's view shows the new orders
/// delivered, and a web app's view equals a rebuild of the new logs. Before issue 25 a view only
/// ever raised its read positions, and skipped the new logs' first records.
pub async fn a_topic_made_again_on(kafka: &TestBroker) {
    use pizza::transport::Transport;
    let sys = SysConfig::default();
    let props = kafka.props();
    let dir = data_dir();
    let shop = Shop::start(
        test_config(dir.path().to_owned(), 0.0),
        &ServiceName::CONSUMERS,
        pizza::shop::Restart::WithBackoff,
        {
            let props = props.clone();
            move |service| KafkaTransport::new(&props, &format!("it-{service}"))
        },
    );
    let producer = KafkaTransport::new(&props, "it-made-again").unwrap();
    let (follower, web_view) = new_view(&producer, dir.path());
    let before = place(&producer, &sys, 10).await;
    let view = shop.view_when_ready().await;
    wait_for("the first orders delivered", Duration::from_secs(60), || async {
        count_at(&view, &before, 999) == before.len()
    })
    .await;
    let was = producer
        .log_id(&sys.topics.status)
        .await
        .unwrap()
        .expect("a log id");
    remake(&producer, &sys, &[&sys.topics.ordered, &sys.topics.status]).await;
    let now = producer
        .log_id(&sys.topics.status)
        .await
        .unwrap()
        .expect("a log id");
    assert!(
        pizza::transport::other_log(&was, &now),
        "a new topic id: {was} {now}"
    );
    let after = place(&producer, &sys, 10).await;
    wait_for("the new orders delivered", Duration::from_secs(120), || async {
        count_at(&view, &after, 999) == after.len()
    })
    .await;
    let rebuilt = ViewStore::create(&dir.path().join("rebuilt.db")).unwrap();
    pizza::view::rebuild(&producer, &sys, &rebuilt).await.unwrap();
    let want = rebuilt.dump().unwrap();
    assert!(want
        .status
        .iter()
        .all(|row| !before.iter().any(|id| id.as_str() == row.0)));
    wait_for(
        "the web app's view is the new logs' fold",
        Duration::from_secs(60),
        || async { web_view.dump().unwrap() == want },
    )
    .await;
    drop(follower);
    shop.stop(STOP_WITHIN).await.ok();
}

/// Deletes `topics` and makes them again (the shop's partitions), waiting for each step.
async fn remake(producer: &KafkaTransport, sys: &SysConfig, topics: &[&str]) {
    use rdkafka::admin::{AdminClient, AdminOptions};
    use rdkafka::client::DefaultClientContext;
    let admin: AdminClient<DefaultClientContext> = producer.client_config().create().unwrap();
    admin.delete_topics(topics, &AdminOptions::new()).await.unwrap();
    wait_for("the topics deleted", Duration::from_secs(60), || async {
        let p = producer.clone();
        let names = tokio::task::spawn_blocking(move || p.topic_partitions(Duration::from_secs(5)))
            .await
            .unwrap()
            .unwrap_or_default();
        !names.iter().any(|(n, _)| topics.contains(&n.as_str()))
    })
    .await;
    pizza::admin::create_topics(producer, sys).await.unwrap();
    wait_for("the topics made again", Duration::from_secs(60), || async {
        topics.iter().all(|t| {
            let p = producer.clone();
            let t = (*t).to_owned();
            std::thread::spawn(move || p.topic_partitions(Duration::from_secs(5)))
                .join()
                .unwrap()
                .is_ok_and(|n| n.iter().any(|(name, c)| *name == t && *c > 0))
        })
    })
    .await;
}

/// A web app's view that cannot follow the log is a problem `/health-check` names once it has
/// lasted the grace given (issue 25, defect 8: an empty or stalled view answered Ok).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_view_that_cannot_follow_the_log_is_named_by_the_health_check() {
    let dir = data_dir();
    let view = Arc::new(ViewStore::open(&dir.path().join("web-view.db")).unwrap());
    // A port nothing listens on: no broker.
    let nowhere = KafkaProps::bootstrap(&format!("127.0.0.1:{}", free_port()));
    let transport = KafkaTransport::new(&nowhere, "it-view-health").unwrap();
    let follower = pizza::view::follow(transport, &Arc::new(SysConfig::default()), view);
    wait_for("the follower failing", Duration::from_secs(90), || async {
        follower.problems(Duration::ZERO).is_some()
    })
    .await;
    let problem = follower.problems(Duration::ZERO).unwrap();
    assert!(problem.starts_with("not following the log"), "{problem}");
    assert!(
        follower.problems(Duration::from_secs(3600)).is_none(),
        "within its grace"
    );
}
