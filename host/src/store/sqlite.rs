//! The embedded default store: one SQLite file in WAL mode, every commit
//! fsync'd (`synchronous = FULL`), with group commit.
//!
//! Writes go through one writer thread that takes every request waiting in
//! its queue and commits them in a single transaction, so concurrent
//! executions share each fsync. Reads use a separate connection; WAL lets
//! them run beside the writer. The schema is versioned with `user_version`
//! and migrated forward on open.

use super::{
    Created, ExecutionStore, ExecutionSummary, ListFilter, NewExecution, RecordedEvent, StoreError, StoredExecution,
};
use crate::engine::ExecutionStatus;
use crate::ids::ExecutionId;
use crate::sandbox::capabilities::kv::{check_quota, KvStore};
use crate::time::Timestamp;
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
];

/// How many write requests one transaction takes at most.
const MAX_BATCH: usize = 512;

/// Executions in a SQLite file.
pub struct SqliteStore {
    path: PathBuf,
    writes: mpsc::Sender<WriteRequest>,
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

/// Events (and maybe a status) for one execution, written together.
struct Append {
    id: ExecutionId,
    seq: u64,
    events: Vec<RecordedEvent>,
    status: Option<(ExecutionStatus, Timestamp)>,
}

enum WriteRequest {
    Create(Box<NewExecution>, Reply<Created>),
    Append(Box<Append>, Reply<()>),
    SetStatus(ExecutionId, ExecutionStatus, Timestamp, Reply<()>),
    KvSet(String, String, String, Reply<()>),
    KvDelete(String, String, Reply<bool>),
    Purge(Timestamp, Reply<usize>),
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

    async fn write<T>(&self, request: impl FnOnce(Reply<T>) -> WriteRequest) -> Result<T, StoreError> {
        let (reply, response) = oneshot::channel();
        self.writes.send(request(Reply::Async(reply))).map_err(|_| backend(&self.path, "the writer thread stopped"))?;
        response.await.map_err(|_| backend(&self.path, "the writer thread stopped"))?
    }

    fn write_blocking<T>(&self, request: impl FnOnce(Reply<T>) -> WriteRequest) -> Result<T, String> {
        let (reply, response) = mpsc::sync_channel(1);
        let stopped = || "the store's writer thread stopped".to_string();
        self.writes.send(request(Reply::Blocking(reply))).map_err(|_| stopped())?;
        response.recv().map_err(|_| stopped())?.map_err(|e| e.to_string())
    }

    fn read<T>(&self, query: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T, StoreError> {
        let connection = self.reader.lock().expect("reader lock poisoned");
        query(&connection).map_err(|e| backend(&self.path, e))
    }

    /// Deletes finished executions last updated before `cutoff`; returns how many.
    pub async fn purge_finished_before(&self, cutoff: Timestamp) -> Result<usize, StoreError> {
        self.write(|reply| WriteRequest::Purge(cutoff, reply)).await
    }
}

/// The writer thread: commits every queued request in one transaction.
fn write_loop(mut connection: Connection, path: &Path, queue: mpsc::Receiver<WriteRequest>) {
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(request) => batch.push(request),
                Err(_) => break,
            }
        }
        let mut tx = match connection.transaction_with_behavior(TransactionBehavior::Immediate) {
            Ok(tx) => tx,
            Err(error) => {
                let message = format!("cannot begin a transaction: {error}");
                let message = backend(path, message).to_string();
                batch.into_iter().map(|request| apply_failed(request)).for_each(|reply| reply(Some(&message)));
                continue;
            }
        };
        let replies: Vec<Settled> = batch.into_iter().map(|request| apply(&mut tx, path, request)).collect();
        match tx.commit() {
            Ok(()) => replies.into_iter().for_each(|reply| reply(None)),
            Err(error) => {
                let message = backend(path, format!("commit failed: {error}")).to_string();
                replies.into_iter().for_each(|reply| reply(Some(&message)));
            }
        }
    }
}

/// Sends a request's result once its batch committed, or the commit's error.
type Settled = Box<dyn FnOnce(Option<&str>) + Send>;

fn settle<T: Send + 'static>(reply: Reply<T>, result: Result<T, StoreError>) -> (bool, Settled) {
    let ok = result.is_ok();
    let settled: Settled = Box::new(move |commit_error| match commit_error {
        Some(message) => reply.send(Err(StoreError::Backend(message.to_string()))),
        None => reply.send(result),
    });
    (ok, settled)
}

/// A placeholder result for a request whose batch failed: the commit error
/// passed to the [`Settled`] replaces it.
fn never<T>() -> Result<T, StoreError> {
    Err(StoreError::Backend(String::new()))
}

fn apply_failed(request: WriteRequest) -> Settled {
    match request {
        WriteRequest::Create(_, reply) => settle(reply, never()).1,
        WriteRequest::Append(_, reply) => settle(reply, never()).1,
        WriteRequest::SetStatus(_, _, _, reply) => settle(reply, never()).1,
        WriteRequest::KvSet(_, _, _, reply) => settle(reply, never()).1,
        WriteRequest::KvDelete(_, _, reply) => settle(reply, never()).1,
        WriteRequest::Purge(_, reply) => settle(reply, never()).1,
    }
}

/// Applies one request inside the batch transaction, in a savepoint so that a
/// failing request (a conflict) does not undo the others of the batch.
fn apply(tx: &mut rusqlite::Transaction<'_>, path: &Path, request: WriteRequest) -> Settled {
    let mut savepoint = match tx.savepoint() {
        Ok(savepoint) => savepoint,
        Err(error) => {
            let message = backend(path, error).to_string();
            let reply = apply_failed(request);
            return Box::new(move |_| reply(Some(&message)));
        }
    };
    let (ok, settled) = match request {
        WriteRequest::Create(execution, reply) => settle(reply, create(&savepoint, path, &execution)),
        WriteRequest::Append(request, reply) => settle(reply, append(&savepoint, path, &request)),
        WriteRequest::SetStatus(id, status, at, reply) => settle(reply, set_status(&savepoint, path, &id, status, at)),
        WriteRequest::KvSet(namespace, key, value, reply) => {
            settle(reply, kv_set(&savepoint, &namespace, &key, &value).map_err(StoreError::Backend))
        }
        WriteRequest::KvDelete(namespace, key, reply) => {
            let result = savepoint
                .execute("DELETE FROM kv WHERE namespace = ?1 AND key = ?2", params![namespace, key])
                .map(|rows| rows > 0)
                .map_err(|e| backend(path, e));
            settle(reply, result)
        }
        WriteRequest::Purge(cutoff, reply) => {
            let result = savepoint
                .execute(
                    "DELETE FROM executions WHERE status IN ('succeeded', 'compensated', 'failed') AND updated_at < ?1",
                    params![cutoff.0 as i64],
                )
                .and_then(|purged| {
                    savepoint.execute(
                        "DELETE FROM definitions WHERE NOT EXISTS
                         (SELECT 1 FROM executions WHERE executions.definition = '@' || definitions.hash)",
                        [],
                    )?;
                    Ok(purged)
                })
                .map_err(|e| backend(path, e));
            settle(reply, result)
        }
    };
    let released = if ok { savepoint.commit() } else { savepoint.rollback().and_then(|()| savepoint.commit()) };
    if let Err(error) = released {
        tracing::error!(path = %path.display(), "releasing a savepoint failed: {error}");
    }
    settled
}

fn create(tx: &Connection, path: &Path, execution: &NewExecution) -> Result<Created, StoreError> {
    if let Some(key) = &execution.idempotency_key {
        let existing: Option<String> = tx
            .query_row("SELECT id FROM executions WHERE idempotency_key = ?1", params![key], |row| row.get(0))
            .optional()
            .map_err(|e| backend(path, e))?;
        if let Some(existing) = existing {
            return Ok(Created::Existing(ExecutionId::new(existing)));
        }
    }
    let record = &execution.workflow;
    tx.prepare_cached("INSERT OR IGNORE INTO definitions (hash, definition) VALUES (?1, ?2)")
        .and_then(|mut statement| statement.execute(params![record.hash.as_ref(), record.json.as_ref()]))
        .map_err(|e| backend(path, e))?;
    let definition = format!("@{}", record.hash);
    tx.execute(
        "INSERT INTO executions
            (id, workflow, definition, input, idempotency_key, status, created_at, updated_at, tenant, parent_id)
         VALUES (?1, ?2, ?3, ?4, ?5, 'running', ?6, ?6, ?7, ?8)",
        params![
            execution.id.as_str(),
            record.definition.name,
            definition,
            execution.input.to_string(),
            execution.idempotency_key,
            execution.created_at.0 as i64,
            execution.tenant,
            execution.parent.as_ref().map(|p| p.as_str()),
        ],
    )
    .map_err(|e| backend(path, e))?;
    Ok(Created::New)
}

fn set_status(
    tx: &Connection,
    path: &Path,
    id: &ExecutionId,
    status: ExecutionStatus,
    at: Timestamp,
) -> Result<(), StoreError> {
    let rows = tx
        .prepare_cached("UPDATE executions SET status = ?2, updated_at = ?3 WHERE id = ?1")
        .and_then(|mut statement| statement.execute(params![id.as_str(), status.as_str(), at.0 as i64]))
        .map_err(|e| backend(path, e))?;
    if rows == 1 {
        Ok(())
    } else {
        Err(StoreError::NotFound(id.clone()))
    }
}

fn append(tx: &Connection, path: &Path, request: &Append) -> Result<(), StoreError> {
    for (offset, event) in request.events.iter().enumerate() {
        append_one(tx, path, &request.id, request.seq + offset as u64, event)?;
    }
    if let Some((status, at)) = request.status {
        set_status(tx, path, &request.id, status, at)?;
    }
    Ok(())
}

fn append_one(
    tx: &Connection,
    path: &Path,
    id: &ExecutionId,
    seq: u64,
    event: &RecordedEvent,
) -> Result<(), StoreError> {
    let text = serde_json::to_string(&event.event).map_err(|e| backend(path, e))?;
    let inserted = tx
        .prepare_cached("INSERT INTO events (execution_id, seq, at, event) VALUES (?1, ?2, ?3, ?4)")
        .and_then(|mut statement| statement.execute(params![id.as_str(), seq as i64, event.at.0 as i64, text]));
    match inserted {
        Ok(_) => Ok(()),
        Err(rusqlite::Error::SqliteFailure(error, _)) if error.code == rusqlite::ErrorCode::ConstraintViolation => {
            let exists: bool = tx
                .query_row("SELECT EXISTS (SELECT 1 FROM executions WHERE id = ?1)", params![id.as_str()], |r| r.get(0))
                .map_err(|e| backend(path, e))?;
            if exists {
                Err(StoreError::Conflict(id.clone(), seq))
            } else {
                Err(StoreError::NotFound(id.clone()))
            }
        }
        Err(error) => Err(backend(path, error)),
    }
}

fn kv_set(tx: &Connection, namespace: &str, key: &str, value: &str) -> Result<(), String> {
    let entries: usize = tx
        .query_row("SELECT COUNT(*) FROM kv WHERE namespace = ?1", params![namespace], |row| row.get(0))
        .map_err(|e| e.to_string())?;
    let exists: bool = tx
        .query_row("SELECT EXISTS (SELECT 1 FROM kv WHERE namespace = ?1 AND key = ?2)", params![namespace, key], |r| {
            r.get(0)
        })
        .map_err(|e| e.to_string())?;
    check_quota(key, value, entries, !exists)?;
    tx.execute(
        "INSERT INTO kv (namespace, key, value) VALUES (?1, ?2, ?3)
         ON CONFLICT (namespace, key) DO UPDATE SET value = excluded.value",
        params![namespace, key, value],
    )
    .map_err(|e| e.to_string())?;
    Ok(())
}

fn parse_status(text: &str) -> ExecutionStatus {
    serde_json::from_value(serde_json::Value::String(text.to_string())).unwrap_or(ExecutionStatus::Failed)
}

#[async_trait]
impl ExecutionStore for SqliteStore {
    async fn create(&self, execution: NewExecution) -> Result<Created, StoreError> {
        self.write(|reply| WriteRequest::Create(Box::new(execution), reply)).await
    }

    async fn append(
        &self,
        id: &ExecutionId,
        seq: u64,
        events: Vec<RecordedEvent>,
        status: Option<(ExecutionStatus, Timestamp)>,
    ) -> Result<(), StoreError> {
        let request = Box::new(Append { id: id.clone(), seq, events, status });
        self.write(|reply| WriteRequest::Append(request, reply)).await
    }

    async fn set_status(&self, id: &ExecutionId, status: ExecutionStatus, at: Timestamp) -> Result<(), StoreError> {
        let id = id.clone();
        self.write(|reply| WriteRequest::SetStatus(id, status, at, reply)).await
    }

    async fn load(&self, id: &ExecutionId) -> Result<Option<StoredExecution>, StoreError> {
        let path = self.path.clone();
        let row = self.read(|db| {
            db.query_row(
                "SELECT definition, input, idempotency_key, status, created_at, tenant, parent_id
                 FROM executions WHERE id = ?1",
                params![id.as_str()],
                |row| {
                    Ok((
                        (row.get::<_, String>(0)?, row.get::<_, String>(1)?),
                        row.get::<_, Option<String>>(2)?,
                        row.get::<_, String>(3)?,
                        row.get::<_, i64>(4)?,
                        (row.get::<_, Option<String>>(5)?, row.get::<_, Option<String>>(6)?),
                    ))
                },
            )
            .optional()
        })?;
        let Some(((definition, input), idempotency_key, status, created_at, (tenant, parent))) = row else {
            return Ok(None);
        };
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
                Ok(RecordedEvent {
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
        }))
    }

    async fn list(&self, filter: &ListFilter) -> Result<Vec<ExecutionSummary>, StoreError> {
        self.read(|db| {
            let mut statement = db.prepare_cached(
                "SELECT id, workflow, status, created_at, updated_at FROM executions
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
                |row| {
                    Ok(ExecutionSummary {
                        execution_id: ExecutionId::new(row.get::<_, String>(0)?),
                        workflow: row.get(1)?,
                        status: parse_status(&row.get::<_, String>(2)?),
                        created_at: Timestamp(row.get::<_, i64>(3)? as u64),
                        updated_at: Timestamp(row.get::<_, i64>(4)? as u64),
                    })
                },
            )?;
            rows.collect()
        })
    }

    async fn unfinished(&self) -> Result<Vec<ExecutionId>, StoreError> {
        self.read(|db| {
            let mut statement = db.prepare_cached(
                "SELECT id FROM executions WHERE status NOT IN ('succeeded', 'compensated', 'failed') ORDER BY created_at",
            )?;
            let rows = statement.query_map([], |row| Ok(ExecutionId::new(row.get::<_, String>(0)?)))?;
            rows.collect()
        })
    }

    async fn purge_finished_before(&self, cutoff: Timestamp) -> Result<usize, StoreError> {
        SqliteStore::purge_finished_before(self, cutoff).await
    }

    async fn count_by_status(&self) -> Result<Vec<(ExecutionStatus, u64)>, StoreError> {
        self.read(|db| {
            let mut statement = db.prepare_cached("SELECT status, COUNT(*) FROM executions GROUP BY status")?;
            let rows = statement
                .query_map([], |row| Ok((parse_status(&row.get::<_, String>(0)?), row.get::<_, i64>(1)? as u64)))?;
            rows.collect()
        })
    }

    fn kv(self: std::sync::Arc<Self>) -> Option<std::sync::Arc<dyn KvStore>> {
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
        self.write_blocking(|reply| WriteRequest::KvSet(namespace.into(), key.into(), value.into(), reply))
    }

    fn delete(&self, namespace: &str, key: &str) -> Result<bool, String> {
        self.write_blocking(|reply| WriteRequest::KvDelete(namespace.into(), key.into(), reply))
    }
}
