//! Status: the query side. Every instance folds the whole log (pizza-ordered's details, which
//! customers see, and pizza-status) into its own SQLite view with a [`ViewFollower`](crate::view::ViewFollower), outside any
//! group, and runs the watchdog that marks stuck orders, by producing the stuck mark as an event
//! on pizza-status so a rebuilt view shows it too.
//!
//! The instances still share a consumer group (issue 15): the group judges each record (a
//! malformed one goes to the dead-letter topic once, not once per instance) and tells each
//! instance which partitions of pizza-status it owns. Its watchdog marks only the orders whose
//! key falls on those partitions (murmur2, as a producer places them), so every order has one
//! watchdog, and a dead instance's orders move to the others with its partitions.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use crate::clock::now_ms;
use crate::domain::{encode, StatusEvent};
use crate::error::Report;
use crate::mutants::{self, ShopMutant};
use crate::partitioner::partition_for;
use crate::probes;
use crate::services::ServiceConfig;
use crate::shutdown::Shutdown;
use crate::store::ViewStore;
use crate::transport::{end_offsets_within, OutRecord, Record, Transport, ENDS_WITHIN};
use crate::view::{view_update, ViewUpdate};
use crate::worker::{HandleError, Handler};

/// The partitions of pizza-status an instance's group gave it: whose orders its watchdog marks.
/// `None` until the group has told it.
#[derive(Debug, Default)]
pub struct Owned(Mutex<Option<BTreeSet<i32>>>);

impl Owned {
    /// Whether the order whose key is `order_id` falls on a partition owned here, of
    /// `partitions`.
    pub fn owns(&self, order_id: &str, partitions: i32) -> bool {
        let p = partition_for(order_id.as_bytes(), partitions);
        self.lock().as_ref().is_some_and(|owned| owned.contains(&p))
    }

    /// Whether the group has given this instance any partition of pizza-status.
    pub fn any(&self) -> bool {
        self.lock().as_ref().is_some_and(|owned| !owned.is_empty())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<BTreeSet<i32>>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The status service's handler: the group's part. It judges each record (a malformed one is
/// dead-lettered) and learns which partitions it owns; the view is the follower's.
pub struct Status {
    pub cfg: ServiceConfig,
    pub owned: Arc<Owned>,
    /// Set only under the mutant `status-folds-its-partitions` (the design before issue 15): the
    /// handler folds what its group gives it into this view, and nothing else does.
    pub folds_into: Option<Arc<ViewStore>>,
}

impl Status {
    pub fn new(cfg: ServiceConfig) -> Status {
        Status {
            cfg,
            owned: Arc::default(),
            folds_into: None,
        }
    }
}

impl Handler for Status {
    async fn handle(&self, rec: &Record) -> Result<(), HandleError> {
        // Placement was judged by the worker (a misplaced record never comes here); details
        // from the key's murmur2 partition, by the shop's partition count, are the order's.
        let mut update = view_update(&self.cfg.sys, rec, None);
        if let Ok(ViewUpdate::Details { home, .. }) = &mut update {
            let n = self.cfg.sys.num_partitions;
            *home = rec
                .key
                .as_deref()
                .is_some_and(|k| partition_for(k, n) == rec.partition);
        }
        if let Some(view) = &self.folds_into {
            // As a follower would, it records how far it read (a malformed record too).
            let updates: Vec<_> = update.as_ref().ok().cloned().into_iter().collect();
            let read_to = (rec.topic.clone(), rec.partition, rec.offset + 1);
            view.apply_many_at(&self.cfg.sys.codes, &updates, &[read_to])?;
            probes::disk_io().await;
        }
        update?;
        Ok(())
    }

    fn assigned(&self, partitions: &[(String, i32)]) {
        let status = &self.cfg.sys.topics.status;
        let owned: BTreeSet<i32> = partitions
            .iter()
            .filter(|(t, _)| t == status)
            .map(|(_, p)| *p)
            .collect();
        tracing::info!(partitions = ?owned, "the watchdog marks the orders of these pizza-status partitions");
        *self.owned.lock() = Some(owned);
    }
}

/// Most stuck marks sent per watchdog round: a bound on the work one round does.
pub const WATCHDOG_BATCH: u32 = 1000;

/// Most candidates one round looks at, its own and other instances' together: a bound on the
/// rows a round reads while other instances' orders are the older ones.
pub const WATCHDOG_SCAN: u32 = 16 * WATCHDOG_BATCH;

/// Every watchdog period, marks each order stuck whose status is older than the timeout and not
/// final, and whose pizza-status partition `owned` holds, by producing a stuck event. Off at time
/// scale 0 (nothing takes time there).
pub async fn watchdog<T: Transport>(
    transport: T,
    cfg: ServiceConfig,
    view: Arc<ViewStore>,
    owned: Arc<Owned>,
    mut shutdown: Shutdown,
) {
    let scale = cfg.time_scale;
    if scale.factor() == 0.0 {
        return;
    }
    let period = scale.scale_secs(cfg.sys.watchdog_period_secs);
    let stuck_after_ms = scale.scale_secs(cfg.sys.stuck_after_secs).as_millis() as i64;
    let codes = &cfg.sys.codes;
    // How many partitions pizza-status has: asked once, again after a round that could not.
    let mut partitions: Option<i32> = None;
    // A fixed schedule: a round that ran long (the broker was unreachable) does not push the next
    // one back, so an order is marked within the SLA plus one period once the broker is back.
    let mut rounds = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    rounds.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = shutdown.wait() => return,
            _ = rounds.tick() => {}
        }
        if !owned.any() {
            continue;
        }
        let n = match partitions {
            Some(n) => n,
            None => match end_offsets_within(&transport, &cfg.sys.topics.status, ENDS_WITHIN).await {
                Ok(ends) if !ends.is_empty() => *partitions.insert(ends.len() as i32),
                Ok(_) => continue,
                Err(e) => {
                    tracing::warn!(error = %Report(&e), "watchdog could not learn pizza-status's partitions");
                    continue;
                }
            },
        };
        let now = now_ms();
        let mine = |order_id: &str| owned.owns(order_id, n);
        let candidates =
            match view.stuck_candidates(codes, now - stuck_after_ms, WATCHDOG_BATCH, WATCHDOG_SCAN, mine) {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %Report(&e), "watchdog could not read the view");
                    continue;
                }
            };
        // Between the read and the marks, progress may arrive (the marks carry what they saw).
        probes::seam().await;
        // The marks go out together: one slow produce does not hold back the others.
        let drift = mutants::on(ShopMutant::WatchdogDrift);
        let mut marks = Vec::new();
        for (order_id, status) in candidates {
            let mark = StatusEvent {
                status: codes.stuck,
                timestamp: Some(now),
                observed_status: Some(status).filter(|_| !mutants::on(ShopMutant::WatchdogRace)),
            };
            let out = OutRecord::new(&cfg.sys.topics.status, order_id.as_str(), encode(&mark));
            let transport = transport.clone();
            let mark = tokio::spawn(async move {
                match transport.produce(out).await {
                    Ok(_) => tracing::info!(order_id, status, "marked stuck"),
                    Err(e) => {
                        tracing::warn!(order_id, error = %Report(&e), "could not mark stuck; next round retries")
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
