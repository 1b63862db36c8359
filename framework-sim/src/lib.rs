//! The framework's deterministic simulation on madsim: what any application's simulation runs on.
//!
//! - [`broker`]: a simulated Kafka broker (partitions, consumer groups, committed offsets,
//!   rebalances, leader changes, refused writes, reordering, duplicated requests), with [`log`]
//!   its partitions' log (batches, codecs, transaction markers, gaps). Plain code, tested in the
//!   normal build.
//! - [`node`] (`--cfg madsim` only): the broker served over madsim's simulated network, and
//!   [`node::SimTransport`], the client every simulated service runs on: the framework's
//!   `Transport` seam, with the same commit bookkeeping and error table as the Kafka transport.
//! - [`checks`] (`--cfg madsim` only): the invariants every application's simulation checks the
//!   same way (commits follow work, the whole log committed).
//! - [`testapp`] (`--cfg madsim` only): the testing application, one stage with an oracle of its
//!   own, that catches the framework's mutants without any real application.
//! - [`world`] (`--cfg madsim` only): the simulation of any application: what it implements
//!   ([`world::Workload`], beside the framework's `Application`), the seed's faults, and the
//!   run to its verdict.
//! - [`rng`] and [`trace`]: the seed's draws before a run starts, and the run's trace.
//!
//! Everything random comes from the seed, so a run replays.

pub mod broker;
#[cfg(madsim)]
pub mod checks;
pub mod log;
#[cfg(madsim)]
pub mod node;
pub mod rng;
#[cfg(madsim)]
pub mod testapp;
pub mod trace;
#[cfg(madsim)]
pub mod world;
