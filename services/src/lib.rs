//! The pizza shop of the Kafka CQRS demo, as real services on one transport seam.
//!
//! # Layout
//! The shop is an application of the `framework` crate, which names nothing of it: the transport
//! seam and its Kafka implementation, the worker, state that follows partitions
//! (`framework::changelog`), the view follower (`framework::follow`), probes, mutant switches,
//! the clock. [`transport`], [`worker`], [`error`], [`clock`], [`shutdown`], [`blocking`],
//! [`throttle`] and [`partitioner`] are the framework's, re-exported here under the paths the
//! shop has always used; [`mutants`] and [`probes`] re-export the framework's and add the shop's
//! own ([`mutants::ShopMutant`], [`probes::ShopProbe`]).
//!
//! The shop's modules depend on each other one way, from the bottom up (the `layers` integration
//! test reads the sources and fails on a cycle):
//! - [`domain`]: events, status codes and texts, menu, timing formulas (`docs/wire.md`). Pure.
//! - [`config`]: the original's ini files (`config_kafka/*.ini`, `config_sys/default.ini`).
//! - [`options`]: how one service runs ([`options::ServiceOpts`], `pizza serve`'s flags, which the
//!   simulation parses too) and its [`options::ServiceConfig`].
//! - [`event`]: what a record on each of the shop's topics means, judged once for every reader.
//! - [`view`]: the fold of pizza-ordered and pizza-status into what customers see, its rows, and
//!   the rebuild from the log into a fresh store.
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
