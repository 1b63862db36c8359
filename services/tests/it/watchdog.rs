//! The watchdog marks an order that stopped moving as stuck, by an event on the log, within the
//! SLA plus one period; the next progress clears the mark.

use std::time::{Duration, Instant};

use pizza::config::{ServiceName, SysConfig};
use pizza::services::ServiceConfig;
use pizza::transport::kafka::KafkaTransport;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_order_is_marked_stuck_and_progress_clears_it() {
    a_stalled_order_is_marked_stuck_and_progress_clears_it_on(&TestBroker::embedded()).await;
}

/// The test on `broker` (the embedded one above, Apache Kafka in `kafka.rs`).
pub async fn a_stalled_order_is_marked_stuck_and_progress_clears_it_on(broker: &TestBroker) {
    let sys = SysConfig::default();
    let props = broker.props();
    let customer = KafkaTransport::new(&props, "it-customer").unwrap();
    let dir = data_dir();
    // The spec's watchdog (every 15 s, stuck after 45 s) at scale 0.02: every 0.3 s, after 0.9 s.
    let mut cfg = ServiceConfig::new(sys.clone(), dir.path().to_owned());
    cfg.time_scale = pizza::clock::TimeScale::new(0.02).unwrap();
    // No assemble service: orders stop at 100.
    let shop = start_shop(&props, cfg.clone(), &[ServiceName::Merge, ServiceName::Status]);
    let ids = place(&customer, &sys, 1).await;
    let id = ids[0].as_str();
    wait_for("the view file", Duration::from_secs(30), || async {
        cfg.view_path().exists()
    })
    .await;
    let view = shop.view();
    wait_for("the order at 100", Duration::from_secs(60), || async {
        count_at(&view, &ids, 100) == 1
    })
    .await;
    let at_100 = view.status(id).unwrap().unwrap().status_at_ms;
    let seen = Instant::now();
    wait_for("the stuck mark", Duration::from_secs(30), || async {
        view.status(id).unwrap().is_some_and(|s| s.stuck)
    })
    .await;
    let s = view.status(id).unwrap().unwrap();
    assert_eq!(s.status, 100, "stuck is a flag, not a status");
    let marked_after_ms = s.stuck_at_ms.unwrap() - at_100;
    eprintln!("marked stuck {marked_after_ms} ms after it reached 100 (SLA 900 ms + period 300 ms)");
    assert!(marked_after_ms >= 900, "not before the SLA: {marked_after_ms} ms");
    assert!(seen.elapsed() < Duration::from_secs(10));
    let row = view.order(id).unwrap().unwrap();
    let body = pizza::web::api::order_body(&sys, id, Some(row));
    assert_eq!(body.status_text, "Your order is delayed, bear with us!");

    // The mark is on the log: pizza-status carries it.
    let marks: Vec<_> = topic(&customer, &sys.topics.status)
        .await
        .into_iter()
        .filter(|r| r.key_str() == Some(id))
        .map(|r| serde_json::from_slice::<serde_json::Value>(r.payload()).unwrap())
        .filter(|v| v["STATUS"] == 50)
        .collect();
    assert!(!marks.is_empty());
    assert_eq!(marks[0]["OBSERVED_STATUS"], 100);

    // Progress clears it.
    let more = start_shop(&props, cfg.clone(), &[ServiceName::Assemble]);
    wait_for("the order at 200, not stuck", Duration::from_secs(60), || async {
        view.status(id)
            .unwrap()
            .is_some_and(|s| s.status == 200 && !s.stuck)
    })
    .await;
    more.stop_cleanly().await;
    shop.stop_cleanly().await;
}
