//! The embedded default store: one SQLite file in WAL mode, every commit
//! fsync'd (`synchronous = FULL`), with group commit.
//!
//! Writes go through one writer thread that takes every job waiting in its
//! queue and commits them in a single transaction (see [`writer`] for how a
//! refused job is kept from undoing the others), so concurrent executions
//! share each fsync. Reads use a separate connection;
//! WAL lets them run beside the writer. Several processes may share the file (a `serve` and a `stepwise
//! complete` from a shell): SQLite serialises their transactions, and the
//! fencing check inside each append keeps one owner per execution. The
//! schema is versioned with `user_version` and migrated forward on open.

use super::by_hash::ByHash;
use super::kv::{check_quota, KvStore};
use super::{
    Append, Claim, Created, DueClaim, ExecutionStore, ExecutionSummary, Fence, HostId, HostRecord, InboxMessage,
    ListFilter, NewExecution, Ownership, StoreError, StoredExecution,
};
use crate::journal::{ExecutionId, ExecutionStatus, Timestamp};
use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension};
use schema::{migrate, open_connection};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;
use writer::{write_loop, Job, Reply};

/// An execution in flight, as the partial index `executions_in_flight`
/// states it; a query repeats it word for word so that SQLite may read that
/// index. Equalities joined by OR rather than `status IN (...)`: SQLite tests
/// a list of three or more through a temporary B-tree, and it tests an
/// index's condition at every insert of a row and every update of a column
/// the index holds (at 64 executions in flight, building and freeing those
/// B-trees took a fifth of the writer thread's time).
///
/// A scan puts it first in its `WHERE`: SQLite then finds the index usable
/// from this term alone. Placed after a `status = ?1`, SQLite would prove it
/// from the value bound to `?1`, and prepare the statement again whenever
/// that value changes. Changing it needs a migration that builds the index
/// anew (migration 9 spells it out; a test checks the two agree).
macro_rules! in_flight {
    () => {
        "(status = 'running' OR status = 'waiting' OR status = 'compensating')"
    };
}

mod due;
mod handoff;
mod log;
#[cfg(test)]
mod plans;
mod schema;
mod tokens;
mod writer;

/// Every execution in flight, oldest first (through `executions_in_flight`).
const UNFINISHED: &str = concat!("SELECT id FROM executions WHERE ", in_flight!(), " ORDER BY created_at");

/// Executions in a SQLite file.
pub struct SqliteStore {
    path: PathBuf,
    writes: mpsc::Sender<Box<dyn Job>>,
    reader: Mutex<Connection>,
    /// Definitions stored once by hash, parsed once.
    definitions: ByHash<crate::workflow::WorkflowDefinition>,
    /// How long writes have been taking: whether to poll for an answer.
    round_trips: handoff::RoundTrips,
}

pub(super) fn backend(path: &Path, error: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("{}: {error}", path.display()))
}

impl SqliteStore {
    /// Opens (creating and migrating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let mut writer = open_connection(path)?;
        migrate(&mut writer, path)?;
        let reader = open_connection(path)?;
        // Listings have a statement per combination of filters: room for them
        // beside the hot reads.
        reader.set_prepared_statement_cache_capacity(64);
        let (writes, queue) = mpsc::channel();
        let writer_path = path.to_path_buf();
        std::thread::Builder::new()
            .name("stepwise-sqlite-writer".into())
            .spawn(move || write_loop(writer, &writer_path, queue))
            .map_err(|e| backend(path, e))?;
        Ok(Self {
            path: path.to_path_buf(),
            writes,
            reader: Mutex::new(reader),
            definitions: ByHash::default(),
            round_trips: Default::default(),
        })
    }

    /// Queues `write` for the writer thread. It touches only the database,
    /// and may run twice (the first run rolled back: see [`writer`]). If it
    /// can fail after changing something, the change must be to rows: a
    /// schema change that a failure could follow belongs to the migrations
    /// (a lone idempotent `CREATE TABLE IF NOT EXISTS`, as the demo ledger's,
    /// cannot be followed by one).
    fn job<T, F>(&self, reply: Reply<T>, write: F) -> Result<(), StoreError>
    where
        T: Send + 'static,
        F: FnMut(&Connection, &Path) -> Result<T, StoreError> + Send + 'static,
    {
        self.writes.send(writer::job(write, reply)).map_err(|_| backend(&self.path, "the writer thread stopped"))
    }

    pub(super) async fn write<T, F>(&self, write: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnMut(&Connection, &Path) -> Result<T, StoreError> + Send + 'static,
    {
        let answer = self.queue(write)?;
        self.round_trips.wait(answer).await.ok_or_else(|| backend(&self.path, "the writer thread stopped"))?
    }

    /// Queues `write` for the writer thread's next commit and returns at
    /// once with where its answer comes once the write is durable. Writes
    /// commit in the order they were queued.
    fn queue<T, F>(&self, write: F) -> Result<oneshot::Receiver<Result<T, StoreError>>, StoreError>
    where
        T: Send + 'static,
        F: FnMut(&Connection, &Path) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        self.job(Reply::Async(reply), write)?;
        Ok(answer)
    }

    fn write_blocking<T, F>(&self, write: F) -> Result<T, String>
    where
        T: Send + 'static,
        F: FnMut(&Connection, &Path) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, response) = mpsc::sync_channel(1);
        self.job(Reply::Blocking(reply), write).map_err(|e| e.to_string())?;
        let stopped = || "the store's writer thread stopped".to_string();
        response.recv().map_err(|_| stopped())?.map_err(|e| e.to_string())
    }

    /// Queues a plain SQL write among the store's own writes (one fsync for
    /// all) and returns at once (an error if it cannot be queued) with where
    /// the answer comes once the write is durable: for the demo services'
    /// ledger, whose callers apply a call while its record is queued.
    pub(crate) fn submit_durably<T, F>(&self, mut write: F) -> Result<oneshot::Receiver<Result<T, StoreError>>, String>
    where
        T: Send + 'static,
        F: FnMut(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        self.queue(move |db: &Connection, path: &Path| write(db).map_err(|e| backend(path, e)))
            .map_err(|e| e.to_string())
    }

    /// Runs `query` on the reader connection (for the demo services' ledger).
    pub(crate) fn read_with<T>(&self, query: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T, String> {
        self.read(query).map_err(|e| e.to_string())
    }

    pub(super) fn read<T>(&self, query: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T, StoreError> {
        let connection = self.reader.lock().expect("reader lock poisoned");
        query(&connection).map_err(|e| backend(&self.path, e))
    }
}

/// The open messages posted for executions `?1` owns, oldest first. Read
/// from the open messages (few: each is answered within moments), each
/// execution looked up by id. Left to itself SQLite walks every execution the
/// host owns and probes the inbox for each (2.5 ms at 4,000 driven, and a
/// process that drives anything polls this every 20 ms).
const OPEN_MESSAGES_OF_HOST: &str = "SELECT inbox.id, inbox.execution_id, inbox.message
   FROM inbox INDEXED BY inbox_open
   JOIN executions ON executions.id = inbox.execution_id
  WHERE inbox.answer IS NULL AND +executions.owner = ?1
  ORDER BY inbox.id";

pub(super) fn now_ms() -> i64 {
    Timestamp::now().0 as i64
}

/// The live host a row's owner names, if its lease holds at `now`.
fn live_owner(db: &Connection, owner: Option<&str>, now: i64) -> rusqlite::Result<Option<(String, i64)>> {
    let Some(owner) = owner else { return Ok(None) };
    db.prepare_cached("SELECT id, heartbeat_at + lease_ms FROM hosts WHERE id = ?1 AND heartbeat_at + lease_ms > ?2")?
        .query_row(params![owner, now], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()
}

/// An execution claimed by host `?2` under fence `?3`, one above the fence
/// read in the same transaction. (Not `fence = fence + 1 ... RETURNING`:
/// SQLite collects returned rows in a temporary B-tree.)
const CLAIM_ROW: &str = "UPDATE executions SET owner = ?2, fence = ?3 WHERE id = ?1";

/// Claims execution `id` for `host` under the fence above `read`, the fence
/// read in this same transaction; the new fence.
fn claim_row(db: &Connection, id: &str, host: &HostId, read: i64) -> rusqlite::Result<Fence> {
    db.prepare_cached(CLAIM_ROW)?.execute(params![id, host.0, read + 1])?;
    Ok((read + 1) as Fence)
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
    let fence = claim_row(db, id.as_str(), host, fence).map_err(|e| backend(path, e))?;
    Ok(Claim::Claimed { fence, takeover: other.is_some() })
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
        tenant: row.get(6)?,
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
        // The input's JSON is made here, on an engine worker: the one writer
        // thread only writes rows (events come encoded).
        let input = execution.input.to_string();
        self.write(move |db, path| log::create(db, path, &execution, &input)).await
    }

    async fn append(&self, request: Append) -> Result<(), StoreError> {
        self.write(move |db, path| log::append(db, path, &request)).await
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
            db.prepare_cached(
                "SELECT definition, input, idempotency_key, status, created_at, tenant, parent_id, owner, fence
                 FROM executions WHERE id = ?1",
            )?
            .query_row(params![id.as_str()], |row| {
                Ok((
                    (row.get::<_, String>(0)?, row.get::<_, String>(1)?),
                    row.get::<_, Option<String>>(2)?,
                    row.get::<_, String>(3)?,
                    row.get::<_, i64>(4)?,
                    (row.get::<_, Option<String>>(5)?, row.get::<_, Option<String>>(6)?),
                    (row.get::<_, Option<String>>(7)?, row.get::<_, i64>(8)?),
                ))
            })
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
        let corrupt = |what: &str, error: serde_json::Error| {
            StoreError::Corrupt(id.clone(), format!("corrupt {what} in {}: {error}", path.display()))
        };
        let (workflow, definition_hash) = match definition.strip_prefix('@') {
            Some(hash) => {
                let workflow = self.definitions.get_or_try_make(hash, || {
                    let text: String = self.read(|db| {
                        db.prepare_cached("SELECT definition FROM definitions WHERE hash = ?1")?
                            .query_row(params![hash], |row| row.get(0))
                    })?;
                    serde_json::from_str(&text).map_err(|e| corrupt("definition", e))
                })?;
                (workflow, Some(hash.to_string()))
            }
            None => (Arc::new(serde_json::from_str(&definition).map_err(|e| corrupt("definition", e))?), None),
        };
        let events: Vec<(i64, String)> = self.read(|db| {
            let mut statement =
                db.prepare_cached("SELECT at, event FROM events WHERE execution_id = ?1 ORDER BY seq")?;
            let rows = statement.query_map(params![id.as_str()], |row| Ok((row.get(0)?, row.get(1)?)))?;
            rows.collect()
        })?;
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
            workflow,
            definition_hash,
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
        let (sql, values) = filter.sql(|n| format!("?{n}"));
        let limit = filter.limit.map_or(-1, |limit| limit as i64);
        self.read(move |db| {
            let mut statement = db.prepare_cached(&sql)?;
            let mut parameters: Vec<&dyn rusqlite::ToSql> = values.iter().map(|v| v as &dyn rusqlite::ToSql).collect();
            parameters.push(&limit);
            let rows = statement.query_map(parameters.as_slice(), summary)?;
            rows.collect()
        })
    }

    async fn unfinished(&self) -> Result<Vec<ExecutionId>, StoreError> {
        self.read(|db| {
            let mut statement = db.prepare_cached(UNFINISHED)?;
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

    async fn purge_finished_before(
        &self,
        cutoff: Timestamp,
        statuses: &[ExecutionStatus],
    ) -> Result<Vec<(ExecutionStatus, u64)>, StoreError> {
        let statuses: Vec<ExecutionStatus> = statuses.iter().copied().filter(|status| status.is_final()).collect();
        self.write(move |db, path| {
            let mut purged = Vec::new();
            for &status in &statuses {
                let count = db
                    .execute(
                        "DELETE FROM executions WHERE status = ?1 AND updated_at < ?2",
                        params![status.as_str(), cutoff.0 as i64],
                    )
                    .map_err(|e| backend(path, e))?;
                if count > 0 {
                    purged.push((status, count as u64));
                }
            }
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
                return Err(StoreError::NotFound(id.clone()));
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
            db.execute("UPDATE executions SET owner = NULL, fence = fence + 1 WHERE owner = ?1", params![host.0])
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

    async fn claim_due(&self, host: &HostId, now: Timestamp, limit: usize) -> Result<Vec<DueClaim>, StoreError> {
        let host = host.clone();
        self.write(move |db, path| due::claim_due(db, path, &host, now.0 as i64, limit)).await
    }

    async fn release(&self, id: &ExecutionId, fence: Fence) -> Result<(), StoreError> {
        let id = id.clone();
        self.write(move |db, path| {
            db.execute(
                "UPDATE executions SET owner = NULL WHERE id = ?1 AND fence = ?2",
                params![id.as_str(), fence as i64],
            )
            .map_err(|e| backend(path, e))?;
            Ok(())
        })
        .await
    }

    async fn post(&self, id: &ExecutionId, message: &str) -> Result<i64, StoreError> {
        let (id, message) = (id.clone(), message.to_string());
        self.write(move |db, path| {
            let exists: bool = db
                .query_row("SELECT EXISTS (SELECT 1 FROM executions WHERE id = ?1)", params![id.as_str()], |r| r.get(0))
                .map_err(|e| backend(path, e))?;
            if !exists {
                return Err(StoreError::NotFound(id.clone()));
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
        // One statement per case: `?2 IS NULL OR execution_id = ?2` would
        // make SQLite walk every execution the host owns even for one.
        let message = |row: &rusqlite::Row<'_>| {
            Ok(InboxMessage {
                id: row.get(0)?,
                execution_id: ExecutionId::new(row.get::<_, String>(1)?),
                message: row.get(2)?,
            })
        };
        self.read(|db| match only {
            Some(id) => db
                .prepare_cached(
                    "SELECT inbox.id, inbox.execution_id, inbox.message FROM inbox
                     JOIN executions ON executions.id = inbox.execution_id
                     WHERE inbox.answer IS NULL AND inbox.execution_id = ?2 AND executions.owner = ?1
                     ORDER BY inbox.id",
                )?
                .query_map(params![host.0, id.as_str()], message)?
                .collect(),
            None => db.prepare_cached(OPEN_MESSAGES_OF_HOST)?.query_map(params![host.0], message)?.collect(),
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
