//! Status: the query side. Folds pizza-status into the SQLite view (and pizza-ordered's details,
//! which customers see) with the [`view`](crate::view)'s fold, and runs the watchdog that marks
//! stuck orders, by producing the stuck mark as an event on pizza-status so a rebuilt view shows
//! it too.

use std::sync::Arc;

use crate::clock::now_ms;
use crate::domain::{encode, StatusEvent};
use crate::error::Report;
use crate::mutants::{self, Mutant};
use crate::probes;
use crate::services::group_commit::GroupCommit;
use crate::services::ServiceConfig;
use crate::shutdown::Shutdown;
use crate::store::ViewStore;
use crate::transport::{OutRecord, Record, Transport};
use crate::view::{view_update, ViewUpdate};
use crate::worker::{HandleError, Handler};

/// The status service's handler.
pub struct Status {
    pub cfg: ServiceConfig,
    pub view: Arc<ViewStore>,
    writer: GroupCommit<ViewUpdate>,
}

impl Status {
    /// The handler, with the writer of its view (a thread; a task of the node under madsim, so
    /// call it within a runtime).
    pub fn new(cfg: ServiceConfig, view: Arc<ViewStore>) -> Status {
        let (codes, store) = (cfg.sys.codes.clone(), view.clone());
        // Group commit: the view syncs every commit, once per batch of the updates waiting.
        let writer = GroupCommit::start(WRITE_BATCH, move |updates| store.apply_many(&codes, updates));
        Status { cfg, view, writer }
    }

    /// Ends the view's writer: a stopped service writes nothing more.
    pub async fn stop(&self) {
        self.writer.stop().await;
    }
}

impl Handler for Status {
    async fn handle(&self, rec: &Record) -> Result<(), HandleError> {
        let update = view_update(&self.cfg.sys, rec)?;
        self.writer.write(update).await?;
        probes::disk_io().await;
        Ok(())
    }
}

/// Most updates one view transaction takes.
pub const WRITE_BATCH: usize = 512;

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
                tracing::warn!(error = %Report(&e), "watchdog could not read the view");
                continue;
            }
        };
        // Between the read and the marks, progress may arrive (the marks carry what they saw).
        probes::seam().await;
        // The marks go out together: one slow produce does not hold back the others.
        let drift = mutants::on(Mutant::WatchdogDrift);
        let mut marks = Vec::new();
        for (order_id, status) in candidates {
            let mark = StatusEvent {
                status: codes.stuck,
                timestamp: Some(now),
                observed_status: Some(status).filter(|_| !mutants::on(Mutant::WatchdogRace)),
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
