//! The shared store: PostgreSQL, for several hosts driving one set of
//! executions (`--store postgres://...`).
//!
//! Every operation is one statement where it can be (an append checks the
//! fence, writes the events, updates the execution and wakes a parent in one
//! round trip and one commit); claims of due work use `FOR UPDATE SKIP
//! LOCKED`, so hosts scanning at once take different executions; leases are
//! judged by the database's clock, never a host's. Posting to the inbox and
//! answering there `NOTIFY` the other hosts, whose listener wakes their
//! pollers at once ([`ExecutionStore::wakeups`]). Schema migrations run under
//! an advisory lock, so hosts starting together migrate once.
//!
//! The client is `tokio-postgres` with a `deadpool` pool: async all the way,
//! plain SQL, `LISTEN` on its own connection, and a small build.

mod blocking;
mod listener;
mod schema;

pub use blocking::BlockingPostgres;

use super::kv::{check_quota, KvStore};
use super::{
    Append, Claim, Created, DueClaim, ExecutionStore, ExecutionSummary, Fence, HostId, HostRecord, InboxMessage,
    ListFilter, NewExecution, Ownership, StoreError, StoredExecution,
};
use crate::journal::{ExecutionId, ExecutionStatus, RecordedEvent, Timestamp};
use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use std::sync::Arc;
use tokio_postgres::error::SqlState;
use tokio_postgres::{NoTls, Row};

/// Executions in a PostgreSQL database.
pub struct PostgresStore {
    pool: Pool,
    wakeups: Arc<tokio::sync::Notify>,
    /// The connection of the kv capability's synchronous calls.
    kv: BlockingPostgres,
    config: tokio_postgres::Config,
}

fn backend(error: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("postgres: {error}"))
}

fn parse_status(text: &str) -> ExecutionStatus {
    text.parse().unwrap_or(ExecutionStatus::Failed)
}

impl PostgresStore {
    /// Connects to the database `url` names, migrates its schema, and starts
    /// listening for inbox notifications.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let config: tokio_postgres::Config =
            url.parse().map_err(|e| StoreError::Backend(format!("`{url}` is not a PostgreSQL URL: {e}")))?;
        let manager =
            Manager::from_config(config.clone(), NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let pool = Pool::builder(manager).max_size(16).build().map_err(backend)?;
        let mut client = pool.get().await.map_err(|e| StoreError::Backend(format!("connecting to `{url}`: {e}")))?;
        schema::migrate(&mut client).await?;
        let wakeups = Arc::new(tokio::sync::Notify::new());
        listener::spawn(config.clone(), wakeups.clone());
        let kv = BlockingPostgres::connect(config.clone()).map_err(backend)?;
        Ok(Self { pool, wakeups, kv, config })
    }

    /// Creates an empty database `name` on the server `url` names (dropping
    /// one of that name first) and returns its URL: for tests, and for hosts
    /// that want a store of their own.
    pub async fn create_database(url: &str, name: &str) -> Result<String, StoreError> {
        let plain = !name.is_empty()
            && name.len() <= 63
            && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !plain {
            return Err(StoreError::Backend(format!(
                "`{name}` is not a database name for tests: 1-63 of a-z, 0-9 and _"
            )));
        }
        let config: tokio_postgres::Config =
            url.parse().map_err(|e| StoreError::Backend(format!("`{url}` is not a PostgreSQL URL: {e}")))?;
        let (client, connection) = config.connect(NoTls).await.map_err(backend)?;
        let driver = tokio::spawn(connection);
        client.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await.map_err(backend)?;
        client.batch_execute(&format!("CREATE DATABASE {name}")).await.map_err(backend)?;
        drop(client);
        let _ = driver.await;
        Ok(with_database(url, name))
    }

    /// The connection settings (the demo services' ledger connects with them).
    pub fn config(&self) -> &tokio_postgres::Config {
        &self.config
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.get().await.map_err(backend)
    }
}

fn summary(row: &Row) -> ExecutionSummary {
    ExecutionSummary {
        execution_id: ExecutionId::new(row.get::<_, String>(0)),
        workflow: row.get(1),
        status: parse_status(row.get(2)),
        created_at: Timestamp(row.get::<_, i64>(3) as u64),
        updated_at: Timestamp(row.get::<_, i64>(4) as u64),
        error: row.get(5),
    }
}

/// Events as the three arrays an `unnest` insert takes: numbers, times, JSON.
type EventColumns = (Vec<i64>, Vec<i64>, Vec<String>);

fn event_columns(seq: u64, events: &[RecordedEvent]) -> Result<EventColumns, StoreError> {
    let mut numbers = Vec::with_capacity(events.len());
    let mut times = Vec::with_capacity(events.len());
    let mut texts = Vec::with_capacity(events.len());
    for (offset, event) in events.iter().enumerate() {
        numbers.push((seq + offset as u64) as i64);
        times.push(event.at.0 as i64);
        texts.push(serde_json::to_string(&event.event).map_err(backend)?);
    }
    Ok((numbers, times, texts))
}

fn is(error: &tokio_postgres::Error, state: &SqlState) -> bool {
    error.code() == Some(state)
}

#[async_trait]
impl ExecutionStore for PostgresStore {
    async fn create(&self, execution: NewExecution) -> Result<Created, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(backend)?;
        let record = &execution.workflow;
        tx.execute(
            &tx.prepare_cached(
                "INSERT INTO definitions (hash, definition) VALUES ($1, $2) ON CONFLICT (hash) DO NOTHING",
            )
            .await
            .map_err(backend)?,
            &[&record.hash.as_ref(), &record.json.as_ref()],
        )
        .await
        .map_err(backend)?;
        let inserted = tx
            .query_opt(
                &tx.prepare_cached(
                    "INSERT INTO executions
                    (id, workflow, definition, input, idempotency_key, status, created_at, updated_at, tenant,
                     parent_id, owner, fence, next_due)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $8, $9, $10, 1, $11)
                 ON CONFLICT (idempotency_key) DO NOTHING RETURNING id",
                )
                .await
                .map_err(backend)?,
                &[
                    &execution.id.as_str(),
                    &record.definition.name,
                    &record.hash.as_ref(),
                    &execution.input.to_string(),
                    &execution.idempotency_key,
                    &execution.status.as_str(),
                    &(execution.created_at.0 as i64),
                    &execution.tenant,
                    &execution.parent.as_ref().map(|p| p.as_str()),
                    &execution.owner.as_ref().map(|o| o.0.as_str()),
                    &execution.next_due.map(|due| due.0 as i64),
                ],
            )
            .await
            .map_err(backend)?;
        if inserted.is_none() {
            let existing: String = tx
                .query_one(
                    &tx.prepare_cached("SELECT id FROM executions WHERE idempotency_key = $1")
                        .await
                        .map_err(backend)?,
                    &[&execution.idempotency_key],
                )
                .await
                .map_err(backend)?
                .get(0);
            return Ok(Created::Existing(ExecutionId::new(existing)));
        }
        let (numbers, times, texts) = event_columns(0, &execution.events)?;
        tx.execute(
            &tx.prepare_cached(
                "INSERT INTO events (execution_id, seq, at, event)
             SELECT $1, e.seq, e.at, e.event FROM unnest($2::bigint[], $3::bigint[], $4::text[]) AS e(seq, at, event)",
            )
            .await
            .map_err(backend)?,
            &[&execution.id.as_str(), &numbers, &times, &texts],
        )
        .await
        .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok(Created::New(1))
    }

    async fn append(&self, append: Append) -> Result<(), StoreError> {
        let client = self.client().await?;
        let (numbers, times, texts) = event_columns(append.seq, &append.events)?;
        let (answer_numbers, answer_texts): (Vec<i64>, Vec<&str>) =
            append.answers.iter().map(|(number, answer)| (*number, answer.as_str())).unzip();
        let (status, at) = match append.status {
            Some((status, at)) => (Some(status.as_str()), Some(at.0 as i64)),
            None => (None, None),
        };
        // One statement: the fence decides, the events go in, the execution
        // row changes, a parent is woken; all or nothing.
        let result = client
            .query_one(
                &client
                    .prepare_cached(
                        "WITH owned AS (
                    UPDATE executions SET status = COALESCE($3, status), updated_at = COALESCE($4, updated_at),
                        next_due = $5, owner = CASE WHEN $6 THEN NULL ELSE owner END
                    WHERE id = $1 AND fence = $2 RETURNING id
                 ), inserted AS (
                    INSERT INTO events (execution_id, seq, at, event)
                    SELECT owned.id, e.seq, e.at, e.event
                    FROM owned, unnest($7::bigint[], $8::bigint[], $9::text[]) AS e(seq, at, event)
                    RETURNING 1
                 ), woken AS (
                    UPDATE executions SET next_due = LEAST(COALESCE(next_due, stepwise_now_ms()), stepwise_now_ms())
                    WHERE id = $10 AND EXISTS (SELECT 1 FROM owned) RETURNING 1
                 ), answered AS (
                    UPDATE inbox SET answer = a.answer, answered_at = stepwise_now_ms()
                    FROM unnest($11::bigint[], $12::text[]) AS a(id, answer)
                    WHERE inbox.id = a.id AND inbox.answer IS NULL AND EXISTS (SELECT 1 FROM owned)
                    RETURNING inbox.id
                 ), notified AS (
                    SELECT pg_notify('stepwise_answers', id::text) FROM answered
                 )
                 SELECT (SELECT count(*) FROM owned), (SELECT count(*) FROM inserted), (SELECT count(*) FROM woken),
                        (SELECT count(*) FROM notified)",
                    )
                    .await
                    .map_err(backend)?,
                &[
                    &append.id.as_str(),
                    &(append.fence as i64),
                    &status,
                    &at,
                    &append.next_due.map(|due| due.0 as i64),
                    &append.release,
                    &numbers,
                    &times,
                    &texts,
                    &append.wake.as_ref().map(|w| w.as_str()),
                    &answer_numbers,
                    &answer_texts,
                ],
            )
            .await;
        let row = match result {
            Ok(row) => row,
            Err(error) if is(&error, &SqlState::UNIQUE_VIOLATION) => {
                return Err(StoreError::Conflict(append.id, append.seq))
            }
            Err(error) => return Err(backend(error)),
        };
        if row.get::<_, i64>(0) == 1 {
            return Ok(());
        }
        let exists = client
            .query_opt(
                &client.prepare_cached("SELECT 1 FROM executions WHERE id = $1").await.map_err(backend)?,
                &[&append.id.as_str()],
            )
            .await
            .map_err(backend)?
            .is_some();
        Err(if exists { StoreError::Fenced(append.id, append.fence) } else { StoreError::NotFound(append.id) })
    }

    async fn status(&self, id: &ExecutionId) -> Result<Option<ExecutionStatus>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                &client.prepare_cached("SELECT status FROM executions WHERE id = $1").await.map_err(backend)?,
                &[&id.as_str()],
            )
            .await;
        Ok(row.map_err(backend)?.map(|row| parse_status(row.get(0))))
    }

    async fn load(&self, id: &ExecutionId) -> Result<Option<StoredExecution>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                &client.prepare_cached("SELECT d.definition, e.input, e.idempotency_key, e.status, e.created_at, e.tenant, e.parent_id,
                    h.id, e.fence, h.heartbeat_at + h.lease_ms
                 FROM executions e JOIN definitions d ON d.hash = e.definition
                 LEFT JOIN hosts h ON h.id = e.owner AND h.heartbeat_at + h.lease_ms > stepwise_now_ms()
                 WHERE e.id = $1").await.map_err(backend)?,
                &[&id.as_str()],
            )
            .await
            .map_err(backend)?;
        let Some(row) = row else { return Ok(None) };
        let events = client
            .query(
                &client
                    .prepare_cached("SELECT at, event FROM events WHERE execution_id = $1 ORDER BY seq")
                    .await
                    .map_err(backend)?,
                &[&id.as_str()],
            )
            .await
            .map_err(backend)?;
        let corrupt = |what: &str, error: serde_json::Error| {
            StoreError::Corrupt(id.clone(), format!("corrupt {what} in PostgreSQL: {error}"))
        };
        let events = events
            .iter()
            .map(|event| {
                Ok(RecordedEvent {
                    at: Timestamp(event.get::<_, i64>(0) as u64),
                    event: serde_json::from_str(event.get(1)).map_err(|e| corrupt("event", e))?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let owner = row.get::<_, Option<String>>(7).map(|host| Ownership {
            host: HostId(host),
            fence: row.get::<_, i64>(8) as Fence,
            lease_until: Timestamp(row.get::<_, i64>(9) as u64),
        });
        Ok(Some(StoredExecution {
            id: id.clone(),
            workflow: Arc::new(serde_json::from_str(row.get(0)).map_err(|e| corrupt("definition", e))?),
            input: serde_json::from_str(row.get(1)).map_err(|e| corrupt("input", e))?,
            idempotency_key: row.get(2),
            tenant: row.get(5),
            parent: row.get::<_, Option<String>>(6).map(ExecutionId::new),
            status: parse_status(row.get(3)),
            created_at: Timestamp(row.get::<_, i64>(4) as u64),
            events,
            owner,
        }))
    }

    async fn list(&self, filter: &ListFilter) -> Result<Vec<ExecutionSummary>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                &client
                    .prepare_cached(
                        "SELECT id, workflow, status, created_at, updated_at, error FROM executions
                 WHERE ($1::text IS NULL OR status = $1) AND ($2::text IS NULL OR workflow = $2)
                   AND ($3::text IS NULL OR id < $3)
                 ORDER BY id DESC LIMIT $4",
                    )
                    .await
                    .map_err(backend)?,
                &[
                    &filter.status.map(|s| s.as_str()),
                    &filter.workflow,
                    &filter.before.as_ref().map(|id| id.as_str()),
                    &filter.limit.map(|limit| limit as i64),
                ],
            )
            .await
            .map_err(backend)?;
        Ok(rows.iter().map(summary).collect())
    }

    async fn unfinished(&self) -> Result<Vec<ExecutionId>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                &client.prepare_cached("SELECT id FROM executions WHERE status IN ('running', 'waiting', 'compensating') ORDER BY created_at").await.map_err(backend)?,
                &[],
            )
            .await
            .map_err(backend)?;
        Ok(rows.iter().map(|row| ExecutionId::new(row.get::<_, String>(0))).collect())
    }

    async fn count_by_status(&self) -> Result<Vec<(ExecutionStatus, u64)>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                &client
                    .prepare_cached("SELECT status, COUNT(*) FROM executions GROUP BY status")
                    .await
                    .map_err(backend)?,
                &[],
            )
            .await;
        Ok(rows.map_err(backend)?.iter().map(|row| (parse_status(row.get(0)), row.get::<_, i64>(1) as u64)).collect())
    }

    async fn purge_finished_before(&self, cutoff: Timestamp) -> Result<usize, StoreError> {
        let client = self.client().await?;
        let purged = client
            .execute(
                &client.prepare_cached("DELETE FROM executions WHERE status IN ('succeeded', 'compensated', 'failed') AND updated_at < $1").await.map_err(backend)?,
                &[&(cutoff.0 as i64)],
            )
            .await
            .map_err(backend)?;
        client
            .batch_execute(
                "DELETE FROM definitions d WHERE NOT EXISTS (SELECT 1 FROM executions e WHERE e.definition = d.hash)",
            )
            .await
            .map_err(backend)?;
        client
            .execute(
                &client.prepare_cached("DELETE FROM inbox WHERE answered_at < $1").await.map_err(backend)?,
                &[&(cutoff.0 as i64)],
            )
            .await
            .map_err(backend)?;
        Ok(purged as usize)
    }

    async fn mark_unloadable(&self, id: &ExecutionId, reason: &str) -> Result<(), StoreError> {
        let client = self.client().await?;
        let rows = client
            .execute(
                &client.prepare_cached("UPDATE executions SET status = 'failed', updated_at = stepwise_now_ms(), error = $2, owner = NULL,
                    next_due = NULL, fence = fence + 1
                 WHERE id = $1").await.map_err(backend)?,
                &[&id.as_str(), &reason],
            )
            .await
            .map_err(backend)?;
        if rows == 0 {
            return Err(StoreError::NotFound(id.clone()));
        }
        Ok(())
    }

    async fn register_host(&self, host: &HostRecord) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute(
                &client
                    .prepare_cached(
                        "INSERT INTO hosts (id, node, pid, started_at, heartbeat_at, lease_ms, address)
                 VALUES ($1, $2, $3, $4, stepwise_now_ms(), $5, $6)
                 ON CONFLICT (id) DO UPDATE SET heartbeat_at = stepwise_now_ms(), lease_ms = $5, address = $6",
                    )
                    .await
                    .map_err(backend)?,
                &[
                    &host.id.0,
                    &host.node,
                    &(host.pid as i64),
                    &(host.started_at.0 as i64),
                    &(host.lease_ms as i64),
                    &host.address,
                ],
            )
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn heartbeat(&self, host: &HostId) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute(
                &client
                    .prepare_cached("UPDATE hosts SET heartbeat_at = stepwise_now_ms() WHERE id = $1")
                    .await
                    .map_err(backend)?,
                &[&host.0],
            )
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn deregister_host(&self, host: &HostId) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute(
                &client.prepare_cached("WITH released AS (UPDATE executions SET owner = NULL, fence = fence + 1 WHERE owner = $1 RETURNING 1)
                 DELETE FROM hosts WHERE id = $1").await.map_err(backend)?,
                &[&host.0],
            )
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn expire_host(&self, host: &HostId) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute(
                &client.prepare_cached("UPDATE hosts SET heartbeat_at = 0 WHERE id = $1").await.map_err(backend)?,
                &[&host.0],
            )
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn hosts(&self) -> Result<Vec<HostRecord>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                &client
                    .prepare_cached(
                        "SELECT id, node, pid, started_at, heartbeat_at, lease_ms, address,
                    (SELECT COUNT(*) FROM executions WHERE owner = hosts.id)
                 FROM hosts ORDER BY started_at",
                    )
                    .await
                    .map_err(backend)?,
                &[],
            )
            .await
            .map_err(backend)?;
        Ok(rows
            .iter()
            .map(|row| HostRecord {
                id: HostId(row.get(0)),
                node: row.get(1),
                pid: row.get::<_, i64>(2) as u32,
                started_at: Timestamp(row.get::<_, i64>(3) as u64),
                heartbeat_at: Timestamp(row.get::<_, i64>(4) as u64),
                lease_ms: row.get::<_, i64>(5) as u64,
                address: row.get(6),
                owned: row.get::<_, i64>(7) as u64,
            })
            .collect())
    }

    async fn claim(&self, id: &ExecutionId, host: &HostId) -> Result<Claim, StoreError> {
        let client = self.client().await?;
        // Refused because a live host owns it; that host may let go before
        // the owner is read back, then the claim is tried again.
        for _ in 0..3 {
            match claim_once(&client, id, host).await? {
                Claim::Held(owner) if owner.0.is_empty() => continue,
                claim => return Ok(claim),
            }
        }
        claim_once(&client, id, host).await
    }

    async fn claim_due(&self, host: &HostId, now: Timestamp, limit: usize) -> Result<Vec<DueClaim>, StoreError> {
        let client = self.client().await?;
        // Rows another host is claiming right now are skipped, not waited for:
        // hosts scanning at once take different executions.
        let rows = client
            .query(
                &client.prepare_cached("WITH due AS (
                    SELECT e.id, e.owner AS previous FROM executions e
                    WHERE e.id IN (
                        SELECT id FROM executions WHERE status IN ('running', 'compensating')
                        UNION
                        SELECT id FROM executions WHERE next_due <= $2 AND status IN ('running', 'waiting', 'compensating')
                        UNION
                        SELECT execution_id FROM inbox WHERE answer IS NULL
                    )
                    AND e.status IN ('running', 'waiting', 'compensating')
                    AND (e.owner IS NULL
                         OR (e.owner <> $1 AND NOT EXISTS (SELECT 1 FROM hosts h WHERE h.id = e.owner
                                                           AND h.heartbeat_at + h.lease_ms > stepwise_now_ms())))
                    ORDER BY e.created_at LIMIT $3
                    FOR UPDATE SKIP LOCKED
                 )
                 UPDATE executions SET owner = $1, fence = executions.fence + 1
                 FROM due WHERE executions.id = due.id
                 RETURNING executions.id, due.previous IS NOT NULL AND due.previous <> $1").await.map_err(backend)?,
                &[&host.0, &(now.0 as i64), &(limit as i64)],
            )
            .await
            .map_err(backend)?;
        Ok(rows
            .iter()
            .map(|row| DueClaim { id: ExecutionId::new(row.get::<_, String>(0)), takeover: row.get(1) })
            .collect())
    }

    async fn release(&self, id: &ExecutionId, fence: Fence) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute(
                &client
                    .prepare_cached("UPDATE executions SET owner = NULL WHERE id = $1 AND fence = $2")
                    .await
                    .map_err(backend)?,
                &[&id.as_str(), &(fence as i64)],
            )
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn post(&self, id: &ExecutionId, message: &str) -> Result<i64, StoreError> {
        let client = self.client().await?;
        let posted = client
            .query_one(
                &client
                    .prepare_cached(
                        "WITH posted AS (
                    INSERT INTO inbox (execution_id, message, posted_at) VALUES ($1, $2, stepwise_now_ms())
                    RETURNING id
                 )
                 SELECT id, pg_notify('stepwise_inbox', $1) FROM posted",
                    )
                    .await
                    .map_err(backend)?,
                &[&id.as_str(), &message],
            )
            .await;
        match posted {
            Ok(row) => Ok(row.get(0)),
            Err(error) if is(&error, &SqlState::FOREIGN_KEY_VIOLATION) => Err(StoreError::NotFound(id.clone())),
            Err(error) => Err(backend(error)),
        }
    }

    async fn inbox(&self, host: &HostId, only: Option<&ExecutionId>) -> Result<Vec<InboxMessage>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                &client
                    .prepare_cached(
                        "SELECT i.id, i.execution_id, i.message FROM inbox i JOIN executions e ON e.id = i.execution_id
                 WHERE i.answer IS NULL AND e.owner = $1 AND ($2::text IS NULL OR i.execution_id = $2)
                 ORDER BY i.id",
                    )
                    .await
                    .map_err(backend)?,
                &[&host.0, &only.map(|id| id.as_str())],
            )
            .await
            .map_err(backend)?;
        Ok(rows
            .iter()
            .map(|row| InboxMessage {
                id: row.get(0),
                execution_id: ExecutionId::new(row.get::<_, String>(1)),
                message: row.get(2),
            })
            .collect())
    }

    async fn answer(&self, message: i64, answer: &str) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute(
                &client
                    .prepare_cached(
                        "WITH answered AS (
                    UPDATE inbox SET answer = $2, answered_at = stepwise_now_ms() WHERE id = $1 AND answer IS NULL
                    RETURNING id
                 )
                 SELECT pg_notify('stepwise_answers', id::text) FROM answered",
                    )
                    .await
                    .map_err(backend)?,
                &[&message, &answer],
            )
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn answer_of(&self, message: i64) -> Result<Option<String>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                &client.prepare_cached("SELECT answer FROM inbox WHERE id = $1").await.map_err(backend)?,
                &[&message],
            )
            .await
            .map_err(backend)?;
        Ok(row.and_then(|row| row.get(0)))
    }

    fn kv(self: Arc<Self>) -> Option<Arc<dyn KvStore>> {
        Some(self)
    }

    fn wakeups(&self) -> Option<Arc<tokio::sync::Notify>> {
        Some(self.wakeups.clone())
    }
}

impl KvStore for PostgresStore {
    fn get(&self, namespace: &str, key: &str) -> Result<Option<String>, String> {
        let (namespace, key) = (namespace.to_string(), key.to_string());
        self.kv.run(move |client| async move {
            let row = client
                .query_opt("SELECT value FROM kv WHERE namespace = $1 AND key = $2", &[&namespace, &key])
                .await
                .map_err(|e| e.to_string())?;
            Ok(row.map(|row| row.get(0)))
        })
    }

    fn set(&self, namespace: &str, key: &str, value: &str) -> Result<(), String> {
        let (namespace, key, value) = (namespace.to_string(), key.to_string(), value.to_string());
        self.kv.run(move |client| async move {
            client.batch_execute("BEGIN").await.map_err(|e| e.to_string())?;
            let written = async {
                // Serialises writers of one namespace, so the quota holds.
                client.execute("SELECT pg_advisory_xact_lock(hashtext($1))", &[&namespace]).await?;
                let row = client
                    .query_one(
                        "SELECT COUNT(*), COUNT(*) FILTER (WHERE key = $2) FROM kv WHERE namespace = $1",
                        &[&namespace, &key],
                    )
                    .await?;
                Ok::<_, tokio_postgres::Error>((row.get::<_, i64>(0), row.get::<_, i64>(1)))
            }
            .await;
            let outcome = match written {
                Ok((entries, exists)) => match check_quota(&key, &value, entries as usize, exists == 0) {
                    Ok(()) => client
                        .execute(
                            "INSERT INTO kv (namespace, key, value) VALUES ($1, $2, $3)
                             ON CONFLICT (namespace, key) DO UPDATE SET value = excluded.value",
                            &[&namespace, &key, &value],
                        )
                        .await
                        .map(|_| ())
                        .map_err(|e| e.to_string()),
                    Err(refused) => Err(refused),
                },
                Err(error) => Err(error.to_string()),
            };
            let end = if outcome.is_ok() { "COMMIT" } else { "ROLLBACK" };
            client.batch_execute(end).await.map_err(|e| e.to_string())?;
            outcome
        })
    }

    fn delete(&self, namespace: &str, key: &str) -> Result<bool, String> {
        let (namespace, key) = (namespace.to_string(), key.to_string());
        self.kv.run(move |client| async move {
            let rows = client
                .execute("DELETE FROM kv WHERE namespace = $1 AND key = $2", &[&namespace, &key])
                .await
                .map_err(|e| e.to_string())?;
            Ok(rows > 0)
        })
    }
}

/// `url` naming the database `name` instead of its own (its query, such as
/// `?sslmode=...`, kept).
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url.split_once('?').map_or((url, None), |(base, query)| (base, Some(query)));
    let authority_start = base.find("://").map_or(0, |at| at + 3);
    let path_start = base[authority_start..].find('/').map_or(base.len(), |at| authority_start + at);
    let query = query.map(|query| format!("?{query}")).unwrap_or_default();
    format!("{}/{name}{query}", &base[..path_start])
}

/// One claim attempt: granted, or who holds it (an empty id when nobody
/// does any more: the holder let go meanwhile).
async fn claim_once(client: &deadpool_postgres::Client, id: &ExecutionId, host: &HostId) -> Result<Claim, StoreError> {
    let claimed = client
        .query_opt(
            &client
                .prepare_cached(
                    "WITH current AS (SELECT owner FROM executions WHERE id = $1 FOR UPDATE)
             UPDATE executions e SET owner = $2, fence = e.fence + 1
             FROM current
             WHERE e.id = $1 AND (current.owner IS NULL OR current.owner = $2 OR NOT EXISTS
                (SELECT 1 FROM hosts h WHERE h.id = current.owner AND h.heartbeat_at + h.lease_ms > stepwise_now_ms()))
             RETURNING e.fence, current.owner",
                )
                .await
                .map_err(backend)?,
            &[&id.as_str(), &host.0],
        )
        .await
        .map_err(backend)?;
    if let Some(row) = claimed {
        let previous: Option<String> = row.get(1);
        let takeover = previous.is_some_and(|previous| previous != host.0);
        return Ok(Claim::Claimed { fence: row.get::<_, i64>(0) as Fence, takeover });
    }
    let owner = client
        .query_opt(
            &client.prepare_cached("SELECT owner FROM executions WHERE id = $1").await.map_err(backend)?,
            &[&id.as_str()],
        )
        .await;
    Ok(match owner.map_err(backend)? {
        None => Claim::NotFound,
        Some(row) => Claim::Held(HostId(row.get::<_, Option<String>>(0).unwrap_or_default())),
    })
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn a_database_url_keeps_its_user_host_and_query() {
        assert_eq!(with_database("postgres://u@h:5/db", "t_1"), "postgres://u@h:5/t_1");
        assert_eq!(with_database("postgres://u:p@h/db?sslmode=disable", "t"), "postgres://u:p@h/t?sslmode=disable");
        assert_eq!(with_database("postgres://u@h", "t"), "postgres://u@h/t");
        assert_eq!(
            with_database("postgresql://u@h:5/?application_name=x", "t"),
            "postgresql://u@h:5/t?application_name=x"
        );
    }
}
