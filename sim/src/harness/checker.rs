//! The checker: the safety checks on the view while the faults happen (from the checker's own
//! node, as a reader of the SQLite view would), convergence after they heal, and the final checks
//! of the view against its rebuild and of the log itself (the broker's own state).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use madsim::runtime::NodeHandle;
use pizza::clock::{now_ms, TimeScale};
use pizza::config::{ServiceName, SysConfig, Topics};
use pizza::domain::{decode, StatusEvent, StatusOnly};
use pizza::error::Report;
use pizza::hostile::{self, Expect, Kind, TAG_HEADER};
use pizza::probes::{ProbeKind, ShopProbe};
use pizza::services::ServiceConfig;
use pizza::store::ViewStore;
use pizza::view::StatusRow;

use super::{log_checks, Invariant, Shared};
use crate::broker::{Broker, Stored};
use crate::node::{BrokerShared, SimTransport};
use crate::oracle::{self, ViewModel};
use crate::scenario::Scenario;

/// How often the checker reads the view.
const POLL_EVERY: Duration = Duration::from_millis(500);
/// Time allowed for a stuck mark to travel from the watchdog's produce into the view.
const MARK_SLACK_MS: i64 = 5_000;
/// How long after the checker's view shows a status the watchdog's own instance may still be
/// taking it into its view (its follower's fetch, a request timed out and sent again).
const FOLD_SLACK_MS: i64 = 5_000;
/// How often convergence is checked after the heal.
const CONVERGE_POLL: Duration = Duration::from_secs(1);

/// The checker's watch over the view: safety checks on every read.
pub(super) async fn watch_view(
    bs: Arc<BrokerShared>,
    path: PathBuf,
    sys: SysConfig,
    scale: TimeScale,
    shared: Arc<Shared>,
    faultless: bool,
) {
    let mut watch = Watch::new(&sys, scale, shared, faultless);
    // The view as last opened, with its file's inode: a power loss or a lost disk puts a new
    // file in its place, which is opened anew.
    let mut view: Option<(u64, ViewStore)> = None;
    // Whether a view was opened before: a later one replaces it.
    let mut opened = false;
    let mut changes = ChangeLog::default();
    // Which logs the view last said it folded: another set is a view folded anew from a topic
    // made again, whose orders' earlier statuses went with the old log.
    let mut logs: Option<Vec<(String, String)>> = None;
    // The rows of the last read, and the view's data version then: a view no service wrote to
    // since is not read again (the watch still ages its orders).
    let mut last: Option<(i64, Vec<StatusRow>)> = None;
    loop {
        tokio::time::sleep(POLL_EVERY).await;
        let inode = inode_of(&path);
        if inode.is_none() {
            // The file is gone (a lost disk): a read of the unlinked one would look current.
            view = None;
        }
        if inode.is_some() && view.as_ref().map(|(i, _)| *i) != inode {
            if std::mem::replace(&mut opened, true) {
                // A new file: the status service rebuilt its view, and ages every order from
                // then (it cannot know when it first saw statuses it no longer holds).
                watch.restart_ages(now_ms());
            }
            view = ViewStore::open_read_only(&path)
                .ok()
                .zip(inode)
                .map(|(v, i)| (i, v));
            last = None;
        }
        let Some((_, v)) = &view else { continue };
        if let Ok(now_logs) = v.logs() {
            // A view of logs that are gone (a topic made again, the new log not yet folded and
            // taken) shows what no watchdog can mark there any more: its marks go to the new log.
            // Its orders are aged from when it folds the logs the topics are now.
            let gone = {
                let b = bs.lock();
                now_logs.iter().any(|(t, id)| b.log_id(t).as_ref() != Some(id))
            };
            if gone {
                watch.restart_ages(now_ms());
            }
            if logs
                .as_ref()
                .is_some_and(|was| !was.is_empty() && *was != now_logs)
            {
                watch.forget_orders(now_ms());
            }
            logs = Some(now_logs);
        }
        let version = v.data_version().ok();
        if let Some((_, rows)) = last.as_ref().filter(|(at, _)| Some(*at) == version) {
            // The same rows: the view the checks after the heal read is as it was.
            let now = now_ms();
            watch.check(rows, now);
            watch.read_at(now);
            continue;
        }
        let Ok(rows) = v.status_rows() else { continue };
        for (order, old, new) in changes.read(&path) {
            watch.check_change(&order, old, new);
        }
        let now = now_ms();
        watch.check(&rows, now);
        let latest = rows
            .iter()
            .map(|(order, status, _, stuck, _)| (order.clone(), (*status, *stuck)));
        *watch.shared.view.lock().expect("view") = latest.collect();
        watch.read_at(now);
        last = version.map(|at| (at, rows));
    }
}

/// Every status change the view makes, not only what two reads 500 ms apart show: a trigger the
/// checker adds to the view's file writes each update of a status into a table of its own (the
/// services' code and schema know nothing of it). It is added as soon as the status service has
/// made the file, and again after a lost disk made a new one; changes before that are seen only
/// by the reads.
#[derive(Default)]
struct ChangeLog {
    /// The view's file as last opened (its inode, to notice a new file after a lost disk).
    conn: Option<(u64, rusqlite::Connection)>,
    /// The last change read from that file.
    seq: i64,
}

const CHANGE_LOG: &str = "
CREATE TABLE IF NOT EXISTS sim_status_changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, order_id TEXT NOT NULL, old INTEGER NOT NULL, new INTEGER NOT NULL
);
CREATE TRIGGER IF NOT EXISTS sim_status_change AFTER UPDATE OF status ON order_status
WHEN old.status <> new.status
BEGIN
    INSERT INTO sim_status_changes (order_id, old, new) VALUES (old.order_id, old.status, new.status);
END;
";

impl ChangeLog {
    /// The changes since the last read: order, old status, new status.
    fn read(&mut self, path: &Path) -> Vec<(String, i64, i64)> {
        let Some(inode) = inode_of(path) else {
            return Vec::new();
        };
        if self.conn.as_ref().is_none_or(|(i, _)| *i != inode) {
            // The status service may not have made its tables yet: try again at the next read.
            let Ok(conn) = rusqlite::Connection::open(path) else {
                return Vec::new();
            };
            if conn.execute_batch(CHANGE_LOG).is_err() {
                return Vec::new();
            }
            self.conn = Some((inode, conn));
            self.seq = 0;
        }
        let (_, conn) = self.conn.as_ref().expect("opened above");
        let read = || -> rusqlite::Result<Vec<(i64, String, i64, i64)>> {
            let mut stmt = conn.prepare_cached(
                "SELECT seq, order_id, old, new FROM sim_status_changes WHERE seq > ?1 ORDER BY seq",
            )?;
            let rows = stmt.query_map([self.seq], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
            rows.collect()
        };
        let Ok(rows) = read() else { return Vec::new() };
        if let Some((seq, ..)) = rows.last() {
            self.seq = *seq;
        }
        rows.into_iter().map(|(_, o, a, b)| (o, a, b)).collect()
    }
}

/// The inode of the file at `path`, if there is one.
fn inode_of(path: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).map(|m| m.ino()).ok()
}

/// What the watch remembers between reads of the view, and the watchdog's rules it holds the view
/// to.
struct Watch {
    shared: Arc<Shared>,
    /// At time scale 0 the watchdog is off (nothing takes time), so no order may be marked and none
    /// is due a mark.
    watchdog_on: bool,
    /// The SLA and the watchdog's period, scaled with the services' time.
    sla_ms: i64,
    period_ms: i64,
    faultless: bool,
    /// Order -> (status, when the checker first saw it at that status).
    seen: BTreeMap<String, (i64, i64)>,
    /// Each invariant is reported once per order.
    reported: BTreeSet<(Invariant, String)>,
}

impl Watch {
    fn new(sys: &SysConfig, scale: TimeScale, shared: Arc<Shared>, faultless: bool) -> Watch {
        Watch {
            shared,
            watchdog_on: scale.factor() > 0.0,
            sla_ms: scale.scale_secs(sys.stuck_after_secs).as_millis() as i64,
            period_ms: scale.scale_secs(sys.watchdog_period_secs).as_millis() as i64,
            faultless,
            seen: BTreeMap::new(),
            reported: BTreeSet::new(),
        }
    }

    fn violate(&mut self, inv: Invariant, order: &str, detail: String) {
        if self.reported.insert((inv, order.to_owned())) {
            self.shared.violate(inv, Some(order), detail);
        }
    }

    /// One change the view made: never back, by the spec's order of codes.
    fn check_change(&mut self, order: &str, old: i64, new: i64) {
        if let (Some(a), Some(b)) = (oracle::rank(old), oracle::rank(new)) {
            self.shared.checked(Invariant::NoRegression, 1);
            if b < a {
                self.violate(
                    Invariant::NoRegression,
                    order,
                    format!("status moved back from {old} to {new} (the view's change log)"),
                );
            }
        }
    }

    /// Checks one read of the view at `now`.
    fn check(&mut self, rows: &[StatusRow], now: i64) {
        let impaired = self.shared.impaired.lock().expect("impaired").clone();
        if self.faultless {
            self.shared
                .checked(Invariant::NoStuckWithoutFaults, rows.len() as u64);
        }
        for (order, status, _, stuck, _) in rows {
            let (status, stuck) = (*status, *stuck);
            let since = self.seen_since(order, status, now);
            if stuck {
                self.check_marked(order, status);
            } else if self.watchdog_on && !oracle::is_final(status) {
                self.check_unmarked(order, status, since, now, &impaired);
            }
        }
        // An order the view does not show (its file new, a rebuild not yet swapped in) is aged
        // from when it shows again, as the watchdog ages what the rebuild gave it.
        if self.seen.len() > rows.len() {
            let shown: BTreeSet<&str> = rows.iter().map(|r| r.0.as_str()).collect();
            for (order, (_, since)) in &mut self.seen {
                if !shown.contains(order.as_str()) {
                    *since = now;
                }
            }
        }
    }

    /// The view was read at `now`.
    fn read_at(&self, now: i64) {
        self.shared
            .view_read_ms
            .store(now as u64, std::sync::atomic::Ordering::Relaxed);
    }

    /// The view is the fold of other logs now: what it showed of each order before says nothing
    /// of what it shows next.
    fn forget_orders(&mut self, now: i64) {
        self.seen.clear();
        self.restart_ages(now);
    }

    /// Every order is aged from `now` on, keeping its status (a move back from it is still a
    /// regression).
    fn restart_ages(&mut self, now: i64) {
        for (_, since) in self.seen.values_mut() {
            *since = now;
        }
    }

    /// Since when the checker has seen `order` at `status`; a status that moved backwards is a
    /// regression.
    fn seen_since(&mut self, order: &str, status: i64, now: i64) -> i64 {
        let since = match self.seen.get(order) {
            Some((prev, since)) if *prev == status => {
                self.shared.checked(Invariant::NoRegression, 1);
                *since
            }
            Some((prev, _)) => {
                self.shared.checked(Invariant::NoRegression, 1);
                let prev = *prev;
                if let (Some(a), Some(b)) = (oracle::rank(prev), oracle::rank(status)) {
                    if b < a {
                        self.violate(
                            Invariant::NoRegression,
                            order,
                            format!("status moved back from {prev} to {status}"),
                        );
                    }
                }
                now
            }
            None => now,
        };
        match self.seen.get_mut(order) {
            Some(seen) => *seen = (status, since),
            None => {
                self.seen.insert(order.to_owned(), (status, since));
            }
        }
        since
    }

    /// A stuck mark in the view: never in a run without faults, nor at time scale 0. Whether the
    /// order had sat still for the SLA is checked at the end on the broker's clock
    /// (`check_marks`): the view's times come from clocks that may be off.
    fn check_marked(&mut self, order: &str, status: i64) {
        self.shared.checked(Invariant::StuckOnlyWhenStuck, 1);
        if self.faultless {
            self.violate(
                Invariant::NoStuckWithoutFaults,
                order,
                format!("marked stuck at {status}"),
            );
        }
        if !self.watchdog_on {
            self.violate(
                Invariant::StuckOnlyWhenStuck,
                order,
                format!("marked stuck at {status} at time scale 0, where the watchdog is off"),
            );
        }
    }

    /// An order not marked: it must not have sat still past its due time by more than a period
    /// (and the slack to carry the mark), unless a fault keeps the watchdog from working now.
    fn check_unmarked(
        &mut self,
        order: &str,
        status: i64,
        seen_since: i64,
        now: i64,
        impaired: &[(i64, i64)],
    ) {
        let active = impaired.iter().any(|(a, b)| *a <= now && now <= *b);
        if active {
            self.shared.exempted(Invariant::StuckMarkedInTime);
        } else {
            self.shared.checked(Invariant::StuckMarkedInTime, 1);
        }
        // After a fault that kept the watchdog from working, it starts counting again.
        let healed = impaired
            .iter()
            .filter(|(a, b)| *b >= seen_since && *a <= now)
            .map(|(_, b)| *b)
            .max()
            .unwrap_or(i64::MIN);
        // The instance whose watchdog marks the order ages it by its own view, whose follower
        // may take the status seconds after the checker's view did: a fault that began while it
        // was on its way there (a lossy network, a clog of status) may let it in only when the
        // fault ends, and the SLA runs from then (swarm seed 7360: 8 s later, under 20% loss).
        let folded_late = impaired
            .iter()
            .filter(|(a, b)| *a <= seen_since + FOLD_SLACK_MS && *b >= seen_since)
            .map(|(_, b)| *b + self.sla_ms)
            .max()
            .unwrap_or(i64::MIN);
        // Aged from when the view showed the status, by the checker's clock (the event's own
        // timestamp is another node's clock): due the SLA after, then within a period.
        let due = (seen_since + self.sla_ms).max(healed).max(folded_late);
        if !active && now - due > self.period_ms + MARK_SLACK_MS {
            self.violate(
                Invariant::StuckMarkedInTime,
                order,
                format!(
                    "at {status} for {:.1}s since the view showed it, and not marked stuck (SLA {}s + period {}s)",
                    (now - seen_since) as f64 / 1000.0,
                    self.sla_ms / 1000,
                    self.period_ms / 1000
                ),
            );
        }
    }
}

/// What the customers were told, against the log once the faults healed: an order told "placed"
/// is on pizza-ordered, one told "not placed" is not. One still "being confirmed" may be; when it
/// is, the shop must deliver it like any placed order, so it joins the accepted ones (swarm seeds
/// 28 and 36 delivered orders whose customers had been told "not placed").
pub(super) fn check_told(bs: &BrokerShared, topics: &Topics, shared: &Shared) {
    let in_log: BTreeSet<String> = bs
        .lock()
        .log(&topics.ordered)
        .iter()
        .flatten()
        .map(|(_, r)| String::from_utf8_lossy(r.key()).into_owned())
        .collect();
    let mut accepted = shared.accepted.lock().expect("accepted");
    let told = |what: &str, orders: &BTreeMap<String, i64>, must_be_in: bool| {
        shared.checked(Invariant::CustomersToldTheTruth, orders.len() as u64);
        for order in orders.keys().filter(|o| in_log.contains(*o) != must_be_in) {
            let is = if must_be_in { "is not" } else { "is" };
            shared.violate(
                Invariant::CustomersToldTheTruth,
                Some(order),
                format!("the customer was told \"{what}\", and pizza-ordered {is} holding it"),
            );
        }
    };
    told("placed", &accepted, true);
    told(
        "not placed",
        &shared.not_placed.lock().expect("not placed"),
        false,
    );
    let unconfirmed = shared.unconfirmed.lock().expect("unconfirmed");
    shared.checked(Invariant::CustomersToldTheTruth, unconfirmed.len() as u64);
    for (order, at) in unconfirmed.iter().filter(|(o, _)| in_log.contains(*o)) {
        accepted.insert(order.clone(), *at);
    }
}

/// Accepted orders the checker's latest read of the view does not show delivered.
fn not_delivered(shared: &Shared) -> Vec<String> {
    let view = shared.view.lock().expect("view");
    shared
        .accepted
        .lock()
        .expect("accepted")
        .keys()
        .filter(|o| view.get(*o).is_none_or(|(s, _)| *s != 999))
        .cloned()
        .collect()
}

/// The services' groups' lag (readers of the log in groups of their own, a rebuild's, commit
/// nothing and are not waited for).
fn services_lag(bs: &BrokerShared) -> BTreeMap<String, i64> {
    let sys = SysConfig::default();
    let services: BTreeSet<&str> = ServiceName::CONSUMERS.iter().map(|s| sys.group(*s)).collect();
    let mut lag = bs.lock().lag();
    lag.retain(|g, _| services.contains(g.as_str()));
    lag
}

/// Phase 2: waits, within the scenario's heal budget, for every accepted order to be delivered
/// and every group to have committed the whole log; reports what did not.
pub(super) async fn converge(sc: &Scenario, bs: &BrokerShared, shared: &Shared) {
    let started = now_ms();
    let budget_end = started + sc.heal.as_millis() as i64;
    let converged = loop {
        let pending = not_delivered(shared);
        let lag: i64 = services_lag(bs).values().sum();
        // A read of the view from before the heal may show what a lost disk no longer holds.
        let fresh = shared.view_read_ms.load(std::sync::atomic::Ordering::Relaxed) as i64 > started;
        if pending.is_empty() && lag == 0 && fresh {
            break true;
        }
        if now_ms() >= budget_end {
            break false;
        }
        tokio::time::sleep(CONVERGE_POLL).await;
    };
    shared.checked(
        Invariant::AllAcceptedDelivered,
        shared.accepted.lock().expect("accepted").len() as u64,
    );
    if converged {
        return;
    }
    let view = shared.view.lock().expect("view").clone();
    for order in not_delivered(shared) {
        let at = view
            .get(&order)
            .map_or("not in the view".to_owned(), |(s, _)| format!("at status {s}"));
        shared.violate(
            Invariant::AllAcceptedDelivered,
            Some(&order),
            format!("{at} after the {}s heal budget", sc.heal.as_secs()),
        );
    }
    let lag = services_lag(bs);
    for (group, n) in lag.into_iter().filter(|(_, n)| *n > 0) {
        shared.violate(
            Invariant::AllAcceptedDelivered,
            None,
            format!("group {group} still has {n} records uncommitted after the heal budget"),
        );
    }
}

/// Rebuilds the view from the log on the checker's node (as `pizza::view::rebuild` would for an
/// operator) and compares it with each live one at `views` (every running status instance's).
pub(super) async fn check_rebuild(
    checker: &NodeHandle,
    cfg: ServiceConfig,
    (root, views): (&Path, &[PathBuf]),
    bs: &BrokerShared,
    shared: &Shared,
) {
    // A record appended while the rebuild reads (a watchdog's mark of an order a topic made
    // again left unfinished, a late resend) is in the views and not in the rebuild: the log is
    // rebuilt again once the views have folded it, a few times at most.
    let sys = cfg.sys.clone();
    let ends = || {
        let b = bs.lock();
        [&sys.topics.status, &sys.topics.ordered].map(|t| b.end_offsets(t).unwrap_or_default())
    };
    for attempt in 0..REBUILDS {
        let before = ends();
        let rebuild_path = root.join(format!("rebuilt-{attempt}.db"));
        let cfg = cfg.clone();
        let rebuilt = checker
            .spawn(async move {
                let t = SimTransport::connect("checker").await;
                let sink = ViewStore::create(&rebuild_path).map_err(|e| Report(&e).to_string())?;
                pizza::view::rebuild(&t, &cfg.sys, &sink)
                    .await
                    .map(|_| rebuild_path)
                    .map_err(|e| Report(&e).to_string())
            })
            .await
            .expect("the checker node runs");
        let path = match rebuilt {
            Ok(path) => path,
            Err(e) => {
                shared.violate(Invariant::ViewEqualsRebuild, None, format!("rebuild failed: {e}"));
                return;
            }
        };
        if ends() == before || attempt + 1 == REBUILDS {
            for view in views {
                compare_views(shared, view, &path);
            }
            return;
        }
        let deadline = now_ms() + VIEW_MODEL_WAIT_MS;
        while now_ms() < deadline && views.iter().any(|v| view_behind(bs, &sys, v) != Ok(0)) {
            tokio::time::sleep(CONVERGE_POLL).await;
        }
    }
}

/// How many times the final check rebuilds the view while records keep coming.
const REBUILDS: usize = 3;

fn compare_views(shared: &Shared, live: &Path, rebuilt: &Path) {
    let dump = |p: &Path| ViewStore::open_read_only(p).and_then(|v| v.dump());
    let who = format!("{}'s view", instance_of(live));
    let (live, rebuilt) = (dump(live), dump(rebuilt));
    if let Ok(a) = &live {
        shared.checked(
            Invariant::ViewEqualsRebuild,
            (a.status.len() + a.timeline.len() + a.details.len()) as u64,
        );
    }
    match (live, rebuilt) {
        (Ok(a), Ok(b)) if a == b => {}
        (Ok(a), Ok(b)) => {
            let diff = a
                .status
                .iter()
                .zip(&b.status)
                .find(|(x, y)| x != y)
                .map(|(x, y)| (x.0.clone(), format!("{who} {x:?}, rebuilt {y:?}")));
            let (order, detail) = diff.unwrap_or_else(|| {
                (
                    String::new(),
                    format!(
                        "{who} has {} status rows, {} timeline rows, {} details; rebuilt {}, {}, {}",
                        a.status.len(),
                        a.timeline.len(),
                        a.details.len(),
                        b.status.len(),
                        b.timeline.len(),
                        b.details.len()
                    ),
                )
            });
            let order = (!order.is_empty()).then_some(order);
            shared.violate(Invariant::ViewEqualsRebuild, order.as_deref(), detail);
        }
        (a, b) => shared.violate(
            Invariant::ViewEqualsRebuild,
            None,
            format!("could not read the views: {:?} / {:?}", a.err(), b.err()),
        ),
    }
}

/// The records the status service's group has not judged yet.
fn status_lag(bs: &BrokerShared, sys: &SysConfig) -> i64 {
    bs.lock()
        .lag()
        .get(sys.group(ServiceName::Status))
        .copied()
        .unwrap_or(0)
}

/// The status instance whose view is at `path` (its data directory's name), for a report.
fn instance_of(path: &Path) -> String {
    path.parent().and_then(Path::file_name).map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// The spec's fold of pizza-status, when the status service's group has read all of it; else
/// how many records it has left.
fn status_model(bs: &BrokerShared, sys: &SysConfig) -> Result<ViewModel, i64> {
    let lag = status_lag(bs, sys);
    if lag > 0 {
        return Err(lag);
    }
    let b = bs.lock();
    let mut model = ViewModel::default();
    for part in b.log(&sys.topics.status) {
        // Hostile records carry a tag; the status service dead-letters those that are not
        // events and ignores the unknown code the others carry.
        for (_, r) in part.iter().filter(|(_, r)| tag(r).is_none()) {
            model.apply(&String::from_utf8_lossy(r.key()), r.payload());
        }
    }
    Ok(model)
}

/// How long the final checks wait for the status service to read the log to its end: its group
/// to judge every record, and every instance's view to fold it. After convergence an instance
/// still at work (a stalled handler, a resend) may add a record while the rebuild runs.
const VIEW_MODEL_WAIT_MS: i64 = 60_000;

/// How far the view at `path` is behind the log: the records of pizza-ordered and pizza-status
/// its follower has not folded yet.
fn view_behind(bs: &BrokerShared, sys: &SysConfig, path: &Path) -> Result<i64, String> {
    let followed = ViewStore::open_read_only(path)
        .and_then(|v| v.followed())
        .map_err(|e| Report(&e).to_string())?;
    let b = bs.lock();
    let mut behind = 0;
    for topic in [&sys.topics.ordered, &sys.topics.status] {
        for (p, end) in (0..).zip(b.end_offsets(topic).unwrap_or_default()) {
            let next = followed
                .iter()
                .find(|(t, q, _)| t == topic && *q == p)
                .map_or(0, |(.., n)| *n);
            behind += (end - next).max(0);
        }
    }
    Ok(behind)
}

/// Waits, [`VIEW_MODEL_WAIT_MS`] at most, for the status service's group to have judged the whole
/// log and for every view at `views` to have folded it; returns the spec's fold of pizza-status
/// as it was at that moment. A view that does not get there is a violation (the checks after
/// this still compare it, with the model as it is then).
pub(super) async fn wait_for_views(
    bs: &BrokerShared,
    sys: &SysConfig,
    views: &[PathBuf],
    shared: &Shared,
) -> Option<ViewModel> {
    let deadline = now_ms() + VIEW_MODEL_WAIT_MS;
    loop {
        // No await from here to the model: the simulation runs one task at a time, so no record
        // lands between the checks and the model.
        let lag = status_lag(bs, sys);
        let behind: Vec<(&PathBuf, Result<i64, String>)> = views
            .iter()
            .map(|v| (v, view_behind(bs, sys, v)))
            .filter(|(_, b)| *b != Ok(0))
            .collect();
        if lag == 0 && behind.is_empty() {
            return status_model(bs, sys).ok();
        }
        if now_ms() >= deadline {
            if lag > 0 {
                let detail = format!("the status service's group left {lag} records unread");
                shared.violate(Invariant::ViewFollowsSpec, None, detail);
                return None;
            }
            for (view, b) in behind {
                let detail = match b {
                    Ok(n) => format!(
                        "{}'s view has {n} records of the log left to fold",
                        instance_of(view)
                    ),
                    Err(e) => format!(
                        "could not read how far {}'s view followed: {e}",
                        instance_of(view)
                    ),
                };
                shared.violate(Invariant::ViewFollowsSpec, None, detail);
            }
            return status_model(bs, sys).ok();
        }
        tokio::time::sleep(CONVERGE_POLL).await;
    }
}

/// Each live view at `views` against `model`, the checker's own fold of pizza-status (as
/// [`wait_for_views`] returned it, before anything else ran).
pub(super) fn check_view_model(model: &ViewModel, views: &[PathBuf], shared: &Shared) {
    for view in views {
        check_view_against(model, view, shared);
    }
}

fn check_view_against(model: &ViewModel, view_path: &Path, shared: &Shared) {
    let rows = match ViewStore::open_read_only(view_path).and_then(|v| v.status_rows()) {
        Ok(rows) => rows,
        Err(e) => {
            let detail = format!("could not read {}'s view: {}", instance_of(view_path), Report(&e));
            return shared.violate(Invariant::ViewFollowsSpec, None, detail);
        }
    };
    let mut seen = BTreeSet::new();
    shared.checked(
        Invariant::ViewFollowsSpec,
        rows.len().max(model.orders.len()) as u64,
    );
    for (order, status, _, stuck, _) in rows {
        let expected = model.orders.get(&order);
        if expected != Some(&oracle::Expected { status, stuck }) {
            let detail = format!("{}'s view holds status {status} (stuck: {stuck}); the spec's fold of pizza-status gives {expected:?}", instance_of(view_path));
            shared.violate(Invariant::ViewFollowsSpec, Some(&order), detail);
        }
        seen.insert(order);
    }
    for (order, e) in model.orders.iter().filter(|(o, _)| !seen.contains(*o)) {
        let detail = format!(
            "not in {}'s view; the spec's fold of pizza-status gives {e:?}",
            instance_of(view_path)
        );
        shared.violate(Invariant::ViewFollowsSpec, Some(order), detail);
    }
}

/// What the log holds, as the verdict counts it.
pub(super) struct LogCounts {
    /// Accepted orders delivered.
    pub delivered: usize,
    /// Hostile records in the log.
    pub hostile: usize,
    /// Records in pizza-dlq.
    pub dead_lettered: usize,
}

/// Where a record sits in the log: topic, partition, offset.
type Position = (String, i32, i64);
/// A hostile record found in the log: its number, kind and what the shop must do with it.
type Found = (u32, Kind, Expect);

/// The number a hostile record carries in its `sim.hostile` header.
fn tag(r: &Stored) -> Option<u32> {
    r.header(TAG_HEADER).and_then(|n| n.parse::<u32>().ok())
}

/// Checks on the log itself.
pub(super) fn check_log(
    bs: &BrokerShared,
    sys: &SysConfig,
    sc: &Scenario,
    shared: &Shared,
    probes: &pizza::probes::Hits,
) -> LogCounts {
    let scale = sc.time_scale;
    let b = bs.lock();
    // A record passed over without a dead-letter note is excused when the broker refused its
    // bare note (only a `max-bytes` window on the dead-letter topic does): by the broker's word,
    // not by the time the service heard the refusal, which may come after the window closed
    // (hostile seed 4: refused at 39.996 s, heard after 40 s, the window's end).
    let excused: BTreeSet<(Position, String)> = probes
        .dropped
        .iter()
        .map(|(svc, t, p, o)| ((t.clone(), *p, *o), svc.clone()))
        .filter(|((t, p, o), svc)| b.refused_notes.contains(&(svc.clone(), t.clone(), *p, *o)))
        .collect();
    let sla_ms = scale.scale_secs(sys.stuck_after_secs).as_millis() as i64;
    let topics = &sys.topics;
    let accepted = shared.accepted.lock().expect("accepted").clone();
    let deliveries = check_deliveries(&b, topics, shared);
    let drives = probes.keyed.get(ShopProbe::DeliveryDriven.name());
    let drives = drives.cloned().unwrap_or_default();
    check_drives(&drives, &b.gone, shared);
    check_commits(&b, &probes.finished, shared);
    check_marks(&b, topics, sla_ms, shared);
    check_no_event_lost(&b, topics, &accepted, shared);
    let sent = shared.hostile.lock().expect("hostile").clone();
    let hostile_in_log = find_hostile(&b, topics, &sent);
    let unreadable = log_checks::unreadable_in_log(&b, topics);
    let (dead, dlq_records) = check_dlq(&b, topics, (&hostile_in_log, &unreadable), shared);
    check_dead_lettered(topics, &hostile_in_log, &dead, &excused, shared);
    log_checks::check_unreadable(topics, &unreadable, &dead, &excused, shared);
    log_checks::check_aborted(&b, topics, &drives, shared);
    log_checks::check_isolation(&b, sc, sys, &probes.finished, shared);
    LogCounts {
        delivered: accepted.keys().filter(|o| deliveries.contains_key(*o)).count(),
        hostile: hostile_in_log.len(),
        dead_lettered: dlq_records,
    }
}

/// The delivery times of each order on pizza-delivered: a redelivered input may re-send the same
/// event, never a second delivery.
fn check_deliveries(b: &Broker, topics: &Topics, shared: &Shared) -> BTreeMap<String, BTreeSet<i64>> {
    let mut deliveries: BTreeMap<String, BTreeSet<i64>> = BTreeMap::new();
    for part in b.log(&topics.delivered) {
        for (_, r) in part.iter().filter(|(_, r)| tag(r).is_none()) {
            let key = String::from_utf8_lossy(r.key()).into_owned();
            let ts = decode::<StatusOnly>(r.payload())
                .ok()
                .and_then(|e| e.timestamp)
                .unwrap_or_default();
            deliveries.entry(key).or_default().insert(ts);
        }
    }
    shared.checked(Invariant::NoDoubleDelivery, deliveries.len() as u64);
    for (order, times) in &deliveries {
        if times.len() > 1 && !b.gone.contains(order.as_bytes()) {
            shared.violate(
                Invariant::NoDoubleDelivery,
                Some(order),
                format!("delivered {} times (timestamps {times:?})", times.len()),
            );
        }
    }
    deliveries
}

/// Committed offsets follow the work: every record below a group's final committed offset was
/// finished (its handler returned) by one of the group's members. A commit past an unfinished
/// record would skip it for good at a restart.
///
/// Not (yet) checked: that no commit moves a group's offset back. One can, when a partition comes
/// back to a member that finished records of it read before a rebalance (the worker's offset
/// tracker does not know of rebalances): those records come again, which costs duplicates, not
/// orders. The broker counts such commits (`Outcome::commits_back`); issue 15's revocation model
/// is where they end.
///
/// Only offsets that hold work count: a record the group is given, or one of a batch no client
/// can decode (given up on, which is finished too). Markers, aborted records and gaps hold none.
fn check_commits(b: &Broker, finished: &pizza::probes::Finished, shared: &Shared) {
    let (checked, broken) = framework_sim::checks::commits_follow_work(b, finished);
    shared.checked(Invariant::CommitsFollowWork, checked);
    for what in broken {
        shared.violate(Invariant::CommitsFollowWork, None, what);
    }
}

/// Time a mark may come early by the broker's clock: a produce's own latency.
const MARK_EARLY_MS: i64 = 1_000;

/// Stuck marks only on orders that sat still for the SLA, by the one clock the checker trusts:
/// the broker's, which stamps every record as it appends it (the services' clocks may be off,
/// and their timestamps with them). A mark that says it saw status S must be appended at least
/// the SLA after the order's first S event was.
fn check_marks(b: &Broker, topics: &Topics, sla_ms: i64, shared: &Shared) {
    if sla_ms == 0 {
        return;
    }
    // (order, status) -> when the broker first appended it.
    let mut reached: BTreeMap<(String, i64), i64> = BTreeMap::new();
    let mut marks = Vec::new();
    for topic in topics.sources().into_iter().chain([topics.status.as_str()]) {
        for (_, r) in b.log(topic).iter().flatten() {
            let Ok(e) = decode::<StatusEvent>(r.payload()) else {
                continue;
            };
            let order = String::from_utf8_lossy(r.key()).into_owned();
            if e.status == oracle::STUCK {
                marks.push((order, e.observed_status, r.timestamp_ms));
                continue;
            }
            let at = reached.entry((order, e.status)).or_insert(r.timestamp_ms);
            *at = (*at).min(r.timestamp_ms);
        }
    }
    for (order, observed, marked_at) in marks {
        // An order whose history a topic made again took: its statuses' times went with it.
        if b.gone.contains(order.as_bytes()) {
            shared.exempted(Invariant::StuckOnlyWhenStuck);
            continue;
        }
        // A mark without the status it saw: the latest the order reached before it.
        let seen = reached
            .iter()
            .filter(|((o, st), at)| *o == order && **at <= marked_at && observed.is_none_or(|s| s == *st))
            .max_by_key(|(_, at)| **at);
        let Some(((_, status), at)) = seen else { continue };
        shared.checked(Invariant::StuckOnlyWhenStuck, 1);
        let still = marked_at - at;
        if still < sla_ms - MARK_EARLY_MS {
            shared.violate(
                Invariant::StuckOnlyWhenStuck,
                Some(&order),
                format!(
                    "marked stuck at {status} {:.1}s after the broker appended {status} (SLA {}s; broker clock)",
                    still as f64 / 1000.0,
                    sla_ms / 1000
                ),
            );
        }
    }
}

/// One drive per order: deliver's drivers, counted where they deliver (the `delivery-driven`
/// probe), not told apart by the timestamps they leave on the log.
fn check_drives(drives: &BTreeMap<String, u64>, gone: &BTreeSet<Vec<u8>>, shared: &Shared) {
    shared.checked(Invariant::NoDoubleDelivery, drives.len() as u64);
    // An order whose history a topic made again took: deliver's claim of it may be gone too.
    let gone_with = |o: &String| gone.contains(o.as_bytes());
    for (order, n) in drives.iter().filter(|(o, n)| **n > 1 && !gone_with(o)) {
        shared.violate(
            Invariant::NoDoubleDelivery,
            Some(order),
            format!("driven to the customer {n} times"),
        );
    }
}

/// No event lost: every status a source topic carries for an accepted order reached pizza-status.
fn check_no_event_lost(b: &Broker, topics: &Topics, accepted: &BTreeMap<String, i64>, shared: &Shared) {
    let mut merged: BTreeSet<(String, i64)> = BTreeSet::new();
    for part in b.log(&topics.status) {
        for (_, r) in part {
            if let Ok(e) = decode::<StatusEvent>(r.payload()) {
                merged.insert((String::from_utf8_lossy(r.key()).into_owned(), e.status));
            }
        }
    }
    for topic in topics.sources() {
        for part in b.log(topic) {
            for (_, r) in part {
                let key = String::from_utf8_lossy(r.key()).into_owned();
                if !accepted.contains_key(&key) {
                    continue;
                }
                let Ok(e) = decode::<StatusOnly>(r.payload()) else {
                    continue;
                };
                shared.checked(Invariant::NoEventLost, 1);
                if !merged.contains(&(key.clone(), e.status)) {
                    shared.violate(
                        Invariant::NoEventLost,
                        Some(&key),
                        format!("status {} on {topic} never reached {}", e.status, topics.status),
                    );
                }
            }
        }
    }
}

/// The hostile records that reached the log, wherever the producer was told they went.
fn find_hostile(
    b: &Broker,
    topics: &Topics,
    sent: &BTreeMap<u32, (Kind, Expect)>,
) -> BTreeMap<Position, Found> {
    let mut hostile_in_log = BTreeMap::new();
    for topic in hostile::consumed_topics(topics) {
        for (p, part) in b.log(topic).iter().enumerate() {
            for (o, r) in part {
                if let Some((n, (kind, expect))) = tag(r).and_then(|n| Some((n, *sent.get(&n)?))) {
                    hostile_in_log.insert((topic.to_owned(), p as i32, *o), (n, kind, expect));
                }
            }
        }
    }
    hostile_in_log
}

/// pizza-dlq: only records that are not their topic's event, each with a reason, from a service
/// that reads its topic. Returns which (record, service) pairs were dead-lettered, and how many
/// records pizza-dlq holds.
fn check_dlq(
    b: &Broker,
    topics: &Topics,
    (hostile_in_log, unreadable): (&BTreeMap<Position, Found>, &BTreeSet<Position>),
    shared: &Shared,
) -> (BTreeSet<(Position, String)>, usize) {
    let mut dead = BTreeSet::new();
    let mut dlq_records = 0;
    for r in b.ever_written(&topics.dlq) {
        dlq_records += 1;
        shared.checked(Invariant::DlqOnlyMalformed, 1);
        let source = dlq_source(r);
        let service = r.header("dlq.service").unwrap_or_default();
        let reason = r.header("dlq.reason").unwrap_or_default();
        let reads = service
            .parse::<ServiceName>()
            .is_ok_and(|s| topics.consumers_of(&source.0).contains(&s));
        if unreadable.contains(&source) && reads && reason.starts_with(log_checks::UNREADABLE_REASON) {
            dead.insert((source, service));
            continue;
        }
        match hostile_in_log.get(&source) {
            Some((_, _, Expect::DeadLettered)) if !reason.is_empty() && reads => {
                dead.insert((source, service));
            }
            // A note of a record in a log made again since: what it was is gone with it.
            _ if b.recreated.contains(&source.0) => shared.exempted(Invariant::DlqOnlyMalformed),
            other => {
                let what = other.map_or("not a hostile record".to_owned(), |(n, kind, expect)| {
                    format!("hostile record #{n}, {}, expected {expect:?}", kind.name())
                });
                shared.violate(
                    Invariant::DlqOnlyMalformed,
                    Some(&String::from_utf8_lossy(r.key())),
                    format!(
                        "{service} dead-lettered {}/{}@{} ({what}): {reason:?}",
                        source.0, source.1, source.2
                    ),
                );
            }
        }
    }
    (dead, dlq_records)
}

/// Where a dead-letter record says its source sat (-1 where a header is missing or unreadable).
fn dlq_source(r: &Stored) -> Position {
    (
        r.header("dlq.source.topic").unwrap_or_default(),
        r.header("dlq.source.partition")
            .and_then(|p| p.parse().ok())
            .unwrap_or(-1),
        r.header("dlq.source.offset")
            .and_then(|o| o.parse().ok())
            .unwrap_or(-1),
    )
}

/// Every hostile record the shop must dead-letter was, by every service that consumes its topic.
fn check_dead_lettered(
    topics: &Topics,
    hostile_in_log: &BTreeMap<Position, Found>,
    dead: &BTreeSet<(Position, String)>,
    excused: &BTreeSet<(Position, String)>,
    shared: &Shared,
) {
    for (source, (n, kind, expect)) in hostile_in_log {
        if *expect != Expect::DeadLettered {
            continue;
        }
        for service in topics.consumers_of(&source.0) {
            let at = (source.clone(), service.as_str().to_owned());
            if excused.contains(&at) && !dead.contains(&at) {
                shared.exempted(Invariant::MalformedDeadLettered);
                continue;
            }
            shared.checked(Invariant::MalformedDeadLettered, 1);
            if !dead.contains(&at) {
                shared.violate(
                    Invariant::MalformedDeadLettered,
                    None,
                    format!(
                        "hostile record #{n} ({}) at {}/{}@{} never reached {} from {service}",
                        kind.name(),
                        source.0,
                        source.1,
                        source.2,
                        topics.dlq
                    ),
                );
            }
        }
    }
}
