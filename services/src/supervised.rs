//! What a supervisor knows of the services it runs in this process (the framework's
//! `supervised`, keyed by the service's name): the shop writes it, the health check reads it.

pub use framework::supervised::{ServiceState, Supervised};
