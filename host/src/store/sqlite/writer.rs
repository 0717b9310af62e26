//! The SQLite store's writer thread: every write is a job in its queue; the
//! thread takes every job waiting and commits them in one transaction (one
//! fsync for all), each job in a savepoint so that a refused one (a stale
//! fence) does not undo the others. Callers wait on a reply, async (the
//! engine) or blocking (the kv capability inside a guest call).

use super::backend;
use crate::store::StoreError;
use rusqlite::{Connection, TransactionBehavior};
use std::path::Path;
use std::sync::mpsc;
use tokio::sync::oneshot;

/// How many write jobs one transaction takes at most.
pub(super) const MAX_BATCH: usize = 512;

/// Where a write's result goes: an async caller (the engine) or a blocking
/// one (the kv capability, called from inside a guest).
pub(super) enum Reply<T> {
    Async(oneshot::Sender<Result<T, StoreError>>),
    Blocking(mpsc::SyncSender<Result<T, StoreError>>),
}

impl<T> Reply<T> {
    fn send(self, result: Result<T, StoreError>) {
        // A caller that went away no longer needs the answer.
        match self {
            Reply::Async(sender) => drop(sender.send(result)),
            Reply::Blocking(sender) => drop(sender.send(result)),
        }
    }
}

/// Sends a job's result once its batch committed, or the commit's error.
type Settled = Box<dyn FnOnce(Option<&str>) + Send>;

/// One write, run by the writer thread inside the batch's transaction.
pub(super) trait Job: Send {
    /// Runs the write; whether it succeeded, and how to answer once the batch commits.
    fn run(self: Box<Self>, db: &Connection, path: &Path) -> (bool, Settled);
    /// Answers a job whose batch could not even begin.
    fn abort(self: Box<Self>) -> Settled;
}

pub(super) struct Write<T, F> {
    pub(super) write: F,
    pub(super) reply: Reply<T>,
}

impl<T, F> Job for Write<T, F>
where
    T: Send + 'static,
    F: FnOnce(&Connection, &Path) -> Result<T, StoreError> + Send,
{
    fn run(self: Box<Self>, db: &Connection, path: &Path) -> (bool, Settled) {
        let result = (self.write)(db, path);
        settle(self.reply, result)
    }

    fn abort(self: Box<Self>) -> Settled {
        settle(self.reply, Err(StoreError::Backend(String::new()))).1
    }
}

fn settle<T: Send + 'static>(reply: Reply<T>, result: Result<T, StoreError>) -> (bool, Settled) {
    let ok = result.is_ok();
    let settled: Settled = Box::new(move |commit_error| match commit_error {
        Some(message) => reply.send(Err(StoreError::Backend(message.to_string()))),
        None => reply.send(result),
    });
    (ok, settled)
}

/// The writer thread: commits every queued job in one transaction.
pub(super) fn write_loop(mut connection: Connection, path: &Path, queue: mpsc::Receiver<Box<dyn Job>>) {
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let tx = match connection.transaction_with_behavior(TransactionBehavior::Immediate) {
            Ok(tx) => tx,
            Err(error) => {
                let message = backend(path, format!("cannot begin a transaction: {error}")).to_string();
                batch.into_iter().map(|job| job.abort()).for_each(|reply| reply(Some(&message)));
                continue;
            }
        };
        let replies: Vec<Settled> = batch.into_iter().map(|job| run_in_savepoint(&tx, path, job)).collect();
        match tx.commit() {
            Ok(()) => replies.into_iter().for_each(|reply| reply(None)),
            Err(error) => {
                let message = backend(path, format!("commit failed: {error}")).to_string();
                replies.into_iter().for_each(|reply| reply(Some(&message)));
            }
        }
    }
}

/// Runs one job inside the batch transaction, in a savepoint so that a
/// refused job (a stale fence) does not undo the others of the batch. The
/// savepoint statements are prepared once (rusqlite's `Savepoint` parses
/// them for every job).
fn run_in_savepoint(db: &Connection, path: &Path, job: Box<dyn Job>) -> Settled {
    let run = |sql: &str| db.prepare_cached(sql).and_then(|mut statement| statement.execute([])).map(drop);
    if let Err(error) = run("SAVEPOINT job") {
        let message = backend(path, error).to_string();
        let reply = job.abort();
        return Box::new(move |_| reply(Some(&message)));
    }
    let (ok, settled) = job.run(db, path);
    let released = if ok { run("RELEASE job") } else { run("ROLLBACK TO job").and_then(|()| run("RELEASE job")) };
    if let Err(error) = released {
        tracing::error!(path = %path.display(), "releasing a savepoint failed: {error}");
    }
    settled
}
