//! The broker's faults, each done now and undone (on a task of its own) when it heals: what any
//! simulation's fault plan applies to the simulated broker ([`crate::world`]'s, or an
//! application's own scenarios).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use framework::clock::now_ms;

use crate::broker::Held;
use crate::node::BrokerShared;

/// Runs `undo` after `after`, on a task of its own.
pub fn later(after: Duration, undo: impl FnOnce() + Send + 'static) {
    tokio::spawn(async move {
        tokio::time::sleep(after).await;
        undo();
    });
}

/// Leaders move now: what was not replicated is lost, and every produce is refused for `down`.
pub fn leader_change(bs: &Arc<BrokerShared>, down: Duration) {
    let mut broker = bs.lock();
    broker.leader_change(now_ms());
    broker.electing = true;
    drop(broker);
    let b = bs.clone();
    later(down, move || b.lock().electing = false);
}

/// `topic` refuses writes (NOT_ENOUGH_REPLICAS) for `lasting`.
pub fn refuse_writes(bs: &Arc<BrokerShared>, topic: &str, lasting: Duration) {
    bs.lock().refusing.insert(topic.to_owned());
    let (b, topic) = (bs.clone(), topic.to_owned());
    later(lasting, move || {
        b.lock().refusing.remove(&topic);
    });
}

/// `topic` takes only records of at most `bytes` for `lasting`.
pub fn max_bytes(bs: &Arc<BrokerShared>, topic: &str, bytes: usize, lasting: Duration) {
    bs.lock().topic_max_bytes.insert(topic.to_owned(), bytes);
    let (b, topic) = (bs.clone(), topic.to_owned());
    later(lasting, move || {
        b.lock().topic_max_bytes.remove(&topic);
    });
}

/// What `held` names is held back for `lasting`.
pub fn hold(bs: &Arc<BrokerShared>, held: Held, lasting: Duration) {
    bs.lock().held.insert(held.clone());
    let b = bs.clone();
    later(lasting, move || {
        b.lock().held.remove(&held);
    });
}

/// Whether every store in `dir` syncs each commit (`synchronous` FULL or EXTRA, as the service's
/// own connection reported it when it opened the store, `framework::store`): then a power loss
/// loses no commit.
pub fn synced(dir: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return true;
    };
    entries.flatten().all(|e| {
        let path = e.path();
        path.extension().is_none_or(|x| x != "db")
            || framework::probes::store_synchronous(&path).is_some_and(|s| s >= 2)
    })
}

/// Copies the files of `from` (no subdirectories: a service's data directory has none) to `to`.
pub fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)?.flatten() {
        if e.file_type()?.is_file() {
            std::fs::copy(e.path(), to.join(e.file_name()))?;
        }
    }
    Ok(())
}

/// What a power loss `lost` from now will leave of `dir`: its files now, kept in `snapshot`.
/// madsim runs one task at a time and SQLite's calls do not yield: no transaction is half
/// written while this copies.
pub fn snapshot_later(
    lost_from_now: std::time::Duration,
    dir: std::path::PathBuf,
    snapshot: std::path::PathBuf,
) {
    later(lost_from_now, move || {
        let _ = std::fs::remove_dir_all(&snapshot);
        let _ = copy_dir(&dir, &snapshot);
    });
}

/// After a power loss, as the node comes back: `dir` as the disk kept it, which is the
/// `snapshot` taken before unless every store in it synced each commit ([`synced`]).
pub fn power_restored(dir: &Path, snapshot: &Path) {
    if !synced(dir) {
        let _ = std::fs::remove_dir_all(dir);
        let _ = copy_dir(snapshot, dir);
    }
    let _ = std::fs::remove_dir_all(snapshot);
}
