//! Every service's handler against arbitrary records (proptest, fixed seed): whatever the topic,
//! key, value and headers, a handler returns done, malformed or retriable, never a fatal error and
//! never a panic; and a record is malformed for a service exactly when the shared judgement
//! (`event::parse`) says so, for every service that reads its topic and for merge alike.
//! The handlers are the real ones, on the embedded broker and real SQLite files, at time scale 0.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use pizza::admin::EmbeddedBroker;
use pizza::config::{ServiceName, SysConfig};
use pizza::domain::OrderId;
use pizza::error::Report;
use pizza::event::parse;
use pizza::hostile::consumed_topics;
use pizza::services::{assemble, bake, deliver, merge, status, ServiceConfig};
use pizza::store::DeliveryStore;
use pizza::transport::kafka::KafkaTransport;
use pizza::transport::Record;
use pizza::worker::{HandleError, Handler};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};
use serde_json::{json, Value};

/// The seed of every run: a failure replays as it was.
const SEED: [u8; 32] = *b"pizza-shop-handlers-proptest-001";
/// Records tried (each by all five handlers); `PIZZA_PROPTEST_CASES` raises it for a longer hunt.
const CASES: u32 = 4000;

struct Handlers {
    assemble: assemble::Assemble<KafkaTransport>,
    bake: bake::Bake<KafkaTransport>,
    deliver: deliver::Deliver<KafkaTransport>,
    merge: merge::Merge<KafkaTransport>,
    status: status::Status,
    sys: SysConfig,
    _broker: EmbeddedBroker,
    _dir: tempfile::TempDir,
}

fn handlers() -> Handlers {
    {
        let sys = SysConfig::default();
        let broker = EmbeddedBroker::start(&sys).unwrap();
        let props = broker.props();
        let transport = KafkaTransport::new(&props, "it-props").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let cfg = crate::common::test_config(dir.path().to_owned(), 0.0);
        Handlers {
            assemble: assemble::Assemble {
                transport: transport.clone(),
                cfg: cfg.clone(),
            },
            bake: bake::Bake {
                transport: transport.clone(),
                cfg: cfg.clone(),
            },
            deliver: deliver::Deliver::new(
                transport.clone(),
                cfg.clone(),
                Arc::new(DeliveryStore::open(&cfg.delivery_path()).unwrap()),
            ),
            merge: merge::Merge {
                transport,
                cfg: cfg.clone(),
            },
            status: status::Status::new(cfg.clone()),
            sys: cfg_sys(&cfg),
            _broker: broker,
            _dir: dir,
        }
    }
}

fn cfg_sys(cfg: &ServiceConfig) -> SysConfig {
    (*cfg.sys).clone()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Any JSON value, nested a few levels.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        ".{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A field's value: mostly of the right type and sometimes out of range, else anything.
fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        12 => (-5i64..4000).prop_map(Value::from),
        1 => any::<i64>().prop_map(Value::from),
        1 => any_json(),
    ]
}

fn text(menu: &'static [&'static str]) -> impl Strategy<Value = Value> {
    prop_oneof![
        12 => prop::sample::select(menu).prop_map(Value::from),
        1 => ".{0,20}".prop_map(Value::from),
        1 => any_json(),
    ]
}

/// An event shaped like the topic's, its fields drawn as above, some left out, extras added.
fn event(topic: usize) -> BoxedStrategy<Value> {
    let status_key = if topic == 5 { "STATUS" } else { "status" };
    let base = (
        number(),
        number(),
        prop::collection::btree_map("[a-z]{1,6}", any_json(), 0..2),
        prop::collection::vec(any::<bool>(), 4),
    );
    match topic {
        0 => (
            base,
            text(&["Tomato", "Pesto", "Hummus"]),
            text(&["Gouda", "Cheddar"]),
            text(&["Pork", "Chicken"]),
            prop_oneof![
                12 => "[0-9a-f]{32}".prop_map(Value::from),
                1 => Just(Value::from("")),
                1 => any_json(),
            ],
            prop::collection::vec(text(&["Egg", "Onion"]), 0..3),
        )
            .prop_map(
                |((status, ts, extra, keep), sauce, cheese, main, customer, extras)| {
                    let mut order = json!({"extra_toppings": extras, "sauce": sauce, "cheese": cheese,
                    "main_topping": main, "customer_id": customer, "username": "prop"});
                    if !keep[3] {
                        order.as_object_mut().unwrap().remove("customer_id");
                    }
                    let mut e = json!({"status": status, "timestamp": ts, "order": order});
                    if !keep[0] {
                        e.as_object_mut().unwrap().remove("timestamp");
                    }
                    e.as_object_mut().unwrap().extend(extra);
                    e
                },
            )
            .boxed(),
        _ => (base, number())
            .prop_map(move |((status, ts, extra, keep), baking)| {
                let mut e = json!({ status_key: status, "timestamp": ts });
                if topic == 1 && keep[1] {
                    e["baking_time"] = baking;
                }
                if !keep[0] {
                    e.as_object_mut().unwrap().remove("timestamp");
                }
                if !keep[2] {
                    e.as_object_mut().unwrap().remove(status_key);
                }
                e.as_object_mut().unwrap().extend(extra);
                e
            })
            .boxed(),
    }
}

/// A value: an event as JSON (sometimes cut, a byte changed, or garbage after it), any JSON, any
/// bytes, or none at all.
fn payload(topic: usize) -> impl Strategy<Value = Option<Vec<u8>>> {
    let json_bytes = event(topic).prop_map(|v| serde_json::to_vec(&v).unwrap());
    prop_oneof![
        6 => json_bytes.clone().prop_map(Some),
        2 => (json_bytes, any::<prop::sample::Index>(), any::<u8>(), 0..3u8).prop_map(|(mut b, at, byte, how)| {
            let i = at.index(b.len().max(1)).min(b.len());
            match how {
                0 => b.truncate(i),
                1 if !b.is_empty() => {
                    let last = b.len() - 1;
                    b[i.min(last)] = byte;
                }
                _ => b.extend_from_slice(&[byte, b'}', b'{']),
            }
            Some(b)
        }),
        1 => any_json().prop_map(|v| Some(serde_json::to_vec(&v).unwrap())),
        1 => prop::collection::vec(any::<u8>(), 0..64).prop_map(Some),
        1 => Just(None),
    ]
}

fn key() -> impl Strategy<Value = Option<Vec<u8>>> {
    prop_oneof![
        6 => any::<u32>().prop_map(|n| Some(OrderId::from_u32(n).as_str().as_bytes().to_vec())),
        1 => Just(None),
        1 => prop::collection::vec(any::<u8>(), 0..12).prop_map(Some),
        1 => "[0-9a-fA-F]{7,9}".prop_map(|s| Some(s.into_bytes())),
    ]
}

fn record() -> impl Strategy<Value = Record> {
    (0usize..7)
        .prop_flat_map(|topic| {
            (
                Just(topic),
                key(),
                payload(topic.min(5)),
                prop::collection::vec((".{0,8}", prop::collection::vec(any::<u8>(), 0..8)), 0..3),
                any::<i32>(),
                any::<i64>(),
                prop::option::of(any::<i64>()),
            )
        })
        .prop_map(
            |(topic, key, payload, headers, partition, offset, timestamp_ms)| {
                let topics = SysConfig::default().topics;
                let name = consumed_topics(&topics)
                    .get(topic)
                    .map_or("pizza-unknown".to_owned(), |t| (*t).to_owned());
                Record {
                    topic: name,
                    partition,
                    offset,
                    key,
                    payload,
                    headers,
                    timestamp_ms,
                }
            },
        )
}

/// Runs `handler` on `rec`; what it returned, unless that was fatal (a failed case).
async fn verdict<H: Handler>(name: &str, handler: &H, rec: &Record) -> Result<bool, TestCaseError> {
    match handler.handle(rec).await {
        Ok(()) => Ok(true),
        Err(HandleError::Malformed(_)) => Ok(false),
        // The broker may be slow to answer: that is the retriable class, allowed (and a gated
        // handler's partition not ready yet).
        Err(HandleError::Retriable(_) | HandleError::NotReady(_)) => Ok(true),
        Err(HandleError::Fatal(e)) => Err(TestCaseError::fail(format!(
            "{name} failed fatally on {rec:?}: {}",
            Report(&*e)
        ))),
    }
}

#[test]
fn every_handler_takes_any_record_and_judges_it_as_the_others_do() {
    let rt = runtime();
    // The handlers' transport needs a runtime to start in.
    let h = rt.block_on(async { handlers() });
    let cases = std::env::var("PIZZA_PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(CASES);
    let config = Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner = TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &SEED));
    let ran = AtomicU64::new(0);
    let valid = AtomicU64::new(0);
    let result = runner.run(&record(), |rec| {
        ran.fetch_add(1, Ordering::Relaxed);
        let judged = parse(&h.sys.topics, &rec).is_ok();
        valid.fetch_add(u64::from(judged), Ordering::Relaxed);
        rt.block_on(async {
            let verdicts = [
                (
                    ServiceName::Assemble,
                    verdict("assemble", &h.assemble, &rec).await?,
                ),
                (ServiceName::Bake, verdict("bake", &h.bake, &rec).await?),
                (ServiceName::Deliver, verdict("deliver", &h.deliver, &rec).await?),
                (ServiceName::Merge, verdict("merge", &h.merge, &rec).await?),
                (ServiceName::Status, verdict("status", &h.status, &rec).await?),
            ];
            let readers = h.sys.topics.consumers_of(&rec.topic);
            for (service, handled) in verdicts {
                // A service that does not read the topic refuses the record as malformed.
                let expected = judged && readers.contains(&service);
                prop_assert_eq!(
                    handled,
                    expected,
                    "{} judged {:?} {} (the shared judgement: {:?})",
                    service,
                    rec,
                    if handled { "valid" } else { "malformed" },
                    parse(&h.sys.topics, &rec)
                );
            }
            Ok(())
        })
    });
    eprintln!(
        "handlers: {} records (seeded), {} of them valid events, each through all five handlers",
        ran.load(Ordering::Relaxed),
        valid.load(Ordering::Relaxed)
    );
    if let Err(e) = result {
        panic!("{e}");
    }
}
