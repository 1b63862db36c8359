//! Rebuilding the view from the log: the view is a fold of pizza-ordered and pizza-status, so
//! reading both from the beginning into a fresh store gives the same rows as the live view. The
//! reading and folding are the framework's ([`framework::follow::rebuild`]).

pub use framework::follow::{RebuildError, Rebuilt, REBUILD_BATCH, STALL_TIMEOUT};

use crate::config::SysConfig;
use crate::store::ViewStore;
use crate::transport::Transport;

/// Reads pizza-status and pizza-ordered up to their current ends into `view` (which should be
/// empty).
pub async fn rebuild<T: Transport>(
    transport: &T,
    sys: &SysConfig,
    view: &ViewStore,
) -> Result<Rebuilt, RebuildError> {
    let topics = &sys.topics;
    framework::follow::rebuild(transport, &[&topics.status, &topics.ordered], sys, view).await
}
