//! The services. Each is a pure step (event + state -> decision, unit-tested without a runtime) and
//! a [`Handler`](crate::worker::Handler) that carries it out on the transport; [`run`] is the one
//! entry point the `pizza` binary, the tests and the simulation all use.

pub mod assemble;
pub mod bake;
pub mod deliver;
pub mod event;
pub mod merge;
pub mod status;

use std::path::PathBuf;
use std::sync::Arc;

use crate::clock::TimeScale;
use crate::config::{ServiceName, SysConfig};
use crate::shutdown::Shutdown;
use crate::store::{DeliveryStore, StoreError, ViewStore};
use crate::transport::{Record, Transport};
use crate::worker::{run_worker, Handler, WorkerConfig, WorkerError, WorkerStats};

/// What every service needs besides its transport.
#[derive(Clone, Debug)]
pub struct ServiceConfig {
    pub sys: Arc<SysConfig>,
    /// Scales cooking, delivery and watchdog times (0 = instant, watchdog off).
    pub time_scale: TimeScale,
    /// Where stateful services keep their SQLite files (`delivery.db`, `orders.db`).
    pub data_dir: PathBuf,
    /// Records handled at once per service (ovens, drivers).
    pub concurrency: usize,
    /// Records received but unfinished per service.
    pub max_in_flight: usize,
}

impl ServiceConfig {
    /// Defaults: the spec's configuration, real time, 64 ovens.
    pub fn new(sys: SysConfig, data_dir: PathBuf) -> ServiceConfig {
        ServiceConfig {
            sys: Arc::new(sys),
            time_scale: TimeScale::REAL,
            data_dir,
            concurrency: 64,
            max_in_flight: 1024,
        }
    }

    /// The status view's file.
    pub fn view_path(&self) -> PathBuf {
        self.data_dir.join("orders.db")
    }

    /// The delivery store's file.
    pub fn delivery_path(&self) -> PathBuf {
        self.data_dir.join("delivery.db")
    }

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
    #[error("cannot create data directory {0}: {1}")]
    DataDir(PathBuf, std::io::Error),
    #[error("`{0}` is not a consuming service")]
    NotAConsumer(ServiceName),
}

impl RunError {
    /// Whether the service stopped because retries ran out (the broker or a store stayed
    /// unavailable): a supervisor restarting it is the remedy. Anything else (a bad
    /// configuration, a bug, a record no retry can get past) must not happen in a healthy shop.
    pub fn gave_up_retrying(&self) -> bool {
        match self {
            RunError::Worker(w) => w.gave_up_retrying(),
            RunError::Store(e) => e.is_busy(),
            RunError::DataDir(..) | RunError::NotAConsumer(_) => false,
        }
    }
}

/// Runs one consuming service until `shutdown` fires (then finishes in-flight work, commits and
/// leaves its group) or it fails.
pub async fn run<T: Transport>(
    service: ServiceName,
    cfg: ServiceConfig,
    transport: T,
    stats: Arc<WorkerStats>,
    shutdown: Shutdown,
) -> Result<(), RunError> {
    let needs_disk = matches!(service, ServiceName::Deliver | ServiceName::Status);
    if needs_disk {
        crate::store::private_dir(&cfg.data_dir).map_err(|e| RunError::DataDir(cfg.data_dir.clone(), e))?;
    }
    match service {
        ServiceName::Assemble => {
            let w = cfg.worker(service);
            let h = assemble::Assemble {
                transport: transport.clone(),
                cfg: cfg.clone(),
            };
            run_worker(transport, w, Arc::new(h), stats, shutdown).await?;
        }
        ServiceName::Bake => {
            let w = cfg.worker(service);
            let h = bake::Bake {
                transport: transport.clone(),
                cfg: cfg.clone(),
            };
            run_worker(transport, w, Arc::new(h), stats, shutdown).await?;
        }
        ServiceName::Deliver => {
            let w = cfg.worker(service);
            let path = cfg.delivery_path();
            #[cfg(madsim)]
            let path = if crate::mutants::on(crate::mutants::Mutant::DeliveryStateInMemory) {
                PathBuf::from(":memory:")
            } else {
                path
            };
            let store = DeliveryStore::open(&path)?;
            let h = deliver::Deliver {
                transport: transport.clone(),
                cfg: cfg.clone(),
                store,
            };
            run_worker(transport, w, Arc::new(h), stats, shutdown).await?;
        }
        ServiceName::Merge => {
            // Merge cooks nothing: its only wait is the produce acknowledgement, so it runs as
            // many records at once as it may hold (lanes still keep each order's records in
            // order). With 64 at once it capped the shop near 1000 orders/s (loadgen: p99 7.6 s).
            let mut w = cfg.worker(service);
            w.concurrency = w.max_in_flight;
            let h = merge::Merge {
                transport: transport.clone(),
                cfg: cfg.clone(),
            };
            run_worker(transport, w, Arc::new(h), stats, shutdown).await?;
        }
        ServiceName::Status => {
            let w = cfg.worker(service);
            let view = Arc::new(ViewStore::open(&cfg.view_path())?);
            let watchdog = tokio::spawn(status::watchdog(
                transport.clone(),
                cfg.clone(),
                view.clone(),
                shutdown.clone(),
            ));
            let h = status::Status {
                cfg: cfg.clone(),
                view,
            };
            let result = run_worker(transport, w, Arc::new(h), stats, shutdown).await;
            watchdog.abort();
            result?;
        }
        ServiceName::Web => return Err(RunError::NotAConsumer(service)),
    }
    Ok(())
}

/// The event's own timestamp, else the record's, else 0 (older events carry none).
fn event_ts(own: Option<i64>, rec: &Record) -> i64 {
    own.or(rec.timestamp_ms).unwrap_or(0)
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
