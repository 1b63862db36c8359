//! The simulation's disk faults: a slow disk (each store access takes simulated time) and a busy
//! one (an access finds the database locked), per simulated node.

#[cfg(madsim)]
use super::seam;

/// Where a handler has just read or written its store: under madsim, the time the node's disk
/// is set to take (`set_disk_latency`, the simulation's slow-disk fault) passes here, as
/// simulated time; then it is also a [`seam`](super::seam). Nothing in any other build.
#[cfg(not(madsim))]
#[inline(always)]
pub async fn disk_io() {}

/// What the simulation set a node's disk to do: (milliseconds each access takes, thousandths of
/// accesses that find the database busy).
#[cfg(madsim)]
type DiskFaults = std::collections::BTreeMap<tokio::madsim::task::NodeId, (u64, u64)>;

#[cfg(madsim)]
thread_local! {
    static DISKS: std::cell::RefCell<DiskFaults> = const { std::cell::RefCell::new(std::collections::BTreeMap::new()) };
}

/// Forgets every node's disk faults (a new simulation starts on this thread).
#[cfg(madsim)]
pub(super) fn forget_all() {
    DISKS.with(|d| d.borrow_mut().clear());
}

/// Changes simulated node `node`'s disk faults with `f`, forgetting the node when none is left.
#[cfg(madsim)]
fn set_disk(node: tokio::madsim::task::NodeId, f: impl FnOnce(&mut (u64, u64))) {
    DISKS.with(|d| {
        let mut d = d.borrow_mut();
        let faults = d.entry(node).or_default();
        f(faults);
        if *faults == (0, 0) {
            d.remove(&node);
        }
    });
}

/// The disk faults of the node running now.
#[cfg(madsim)]
fn disk() -> (u64, u64) {
    let node = tokio::madsim::plugin::node();
    DISKS.with(|d| d.borrow().get(&node).copied().unwrap_or_default())
}

/// Sets (0: clears) how long each store access takes on simulated node `node`, in milliseconds.
#[cfg(madsim)]
pub fn set_disk_latency(node: tokio::madsim::task::NodeId, ms: u64) {
    set_disk(node, |d| d.0 = ms);
}

#[cfg(madsim)]
pub async fn disk_io() {
    let (ms, _) = disk();
    if ms > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    }
    seam().await;
}

/// Whether this store access fails as if another connection held the database's lock
/// (SQLITE_BUSY): under madsim, with the chance the node's disk is set to
/// (`set_disk_busy`, the simulation's busy-disk fault); never in any other build.
#[cfg(not(madsim))]
#[inline(always)]
pub fn disk_busy() -> bool {
    false
}

/// Sets (0: clears) the chance, in thousandths, that a store access of node `node` is busy.
#[cfg(madsim)]
pub fn set_disk_busy(node: tokio::madsim::task::NodeId, per_mille: u64) {
    set_disk(node, |d| d.1 = per_mille);
}

#[cfg(madsim)]
pub fn disk_busy() -> bool {
    let (_, chance) = disk();
    chance > 0 && tokio::madsim::rand::random::<u64>() % 1000 < chance
}
