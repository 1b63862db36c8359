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
use crate::mutants::{self, Mutant};
pub use crate::options::ServiceConfig;
use crate::probes::{self, Probe};
use crate::shutdown::Shutdown;
use crate::store::{DeliveryStore, StoreError, ViewStore};
use crate::transport::{Transport, TransportError};
use crate::view::ViewFollower;
use crate::worker::{run_worker, HandleError, Handler, WorkerConfig, WorkerCounts, WorkerError, WorkerStats};

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

/// A store failure, as a handler reports it: a busy or locked database clears, anything else will
/// not.
impl From<StoreError> for HandleError {
    fn from(e: StoreError) -> Self {
        if e.is_busy() {
            probes::hit(Probe::StoreBusy, "");
            HandleError::retriable(e)
        } else {
            HandleError::fatal(e)
        }
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
            let follower = if mutants::on(Mutant::StatusFoldsItsPartitions) {
                h.folds_into = Some(view.clone());
                None
            } else {
                Some(ViewFollower::start(
                    transport.clone(),
                    cfg.sys.clone(),
                    view.clone(),
                ))
            };
            let watchdog = tokio::spawn(status::watchdog(
                transport.clone(),
                cfg,
                view,
                h.owned.clone(),
                shutdown.clone(),
            ));
            let result = run_worker(transport, w, Arc::new(h), stats.clone(), shutdown).await;
            watchdog.abort();
            drop(follower);
            result?;
        }
    }
    Ok(stats.counts())
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
