//! The services. Each is a pure step (event + state -> decision, unit-tested without a runtime) and
//! a [`Handler`] that carries it out on the transport; [`run`] is the one
//! entry point the `pizza` binary, the tests and the simulation all use.

pub mod assemble;
pub mod bake;
pub mod changelog;
pub mod deliver;
pub mod merge;
pub mod status;

use std::path::PathBuf;
use std::sync::Arc;

use crate::config::ServiceName;
use crate::mutants::{self, ShopMutant};
pub use crate::options::ServiceConfig;
use crate::shutdown::Shutdown;
use crate::store::{DeliveryStore, StoreError, ViewStore};
use crate::transport::{Transport, TransportError};
use crate::view::ViewFollower;
use crate::worker::{run_worker, Handler, WorkerConfig, WorkerCounts, WorkerError, WorkerStats};

impl ServiceConfig {
    fn worker(&self, service: ServiceName) -> WorkerConfig {
        let mut w = WorkerConfig::new(
            service.as_str(),
            self.sys.group(service),
            &self.sys.topics.consumed_by(service),
            &self.sys.topics.dlq,
        );
        w.concurrency = self.concurrency;
        w.max_in_flight = self.max_in_flight;
        w
    }
}

/// Why a service stopped other than by shutdown.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Worker(#[from] WorkerError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot create data directory {0}")]
    DataDir(PathBuf, #[source] std::io::Error),
    #[error("`{0}` is not a consuming service")]
    NotAConsumer(ServiceName),
    #[error("connecting to the broker")]
    Connect(#[source] TransportError),
    #[error("the service ended before it was asked to stop")]
    EndedEarly,
    #[error("its view has not followed the log for {0:?}: {1}")]
    ViewStalled(std::time::Duration, String),
}

impl RunError {
    /// Whether the service stopped because retries ran out (the broker or a store stayed
    /// unavailable): a supervisor restarting it is the remedy. Anything else (a bad
    /// configuration, a bug, a record no retry can get past) must not happen in a healthy shop.
    pub fn gave_up_retrying(&self) -> bool {
        match self {
            RunError::Worker(w) => w.gave_up_retrying(),
            RunError::Store(e) => e.is_busy(),
            RunError::Connect(e) => e.is_retriable(),
            // Started again, it opens its view afresh; meanwhile its group hands its partitions,
            // and its orders' watchdog, to the other instances.
            RunError::ViewStalled(..) => true,
            RunError::DataDir(..) | RunError::NotAConsumer(_) | RunError::EndedEarly => false,
        }
    }
}

/// A consuming service with the state it keeps, opened by the caller: the `pizza` binary and the
/// shop open the files in the data directory ([`Service::open`]); the simulation may bring other
/// stores (one in memory, to play a bug).
pub enum Service {
    Assemble,
    Bake,
    Deliver(Arc<DeliveryStore>),
    Merge,
    Status(Arc<ViewStore>),
}

impl Service {
    /// `service` with its state in `cfg.data_dir` (created, private, when the service keeps any).
    pub fn open(service: ServiceName, cfg: &ServiceConfig) -> Result<Service, RunError> {
        let dir = || {
            crate::store::private_dir(&cfg.data_dir).map_err(|e| RunError::DataDir(cfg.data_dir.clone(), e))
        };
        Ok(match service {
            ServiceName::Assemble => Service::Assemble,
            ServiceName::Bake => Service::Bake,
            ServiceName::Merge => Service::Merge,
            ServiceName::Deliver => {
                dir()?;
                Service::Deliver(Arc::new(DeliveryStore::open(&cfg.delivery_path())?))
            }
            ServiceName::Status => {
                dir()?;
                Service::Status(Arc::new(ViewStore::open(&cfg.view_path())?))
            }
            ServiceName::Web => return Err(RunError::NotAConsumer(service)),
        })
    }

    pub fn name(&self) -> ServiceName {
        match self {
            Service::Assemble => ServiceName::Assemble,
            Service::Bake => ServiceName::Bake,
            Service::Deliver(_) => ServiceName::Deliver,
            Service::Merge => ServiceName::Merge,
            Service::Status(_) => ServiceName::Status,
        }
    }
}

/// Runs one consuming service until `shutdown` fires (then finishes in-flight work, commits and
/// leaves its group) or it fails. Returns what its worker counted.
pub async fn run<T: Transport>(
    cfg: ServiceConfig,
    transport: T,
    service: Service,
    shutdown: Shutdown,
) -> Result<WorkerCounts, RunError> {
    let mut w = cfg.worker(service.name());
    let stats = Arc::new(WorkerStats::default());
    match service {
        Service::Assemble => {
            let h = assemble::Assemble {
                transport: transport.clone(),
                cfg,
            };
            run_worker(transport, w, Arc::new(h), stats.clone(), shutdown).await?;
        }
        Service::Bake => {
            let h = bake::Bake {
                transport: transport.clone(),
                cfg,
            };
            run_worker(transport, w, Arc::new(h), stats.clone(), shutdown).await?;
        }
        Service::Deliver(store) => {
            let h = Arc::new(deliver::Deliver::new(transport.clone(), cfg, store));
            let result = run_worker(transport, w, h.clone(), stats.clone(), shutdown).await;
            h.stop().await;
            result?;
        }
        Service::Merge => {
            // Merge cooks nothing: its only wait is the produce acknowledgement, so it runs as
            // many records at once as it may hold (lanes still keep each order's records in
            // order). With 64 at once it capped the shop near 1000 orders/s (loadgen: p99 7.6 s).
            w.concurrency = w.max_in_flight;
            let h = merge::Merge {
                transport: transport.clone(),
                cfg,
            };
            run_worker(transport, w, Arc::new(h), stats.clone(), shutdown).await?;
        }
        Service::Status(view) => {
            // The handler only judges (the follower folds): as many records at once as it holds.
            w.concurrency = w.max_in_flight;
            let mut h = status::Status::new(cfg.clone());
            // Every instance folds the whole log into its own view, from where its file says (a
            // new file, or its disk lost: from the log's start).
            let follower = if mutants::on(ShopMutant::StatusFoldsItsPartitions) {
                h.folds_into = Some(view.clone());
                None
            } else {
                Some(crate::view::follow(transport.clone(), &cfg.sys, view.clone()))
            };
            let watchdog = tokio::spawn(status::watchdog(
                transport.clone(),
                cfg,
                view,
                h.owned.clone(),
                shutdown.clone(),
            ));
            let stop_when = StopWhen {
                shutdown,
                follower: follower.as_ref(),
                gives_up: VIEW_GIVES_UP,
            };
            let (result, gave_up) = stop_when
                .run(|s| run_worker(transport, w, Arc::new(h), stats.clone(), s))
                .await;
            watchdog.abort();
            drop(follower);
            result?;
            if let Some((failing, why)) = gave_up {
                return Err(RunError::ViewStalled(failing, why));
            }
        }
    }
    Ok(stats.counts())
}

/// When a status instance's worker stops: on shutdown, or when its view has failed to follow the
/// log for [`VIEW_GIVES_UP`] (an instance whose view is stuck must not keep its partitions).
struct StopWhen<'a> {
    shutdown: Shutdown,
    follower: Option<&'a ViewFollower>,
    /// [`VIEW_GIVES_UP`], but in a test.
    gives_up: std::time::Duration,
}

impl StopWhen<'_> {
    /// Runs `worker` with a shutdown of its own, fired by either; returns its result, and how long
    /// and why the view failed when that stopped it.
    async fn run<F: std::future::Future<Output = Result<(), WorkerError>>>(
        self,
        worker: impl FnOnce(Shutdown) -> F,
    ) -> (Result<(), WorkerError>, Option<(std::time::Duration, String)>) {
        let (stop, worker_shutdown) = Shutdown::new();
        let worker = worker(worker_shutdown);
        let stalled = async {
            match self.follower {
                Some(f) => view_gave_up(f, self.gives_up).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(worker, stalled);
        let (mut shutdown, mut stopping, mut gave_up) = (self.shutdown, false, None);
        let result = loop {
            tokio::select! {
                biased;
                r = &mut worker => break r,
                _ = shutdown.wait(), if !stopping => {
                    stopping = true;
                    stop.fire();
                }
                why = &mut stalled, if gave_up.is_none() => {
                    tracing::error!(error = %why.1, "the view has stopped following the log: stopping, so the group hands this instance's partitions on");
                    gave_up = Some(why);
                    stopping = true;
                    stop.fire();
                }
            }
        };
        (result, gave_up)
    }
}

/// How long a status instance's view may fail to follow the log, attempt after attempt, before
/// the instance stops (and its supervisor starts it again).
pub const VIEW_GIVES_UP: std::time::Duration = std::time::Duration::from_secs(60);

/// Resolves, with how long and why, once `follower` has been failing for `gives_up`.
async fn view_gave_up(
    follower: &ViewFollower,
    gives_up: std::time::Duration,
) -> (std::time::Duration, String) {
    let mut checks = tokio::time::interval(std::time::Duration::from_millis(250));
    loop {
        checks.tick().await;
        if let Some((failing, why)) = follower.failing_for().filter(|(d, _)| *d >= gives_up) {
            return (failing, why);
        }
    }
}

#[allow(dead_code)]
fn _assert_handlers_are_handlers<T: Transport>() {
    fn is_handler<H: Handler>() {}
    is_handler::<assemble::Assemble<T>>();
    is_handler::<bake::Bake<T>>();
    is_handler::<deliver::Deliver<T>>();
    is_handler::<merge::Merge<T>>();
    is_handler::<status::Status>();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{KafkaProps, SysConfig};
    use crate::transport::kafka::KafkaTransport;
    use crate::view::{LogView, ViewUpdate};

    /// A view whose file cannot be read: every attempt to follow the log fails at once.
    struct Unreadable;

    #[derive(Debug, thiserror::Error)]
    #[error("disk I/O error (the test's unreadable view)")]
    struct Unread;

    impl LogView for Unreadable {
        type Context = SysConfig;
        type Update = ViewUpdate;
        type Error = Unread;
        fn update(_: &SysConfig, _: &crate::transport::Record, _: Option<i32>) -> Option<ViewUpdate> {
            None
        }
        fn followed(&self) -> Result<Vec<(String, i32, i64)>, Unread> {
            Err(Unread)
        }
        fn apply_at(&self, _: &SysConfig, _: &[ViewUpdate], _: &[(String, i32, i64)]) -> Result<(), Unread> {
            Err(Unread)
        }
        fn scratch(&self, _: bool) -> Result<Self, Unread> {
            Err(Unread)
        }
        fn logs(&self) -> Result<Vec<(String, String)>, Unread> {
            Err(Unread)
        }
        fn set_logs(&self, _: &[(String, String)]) -> Result<(), Unread> {
            Err(Unread)
        }
        fn take_from(&self, _: Self) -> Result<(), Unread> {
            Err(Unread)
        }
    }

    /// A status instance whose view keeps failing stops its worker (so its group hands its
    /// partitions on) once it has failed for the give-up time, attempt after attempt; and says
    /// why. Before, it kept its partitions and its orders went unmarked.
    #[tokio::test]
    async fn a_view_that_keeps_failing_stops_the_worker() {
        let transport = KafkaTransport::new(&KafkaProps::bootstrap("127.0.0.1:1"), "it-stalled").unwrap();
        let follower = crate::view::follow(transport, &Arc::new(SysConfig::default()), Arc::new(Unreadable));
        let (_never, shutdown) = Shutdown::new();
        let gives_up = std::time::Duration::from_secs(2);
        let stop_when = StopWhen {
            shutdown,
            follower: Some(&follower),
            gives_up,
        };
        let started = tokio::time::Instant::now();
        let worker = |mut s: Shutdown| async move {
            s.wait().await;
            Ok(())
        };
        let ran = tokio::time::timeout(std::time::Duration::from_secs(20), stop_when.run(worker)).await;
        let (result, gave_up) = ran.expect("the worker was stopped");
        assert!(result.is_ok());
        let (failing, why) = gave_up.expect("stopped because the view failed");
        assert!(
            failing >= gives_up && started.elapsed() >= gives_up,
            "{failing:?}"
        );
        assert!(why.contains("disk I/O error"), "{why}");
    }
}
