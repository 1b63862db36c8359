//! A view that follows the whole log on its own: every partition of pizza-ordered and
//! pizza-status, read outside any consumer group and folded with the same [`super::view_update`]
//! and fold as the status service's. Each web instance keeps one, so any number of them each see
//! every order (issue 15, part 2); the status service stays the one group member that marks stuck
//! orders.
//!
//! - **Where it starts.** The view's file records, in the transaction of each batch, the offset
//!   it read each partition to; a restart reads on from there (the file is the snapshot). A new
//!   file reads the log from its start, at `pizza view rebuild`'s pace: the log's retention must
//!   keep what no snapshot covers.
//! - **Read your own writes.** [`ViewFollower::reached`] waits until the fold has passed a given
//!   offset: the web app waits (bounded) for the offset its pizza-ordered was acknowledged at
//!   before it shows the customer the order.
//! - **Partitions added later** are not followed until a restart (the shop's topics keep theirs).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use super::{view_update, FollowedView, REBUILD_BATCH};
use crate::config::SysConfig;
use crate::error::Report;
use crate::transport::{end_offsets_within, Reader, Record, Transport, ENDS_WITHIN};

/// How long the follower waits after a failure before it tries again.
const RETRY_PAUSE: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
struct Progress {
    /// Per (topic, partition): the next offset to fold.
    next: HashMap<(String, i32), i64>,
    /// Why the follower is not reading now (it retries), for the health check and the log.
    trouble: Option<String>,
}

struct Shared {
    progress: Mutex<Progress>,
    changed: Notify,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Progress> {
        self.progress.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The task that keeps a view up with the log; it stops when dropped.
pub struct ViewFollower {
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl ViewFollower {
    /// Starts following pizza-ordered and pizza-status into `view` (call within a runtime).
    pub fn start<T: Transport, V: FollowedView + Send + Sync + 'static>(
        transport: T,
        sys: Arc<SysConfig>,
        view: Arc<V>,
    ) -> ViewFollower {
        let shared = Arc::new(Shared {
            progress: Mutex::new(Progress::default()),
            changed: Notify::new(),
        });
        let task = tokio::spawn(follow(transport, sys, view, shared.clone()));
        ViewFollower { shared, task }
    }

    /// Whether the fold passed `offset` of `topic`/`partition` within `within`.
    pub async fn reached(&self, topic: &str, partition: i32, offset: i64, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        let key = (topic.to_owned(), partition);
        loop {
            let changed = self.shared.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.shared.lock().next.get(&key).is_some_and(|n| *n > offset) {
                return true;
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if tokio::time::timeout(left, changed).await.is_err() {
                return false;
            }
        }
    }

    /// Why the follower is not reading, when it is not.
    pub fn trouble(&self) -> Option<String> {
        self.shared.lock().trouble.clone()
    }
}

impl Drop for ViewFollower {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Follows until dropped: each failure (the broker away, the file busy) is logged and tried
/// again from where the view's file says.
async fn follow<T: Transport, V: FollowedView>(
    transport: T,
    sys: Arc<SysConfig>,
    view: Arc<V>,
    shared: Arc<Shared>,
) {
    loop {
        let why = match follow_once(&transport, &sys, view.as_ref(), &shared).await {
            Ok(never) => match never {},
            Err(why) => why,
        };
        tracing::warn!(error = %why, "the web app's view stopped following the log; trying again");
        shared.lock().trouble = Some(why);
        tokio::time::sleep(RETRY_PAUSE).await;
    }
}

/// Reads both topics from where the view left off and folds them in, batch by batch.
async fn follow_once<T: Transport, V: FollowedView>(
    transport: &T,
    sys: &SysConfig,
    view: &V,
    shared: &Shared,
) -> Result<std::convert::Infallible, String> {
    let topics = [sys.topics.ordered.as_str(), sys.topics.status.as_str()];
    let resume: HashMap<(String, i32), i64> = view
        .followed()
        .map_err(|e| Report(&e).to_string())?
        .into_iter()
        .map(|(t, p, n)| ((t, p), n))
        .collect();
    let mut readers = Vec::with_capacity(topics.len());
    for topic in topics {
        let ends = end_offsets_within(transport, topic, ENDS_WITHIN)
            .await
            .map_err(|e| format!("partitions of {topic}: {}", Report(&e)))?;
        let mut reader = transport
            .reader(topic)
            .await
            .map_err(|e| format!("reading {topic}: {}", Report(&e)))?;
        for (p, end) in (0..).zip(ends) {
            let mut from = resume.get(&(topic.to_owned(), p)).copied().unwrap_or(0);
            if from > end {
                // The log is shorter than the view read (the topic was made again, a new
                // cluster): read it from its start; what the view holds from before stays.
                tracing::warn!(
                    topic,
                    partition = p,
                    from,
                    end,
                    "the log ends before where the view left off: reading it from its start"
                );
                from = 0;
            }
            reader
                .follow(p, from)
                .map_err(|e| format!("following {topic}/{p}: {}", Report(&e)))?;
            shared.lock().next.entry((topic.to_owned(), p)).or_insert(from);
        }
        readers.push(reader);
    }
    shared.lock().trouble = None;
    let [ordered, status] = &mut readers[..] else {
        unreachable!("two topics");
    };
    loop {
        let records = tokio::select! {
            got = ordered.recv(REBUILD_BATCH) => got,
            got = status.recv(REBUILD_BATCH) => got,
        }
        .map_err(|e| format!("reading the log: {}", Report(&e)))?;
        fold_batch(sys, view, shared, &records)?;
    }
}

/// Folds one batch (records of one topic, in order per partition) and moves its partitions on.
fn fold_batch<V: FollowedView>(
    sys: &SysConfig,
    view: &V,
    shared: &Shared,
    records: &[Record],
) -> Result<(), String> {
    // Malformed records are the status service's to dead-letter; the view passes over them.
    let updates: Vec<_> = records.iter().filter_map(|r| view_update(sys, r).ok()).collect();
    let mut read_to: HashMap<(String, i32), i64> = HashMap::new();
    for r in records {
        let next = read_to.entry((r.topic.clone(), r.partition)).or_default();
        *next = (*next).max(r.offset + 1);
    }
    let read_to: Vec<(String, i32, i64)> = read_to.into_iter().map(|((t, p), n)| (t, p, n)).collect();
    view.apply_many_at(&sys.codes, &updates, &read_to)
        .map_err(|e| format!("folding into the view: {}", Report(&e)))?;
    {
        let mut progress = shared.lock();
        for (t, p, n) in read_to {
            let next = progress.next.entry((t, p)).or_default();
            *next = (*next).max(n);
        }
    }
    shared.changed.notify_waiters();
    Ok(())
}
