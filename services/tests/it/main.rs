//! Integration tests on real brokers: librdkafka's mock cluster (embedded), Apache Kafka (started
//! from its Maven Central jars by `scripts/kafka.sh`), tansu when installed, and the `pizza` binary
//! as separate processes for the crash and shutdown tests.

mod browser;
mod cli;
mod common;
mod crash;
mod dlq;
mod hostile;
mod kafka;
mod layers;
mod log;
mod pipeline;
mod props;
mod rawlog;
mod shop;
mod tansu;
mod watchdog;
mod web;
mod web_hostile;
mod worker;
