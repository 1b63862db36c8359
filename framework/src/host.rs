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
use crate::supervised::{ServiceState, Supervised};
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
    supervised: Supervised,
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
        let supervised = Supervised::default();
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
                    (stops.clone(), supervised.clone()),
                );
                tasks.push(tokio::spawn(run));
            }
        }
        Ok(Host {
            trigger,
            tasks,
            stops,
            supervised,
        })
    }

    /// Each stop on an error so far, `instance: error` (the supervisor ran it again).
    pub fn stops(&self) -> Vec<String> {
        self.stops.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// What the supervisors know of each instance (by its name, `greet`, `greet-2`, ...): for a
    /// health check, which reports an instance that stopped at once (on Kafka,
    /// `health::GroupHealth`, whose services are down while any of their instances is).
    pub fn supervised(&self) -> Supervised {
        self.supervised.clone()
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
    (stops, supervised): (Arc<Mutex<Vec<String>>>, Supervised),
) {
    let mut pause = RESTART_AFTER;
    let mut restarts = 0;
    loop {
        supervised.set(&instance.name, ServiceState::Running);
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
        restarts += 1;
        let error = stopped.to_string();
        supervised.set(&instance.name, ServiceState::Down { error, restarts });
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

#[cfg(all(test, feature = "kafka"))]
mod tests {
    use super::*;
    use crate::app::Stopped;
    use crate::transport::kafka::{EmbeddedBroker, KafkaTransport};

    /// Two services: one stops at once on an error no retry fixes, one runs until the shutdown.
    struct OneFails;

    impl Application for OneFails {
        fn topics(&self) -> Vec<String> {
            vec!["host-test".into()]
        }

        fn services(&self) -> Vec<String> {
            vec!["fails".into(), "runs".into()]
        }

        async fn run<T: Transport>(
            &self,
            service: &str,
            _transport: T,
            _instance: Instance,
            mut shutdown: Shutdown,
        ) -> Result<(), Stopped> {
            if service == "fails" {
                return Err(Stopped::fatal("boom"));
            }
            shutdown.wait().await;
            Ok(())
        }
    }

    /// The supervisor says at once which instance stopped, with its error and how many times,
    /// and runs it again; the one that runs is no problem.
    #[tokio::test(flavor = "current_thread")]
    async fn the_supervisor_says_which_instance_is_down_and_runs_it_again() {
        let broker = EmbeddedBroker::with_topics(["host-test"], 1).expect("the mock cluster starts");
        let props = broker.props();
        let dir = tempfile::tempdir().expect("a data directory");
        let connect = |name: &str| KafkaTransport::new(&props, name);
        let host = Host::start(Arc::new(OneFails), connect, dir.path(), 1).expect("the services start");
        let supervised = host.supervised();
        let until = tokio::time::Instant::now() + Duration::from_secs(10);
        let down = |n: u32| vec![format!("fails: stopped ({n} restarts so far): boom")];
        while supervised.problems() != down(2) && tokio::time::Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(
            supervised.problems(),
            down(2),
            "stopped twice, run again in between"
        );
        assert!(supervised.is_down("fails") && !supervised.is_down("runs"));
        assert!(host.stops().iter().all(|s| s == "fails: boom"));
        assert!(host.stop(Duration::from_secs(5)).await);
    }
}
