//! Status: the query side. Folds pizza-status into the SQLite view (and pizza-ordered's details,
//! which customers see), and runs the watchdog that marks stuck orders, by producing the stuck
//! mark as an event on pizza-status so a rebuilt view shows it too.
//!
//! The fold is monotonic (*ours*; the original gets this wrong): 100 < 150 < 200 < 300 < final, a
//! stale or duplicate event never moves an order back, final statuses never change, and stuck is a
//! flag the next progress clears.

use std::sync::Arc;

use serde::Serialize;

use crate::clock::now_ms;
use crate::config::SysConfig;
use crate::domain::{encode, Malformed, StatusCodes, StatusEvent};
use crate::services::event::{parse, unexpected, Event};
use crate::services::{event_ts, ServiceConfig};
use crate::shutdown::Shutdown;
use crate::store::{ViewStore, ViewUpdate};
use crate::transport::{OutRecord, Record, Transport};
use crate::worker::{HandleError, Handler};

/// An order's status in the view.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct OrderStatus {
    pub status: i64,
    /// When the order reached `status` (the event's timestamp).
    pub status_ts: i64,
    /// Marked stuck by the watchdog and not moved since.
    pub stuck: bool,
    pub stuck_ts: Option<i64>,
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
        if cur.stuck || raced || codes.is_final(cur.status) {
            return None;
        }
        return Some(OrderStatus {
            stuck: true,
            stuck_ts: Some(ts),
            ..cur.clone()
        });
    }
    let rank = codes.rank(status)?;
    #[cfg(madsim)]
    let current = current.filter(|_| !crate::mutants::on(crate::mutants::Mutant::NoMonotonicGuard));
    if let Some(cur) = current {
        match codes.rank(cur.status) {
            Some(r) if r >= rank => return None,
            _ => {}
        }
    }
    Some(OrderStatus {
        status,
        status_ts: ts,
        stuck: false,
        stuck_ts: None,
    })
}

/// The status service's handler.
pub struct Status {
    pub cfg: ServiceConfig,
    pub view: Arc<ViewStore>,
}

/// The view update a record makes: details from pizza-ordered, a status from pizza-status.
pub fn view_update(sys: &SysConfig, rec: &Record) -> Result<ViewUpdate, Malformed> {
    let (order_id, event) = parse(&sys.topics, rec)?;
    let order_id = String::from(order_id);
    let e = match event {
        Event::Ordered(e) => {
            let ordered_ts = event_ts(e.timestamp, rec);
            return Ok(ViewUpdate::Details {
                order_id,
                order: e.order,
                ordered_ts,
            });
        }
        Event::Status(e) => e,
        _ => return Err(unexpected(rec)),
    };
    if sys.codes.rank(e.status).is_none() && e.status != sys.codes.stuck {
        tracing::warn!(
            order_id,
            status = e.status,
            "status code the shop does not know; view unchanged"
        );
    }
    let ts = event_ts(e.timestamp, rec);
    Ok(ViewUpdate::Status {
        order_id,
        status: e.status,
        ts,
        observed: e.observed_status,
    })
}

impl Handler for Status {
    async fn handle(&self, rec: &Record) -> Result<(), HandleError> {
        let update = view_update(&self.cfg.sys, rec)?;
        self.view
            .apply_many(&self.cfg.sys.codes, std::slice::from_ref(&update))?;
        Ok(())
    }
}

/// Most stuck marks sent per watchdog round: a bound on the work one round does.
pub const WATCHDOG_BATCH: u32 = 1000;

/// Every watchdog period, marks each order stuck whose status is older than the timeout and not
/// final, by producing a stuck event. Off at time scale 0 (nothing takes time there).
pub async fn watchdog<T: Transport>(
    transport: T,
    cfg: ServiceConfig,
    view: Arc<ViewStore>,
    mut shutdown: Shutdown,
) {
    let scale = cfg.time_scale;
    if scale.factor() == 0.0 {
        return;
    }
    let period = scale.scale_secs(cfg.sys.watchdog_period_secs);
    let stuck_after_ms = scale.scale_secs(cfg.sys.stuck_after_secs).as_millis() as i64;
    let codes = &cfg.sys.codes;
    // A fixed schedule: a round that ran long (the broker was unreachable) does not push the next
    // one back, so an order is marked within the SLA plus one period once the broker is back.
    let mut rounds = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    rounds.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = shutdown.wait() => return,
            _ = rounds.tick() => {}
        }
        let now = now_ms();
        let candidates = match view.stuck_candidates(codes, now - stuck_after_ms, WATCHDOG_BATCH) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "watchdog could not read the view");
                continue;
            }
        };
        // The marks go out together: one slow produce does not hold back the others.
        #[cfg(madsim)]
        let drift = crate::mutants::on(crate::mutants::Mutant::WatchdogDrift);
        #[cfg(not(madsim))]
        let drift = false;
        let mut marks = Vec::new();
        for (order_id, status) in candidates {
            let mark = StatusEvent {
                status: codes.stuck,
                timestamp: Some(now),
                observed_status: Some(status),
            };
            #[cfg(madsim)]
            let mark = StatusEvent {
                observed_status: mark
                    .observed_status
                    .filter(|_| !crate::mutants::on(crate::mutants::Mutant::WatchdogRace)),
                ..mark
            };
            let out = OutRecord::new(&cfg.sys.topics.status, order_id.as_str(), encode(&mark));
            let transport = transport.clone();
            let mark = tokio::spawn(async move {
                match transport.produce(out).await {
                    Ok(_) => tracing::info!(order_id, status, "marked stuck"),
                    Err(e) => {
                        tracing::warn!(order_id, error = %e, "could not mark stuck; next round retries")
                    }
                }
            });
            if drift {
                let _ = mark.await;
            } else {
                marks.push(mark);
            }
        }
        for m in marks {
            let _ = m.await;
        }
        if drift {
            // The next round a full period after this one ended, not on the schedule.
            rounds.reset();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(status: i64) -> OrderStatus {
        OrderStatus {
            status,
            status_ts: 1,
            stuck: false,
            stuck_ts: None,
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
        assert_eq!((stuck.status, stuck.stuck, stuck.stuck_ts), (200, true, Some(9)));
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
