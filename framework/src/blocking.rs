//! Work that blocks (SQLite's: a fold, its sync) run off the runtime's worker threads, so the
//! tasks that share them (a web app's requests) never wait behind it.

/// Runs `work` on a thread of its own, off the runtime's worker threads; on the simulation's
/// one thread, in place. A panic in `work` is the caller's.
#[cfg(not(madsim))]
pub async fn off_runtime<R: Send + 'static>(work: impl FnOnce() -> R + Send + 'static) -> R {
    match tokio::task::spawn_blocking(work).await {
        Ok(r) => r,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => panic!("a store's work was cancelled: {e}"),
    }
}

/// See the other build's.
#[cfg(madsim)]
pub async fn off_runtime<R>(work: impl FnOnce() -> R) -> R {
    work()
}
