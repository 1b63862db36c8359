//! Bad input goes to the dead-letter topic and the service keeps going; a pizza baked before its
//! order is known is reported pending, then delivered.

use std::time::Duration;

use pizza::config::{ServiceName, SysConfig};
use pizza::domain::{encode, StatusOnly};
use pizza::transport::kafka::KafkaTransport;
use pizza::transport::{OutRecord, Transport};

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_events_are_dead_lettered_and_the_service_keeps_going() {
    malformed_events_are_dead_lettered_and_the_service_keeps_going_on(&TestBroker::embedded()).await;
}

/// The test on `broker` (the embedded one above, Apache Kafka in `kafka.rs`).
pub async fn malformed_events_are_dead_lettered_and_the_service_keeps_going_on(broker: &TestBroker) {
    let sys = SysConfig::default();
    let props = broker.props();
    let producer = KafkaTransport::new(&props, "it-bad").unwrap();
    let bad: [(&str, &[u8]); 3] = [
        ("0000bad1", b"this is not JSON"),
        ("0000bad2", br#"{"status":100,"timestamp":1}"#),
        ("0000bad3", br#"{"status":100,"order":{"sauce":"Pesto"}}"#),
    ];
    let mut bad_offsets = Vec::new();
    for (key, payload) in bad {
        let d = producer
            .produce(OutRecord::new(&sys.topics.ordered, key, payload.to_vec()))
            .await
            .unwrap();
        bad_offsets.push((d.partition, d.offset));
    }
    // A good order after the bad ones.
    let ids = place(&producer, &sys, 1).await;

    let dir = data_dir();
    let shop = start_shop(
        &props,
        test_config(dir.path().to_owned(), 0.0),
        &[ServiceName::Assemble],
    );
    wait_for("the good order assembled", Duration::from_secs(60), || async {
        records_on(&producer, &sys.topics.assembled).await == 1
    })
    .await;
    let assembled = topic(&producer, &sys.topics.assembled).await;
    assert_eq!(assembled[0].key_str(), Some(ids[0].as_str()));

    let dlq = topic(&producer, &sys.topics.dlq).await;
    assert_eq!(dlq.len(), 3, "{dlq:?}");
    for (key, payload) in bad {
        let r = dlq
            .iter()
            .find(|r| r.key_str() == Some(key))
            .expect("dead-lettered");
        assert_eq!(r.payload(), payload, "original bytes kept");
        assert_eq!(header(r, "dlq.source.topic"), Some("pizza-ordered"));
        assert_eq!(header(r, "dlq.service"), Some("assemble"));
        let (p, o) = (
            header(r, "dlq.source.partition").unwrap(),
            header(r, "dlq.source.offset").unwrap(),
        );
        assert!(bad_offsets.contains(&(p.parse().unwrap(), o.parse().unwrap())));
        assert!(
            header(r, "dlq.reason").unwrap().starts_with("invalid event JSON"),
            "{:?}",
            header(r, "dlq.reason")
        );
    }
    let counts = shop.stop_cleanly().await;
    assert_eq!(counts[&ServiceName::Assemble].dead_lettered, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baked_before_ordered_is_pending_then_delivered() {
    baked_before_ordered_is_pending_then_delivered_on(&TestBroker::embedded()).await;
}

/// The test on `broker` (the embedded one above, Apache Kafka in `kafka.rs`).
pub async fn baked_before_ordered_is_pending_then_delivered_on(broker: &TestBroker) {
    let sys = SysConfig::default();
    let props = broker.props();
    let producer = KafkaTransport::new(&props, "it-early").unwrap();
    let dir = data_dir();
    let shop = start_shop(
        &props,
        test_config(dir.path().to_owned(), 0.0),
        &[ServiceName::Deliver],
    );
    let order_id = "0000beef";
    let baked = StatusOnly {
        status: 300,
        timestamp: Some(1),
    };
    producer
        .produce(OutRecord::new(&sys.topics.baked, order_id, encode(&baked)))
        .await
        .unwrap();
    wait_for("pizza-pending", Duration::from_secs(60), || async {
        records_on(&producer, &sys.topics.pending).await == 1
    })
    .await;
    assert_eq!(records_on(&producer, &sys.topics.delivered).await, 0);

    // The order shows up late: now it is delivered.
    let mut req = order_request(&sys, 0);
    req.username = "late".into();
    let event = pizza::command::ordered_event(&sys, &req, 2).unwrap();
    producer
        .produce(OutRecord::new(&sys.topics.ordered, order_id, encode(&event)))
        .await
        .unwrap();
    wait_for("pizza-delivered", Duration::from_secs(60), || async {
        records_on(&producer, &sys.topics.delivered).await == 1
    })
    .await;
    let pending = topic(&producer, &sys.topics.pending).await;
    let v: serde_json::Value = serde_json::from_slice(pending[0].payload()).unwrap();
    assert_eq!(v["status"], 150);
    let delivered = topic(&producer, &sys.topics.delivered).await;
    assert_eq!(delivered[0].key_str(), Some(order_id));
    shop.stop_cleanly().await;
}
