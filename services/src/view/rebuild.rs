//! Rebuilding the view from the log: the view is a fold of pizza-ordered and pizza-status, so
//! reading both from the beginning into a fresh sink gives the same rows as the live view.

use std::time::Duration;

use super::{view_update, ViewSink};
use crate::config::SysConfig;
use crate::error::BoxError;
use crate::transport::{ReadError, ReadToEnd, Transport, TransportError};

/// Why a rebuild failed.
#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("writing the rebuilt view")]
    Sink(#[source] BoxError),
}

/// What a rebuild read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rebuilt {
    pub records: u64,
    /// Records the status service would dead-letter: skipped here too.
    pub skipped: u64,
    /// Records that could not be read at all (a batch that cannot be decoded): passed over.
    pub unreadable: u64,
}

/// Updates applied per transaction while rebuilding.
pub const REBUILD_BATCH: usize = 1000;

/// How long a rebuild waits for the next record before it gives up.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Reads pizza-ordered and pizza-status up to their current ends into `view` (which should be
/// empty).
pub async fn rebuild<T: Transport, V: ViewSink>(
    transport: &T,
    sys: &SysConfig,
    view: &V,
) -> Result<Rebuilt, RebuildError> {
    let topics = &sys.topics;
    let apply = |batch: &[_]| {
        view.apply_many(&sys.codes, batch)
            .map_err(|e| RebuildError::Sink(Box::new(e)))
    };
    let mut reader = ReadToEnd::open(transport, &[&topics.status, &topics.ordered]).await?;
    let mut stats = Rebuilt::default();
    // Records of one key arrive in order per topic; applying them in batches keeps that order and
    // commits once per batch instead of once per record.
    let mut batch = Vec::with_capacity(REBUILD_BATCH);
    while let Some(rec) = reader.next(transport, STALL_TIMEOUT).await? {
        stats.records += 1;
        match view_update(sys, &rec, reader.partitions(&rec.topic)) {
            Ok(u) => batch.push(u),
            Err(_) => stats.skipped += 1,
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
