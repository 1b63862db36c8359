//! What a supervisor knows of the services it runs in this process: the host (the framework's,
//! or an application's own) writes it, a health check reads it, so a service that stopped is
//! reported at once rather than once its consumer group falls behind.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// What a supervisor knows of the services it runs in this process, by name.
///
/// ```
/// use framework::supervised::{ServiceState, Supervised};
///
/// let supervised = Supervised::default();
/// supervised.set("tally", ServiceState::Running);
/// assert!(supervised.problems().is_empty());
/// let error = "the broker refused the record".to_owned();
/// supervised.set("tally", ServiceState::Down { error, restarts: 2 });
/// assert_eq!(
///     supervised.problems(),
///     ["tally: stopped (2 restarts so far): the broker refused the record"]
/// );
/// // An instance of a service (as `host` names them) is that service down too.
/// supervised.set("tally", ServiceState::Running);
/// supervised.set("tally-2", ServiceState::Down { error: "gone".into(), restarts: 1 });
/// assert!(supervised.is_down("tally") && !supervised.is_down("tall"));
/// ```
#[derive(Clone, Debug, Default)]
pub struct Supervised(Arc<Mutex<BTreeMap<String, ServiceState>>>);

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
    pub fn set(&self, service: &str, state: ServiceState) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(service.to_owned(), state);
    }

    /// Whether `service`, or an instance of it (`service-2`, ..., as `host` names them), is down
    /// now.
    pub fn is_down(&self, service: &str) -> bool {
        let states = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let of_it = |name: &str| {
            name == service
                || name
                    .strip_prefix(service)
                    .and_then(|r| r.strip_prefix('-'))
                    .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        };
        states
            .iter()
            .any(|(name, state)| of_it(name) && matches!(state, ServiceState::Down { .. }))
    }

    /// What is wrong, one line per service that is down (`service: stopped ...`).
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
