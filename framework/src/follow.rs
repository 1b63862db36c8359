//! A view that follows the whole log on its own: every partition of its topics, read outside any
//! consumer group and folded into a store the application gives ([`LogView`]: what a record
//! changes, and the store's transactions). Any number of instances each keep one, and each sees
//! every key.
//!
//! - **Where it starts.** The view's file records, in the transaction of each batch, the offset
//!   it read each partition to; a restart reads on from there (the file is the snapshot). A new
//!   file (or one whose disk was lost) reads the log from its start, at a rebuild's pace, into a
//!   view beside it ([`LogView::scratch`]), and takes that whole once it reached the
//!   log's end as it was when it began: a reader sees the empty view, then the whole one, never a
//!   key moving back through its history. The log's retention must keep what no snapshot covers.
//! - **A new log is a new history.** A topic that is another log now than the one the view read
//!   (a topic made again, a new cluster: [`crate::transport::Transport::log_id`], asked every
//!   10 s and whenever a position went back) is folded anew from its start, aside, the same way.
//! - **Read your own writes.** [`ViewFollower::reached`] waits until the fold has passed a given
//!   offset: a command side waits (bounded) for the offset its record was acknowledged at before
//!   it shows the client the result.
//! - **Partitions added later** are not followed until a restart.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, Notify};

use crate::error::Report;
use crate::mutants::{self, Mutant};
use crate::transport::{end_offsets_within, Fetched, Reader, Record, Transport, TransportError, ENDS_WITHIN};

/// Most records one batch of a first fold reads before it is folded.
pub const READ_BATCH: usize = 1000;

/// A view a [`ViewFollower`] keeps up with the log: what a record changes, and a store that keeps,
/// with its rows, how far it read each partition (so a restart reads on from there).
pub trait LogView: Send + Sync + Sized + 'static {
    /// What the fold needs beside the view (the application's configuration).
    type Context: Send + Sync + 'static;
    /// What one record changes.
    type Update: Send + 'static;
    type Error: std::error::Error + Send + Sync + 'static;

    /// What `rec` changes, or `None` when the view passes over it (a malformed record is its
    /// consumer group's to dead-letter, not a view's). `partitions`: its topic's partition count,
    /// to tell a record off its key's partition.
    fn update(ctx: &Self::Context, rec: &Record, partitions: Option<i32>) -> Option<Self::Update>;

    /// The next offset to read, per topic and partition, as the last batch left it.
    fn followed(&self) -> Result<Vec<(String, i32, i64)>, Self::Error>;

    /// Folds `updates` in, in order, and records `read_to` (topic, partition, next offset), in
    /// one transaction.
    fn apply_at(
        &self,
        ctx: &Self::Context,
        updates: &[Self::Update],
        read_to: &[(String, i32, i64)],
    ) -> Result<(), Self::Error>;

    /// A view of the same kind kept aside, for a first fold of the log that readers must not see
    /// half of (this view has read nothing yet: a new file, its disk lost; or what it read is
    /// another log), with what an earlier first fold left in it (it records how far it read, so
    /// that fold goes on), or empty when `fresh`. Filled, it is taken whole by
    /// [`LogView::take_from`].
    fn scratch(&self, fresh: bool) -> Result<Self, Self::Error>;

    /// Which log each topic it read was (`Transport::log_id`), where that was known.
    fn logs(&self) -> Result<Vec<(String, String)>, Self::Error>;

    /// Records which log each of `logs`' topics is.
    fn set_logs(&self, logs: &[(String, String)]) -> Result<(), Self::Error>;

    /// Replaces every row, and how far the log was read, with `scratch`'s, in one transaction (a
    /// reader sees the view before or after, never a key half way back through its history), and
    /// discards `scratch`. The follower records which logs the view read ([`LogView::set_logs`])
    /// right after.
    fn take_from(&self, scratch: Self) -> Result<(), Self::Error>;
}

/// How long the follower waits after a failure before it tries again.
const RETRY_PAUSE: Duration = Duration::from_secs(1);

/// An attempt that ran this long before it failed was working: the failing counts from then.
const WORKED_FOR: Duration = Duration::from_secs(10);

/// How long a first fold waits for a record before it asks the log again where its partitions
/// start and end (retention may have emptied one, an unclean election cut one back).
const FIRST_FOLD_STALL: Duration = Duration::from_secs(30);

/// Retriable read errors in a row a reader's task rides out, [`RETRY_PAUSE`] apart, before it
/// hands the error on.
const READ_RETRIES: u32 = 30;

#[derive(Debug, Default)]
struct Progress {
    /// Per (topic, partition): the next offset to fold.
    next: HashMap<(String, i32), i64>,
    /// Why the follower is not reading now (it retries), for the health check and the log.
    trouble: Option<String>,
    /// Since when its attempts have failed one after another (none ran [`WORKED_FOR`]).
    failing_since: Option<tokio::time::Instant>,
    /// While a first fold runs (the view had read nothing, or other logs): the records folded
    /// aside so far. Until it is taken the view shows nothing of the log.
    first_fold: Option<usize>,
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
    /// Starts following `topics` into `view`, folding with `ctx` (call within a runtime).
    pub fn start<T: Transport, V: LogView>(
        transport: T,
        topics: Vec<String>,
        ctx: Arc<V::Context>,
        view: Arc<V>,
    ) -> ViewFollower {
        let shared = Arc::new(Shared {
            progress: Mutex::new(Progress::default()),
            changed: Notify::new(),
        });
        let task = tokio::spawn(follow(transport, (Arc::new(topics), ctx), view, shared.clone()));
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

    /// What is wrong with the view for `/health-check`: a first fold still under way (the view
    /// shows nothing of the log yet), or attempts failing for longer than `grace`.
    pub fn problems(&self, grace: Duration) -> Option<String> {
        if let Some(n) = self.shared.lock().first_fold {
            return Some(format!(
                "folding the log from its start ({n} records so far); nothing of it is shown until it is done"
            ));
        }
        let (failing, why) = self.failing_for()?;
        (failing > grace).then(|| format!("not following the log for {}s: {why}", failing.as_secs()))
    }

    /// How long the follower has been failing, attempt after attempt, and why, when it is.
    pub fn failing_for(&self) -> Option<(Duration, String)> {
        let p = self.shared.lock();
        p.trouble
            .clone()
            .zip(p.failing_since)
            .map(|(why, since)| (since.elapsed(), why))
    }
}

impl Drop for ViewFollower {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Follows until dropped: each failure (the broker away, the file busy) is logged and tried
/// again from where the view's file says.
async fn follow<T: Transport, V: LogView>(transport: T, fold: Fold<V>, view: Arc<V>, shared: Arc<Shared>) {
    loop {
        let started = tokio::time::Instant::now();
        let why = match follow_once(&transport, &fold, &view, &shared).await {
            Ok(never) => match never {},
            Err(why) => why,
        };
        tracing::warn!(error = %why, "the view stopped following the log; trying again");
        {
            let mut p = shared.lock();
            p.trouble = Some(why);
            p.first_fold = None;
            // An attempt that worked fails from now on (not from when it began: one that ran
            // for minutes would count as failing for minutes at once); one that never worked
            // fails from when the failing began.
            if started.elapsed() >= WORKED_FOR {
                p.failing_since = Some(tokio::time::Instant::now());
            } else if p.failing_since.is_none() {
                p.failing_since = Some(started);
            }
        }
        tokio::time::sleep(RETRY_PAUSE).await;
    }
}

/// The topics a view folds, and what the fold needs beside the view.
type Fold<V> = (Arc<Vec<String>>, Arc<<V as LogView>::Context>);

/// Reads its topics from where the view left off and folds them in, batch by batch. A view that
/// has read nothing yet (a new file, its disk lost), or whose topics are other logs now than the
/// ones it read (a topic made again, a new cluster), is first built aside from the log's start to
/// its end as it was then, and taken whole: a reader never sees it half way back through the log.
/// While it follows, a topic that becomes another log ends this attempt (the next one starts over).
async fn follow_once<T: Transport, V: LogView>(
    transport: &T,
    fold: &Fold<V>,
    view: &Arc<V>,
    shared: &Shared,
) -> Result<std::convert::Infallible, String> {
    let topics: Vec<&str> = fold.0.iter().map(String::as_str).collect();
    // The view's own file first: a view that cannot be read fails at once, broker or not.
    let known = view.logs().map_err(|e| Report(&e).to_string())?;
    let ids = log_ids(transport, &topics).await?;
    tokio::select! {
        followed = follow_logs(transport, fold, view, shared, (&known, &ids)) => followed,
        why = log_changed(transport, &ids) => Err(why),
    }
}

/// How often a following view asks whether its topics are still the logs it reads.
const LOG_CHECK: Duration = Duration::from_secs(10);

/// Which log each topic is now (`Transport::log_id`), those the broker names.
async fn log_ids<T: Transport>(transport: &T, topics: &[&str]) -> Result<Vec<(String, String)>, String> {
    let mut ids = Vec::with_capacity(topics.len());
    for topic in topics {
        let id = transport
            .log_id(topic)
            .await
            .map_err(|e| format!("which log {topic} is: {}", Report(&e)))?;
        ids.extend(id.map(|id| ((*topic).to_owned(), id)));
    }
    Ok(ids)
}

/// The topics of `known` whose log is another one now than `known` says.
fn other_logs<'a>(known: &LogIds, now: &'a LogIds) -> Vec<&'a str> {
    if mutants::on(Mutant::NewLogNotNoticed) {
        return Vec::new();
    }
    now.iter()
        .filter(|(t, id)| {
            known
                .iter()
                .any(|(k, was)| k == t && crate::transport::other_log(was, id))
        })
        .map(|(t, _)| t.as_str())
        .collect()
}

/// Resolves, saying which, once a topic of `ids` is another log (asked every [`LOG_CHECK`]; an
/// answer that does not come is asked again next time).
async fn log_changed<T: Transport>(transport: &T, ids: &LogIds) -> String {
    let topics: Vec<&str> = ids.iter().map(|(t, _)| t.as_str()).collect();
    loop {
        tokio::time::sleep(LOG_CHECK).await;
        let Ok(now) = log_ids(transport, &topics).await else {
            continue;
        };
        let changed = other_logs(ids, &now);
        if !changed.is_empty() {
            return format!(
                "{} became another log (made again, or a new cluster)",
                changed.join(" and ")
            );
        }
    }
}

/// Which log each topic is: (topic, `Transport::log_id`), for those the broker names.
type LogIds = [(String, String)];

/// Where a view starts on the logs `ids` names, given the logs it `known`s it read: the scratch
/// view to fold first (when it has read nothing, or read other logs), and the next offset to
/// read per partition.
#[allow(clippy::type_complexity)]
fn starting_point<V: LogView>(
    view: &V,
    (known, ids): (&LogIds, &LogIds),
) -> Result<(Option<V>, HashMap<(String, i32), i64>, bool), String> {
    let report = |e: &(dyn std::error::Error + 'static)| Report(e).to_string();
    let new_logs = other_logs(known, ids);
    if !new_logs.is_empty() {
        tracing::warn!(topics = ?new_logs, "the view read other logs than these topics are now: folding them from their start");
    }
    let read = match new_logs.is_empty() {
        true => view.followed().map_err(|e| report(&e))?,
        false => Vec::new(),
    };
    // A view that has read nothing is folded aside first: into its scratch file, from where that
    // file's own fold left off (an attempt that failed, a process that crashed, goes on), unless
    // that fold was of other logs.
    let scratch = if read.is_empty() && !mutants::on(Mutant::EmptyViewNotRebuilt) {
        let s = view
            .scratch(false)
            .map_err(|e| format!("a new view: {}", report(&e)))?;
        let s_logs = s.logs().map_err(|e| report(&e))?;
        let same = ids.iter().all(|id| s_logs.contains(id));
        let s = if !other_logs(&s_logs, ids).is_empty() || (!new_logs.is_empty() && !same) {
            view.scratch(true)
                .map_err(|e| format!("a new view: {}", report(&e)))?
        } else {
            s
        };
        s.set_logs(ids).map_err(|e| report(&e))?;
        Some(s)
    } else {
        view.set_logs(ids).map_err(|e| report(&e))?;
        None
    };
    let resume = match &scratch {
        Some(s) => s.followed().map_err(|e| report(&e))?,
        None => read,
    }
    .into_iter()
    .map(|(t, p, n)| ((t, p), n))
    .collect();
    Ok((scratch, resume, !new_logs.is_empty()))
}

/// [`follow_once`] on the logs `ids` names.
async fn follow_logs<T: Transport, V: LogView>(
    transport: &T,
    fold: &Fold<V>,
    view: &Arc<V>,
    shared: &Shared,
    logs: (&LogIds, &LogIds),
) -> Result<std::convert::Infallible, String> {
    let topics: Vec<&str> = fold.0.iter().map(String::as_str).collect();
    let report = |e: &(dyn std::error::Error + 'static)| Report(e).to_string();
    let (scratch, resume, new_logs) = starting_point(view.as_ref(), logs)?;
    // Per partition: where the reading starts, and the end it had then.
    let mut starts: HashMap<(String, i32), (i64, i64)> = HashMap::new();
    let mut readers = Vec::with_capacity(topics.len());
    for topic in topics {
        let ends = end_offsets_within(transport, topic, ENDS_WITHIN)
            .await
            .map_err(|e| format!("partitions of {topic}: {}", report(&e)))?;
        let mut reader = transport
            .reader(topic)
            .await
            .map_err(|e| format!("reading {topic}: {}", report(&e)))?;
        for (p, end) in (0..).zip(ends) {
            // A view with nothing read starts at the log's start (at its end under the mutant,
            // as the status service did before issue 13).
            let unread = if mutants::on(Mutant::EmptyViewNotRebuilt) {
                end
            } else {
                0
            };
            let mut from = resume.get(&(topic.to_owned(), p)).copied().unwrap_or(unread);
            if from > end {
                // The log is shorter than the view read, and the broker names no logs to tell
                // (a topic made again, a new cluster): read it from its start; what the view
                // holds from before stays.
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
                .map_err(|e| format!("following {topic}/{p}: {}", report(&e)))?;
            starts.insert((topic.to_owned(), p), (from, end));
        }
        readers.push(reader);
    }
    shared.lock().trouble = None;
    let mut batches = Pumps::start(readers);
    // Each topic's partition count: a record off its key's partition is passed over.
    let mut counts: HashMap<String, i32> = HashMap::new();
    for (t, p) in starts.keys() {
        let n = counts.entry(t.clone()).or_default();
        *n = (*n).max(p + 1);
    }
    let counts = Arc::new(counts);
    if let Some(scratch) = scratch {
        shared.lock().first_fold = Some(0);
        let scratch = Arc::new(scratch);
        let folding = Folding {
            ctx: fold.1.clone(),
            counts: counts.clone(),
            shared,
        };
        let read_to = first_fold(transport, &folding, &scratch, &mut batches, &starts).await?;
        let scratch =
            Arc::try_unwrap(scratch).map_err(|_| "the view folded aside is still in use".to_owned())?;
        view.take_from(scratch)
            .map_err(|e| format!("taking the new view: {}", report(&e)))?;
        // Which logs the view now holds, whether or not its `take_from` carried the scratch's
        // record of them: a view that forgot would never notice its logs made again (the
        // testing application's board did, until this).
        view.set_logs(logs.1)
            .map_err(|e| format!("recording which logs the view read: {}", report(&e)))?;
        {
            let mut p = shared.lock();
            p.first_fold = None;
            if new_logs {
                // What was read of the old logs says nothing of the new ones.
                p.next.clear();
            }
        }
        moved_on(shared, read_to);
    } else {
        moved_on(shared, starts.into_iter().map(|((t, p), (from, _))| (t, p, from)));
    }
    loop {
        let fetched = batches.next().await?;
        went_back(&fetched)?;
        let read_to = fold_off((&fold.1, &counts), view, fetched).await?;
        moved_on(shared, read_to);
    }
}

/// What a first fold needs besides its readers: what the fold needs beside the view, each
/// topic's partition count, and where it reports how far it got.
struct Folding<'a, C> {
    ctx: Arc<C>,
    counts: Arc<HashMap<String, i32>>,
    shared: &'a Shared,
}

/// [`fold_batch`] off the runtime's worker threads (SQLite's work, and its sync, block): a web
/// app's requests never wait behind its view's fold (issue 25, defect 8). Then the disk's time,
/// in the simulation.
async fn fold_off<V: LogView>(
    (ctx, counts): (&Arc<V::Context>, &Arc<HashMap<String, i32>>),
    view: &Arc<V>,
    fetched: Fetched,
) -> Result<Vec<(String, i32, i64)>, String> {
    let (ctx, counts, view) = (ctx.clone(), counts.clone(), view.clone());
    let read_to =
        crate::blocking::off_runtime(move || fold_batch((&*ctx, &counts), view.as_ref(), &fetched)).await;
    crate::probes::disk_io().await;
    read_to
}

/// An error when a partition's position went back to the log's start: the view read another
/// log there (this attempt ends; the next one asks which logs the topics are now).
fn went_back(fetched: &Fetched) -> Result<(), String> {
    match fetched.restarted.first() {
        Some((t, p)) if !mutants::on(Mutant::NewLogNotNoticed) => Err(format!(
            "{t}/{p} went back to its start: the log ended before where the view was"
        )),
        _ => Ok(()),
    }
}

/// Folds the log into `scratch` until every partition reached the end it had at `starts`; returns
/// how far it read each. A partition that brings nothing for [`FIRST_FOLD_STALL`] is asked again
/// where it starts and ends: one emptied by retention, or cut back, is done where it now ends.
async fn first_fold<T: Transport, V: LogView>(
    transport: &T,
    folding: &Folding<'_, V::Context>,
    scratch: &Arc<V>,
    batches: &mut Pumps,
    starts: &HashMap<(String, i32), (i64, i64)>,
) -> Result<Vec<(String, i32, i64)>, String> {
    let mut next: HashMap<(String, i32), i64> =
        starts.iter().map(|(k, (from, _))| (k.clone(), *from)).collect();
    let mut goal: HashMap<(String, i32), i64> =
        starts.iter().map(|(k, (_, end))| (k.clone(), *end)).collect();
    let started = tokio::time::Instant::now();
    let mut folded = 0usize;
    while goal.iter().any(|(k, end)| next[k] < *end) {
        let Ok(records) = tokio::time::timeout(FIRST_FOLD_STALL, batches.next()).await else {
            for (k, end) in goal.iter_mut().filter(|(k, end)| next[*k] < **end) {
                let (low, high) = transport
                    .watermarks(&k.0, k.1)
                    .await
                    .map_err(|e| format!("where {}/{} starts and ends: {}", k.0, k.1, Report(&e)))?;
                // Nothing left to read below the end: the end is where it now stops.
                *end = if low >= (*end).min(high) {
                    next[k]
                } else {
                    (*end).min(high)
                };
            }
            continue;
        };
        let fetched = records?;
        went_back(&fetched)?;
        folded += fetched.records.len();
        let read_to = fold_off((&folding.ctx, &folding.counts), scratch, fetched).await?;
        for (t, p, n) in read_to {
            let was = next.entry((t, p)).or_default();
            *was = (*was).max(n);
        }
        folding.shared.lock().first_fold = Some(folded);
    }
    tracing::info!(
        records = folded,
        secs = started.elapsed().as_secs_f64(),
        "the view had read nothing: folded the log aside and took it whole"
    );
    Ok(next.into_iter().map(|((t, p), n)| (t, p, n)).collect())
}

/// Batches the follower is handed but has not folded yet, per reader: a bound on what it holds.
/// What has queued while a fold synced is folded together in the next, one sync for all.
const BATCHES_AHEAD: usize = 4;

/// Each reader read on a task of its own into one channel: the batches of every topic as they
/// come, and no read is ever cancelled half way (a read raced against another and dropped would
/// be asked again, and under the simulation leave its answer behind).
struct Pumps {
    batches: mpsc::Receiver<Result<Fetched, TransportError>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// A reader's failure that came after batches handed out with it: reported next.
    failed: Option<TransportError>,
    /// Most batches handed out at once (what the channel holds).
    most: usize,
}

impl Pumps {
    fn start<R: Reader>(readers: Vec<R>) -> Pumps {
        let (tx, batches) = mpsc::channel(BATCHES_AHEAD * readers.len().max(1));
        let tasks: Vec<_> = readers
            .into_iter()
            .map(|mut reader| {
                let tx = tx.clone();
                tokio::spawn(async move {
                    let mut retries = 0;
                    loop {
                        let got = reader.recv(READ_BATCH).await;
                        match &got {
                            Err(e) if e.is_retriable() && retries < READ_RETRIES => {
                                retries += 1;
                                tokio::time::sleep(RETRY_PAUSE).await;
                                continue;
                            }
                            _ => retries = 0,
                        }
                        let failed = got.is_err();
                        if tx.send(got).await.is_err() || failed {
                            return;
                        }
                    }
                })
            })
            .collect();
        Pumps {
            batches,
            most: BATCHES_AHEAD * tasks.len().max(1),
            tasks,
            failed: None,
        }
    }

    /// The next batch any reader read, with every batch queued behind it (each partition's
    /// records still in order).
    async fn next(&mut self) -> Result<Fetched, String> {
        let failed = |e: &TransportError| format!("reading the log: {}", Report(e));
        if let Some(e) = self.failed.take() {
            return Err(failed(&e));
        }
        let mut fetched = match self.batches.recv().await {
            Some(Ok(fetched)) => fetched,
            Some(Err(e)) => return Err(failed(&e)),
            None => return Err("the log's readers ended".into()),
        };
        for _ in 1..self.most {
            let Ok(more) = self.batches.try_recv() else {
                break;
            };
            match more {
                Ok(more) => fetched.extend(more),
                Err(e) => {
                    self.failed = Some(e);
                    break;
                }
            }
        }
        Ok(fetched)
    }
}

impl Drop for Pumps {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Records that the fold has read each (topic, partition) to the offset given, and wakes whoever
/// waits for it.
fn moved_on(shared: &Shared, read_to: impl IntoIterator<Item = (String, i32, i64)>) {
    {
        let mut progress = shared.lock();
        for (t, p, n) in read_to {
            let next = progress.next.entry((t, p)).or_default();
            *next = (*next).max(n);
        }
    }
    shared.changed.notify_waiters();
}

/// Folds one batch (records of its topics, in order per partition) into `view`; returns how
/// far it read each of their partitions: past its records, and to the readers' positions (past
/// transaction markers and records that cannot be read, which are never delivered).
fn fold_batch<V: LogView>(
    (ctx, counts): (&V::Context, &HashMap<String, i32>),
    view: &V,
    fetched: &Fetched,
) -> Result<Vec<(String, i32, i64)>, String> {
    let records = &fetched.records;
    // Malformed records are a consumer group's to dead-letter; a view passes over them, and over
    // a record off its key's partition, as its `update` says.
    let updates: Vec<_> = records
        .iter()
        .filter_map(|r| V::update(ctx, r, counts.get(&r.topic).copied()))
        .collect();
    let mut read_to: HashMap<(String, i32), i64> = HashMap::new();
    for r in records {
        let next = read_to.entry((r.topic.clone(), r.partition)).or_default();
        *next = (*next).max(r.offset + 1);
    }
    for u in &fetched.unreadable {
        static UNREADABLE: crate::throttle::Throttle = crate::throttle::Throttle::new();
        if let Some(held) = UNREADABLE.allow() {
            tracing::warn!(topic = %u.topic, partition = u.partition, offset = u.offset, error = %u.error, more_since = held, "a record that cannot be read: the view passes over it");
        }
    }
    if !mutants::on(Mutant::EndByLastRecord) {
        for (topic, p, at) in &fetched.positions {
            let next = read_to.entry((topic.clone(), *p)).or_default();
            if *at > *next {
                if *next > 0 {
                    // Past its last record: a marker, a gap or a record given up on.
                    crate::probes::hit(crate::probes::Probe::PositionPastRecords, "");
                }
                *next = *at;
            }
        }
    }
    let read_to: Vec<(String, i32, i64)> = read_to.into_iter().map(|((t, p), n)| (t, p, n)).collect();
    view.apply_at(ctx, &updates, &read_to)
        .map_err(|e| format!("folding into the view: {}", Report(&e)))?;
    Ok(read_to)
}

/// What a rebuild read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rebuilt {
    pub records: u64,
    /// Records the view passes over ([`LogView::update`] said `None`: what a consumer group would
    /// dead-letter).
    pub skipped: u64,
    /// Records that could not be read at all (a batch that cannot be decoded): passed over.
    pub unreadable: u64,
}

/// Why a rebuild failed.
#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error(transparent)]
    Read(#[from] crate::transport::ReadError),
    #[error("writing the rebuilt view")]
    Sink(#[source] crate::error::BoxError),
}

/// Updates applied per transaction while rebuilding.
pub const REBUILD_BATCH: usize = 1000;

/// How long a rebuild waits for the next record before it gives up.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Reads `topics`, one after another, up to their ends as they are now into `view` (which
/// should be empty), folded with `ctx` as a follower folds them, [`REBUILD_BATCH`] updates to a
/// transaction: an operator's rebuild of a view from the log, and a check that the live view is
/// the log's fold. It records no read positions: a follower of the rebuilt view folds the log
/// from its start.
pub async fn rebuild<T: Transport, V: LogView>(
    transport: &T,
    topics: &[&str],
    ctx: &V::Context,
    view: &V,
) -> Result<Rebuilt, RebuildError> {
    let apply = |batch: &[V::Update]| {
        view.apply_at(ctx, batch, &[])
            .map_err(|e| RebuildError::Sink(Box::new(e)))
    };
    let mut reader = crate::transport::ReadToEnd::open(transport, topics).await?;
    let mut stats = Rebuilt::default();
    // Records of one key arrive in order per topic; applying them in batches keeps that order and
    // commits once per batch instead of once per record.
    let mut batch = Vec::with_capacity(REBUILD_BATCH);
    while let Some(rec) = reader.next(transport, STALL_TIMEOUT).await? {
        stats.records += 1;
        match V::update(ctx, &rec, reader.partitions(&rec.topic)) {
            Some(u) => batch.push(u),
            None => stats.skipped += 1,
        }
        if batch.len() == REBUILD_BATCH {
            apply(&batch)?;
            batch.clear();
        }
    }
    apply(&batch)?;
    stats.unreadable = reader.unreadable.len() as u64;
    Ok(stats)
}
