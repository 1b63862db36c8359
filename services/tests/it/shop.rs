//! The in-process shop itself: it stops within its bound and names what did not, a service that
//! cannot start is reported (or, supervised, started again), and `ready` takes an order through.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pizza::admin::EmbeddedBroker;
use pizza::config::{KafkaProps, ServiceName, SysConfig};
use pizza::domain::{encode, Assembled, OrderId};
use pizza::partitioner::partition_for;
use pizza::services::RunError;
use pizza::shop::{Restart, Shop, ShopError};
use pizza::transport::kafka::KafkaTransport;
use pizza::transport::{OutRecord, Transport, TransportError};

use crate::common::*;

/// An embedded broker (kept if a test fails, so no consumer outlives it), and a data directory.
struct Setup {
    sys: SysConfig,
    props: KafkaProps,
    dir: tempfile::TempDir,
    _broker: KeptOnPanic<EmbeddedBroker>,
}

fn setup() -> Setup {
    let sys = SysConfig::default();
    let broker = EmbeddedBroker::start(&sys).unwrap();
    Setup {
        props: broker.props(),
        sys,
        dir: data_dir(),
        _broker: KeptOnPanic(Some(broker)),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_takes_an_order_through_and_stop_returns_what_each_service_counted() {
    let Setup { props, dir, .. } = &setup();
    let mut shop = start_shop(
        props,
        test_config(dir.path().to_owned(), 0.0),
        &ServiceName::CONSUMERS,
    );
    let customer = KafkaTransport::new(props, "it-shop").unwrap();
    shop.ready(&customer, OrderId::random(), Duration::from_secs(60))
        .await
        .unwrap();
    let delivered = count_by(&shop.view(), 999);
    assert_eq!(delivered, 1, "the warm-up order is delivered in the view");
    let counts = shop.stop_cleanly().await;
    assert_eq!(counts.len(), 5);
    // 999 in the view means each service handled a record of the order: assemble its order,
    // bake its pizza, deliver the baked pizza, merge the delivery, status the 999.
    assert!(
        counts.values().all(|c| c.done >= 1 && c.dead_lettered == 0),
        "{counts:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_refuses_a_shop_that_cannot_take_an_order_through() {
    let Setup { props, dir, .. } = &setup();
    let mut shop = start_shop(
        props,
        test_config(dir.path().to_owned(), 0.0),
        &[ServiceName::Assemble],
    );
    let customer = KafkaTransport::new(props, "it-shop").unwrap();
    let e = shop
        .ready(&customer, OrderId::random(), Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(matches!(e, ShopError::NotWhole(_)), "{e:?}");
    shop.stop_cleanly().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_gives_up_at_its_bound_and_names_the_services_still_running() {
    let Setup { sys, props, dir, .. } = &setup();
    // Real time: a pizza that bakes for 30 s holds bake's shutdown (it finishes what it holds).
    let shop = start_shop(
        props,
        test_config(dir.path().to_owned(), 1.0),
        &[ServiceName::Bake],
    );
    let producer = KafkaTransport::new(props, "it-shop").unwrap();
    // A slow pizza, then a quick one behind it on the same partition (another order, so it does
    // not wait for the slow one): once the quick one is baked, bake holds the slow one.
    let slow_key = "0000beef";
    let partitions = sys.num_partitions;
    let same_partition =
        |k: &str| partition_for(k.as_bytes(), partitions) == partition_for(slow_key.as_bytes(), partitions);
    let quick_key = (1u32..)
        .map(|n| format!("{n:08x}"))
        .find(|k| same_partition(k))
        .expect("some key shares the partition");
    for (key, baking_time) in [(slow_key, 30), (quick_key.as_str(), 0)] {
        let e = Assembled {
            status: sys.codes.in_the_oven,
            baking_time,
            timestamp: Some(1),
        };
        producer
            .produce(OutRecord::new(&sys.topics.assembled, key, encode(&e)))
            .await
            .unwrap();
    }
    wait_for("the quick pizza baked", Duration::from_secs(30), || async {
        topic(&producer, &sys.topics.baked)
            .await
            .iter()
            .any(|r| r.key_str() == Some(quick_key.as_str()))
    })
    .await;
    let started = Instant::now();
    let e = shop.stop(Duration::from_secs(1)).await.unwrap_err();
    let took = started.elapsed();
    assert!(
        matches!(&e, ShopError::StopTimedOut(late, _) if late == &[ServiceName::Bake]),
        "{e:?}"
    );
    assert!(
        took < Duration::from_secs(5),
        "stop took {took:?} with a bound of 1 s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_that_cannot_start_is_reported_or_started_again() {
    let Setup { props, dir, .. } = &setup();
    // The first connection of each service fails, as a broker that is not up yet would.
    let flaky = |props: KafkaProps| {
        let calls = Arc::new(AtomicU32::new(0));
        move |service: ServiceName| {
            if calls.fetch_add(1, Ordering::Relaxed) == 0 {
                return Err(TransportError::retriable("the broker is not up yet"));
            }
            KafkaTransport::new(&props, &format!("it-{service}"))
        }
    };

    let cfg = test_config(dir.path().to_owned(), 0.0);
    let mut once = Shop::start(
        cfg.clone(),
        &[ServiceName::Assemble],
        Restart::Never,
        flaky(props.clone()),
    );
    let stopped = wait_until_stopped(&mut once).await;
    assert!(
        matches!(
            &stopped,
            ShopError::Stopped(ServiceName::Assemble, RunError::Connect(_))
        ),
        "{stopped:?}"
    );

    let mut supervised = Shop::start(
        cfg,
        &[ServiceName::Assemble],
        Restart::WithBackoff,
        flaky(props.clone()),
    );
    let state = supervised.supervised();
    wait_for("assemble reported down", Duration::from_secs(10), || {
        let down = !state.problems().is_empty();
        async move { down }
    })
    .await;
    assert!(
        state.problems()[0].contains("the broker is not up yet"),
        "{:?}",
        state.problems()
    );
    wait_for("assemble started again", Duration::from_secs(10), || {
        let up = state.problems().is_empty();
        async move { up }
    })
    .await;
    supervised.assert_running();
    supervised.stop_cleanly().await;
}

/// The error a shop's first stopped service stopped on.
async fn wait_until_stopped(shop: &mut Shop) -> ShopError {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Err(e) = shop.check_running() {
            return e;
        }
        assert!(Instant::now() < deadline, "the service did not stop");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn count_by(view: &pizza::store::ViewStore, status: i64) -> u64 {
    view.count_by_status()
        .unwrap()
        .into_iter()
        .filter(|(s, _)| *s == status)
        .map(|(_, n)| n)
        .sum()
}
