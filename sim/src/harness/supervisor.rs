//! The supervisor on each service's node: runs the production entry point and starts it again
//! after it stopped on an error, as systemd or Kubernetes would, reporting a stop no retry fixes.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use pizza::clock::now_ms;
use pizza::config::ServiceName;
use pizza::error::Report;
use pizza::mutants::{self, ShopMutant};
use pizza::services::{RunError, Service, ServiceConfig};
use pizza::shutdown::Shutdown;
use pizza::store::DeliveryStore;

use super::{fmt_t, Invariant, Shared};
use crate::node::{BrokerShared, SimTransport};

/// How long the supervisor waits before starting a stopped service again.
const RESTART_AFTER: Duration = Duration::from_secs(1);

/// A service's node: runs the service like a supervisor would, starting it again a second after
/// it stopped on an error (a broker unreachable for longer than its retries, say).
pub(super) async fn run_service(
    (service, node): (ServiceName, String),
    cfg: ServiceConfig,
    shared: Arc<Shared>,
    bs: Arc<BrokerShared>,
    watchdog_period_ms: i64,
) {
    let mut stopped_for_good = false;
    loop {
        let transport = SimTransport::connect(&node).await;
        let (trigger, shutdown) = Shutdown::new();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                trigger.fire();
            }
            std::future::pending::<()>().await
        });
        let result = match open_service(service, &cfg) {
            Ok(node) => pizza::services::run(cfg.clone(), transport, node, shutdown)
                .await
                .map(drop),
            Err(e) => Err(e),
        };
        let t = shared.since_start();
        match result {
            Ok(()) => {
                bs.lock()
                    .trace
                    .push(format!("{} {node} stopped gracefully", fmt_t(t)));
                return;
            }
            Err(e) => {
                bs.lock().trace.push(format!(
                    "{} {node} exited: {}; restarting in {}s",
                    fmt_t(t),
                    Report(&e),
                    RESTART_AFTER.as_secs()
                ));
                // Running out of retries while the broker is out of reach is what a supervisor
                // is for; any other error would stop the service again on the same record (once
                // reported, its repeats are in the trace).
                shared.checked(Invariant::ServiceKeptRunning, 1);
                if !e.gave_up_retrying() && !stopped_for_good {
                    stopped_for_good = true;
                    shared.violate(
                        Invariant::ServiceKeptRunning,
                        None,
                        format!("{node} stopped on an error no retry fixes: {}", Report(&e)),
                    );
                }
                shared.restarts.fetch_add(1, Ordering::Relaxed);
                if service == ServiceName::Status {
                    let now = now_ms();
                    shared
                        .impaired
                        .lock()
                        .expect("impaired")
                        .push((now, now + RESTART_AFTER.as_millis() as i64 + watchdog_period_ms));
                }
                tokio::time::sleep(RESTART_AFTER).await;
            }
        }
    }
}

/// The service with its state, as `pizza serve` opens it, except under the mutant that keeps
/// delivery's state in memory (lost with the node): the harness injects that store, the service
/// code has no hook for it.
fn open_service(service: ServiceName, cfg: &ServiceConfig) -> Result<Service, RunError> {
    if service == ServiceName::Deliver && mutants::on(ShopMutant::DeliveryStateInMemory) {
        let store = DeliveryStore::open(std::path::Path::new(":memory:"))?;
        return Ok(Service::Deliver(std::sync::Arc::new(store)));
    }
    Service::open(service, cfg)
}
