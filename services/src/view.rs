//! Rebuilding the view from the log: the view is a fold of pizza-ordered and pizza-status, so
//! reading both from the beginning into a fresh file gives the same rows as the live view.

use std::path::Path;
use std::time::Duration;

use crate::domain::OrderId;
use crate::services::status::view_update;
use crate::services::ServiceConfig;
use crate::store::{StoreError, ViewStore};
use crate::transport::{ReadError, ReadToEnd, Transport, TransportError};

/// Why a rebuild failed.
#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0} already exists; rebuild writes a fresh file")]
    Exists(String),
}

/// What a rebuild read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rebuilt {
    pub records: u64,
    /// Records the status service would dead-letter: skipped here too.
    pub skipped: u64,
}

/// Updates applied per transaction while rebuilding.
pub const REBUILD_BATCH: usize = 1000;

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
    let view = ViewStore::open(out)?;
    let group = format!("pizza-view-rebuild-{}", OrderId::random());
    let mut reader = ReadToEnd::open(transport, &group, &[&topics.status, &topics.ordered]).await?;
    let mut stats = Rebuilt::default();
    // Records of one key arrive in order per topic; applying them in batches keeps that order and
    // commits once per batch instead of once per record.
    let mut batch = Vec::with_capacity(REBUILD_BATCH);
    while let Some(rec) = reader.next(STALL_TIMEOUT).await? {
        stats.records += 1;
        match view_update(&cfg.sys, &rec) {
            Ok(u) => batch.push(u),
            Err(_) => stats.skipped += 1,
        }
        if batch.len() == REBUILD_BATCH {
            view.apply_many(&cfg.sys.codes, &batch)?;
            batch.clear();
        }
    }
    view.apply_many(&cfg.sys.codes, &batch)?;
    reader.close().await?;
    Ok(stats)
}
