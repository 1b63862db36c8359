//! The embedded broker: librdkafka's mock cluster, a real Kafka protocol endpoint on 127.0.0.1,
//! with topics made through its own API (it does not serve CreateTopics).

use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;

use super::classify;
use crate::transport::{KafkaProps, TransportError};

/// A one-broker mock cluster in this process.
pub struct EmbeddedBroker {
    cluster: MockCluster<'static, DefaultProducerContext>,
}

impl EmbeddedBroker {
    /// Starts a one-broker cluster with `topics`, each of `partitions` partitions.
    pub fn with_topics<'a>(
        topics: impl IntoIterator<Item = &'a str>,
        partitions: i32,
    ) -> Result<EmbeddedBroker, TransportError> {
        let cluster = MockCluster::new(1).map_err(classify)?;
        for name in topics {
            cluster.create_topic(name, partitions, 1).map_err(classify)?;
        }
        Ok(EmbeddedBroker { cluster })
    }

    /// The bootstrap address, e.g. `127.0.0.1:40123`.
    pub fn bootstrap_servers(&self) -> String {
        self.cluster.bootstrap_servers()
    }

    /// The properties of a client of this broker: librdkafka's defaults for a fetch's size, and a
    /// 10 ms wait. The mock cluster holds every fetch for the whole `fetch.wait.max.ms`, even when
    /// records are there, so the wait is added to every hop of an order, and each fetch it answers
    /// costs this process CPU. Measured with `loadgen --embedded --rate 500`: 100 ms gave
    /// end-to-end p50 244 ms / p99 341 ms, 10 ms p50 50 ms / p99 70 ms. At 1000 orders/s what
    /// suits Apache Kafka (64 KiB or 3 ms) made it slower: p99 305 ms with 3 ms, 470 ms with
    /// 64 KiB and 10 ms, against 171 ms.
    pub fn props(&self) -> KafkaProps {
        KafkaProps::bootstrap(&self.bootstrap_servers())
            .with("fetch.min.bytes", "1")
            .with("fetch.wait.max.ms", "10")
    }

    /// Makes the broker answer every request `delay` late (tests: a produce whose answer comes
    /// after `message.timeout.ms` was written, but failed to the client).
    pub fn answer_late(&self, delay: std::time::Duration) -> Result<(), TransportError> {
        self.cluster.broker_round_trip_time(1, delay).map_err(classify)
    }

    /// Creates another topic (tests).
    pub fn create_topic(&self, name: &str, partitions: i32) -> Result<(), TransportError> {
        self.cluster.create_topic(name, partitions, 1).map_err(classify)
    }
}
