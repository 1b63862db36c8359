//! The invariants every application's simulation checks the same way, read from the broker's own
//! state: they come with the framework, and an application adds its own beside them.

use framework::probes::Finished;

use crate::broker::Broker;

/// Commits follow work: no group committed past an offset none of its members finished (a
/// committed record no member handled is lost for good at the next restart). `finished` is what
/// the worker reported through `framework::probes::finished`. Returns how many offsets were
/// checked and, per group and partition that broke it, what went wrong.
///
/// Only offsets that hold work count: a record the group is given, or one of a batch no client
/// can decode (given up on, which is finished too). Markers, aborted records and gaps hold none.
pub fn commits_follow_work(b: &Broker, finished: &Finished) -> (u64, Vec<String>) {
    let mut checked = 0;
    let mut broken = Vec::new();
    for (group, topic, p, committed) in b.committed() {
        let at = (group.clone(), topic.clone(), p);
        let done = finished.iter().find(|(k, _)| *k == at).map(|(_, d)| d);
        let work: Vec<i64> = b
            .partitions(&topic)
            .get(p as usize)
            .map(|part| {
                part.slots()
                    .iter()
                    .take_while(|s| s.offset < committed)
                    .filter(|s| s.delivered().is_some() || !s.batch.decodable)
                    .map(|s| s.offset)
                    .collect()
            })
            .unwrap_or_default();
        checked += work.len() as u64;
        let first_unfinished = work
            .iter()
            .copied()
            .find(|o| !done.is_some_and(|d| d.contains_key(o)));
        if let Some(o) = first_unfinished {
            broken.push(format!(
                "{group} committed {topic}/{p} up to {committed}, but no member finished offset {o}"
            ));
        }
    }
    (checked, broken)
}

/// Every group committed the whole log: per partition of `topics` that `group` reads, how far
/// its commit is behind the log's end (an empty list when it is at the end everywhere; a commit
/// past the end is of a former log, and owes the whole partition: [`framework::transport::commits::uncommitted`]).
pub fn behind(b: &Broker, group: &str, topics: &[&str]) -> Vec<(String, i32, i64)> {
    let committed = b.committed();
    let mut out = Vec::new();
    for topic in topics {
        for (p, part) in b.partitions(topic).iter().enumerate() {
            let p = p as i32;
            let at = committed
                .iter()
                .find(|(g, t, q, _)| g == group && t == topic && *q == p)
                .map_or(0, |c| c.3);
            let owed = framework::transport::commits::uncommitted(part.end(), at);
            if owed > 0 {
                out.push(((*topic).to_owned(), p, owed));
            }
        }
    }
    out
}

/// Records appended this early in a run may wait for the groups to form.
pub const STARTUP_MS: i64 = 5_000;

/// What [`late_records`] found of one topic: records checked, records excused, and each record
/// finished late (or never).
#[derive(Debug, Default)]
pub struct Lateness {
    pub checked: u64,
    pub excused: u64,
    pub late: Vec<String>,
}

/// The records of `topic` that `group` finished later than `bound` after their append (by the
/// broker's clock, which the simulation's agrees with), or never: records appended from
/// [`STARTUP_MS`] after `start_ms` on, every record the group reads or gives up on (not those of
/// aborted transactions), but the ones `excused(partition, appended_ms)` names.
pub fn late_records(
    b: &Broker,
    finished: &Finished,
    (group, topic): (&str, &str),
    (start_ms, bound): (i64, std::time::Duration),
    excused: impl Fn(i32, i64) -> bool,
) -> Lateness {
    let bound_ms = bound.as_millis() as i64;
    let mut found = Lateness::default();
    for (p, part) in b.partitions(topic).iter().enumerate() {
        let p = p as i32;
        let done = finished
            .iter()
            .find(|((g, t, q), _)| g == group && t == topic && *q == p)
            .map(|(_, d)| d);
        for s in part.slots() {
            let crate::log::Entry::Record(r) = &s.entry else {
                continue;
            };
            let at = r.timestamp_ms;
            if (s.batch.decodable && s.batch.aborted) || at < start_ms + STARTUP_MS {
                continue;
            }
            if excused(p, at) {
                found.excused += 1;
                continue;
            }
            found.checked += 1;
            let took = done.and_then(|d| d.get(&s.offset)).map(|f| f - at);
            if took.is_none_or(|t| t > bound_ms) {
                let took = took.map_or("never".to_owned(), |t| {
                    format!("{:.1}s after its append", t as f64 / 1000.0)
                });
                let bound = bound.as_secs_f64();
                found.late.push(format!(
                    "{group} finished {topic}/{p}@{} {took} (bound {bound}s)",
                    s.offset
                ));
            }
        }
    }
    found
}

/// Partitions isolated: in a run whose only faults are holds (`plan`, from `start_ms`), every
/// record of each group's topics was finished by that group within `bound` of its append, but
/// where a hold named that group and partition number (of any topic: a partition's state is
/// co-partitioned with its input): its records wait for the partition's own trouble, and nothing
/// else may. Returns what broke it; nothing for a run with other faults.
pub fn isolated(
    b: &Broker,
    groups: &[(String, Vec<String>)],
    (plan, start_ms): (&[(std::time::Duration, crate::world::Fault)], i64),
    bound: std::time::Duration,
    finished: &Finished,
) -> Vec<String> {
    use crate::world::Fault;
    // Per hold: the group, the partition number, and when it held (epoch ms).
    let holds: Option<Vec<(&str, i32, i64, i64)>> = plan
        .iter()
        .map(|(at, f)| match f {
            Fault::Hold {
                group,
                partition,
                lasting,
                ..
            } => {
                let from = start_ms + at.as_millis() as i64;
                Some((
                    group.as_str(),
                    *partition,
                    from,
                    from + lasting.as_millis() as i64,
                ))
            }
            _ => None,
        })
        .collect();
    let Some(holds) = holds else {
        return Vec::new();
    };
    let bound_ms = bound.as_millis() as i64;
    let mut broken = Vec::new();
    for (group, topics) in groups {
        // A held partition's records wait for the hold, and then for the backlog it built: one
        // at most as long as the hold itself, where the group handles records at least twice as
        // fast as they come (what an isolation bound promises).
        let held = |p: i32, at: i64| {
            holds.iter().any(|(g, hp, from, to)| {
                g == group && *hp == p && at <= to + (to - from) + bound_ms && *from <= at + bound_ms
            })
        };
        for topic in topics {
            let found = late_records(b, finished, (group, topic), (start_ms, bound), held);
            broken.extend(found.late);
        }
    }
    broken
}
