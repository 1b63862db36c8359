//! The checks of what Kafka's log carries besides the services' records (issue 25): batches no
//! client can decode, aborted transactions, partitions that must not wait for one another, and
//! what a topic made again takes with it.

use std::collections::{BTreeMap, BTreeSet};

use pizza::config::{ServiceName, SysConfig, Topics};
use pizza::hostile;

use super::{Invariant, Shared};
use crate::broker::Broker;
use crate::node::BrokerShared;
use crate::scenario::{FaultKind, Scenario};

/// How a dead-letter note of a record no client could read begins its reason (the worker's).
pub(super) const UNREADABLE_REASON: &str = "the record cannot be read";

/// Where a record sits: topic, partition, offset.
type Position = (String, i32, i64);

/// Orders whose history a topic made again took with it (their pizza-ordered, their statuses,
/// deliver's facts): what the customers were told of them, and their delivery, can no longer be
/// held against the log. Forgotten after the faults healed, before the checks that use them.
pub(super) fn forget_gone(bs: &BrokerShared, shared: &Shared) {
    let gone = bs.lock().gone.clone();
    if gone.is_empty() {
        return;
    }
    for set in [&shared.accepted, &shared.not_placed, &shared.unconfirmed] {
        let mut orders = set.lock().expect("orders");
        let before = orders.len();
        orders.retain(|o, _| !gone.contains(o.as_bytes()));
        for _ in orders.len()..before {
            shared.exempted(Invariant::AllAcceptedDelivered);
        }
    }
}

/// Every offset of a batch no client can decode, on the topics the shop reads.
pub(super) fn unreadable_in_log(b: &Broker, topics: &Topics) -> BTreeSet<Position> {
    let mut out = BTreeSet::new();
    for topic in hostile::consumed_topics(topics) {
        for (p, part) in b.partitions(topic).iter().enumerate() {
            for s in part.slots().iter().filter(|s| !s.batch.decodable) {
                out.insert((topic.to_owned(), p as i32, s.offset));
            }
        }
    }
    out
}

/// Every record no client can decode was given up on by every service that reads its topic,
/// with a note of it (`dead` holds the notes found, `excused` the records whose every note the
/// dead-letter topic refused).
pub(super) fn check_unreadable(
    topics: &Topics,
    unreadable: &BTreeSet<Position>,
    dead: &BTreeSet<(Position, String)>,
    excused: &BTreeSet<(Position, String)>,
    shared: &Shared,
) {
    for at in unreadable {
        for service in topics.consumers_of(&at.0) {
            let key = (at.clone(), service.as_str().to_owned());
            if excused.contains(&key) && !dead.contains(&key) {
                shared.exempted(Invariant::UnreadableGivenUp);
                continue;
            }
            shared.checked(Invariant::UnreadableGivenUp, 1);
            if !dead.contains(&key) {
                shared.violate(
                    Invariant::UnreadableGivenUp,
                    None,
                    format!(
                        "{}/{}@{} cannot be decoded, and {service} left no note of it on {}",
                        at.0, at.1, at.2, topics.dlq
                    ),
                );
            }
        }
    }
}

/// An order of an aborted transaction never moves: no status of it on any topic, no drive.
pub(super) fn check_aborted(b: &Broker, topics: &Topics, drives: &BTreeMap<String, u64>, shared: &Shared) {
    let aborted = shared.aborted.lock().expect("aborted").clone();
    shared.checked(Invariant::AbortedNeverSeen, aborted.len() as u64);
    let downstream = [
        &topics.assembled,
        &topics.baked,
        &topics.delivered,
        &topics.pending,
        &topics.status,
        &topics.deliver_changelog,
    ];
    for topic in downstream {
        for (_, r) in b.log(topic).iter().flatten() {
            let key = String::from_utf8_lossy(r.key()).into_owned();
            if aborted.contains(&key) {
                shared.violate(
                    Invariant::AbortedNeverSeen,
                    Some(&key),
                    format!("an order of an aborted transaction reached {topic}"),
                );
            }
        }
    }
    for order in drives.keys().filter(|o| aborted.contains(*o)) {
        shared.violate(
            Invariant::AbortedNeverSeen,
            Some(order),
            "an order of an aborted transaction was driven to a customer".into(),
        );
    }
}

/// With the scenario's `isolation` bound: every record a group reads (and every record given up
/// on) was finished by that group within the bound of its append (the broker's clock and the
/// simulation's agree), but where a `hold` fault kept that partition number from the group's
/// service: its records wait for the partition's own trouble, and nothing else may.
pub(super) fn check_isolation(
    b: &Broker,
    sc: &Scenario,
    sys: &SysConfig,
    finished: &pizza::probes::Finished,
    shared: &Shared,
) {
    let Some(bound) = sc.isolation else { return };
    let bound_ms = bound.as_millis() as i64;
    let start = shared.start_ms.load(std::sync::atomic::Ordering::Relaxed) as i64;
    // Per service, the partition numbers a hold kept from it, and when.
    let holds: Vec<(ServiceName, Option<i32>, (i64, i64))> = sc
        .faults
        .iter()
        .filter_map(|f| match &f.kind {
            FaultKind::Hold {
                partition, service, ..
            } => Some((*service, *partition, f.window(start))),
            _ => None,
        })
        .collect();
    for service in ServiceName::CONSUMERS {
        let group = sys.group(service);
        for topic in sys.topics.consumed_by(service) {
            let held = |p: i32, at: i64| {
                holds.iter().any(|(svc, hp, (from, to))| {
                    *svc == service
                        && hp.is_none_or(|hp| hp == p)
                        && at <= *to + bound_ms
                        && *from <= at + bound_ms
                })
            };
            let found =
                framework_sim::checks::late_records(b, finished, (group, topic), (start, bound), held);
            shared.checked(Invariant::PartitionsIsolated, found.checked);
            for _ in 0..found.excused {
                shared.exempted(Invariant::PartitionsIsolated);
            }
            for what in found.late {
                shared.violate(Invariant::PartitionsIsolated, None, what);
            }
        }
    }
}
