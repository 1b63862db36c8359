//! Rebuilding the view from the log: the view is a fold of pizza-ordered and pizza-status, so
//! reading both from the beginning into a fresh file gives the same rows as the live view.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::domain::OrderId;
use crate::services::status::Status;
use crate::services::ServiceConfig;
use crate::store::{StoreError, ViewStore};
use crate::transport::{Subscription, Transport, TransportError};
use crate::worker::{HandleError, Handler};

/// Why a rebuild failed.
#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0} already exists; rebuild writes a fresh file")]
    Exists(String),
    #[error("no record for {0:?} while {1} were still to read")]
    Stalled(Duration, u64),
    #[error("{0}")]
    Apply(String),
}

/// What a rebuild read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rebuilt {
    pub records: u64,
    /// Records the status service would dead-letter: skipped here too.
    pub skipped: u64,
}

/// How long a rebuild waits for the next record before it gives up.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Reads pizza-ordered and pizza-status up to their current ends into a new view at `out`.
pub async fn rebuild<T: Transport>(
    transport: &T,
    cfg: &ServiceConfig,
    out: &Path,
) -> Result<Rebuilt, RebuildError> {
    if out.exists() {
        return Err(RebuildError::Exists(out.display().to_string()));
    }
    let topics = &cfg.sys.topics;
    let sources = [topics.status.as_str(), topics.ordered.as_str()];
    // What is left to read, per partition: everything below the end offsets taken now.
    let mut remaining: HashMap<(String, i32), i64> = HashMap::new();
    for t in sources {
        for (p, end) in transport.end_offsets(t).await?.into_iter().enumerate() {
            if end > 0 {
                remaining.insert((t.to_owned(), p as i32), end);
            }
        }
    }
    let handler = Status {
        cfg: cfg.clone(),
        view: Arc::new(ViewStore::open(out)?),
    };
    // A group of its own, so the rebuild reads from the beginning and disturbs no service.
    let group = format!("pizza-view-rebuild-{}", OrderId::random());
    let mut sub = transport.subscribe(&group, &sources).await?;
    let mut stats = Rebuilt::default();
    while !remaining.is_empty() {
        let left: i64 = remaining.values().sum();
        let rec = match tokio::time::timeout(STALL_TIMEOUT, sub.recv()).await {
            Err(_) => return Err(RebuildError::Stalled(STALL_TIMEOUT, left as u64)),
            Ok(Err(e)) if e.is_retriable() => continue,
            Ok(r) => r?,
        };
        let key = (rec.topic.clone(), rec.partition);
        let Some(end) = remaining.get(&key).copied() else {
            continue;
        };
        if rec.offset >= end {
            remaining.remove(&key);
            continue;
        }
        stats.records += 1;
        match handler.handle(&rec).await {
            Ok(()) => {}
            Err(HandleError::Malformed(_)) => stats.skipped += 1,
            Err(e) => return Err(RebuildError::Apply(e.to_string())),
        }
        if rec.offset + 1 >= end {
            remaining.remove(&key);
        }
    }
    sub.close().await?;
    Ok(stats)
}
