//! The pizza shop of the Kafka CQRS demo, as real services on one transport seam.
//!
//! # Layout
//! Modules depend on each other one way, from the bottom up (the `layers` integration test reads
//! the sources and fails on a cycle, and on a framework module that names the application).
//!
//! The framework, which names nothing of the pizza shop:
//! - [`error`], [`mutants`], [`probes`], [`partitioner`] (Java's murmur2, so keys land where the
//!   original's do), [`clock`], [`shutdown`], [`blocking`], [`throttle`]: leaves anything may use.
//!   `mutants` are known bug classes the simulation switches on; outside `--cfg madsim` every
//!   switch is a constant `false`.
//! - [`transport`]: the seam. [`transport::Transport`] produces and subscribes; Kafka
//!   (`transport::kafka`) implements it here, the simulated broker in `sim/`; both share the
//!   member's commit bookkeeping ([`transport::commits`]) and the error table.
//! - [`worker`]: the at-least-once driver every consuming service runs on (ordered per key,
//!   concurrent across keys, never committing past an unfinished record, DLQ for bad records).
//!
//! The pizza shop, on the framework:
//! - [`domain`]: events, status codes and texts, menu, timing formulas (`docs/wire.md`). Pure.
//! - [`config`]: the original's ini files (`config_kafka/*.ini`, `config_sys/default.ini`).
//! - [`options`]: how one service runs ([`options::ServiceOpts`], `pizza serve`'s flags, which the
//!   simulation parses too) and its [`options::ServiceConfig`].
//! - [`event`]: what a record on each of the shop's topics means, judged once for every reader.
//! - [`view`]: the fold of pizza-ordered and pizza-status into what customers see, its rows, and
//!   the rebuild from the log into any [`view::ViewSink`].
//! - [`store`]: the SQLite files (the status view, delivery's early warnings).
//! - [`services`]: assemble, bake, deliver, merge, status: a pure step and a handler each, and the
//!   one entry point [`services::run`].
//! - [`command`]: placing an order (the command side), used by the web app and the load generator.
//! - [`hostile`]: the catalogue of records no service would write, and what the shop must do with
//!   each (the simulation and the integration tests both throw it at the services).
//! - [`supervised`]: what a supervisor knows of the services it runs (the shop writes it, the
//!   health check reads it).
//! - `shop`: the chosen services in one process, on a transport factory (the demo, `loadgen
//!   --embedded`, the bench, the tests).
//! - `web`: the HTTP endpoint (feature `web`); `admin`: topics and the embedded broker (feature
//!   `kafka`); `health`: what `/health-check` reports, judged from the broker (both features);
//!   `group_offsets`: `pizza offsets`, each group's committed offsets shown and moved (`kafka`).

#[cfg(feature = "kafka")]
pub mod admin;
pub mod command;
pub mod config;
pub mod domain;
pub mod event;
#[cfg(feature = "kafka")]
pub mod group_offsets;
#[cfg(all(feature = "kafka", feature = "web"))]
pub mod health;
pub mod hostile;
pub mod mutants;
pub mod options;
pub mod probes;
pub mod services;
#[cfg(not(madsim))]
pub mod shop;
pub mod store;
pub mod supervised;
pub mod view;
#[cfg(feature = "web")]
pub mod web;

pub use framework::{blocking, clock, error, partitioner, shutdown, throttle, transport, worker};
