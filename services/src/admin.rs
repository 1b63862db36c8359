//! Topics on a real cluster, and the embedded broker (librdkafka's mock cluster).

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;

use crate::config::SysConfig;
use crate::transport::kafka::{classify, KafkaTransport};
use crate::transport::TransportError;

/// What `create_topics` did to each topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TopicOutcome {
    Created {
        name: String,
        partitions: i32,
    },
    /// Already there: left alone, whatever its partition count.
    Exists {
        name: String,
        partitions: usize,
    },
}

/// Creates the shop's topics that are missing; existing topics are left alone.
pub async fn create_topics(
    transport: &KafkaTransport,
    sys: &SysConfig,
) -> Result<Vec<TopicOutcome>, TransportError> {
    let t = transport.clone();
    let existing =
        tokio::task::spawn_blocking(move || t.topic_partitions(crate::transport::kafka::METADATA_TIMEOUT))
            .await
            .map_err(TransportError::fatal)??;
    let admin: AdminClient<DefaultClientContext> = transport.client_config().create().map_err(classify)?;
    let mut outcomes = Vec::new();
    let mut missing = Vec::new();
    for name in sys.topics.to_create() {
        match existing.iter().find(|(n, _)| n == name) {
            Some((_, p)) => outcomes.push(TopicOutcome::Exists {
                name: name.to_owned(),
                partitions: *p,
            }),
            None => missing.push(name),
        }
    }
    if !missing.is_empty() {
        let new: Vec<NewTopic> = missing
            .iter()
            .map(|n| {
                NewTopic::new(
                    n,
                    sys.num_partitions,
                    TopicReplication::Fixed(sys.replication_factor),
                )
            })
            .collect();
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        for r in admin.create_topics(&new, &opts).await.map_err(classify)? {
            match r {
                Ok(name) => outcomes.push(TopicOutcome::Created {
                    name,
                    partitions: sys.num_partitions,
                }),
                Err((name, RDKafkaErrorCode::TopicAlreadyExists)) => outcomes.push(TopicOutcome::Exists {
                    name,
                    partitions: sys.num_partitions as usize,
                }),
                Err((name, code)) => {
                    return Err(TransportError::fatal(format!("creating topic {name}: {code}")))
                }
            }
        }
    }
    Ok(outcomes)
}

/// The embedded broker (the framework's: librdkafka's mock cluster), made with the shop's topics.
pub struct EmbeddedBroker(framework::transport::kafka::EmbeddedBroker);

impl EmbeddedBroker {
    /// Starts a one-broker cluster and creates the shop's topics.
    pub fn start(sys: &SysConfig) -> Result<EmbeddedBroker, TransportError> {
        let topics = sys.topics.to_create();
        framework::transport::kafka::EmbeddedBroker::with_topics(topics, sys.num_partitions)
            .map(EmbeddedBroker)
    }
}

impl std::ops::Deref for EmbeddedBroker {
    type Target = framework::transport::kafka::EmbeddedBroker;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

pub use framework::groups::{group_lag, group_reader, GroupLag, PartitionLag};
