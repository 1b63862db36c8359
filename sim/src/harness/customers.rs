//! The customers' node: orders placed through the command side the web app uses, and beside them
//! the scenario's bad records (malformed ones the shop must dead-letter, and hostile ones from the
//! whole of `pizza::hostile`'s catalogue), produced raw as a hostile producer would.
//!
//! Orders and bad records draw from generators of their own, so a seed places the same orders
//! with or without bad records. The order of the draws is part of the seed's meaning: changing it
//! changes every run's trace.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use pizza::clock::now_ms;
use pizza::command::{confirm_order, place_order, PlaceError};
use pizza::config::{SysConfig, Topics};
use pizza::domain::{Menu, OrderId, OrderRequest};
use pizza::error::Report;
use pizza::hostile::{self, Expect, Hostile, Kind, TAG_HEADER};
use pizza::transport::TransportError;
use tokio::task::JoinHandle;

use super::{Invariant, Shared};
use crate::broker::MAX_RECORD_BYTES;
use crate::log::{Codec, Entry};
use crate::node::SimTransport;
use crate::rng::SplitMix64;
use crate::scenario::Scenario;

/// How often a customer told "being confirmed" confirms the order, and how long they wait first.
const CONFIRM_ATTEMPTS: u32 = 3;
const CONFIRM_PAUSE: Duration = Duration::from_secs(5);

/// Attempts at a hostile record while the broker is out of reach (each waits out the producer's
/// 10 s deadline): far longer than any scenario's outage.
const HOSTILE_ATTEMPTS: u32 = 100;

/// Customers place `orders` at `rate` (exponential gaps), each through `place_order`; an order is
/// accepted when that returned Ok (the customer was told "placed"). The scenario's bad records go
/// out from here too, beside the orders: `malformed` records the shop must dead-letter, and with
/// chance `hostile` per order one from the whole of `pizza::hostile`'s catalogue.
pub(super) async fn place_orders(sc: Scenario, seed: u64, sys: SysConfig, shared: Arc<Shared>) {
    let t = SimTransport::connect("customers").await;
    let mut rng = SplitMix64::new(seed ^ 0xc057_0e75);
    let mut bad = BadRecords::new(seed, &sys.topics, sys.num_partitions);
    let menu = sys.menu.clone();
    let mut desk = Desk {
        t,
        sys: Arc::new(sys),
        shared,
        used: BTreeSet::new(),
    };
    let mut log = LogWriter {
        rng: SplitMix64::new(seed ^ 0x0010_cb47_c4e5),
        knobs: sc.log,
        partitions: desk.sys.num_partitions,
    };
    // Which order each malformed event goes out beside.
    let malformed_at: Vec<u32> = (0..sc.malformed)
        .map(|_| rng.below(u64::from(sc.orders.max(1))) as u32)
        .collect();
    let mut placing = Vec::new();
    for i in 0..sc.orders {
        let gap = -(1.0 - rng.unit()).ln() / sc.rate;
        tokio::time::sleep(Duration::from_secs_f64(gap)).await;
        let id = unique_id(&mut rng, &mut desk.used);
        let req = draw_order(&mut rng, &menu);
        placing.push(desk.place(id, req));
        for _ in (0..sc.malformed).filter(|n| malformed_at[*n as usize] == i) {
            placing.push(bad.send(Pool::Malformed, &mut desk));
        }
        if sc.hostile > 0.0 && bad.rng.chance(sc.hostile) {
            placing.push(bad.send(Pool::Catalogue, &mut desk));
        }
        placing.extend(log.beside_an_order(&mut desk, &menu));
    }
    if sc.orders == 0 {
        for _ in 0..sc.malformed {
            placing.push(bad.send(Pool::Malformed, &mut desk));
        }
    }
    for p in placing {
        let _ = p.await;
    }
}

/// What the customers' node sends with, and reports to.
struct Desk {
    t: SimTransport,
    sys: Arc<SysConfig>,
    shared: Arc<Shared>,
    /// Every order id handed out, to orders and bad records alike: no two share one.
    used: BTreeSet<OrderId>,
}

impl Desk {
    /// Places one order on a task of its own and records what the customer was told: placed, not
    /// placed, or being confirmed. A customer told "being confirmed" confirms the order (the same
    /// event again) up to [`CONFIRM_ATTEMPTS`] times, [`CONFIRM_PAUSE`] apart, as the web app's
    /// confirm button does.
    fn place(&self, id: OrderId, req: OrderRequest) -> JoinHandle<()> {
        let (t, sys, shared) = (self.t.clone(), self.sys.clone(), self.shared.clone());
        tokio::spawn(async move {
            let mut placed = place_order(&t, &sys, &req, id.clone(), now_ms()).await;
            if !matches!(
                placed,
                Err(PlaceError::Unavailable(_) | PlaceError::Unconfirmed { .. })
            ) {
                shared.checked(Invariant::OrdersValid, 1);
            }
            for _ in 0..CONFIRM_ATTEMPTS {
                let Err(PlaceError::Unconfirmed { ordered_at_ms, .. }) = placed else {
                    break;
                };
                tokio::time::sleep(CONFIRM_PAUSE).await;
                placed = confirm_order(&t, &sys, &req, id.clone(), ordered_at_ms).await;
            }
            let told = |set: &std::sync::Mutex<BTreeMap<String, i64>>| {
                set.lock().expect("told").insert(id.as_str().to_owned(), now_ms());
            };
            match placed {
                Ok(_) => told(&shared.accepted),
                Err(PlaceError::Invalid(e)) => {
                    shared.violate(
                        Invariant::OrdersValid,
                        Some(id.as_str()),
                        format!("the menu refused {req:?}: {e}"),
                    );
                }
                Err(PlaceError::Unavailable(e)) => {
                    // The customer was told it failed: nothing of it may reach the log.
                    tracing::debug!(order = id.as_str(), error = %Report(&e), "order not placed");
                    told(&shared.not_placed);
                }
                Err(PlaceError::Unconfirmed { .. }) => told(&shared.unconfirmed),
            }
        })
    }
}

/// What a log carries besides the services' records (the scenario's `undecodable` and
/// `transactions`): batches no client can decode, and transactions, written as other producers
/// write them. Drawn from a generator of their own, so a seed places the same orders with or
/// without them.
struct LogWriter {
    rng: SplitMix64,
    knobs: crate::scenario::LogKnobs,
    partitions: i32,
}

impl LogWriter {
    /// What goes out beside one order, each on a task of its own.
    fn beside_an_order(&mut self, desk: &mut Desk, menu: &Menu) -> Vec<JoinHandle<()>> {
        let mut out = Vec::new();
        if self.knobs.undecodable > 0.0 && self.rng.chance(self.knobs.undecodable) {
            out.push(self.undecodable(desk));
        }
        if self.knobs.transactions > 0.0 && self.rng.chance(self.knobs.transactions) {
            out.push(self.transaction(desk, menu));
        }
        out
    }

    /// A batch of 1 to 3 orders no client can decode, on a topic the shop reads.
    fn undecodable(&mut self, desk: &mut Desk) -> JoinHandle<()> {
        let topics = hostile::consumed_topics(&desk.sys.topics);
        let topic = topics[self.rng.below(topics.len() as u64) as usize].to_owned();
        let partition = self.rng.below(self.partitions.max(1) as u64) as i32;
        let codec = Codec::ALL[1 + self.rng.below(4) as usize];
        let n = 1 + self.rng.below(3);
        let entries: Vec<Entry> = (0..n)
            .map(|_| {
                Entry::Record(record(
                    unique_id(&mut self.rng, &mut desk.used).as_str(),
                    b"{}".to_vec(),
                ))
            })
            .collect();
        let (t, shared) = (desk.t.clone(), desk.shared.clone());
        tokio::spawn(async move {
            if t.append_batch(&topic, partition, entries, (codec, false, false))
                .await
                .is_none()
            {
                shared.violate(
                    Invariant::Harness,
                    None,
                    format!("an undecodable batch on {topic} could not be written"),
                );
            }
        })
    }

    /// A transaction, as a transactional producer writes one: an order committed (it must be
    /// delivered like any), an order aborted (never), or a bare commit marker on a topic the
    /// shop reads (what a producer with exactly-once leaves after each transaction).
    fn transaction(&mut self, desk: &mut Desk, menu: &Menu) -> JoinHandle<()> {
        let kind = self.rng.below(3);
        let id = unique_id(&mut self.rng, &mut desk.used);
        let req = draw_order(&mut self.rng, menu);
        let (t, sys, shared) = (desk.t.clone(), desk.sys.clone(), desk.shared.clone());
        let bare_topic = {
            let topics = hostile::consumed_topics(&sys.topics);
            topics[self.rng.below(topics.len() as u64) as usize].to_owned()
        };
        let bare_partition = self.rng.below(self.partitions.max(1) as u64) as i32;
        tokio::spawn(async move {
            let marker = |commit| vec![Entry::Marker { commit }];
            let plain = (Codec::None, true, false);
            let written = if kind == 2 {
                t.append_batch(&bare_topic, bare_partition, marker(true), plain)
                    .await
            } else {
                let commit = kind == 0;
                let event = pizza::command::ordered_event(&sys, &req, now_ms()).expect("a menu order");
                let rec = record(id.as_str(), pizza::domain::encode(&event));
                let topic = &sys.topics.ordered;
                let p = pizza::partitioner::partition_for(id.as_str().as_bytes(), sys.num_partitions);
                if !commit {
                    shared
                        .aborted
                        .lock()
                        .expect("aborted")
                        .insert(id.as_str().to_owned());
                }
                let data = t
                    .append_batch(topic, p, vec![Entry::Record(rec)], (Codec::Zstd, true, !commit))
                    .await;
                match data {
                    Some(_) => t.append_batch(topic, p, marker(commit), plain).await,
                    None => None,
                }
            };
            match written {
                Some(_) if kind == 0 => {
                    shared
                        .accepted
                        .lock()
                        .expect("accepted")
                        .insert(id.as_str().to_owned(), now_ms());
                }
                Some(_) => {}
                None => shared.violate(
                    Invariant::Harness,
                    None,
                    "a transaction could not be written".into(),
                ),
            }
        })
    }
}

/// A record as another producer writes it: a key, a value, no headers (the broker stamps it).
fn record(key: &str, payload: Vec<u8>) -> crate::log::Stored {
    crate::log::Stored {
        key: Some(key.as_bytes().to_vec()),
        payload: Some(payload),
        headers: Vec::new(),
        timestamp_ms: 0,
    }
}

/// A fresh order id from `rng`, not yet in `used`.
fn unique_id(rng: &mut SplitMix64, used: &mut BTreeSet<OrderId>) -> OrderId {
    loop {
        let id = OrderId::from_u32(rng.next_u64() as u32);
        if used.insert(id.clone()) {
            return id;
        }
    }
}

/// A customer's order off the menu: up to two extra toppings, one of 50 customers.
fn draw_order(rng: &mut SplitMix64, menu: &Menu) -> OrderRequest {
    let pick = |rng: &mut SplitMix64, items: &[String]| items[rng.below(items.len() as u64) as usize].clone();
    let mut extras: Vec<String> = Vec::new();
    for _ in 0..rng.below(3) {
        let e = pick(rng, &menu.extra_toppings);
        if !extras.contains(&e) {
            extras.push(e);
        }
    }
    OrderRequest {
        username: format!("customer{}", rng.below(50)),
        sauce: pick(rng, &menu.sauces),
        cheese: pick(rng, &menu.cheeses),
        main_topping: pick(rng, &menu.main_toppings),
        extra_toppings: extras,
    }
}

/// Which of the catalogue's (kind, topic) pairs a bad record is drawn from.
#[derive(Clone, Copy)]
enum Pool {
    /// Only those the shop must dead-letter (the scenario's `malformed`).
    Malformed,
    /// Any of them (the scenario's `hostile`).
    Catalogue,
}

/// The bad records' side of the customers: their own generator, and how many went out (each is
/// numbered in its `sim.hostile` header so the checker finds it in the log).
struct BadRecords {
    rng: SplitMix64,
    catalogue: Vec<(Kind, String, Expect)>,
    malformed: Vec<(Kind, String, Expect)>,
    sent: u32,
}

impl BadRecords {
    fn new(seed: u64, topics: &Topics, partitions: i32) -> BadRecords {
        let catalogue = hostile::pairs(topics, partitions);
        let malformed = catalogue
            .iter()
            .filter(|(_, _, e)| *e == Expect::DeadLettered)
            .cloned()
            .collect();
        BadRecords {
            rng: SplitMix64::new(seed ^ 0x4057_11e5),
            catalogue,
            malformed,
            sent: 0,
        }
    }

    /// Draws the next bad record from `pool` and produces it on a task of its own.
    fn send(&mut self, pool: Pool, desk: &mut Desk) -> JoinHandle<()> {
        let pool = match pool {
            Pool::Malformed => &self.malformed,
            Pool::Catalogue => &self.catalogue,
        };
        let (kind, topic, _) = &pool[self.rng.below(pool.len() as u64) as usize];
        let order_id = unique_id(&mut self.rng, &mut desk.used);
        let n = self.sent;
        self.sent += 1;
        let spec = hostile::Spec {
            topics: &desk.sys.topics,
            topic,
            order_id: &order_id,
            ts_ms: now_ms(),
            max_record_bytes: MAX_RECORD_BYTES,
            partitions: desk.sys.num_partitions,
            // Every one carries a header key that is not UTF-8 besides its own hostility:
            // reading headers is on every record's path, the dead-letter copy's too.
            headers: vec![
                (TAG_HEADER.as_bytes().to_vec(), Some(n.to_string().into_bytes())),
                (b"sim.\xff\xfe".to_vec(), Some(b"\x00\xff".to_vec())),
            ],
        };
        let h = hostile::make(*kind, &spec).expect("the catalogue lists only kinds that apply");
        tokio::spawn(send_hostile(desk.t.clone(), desk.shared.clone(), n, h))
    }
}

/// Produces hostile record `n` (retried while the broker is out of reach, at most
/// [`HOSTILE_ATTEMPTS`] times); a valid order among them is accepted like any other.
async fn send_hostile(t: SimTransport, shared: Arc<Shared>, n: u32, h: Hostile) {
    shared
        .hostile
        .lock()
        .expect("hostile")
        .insert(n, (h.kind, h.expect));
    let what = format!("hostile record #{n} ({} on {})", h.kind.name(), h.record.topic);
    for _ in 0..HOSTILE_ATTEMPTS {
        match t.produce_raw(h.record.clone()).await {
            Ok(d) if h.expect == Expect::Refused => {
                shared.checked(Invariant::OversizeRefused, 1);
                shared.violate(
                    Invariant::OversizeRefused,
                    None,
                    format!(
                        "{what} of {} bytes was accepted at {}@{}",
                        h.record.size(),
                        d.partition,
                        d.offset
                    ),
                );
                return;
            }
            Ok(_) => {
                if h.expect == Expect::Handled && h.kind == Kind::HeaderBytes {
                    let id =
                        String::from_utf8_lossy(h.record.key.as_deref().unwrap_or_default()).into_owned();
                    shared.accepted.lock().expect("accepted").insert(id, now_ms());
                }
                return;
            }
            Err(TransportError::TooLarge(_)) if h.expect == Expect::Refused => {
                shared.checked(Invariant::OversizeRefused, 1);
                return;
            }
            Err(e) if e.is_retriable() => continue,
            Err(e) => {
                shared.violate(
                    Invariant::Harness,
                    None,
                    format!("{what} was refused: {}", Report(&e)),
                );
                return;
            }
        }
    }
    // Not a service's fault, but a run that could not send its input checked less than it says.
    shared.violate(
        Invariant::Harness,
        None,
        format!("{what} could not be sent in {HOSTILE_ATTEMPTS} attempts"),
    );
}
