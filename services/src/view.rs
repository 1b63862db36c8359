//! Rebuilding the view from the log: the view is a fold of pizza-ordered and pizza-status, so
//! reading both from the beginning into a fresh file gives the same rows as the live view.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::domain::OrderId;
use crate::services::status::Status;
use crate::services::ServiceConfig;
use crate::store::{StoreError, ViewStore};
use crate::transport::{ReadError, ReadToEnd, Transport, TransportError};
use crate::worker::{HandleError, Handler};

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
    let handler = Status {
        cfg: cfg.clone(),
        view: Arc::new(ViewStore::open(out)?),
    };
    let group = format!("pizza-view-rebuild-{}", OrderId::random());
    let mut reader = ReadToEnd::open(transport, &group, &[&topics.status, &topics.ordered]).await?;
    let mut stats = Rebuilt::default();
    while let Some(rec) = reader.next(STALL_TIMEOUT).await? {
        stats.records += 1;
        match handler.handle(&rec).await {
            Ok(()) => {}
            Err(HandleError::Malformed(_)) => stats.skipped += 1,
            Err(e) => return Err(RebuildError::Apply(e.to_string())),
        }
    }
    reader.close().await?;
    Ok(stats)
}
