//! Operating the shop's consumer groups (`pizza offsets`): which groups the shop has and the
//! topics each reads; reading and moving their offsets is the framework's
//! ([`framework::groups`]).

pub use framework::groups::{
    ensure_stopped, members, parse_datetime, plan, reset, OffsetsError, PartitionOffsets, ResetTo,
};

use crate::config::{ServiceName, SysConfig};
use crate::transport::kafka::KafkaTransport;

/// The shop's groups, each with the service that runs it and the topics it reads.
pub fn shop_groups(sys: &SysConfig) -> Vec<(String, ServiceName, Vec<String>)> {
    ServiceName::CONSUMERS
        .into_iter()
        .map(|s| {
            let topics = sys.topics.consumed_by(s).into_iter().map(str::to_owned).collect();
            (sys.group(s).to_owned(), s, topics)
        })
        .collect()
}

/// The topics `group` reads (all of them, or only `topic`).
fn topics_of(sys: &SysConfig, group: &str, topic: Option<&str>) -> Result<Vec<String>, OffsetsError> {
    let groups = shop_groups(sys);
    let Some((_, _, topics)) = groups.iter().find(|(g, _, _)| g == group) else {
        let names: Vec<&str> = groups.iter().map(|(g, _, _)| g.as_str()).collect();
        return Err(OffsetsError::UnknownGroup(group.to_owned(), names.join(", ")));
    };
    match topic {
        None => Ok(topics.clone()),
        Some(t) if topics.iter().any(|x| x == t) => Ok(vec![t.to_owned()]),
        Some(t) => Err(OffsetsError::NotItsTopic {
            group: group.to_owned(),
            topic: t.to_owned(),
            reads: topics.join(", "),
        }),
    }
}

/// Where `group` (one of the shop's) stands on each partition of `topic` (or of every topic it
/// reads).
pub fn group_offsets(
    transport: &KafkaTransport,
    sys: &SysConfig,
    group: &str,
    topic: Option<&str>,
) -> Result<Vec<PartitionOffsets>, OffsetsError> {
    let topics = topics_of(sys, group, topic)?;
    framework::groups::group_offsets(transport, group, &topics)
}
