//! One bad record must never stop the shop: records no service would write, produced byte for
//! byte onto the topics the services consume, on the embedded broker.

use std::time::Duration;

use std::collections::BTreeSet;

use pizza::admin::EmbeddedBroker;
use pizza::clock::now_ms;
use pizza::config::{ServiceName, SysConfig};
use pizza::domain::{encode, OrderId};
use pizza::hostile::{self, Expect, TAG_HEADER};
use pizza::transport::kafka::KafkaTransport;
use pizza::transport::{RawRecord, TransportError};
use pizza::worker::DLQ_PAYLOAD_BYTES;

use crate::common::*;

/// A valid pizza-ordered event for `key`, as raw bytes with `headers`.
fn raw_order(sys: &SysConfig, key: &str, headers: Vec<(Vec<u8>, Option<Vec<u8>>)>) -> RawRecord {
    let event = pizza::command::ordered_event(sys, &order_request(sys, 3), 1).unwrap();
    RawRecord {
        topic: sys.topics.ordered.clone(),
        partition: None,
        key: Some(key.as_bytes().to_vec()),
        payload: Some(encode(&event)),
        headers,
    }
}

/// The shop's services at time scale 0 on an embedded broker, and a producer beside them.
struct Fixture {
    sys: SysConfig,
    producer: KafkaTransport,
    shop: Shop,
    _dir: tempfile::TempDir,
    _broker: KeptOnPanic<EmbeddedBroker>,
}

fn shop() -> Fixture {
    let sys = SysConfig::default();
    let broker = EmbeddedBroker::start(&sys).unwrap();
    let props = broker.props();
    let producer = KafkaTransport::new(&props, "it-hostile").unwrap();
    let dir = data_dir();
    let shop = start_shop(
        &props,
        test_config(dir.path().to_owned(), 0.0),
        &ServiceName::CONSUMERS,
    );
    Fixture {
        sys,
        producer,
        shop,
        _dir: dir,
        _broker: KeptOnPanic(Some(broker)),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_key_that_is_not_utf8_stops_no_consumer() {
    let f = shop();
    let headers = vec![
        (b"\xff\xfe-key".to_vec(), Some(b"\x00\x01binary".to_vec())),
        (b"null-value".to_vec(), None),
        (b"dlq.reason".to_vec(), Some(b"spoofed".to_vec())),
    ];
    let odd = "0dd0dd01";
    f.producer
        .produce_raw(&raw_order(&f.sys, odd, headers))
        .await
        .unwrap();
    let ids = place(&f.producer, &f.sys, 1).await;
    let view = f.shop.view_when_ready().await;
    wait_for("both orders delivered", Duration::from_secs(60), || async {
        [odd, ids[0].as_str()]
            .iter()
            .all(|id| view.status(id).ok().flatten().is_some_and(|s| s.status == 999))
    })
    .await;
    // The key reads as Kafka's Java client reads it: invalid UTF-8 replaced, value kept as bytes.
    let ordered = topic(&f.producer, &f.sys.topics.ordered).await;
    let rec = ordered.iter().find(|r| r.key_str() == Some(odd)).unwrap();
    assert_eq!(
        rec.headers,
        vec![
            ("\u{fffd}\u{fffd}-key".to_owned(), b"\x00\x01binary".to_vec()),
            ("null-value".to_owned(), vec![]),
            ("dlq.reason".to_owned(), b"spoofed".to_vec()),
        ]
    );
    f.shop.stop_cleanly().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_record_too_large_to_dead_letter_whole_is_dead_lettered_in_part() {
    let f = shop();
    // Under the producer's limit (librdkafka's message.max.bytes, 1,000,000) by less than the
    // headers a dead-letter record adds: it can be written, but not copied whole.
    let payload = vec![b'x'; 999_900];
    let bad = RawRecord {
        topic: f.sys.topics.ordered.clone(),
        partition: None,
        key: Some(b"0b160b16".to_vec()),
        payload: Some(payload.clone()),
        headers: vec![(b"origin".to_vec(), Some(b"test".to_vec()))],
    };
    let at = f.producer.produce_raw(&bad).await.unwrap();
    let ids = place(&f.producer, &f.sys, 1).await;
    let view = f.shop.view_when_ready().await;
    wait_for("the good order delivered", Duration::from_secs(60), || async {
        count_at(&view, &ids, 999) == 1
    })
    .await;
    // Every service that reads pizza-ordered dead-lettered it, in part.
    let consumers = [
        ServiceName::Assemble,
        ServiceName::Deliver,
        ServiceName::Merge,
        ServiceName::Status,
    ];
    wait_for("four dead-letter records", Duration::from_secs(30), || async {
        records_on(&f.producer, &f.sys.topics.dlq).await >= 4
    })
    .await;
    let dlq = topic(&f.producer, &f.sys.topics.dlq).await;
    for service in consumers {
        let r = dlq
            .iter()
            .find(|r| header(r, "dlq.service") == Some(service.as_str()))
            .unwrap_or_else(|| panic!("{service} did not dead-letter it: {dlq:?}"));
        assert_eq!(header(r, "dlq.source.topic"), Some("pizza-ordered"));
        assert_eq!(
            header(r, "dlq.source.partition"),
            Some(&*at.partition.to_string())
        );
        assert_eq!(header(r, "dlq.source.offset"), Some(&*at.offset.to_string()));
        assert_eq!(header(r, "dlq.truncated"), Some("true"));
        assert_eq!(header(r, "dlq.payload.length"), Some("999900"));
        assert_eq!(header(r, "dlq.key.length"), Some("8"));
        assert_eq!(header(r, "dlq.headers.count"), Some("1"));
        assert!(header(r, "dlq.reason").unwrap().starts_with("invalid event JSON"));
        assert_eq!(r.key_str(), Some("0b160b16"));
        assert_eq!(r.payload(), &payload[..DLQ_PAYLOAD_BYTES]);
    }
    let counts = f.shop.stop_cleanly().await;
    for service in consumers {
        assert_eq!(counts[&service].dead_lettered_in_part, 1, "{service}");
    }
}

/// Every record of `pizza::hostile`'s catalogue, on every topic the shop consumes, at once: the
/// services all keep running, each malformed record is dead-lettered by every service that reads
/// its topic (and nothing else is), the one valid order among them and a good order placed after
/// them are delivered, and the records over the size limit are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_hostile_record_on_every_topic_leaves_the_shop_running() {
    let mut f = shop();
    let catalogue = hostile::pairs(&f.sys.topics, f.sys.num_partitions);
    let mut dead = Vec::new();
    let mut orders = Vec::new();
    for (n, (kind, topic, _)) in catalogue.iter().enumerate() {
        let id = OrderId::nth(n as u32, 0x4057_11e5);
        let spec = hostile::Spec {
            topics: &f.sys.topics,
            topic,
            order_id: &id,
            ts_ms: now_ms(),
            max_record_bytes: 1_000_000,
            partitions: f.sys.num_partitions,
            headers: vec![(TAG_HEADER.as_bytes().to_vec(), Some(n.to_string().into_bytes()))],
        };
        let h = hostile::make(*kind, &spec).unwrap();
        let produced = f.producer.produce_raw(&h.record).await;
        match (h.expect, produced) {
            (Expect::Refused, Err(TransportError::TooLarge(_))) => {}
            (Expect::DeadLettered, Ok(d)) => dead.push((topic.clone(), d.partition, d.offset, *kind)),
            (Expect::Handled, Ok(_)) if *kind == hostile::Kind::HeaderBytes => orders.push(id),
            (Expect::Handled, Ok(_)) => {}
            (expect, got) => panic!("{kind:?} on {topic}: expected {expect:?}, the producer said {got:?}"),
        }
    }
    orders.extend(place(&f.producer, &f.sys, 1).await);
    let view = f.shop.view_when_ready().await;
    wait_for("every order delivered", Duration::from_secs(60), || async {
        count_at(&view, &orders, 999) == orders.len()
    })
    .await;
    let expected: BTreeSet<(String, i32, i64, String)> = dead
        .iter()
        .flat_map(|(topic, p, o, _)| {
            f.sys
                .topics
                .consumers_of(topic)
                .into_iter()
                .map(move |s| (topic.clone(), *p, *o, s.as_str().to_owned()))
        })
        .collect();
    wait_for(
        "every malformed record dead-lettered",
        Duration::from_secs(60),
        || async { records_on(&f.producer, &f.sys.topics.dlq).await >= expected.len() as i64 },
    )
    .await;
    let got: BTreeSet<(String, i32, i64, String)> = topic(&f.producer, &f.sys.topics.dlq)
        .await
        .iter()
        .map(|r| {
            assert!(!header(r, "dlq.reason").unwrap_or_default().is_empty(), "{r:?}");
            (
                header(r, "dlq.source.topic").unwrap().to_owned(),
                header(r, "dlq.source.partition").unwrap().parse().unwrap(),
                header(r, "dlq.source.offset").unwrap().parse().unwrap(),
                header(r, "dlq.service").unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        got, expected,
        "pizza-dlq holds exactly the malformed records, once per reader"
    );
    f.shop.assert_running();
    eprintln!(
        "{} hostile records ({} kinds x 6 topics where they apply): {} dead-lettered {} times, {} orders delivered",
        catalogue.len(),
        hostile::Kind::ALL.len(),
        dead.len(),
        got.len(),
        orders.len()
    );
    f.shop.stop_cleanly().await;
}

/// Writes order `id` for customer "taker" to every partition of pizza-ordered but its key's
/// murmur2 one; returns where the copies sit that no ordinary producer puts (partition, offset),
/// leaving out the one on librdkafka's CRC-32 partition.
async fn write_elsewhere(f: &Fixture, id: &OrderId) -> BTreeSet<(String, String)> {
    let sys = &f.sys;
    let n = sys.num_partitions;
    let key = id.as_str().as_bytes();
    let home = pizza::partitioner::partition_for(key, n);
    let crc = pizza::partitioner::crc32_partition(key, n);
    let mut taker = order_request(sys, 5);
    taker.username = "taker".into();
    let taken = pizza::command::ordered_event(sys, &taker, now_ms()).unwrap();
    let mut misplaced = BTreeSet::new();
    for p in (0..n).filter(|p| *p != home) {
        let copy = RawRecord {
            topic: sys.topics.ordered.clone(),
            partition: Some(p),
            key: Some(key.to_vec()),
            payload: Some(encode(&taken)),
            headers: Vec::new(),
        };
        let at = f.producer.produce_raw(&copy).await.unwrap();
        if p != crc {
            misplaced.insert((at.partition.to_string(), at.offset.to_string()));
        }
    }
    misplaced
}

/// An order's id written with another customer to every other partition of pizza-ordered,
/// before the order itself (issue 25, defect 5): where no producer puts its key it is not the
/// order's record, and every service that reads pizza-ordered dead-letters it; on librdkafka's
/// CRC-32 partition (where a Python producer left at its defaults puts it) it is read, but the
/// order's details are those from its key's murmur2 partition, in the status service's view and
/// in a view folded afterwards from the log alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_written_on_other_partitions_is_not_taken_over() {
    let f = shop();
    let sys = &f.sys;
    let id = OrderId::random();
    let misplaced = write_elsewhere(&f, &id).await;
    let owner = order_request(sys, 1);
    pizza::command::place_order(&f.producer, sys, &owner, id.clone(), now_ms())
        .await
        .unwrap();
    let view = f.shop.view_when_ready().await;
    let details = |v: &pizza::store::ViewStore| {
        v.order(id.as_str())
            .ok()
            .flatten()
            .and_then(|o| Some((o.status?.status, o.details?.username)))
    };
    wait_for("the order delivered", Duration::from_secs(60), || async {
        details(&view).is_some_and(|(s, _)| s == 999)
    })
    .await;
    assert_eq!(
        details(&view).unwrap().1,
        owner.username,
        "the status service's view"
    );
    let dir = data_dir();
    let later = pizza::store::ViewStore::create(&dir.path().join("later.db")).unwrap();
    pizza::view::rebuild(&f.producer, sys, &later).await.unwrap();
    assert_eq!(
        details(&later).unwrap().1,
        owner.username,
        "a view folded afterwards"
    );
    // Each misplaced copy is dead-lettered once by each service that reads pizza-ordered.
    let readers = [
        ServiceName::Assemble,
        ServiceName::Deliver,
        ServiceName::Merge,
        ServiceName::Status,
    ];
    let want = misplaced.len() * readers.len();
    wait_for(
        "every misplaced copy dead-lettered",
        Duration::from_secs(30),
        || async { records_on(&f.producer, &sys.topics.dlq).await >= want as i64 },
    )
    .await;
    let dlq = topic(&f.producer, &sys.topics.dlq).await;
    for service in readers {
        let noted: BTreeSet<(String, String)> = dlq
            .iter()
            .filter(|r| header(r, "dlq.service") == Some(service.as_str()))
            .filter(|r| header(r, "dlq.reason").is_some_and(|w| w.contains("not that key's record")))
            .map(|r| {
                let at = |h| header(r, h).unwrap_or_default().to_owned();
                (at("dlq.source.partition"), at("dlq.source.offset"))
            })
            .collect();
        assert_eq!(noted, misplaced, "{service}");
    }
    f.shop.stop_cleanly().await;
}
