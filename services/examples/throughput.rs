//! A quick measurement of how many orders per second the shop sustains: every service in this
//! process on the embedded broker at time scale 0, N orders placed as fast as the producer takes
//! them, timed until all are delivered in the view. (The load generator measures latency properly.)
//!
//! `cargo run --release -p pizza --example throughput -- [orders]`

use std::sync::Arc;
use std::time::{Duration, Instant};

use pizza::admin::EmbeddedBroker;
use pizza::clock::{now_ms, TimeScale};
use pizza::command::place_order;
use pizza::config::{KafkaProps, ServiceName, SysConfig};
use pizza::domain::{OrderId, OrderRequest};
use pizza::services::{self, ServiceConfig};
use pizza::shutdown::Shutdown;
use pizza::store::ViewStore;
use pizza::transport::kafka::KafkaTransport;
use pizza::worker::WorkerStats;

fn request(sys: &SysConfig, i: usize) -> OrderRequest {
    let m = &sys.menu;
    OrderRequest {
        username: format!("user{}", i % 100),
        sauce: m.sauces[i % m.sauces.len()].clone(),
        cheese: m.cheeses[i % m.cheeses.len()].clone(),
        main_topping: m.main_toppings[i % m.main_toppings.len()].clone(),
        extra_toppings: m.extra_toppings.iter().take(i % 4).cloned().collect(),
    }
}

async fn delivered(view: &ViewStore) -> u64 {
    view.count_by_status()
        .unwrap()
        .iter()
        .filter(|(s, _)| *s == 999)
        .map(|(_, n)| *n)
        .sum()
}

#[tokio::main]
async fn main() {
    let orders: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse().expect("orders: a number"))
        .unwrap_or(5000);
    let sys = SysConfig::default();
    let broker = EmbeddedBroker::start(&sys).unwrap();
    let props = KafkaProps::bootstrap(&broker.bootstrap_servers());
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = ServiceConfig::new(sys.clone(), dir.path().to_owned());
    cfg.time_scale = TimeScale::new(0.0).unwrap();
    let (trigger, shutdown) = Shutdown::new();
    let mut tasks = tokio::task::JoinSet::new();
    for service in ServiceName::CONSUMERS {
        let t = KafkaTransport::new(&props, service.as_str()).unwrap();
        tasks.spawn(services::run(
            service,
            cfg.clone(),
            t,
            Arc::new(WorkerStats::default()),
            shutdown.clone(),
        ));
    }
    let customer = KafkaTransport::new(&props, "customer").unwrap();
    place_order(&customer, &sys, &request(&sys, 0), OrderId::random(), now_ms())
        .await
        .unwrap();
    while !cfg.view_path().exists() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let view = ViewStore::open_read_only(&cfg.view_path()).unwrap();
    while delivered(&view).await < 1 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let start = Instant::now();
    let limit = Arc::new(tokio::sync::Semaphore::new(1000));
    let mut placing = tokio::task::JoinSet::new();
    for i in 0..orders {
        let permit = limit.clone().acquire_owned().await.unwrap();
        let (customer, sys) = (customer.clone(), sys.clone());
        placing.spawn(async move {
            let _p = permit;
            place_order(&customer, &sys, &request(&sys, i), OrderId::random(), now_ms())
                .await
                .unwrap();
        });
    }
    while placing.join_next().await.is_some() {}
    let placed = start.elapsed();
    while delivered(&view).await < orders as u64 + 1 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let done = start.elapsed();
    println!(
        "{orders} orders: placed in {:.2} s ({:.0}/s), all delivered in the view after {:.2} s: {:.0} orders/s end to end",
        placed.as_secs_f64(),
        orders as f64 / placed.as_secs_f64(),
        done.as_secs_f64(),
        orders as f64 / done.as_secs_f64()
    );
    trigger.fire();
    while let Some(r) = tasks.join_next().await {
        r.unwrap().unwrap();
    }
}
