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

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
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
    #[error("a service's task ended")]
    Panicked(#[source] tokio::task::JoinError),
    #[error("{0:?} did not stop within {1:?}")]
    StopTimedOut(Vec<ServiceName>, Duration),
    #[error("no order went through the shop within {0:?}")]
    NotReady(Duration),
    #[error("the shop needs every consuming service to take an order through; it runs {0:?}")]
    NotWhole(Vec<ServiceName>),
    #[error("placing the warm-up order")]
    Place(#[source] PlaceError),
    #[error("reading the view")]
    View(#[source] StoreError),
}

type Ended = (ServiceName, Result<WorkerCounts, RunError>);

/// Consuming services running in this process.
pub struct Shop {
    cfg: ServiceConfig,
    services: Vec<ServiceName>,
    /// Services whose task has not ended (as far as `check_running` and `stop` have seen).
    running: BTreeSet<ServiceName>,
    trigger: ShutdownTrigger,
    tasks: tokio::task::JoinSet<Ended>,
    supervised: Supervised,
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
        for &service in services {
            let node = Node {
                service,
                cfg: cfg.clone(),
                connect: connect.clone(),
                shutdown: shutdown.clone(),
            };
            let supervised = supervised.clone();
            tasks.spawn(async move {
                let r = match restart {
                    Restart::Never => node.run_once().await,
                    Restart::WithBackoff => node.supervise(&supervised).await,
                };
                (service, r)
            });
        }
        Shop {
            cfg,
            services: services.to_vec(),
            running: services.iter().copied().collect(),
            trigger,
            tasks,
            supervised,
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
        match self.tasks.try_join_next() {
            None => Ok(()),
            Some(Ok((service, r))) => {
                self.running.remove(&service);
                Err(ShopError::Stopped(
                    service,
                    r.err().unwrap_or(RunError::EndedEarly),
                ))
            }
            Some(Err(e)) => Err(ShopError::Panicked(e)),
        }
    }

    /// Places one order through `customer` and waits, up to `within`, until the view shows it
    /// delivered: then every service has joined its group and handled a record.
    pub async fn ready<T: Transport>(&mut self, customer: &T, within: Duration) -> Result<(), ShopError> {
        if !ServiceName::CONSUMERS.iter().all(|s| self.services.contains(s)) {
            return Err(ShopError::NotWhole(self.services.clone()));
        }
        let sys = self.cfg.sys.clone();
        let req = OrderRequest {
            username: "warm-up".into(),
            sauce: sys.menu.sauces[0].clone(),
            cheese: sys.menu.cheeses[0].clone(),
            main_topping: sys.menu.main_toppings[0].clone(),
            extra_toppings: vec![],
        };
        let id = OrderId::random();
        let deadline = tokio::time::Instant::now() + within;
        let placed =
            tokio::time::timeout_at(deadline, place_order(customer, &sys, &req, id.clone(), now_ms()));
        placed
            .await
            .map_err(|_| ShopError::NotReady(within))?
            .map_err(ShopError::Place)?;
        let path = self.cfg.view_path();
        let mut view = None;
        loop {
            self.check_running()?;
            if view.is_none() && path.exists() {
                view = Some(ViewStore::open_read_only(&path).map_err(ShopError::View)?);
            }
            if let Some(v) = &view {
                let status = v.status(id.as_str()).map_err(ShopError::View)?;
                if status.is_some_and(|s| s.status == sys.codes.delivered) {
                    return Ok(());
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ShopError::NotReady(within));
            }
            tokio::time::sleep(READY_POLL).await;
        }
    }

    /// Stops every service gracefully (each finishes what it holds, commits and leaves its
    /// group), waiting at most `within`; what is still running then is aborted and named.
    /// Returns what each service counted, or the first error one stopped on.
    pub async fn stop(mut self, within: Duration) -> Result<BTreeMap<ServiceName, WorkerCounts>, ShopError> {
        self.trigger.fire();
        let deadline = tokio::time::Instant::now() + within;
        let mut counts = BTreeMap::new();
        let mut failed = None;
        loop {
            match tokio::time::timeout_at(deadline, self.tasks.join_next()).await {
                Ok(None) => break,
                Ok(Some(Ok((service, r)))) => {
                    self.running.remove(&service);
                    match r {
                        Ok(c) => {
                            counts.insert(service, c);
                        }
                        Err(e) => {
                            failed.get_or_insert(ShopError::Stopped(service, e));
                        }
                    }
                }
                Ok(Some(Err(e))) => {
                    failed.get_or_insert(ShopError::Panicked(e));
                }
                Err(_) => {
                    self.tasks.abort_all();
                    let late = self.running.into_iter().collect();
                    return Err(ShopError::StopTimedOut(late, within));
                }
            }
        }
        failed.map_or(Ok(counts), Err)
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
            supervised.set(service, ServiceState::Running);
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
            supervised.set(service, ServiceState::Down { error, restarts });
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = shutdown.wait() => return Err(e),
            }
            backoff = (backoff * 2).min(RESTART_BACKOFF_MAX);
        }
    }
}

/// What a supervisor knows of the services it runs in this process.
#[derive(Clone, Debug, Default)]
pub struct Supervised(Arc<Mutex<BTreeMap<ServiceName, ServiceState>>>);

/// A supervised service's state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServiceState {
    Running,
    /// Stopped on an error; the supervisor starts it again.
    Down {
        error: String,
        restarts: u32,
    },
}

impl Supervised {
    /// Records a service's state.
    pub fn set(&self, service: ServiceName, state: ServiceState) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(service, state);
    }

    /// What is wrong, one line per service that is down.
    pub fn problems(&self) -> Vec<String> {
        let states = self.0.lock().unwrap_or_else(|p| p.into_inner());
        states
            .iter()
            .filter_map(|(service, state)| match state {
                ServiceState::Running => None,
                ServiceState::Down { error, restarts } => Some(format!(
                    "{service}: stopped ({restarts} restarts so far): {error}"
                )),
            })
            .collect()
    }
}
