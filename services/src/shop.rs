//! The shop in one process: the chosen consuming services started on a transport factory (one
//! transport per service, made again at each restart, as turmoil's `Sim::host` takes a factory),
//! each opening its own state in the data directory. `pizza demo`, `loadgen --embedded`, the
//! pipeline benchmark and the integration tests all run the shop this way; `pizza serve` runs one
//! service of it as its own process.
//!
//! - [`Shop::start`] starts them; with [`Restart::WithBackoff`] a service that stops on an error is
//!   started again (1 s, doubling, at most [`RESTART_BACKOFF_MAX`]), as a process supervisor
//!   would restart `pizza serve`, and [`Supervised`] says so to the health check.
//! - [`Shop::ready`] waits until an order went all the way through (every group has formed).
//! - [`Shop::stop`] stops them gracefully within a bound and returns what each counted.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use crate::clock::now_ms;
use crate::command::{place_order, PlaceError};
use crate::config::ServiceName;
use crate::domain::{OrderId, OrderRequest};
use crate::error::Report;
use crate::options::ServiceConfig;
use crate::services::{self, RunError, Service};
use crate::shutdown::{Shutdown, ShutdownTrigger};
use crate::store::{StoreError, ViewStore};
use crate::supervised::{ServiceState, Supervised};
use crate::transport::{Transport, TransportError};
use crate::worker::WorkerCounts;

/// The longest wait before a stopped service is started again.
pub const RESTART_BACKOFF_MAX: Duration = Duration::from_secs(30);

/// How often [`Shop::ready`] looks at the view.
const READY_POLL: Duration = Duration::from_millis(10);

/// What the shop does when a service stops on an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Restart {
    /// Nothing: the service stays stopped, and [`Shop::check_running`] and [`Shop::stop`] report it.
    Never,
    /// Start it again after a backoff (the demo, like a process supervisor).
    WithBackoff,
}

/// Why the shop, or one of its services, did not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum ShopError {
    #[error("{0} stopped")]
    Stopped(ServiceName, #[source] RunError),
    #[error("{0} panicked")]
    Panicked(ServiceName, #[source] tokio::task::JoinError),
    /// A service had ended before [`Shop::stop`] (and [`Shop::check_running`] said why).
    #[error("{0} had stopped before the shop was stopped")]
    StoppedEarlier(ServiceName),
    /// Stopping took longer than its bound: these services were aborted (and are gone when
    /// [`Shop::stop`] returns). What they held unfinished is redelivered when they next start.
    #[error("{0:?} did not stop within {1:?}")]
    StopTimedOut(Vec<ServiceName>, Duration),
    /// The order placed by [`Shop::ready`] did not reach the view as delivered in time; the last
    /// error reading the view, if there was one.
    #[error("no order went through the shop within {0:?}")]
    NotReady(Duration, #[source] Option<StoreError>),
    #[error("the shop needs every consuming service to take an order through; it runs {0:?}")]
    NotWhole(Vec<ServiceName>),
    #[error("placing the warm-up order")]
    Place(#[source] PlaceError),
}

/// Consuming services running in this process.
pub struct Shop {
    cfg: ServiceConfig,
    services: Vec<ServiceName>,
    /// Which service each task runs.
    names: HashMap<tokio::task::Id, ServiceName>,
    trigger: ShutdownTrigger,
    tasks: tokio::task::JoinSet<Result<WorkerCounts, RunError>>,
    supervised: Supervised,
    /// The first service seen to end on its own (by [`Shop::check_running`]), reported again by
    /// [`Shop::stop`].
    failed: Option<ServiceName>,
}

impl Shop {
    /// Starts `services`, each on a transport from `connect` (called again at each restart).
    pub fn start<T, F>(cfg: ServiceConfig, services: &[ServiceName], restart: Restart, connect: F) -> Shop
    where
        T: Transport,
        F: Fn(ServiceName) -> Result<T, TransportError> + Send + Sync + 'static,
    {
        let (trigger, shutdown) = Shutdown::new();
        let connect = Arc::new(connect);
        let supervised = Supervised::default();
        let mut tasks = tokio::task::JoinSet::new();
        let mut names = HashMap::new();
        for &service in services {
            let node = Node {
                service,
                cfg: cfg.clone(),
                connect: connect.clone(),
                shutdown: shutdown.clone(),
            };
            let supervised = supervised.clone();
            let task = tasks.spawn(async move {
                match restart {
                    Restart::Never => node.run_once().await,
                    Restart::WithBackoff => node.supervise(&supervised).await,
                }
            });
            names.insert(task.id(), service);
        }
        Shop {
            cfg,
            services: services.to_vec(),
            names,
            trigger,
            tasks,
            supervised,
            failed: None,
        }
    }

    /// The configuration every service runs with.
    pub fn config(&self) -> &ServiceConfig {
        &self.cfg
    }

    /// What the supervisor knows of each service (for the health check).
    pub fn supervised(&self) -> Supervised {
        self.supervised.clone()
    }

    /// An error naming a service that has stopped while it should run.
    pub fn check_running(&mut self) -> Result<(), ShopError> {
        let Some(ended) = self.tasks.try_join_next_with_id() else {
            return Ok(());
        };
        let e = match self.ended(ended) {
            (service, Ok(_)) => ShopError::Stopped(service, RunError::EndedEarly),
            (_, Err(e)) => e,
        };
        if let ShopError::Stopped(service, _) | ShopError::Panicked(service, _) = &e {
            self.failed.get_or_insert(*service);
        }
        Err(e)
    }

    /// Places one order, `order_id`, through `customer` and waits, up to `within`, until the view
    /// shows it delivered: then every service has joined its group and handled a record.
    pub async fn ready<T: Transport>(
        &mut self,
        customer: &T,
        order_id: OrderId,
        within: Duration,
    ) -> Result<(), ShopError> {
        if !ServiceName::CONSUMERS.iter().all(|s| self.services.contains(s)) {
            return Err(ShopError::NotWhole(self.services.clone()));
        }
        let sys = self.cfg.sys.clone();
        let first = |items: &[String]| items.first().cloned().unwrap_or_default();
        let req = OrderRequest {
            username: "warm-up".into(),
            sauce: first(&sys.menu.sauces),
            cheese: first(&sys.menu.cheeses),
            main_topping: first(&sys.menu.main_toppings),
            extra_toppings: vec![],
        };
        let deadline = tokio::time::Instant::now() + within;
        let placed = place_order(customer, &sys, &req, order_id.clone(), now_ms());
        tokio::time::timeout_at(deadline, placed)
            .await
            .map_err(|_| ShopError::NotReady(within, None))?
            .map_err(ShopError::Place)?;
        let path = self.cfg.view_path();
        let mut last_error = None;
        loop {
            self.check_running()?;
            // The status service creates the file, then its tables: until both exist, reading
            // fails, which is "not yet".
            let status = path
                .exists()
                .then(|| ViewStore::open_read_only(&path).and_then(|v| v.status(order_id.as_str())));
            match status {
                Some(Ok(Some(s))) if s.status == sys.codes.delivered => return Ok(()),
                Some(Err(e)) => last_error = Some(e),
                _ => {}
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ShopError::NotReady(within, last_error));
            }
            tokio::time::sleep(READY_POLL).await;
        }
    }

    /// Stops every service gracefully (each finishes what it holds, commits and leaves its
    /// group), waiting at most `within`; what is still running then is aborted, waited for (so
    /// no consumer outlives the call, and a broker may go right after it) and named. Returns what
    /// each service counted, or the first error a service stopped on, here or before (seen by
    /// [`Shop::check_running`]); running out of time is reported before either.
    pub async fn stop(mut self, within: Duration) -> Result<BTreeMap<ServiceName, WorkerCounts>, ShopError> {
        self.trigger.fire();
        let deadline = tokio::time::Instant::now() + within;
        let mut counts = BTreeMap::new();
        let mut failed = self.failed.take().map(ShopError::StoppedEarlier);
        loop {
            let ended = match tokio::time::timeout_at(deadline, self.tasks.join_next_with_id()).await {
                Ok(Some(ended)) => ended,
                Ok(None) => break,
                Err(_) => return Err(self.abort(within).await),
            };
            match self.ended(ended) {
                (service, Ok(c)) => {
                    counts.insert(service, c);
                }
                (_, Err(e)) => {
                    failed.get_or_insert(e);
                }
            }
        }
        failed.map_or(Ok(counts), Err)
    }

    /// Aborts what still runs, waits until it is gone, and names it.
    async fn abort(&mut self, within: Duration) -> ShopError {
        self.tasks.abort_all();
        let mut late = Vec::new();
        while let Some(ended) = self.tasks.join_next_with_id().await {
            late.push(self.ended(ended).0);
        }
        late.sort();
        ShopError::StopTimedOut(late, within)
    }

    /// The service a task ran, and how it ended.
    fn ended(
        &mut self,
        ended: Result<(tokio::task::Id, Result<WorkerCounts, RunError>), tokio::task::JoinError>,
    ) -> (ServiceName, Result<WorkerCounts, ShopError>) {
        let id = match &ended {
            Ok((id, _)) => *id,
            Err(e) => e.id(),
        };
        let service = self.names.remove(&id).expect("every task is named");
        let r = match ended {
            Ok((_, Ok(c))) => Ok(c),
            Ok((_, Err(e))) => Err(ShopError::Stopped(service, e)),
            Err(e) => Err(ShopError::Panicked(service, e)),
        };
        (service, r)
    }
}

/// One service of the shop and what it needs to start (again).
struct Node<F> {
    service: ServiceName,
    cfg: ServiceConfig,
    connect: Arc<F>,
    shutdown: Shutdown,
}

impl<T: Transport, F: Fn(ServiceName) -> Result<T, TransportError>> Node<F> {
    async fn run_once(&self) -> Result<WorkerCounts, RunError> {
        let transport = (self.connect)(self.service).map_err(RunError::Connect)?;
        let service = Service::open(self.service, &self.cfg)?;
        services::run(self.cfg.clone(), transport, service, self.shutdown.clone()).await
    }

    /// Runs the service until shutdown; when it stops on an error, says so (in the log and in
    /// `supervised`) and starts it again after a backoff.
    async fn supervise(&self, supervised: &Supervised) -> Result<WorkerCounts, RunError> {
        let service = self.service;
        let mut shutdown = self.shutdown.clone();
        let mut restarts = 0u32;
        let mut backoff = Duration::from_secs(1);
        loop {
            supervised.set(service.as_str(), ServiceState::Running);
            let ran = tokio::time::Instant::now();
            let e = match self.run_once().await {
                Ok(c) => return Ok(c),
                Err(e) => e,
            };
            if ran.elapsed() > RESTART_BACKOFF_MAX * 2 {
                backoff = Duration::from_secs(1);
            }
            restarts += 1;
            tracing::error!(%service, error = %Report(&e), restarts, backoff_s = backoff.as_secs(), "service stopped; starting it again after the backoff");
            let error = Report(&e).to_string();
            supervised.set(service.as_str(), ServiceState::Down { error, restarts });
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = shutdown.wait() => return Err(e),
            }
            backoff = (backoff * 2).min(RESTART_BACKOFF_MAX);
        }
    }
}
