//! The pizza shop of the Kafka CQRS demo, as real services on one transport seam.
//!
//! # Layout
//! - [`domain`]: events, status codes and texts, menu, timing formulas (`spec/wire.md`). Pure.
//! - [`partitioner`]: Java's murmur2 partitioner, so keys land where the original's do.
//! - [`config`]: the original's ini files (`config_kafka/*.ini`, `config_sys/default.ini`).
//! - [`transport`]: the seam. [`transport::Transport`] produces and subscribes; Kafka
//!   (`transport::kafka`) implements it here, the simulated broker in `sim/`.
//! - [`worker`]: the at-least-once driver every consuming service runs on (ordered per key,
//!   concurrent across keys, never committing past an unfinished record, DLQ for bad events).
//! - [`services`]: assemble, bake, deliver, merge, status: a pure step and a handler each, and the
//!   one entry point [`services::run`].
//! - [`store`]: the SQLite files (the status view, delivery's early warnings).
//! - [`command`]: placing an order (the command side), used by the web app and the load generator.
//! - [`view`]: rebuilding the view from the log.
//! - [`hostile`]: the catalogue of records no service would write, and what the shop must do with
//!   each (the simulation and the integration tests both throw it at the services).
//! - `web`: the HTTP endpoint (feature `web`); `admin`: topics and the embedded broker (feature `kafka`);
//!   `health`: what `/health-check` reports, judged from the broker (both features).
//! - [`mutants`]: known bug classes the simulation switches on (always off outside `--cfg madsim`).
//! - [`clock`], [`shutdown`]: time and graceful shutdown, from the runtime (simulated under madsim).

#[cfg(feature = "kafka")]
pub mod admin;
pub mod clock;
pub mod command;
pub mod config;
pub mod domain;
pub mod error;
pub mod event;
#[cfg(all(feature = "kafka", feature = "web"))]
pub mod health;
pub mod hostile;
pub mod mutants;
pub mod options;
pub mod partitioner;
pub mod services;
#[cfg(not(madsim))]
pub mod shop;
pub mod shutdown;
pub mod store;
pub mod transport;
pub mod view;
#[cfg(feature = "web")]
pub mod web;
pub mod worker;
