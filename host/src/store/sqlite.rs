//! The embedded default store: one SQLite file in WAL mode, every commit
//! fsync'd (`synchronous = FULL`), with group commit.
//!
//! Writes go through one writer thread that takes every job waiting in its
//! queue and commits them in a single transaction (each in a savepoint, so
//! one refused job does not undo the others), so concurrent executions share
//! each fsync. Reads use a separate connection; WAL lets them run beside the
//! writer. Several processes may share the file (a `serve` and a `stepwise
//! complete` from a shell): SQLite serialises their transactions, and the
//! fencing check inside each append keeps one owner per execution. The
//! schema is versioned with `user_version` and migrated forward on open.

use super::kv::{check_quota, KvStore};
use super::{
    Append, Claim, Created, ExecutionStore, ExecutionSummary, Fence, HostId, HostRecord, InboxMessage, ListFilter,
    NewExecution, Ownership, StoreError, StoredExecution,
};
use crate::journal::{ExecutionId, ExecutionStatus, Timestamp};
use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

/// Schema migrations, applied in order; `user_version` counts those applied.
const MIGRATIONS: &[&str] = &[
    // 1: executions and their event logs.
    "CREATE TABLE executions (
        id TEXT PRIMARY KEY,
        workflow TEXT NOT NULL,
        definition TEXT NOT NULL,
        input TEXT NOT NULL,
        idempotency_key TEXT UNIQUE,
        status TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL
    );
    CREATE INDEX executions_by_status ON executions (status, created_at);
    CREATE INDEX executions_by_workflow ON executions (workflow, created_at);
    CREATE TABLE events (
        execution_id TEXT NOT NULL REFERENCES executions (id) ON DELETE CASCADE,
        seq INTEGER NOT NULL,
        at INTEGER NOT NULL,
        event TEXT NOT NULL,
        PRIMARY KEY (execution_id, seq)
    ) WITHOUT ROWID;",
    // 2: the kv capability's data.
    "CREATE TABLE kv (
        namespace TEXT NOT NULL,
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        PRIMARY KEY (namespace, key)
    ) WITHOUT ROWID;",
    // 3: tenants and child executions.
    "ALTER TABLE executions ADD COLUMN tenant TEXT;
    ALTER TABLE executions ADD COLUMN parent_id TEXT;",
    // 4: one copy of each definition; `executions.definition` holds `@<hash>`
    // (or, in rows written before, the definition itself).
    "CREATE TABLE definitions (
        hash TEXT PRIMARY KEY,
        definition TEXT NOT NULL
    ) WITHOUT ROWID;",
    // 5: ownership (owner host, fence), the timer index, why an execution
    // was marked failed without its log, hosts and the inbox.
    "ALTER TABLE executions ADD COLUMN owner TEXT;
    ALTER TABLE executions ADD COLUMN fence INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE executions ADD COLUMN next_due INTEGER;
    ALTER TABLE executions ADD COLUMN error TEXT;
    CREATE INDEX executions_by_due ON executions (next_due) WHERE next_due IS NOT NULL;
    CREATE INDEX executions_by_owner ON executions (owner) WHERE owner IS NOT NULL;
    CREATE TABLE hosts (
        id TEXT PRIMARY KEY,
        node TEXT NOT NULL,
        pid INTEGER NOT NULL,
        started_at INTEGER NOT NULL,
        heartbeat_at INTEGER NOT NULL,
        lease_ms INTEGER NOT NULL,
        address TEXT
    ) WITHOUT ROWID;
    CREATE TABLE inbox (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        execution_id TEXT NOT NULL REFERENCES executions (id) ON DELETE CASCADE,
        message TEXT NOT NULL,
        posted_at INTEGER NOT NULL,
        answer TEXT,
        answered_at INTEGER
    );
    CREATE INDEX inbox_open ON inbox (execution_id) WHERE answer IS NULL;",
];

/// How many write jobs one transaction takes at most.
const MAX_BATCH: usize = 512;

/// Executions in a SQLite file.
pub struct SqliteStore {
    path: PathBuf,
    writes: mpsc::Sender<Box<dyn Job>>,
    reader: Mutex<Connection>,
}

/// Where a write's result goes: an async caller (the engine) or a blocking
/// one (the kv capability, called from inside a guest).
enum Reply<T> {
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
trait Job: Send {
    /// Runs the write; whether it succeeded, and how to answer once the batch commits.
    fn run(self: Box<Self>, db: &Connection, path: &Path) -> (bool, Settled);
    /// Answers a job whose batch could not even begin.
    fn abort(self: Box<Self>) -> Settled;
}

struct Write<T, F> {
    write: F,
    reply: Reply<T>,
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

fn backend(path: &Path, error: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("{}: {error}", path.display()))
}

fn open_connection(path: &Path) -> Result<Connection, StoreError> {
    let connection = Connection::open(path).map_err(|e| backend(path, e))?;
    connection.busy_timeout(std::time::Duration::from_secs(5)).map_err(|e| backend(path, e))?;
    connection
        .execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")
        .map_err(|e| backend(path, format!("not a usable SQLite database: {e}")))?;
    Ok(connection)
}

fn migrate(connection: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let version: usize =
        connection.query_row("PRAGMA user_version", [], |row| row.get(0)).map_err(|e| backend(path, e))?;
    if version > MIGRATIONS.len() {
        return Err(backend(
            path,
            format!("schema version {version} is newer than this Stepwise ({}); upgrade Stepwise", MIGRATIONS.len()),
        ));
    }
    for (index, migration) in MIGRATIONS.iter().enumerate().skip(version) {
        let tx = connection.transaction_with_behavior(TransactionBehavior::Immediate).map_err(|e| backend(path, e))?;
        // Another process may have migrated meanwhile: read again inside the lock.
        let now: usize = tx.query_row("PRAGMA user_version", [], |row| row.get(0)).map_err(|e| backend(path, e))?;
        if now > index {
            continue;
        }
        tx.execute_batch(migration).map_err(|e| backend(path, format!("migration {}: {e}", index + 1)))?;
        tx.pragma_update(None, "user_version", index + 1).map_err(|e| backend(path, e))?;
        tx.commit().map_err(|e| backend(path, e))?;
    }
    Ok(())
}

impl SqliteStore {
    /// Opens (creating and migrating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let mut writer = open_connection(path)?;
        migrate(&mut writer, path)?;
        let reader = open_connection(path)?;
        let (writes, queue) = mpsc::channel();
        let writer_path = path.to_path_buf();
        std::thread::Builder::new()
            .name("stepwise-sqlite-writer".into())
            .spawn(move || write_loop(writer, &writer_path, queue))
            .map_err(|e| backend(path, e))?;
        Ok(Self { path: path.to_path_buf(), writes, reader: Mutex::new(reader) })
    }

    fn job<T, F>(&self, reply: Reply<T>, write: F) -> Result<(), StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection, &Path) -> Result<T, StoreError> + Send + 'static,
    {
        self.writes.send(Box::new(Write { write, reply })).map_err(|_| backend(&self.path, "the writer thread stopped"))
    }

    async fn write<T, F>(&self, write: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection, &Path) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, response) = oneshot::channel();
        self.job(Reply::Async(reply), write)?;
        response.await.map_err(|_| backend(&self.path, "the writer thread stopped"))?
    }

    fn write_blocking<T, F>(&self, write: F) -> Result<T, String>
    where
        T: Send + 'static,
        F: FnOnce(&Connection, &Path) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, response) = mpsc::sync_channel(1);
        self.job(Reply::Blocking(reply), write).map_err(|e| e.to_string())?;
        let stopped = || "the store's writer thread stopped".to_string();
        response.recv().map_err(|_| stopped())?.map_err(|e| e.to_string())
    }

    fn read<T>(&self, query: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T, StoreError> {
        let connection = self.reader.lock().expect("reader lock poisoned");
        query(&connection).map_err(|e| backend(&self.path, e))
    }
}

/// The writer thread: commits every queued job in one transaction.
fn write_loop(mut connection: Connection, path: &Path, queue: mpsc::Receiver<Box<dyn Job>>) {
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let mut tx = match connection.transaction_with_behavior(TransactionBehavior::Immediate) {
            Ok(tx) => tx,
            Err(error) => {
                let message = backend(path, format!("cannot begin a transaction: {error}")).to_string();
                batch.into_iter().map(|job| job.abort()).for_each(|reply| reply(Some(&message)));
                continue;
            }
        };
        let replies: Vec<Settled> = batch.into_iter().map(|job| run_in_savepoint(&mut tx, path, job)).collect();
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
/// refused job (a stale fence) does not undo the others of the batch.
fn run_in_savepoint(tx: &mut rusqlite::Transaction<'_>, path: &Path, job: Box<dyn Job>) -> Settled {
    let savepoint = match tx.savepoint() {
        Ok(savepoint) => savepoint,
        Err(error) => {
            let message = backend(path, error).to_string();
            let reply = job.abort();
            return Box::new(move |_| reply(Some(&message)));
        }
    };
    let (ok, settled) = job.run(&savepoint, path);
    let mut savepoint = savepoint;
    let released = if ok { savepoint.commit() } else { savepoint.rollback().and_then(|()| savepoint.commit()) };
    if let Err(error) = released {
        tracing::error!(path = %path.display(), "releasing a savepoint failed: {error}");
    }
    settled
}

fn now_ms() -> i64 {
    Timestamp::now().0 as i64
}

fn create(db: &Connection, path: &Path, execution: &NewExecution) -> Result<Created, StoreError> {
    if let Some(key) = &execution.idempotency_key {
        let existing: Option<String> = db
            .query_row("SELECT id FROM executions WHERE idempotency_key = ?1", params![key], |row| row.get(0))
            .optional()
            .map_err(|e| backend(path, e))?;
        if let Some(existing) = existing {
            return Ok(Created::Existing(ExecutionId::new(existing)));
        }
    }
    let record = &execution.workflow;
    db.prepare_cached("INSERT OR IGNORE INTO definitions (hash, definition) VALUES (?1, ?2)")
        .and_then(|mut statement| statement.execute(params![record.hash.as_ref(), record.json.as_ref()]))
        .map_err(|e| backend(path, e))?;
    let definition = format!("@{}", record.hash);
    db.prepare_cached(
        "INSERT INTO executions
            (id, workflow, definition, input, idempotency_key, status, created_at, updated_at, tenant, parent_id,
             owner, fence, next_due)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, ?8, ?9, ?10, 1, ?11)",
    )
    .and_then(|mut statement| {
        statement.execute(params![
            execution.id.as_str(),
            record.definition.name,
            definition,
            execution.input.to_string(),
            execution.idempotency_key,
            execution.status.as_str(),
            execution.created_at.0 as i64,
            execution.tenant,
            execution.parent.as_ref().map(|p| p.as_str()),
            execution.owner.as_ref().map(|owner| owner.0.as_str()),
            execution.next_due.map(|due| due.0 as i64),
        ])
    })
    .map_err(|e| backend(path, e))?;
    insert_events(db, path, &execution.id, 0, &execution.events)?;
    Ok(Created::New(1))
}

/// Inserts events numbered from `seq`; a number taken already is a conflict.
fn insert_events(
    db: &Connection,
    path: &Path,
    id: &ExecutionId,
    seq: u64,
    events: &[crate::journal::RecordedEvent],
) -> Result<(), StoreError> {
    let mut insert = db
        .prepare_cached("INSERT INTO events (execution_id, seq, at, event) VALUES (?1, ?2, ?3, ?4)")
        .map_err(|e| backend(path, e))?;
    for (offset, event) in events.iter().enumerate() {
        let seq = seq + offset as u64;
        let text = serde_json::to_string(&event.event).map_err(|e| backend(path, e))?;
        match insert.execute(params![id.as_str(), seq as i64, event.at.0 as i64, text]) {
            Ok(_) => {}
            Err(rusqlite::Error::SqliteFailure(error, _)) if error.code == rusqlite::ErrorCode::ConstraintViolation => {
                return Err(StoreError::Conflict(id.clone(), seq))
            }
            Err(error) => return Err(backend(path, error)),
        }
    }
    Ok(())
}

fn append(db: &Connection, path: &Path, append: &Append) -> Result<(), StoreError> {
    let fence: Option<i64> = db
        .prepare_cached("SELECT fence FROM executions WHERE id = ?1")
        .and_then(|mut statement| statement.query_row(params![append.id.as_str()], |row| row.get(0)).optional())
        .map_err(|e| backend(path, e))?;
    match fence {
        None => return Err(StoreError::NotFound(append.id.clone())),
        Some(fence) if fence as Fence != append.fence => {
            return Err(StoreError::Fenced(append.id.clone(), append.fence))
        }
        Some(_) => {}
    }
    insert_events(db, path, &append.id, append.seq, &append.events)?;
    let (status, at) = match append.status {
        Some((status, at)) => (Some(status.as_str()), Some(at.0 as i64)),
        None => (None, None),
    };
    db.prepare_cached(
        "UPDATE executions SET status = COALESCE(?2, status), updated_at = COALESCE(?3, updated_at),
            next_due = ?4, owner = CASE WHEN ?5 THEN NULL ELSE owner END
         WHERE id = ?1",
    )
    .and_then(|mut statement| {
        statement.execute(params![
            append.id.as_str(),
            status,
            at,
            append.next_due.map(|due| due.0 as i64),
            append.release
        ])
    })
    .map_err(|e| backend(path, e))?;
    if let Some(parent) = &append.wake {
        db.prepare_cached("UPDATE executions SET next_due = MIN(COALESCE(next_due, ?2), ?2) WHERE id = ?1")
            .and_then(|mut statement| statement.execute(params![parent.as_str(), now_ms()]))
            .map_err(|e| backend(path, e))?;
    }
    Ok(())
}

/// The live host a row's owner names, if its lease holds at `now`.
fn live_owner(db: &Connection, owner: Option<&str>, now: i64) -> rusqlite::Result<Option<(String, i64)>> {
    let Some(owner) = owner else { return Ok(None) };
    db.prepare_cached("SELECT id, heartbeat_at + lease_ms FROM hosts WHERE id = ?1 AND heartbeat_at + lease_ms > ?2")?
        .query_row(params![owner, now], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()
}

fn claim(db: &Connection, path: &Path, id: &ExecutionId, host: &HostId) -> Result<Claim, StoreError> {
    let row: Option<(Option<String>, i64)> = db
        .prepare_cached("SELECT owner, fence FROM executions WHERE id = ?1")
        .and_then(|mut statement| statement.query_row(params![id.as_str()], |r| Ok((r.get(0)?, r.get(1)?))).optional())
        .map_err(|e| backend(path, e))?;
    let Some((owner, fence)) = row else { return Ok(Claim::NotFound) };
    let other = owner.as_deref().filter(|owner| *owner != host.0);
    if let Some((holder, _)) = live_owner(db, other, now_ms()).map_err(|e| backend(path, e))? {
        return Ok(Claim::Held(HostId(holder)));
    }
    db.prepare_cached("UPDATE executions SET owner = ?2, fence = ?3 WHERE id = ?1")
        .and_then(|mut statement| statement.execute(params![id.as_str(), host.0, fence + 1]))
        .map_err(|e| backend(path, e))?;
    Ok(Claim::Claimed { fence: (fence + 1) as Fence, takeover: other.is_some() })
}

fn kv_set(db: &Connection, namespace: &str, key: &str, value: &str) -> Result<(), String> {
    let entries: usize = db
        .query_row("SELECT COUNT(*) FROM kv WHERE namespace = ?1", params![namespace], |row| row.get(0))
        .map_err(|e| e.to_string())?;
    let exists: bool = db
        .query_row("SELECT EXISTS (SELECT 1 FROM kv WHERE namespace = ?1 AND key = ?2)", params![namespace, key], |r| {
            r.get(0)
        })
        .map_err(|e| e.to_string())?;
    check_quota(key, value, entries, !exists)?;
    db.execute(
        "INSERT INTO kv (namespace, key, value) VALUES (?1, ?2, ?3)
         ON CONFLICT (namespace, key) DO UPDATE SET value = excluded.value",
        params![namespace, key, value],
    )
    .map_err(|e| e.to_string())?;
    Ok(())
}

fn parse_status(text: &str) -> ExecutionStatus {
    text.parse().unwrap_or(ExecutionStatus::Failed)
}

fn summary(row: &rusqlite::Row<'_>) -> rusqlite::Result<ExecutionSummary> {
    Ok(ExecutionSummary {
        execution_id: ExecutionId::new(row.get::<_, String>(0)?),
        workflow: row.get(1)?,
        status: parse_status(&row.get::<_, String>(2)?),
        created_at: Timestamp(row.get::<_, i64>(3)? as u64),
        updated_at: Timestamp(row.get::<_, i64>(4)? as u64),
        error: row.get(5)?,
    })
}

fn host_record(row: &rusqlite::Row<'_>) -> rusqlite::Result<HostRecord> {
    Ok(HostRecord {
        id: HostId(row.get(0)?),
        node: row.get(1)?,
        pid: row.get(2)?,
        started_at: Timestamp(row.get::<_, i64>(3)? as u64),
        heartbeat_at: Timestamp(row.get::<_, i64>(4)? as u64),
        lease_ms: row.get::<_, i64>(5)? as u64,
        address: row.get(6)?,
        owned: row.get::<_, i64>(7)? as u64,
    })
}

#[async_trait]
impl ExecutionStore for SqliteStore {
    async fn create(&self, execution: NewExecution) -> Result<Created, StoreError> {
        self.write(move |db, path| create(db, path, &execution)).await
    }

    async fn append(&self, request: Append) -> Result<(), StoreError> {
        self.write(move |db, path| append(db, path, &request)).await
    }

    async fn status(&self, id: &ExecutionId) -> Result<Option<ExecutionStatus>, StoreError> {
        let status: Option<String> = self.read(|db| {
            db.prepare_cached("SELECT status FROM executions WHERE id = ?1")?
                .query_row(params![id.as_str()], |row| row.get(0))
                .optional()
        })?;
        Ok(status.as_deref().map(parse_status))
    }

    async fn load(&self, id: &ExecutionId) -> Result<Option<StoredExecution>, StoreError> {
        let path = self.path.clone();
        let row = self.read(|db| {
            db.query_row(
                "SELECT definition, input, idempotency_key, status, created_at, tenant, parent_id, owner, fence
                 FROM executions WHERE id = ?1",
                params![id.as_str()],
                |row| {
                    Ok((
                        (row.get::<_, String>(0)?, row.get::<_, String>(1)?),
                        row.get::<_, Option<String>>(2)?,
                        row.get::<_, String>(3)?,
                        row.get::<_, i64>(4)?,
                        (row.get::<_, Option<String>>(5)?, row.get::<_, Option<String>>(6)?),
                        (row.get::<_, Option<String>>(7)?, row.get::<_, i64>(8)?),
                    ))
                },
            )
            .optional()
        })?;
        let Some(((definition, input), idempotency_key, status, created_at, (tenant, parent), (owner, fence))) = row
        else {
            return Ok(None);
        };
        let owner = self.read(|db| live_owner(db, owner.as_deref(), now_ms()))?.map(|(host, until)| Ownership {
            host: HostId(host),
            fence: fence as Fence,
            lease_until: Timestamp(until as u64),
        });
        let definition = match definition.strip_prefix('@') {
            Some(hash) => self.read(|db| {
                db.query_row("SELECT definition FROM definitions WHERE hash = ?1", params![hash], |row| row.get(0))
            })?,
            None => definition,
        };
        let events: Vec<(i64, String)> = self.read(|db| {
            let mut statement =
                db.prepare_cached("SELECT at, event FROM events WHERE execution_id = ?1 ORDER BY seq")?;
            let rows = statement.query_map(params![id.as_str()], |row| Ok((row.get(0)?, row.get(1)?)))?;
            rows.collect()
        })?;
        let corrupt =
            |what: &str, error: serde_json::Error| backend(&path, format!("execution {id}: corrupt {what}: {error}"));
        let events = events
            .into_iter()
            .map(|(at, text)| {
                Ok(crate::journal::RecordedEvent {
                    at: Timestamp(at as u64),
                    event: serde_json::from_str(&text).map_err(|e| corrupt("event", e))?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(Some(StoredExecution {
            id: id.clone(),
            workflow: Arc::new(serde_json::from_str(&definition).map_err(|e| corrupt("definition", e))?),
            input: serde_json::from_str(&input).map_err(|e| corrupt("input", e))?,
            idempotency_key,
            tenant,
            parent: parent.map(ExecutionId::new),
            status: parse_status(&status),
            created_at: Timestamp(created_at as u64),
            events,
            owner,
        }))
    }

    async fn list(&self, filter: &ListFilter) -> Result<Vec<ExecutionSummary>, StoreError> {
        self.read(|db| {
            let mut statement = db.prepare_cached(
                "SELECT id, workflow, status, created_at, updated_at, error FROM executions
                 WHERE (?1 IS NULL OR status = ?1) AND (?2 IS NULL OR workflow = ?2) AND (?4 IS NULL OR id < ?4)
                 ORDER BY id DESC LIMIT ?3",
            )?;
            let limit = filter.limit.map_or(-1, |limit| limit as i64);
            let rows = statement.query_map(
                params![
                    filter.status.map(|s| s.as_str()),
                    filter.workflow,
                    limit,
                    filter.before.as_ref().map(|id| id.as_str())
                ],
                summary,
            )?;
            rows.collect()
        })
    }

    async fn unfinished(&self) -> Result<Vec<ExecutionId>, StoreError> {
        self.read(|db| {
            let mut statement = db.prepare_cached(
                "SELECT id FROM executions WHERE status IN ('running', 'waiting', 'compensating') ORDER BY created_at",
            )?;
            let rows = statement.query_map([], |row| Ok(ExecutionId::new(row.get::<_, String>(0)?)))?;
            rows.collect()
        })
    }

    async fn count_by_status(&self) -> Result<Vec<(ExecutionStatus, u64)>, StoreError> {
        self.read(|db| {
            let mut statement = db.prepare_cached("SELECT status, COUNT(*) FROM executions GROUP BY status")?;
            let rows = statement
                .query_map([], |row| Ok((parse_status(&row.get::<_, String>(0)?), row.get::<_, i64>(1)? as u64)))?;
            rows.collect()
        })
    }

    async fn purge_finished_before(&self, cutoff: Timestamp) -> Result<usize, StoreError> {
        self.write(move |db, path| {
            let purged = db
                .execute(
                    "DELETE FROM executions WHERE status IN ('succeeded', 'compensated', 'failed') AND updated_at < ?1",
                    params![cutoff.0 as i64],
                )
                .map_err(|e| backend(path, e))?;
            db.execute_batch(
                "DELETE FROM definitions WHERE NOT EXISTS
                 (SELECT 1 FROM executions WHERE executions.definition = '@' || definitions.hash)",
            )
            .map_err(|e| backend(path, e))?;
            db.execute("DELETE FROM inbox WHERE answered_at < ?1", params![cutoff.0 as i64])
                .map_err(|e| backend(path, e))?;
            Ok(purged)
        })
        .await
    }

    async fn mark_unloadable(&self, id: &ExecutionId, reason: &str) -> Result<(), StoreError> {
        let (id, reason) = (id.clone(), reason.to_string());
        self.write(move |db, path| {
            let rows = db
                .execute(
                    "UPDATE executions SET status = 'failed', updated_at = ?2, error = ?3, owner = NULL,
                        next_due = NULL, fence = fence + 1
                     WHERE id = ?1",
                    params![id.as_str(), now_ms(), reason],
                )
                .map_err(|e| backend(path, e))?;
            if rows == 0 {
                return Err(StoreError::NotFound(id));
            }
            Ok(())
        })
        .await
    }

    async fn register_host(&self, host: &HostRecord) -> Result<(), StoreError> {
        let host = host.clone();
        self.write(move |db, path| {
            db.execute(
                "INSERT OR REPLACE INTO hosts (id, node, pid, started_at, heartbeat_at, lease_ms, address)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    host.id.0,
                    host.node,
                    host.pid,
                    host.started_at.0 as i64,
                    now_ms(),
                    host.lease_ms as i64,
                    host.address
                ],
            )
            .map_err(|e| backend(path, e))?;
            Ok(())
        })
        .await
    }

    async fn heartbeat(&self, host: &HostId) -> Result<(), StoreError> {
        let host = host.clone();
        self.write(move |db, path| {
            db.prepare_cached("UPDATE hosts SET heartbeat_at = ?2 WHERE id = ?1")
                .and_then(|mut statement| statement.execute(params![host.0, now_ms()]))
                .map_err(|e| backend(path, e))?;
            Ok(())
        })
        .await
    }

    async fn deregister_host(&self, host: &HostId) -> Result<(), StoreError> {
        let host = host.clone();
        self.write(move |db, path| {
            db.execute("UPDATE executions SET owner = NULL WHERE owner = ?1", params![host.0])
                .and_then(|_| db.execute("DELETE FROM hosts WHERE id = ?1", params![host.0]))
                .map_err(|e| backend(path, e))?;
            Ok(())
        })
        .await
    }

    async fn expire_host(&self, host: &HostId) -> Result<(), StoreError> {
        let host = host.clone();
        self.write(move |db, path| {
            db.execute("UPDATE hosts SET heartbeat_at = 0 WHERE id = ?1", params![host.0])
                .map_err(|e| backend(path, e))?;
            Ok(())
        })
        .await
    }

    async fn hosts(&self) -> Result<Vec<HostRecord>, StoreError> {
        self.read(|db| {
            let mut statement = db.prepare_cached(
                "SELECT id, node, pid, started_at, heartbeat_at, lease_ms, address,
                    (SELECT COUNT(*) FROM executions WHERE owner = hosts.id)
                 FROM hosts ORDER BY started_at",
            )?;
            let rows = statement.query_map([], host_record)?;
            rows.collect()
        })
    }

    async fn claim(&self, id: &ExecutionId, host: &HostId) -> Result<Claim, StoreError> {
        let (id, host) = (id.clone(), host.clone());
        self.write(move |db, path| claim(db, path, &id, &host)).await
    }

    async fn claimable(&self, now: Timestamp, limit: usize) -> Result<Vec<ExecutionId>, StoreError> {
        self.read(|db| {
            // Two index lookups (by status, by due time), then the owner's lease.
            let mut statement = db.prepare_cached(
                "SELECT id FROM (
                    SELECT id, created_at, owner FROM executions WHERE status IN ('running', 'compensating')
                    UNION
                    SELECT id, created_at, owner FROM executions
                     WHERE next_due <= ?1 AND status IN ('running', 'waiting', 'compensating')
                 ) AS due
                 WHERE owner IS NULL
                    OR NOT EXISTS (SELECT 1 FROM hosts WHERE hosts.id = due.owner AND heartbeat_at + lease_ms > ?1)
                 ORDER BY created_at LIMIT ?2",
            )?;
            let rows = statement
                .query_map(params![now.0 as i64, limit as i64], |row| Ok(ExecutionId::new(row.get::<_, String>(0)?)))?;
            rows.collect()
        })
    }

    async fn post(&self, id: &ExecutionId, message: &str) -> Result<i64, StoreError> {
        let (id, message) = (id.clone(), message.to_string());
        self.write(move |db, path| {
            let exists: bool = db
                .query_row("SELECT EXISTS (SELECT 1 FROM executions WHERE id = ?1)", params![id.as_str()], |r| r.get(0))
                .map_err(|e| backend(path, e))?;
            if !exists {
                return Err(StoreError::NotFound(id));
            }
            db.execute(
                "INSERT INTO inbox (execution_id, message, posted_at) VALUES (?1, ?2, ?3)",
                params![id.as_str(), message, now_ms()],
            )
            .map_err(|e| backend(path, e))?;
            Ok(db.last_insert_rowid())
        })
        .await
    }

    async fn inbox(&self, host: &HostId, only: Option<&ExecutionId>) -> Result<Vec<InboxMessage>, StoreError> {
        self.read(|db| {
            let mut statement = db.prepare_cached(
                "SELECT inbox.id, inbox.execution_id, inbox.message FROM inbox
                 JOIN executions ON executions.id = inbox.execution_id
                 WHERE inbox.answer IS NULL AND executions.owner = ?1 AND (?2 IS NULL OR inbox.execution_id = ?2)
                 ORDER BY inbox.id",
            )?;
            let rows = statement.query_map(params![host.0, only.map(|id| id.as_str())], |row| {
                Ok(InboxMessage {
                    id: row.get(0)?,
                    execution_id: ExecutionId::new(row.get::<_, String>(1)?),
                    message: row.get(2)?,
                })
            })?;
            rows.collect()
        })
    }

    async fn answer(&self, message: i64, answer: &str) -> Result<(), StoreError> {
        let answer = answer.to_string();
        self.write(move |db, path| {
            db.execute(
                "UPDATE inbox SET answer = ?2, answered_at = ?3 WHERE id = ?1 AND answer IS NULL",
                params![message, answer, now_ms()],
            )
            .map_err(|e| backend(path, e))?;
            Ok(())
        })
        .await
    }

    async fn answer_of(&self, message: i64) -> Result<Option<String>, StoreError> {
        self.read(|db| {
            db.prepare_cached("SELECT answer FROM inbox WHERE id = ?1")?
                .query_row(params![message], |row| row.get::<_, Option<String>>(0))
                .optional()
                .map(Option::flatten)
        })
    }

    fn kv(self: Arc<Self>) -> Option<Arc<dyn KvStore>> {
        Some(self)
    }
}

impl KvStore for SqliteStore {
    fn get(&self, namespace: &str, key: &str) -> Result<Option<String>, String> {
        self.read(|db| {
            db.query_row("SELECT value FROM kv WHERE namespace = ?1 AND key = ?2", params![namespace, key], |row| {
                row.get(0)
            })
            .optional()
        })
        .map_err(|e| e.to_string())
    }

    fn set(&self, namespace: &str, key: &str, value: &str) -> Result<(), String> {
        let (namespace, key, value) = (namespace.to_string(), key.to_string(), value.to_string());
        self.write_blocking(move |db, _| kv_set(db, &namespace, &key, &value).map_err(StoreError::Backend))
    }

    fn delete(&self, namespace: &str, key: &str) -> Result<bool, String> {
        let (namespace, key) = (namespace.to_string(), key.to_string());
        self.write_blocking(move |db, path| {
            db.execute("DELETE FROM kv WHERE namespace = ?1 AND key = ?2", params![namespace, key])
                .map(|rows| rows > 0)
                .map_err(|e| backend(path, e))
        })
    }
}
