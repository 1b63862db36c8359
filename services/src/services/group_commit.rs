//! Group commit for a service's store: handlers hand their write to one writer and wait until
//! the transaction that holds it has committed. The stores sync every commit (a power loss must not
//! roll back a write whose record's offset was committed); one transaction for all the writes
//! waiting at the moment pays that sync once per batch instead of once per record. A handler that
//! waits here has its write durable when it goes on, as if it had committed alone.

use crate::error::Report;
use crate::probes::{self, Probe};
use crate::store::StoreError;
use crate::worker::HandleError;
use tokio::sync::{mpsc, oneshot};

/// Why a batch did not commit, as each of its handlers hears it.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{message}")]
pub struct WriteFailed {
    /// The database was busy (worth trying again).
    pub busy: bool,
    message: String,
}

impl From<StoreError> for WriteFailed {
    fn from(e: StoreError) -> Self {
        WriteFailed {
            busy: e.is_busy(),
            message: Report(&e).to_string(),
        }
    }
}

impl From<WriteFailed> for HandleError {
    fn from(e: WriteFailed) -> Self {
        if e.busy {
            probes::hit(Probe::StoreBusy, "");
            HandleError::retriable(e)
        } else {
            HandleError::fatal(e)
        }
    }
}

type Reply = oneshot::Sender<Result<(), WriteFailed>>;

enum Msg<W> {
    Write(W, Reply),
    /// End the writer (after the writes sent before this one).
    Stop(oneshot::Sender<()>),
}

/// One writer committing writes of type `W` in batches of at most `max_batch`: on a thread of its
/// own, so a batch's sync does not run on the runtime's threads (a caller that uses the same
/// connection directly still waits for it); under madsim, as a task of the node (the simulation
/// runs one task at a time, and kills it with the node).
pub struct GroupCommit<W> {
    tx: mpsc::Sender<Msg<W>>,
}

/// The writer's state between batches.
struct Batches<W, C> {
    max_batch: usize,
    commit: C,
    writes: Vec<W>,
    waiting: Vec<Reply>,
}

impl<W, C: FnMut(&[W]) -> Result<(), StoreError>> Batches<W, C> {
    /// Commits `first` with every write queued behind it (up to the batch's size), then answers
    /// each; returns where to tell that the writer ended, if a stop was among them.
    fn commit(&mut self, first: Msg<W>, rx: &mut mpsc::Receiver<Msg<W>>) -> Option<oneshot::Sender<()>> {
        let mut next = Some(first);
        let mut stop = None;
        while let Some(msg) = next.take() {
            match msg {
                Msg::Write(w, reply) => {
                    self.writes.push(w);
                    self.waiting.push(reply);
                }
                Msg::Stop(done) => {
                    stop = Some(done);
                    break;
                }
            }
            if self.writes.len() < self.max_batch {
                next = rx.try_recv().ok();
            }
        }
        if !self.writes.is_empty() {
            let result = (self.commit)(&self.writes).map_err(WriteFailed::from);
            self.writes.clear();
            for w in self.waiting.drain(..) {
                let _ = w.send(result.clone());
            }
        }
        stop
    }
}

impl<W: Send + 'static> GroupCommit<W> {
    /// Starts the writer. `commit` writes a batch in one transaction.
    pub fn start(
        max_batch: usize,
        commit: impl FnMut(&[W]) -> Result<(), StoreError> + Send + 'static,
    ) -> GroupCommit<W> {
        let (tx, mut rx) = mpsc::channel::<Msg<W>>(max_batch);
        let mut batches = Batches {
            max_batch,
            commit,
            writes: Vec::with_capacity(max_batch),
            waiting: Vec::with_capacity(max_batch),
        };
        #[cfg(not(madsim))]
        std::thread::Builder::new()
            .name("group-commit".into())
            .spawn(move || {
                while let Some(first) = rx.blocking_recv() {
                    if let Some(done) = batches.commit(first, &mut rx) {
                        let _ = done.send(());
                        return;
                    }
                }
            })
            .expect("the store's writer thread");
        #[cfg(madsim)]
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                if let Some(done) = batches.commit(first, &mut rx) {
                    let _ = done.send(());
                    return;
                }
            }
        });
        GroupCommit { tx }
    }

    /// Writes `write`; returns once the transaction that holds it has committed.
    pub async fn write(&self, write: W) -> Result<(), WriteFailed> {
        let (done, committed) = oneshot::channel();
        let stopped = || WriteFailed {
            busy: false,
            message: "the store's writer stopped".into(),
        };
        self.tx
            .send(Msg::Write(write, done))
            .await
            .map_err(|_| stopped())?;
        committed.await.map_err(|_| stopped())?
    }

    /// Ends the writer once it has committed the writes sent before, and waits until it has: a
    /// stopped service writes nothing more. Writes sent after are refused.
    pub async fn stop(&self) {
        let (done, ended) = oneshot::channel();
        if self.tx.send(Msg::Stop(done)).await.is_ok() {
            let _ = ended.await;
        }
    }
}
