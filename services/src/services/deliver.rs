//! Deliver, in two steps: pizza-ordered is the early warning of where an order goes; pizza-baked
//! says it is ready. When the pizza is baked before the early warning arrived, the order is pending
//! (pizza-pending, 150) and is delivered, at twice the time, once pizza-ordered comes.
//!
//! What it knows lives in its changelog ([`super::changelog`]): each input's fact is written
//! there (and acknowledged) before the input is done, so whichever instance owns the partition
//! next knows it; a driver goes out only when its claim is the first in the log, and its arrival
//! time is in that claim, so a redelivered input, a restarted instance or a new owner re-sends
//! the same pizza-delivered event (same timestamp) instead of delivering twice.

use std::sync::Arc;
use std::time::Duration;

use crate::clock::now_ms;
use crate::domain::{delivery_secs, encode, StatusOnly};
use crate::event::{parse, unexpected, Event};
use crate::mutants::{self, ShopMutant};
use crate::probes::{self, ShopProbe};
use crate::services::changelog::{self, Changelog};
use crate::services::ServiceConfig;
use crate::store::{Claim, DeliveryFact, DeliveryState, DeliveryStore};
use crate::transport::{OutRecord, Record, Transport};
use crate::worker::{HandleError, Handler};

/// What to do about an order, from what is known of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Known but not baked: the early warning is kept, nothing to do yet.
    Wait,
    /// Send a driver to the customer (claiming the drive first), then report delivered.
    Deliver { customer_id: String, pending: bool },
    /// Baked before we know the order: report pending.
    Pend,
    /// A driver was sent already: announce its arrival (again).
    Resend(Claim),
}

/// The pure step: what to do about an order in `state`.
pub fn decide(state: &DeliveryState) -> Decision {
    match state {
        DeliveryState { claim: Some(c), .. } => Decision::Resend(*c),
        DeliveryState {
            customer_id: Some(c),
            baked: true,
            pending,
            ..
        } => Decision::Deliver {
            customer_id: c.clone(),
            pending: *pending,
        },
        DeliveryState {
            customer_id: None,
            baked: true,
            ..
        } => Decision::Pend,
        _ => Decision::Wait,
    }
}

/// The fact an input adds to `state`, if it is news.
pub fn news(state: &DeliveryState, fact: &DeliveryFact) -> bool {
    match fact {
        DeliveryFact::Customer(_) => state.customer_id.is_none(),
        DeliveryFact::Baked => !state.baked,
        DeliveryFact::Claimed { .. } => state.claim.is_none(),
    }
}

/// The delivery service's handler.
pub struct Deliver<T> {
    transport: T,
    cfg: ServiceConfig,
    store: Arc<DeliveryStore>,
    log: Changelog<T>,
}

impl<T: Transport> Deliver<T> {
    /// The handler, with its changelog's tail (a task: call it within a runtime).
    pub fn new(transport: T, cfg: ServiceConfig, store: Arc<DeliveryStore>) -> Deliver<T> {
        // The mutants that keep deliver's state on the instance: facts go to the store only.
        let local_only =
            mutants::on(ShopMutant::DeliverStateStaysLocal) || mutants::on(ShopMutant::DeliveryStateInMemory);
        let log = Changelog::start(
            transport.clone(),
            &cfg.sys.topics.deliver_changelog,
            store.clone(),
            local_only,
        );
        Deliver {
            transport,
            cfg,
            store,
            log,
        }
    }

    /// Ends the changelog's tail: a stopped service reads nothing more.
    pub async fn stop(&self) {
        self.log.stop();
    }

    async fn send(&self, topic: &str, order_id: &str, status: i64, ts: i64) -> Result<(), HandleError> {
        let event = StatusOnly {
            status,
            timestamp: Some(ts),
        };
        self.transport
            .produce(OutRecord::new(topic, order_id, encode(&event)))
            .await?;
        Ok(())
    }

    /// Waits until the driver of `claim` has arrived (at most the longest drive from now, should
    /// the claimant's clock run ahead of ours), then reports the order delivered at its time.
    async fn announce(&self, order_id: &str, claim: Claim, customer_id: &str) -> Result<(), HandleError> {
        let longest = self
            .cfg
            .time_scale
            .scale_secs(delivery_secs(customer_id, true) as f64);
        let left = Duration::from_millis((claim.at_ms - now_ms()).max(0) as u64).min(longest);
        if !left.is_zero() {
            tokio::time::sleep(left).await;
        }
        let (topics, codes) = (&self.cfg.sys.topics, &self.cfg.sys.codes);
        self.send(&topics.delivered, order_id, codes.delivered, claim.at_ms)
            .await
    }

    /// Sends a driver: claims the drive with its arrival time, and drives only when the claim
    /// stands (another's claim, first in the log, is announced instead).
    async fn deliver(
        &self,
        rec: &Record,
        order_id: &str,
        customer_id: &str,
        pending: bool,
    ) -> Result<(), HandleError> {
        let drive = self
            .cfg
            .time_scale
            .scale_secs(delivery_secs(customer_id, pending) as f64);
        let at_ms = now_ms() + drive.as_millis() as i64;
        let (stands, mine) = changelog::claim(&self.log, rec.partition, order_id, at_ms).await?;
        probes::disk_io().await;
        // A deliver that does not recognise a delivery already made drives on its own claim.
        let (claim, mine) = if mutants::on(ShopMutant::NoDedup) {
            (Claim { at_ms, offset: 0 }, true)
        } else {
            (stands, mine)
        };
        if mine {
            probes::hit(ShopProbe::DeliveryDriven, order_id);
        } else {
            probes::hit(ShopProbe::DeliveryResent, order_id);
        }
        self.announce(order_id, claim, customer_id).await
    }
}

impl<T: Transport> Handler for Deliver<T> {
    const GATED: bool = true;

    /// A record of a partition this instance has not followed waits for the partition's
    /// changelog to be restored, before it takes a slot (issue 25, defect 2).
    async fn ready(&self, rec: &Record) -> Result<(), HandleError> {
        self.log.ready(rec.partition).await
    }

    async fn handle(&self, rec: &Record) -> Result<(), HandleError> {
        let (topics, codes) = (&self.cfg.sys.topics, &self.cfg.sys.codes);
        let (order_id, event) = parse(topics, rec)?;
        let order_id = order_id.as_str();
        let fact = match event {
            Event::Ordered(o) => DeliveryFact::Customer(o.order.customer_id),
            Event::Baked(_) => DeliveryFact::Baked,
            _ => return Err(unexpected(rec).into()),
        };
        // Everything earlier owners of this partition wrote is in the store before we decide (the
        // worker waited for it before the slot; a rebalance in between restores it again).
        self.log.ready(rec.partition).await?;
        let mut state = self.store.get(order_id)?;
        // What follows decides on `state` and writes: another record of this order should not run
        // in between (the worker's key lanes see to it; the changelog's first claim stands if
        // one does).
        probes::disk_io().await;
        if mutants::on(ShopMutant::NoDedup) {
            state.claim = None;
        }
        // A pizza-baked of an order whose customer is known goes straight to the claim, which
        // says baked as well: one write fewer on the common path.
        let claims_next = fact == DeliveryFact::Baked && state.customer_id.is_some();
        if state.claim.is_none() && news(&state, &fact) && !claims_next {
            self.log.write(rec.partition, order_id, fact).await?;
            state = self.store.get(order_id)?;
            if mutants::on(ShopMutant::NoDedup) {
                state.claim = None;
            }
        }
        if claims_next {
            state.baked = true;
        }
        match decide(&state) {
            Decision::Wait => Ok(()),
            Decision::Pend => {
                probes::hit(ShopProbe::Pending, order_id);
                self.send(&topics.pending, order_id, codes.pending, now_ms())
                    .await
            }
            Decision::Deliver { customer_id, pending } => {
                self.deliver(rec, order_id, &customer_id, pending).await
            }
            Decision::Resend(claim) => {
                probes::hit(ShopProbe::DeliveryResent, order_id);
                let customer_id = state.customer_id.unwrap_or_default();
                if mutants::on(ShopMutant::RedriveKeepsTime) {
                    let secs = delivery_secs(&customer_id, state.pending);
                    self.cfg.time_scale.sleep_secs(secs as f64).await;
                    probes::hit(ShopProbe::DeliveryDriven, order_id);
                }
                self.announce(order_id, claim, &customer_id).await
            }
        }
    }

    fn assigned(&self, partitions: &[(String, i32)]) {
        self.log.assigned(partitions);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(customer: Option<&str>, baked: bool, pending: bool) -> DeliveryState {
        DeliveryState {
            customer_id: customer.map(str::to_owned),
            baked,
            pending,
            claim: None,
        }
    }

    #[test]
    fn ordered_then_baked_delivers_once() {
        assert_eq!(decide(&DeliveryState::default()), Decision::Wait);
        assert_eq!(decide(&state(Some("ab"), false, false)), Decision::Wait);
        assert_eq!(
            decide(&state(Some("ab"), true, false)),
            Decision::Deliver {
                customer_id: "ab".into(),
                pending: false
            }
        );
        let claim = Claim { at_ms: 7, offset: 3 };
        let done = DeliveryState {
            claim: Some(claim),
            ..state(Some("ab"), true, false)
        };
        assert_eq!(decide(&done), Decision::Resend(claim));
        assert!(!news(&done, &DeliveryFact::Baked));
        assert!(!news(&done, &DeliveryFact::Customer("ab".into())));
    }

    #[test]
    fn baked_before_ordered_is_pending_then_delivered_at_double_time() {
        let pending = state(None, true, true);
        assert_eq!(decide(&pending), Decision::Pend);
        assert!(news(&pending, &DeliveryFact::Customer("cd".into())));
        assert!(
            !news(&pending, &DeliveryFact::Baked),
            "a redelivered pizza-baked adds nothing"
        );
        assert_eq!(
            decide(&state(Some("cd"), true, true)),
            Decision::Deliver {
                customer_id: "cd".into(),
                pending: true
            }
        );
    }
}
