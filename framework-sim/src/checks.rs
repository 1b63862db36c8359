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
/// its commit is behind the log's end (an empty list when it is at the end everywhere).
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
            if at < part.end() {
                out.push(((*topic).to_owned(), p, part.end() - at));
            }
        }
    }
    out
}
