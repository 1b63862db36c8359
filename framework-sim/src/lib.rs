//! The framework's deterministic simulation on madsim: what any application's simulation runs on.
//!
//! - [`broker`]: a simulated Kafka broker (partitions, consumer groups, committed offsets,
//!   rebalances, leader changes, refused writes, reordering, duplicated requests), with [`log`]
//!   its partitions' log (batches, codecs, transaction markers, gaps). Plain code, tested in the
//!   normal build.
//! - `node` (`--cfg madsim` only): the broker served over madsim's simulated network, and
//!   `node::SimTransport`, the client every simulated service runs on: the framework's
//!   `Transport` seam, with the same commit bookkeeping and error table as the Kafka transport.
//! - `checks` and `faults` (`--cfg madsim` only): the invariants every application's simulation
//!   checks the same way (commits follow work, the whole log committed, records finished late,
//!   partitions isolated), and the broker's faults (leaders moving, refused writes, a topic's
//!   size limit, holds), done now and undone when they heal.
//! - `testapp` (`--cfg madsim` only): the testing application, one stage with an oracle of its
//!   own, that catches the framework's mutants without any real application.
//! - `world` (`--cfg madsim` only): the simulation of any application: what it implements
//!   (`world::Workload`, beside the framework's `Application`), the seed's faults, and the
//!   run to its verdict.
//! - [`rng`] and [`trace`]: the seed's draws before a run starts, and the run's trace.
//!
//! Everything random comes from the seed, so a run replays.

pub mod broker;
#[cfg(madsim)]
pub mod checks;
#[cfg(madsim)]
pub mod faults;
pub mod log;
#[cfg(madsim)]
pub mod node;
pub mod rng;
#[cfg(madsim)]
pub mod testapp;
pub mod trace;
#[cfg(madsim)]
pub mod world;

/// Runs test target `test` of `package` under `--cfg madsim`, from a plain `cargo test`: madsim's
/// simulator exists only under that cfg, so this invokes cargo again with it, in release, in its
/// own target directory (`target/madsim` of the workspace at `root`, which `cargo sim` shares, so
/// the normal build is never rebuilt), with `extra` arguments (`--no-default-features`, say).
/// Returns whether it passed; its output (the failing seed, the replay) goes to the terminal.
#[cfg(not(madsim))]
pub fn test_under_madsim(root: &std::path::Path, package: &str, test: &str, extra: &[&str]) -> bool {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = std::process::Command::new(cargo)
        .current_dir(root)
        .args([
            "test",
            "--release",
            "--config",
            "build.rustflags=['--cfg','madsim']",
        ])
        .args([
            "--config",
            "build.target-dir='target/madsim'",
            "-p",
            package,
            "--test",
            test,
        ])
        .args(extra)
        // The outer test's flags must not leak into the inner build.
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET_DIR")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .status()
        .expect("cargo runs");
    status.success()
}
