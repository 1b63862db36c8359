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
    let follower = ViewFollower::start(transport.clone(), Arc::new(SysConfig::default()), view.clone());
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
    let mut notes: Vec<(String, i64)> = topic(&producer, &sys.topics.dlq)
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
    for service in [ServiceName::Assemble, ServiceName::Merge, ServiceName::Status] {
        let reader = group_reader(&producer, sys.group(service)).unwrap();
        let topics: Vec<(&str, usize)> = sys
            .topics
            .consumed_by(service)
            .into_iter()
            .map(|t| (t, sys.num_partitions as usize))
            .collect();
        wait_for(
            &format!("{service} committed past the markers"),
            Duration::from_secs(30),
            || async { group_lag(&reader, &topics, Duration::from_secs(5)).is_ok_and(|l| l.lag == 0) },
        )
        .await;
    }
    shop.stop_cleanly().await;
}
