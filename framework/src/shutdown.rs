//! Graceful shutdown, as mini-redis does it: a broadcast that every task watches, and each task
//! finishes its in-flight work before it returns.

use tokio::sync::watch;

/// Fires the shutdown. Dropping it fires it too, so a forgotten trigger cannot hang a service.
#[derive(Debug)]
pub struct ShutdownTrigger(watch::Sender<bool>);

/// Watches for the shutdown; clone it into every task.
#[derive(Clone, Debug)]
pub struct Shutdown(watch::Receiver<bool>);

impl Shutdown {
    /// A trigger and its first watcher.
    pub fn new() -> (ShutdownTrigger, Shutdown) {
        let (tx, rx) = watch::channel(false);
        (ShutdownTrigger(tx), Shutdown(rx))
    }

    /// Resolves once the shutdown has fired (at once if it already has). Cancel-safe.
    pub async fn wait(&mut self) {
        let _ = self.0.wait_for(|fired| *fired).await;
    }

    /// Whether the shutdown has fired.
    pub fn is_fired(&self) -> bool {
        *self.0.borrow() || self.0.has_changed().is_err()
    }
}

impl ShutdownTrigger {
    /// Fires the shutdown; every watcher's `wait` resolves.
    pub fn fire(&self) {
        let _ = self.0.send(true);
    }

    /// Another watcher.
    pub fn subscribe(&self) -> Shutdown {
        Shutdown(self.0.subscribe())
    }
}
