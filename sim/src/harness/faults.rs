//! Faults: what each of the scenario's fault kinds does to the simulated cluster, and when it
//! heals.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use madsim::runtime::Handle;
use pizza::clock::now_ms;
use pizza::config::{ServiceName, SysConfig};

use crate::node::BrokerShared;
use crate::scenario::FaultKind;

pub(super) fn apply_fault(
    handle: &Handle,
    nodes: &BTreeMap<ServiceName, madsim::task::NodeId>,
    bs: &Arc<BrokerShared>,
    kind: &FaultKind,
    root: &Path,
) {
    let net = madsim::net::NetSim::current();
    let node = |s: &ServiceName| nodes[s];
    let later = |d: Duration, f: Box<dyn FnOnce() + Send>| {
        tokio::spawn(async move {
            tokio::time::sleep(d).await;
            f();
        });
    };
    match kind.clone() {
        FaultKind::Crash {
            service,
            down,
            lose_disk,
        } => {
            let id = node(&service);
            handle.kill(id);
            let h = handle.clone();
            let dir = root.join(service.as_str());
            later(
                down,
                Box::new(move || {
                    if lose_disk {
                        let _ = std::fs::remove_dir_all(&dir);
                    }
                    h.restart(id);
                }),
            );
        }
        FaultKind::Stop { service, down } => {
            let id = node(&service);
            handle.send_ctrl_c(id);
            let h = handle.clone();
            later(down, Box::new(move || h.restart(id)));
        }
        FaultKind::Pause { service, down } => {
            let id = node(&service);
            handle.pause(id);
            let h = handle.clone();
            later(down, Box::new(move || h.resume(id)));
        }
        FaultKind::Clog { service, down } => {
            let id = node(&service);
            net.clog_node(id);
            let n = net.clone();
            later(down, Box::new(move || n.unclog_node(id)));
        }
        FaultKind::Redeliver { service } => {
            let group = SysConfig::default().group(service).to_owned();
            let now = now_ms();
            bs.lock().rebalance(now, &group);
        }
        FaultKind::Reorder { lasting } => {
            bs.lock().reorder = 0.8;
            let b = bs.clone();
            later(lasting, Box::new(move || b.lock().reorder = 0.0));
        }
        FaultKind::SlowBroker { delay, lasting } => {
            bs.delay_ms.store(delay.as_millis() as u64, Ordering::Relaxed);
            let b = bs.clone();
            later(lasting, Box::new(move || b.delay_ms.store(0, Ordering::Relaxed)));
        }
        FaultKind::Loss { rate, lasting } => {
            net.update_config(|c| c.packet_loss_rate = rate);
            let n = net.clone();
            later(
                lasting,
                Box::new(move || n.update_config(|c| c.packet_loss_rate = 0.0)),
            );
        }
    }
}
