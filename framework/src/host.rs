//! The in-process host: every service of an application in one process, each instance under a
//! supervisor that runs it again a second after it stopped on an error (as systemd or Kubernetes
//! would; longer, up to a minute, while it keeps stopping on errors no retry fixes), until the
//! host stops. What a demo, a test or a benchmark runs an application with on
//! a real broker (the embedded one, or Kafka).

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::app::{Application, Instance};
use crate::shutdown::{Shutdown, ShutdownTrigger};
use crate::transport::{Transport, TransportError};

/// How long a supervisor waits before it runs a stopped instance again.
pub const RESTART_AFTER: Duration = Duration::from_secs(1);

/// Most stops a host keeps (the newest are dropped past it).
const STOPS_KEPT: usize = 1024;

/// An application's services, running.
pub struct Host {
    trigger: ShutdownTrigger,
    tasks: Vec<JoinHandle<()>>,
    stops: Arc<Mutex<Vec<String>>>,
}

impl Host {
    /// Starts `instances` instances of each of `app`'s services, each on a transport of its own
    /// from `connect` (given the instance's name), with a data directory under `data_root`.
    pub fn start<A, T, F>(
        app: Arc<A>,
        connect: F,
        data_root: &Path,
        instances: usize,
    ) -> Result<Host, TransportError>
    where
        A: Application,
        T: Transport,
        F: Fn(&str) -> Result<T, TransportError>,
    {
        let (trigger, shutdown) = Shutdown::new();
        let stops = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for service in app.services() {
            for k in 0..instances.max(1) {
                let name = if k == 0 {
                    service.clone()
                } else {
                    format!("{service}-{}", k + 1)
                };
                let instance = Instance {
                    data_dir: data_root.join(&name),
                    name,
                };
                std::fs::create_dir_all(&instance.data_dir).map_err(TransportError::fatal)?;
                let transport = connect(&instance.name)?;
                let run = supervise(
                    app.clone(),
                    service.clone(),
                    transport,
                    instance,
                    shutdown.clone(),
                    stops.clone(),
                );
                tasks.push(tokio::spawn(run));
            }
        }
        Ok(Host {
            trigger,
            tasks,
            stops,
        })
    }

    /// Each stop on an error so far, `instance: error` (the supervisor ran it again).
    pub fn stops(&self) -> Vec<String> {
        self.stops.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Shuts every instance down and waits (at most `within`) until each finished what it held;
    /// `false` when some did not in time (those are ended where they are, as a crash ends them).
    pub async fn stop(self, within: Duration) -> bool {
        self.trigger.fire();
        let aborts: Vec<_> = self.tasks.iter().map(JoinHandle::abort_handle).collect();
        let all = join_all(self.tasks);
        let in_time = tokio::time::timeout(within, all).await.is_ok();
        for a in aborts {
            a.abort();
        }
        in_time
    }
}

async fn join_all(tasks: Vec<JoinHandle<()>>) {
    for t in tasks {
        let _ = t.await;
    }
}

/// The longest a supervisor waits between runs of an instance that keeps stopping on errors no
/// retry fixes (the wait doubles from [`RESTART_AFTER`] with each such stop in a row).
pub const RESTART_AT_MOST: Duration = Duration::from_secs(60);

/// Runs `instance` of `service` until the shutdown, again [`RESTART_AFTER`] after each error.
async fn supervise<A: Application, T: Transport>(
    app: Arc<A>,
    service: String,
    transport: T,
    instance: Instance,
    mut shutdown: Shutdown,
    stops: Arc<Mutex<Vec<String>>>,
) {
    let mut pause = RESTART_AFTER;
    loop {
        let ran = app
            .run(&service, transport.clone(), instance.clone(), shutdown.clone())
            .await;
        let Err(stopped) = ran else { return };
        // Retries that ran out may pass at once; an error no retry fixes waits longer each time.
        pause = if stopped.gave_up_retrying {
            RESTART_AFTER
        } else {
            (pause * 2).min(RESTART_AT_MOST)
        };
        tracing::warn!(instance = %instance.name, error = %stopped, "stopped; running it again");
        {
            let mut all = stops.lock().unwrap_or_else(|p| p.into_inner());
            if all.len() < STOPS_KEPT {
                all.push(format!("{}: {stopped}", instance.name));
            }
        }
        tokio::select! {
            () = shutdown.wait() => return,
            () = tokio::time::sleep(pause) => {}
        }
    }
}
