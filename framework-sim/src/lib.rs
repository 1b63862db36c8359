//! The framework's deterministic simulation on madsim: what any application's simulation runs on.
//!
//! - [`broker`]: a simulated Kafka broker (partitions, consumer groups, committed offsets,
//!   rebalances, leader changes, refused writes, reordering, duplicated requests), with [`log`]
//!   its partitions' log (batches, codecs, transaction markers, gaps). Plain code, tested in the
//!   normal build.
//! - [`node`] (`--cfg madsim` only): the broker served over madsim's simulated network, and
//!   [`node::SimTransport`], the client every simulated service runs on: the framework's
//!   `Transport` seam, with the same commit bookkeeping and error table as the Kafka transport.
//! - [`rng`] and [`trace`]: the seed's draws before a run starts, and the run's trace.
//!
//! Everything random comes from the seed, so a run replays.

pub mod broker;
pub mod log;
#[cfg(madsim)]
pub mod node;
pub mod rng;
pub mod trace;
