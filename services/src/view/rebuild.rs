//! Rebuilding the view from the log: the view is a fold of pizza-ordered and pizza-status, so
//! reading both from the beginning into a fresh store gives the same rows as the live view. The
//! reading and folding are the framework's ([`framework::follow::rebuild`]).

pub use framework::follow::{RebuildError, Rebuilt, REBUILD_BATCH, STALL_TIMEOUT};

use super::{LogView, ViewUpdate};
use crate::config::SysConfig;
use crate::transport::Transport;

/// Reads pizza-status and pizza-ordered up to their current ends into `view` (which should be
/// empty: a fresh `ViewStore`, say).
pub async fn rebuild<T, V>(transport: &T, sys: &SysConfig, view: &V) -> Result<Rebuilt, RebuildError>
where
    T: Transport,
    V: LogView<Context = SysConfig, Update = ViewUpdate>,
{
    let topics = &sys.topics;
    framework::follow::rebuild(transport, &[&topics.status, &topics.ordered], sys, view).await
}
