//! The view: what the shop shows customers, as a fold of pizza-ordered (an order's details) and
//! pizza-status (its status, the stuck flag, its timeline). This module is the fold and its rows,
//! independent of where they are kept: the status service folds live records into a store, the
//! web app reads rows back, and [`rebuild`] folds the whole log again into a fresh store.
//!
//! The fold is monotonic (*ours*; the original gets this wrong): 100 < 150 < 200 < 300 < final, a
//! stale or duplicate event never moves an order back, final statuses never change, and stuck is a
//! flag the next progress clears.

mod rebuild;
mod watch;

pub use framework::follow::{LogView, ViewFollower};
pub use rebuild::{rebuild, RebuildError, Rebuilt, REBUILD_BATCH, STALL_TIMEOUT};
pub use watch::RegressionWatch;

use serde::Serialize;

use crate::config::SysConfig;
use crate::domain::{Malformed, Order, StatusCodes};
use crate::event::{event_ts, parse, unexpected, Event};
use crate::mutants::{self, ShopMutant};
use crate::probes::{self, ShopProbe};
use crate::transport::Record;

/// Starts following pizza-ordered and pizza-status into `view` (the framework's follower, with
/// the shop's fold: [`view_update`], and the rank table in `sys`).
pub fn follow<T, V>(transport: T, sys: &std::sync::Arc<SysConfig>, view: std::sync::Arc<V>) -> ViewFollower
where
    T: crate::transport::Transport,
    V: LogView<Context = SysConfig, Update = ViewUpdate>,
{
    let topics = vec![sys.topics.ordered.clone(), sys.topics.status.clone()];
    ViewFollower::start(transport, topics, sys.clone(), view)
}

/// An order's status in the view.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct OrderStatus {
    pub status: i64,
    /// When the order reached `status` (the event's timestamp).
    pub status_at_ms: i64,
    /// Marked stuck by the watchdog and not moved since.
    pub stuck: bool,
    pub stuck_at_ms: Option<i64>,
}

/// The fold: the order's next status after an event, or `None` when the event changes nothing.
///
/// `observed` is the status a stuck mark was decided on; a mark that raced with progress (the
/// order moved on after the watchdog looked) is ignored.
pub fn fold(
    codes: &StatusCodes,
    current: Option<&OrderStatus>,
    status: i64,
    ts: i64,
    observed: Option<i64>,
) -> Option<OrderStatus> {
    if status == codes.stuck {
        let cur = current?;
        let raced = observed.is_some_and(|o| o != cur.status);
        if raced {
            probes::hit(ShopProbe::WatchdogMarkRaced, "");
        }
        if cur.stuck || raced || codes.is_final(cur.status) {
            return None;
        }
        return Some(OrderStatus {
            stuck: true,
            stuck_at_ms: Some(ts),
            ..cur.clone()
        });
    }
    let rank = codes.rank(status)?;
    let current = current.filter(|_| !mutants::on(ShopMutant::NoMonotonicGuard));
    if let Some(cur) = current {
        match codes.rank(cur.status) {
            Some(r) if r >= rank => {
                probes::hit(ShopProbe::StaleStatusIgnored, "");
                return None;
            }
            _ => {}
        }
    }
    Some(OrderStatus {
        status,
        status_at_ms: ts,
        stuck: false,
        stuck_at_ms: None,
    })
}

/// The view update a record makes: details from pizza-ordered, a status from pizza-status.
/// With its topic's `partitions` known, a record where no ordinary producer puts its key is
/// not the order's ([`crate::partitioner::Placement`]), and details from the key's murmur2
/// partition are the order's over details from librdkafka's ([`ViewUpdate::Details`]).
pub fn view_update(sys: &SysConfig, rec: &Record, partitions: Option<i32>) -> Result<ViewUpdate, Malformed> {
    let (order_id, event) = parse(&sys.topics, rec)?;
    let placement = match (partitions, rec.key.as_deref()) {
        (Some(n), Some(key)) => crate::partitioner::placement(key, rec.partition, n),
        _ => crate::partitioner::Placement::Home,
    };
    if let crate::partitioner::Placement::Elsewhere(why) = &placement {
        return Err(Malformed(format!("{why}: not the order's record")));
    }
    let order_id = String::from(order_id);
    let e = match event {
        Event::Ordered(e) => {
            let ordered_at_ms = event_ts(e.timestamp, rec);
            return Ok(ViewUpdate::Details {
                order_id,
                order: e.order,
                ordered_at_ms,
                home: placement == crate::partitioner::Placement::Home,
            });
        }
        Event::Status(e) => e,
        _ => return Err(unexpected(rec)),
    };
    if sys.codes.rank(e.status).is_none() && e.status != sys.codes.stuck {
        static UNKNOWN: crate::throttle::Throttle = crate::throttle::Throttle::new();
        if let Some(held) = UNKNOWN.allow() {
            tracing::warn!(
                order_id,
                status = e.status,
                more_since = held,
                "status code the shop does not know; view unchanged"
            );
        }
    }
    let ts = event_ts(e.timestamp, rec);
    Ok(ViewUpdate::Status {
        order_id,
        status: e.status,
        ts,
        observed: e.observed_status,
    })
}

/// An order's row in the view, with its details when pizza-ordered has been seen.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct OrderRow {
    pub order_id: String,
    pub status: Option<OrderStatus>,
    pub details: Option<Order>,
    pub ordered_at_ms: Option<i64>,
    /// Each status the order reached, with when, in order of status rank.
    pub timeline: Vec<(i64, i64)>,
}

/// Every row of the view, ordered, for comparing a live view with a rebuilt one.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ViewDump {
    pub status: Vec<StatusRow>,
    pub timeline: Vec<(String, i64, i64)>,
    pub details: Vec<(String, Order, i64)>,
}

/// An order's status row: order id, status, status_at_ms, stuck, stuck_at_ms.
pub type StatusRow = (String, i64, i64, bool, Option<i64>);

/// One update of the view: what one record of pizza-ordered or pizza-status asks of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ViewUpdate {
    Status {
        order_id: String,
        status: i64,
        ts: i64,
        observed: Option<i64>,
    },
    /// An order's details. The first the view folds are the order's, except that details
    /// from the key's murmur2 partition (`home`: where the shop and every Java client put an
    /// order) take the place of details from librdkafka's CRC-32 partition, whichever came
    /// first: a record written to the other partition is not the order, read first or not.
    Details {
        order_id: String,
        order: Order,
        ordered_at_ms: i64,
        home: bool,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(status: i64) -> OrderStatus {
        OrderStatus {
            status,
            status_at_ms: 1,
            stuck: false,
            stuck_at_ms: None,
        }
    }

    #[test]
    fn progress_is_monotonic() {
        let c = StatusCodes::default();
        assert_eq!(fold(&c, None, 100, 1, None), Some(at(100)));
        assert!(fold(&c, Some(&at(100)), 200, 1, None).is_some());
        assert_eq!(fold(&c, Some(&at(300)), 200, 9, None), None, "stale event");
        assert_eq!(fold(&c, Some(&at(200)), 200, 9, None), None, "duplicate");
        assert_eq!(
            fold(&c, Some(&at(300)), 150, 9, None),
            None,
            "pending after baked"
        );
        assert!(
            fold(&c, Some(&at(100)), 999, 1, None).is_some(),
            "skipping ahead is fine"
        );
        assert_eq!(fold(&c, Some(&at(999)), 499, 1, None), None, "final stays final");
        assert_eq!(fold(&c, Some(&at(200)), 12345, 1, None), None, "unknown code");
        // A stale event arriving before any other is still the first thing known.
        assert_eq!(fold(&c, None, 300, 5, None).map(|s| s.status), Some(300));
    }

    #[test]
    fn stuck_is_a_flag_the_next_progress_clears() {
        let c = StatusCodes::default();
        let stuck = fold(&c, Some(&at(200)), 50, 9, Some(200)).unwrap();
        assert_eq!(
            (stuck.status, stuck.stuck, stuck.stuck_at_ms),
            (200, true, Some(9))
        );
        assert_eq!(fold(&c, Some(&stuck), 50, 10, Some(200)), None, "already stuck");
        assert_eq!(
            fold(&c, Some(&stuck), 200, 10, None),
            None,
            "a duplicate is not progress"
        );
        let moved = fold(&c, Some(&stuck), 300, 11, None).unwrap();
        assert!(!moved.stuck);
        assert_eq!(
            fold(&c, Some(&at(300)), 50, 9, Some(200)),
            None,
            "raced with progress"
        );
        assert_eq!(
            fold(&c, Some(&at(999)), 50, 9, None),
            None,
            "final orders are never stuck"
        );
        assert_eq!(fold(&c, None, 50, 9, None), None, "unknown order");
    }
}
