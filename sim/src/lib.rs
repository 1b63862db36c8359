//! Deterministic simulation of the pizza shop on madsim.
//!
//! The production services (`pizza::services::run`, unchanged) run on simulated nodes against the
//! framework's simulated broker ([`broker`], served over madsim's network by [`node`]: both of
//! the `framework-sim` crate, re-exported here); customers place
//! orders through `pizza::command::place_order`; a scenario file ([`scenario`]) says which faults
//! hit when; the harness ([`harness`]) checks the invariants in two phases and returns the verdict
//! with the run's trace ([`trace`]). Everything random comes from the seed.
//!
//! [`scenario`] and [`oracle`] are plain code, tested in the normal build; the parts that need
//! madsim's runtime exist only under `--cfg madsim` (`cargo sim`, see the README).

pub mod catalogue;
#[cfg(madsim)]
pub mod harness;
pub mod oracle;
pub mod scenario;

#[cfg(madsim)]
pub use framework_sim::node;
pub use framework_sim::{broker, log, rng, trace};

/// The workspace's `scenarios/` folder.
pub fn scenarios_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios")
}

/// Where failing runs' traces go: `target/sim-traces/` of the workspace.
pub fn traces_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/sim-traces")
}
