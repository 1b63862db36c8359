//! What any set of Kafka services is written against, and what the simulation runs them on.
//! It names nothing of any application (the `layers` test of the pizza shop's crate reads this
//! crate's sources and fails on a name of its own).
//!
//! # Layout
//! Modules depend on each other one way, from the bottom up:
//! - [`error`], [`mutants`], [`probes`], [`partitioner`] (Java's murmur2, so keys land where a
//!   Java or Python producer puts them), [`clock`], [`shutdown`], [`blocking`], [`throttle`]:
//!   leaves anything may use. `mutants` are known bug classes the simulation switches on (an
//!   application adds its own through [`mutants::BugClass`]); outside `--cfg madsim` every switch
//!   is a constant `false`. `probes` mark the error-handling branches a simulation must see taken
//!   (an application adds its own through [`probes::ProbeKind`]).
//! - [`store`]: the stores' base, a SQLite file that syncs every commit (a leaf too).
//! - [`transport`]: the seam. [`transport::Transport`] produces and subscribes; Kafka
//!   (`transport::kafka`, feature `kafka`) implements it here, the simulated broker in
//!   `framework-sim`;
//!   both share the member's commit bookkeeping ([`transport::commits`]) and the error table.
//! - [`worker`]: the at-least-once driver every consuming service runs on (ordered per key,
//!   concurrent across keys, never committing past an unfinished record, a dead-letter topic for
//!   records its handler calls malformed).
//! - [`changelog`]: state that follows partitions: facts per key in a changelog topic, restored
//!   before a partition's records are handled and followed while owned, folded into a store the
//!   application gives ([`changelog::FactStore`]).
//! - [`follow`]: a view that follows the whole log outside any group, folded into a store the
//!   application gives ([`follow::LogView`]): read on from where its store says, and folded
//!   anew, aside, when it has read nothing yet or its topics are new logs.
//! - `groups` (feature `kafka`): operating a consumer group on Kafka: its lag (for a health
//!   check), its offsets read and moved (for an operator's tool); `health` (feature `kafka`):
//!   the health check by consumer lag that a web app answers with, beside what the supervisor
//!   says ([`supervised`], a leaf).
//! - [`app`]: what an application is to the framework ([`app::Application`]: its topics, its
//!   services, how one instance of each runs on a transport), and `host`: all of an
//!   application's services in one process, each under a supervisor that says what it knows in a
//!   [`supervised::Supervised`] (not under madsim, where the simulation hosts them on nodes of
//!   their own).

pub mod app;
pub mod blocking;
pub mod changelog;
pub mod clock;
pub mod error;
pub mod follow;
#[cfg(feature = "kafka")]
pub mod groups;
#[cfg(feature = "kafka")]
pub mod health;
#[cfg(not(madsim))]
pub mod host;
pub mod mutants;
pub mod partitioner;
pub mod probes;
pub mod shutdown;
pub mod store;
pub mod supervised;
pub mod throttle;
pub mod transport;
pub mod worker;
