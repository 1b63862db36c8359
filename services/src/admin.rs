//! Topics on a real cluster, and the embedded broker (librdkafka's mock cluster).

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

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

/// Where a consumer group stands on the topics it reads.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupLag {
    /// Records not yet committed (end offsets minus committed offsets), over every partition.
    pub lag: i64,
    /// Per topic and partition: its committed offset and the records after it.
    pub partitions: BTreeMap<(String, i32), PartitionLag>,
}

/// Where a consumer group stands on one partition.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PartitionLag {
    /// The group's committed offset (0 when none).
    pub committed: i64,
    /// Records after it (end offset minus committed offset).
    pub lag: i64,
}

/// A consumer that reads `group`'s committed offsets. It never subscribes, so it never joins the
/// group or disturbs its members.
pub fn group_reader(transport: &KafkaTransport, group: &str) -> Result<BaseConsumer, TransportError> {
    transport
        .client_config()
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .map_err(classify)
}

/// Where `reader`'s group stands on `topics` (name and partition count): its committed offsets and
/// the topics' end offsets, each in one request that waits at most `timeout`.
pub fn group_lag(
    reader: &BaseConsumer,
    topics: &[(&str, usize)],
    timeout: Duration,
) -> Result<GroupLag, TransportError> {
    let mut ends = TopicPartitionList::new();
    let mut tpl = TopicPartitionList::new();
    for (topic, partitions) in topics {
        for p in 0..*partitions as i32 {
            tpl.add_partition(topic, p);
            // A timestamp of -1 (Offset::End) asks ListOffsets for the end offset.
            ends.add_partition_offset(topic, p, Offset::End)
                .map_err(classify)?;
        }
    }
    let committed = reader.committed_offsets(tpl, timeout).map_err(classify)?;
    let ends = reader.offsets_for_times(ends, timeout).map_err(classify)?;
    // Serve what librdkafka queued for this consumer (errors while the broker was away).
    let _ = reader.poll(Duration::ZERO);
    let at = |l: &TopicPartitionList, t: &str, p: i32| match l.find_partition(t, p).map(|e| e.offset()) {
        Some(Offset::Offset(o)) => o,
        _ => 0,
    };
    let mut out = GroupLag::default();
    for e in committed.elements() {
        let done = at(&committed, e.topic(), e.partition());
        let lag = (at(&ends, e.topic(), e.partition()) - done).max(0);
        out.lag += lag;
        out.partitions.insert(
            (e.topic().to_owned(), e.partition()),
            PartitionLag { committed: done, lag },
        );
    }
    Ok(out)
}
