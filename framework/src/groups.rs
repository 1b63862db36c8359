//! Operating a consumer group on Kafka: where a group stands on the topics it reads (committed
//! offset, the log's earliest and latest offsets, lag, per partition), read by a consumer that
//! never joins the group, and moving a stopped group's committed offsets, as Kafka's
//! `kafka-consumer-groups.sh --reset-offsets` does. A reset is refused while the group has
//! members: the coordinator itself rejects a commit from outside a group that is not empty, and
//! the reset asks it first so it can say so plainly. An application's health check reads its
//! groups' lag here ([`group_lag`]); its operator's tool reads and moves offsets
//! ([`group_offsets`], [`plan`], [`reset`]).

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

use crate::transport::kafka::{classify, KafkaTransport};
use crate::transport::TransportError;

/// How long each request to the cluster may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// One partition of a topic a group reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionOffsets {
    pub topic: String,
    pub partition: i32,
    /// What the group committed; `None` when it never committed here.
    pub committed: Option<i64>,
    /// The log's first offset (retention moves it).
    pub earliest: i64,
    /// The log's end: the offset the next record will get.
    pub latest: i64,
}

impl PartitionOffsets {
    /// Records the group has still to read: from its committed offset, or from the log's start
    /// when it has none (the framework's consumers start at the earliest offset).
    pub fn lag(&self) -> i64 {
        (self.latest - self.committed.unwrap_or(self.earliest)).max(0)
    }
}

/// Where a reset moves a group's offsets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResetTo {
    Earliest,
    Latest,
    /// The first record at or after this time (ms since the epoch); the log's end when none is.
    Datetime(i64),
    /// The committed offset (the log's start when none) moved by this many records, kept within
    /// the log.
    ShiftBy(i64),
}

/// A group's offsets could not be read or moved.
#[derive(Debug, thiserror::Error)]
pub enum OffsetsError {
    #[error("{0} is not one of the application's groups ({1})")]
    UnknownGroup(String, String),
    #[error("group {group} does not read {topic} (it reads {reads})")]
    NotItsTopic {
        group: String,
        topic: String,
        reads: String,
    },
    #[error(
        "group {group} has members ({members}, {state}): stop its services before resetting its offsets"
    )]
    HasMembers {
        group: String,
        members: usize,
        state: String,
    },
    #[error("topic {0} does not exist (create the application's topics first)")]
    NoTopic(String),
    #[error("{topic}/{partition}: {what}")]
    Unreadable {
        topic: String,
        partition: i32,
        what: String,
    },
    #[error("the coordinator refused the commit: group {group} has members (stop its services first)")]
    Refused {
        group: String,
        #[source]
        source: KafkaError,
    },
    #[error(transparent)]
    Transport(#[from] TransportError),
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
        let lag = crate::transport::commits::uncommitted(at(&ends, e.topic(), e.partition()), done);
        out.lag += lag;
        out.partitions.insert(
            (e.topic().to_owned(), e.partition()),
            PartitionLag { committed: done, lag },
        );
    }
    Ok(out)
}

/// Where `group` stands on each partition of `topics`.
pub fn group_offsets(
    transport: &KafkaTransport,
    group: &str,
    topics: &[String],
) -> Result<Vec<PartitionOffsets>, OffsetsError> {
    let reader = group_reader(transport, group)?;
    read_offsets(transport, &reader, topics)
}

fn read_offsets(
    transport: &KafkaTransport,
    reader: &BaseConsumer,
    topics: &[String],
) -> Result<Vec<PartitionOffsets>, OffsetsError> {
    let partitions = transport.topic_partitions(TIMEOUT)?;
    let (mut all, mut firsts, mut ends) = (
        TopicPartitionList::new(),
        TopicPartitionList::new(),
        TopicPartitionList::new(),
    );
    for t in topics {
        let Some((_, n)) = partitions.iter().find(|(name, _)| name == t) else {
            return Err(OffsetsError::NoTopic(t.clone()));
        };
        for p in 0..*n as i32 {
            all.add_partition(t, p);
            // ListOffsets: a timestamp of -2 asks for the earliest offset, -1 for the end.
            firsts
                .add_partition_offset(t, p, Offset::Beginning)
                .map_err(classify)?;
            ends.add_partition_offset(t, p, Offset::End).map_err(classify)?;
        }
    }
    let committed = reader.committed_offsets(all.clone(), TIMEOUT).map_err(classify)?;
    let firsts = reader.offsets_for_times(firsts, TIMEOUT).map_err(classify)?;
    let ends = reader.offsets_for_times(ends, TIMEOUT).map_err(classify)?;
    let _ = reader.poll(Duration::ZERO);
    all.elements()
        .iter()
        .map(|e| {
            let (t, p) = (e.topic(), e.partition());
            let committed = match entry(&committed, t, p, "committed offset")? {
                Offset::Offset(o) => Some(o),
                Offset::Invalid => None,
                other => return Err(unreadable(t, p, format!("committed offset {other:?}"))),
            };
            Ok(PartitionOffsets {
                topic: t.to_owned(),
                partition: p,
                committed,
                earliest: exact(entry(&firsts, t, p, "earliest offset")?, t, p)?,
                latest: exact(entry(&ends, t, p, "latest offset")?, t, p)?,
            })
        })
        .collect()
}

/// The offset `list` holds for `topic`/`partition`, unless the broker answered that partition
/// with an error (librdkafka then leaves the offset asked for in place).
fn entry(list: &TopicPartitionList, topic: &str, partition: i32, what: &str) -> Result<Offset, OffsetsError> {
    let e = list
        .find_partition(topic, partition)
        .ok_or_else(|| unreadable(topic, partition, format!("no {what} in the answer")))?;
    e.error()
        .map_err(|err| unreadable(topic, partition, format!("{what}: {err}")))?;
    Ok(e.offset())
}

/// An offset that must be a position in the log.
fn exact(o: Offset, topic: &str, partition: i32) -> Result<i64, OffsetsError> {
    match o {
        Offset::Offset(o) => Ok(o),
        other => Err(unreadable(
            topic,
            partition,
            format!("the broker answered {other:?}"),
        )),
    }
}

fn unreadable(topic: &str, partition: i32, what: String) -> OffsetsError {
    OffsetsError::Unreadable {
        topic: topic.to_owned(),
        partition,
        what,
    }
}

/// Where `to` moves each partition of `now`: (topic, partition, new offset), in `now`'s order.
pub fn plan(
    transport: &KafkaTransport,
    group: &str,
    now: &[PartitionOffsets],
    to: ResetTo,
) -> Result<Vec<(String, i32, i64)>, OffsetsError> {
    let at_time = match to {
        ResetTo::Datetime(ms) => {
            let reader = group_reader(transport, group)?;
            let mut tpl = TopicPartitionList::new();
            for p in now {
                tpl.add_partition_offset(&p.topic, p.partition, Offset::Offset(ms))
                    .map_err(classify)?;
            }
            Some(reader.offsets_for_times(tpl, TIMEOUT).map_err(classify)?)
        }
        _ => None,
    };
    now.iter()
        .map(|p| {
            let found = match &at_time {
                None => None,
                Some(l) => match entry(l, &p.topic, p.partition, "offset for the time")? {
                    Offset::Offset(o) => Some(o),
                    // No record that late.
                    Offset::End => None,
                    other => {
                        return Err(unreadable(
                            &p.topic,
                            p.partition,
                            format!("offset for the time: {other:?}"),
                        ))
                    }
                },
            };
            Ok((p.topic.clone(), p.partition, target(p, to, found)))
        })
        .collect()
}

/// Where `to` moves one partition; `found` is the broker's answer for a datetime (none: no record
/// that late).
fn target(p: &PartitionOffsets, to: ResetTo, found: Option<i64>) -> i64 {
    let o = match to {
        ResetTo::Earliest => p.earliest,
        ResetTo::Latest => p.latest,
        ResetTo::Datetime(_) => found.unwrap_or(p.latest),
        ResetTo::ShiftBy(n) => p.committed.unwrap_or(p.earliest).saturating_add(n),
    };
    o.clamp(p.earliest, p.latest.max(p.earliest))
}

/// How many members `group` has, and its state, as the classic protocol's DescribeGroups tells;
/// `None` when the call fails. Advisory only: a group of the consumer protocol (KIP-848) shows
/// no members this way, and a group the coordinator is still loading may show none either.
pub fn members(transport: &KafkaTransport, group: &str) -> Result<Option<(usize, String)>, OffsetsError> {
    let reader = group_reader(transport, group)?;
    Ok(reader
        .fetch_group_list(Some(group), TIMEOUT)
        .ok()
        .and_then(|list| {
            list.groups()
                .iter()
                .find(|g| g.name() == group)
                .map(|g| (g.members().len(), g.state().to_owned()))
        }))
}

/// Refuses when `group` has members, as far as DescribeGroups tells ([`members`]): advisory, the
/// coordinator's refusal of the commit in [`reset`] is the guard.
pub fn ensure_stopped(transport: &KafkaTransport, group: &str) -> Result<(), OffsetsError> {
    match members(transport, group)? {
        Some((n, state)) if n > 0 => Err(OffsetsError::HasMembers {
            group: group.to_owned(),
            members: n,
            state,
        }),
        _ => Ok(()),
    }
}

/// Commits `offsets` as `group`'s, from outside the group: the coordinator refuses that while the
/// group has members. librdkafka's synchronous commit waits for the coordinator without a bound
/// of its own.
pub fn reset(
    transport: &KafkaTransport,
    group: &str,
    offsets: &[(String, i32, i64)],
) -> Result<(), OffsetsError> {
    let reader = group_reader(transport, group)?;
    let mut tpl = TopicPartitionList::new();
    for (t, p, o) in offsets {
        tpl.add_partition_offset(t, *p, Offset::Offset(*o))
            .map_err(classify)?;
    }
    reader.commit(&tpl, CommitMode::Sync).map_err(|e| {
        let has_members = matches!(
            e.rdkafka_error_code(),
            Some(
                RDKafkaErrorCode::UnknownMemberId
                    | RDKafkaErrorCode::IllegalGeneration
                    | RDKafkaErrorCode::RebalanceInProgress
                    | RDKafkaErrorCode::StaleMemberEpoch
                    | RDKafkaErrorCode::FencedMemberEpoch
            )
        );
        if has_members {
            OffsetsError::Refused {
                group: group.to_owned(),
                source: e,
            }
        } else {
            OffsetsError::Transport(classify(e))
        }
    })
}

/// Parses `2026-11-25T21:00:00Z`, `2026-11-25T22:00:00.250+01:00` (RFC 3339, by the `time`
/// crate) or milliseconds since the epoch, into milliseconds since the epoch (not before 1970).
pub fn parse_datetime(s: &str) -> Result<i64, String> {
    let bad = || format!("'{s}' is not a time: give RFC 3339 (2026-11-25T21:00:00Z) or ms since the epoch");
    if !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()) {
        return s.parse::<i64>().map_err(|_| bad());
    }
    let at =
        time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).map_err(|_| bad())?;
    let ms = at.unix_timestamp_nanos().div_euclid(1_000_000);
    if ms < 0 {
        return Err(format!("'{s}' is before 1970"));
    }
    i64::try_from(ms).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(committed: Option<i64>, earliest: i64, latest: i64) -> PartitionOffsets {
        PartitionOffsets {
            topic: "t".into(),
            partition: 0,
            committed,
            earliest,
            latest,
        }
    }

    #[test]
    fn targets_stay_within_the_log() {
        let x = p(Some(50), 10, 100);
        assert_eq!(target(&x, ResetTo::Earliest, None), 10);
        assert_eq!(target(&x, ResetTo::Latest, None), 100);
        assert_eq!(target(&x, ResetTo::ShiftBy(-30), None), 20);
        assert_eq!(target(&x, ResetTo::ShiftBy(-300), None), 10);
        assert_eq!(target(&x, ResetTo::ShiftBy(30), None), 80);
        assert_eq!(target(&x, ResetTo::ShiftBy(i64::MAX), None), 100);
        assert_eq!(target(&x, ResetTo::Datetime(0), Some(42)), 42);
        assert_eq!(
            target(&x, ResetTo::Datetime(0), None),
            100,
            "no record that late: the end"
        );
        // Never committed: a shift counts from the log's start.
        assert_eq!(target(&p(None, 10, 100), ResetTo::ShiftBy(5), None), 15);
        assert_eq!(p(None, 10, 100).lag(), 90);
        assert_eq!(x.lag(), 50);
    }

    #[test]
    fn datetimes_parse_as_rfc3339_or_epoch_ms() {
        assert_eq!(parse_datetime("0"), Ok(0));
        assert_eq!(parse_datetime("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(parse_datetime("2026-11-25T21:00:00Z"), Ok(1_795_640_400_000));
        assert_eq!(
            parse_datetime("2026-11-25T22:00:00.25+01:00"),
            Ok(1_795_640_400_250)
        );
        assert_eq!(
            parse_datetime("2000-02-29T12:30:15.001-00:30"),
            Ok(951_829_215_001)
        );
        for bad in [
            "yesterday",
            "-5",
            "2026-11-25",
            "2026-13-01T00:00:00Z",
            "2026-02-29T00:00:00Z",
            "2026-11-25T-1:00:00Z",
            "+026-11-25T21:00:00Z",
            "2026-11-25T21:00:00",
            "2026-11-25T21:00:00.Z",
            "2026-11-25T21:00:00+99:00",
            "2026-11-25T21:00:00€123",
            "2026-11-25T21:00:00+01€",
            "1969-12-31T23:59:59Z",
        ] {
            assert!(parse_datetime(bad).is_err(), "{bad}");
        }
    }
}
