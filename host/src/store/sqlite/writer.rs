//! The SQLite store's writer thread: every write is a job in its queue; the
//! thread takes every job waiting (see [`super::handoff`] for how it waits
//! for the next) and commits them in one transaction (one fsync for all).
//! The jobs of a batch run one after the other in its transaction, with no
//! savepoints: jobs are almost never refused, and most refusals (a stale
//! fence) come before they change anything. When a job is refused after it
//! changed rows, the transaction is rolled back and the batch runs again,
//! each job in a savepoint of its own, so that the refused one's changes are
//! undone alone (a job is a closure that can run twice; it answers with its
//! last run's result). A job alone runs in the transaction itself, rolled back if it is
//! refused. Callers wait on a reply, async (the engine) or blocking (the kv
//! capability inside a guest call).

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

/// One write, run by the writer thread inside the batch's transaction.
pub(super) trait Job: Send {
    /// Runs the write (again, if an earlier run's transaction was rolled
    /// back: its result replaces the earlier one's); whether it succeeded.
    fn run(&mut self, db: &Connection, path: &Path) -> bool;
    /// Answers with the last run's result once the batch committed, or with
    /// `batch_error` (the commit failed, or the batch could not run).
    fn settle(self: Box<Self>, batch_error: Option<&str>);
}

/// `write` as a job of the writer's queue, answering `reply`.
pub(super) fn job<T, F>(write: F, reply: Reply<T>) -> Box<dyn Job>
where
    T: Send + 'static,
    F: FnMut(&Connection, &Path) -> Result<T, StoreError> + Send + 'static,
{
    Box::new(Write { write, reply, result: None })
}

/// A write as the writer holds it, with its last run's result.
struct Write<T, F> {
    write: F,
    reply: Reply<T>,
    result: Option<Result<T, StoreError>>,
}

impl<T, F> Job for Write<T, F>
where
    T: Send + 'static,
    F: FnMut(&Connection, &Path) -> Result<T, StoreError> + Send,
{
    fn run(&mut self, db: &Connection, path: &Path) -> bool {
        let result = (self.write)(db, path);
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn settle(self: Box<Self>, batch_error: Option<&str>) {
        let result = match (batch_error, self.result) {
            (None, Some(result)) => result,
            (Some(message), _) => Err(StoreError::Backend(message.to_string())),
            (None, None) => Err(StoreError::Backend("the write never ran".into())),
        };
        self.reply.send(result);
    }
}

/// The writer thread: commits every queued job in one transaction.
pub(super) fn write_loop(mut connection: Connection, path: &Path, queue: mpsc::Receiver<Box<dyn Job>>) {
    while let Some(first) = super::handoff::next_job(&queue) {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let tx = match begin(&mut connection, path) {
            Ok(tx) => tx,
            Err(message) => {
                batch.into_iter().for_each(|job| job.settle(Some(&message)));
                continue;
            }
        };
        if batch.len() == 1 {
            let job = batch.pop().expect("a batch of one");
            commit_alone(tx, path, job);
            continue;
        }
        if run_without_savepoints(&tx, path, &mut batch) {
            commit_batch(tx, path, batch);
            continue;
        }
        roll_back(tx, path, "a batch to run it again");
        let tx = match begin(&mut connection, path) {
            Ok(tx) => tx,
            Err(message) => {
                batch.into_iter().for_each(|job| job.settle(Some(&message)));
                continue;
            }
        };
        let mut intact = true;
        for job in &mut batch {
            // Once the transaction is broken, the rest are not run at all.
            if intact {
                intact = run_in_savepoint(&tx, path, job.as_mut());
            }
        }
        if !intact {
            // A savepoint could not be released or rolled back, or SQLite
            // ended the transaction itself (a full disk): nothing of the
            // batch may be committed, and every job is told so.
            drop(tx.rollback());
            let message = backend(path, "the batch's transaction failed and was rolled back").to_string();
            batch.into_iter().for_each(|job| job.settle(Some(&message)));
            continue;
        }
        commit_batch(tx, path, batch);
    }
}

/// Runs every job of the batch in its transaction, with no savepoint, as
/// jobs almost always succeed; whether that worked. A job refused before it
/// changed a row (a stale fence, an unknown execution, a kv quota: SQLite's
/// count of changed rows did not move) leaves nothing to undo and the others
/// go on. One refused after it changed rows would need its changes undone
/// alone: false, and the batch is run again with a savepoint per job. So is a
/// transaction found ended (by SQLite, on a full disk): the next job would
/// commit on its own; the run with savepoints then finds it ended again and
/// fails the whole batch. A write that can fail after a schema change (not
/// counted as changed rows) has no place in a job: see `SqliteStore::job`.
fn run_without_savepoints(tx: &Connection, path: &Path, batch: &mut [Box<dyn Job>]) -> bool {
    for job in batch.iter_mut() {
        if tx.is_autocommit() {
            return false;
        }
        let before = tx.total_changes();
        if !job.run(tx, path) && tx.total_changes() != before {
            return false;
        }
    }
    !tx.is_autocommit()
}

/// Rolls `tx` back, unless SQLite ended it already (then there is nothing
/// to undo). A rollback that fails leaves the transaction open: the next
/// batch ends it (`end_open_transaction`).
fn roll_back(tx: rusqlite::Transaction<'_>, path: &Path, what: &str) {
    if tx.is_autocommit() {
        return;
    }
    if let Err(error) = tx.rollback() {
        tracing::error!(path = %path.display(), "rolling back {what} failed: {error}");
    }
}

/// Begins the batch's transaction, first ending one an earlier batch left
/// open; the error for the batch's jobs if it cannot.
fn begin<'c>(connection: &'c mut Connection, path: &Path) -> Result<rusqlite::Transaction<'c>, String> {
    end_open_transaction(connection, path)?;
    connection
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|error| backend(path, format!("cannot begin a transaction: {error}")).to_string())
}

/// Commits a batch whose jobs all ran (each settles with its own result; a
/// refused one left nothing, or its savepoint undid it), or tells each the
/// commit failed.
fn commit_batch(tx: rusqlite::Transaction<'_>, path: &Path, batch: Vec<Box<dyn Job>>) {
    match tx.commit() {
        Ok(()) => batch.into_iter().for_each(|job| job.settle(None)),
        Err(error) => {
            let message = backend(path, format!("commit failed: {error}")).to_string();
            batch.into_iter().for_each(|job| job.settle(Some(&message)));
        }
    }
}

/// Ends a transaction an earlier batch left open (its rollback failed), so
/// that one failed rollback does not refuse every later batch; an error
/// (for this batch's jobs) while it cannot be ended.
fn end_open_transaction(connection: &Connection, path: &Path) -> Result<(), String> {
    if connection.is_autocommit() {
        return Ok(());
    }
    tracing::warn!(path = %path.display(), "a transaction was left open by a failed rollback: rolling it back");
    match connection.execute_batch("ROLLBACK") {
        Ok(()) if connection.is_autocommit() => Ok(()),
        Ok(()) => Err(backend(path, "a transaction left open could not be ended").to_string()),
        Err(error) => {
            Err(backend(path, format!("a transaction left open could not be rolled back: {error}")).to_string())
        }
    }
}

/// Runs a batch of one job (writes one at a time, the usual case of a
/// sequential execution): its transaction is its savepoint, rolled back when
/// the job is refused, so the two statements of a savepoint are saved.
fn commit_alone(tx: rusqlite::Transaction<'_>, path: &Path, mut job: Box<dyn Job>) {
    if !job.run(&tx, path) {
        // Refused or failed, its own error goes back (the cause SQLite
        // gave, if SQLite ended the transaction itself): nothing of it may
        // stay.
        roll_back(tx, path, "a refused write");
        return job.settle(None);
    }
    if tx.is_autocommit() {
        // SQLite ended the transaction itself (a full disk) although the
        // write reported success: nothing was committed.
        tracing::error!(path = %path.display(), "SQLite rolled the transaction back during a write");
        let message = backend(path, "the write's transaction failed and was rolled back").to_string();
        return job.settle(Some(&message));
    }
    match tx.commit() {
        Ok(()) => job.settle(None),
        Err(error) => job.settle(Some(&backend(path, format!("commit failed: {error}")).to_string())),
    }
}

/// Runs one job inside the batch transaction, in a savepoint so that a job
/// refused after it changed rows does not undo the others of the batch. The
/// savepoint statements are prepared once (rusqlite's `Savepoint` parses
/// them for every job). Returns whether the batch's transaction is still
/// whole.
fn run_in_savepoint(db: &Connection, path: &Path, job: &mut dyn Job) -> bool {
    // Outside a transaction, a savepoint would begin one of its own and its
    // release would commit the job alone.
    if db.is_autocommit() {
        return false;
    }
    let run = |sql: &str| db.prepare_cached(sql).and_then(|mut statement| statement.execute([])).map(drop);
    if let Err(error) = run("SAVEPOINT job") {
        tracing::error!(path = %path.display(), "opening a savepoint failed: {error}");
        return false;
    }
    let ok = job.run(db, path);
    if db.is_autocommit() {
        tracing::error!(path = %path.display(), "SQLite rolled the batch's transaction back during a write");
        return false;
    }
    let released = if ok { run("RELEASE job") } else { run("ROLLBACK TO job").and_then(|()| run("RELEASE job")) };
    if let Err(error) = released {
        tracing::error!(path = %path.display(), "releasing a savepoint failed: {error}");
        return false;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    fn job<F>(write: F) -> (Box<dyn Job>, mpsc::Receiver<Result<(), StoreError>>)
    where
        F: FnMut(&Connection, &Path) -> Result<(), StoreError> + Send + 'static,
    {
        let (reply, answer) = mpsc::sync_channel(1);
        (super::job(write, Reply::Blocking(reply)), answer)
    }

    fn insert(n: i64) -> impl FnMut(&Connection, &Path) -> Result<(), StoreError> + Send + 'static {
        move |db, path| db.execute("INSERT INTO t (n) VALUES (?1)", [n]).map(drop).map_err(|e| backend(path, e))
    }

    /// A new database with a table `t (n)`, in a directory of its own.
    fn new_database(name: &str) -> (std::path::PathBuf, Connection) {
        let dir = std::env::temp_dir().join(format!("stepwise-writer-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("w.db");
        let connection = Connection::open(&path).unwrap();
        connection.execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE t (n INTEGER)").unwrap();
        (path, connection)
    }

    /// The `n` committed in the database at `path`, sorted; its directory is removed.
    fn committed_then_removed(path: &Path) -> Vec<i64> {
        let check = Connection::open(path).unwrap();
        let mut rows: Vec<i64> = check
            .prepare("SELECT n FROM t")
            .unwrap()
            .query_map([], |row| row.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        rows.sort();
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
        rows
    }

    /// Runs `jobs` as one batch (all queued before the writer starts) on a
    /// new database; returns the `n` committed, sorted.
    fn one_batch(name: &str, jobs: Vec<Box<dyn Job>>) -> Vec<i64> {
        let (path, connection) = new_database(name);
        let (queue, queued) = mpsc::channel::<Box<dyn Job>>();
        for job in jobs {
            queue.send(job).map_err(drop).unwrap();
        }
        drop(queue);
        write_loop(connection, &path, queued);
        committed_then_removed(&path)
    }

    #[test]
    fn a_batch_whose_transaction_ended_under_it_commits_nothing_and_fails_every_job() {
        // The second job ends the transaction itself, as SQLite does on a
        // full disk; the third would then run outside any transaction and
        // commit alone.
        let (first, first_answer) = job(insert(1));
        let (ending, ending_answer) =
            job(|db: &Connection, path: &Path| db.execute_batch("ROLLBACK").map_err(|e| backend(path, e)));
        let (third, third_answer) = job(insert(3));
        let committed = one_batch("ended", vec![first, ending, third]);
        for answer in [first_answer, ending_answer, third_answer] {
            assert!(answer.recv().unwrap().is_err(), "every job of the broken batch is told it failed");
        }
        assert_eq!(committed, Vec::<i64>::new(), "nothing of the broken batch is committed");
    }

    #[test]
    fn a_refused_job_is_undone_alone_and_the_others_commit() {
        let (first, first_answer) = job(insert(1));
        let (refused, refused_answer) = job(|db: &Connection, path: &Path| {
            insert(2)(db, path)?;
            Err(StoreError::Backend("refused after writing".into()))
        });
        let (third, third_answer) = job(insert(3));
        let committed = one_batch("refused", vec![first, refused, third]);
        assert!(first_answer.recv().unwrap().is_ok());
        assert!(refused_answer.recv().unwrap().is_err());
        assert!(third_answer.recv().unwrap().is_ok());
        assert_eq!(committed, [1, 3], "the batch ran twice (once undone), its writes are committed once");
    }

    /// `insert(n)` counting its runs in `runs`.
    fn counted(n: i64, runs: &Arc<AtomicUsize>) -> impl FnMut(&Connection, &Path) -> Result<(), StoreError> {
        let runs = runs.clone();
        let mut insert = insert(n);
        move |db, path| {
            runs.fetch_add(1, Ordering::Relaxed);
            insert(db, path)
        }
    }

    #[test]
    fn a_batch_runs_once_without_savepoints_unless_a_job_is_refused() {
        let runs = Arc::new(AtomicUsize::new(0));
        let (jobs, answers): (Vec<_>, Vec<_>) = (1..=3).map(|n| job(counted(n, &runs))).unzip();
        assert_eq!(one_batch("once", jobs), [1, 2, 3]);
        assert!(answers.iter().all(|answer| answer.recv().unwrap().is_ok()));
        assert_eq!(runs.load(Ordering::Relaxed), 3, "each job ran once");

        // A refusal before any change: nothing to undo, nothing runs again.
        let runs = Arc::new(AtomicUsize::new(0));
        let (first, first_answer) = job(counted(1, &runs));
        let (refused, refused_answer) = job(|_: &Connection, _: &Path| Err(StoreError::Backend("refused".into())));
        let (last, last_answer) = job(counted(3, &runs));
        assert_eq!(one_batch("before", vec![first, refused, last]), [1, 3]);
        assert!(first_answer.recv().unwrap().is_ok() && last_answer.recv().unwrap().is_ok());
        assert!(refused_answer.recv().unwrap().is_err());
        assert_eq!(runs.load(Ordering::Relaxed), 2, "each other job ran once");

        // A refusal after a change: the first job ran before it and runs
        // again in its savepoint; the last ran only then.
        let runs = Arc::new(AtomicUsize::new(0));
        let (first, first_answer) = job(counted(1, &runs));
        let (refused, refused_answer) = job(|db: &Connection, path: &Path| {
            insert(2)(db, path)?;
            Err(StoreError::Backend("refused after writing".into()))
        });
        let (last, last_answer) = job(counted(3, &runs));
        assert_eq!(one_batch("again", vec![first, refused, last]), [1, 3]);
        assert!(first_answer.recv().unwrap().is_ok() && last_answer.recv().unwrap().is_ok());
        assert!(refused_answer.recv().unwrap().is_err());
        assert_eq!(runs.load(Ordering::Relaxed), 3, "the first job twice, the last once");
    }

    #[test]
    fn a_failed_statement_leaves_the_count_of_changed_rows_alone() {
        // What `run_without_savepoints` relies on: a statement SQLite aborts
        // (here a constraint, after it inserted a first row) undoes its rows
        // and counts none of them.
        let (path, connection) = new_database("count");
        connection.execute_batch("CREATE UNIQUE INDEX t_n ON t (n); INSERT INTO t (n) VALUES (5)").unwrap();
        let before = connection.total_changes();
        let failed = connection.execute("INSERT INTO t (n) VALUES (4), (5)", []);
        assert!(failed.is_err());
        assert_eq!(connection.total_changes(), before, "nothing counted");
        drop(connection);
        assert_eq!(committed_then_removed(&path), [5], "nothing of the statement stays");
    }

    /// Runs each job as a batch of its own (the next is queued once the
    /// last was answered) on a new database; returns each job's answer and
    /// the `n` committed, sorted. `left_open`: the connection comes with a
    /// transaction open, holding a write.
    fn one_by_one(
        name: &str,
        left_open: bool,
        writes: Vec<Box<dyn Job>>,
        answers: Vec<mpsc::Receiver<Result<(), StoreError>>>,
    ) -> (Vec<Result<(), StoreError>>, Vec<i64>) {
        let (path, connection) = new_database(name);
        if left_open {
            // As a rollback that failed would leave it, with a write in it.
            connection.execute_batch("BEGIN; INSERT INTO t (n) VALUES (0)").unwrap();
        }
        let (queue, queued) = mpsc::channel::<Box<dyn Job>>();
        let writer_path = path.clone();
        let writer = std::thread::spawn(move || write_loop(connection, &writer_path, queued));
        let results = writes
            .into_iter()
            .zip(answers)
            .map(|(job, answer)| {
                queue.send(job).map_err(drop).unwrap();
                answer.recv().unwrap()
            })
            .collect();
        drop(queue);
        writer.join().unwrap();
        (results, committed_then_removed(&path))
    }

    #[test]
    fn a_write_alone_in_its_batch_is_undone_when_refused_or_when_its_transaction_ends_under_it() {
        let (first, first_answer) = job(insert(1));
        let (refused, refused_answer) = job(|db: &Connection, path: &Path| {
            insert(2)(db, path)?;
            Err(StoreError::Fenced(crate::journal::ExecutionId::new("e"), 1))
        });
        let (ending, ending_answer) = job(|db: &Connection, path: &Path| {
            insert(3)(db, path)?;
            db.execute_batch("ROLLBACK").map_err(|e| backend(path, e))
        });
        let (last, last_answer) = job(insert(4));
        let (results, committed) = one_by_one(
            "alone",
            false,
            vec![first, refused, ending, last],
            vec![first_answer, refused_answer, ending_answer, last_answer],
        );
        assert!(results[0].is_ok() && results[3].is_ok(), "{results:?}");
        assert!(matches!(results[1], Err(StoreError::Fenced(..))), "a refusal keeps its own error: {results:?}");
        assert!(
            matches!(&results[2], Err(StoreError::Backend(message)) if message.contains("rolled back")),
            "{results:?}"
        );
        assert_eq!(committed, [1, 4], "nothing of the refused or broken write stays");
    }

    #[test]
    fn a_transaction_left_open_is_rolled_back_before_the_next_batch_instead_of_refusing_it() {
        let (first, first_answer) = job(insert(1));
        let (results, committed) = one_by_one("left-open", true, vec![first], vec![first_answer]);
        assert!(results[0].is_ok(), "{results:?}");
        assert_eq!(committed, [1], "the open transaction's write is undone, the batch's committed");
    }
}
