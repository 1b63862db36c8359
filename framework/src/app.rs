//! What an application is to the framework: its topology (topics, services) and how one instance
//! of each service runs on a transport. The same implementation runs on Kafka, on the embedded
//! broker (the `host` module) and in the simulation (`framework_sim::world`), which adds what only
//! a simulation needs (a workload and invariants).
//!
//! ```
//! use std::sync::Arc;
//!
//! use framework::app::{Application, Instance, Stopped};
//! use framework::shutdown::Shutdown;
//! use framework::transport::{OutRecord, Record, Transport};
//! use framework::worker::{run_worker, HandleError, Handler, WorkerConfig, WorkerStats};
//!
//! /// One service: each name on `names` becomes a greeting on `greetings`.
//! struct Greeter;
//!
//! struct Greet<T>(T);
//!
//! impl<T: Transport> Handler for Greet<T> {
//!     async fn handle(&self, rec: &Record) -> Result<(), HandleError> {
//!         let name = std::str::from_utf8(rec.payload())
//!             .map_err(|_| framework::error::Malformed("not UTF-8".into()))?;
//!         let greeting = format!("hello, {name}").into_bytes();
//!         let key = rec.key.clone().unwrap_or_default();
//!         self.0.produce(OutRecord::new("greetings", key, greeting)).await?;
//!         Ok(())
//!     }
//! }
//!
//! impl Application for Greeter {
//!     fn topics(&self) -> Vec<String> {
//!         ["names", "greetings", "greeter-dlq"].map(String::from).to_vec()
//!     }
//!
//!     fn services(&self) -> Vec<String> {
//!         vec!["greet".into()]
//!     }
//!
//!     async fn run<T: Transport>(
//!         &self,
//!         _service: &str,
//!         transport: T,
//!         _instance: Instance,
//!         shutdown: Shutdown,
//!     ) -> Result<(), Stopped> {
//!         let cfg = WorkerConfig::new("greet", "greeter", &["names"], "greeter-dlq");
//!         let handler = Arc::new(Greet(transport.clone()));
//!         let stats = Arc::new(WorkerStats::default());
//!         Ok(run_worker(transport, cfg, handler, stats, shutdown).await?)
//!     }
//! }
//! ```

use std::future::Future;
use std::path::PathBuf;

use crate::error::{BoxError, Report};
use crate::shutdown::Shutdown;
use crate::transport::Transport;
use crate::worker::WorkerError;

/// A set of Kafka services, as the framework hosts them.
pub trait Application: Send + Sync + 'static {
    /// Every topic its services read or write: made before any of them starts.
    fn topics(&self) -> Vec<String>;

    /// Its services' names. Each runs as one or more instances, all alike.
    fn services(&self) -> Vec<String>;

    /// Runs one instance of `service` on `transport` until `shutdown` fires (then `Ok`, once what
    /// it holds is finished and committed) or it stops on an error. A host runs it again after an
    /// error, as a supervisor would; [`Stopped::gave_up_retrying`] says whether that can help.
    fn run<T: Transport>(
        &self,
        service: &str,
        transport: T,
        instance: Instance,
        shutdown: Shutdown,
    ) -> impl Future<Output = Result<(), Stopped>> + Send;
}

/// Which instance runs, and where it may keep files.
#[derive(Clone, Debug)]
pub struct Instance {
    /// `greet`, `greet-2`, ...: unique in the application.
    pub name: String,
    /// Its own directory (made by the host): what a lost disk loses.
    pub data_dir: PathBuf,
}

/// Why an instance stopped other than by shutdown.
#[derive(Debug)]
pub struct Stopped {
    pub error: BoxError,
    /// Retries ran out (the broker or a store stayed away): running it again may help. Otherwise
    /// the error is one no retry fixes, which the simulation reports as a broken promise.
    pub gave_up_retrying: bool,
}

impl Stopped {
    /// An error no retry fixes.
    pub fn fatal(error: impl Into<BoxError>) -> Stopped {
        Stopped {
            error: error.into(),
            gave_up_retrying: false,
        }
    }
}

impl From<WorkerError> for Stopped {
    fn from(e: WorkerError) -> Stopped {
        Stopped {
            gave_up_retrying: e.gave_up_retrying(),
            error: Box::new(e),
        }
    }
}

impl std::fmt::Display for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", Report(&*self.error))
    }
}
