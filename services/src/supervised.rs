//! What a supervisor knows of the services it runs in this process: the shop writes it, the
//! health check reads it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crate::config::ServiceName;

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
