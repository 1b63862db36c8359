//! Deliver, in two steps: pizza-ordered is the early warning of where an order goes; pizza-baked
//! says it is ready. When the pizza is baked before the early warning arrived, the order is pending
//! (pizza-pending, 150) and is delivered, at twice the time, once pizza-ordered comes.
//!
//! What it knows is persisted in SQLite before anything is produced, so a restart loses no early
//! warning and no pending pizza, and a redelivered input re-sends the same pizza-delivered event
//! (same timestamp) instead of delivering twice. Early warnings and pending marks commit together
//! (group commit: a handler waits for its batch); a delivery commits alone right after its drive,
//! without waiting for the disk, and the next batch's sync covers it before it is announced.

use crate::clock::now_ms;
use crate::domain::{delivery_secs, encode, StatusOnly};
use crate::event::{parse, unexpected, Event};
use crate::mutants::{self, Mutant};
use crate::probes::{self, Probe};
use crate::services::group_commit::GroupCommit;
use crate::services::ServiceConfig;
use crate::store::{DeliveryState, DeliveryStore, DeliveryWrite};
use crate::transport::{OutRecord, Record, Transport};
use crate::worker::{HandleError, Handler};
use std::sync::Arc;

/// What to do about an event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Remember the customer for when the pizza is baked.
    Remember,
    /// Drive to the customer, then report delivered.
    Deliver { customer_id: String, pending: bool },
    /// Baked before we know the order: report pending and remember it.
    Pend,
    /// Already delivered (this is a redelivery): send the same pizza-delivered event again.
    Resend { delivered_at_ms: i64 },
}

/// The pure step for pizza-ordered.
pub fn on_ordered(state: &DeliveryState, customer_id: &str) -> Decision {
    match state {
        DeliveryState {
            delivered_at_ms: Some(ts),
            ..
        } => Decision::Resend { delivered_at_ms: *ts },
        DeliveryState { pending: true, .. } => Decision::Deliver {
            customer_id: customer_id.to_owned(),
            pending: true,
        },
        _ => Decision::Remember,
    }
}

/// The pure step for pizza-baked.
pub fn on_baked(state: &DeliveryState) -> Decision {
    match state {
        DeliveryState {
            delivered_at_ms: Some(ts),
            ..
        } => Decision::Resend { delivered_at_ms: *ts },
        DeliveryState {
            customer_id: Some(c),
            pending,
            ..
        } => Decision::Deliver {
            customer_id: c.clone(),
            pending: *pending,
        },
        DeliveryState {
            customer_id: None, ..
        } => Decision::Pend,
    }
}

/// Most early warnings and pending marks one transaction takes.
pub const WRITE_BATCH: usize = 512;

/// The delivery service's handler.
pub struct Deliver<T> {
    transport: T,
    cfg: ServiceConfig,
    store: Arc<DeliveryStore>,
    writer: GroupCommit<DeliveryWrite>,
}

impl<T: Transport> Deliver<T> {
    /// The handler, with the writer that commits its early warnings (a thread; a task of the node
    /// under madsim, so call it within a runtime).
    pub fn new(transport: T, cfg: ServiceConfig, store: Arc<DeliveryStore>) -> Deliver<T> {
        let batches = store.clone();
        let writer = GroupCommit::start(WRITE_BATCH, move |writes| batches.apply_many(writes));
        Deliver {
            transport,
            cfg,
            store,
            writer,
        }
    }

    /// Ends the store's writer: a stopped service writes nothing more.
    pub async fn stop(&self) {
        self.writer.stop().await;
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
}

/// Attempts at recording a delivery while the store is busy. Each waits out SQLite's busy timeout
/// inside the call, so only a lock some other process holds on deliver's own file for minutes
/// runs them out; then the service stops, and a restart drives that order again.
pub const RECORD_ATTEMPTS: u32 = 40;

impl<T: Transport> Deliver<T> {
    /// Records the delivery just made. A drive cannot be taken back: were a busy store to fail
    /// the handler, its retry would find no delivery and drive again. So a busy store is tried
    /// again at once, [`RECORD_ATTEMPTS`] times (SQLite's own busy timeout waits inside each
    /// try), with no `.await` between the drive and the record: nothing, a crash included, can
    /// come between them but the time the store takes, which does not wait for the disk (see
    /// [`Deliver::sync_delivery`]). When they run out, or on any other error, the service stops.
    fn record_delivery(&self, order_id: &str, at_ms: i64) -> Result<i64, HandleError> {
        let mut attempt = 0;
        loop {
            match self.store.mark_delivered(order_id, at_ms) {
                Ok(ts) => return Ok(ts),
                Err(e)
                    if e.is_busy()
                        && attempt < RECORD_ATTEMPTS
                        && !mutants::on(Mutant::BusyStoreRedrives) =>
                {
                    attempt += 1;
                    probes::hit(Probe::StoreBusy, order_id);
                }
                // Not a retriable error: the handler's retry would drive again. A restart
                // redelivers the record and drives again at most once.
                Err(e) if mutants::on(Mutant::BusyStoreRedrives) => return Err(e.into()),
                Err(e) => return Err(HandleError::fatal(e)),
            }
        }
    }

    /// Makes the delivery [`Deliver::record_delivery`] recorded survive a power loss, with the
    /// next batch's sync, before it is announced: were it announced and then lost, a redelivered
    /// input would drive again. A failure here drives nothing: the retry finds the delivery
    /// recorded and re-sends it, syncing it first.
    async fn sync_delivery(&self) -> Result<(), HandleError> {
        self.writer.write(DeliveryWrite::SyncDeliveries).await?;
        Ok(())
    }
}

impl<T: Transport> Handler for Deliver<T> {
    async fn handle(&self, rec: &Record) -> Result<(), HandleError> {
        let topics = &self.cfg.sys.topics;
        let codes = &self.cfg.sys.codes;
        let (order_id, event) = parse(topics, rec)?;
        let order_id = order_id.as_str();
        let state = self.store.get(order_id)?;
        // What follows decides on `state` and writes: another record of this order must not run
        // in between (the worker's key lanes see to it).
        probes::disk_io().await;
        let (decision, customer_id) = match event {
            Event::Ordered(o) => (
                on_ordered(&state, &o.order.customer_id),
                Some(o.order.customer_id),
            ),
            Event::Baked(_) => (on_baked(&state), None),
            _ => return Err(unexpected(rec).into()),
        };
        let decision = match decision {
            Decision::Resend { .. } if mutants::on(Mutant::NoDedup) => Decision::Deliver {
                customer_id: state.customer_id.clone().unwrap_or_default(),
                pending: state.pending,
            },
            d => d,
        };
        match decision {
            Decision::Remember => {
                let customer_id = customer_id.expect("only pizza-ordered is remembered");
                let order_id = order_id.to_owned();
                self.writer
                    .write(DeliveryWrite::Customer {
                        order_id,
                        customer_id,
                    })
                    .await?;
                probes::disk_io().await;
            }
            Decision::Pend => {
                probes::hit(Probe::Pending, order_id);
                self.writer
                    .write(DeliveryWrite::Pending {
                        order_id: order_id.to_owned(),
                    })
                    .await?;
                self.send(&topics.pending, order_id, codes.pending, now_ms())
                    .await?;
            }
            Decision::Deliver { customer_id, pending } => {
                let secs = delivery_secs(&customer_id, pending);
                self.cfg.time_scale.sleep_secs(secs as f64).await;
                probes::hit(Probe::DeliveryDriven, order_id);
                // Durable before it is announced: a crash from here on re-sends, never re-delivers.
                let ts = self.record_delivery(order_id, now_ms())?;
                probes::disk_io().await;
                // A deliver that does not recognise redelivered inputs has no earlier delivery to
                // take the time from either: it stamps the delivery it just made.
                let ts = if mutants::on(Mutant::NoDedup) {
                    now_ms()
                } else {
                    ts
                };
                self.sync_delivery().await?;
                self.send(&topics.delivered, order_id, codes.delivered, ts)
                    .await?;
            }
            Decision::Resend { delivered_at_ms } => {
                probes::hit(Probe::DeliveryResent, order_id);
                if mutants::on(Mutant::RedriveKeepsTime) {
                    let secs = delivery_secs(state.customer_id.as_deref().unwrap_or_default(), state.pending);
                    self.cfg.time_scale.sleep_secs(secs as f64).await;
                    probes::hit(Probe::DeliveryDriven, order_id);
                }
                self.sync_delivery().await?;
                self.send(&topics.delivered, order_id, codes.delivered, delivered_at_ms)
                    .await?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known(c: &str) -> DeliveryState {
        DeliveryState {
            customer_id: Some(c.into()),
            ..Default::default()
        }
    }

    #[test]
    fn ordered_then_baked_delivers_once() {
        let fresh = DeliveryState::default();
        assert_eq!(on_ordered(&fresh, "ab"), Decision::Remember);
        assert_eq!(
            on_baked(&known("ab")),
            Decision::Deliver {
                customer_id: "ab".into(),
                pending: false
            }
        );
        let done = DeliveryState {
            delivered_at_ms: Some(7),
            ..known("ab")
        };
        assert_eq!(on_baked(&done), Decision::Resend { delivered_at_ms: 7 });
        assert_eq!(on_ordered(&done, "ab"), Decision::Resend { delivered_at_ms: 7 });
    }

    #[test]
    fn baked_before_ordered_is_pending_then_delivered_at_double_time() {
        assert_eq!(on_baked(&DeliveryState::default()), Decision::Pend);
        let pending = DeliveryState {
            pending: true,
            ..Default::default()
        };
        // A redelivered pizza-baked just reports pending again.
        assert_eq!(on_baked(&pending), Decision::Pend);
        assert_eq!(
            on_ordered(&pending, "cd"),
            Decision::Deliver {
                customer_id: "cd".into(),
                pending: true
            }
        );
    }
}
