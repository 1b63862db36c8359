//! Faults: phase 1 of a run applies the scenario's faults at their times, each doing to the
//! simulated cluster what its kind says and undoing it when it heals; and which windows of the run
//! they keep the status service's watchdog from working (the checker excuses late marks there).

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use pizza::clock::now_ms;
use pizza::config::{ServiceName, SysConfig};

use super::cluster::{self, Cluster};
use super::{fmt_t, Shared};
use crate::broker::Held;
use crate::node::BrokerShared;
use crate::scenario::{Direction, FaultKind, Scenario, MAX_INSTANCES};
use framework_sim::faults::{self, later};

/// The windows (epoch ms) in which the scenario's faults may keep the watchdog from marking, for
/// a run that started at `start_ms`.
///
/// A status instance added by a scale-up folds the log into a new view, so it ages every order
/// from then, as a status service whose disk was lost does: the orders its group hands it are
/// marked up to an SLA (and the time to fold the log) later than the checker's own ages say.
pub(super) fn impaired_windows(sc: &Scenario, start_ms: i64) -> Vec<(i64, i64)> {
    let sys = cluster::sys_config(sc);
    let sla_ms = sc.time_scale.scale_secs(sys.stuck_after_secs).as_millis() as i64;
    sc.faults
        .iter()
        .filter(|f| f.kind.impairs_watchdog())
        .map(|f| match f.kind {
            FaultKind::ScaleUp {
                service: ServiceName::Status,
            } => {
                let (from, _) = f.window(start_ms);
                (from, from + sla_ms + NEW_VIEW_FOLDED_MS)
            }
            _ => f.window(start_ms),
        })
        .collect()
}

/// The time allowed a new status instance to fold the log into its view and join its group.
const NEW_VIEW_FOLDED_MS: i64 = 10_000;

/// Phase 1: applies each fault at its time (from `start_ms`), noting it in the trace.
pub(super) async fn inject(sc: &Scenario, start_ms: i64, cluster: &Cluster, shared: &Shared, root: &Path) {
    // What a power loss leaves is what the disk held `lost` before it: taken then.
    for f in &sc.faults {
        if let FaultKind::PowerLoss { service, lost, .. } = f.kind {
            let at = (start_ms + f.at.saturating_sub(lost).as_millis() as i64 - now_ms()).max(0);
            let (dir, snapshot) = (cluster::data_dir(root, service), power_snapshot(root, service));
            framework_sim::faults::snapshot_later(Duration::from_millis(at as u64), dir, snapshot);
        }
    }
    for f in &sc.faults {
        let at = Duration::from_millis((start_ms + f.at.as_millis() as i64 - now_ms()).max(0) as u64);
        tokio::time::sleep(at).await;
        cluster
            .broker
            .lock()
            .trace
            .push(format!("{} harness fault: {f}", fmt_t(shared.since_start())));
        apply_fault(cluster, &f.kind, root);
    }
}

/// Waits until the last fault is over, and notes in the trace that the cluster healed.
pub(super) async fn heal(sc: &Scenario, start_ms: i64, bs: &BrokerShared, shared: &Shared) {
    let faults_end = start_ms + sc.faults_end().as_millis() as i64;
    let wait = (faults_end - now_ms()).max(0) as u64;
    tokio::time::sleep(Duration::from_millis(wait + 1)).await;
    bs.lock()
        .trace
        .push(format!("{} harness healed", fmt_t(shared.since_start())));
}

/// A line in the trace, from the harness.
fn note(cluster: &Cluster, what: String) {
    let mut b = cluster.broker.lock();
    let t = pizza::clock::now_ms() - b.start_ms;
    b.trace.push(format!("{} harness {what}", fmt_t(t)));
}

/// Does what `kind` says to the cluster now, and undoes it (on a task of its own) when it heals.
/// A crash that loses the disk removes the service's data directory under `root`.
fn apply_fault(cluster: &Cluster, kind: &FaultKind, root: &Path) {
    let handle = &cluster.handle;
    let net = madsim::net::NetSim::current();
    let node = |s: &ServiceName| cluster.services[s];
    match kind.clone() {
        FaultKind::Crash {
            service,
            down,
            lose_disk,
        } => crash(
            cluster,
            service,
            down,
            lose_disk.then(|| cluster::data_dir(root, service)),
        ),
        FaultKind::Stop { service, down } => {
            let id = node(&service);
            handle.send_ctrl_c(id);
            let h = handle.clone();
            later(down, move || h.restart(id));
        }
        FaultKind::Pause { service, down } => {
            let id = node(&service);
            handle.pause(id);
            let h = handle.clone();
            later(down, move || h.resume(id));
        }
        FaultKind::Clog { service, down } => {
            let id = node(&service);
            net.clog_node(id);
            later(down, move || net.unclog_node(id));
        }
        FaultKind::Cut {
            node,
            direction,
            down,
        } => {
            let id = cluster.node(&node).expect("scenarios name known nodes");
            match direction {
                Direction::In => net.clog_node_in(id),
                Direction::Out => net.clog_node_out(id),
                Direction::Both => net.clog_node(id),
            }
            later(down, move || match direction {
                Direction::In => net.unclog_node_in(id),
                Direction::Out => net.unclog_node_out(id),
                Direction::Both => net.unclog_node(id),
            });
        }
        scale @ (FaultKind::ScaleUp { .. }
        | FaultKind::ScaleDown { .. }
        | FaultKind::RollingRestart { .. }) => {
            apply_scale_fault(cluster, scale);
        }
        disk @ (FaultKind::PowerLoss { .. } | FaultKind::SlowDisk { .. } | FaultKind::BusyDisk { .. }) => {
            apply_disk_fault(cluster, disk, root);
        }
        FaultKind::Loss { rate, lasting } => {
            net.update_config(|c| c.packet_loss_rate = rate);
            later(lasting, move || net.update_config(|c| c.packet_loss_rate = 0.0));
        }
        broker_fault => apply_broker_fault(&cluster.broker, broker_fault),
    }
}

/// Issue 15's faults: instances added, stopped, restarted one by one.
fn apply_scale_fault(cluster: &Cluster, kind: FaultKind) {
    let handle = &cluster.handle;
    match kind {
        FaultKind::ScaleUp { service } => {
            let name = cluster.scale_up(service);
            note(cluster, format!("{name} started"));
        }
        FaultKind::ScaleDown { service } => match cluster.scale_down(service) {
            Some(name) => note(cluster, format!("{name} stopping")),
            None => note(
                cluster,
                format!("{} has one instance running: none stopped", service.as_str()),
            ),
        },
        FaultKind::RollingRestart { service, every } => {
            // At most MAX_INSTANCES, so the fault ends when its scenario says.
            let running = cluster.running(service);
            for (k, id) in running.into_iter().take(MAX_INSTANCES).enumerate() {
                let h = handle.clone();
                let still = cluster.instances_handle();
                later(every * k as u32, move || {
                    // Not one a scale-down has stopped since.
                    if !still.is_running(service, id) {
                        return;
                    }
                    h.send_ctrl_c(id);
                    let again = h.clone();
                    later(every / 2, move || {
                        if still.is_running(service, id) {
                            again.restart(id);
                        }
                    });
                });
            }
        }
        _ => unreachable!("only the scale faults come here"),
    }
}

/// The faults of a service's disk: power loss, slowness, a busy database.
fn apply_disk_fault(cluster: &Cluster, kind: FaultKind, root: &Path) {
    match kind {
        FaultKind::PowerLoss { service, down, .. } => {
            let id = cluster.services[&service];
            cluster.handle.kill(id);
            let h = cluster.handle.clone();
            let (dir, snapshot) = (cluster::data_dir(root, service), power_snapshot(root, service));
            later(down, move || {
                framework_sim::faults::power_restored(&dir, &snapshot);
                h.restart(id);
            });
        }
        FaultKind::SlowDisk {
            service,
            delay,
            lasting,
        } => {
            let id = cluster.services[&service];
            pizza::probes::set_disk_latency(id, delay.as_millis() as u64);
            later(lasting, move || pizza::probes::set_disk_latency(id, 0));
        }
        FaultKind::BusyDisk {
            service,
            chance,
            lasting,
        } => {
            let id = cluster.services[&service];
            pizza::probes::set_disk_busy(id, (chance * 1000.0) as u64);
            later(lasting, move || pizza::probes::set_disk_busy(id, 0));
        }
        other => unreachable!("{other:?} is not a disk's fault"),
    }
}

/// `topic` (every topic, when `None`) deleted and made again; the orders whose history went
/// with it noted for the checkers: every order of pizza-ordered and pizza-status (the views fold
/// those), and of any other topic the orders not delivered by then.
fn recreate(bs: &BrokerShared, topic: Option<String>) {
    let sys = SysConfig::default();
    let topics: Vec<String> = match topic {
        Some(t) => vec![t],
        None => sys.topics.to_create().into_iter().map(str::to_owned).collect(),
    };
    let mut broker = bs.lock();
    let delivered: BTreeSet<Vec<u8>> = broker
        .log(&sys.topics.status)
        .iter()
        .flatten()
        .filter(|(_, r)| {
            pizza::domain::decode::<pizza::domain::StatusEvent>(r.payload())
                .is_ok_and(|e| e.status == sys.codes.delivered)
        })
        .map(|(_, r)| r.key().to_vec())
        .collect();
    for t in topics {
        let took = broker.recreate_topic(now_ms(), &t);
        let views_read_it = t == sys.topics.ordered || t == sys.topics.status;
        let gone: Vec<Vec<u8>> = took
            .into_iter()
            .filter(|k| views_read_it || !delivered.contains(k))
            .collect();
        broker.gone.extend(gone);
    }
}

/// The faults the broker itself plays: a rebalance, reordering, slowness, refused writes, held
/// topics, duplicated requests.
fn apply_broker_fault(bs: &Arc<BrokerShared>, kind: FaultKind) {
    let b = bs.clone();
    match kind {
        FaultKind::Redeliver { service } => {
            let group = SysConfig::default().group(service).to_owned();
            bs.lock().rebalance(now_ms(), &group);
        }
        FaultKind::Recreate { topic } => recreate(bs, topic),
        FaultKind::Reorder { lasting } => {
            bs.lock().reorder = 0.8;
            later(lasting, move || b.lock().reorder = 0.0);
        }
        FaultKind::SlowBroker { delay, lasting } => {
            bs.delay_ms.store(delay.as_millis() as u64, Ordering::Relaxed);
            later(lasting, move || b.delay_ms.store(0, Ordering::Relaxed));
        }
        FaultKind::RefuseWrites { topic, lasting } => faults::refuse_writes(bs, &topic, lasting),
        FaultKind::Hold {
            topic,
            partition,
            service,
            lasting,
        } => {
            let held = Held {
                group: SysConfig::default().group(service).to_owned(),
                service: service.as_str().to_owned(),
                topic,
                partition,
            };
            faults::hold(bs, held, lasting);
        }
        FaultKind::Duplicate { rate, lasting } => {
            bs.duplicate_per_mille
                .store((rate * 1000.0) as u64, Ordering::Relaxed);
            later(lasting, move || b.duplicate_per_mille.store(0, Ordering::Relaxed));
        }
        FaultKind::MaxBytes {
            topic,
            bytes,
            lasting,
        } => faults::max_bytes(bs, &topic, bytes, lasting),
        FaultKind::LeaderChange { down } => faults::leader_change(bs, down),
        node_fault => unreachable!("{node_fault:?} is a node's fault"),
    }
}

/// Kills `service`'s node and restarts it after `down`, without the data directory `lose` names.
fn crash(cluster: &Cluster, service: ServiceName, down: Duration, lose: Option<std::path::PathBuf>) {
    let id = cluster.services[&service];
    cluster.handle.kill(id);
    let h = cluster.handle.clone();
    tokio::spawn(async move {
        tokio::time::sleep(down).await;
        if let Some(dir) = lose {
            let _ = std::fs::remove_dir_all(&dir);
        }
        h.restart(id);
    });
}

/// Where a power loss's snapshot of `service`'s disk is kept.
fn power_snapshot(root: &Path, service: ServiceName) -> std::path::PathBuf {
    root.join(format!("{}.power-snapshot", service.as_str()))
}
