//! The broker's faults, each done now and undone (on a task of its own) when it heals: what any
//! simulation's fault plan applies to the simulated broker ([`crate::world`]'s, or an
//! application's own scenarios).

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
