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
//! plain SQL, `LISTEN` on its own connection, and a small build. Statements
//! are prepared once per pooled connection.
//!
//! Here: executions and their logs. Hosts, claims and leases are in
//! [`hosts`], the inbox in [`inbox`], kv in [`kv`], the schema in [`schema`].

mod blocking;
mod hosts;
mod inbox;
mod kv;
mod listener;
mod schema;
mod tokens;

pub use blocking::BlockingPostgres;

use super::by_hash;
use super::kv::{check_quota, KvStore};
use super::{
    Append, Claim, Created, DueClaim, ExecutionStore, ExecutionSummary, Fence, HostId, HostRecord, InboxMessage,
    ListFilter, NewExecution, Ownership, StoreError, StoredExecution,
};
use crate::journal::{EncodedEvent, ExecutionId, ExecutionStatus, RecordedEvent, Timestamp};
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
    /// Definitions stored once by hash, parsed once.
    definitions: by_hash::ByHash<crate::workflow::WorkflowDefinition>,
}

pub(super) fn backend(error: impl std::error::Error) -> StoreError {
    StoreError::Backend(format!("postgres: {}", explained(&error)))
}

/// An error with its causes (tokio-postgres says only "db error" or "error
/// connecting to server" and keeps the server's message in its source).
fn explained(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

fn parse_status(text: &str) -> ExecutionStatus {
    text.parse().unwrap_or(ExecutionStatus::Failed)
}

/// The longest wait for a pooled connection, or for a new one to open.
const POOL_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

impl PostgresStore {
    /// Connects to the database `url` names, migrates its schema, and starts
    /// listening for inbox notifications.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let config: tokio_postgres::Config =
            url.parse().map_err(|e| StoreError::Backend(format!("`{url}` is not a PostgreSQL URL: {e}")))?;
        let manager =
            Manager::from_config(config.clone(), NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        // Waits for a free connection are bounded: a starved pool fails a
        // call (logged, retried by its caller) instead of hanging it.
        let pool = Pool::builder(manager)
            .max_size(16)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(POOL_WAIT))
            .create_timeout(Some(POOL_WAIT))
            .build()
            .map_err(backend)?;
        let mut client =
            pool.get().await.map_err(|e| StoreError::Backend(format!("connecting to `{url}`: {}", explained(&e))))?;
        schema::migrate(&mut client).await?;
        let wakeups = Arc::new(tokio::sync::Notify::new());
        listener::spawn(config.clone(), wakeups.clone());
        let kv =
            BlockingPostgres::connect(config.clone()).map_err(|e| StoreError::Backend(format!("postgres: {e}")))?;
        Ok(Self { pool, wakeups, kv, config, definitions: by_hash::ByHash::default() })
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

    pub(super) async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.get().await.map_err(backend)
    }
}

fn summary(row: &Row) -> ExecutionSummary {
    ExecutionSummary {
        execution_id: ExecutionId::new(row.get::<_, String>(0)),
        workflow: row.get(1),
        tenant: row.get(6),
        status: parse_status(row.get(2)),
        created_at: Timestamp(row.get::<_, i64>(3) as u64),
        updated_at: Timestamp(row.get::<_, i64>(4) as u64),
        error: row.get(5),
    }
}

/// Events as the three arrays an `unnest` insert takes: numbers, times, JSON.
type EventColumns<'a> = (Vec<i64>, Vec<i64>, Vec<&'a str>);

fn event_columns(seq: u64, events: &[EncodedEvent]) -> EventColumns<'_> {
    let numbers = (0..events.len()).map(|offset| (seq + offset as u64) as i64).collect();
    let times = events.iter().map(|event| event.at.0 as i64).collect();
    let texts = events.iter().map(|event| &*event.json).collect();
    (numbers, times, texts)
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
        let (numbers, times, texts) = event_columns(0, &execution.events);
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
        let (numbers, times, texts) = event_columns(append.seq, &append.events);
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
                    h.id, e.fence, h.heartbeat_at + h.lease_ms, e.definition
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
            workflow: self.definitions.get_or_try_make(row.get(10), || {
                serde_json::from_str(row.get(0)).map_err(|e| corrupt("definition", e))
            })?,
            definition_hash: Some(row.get(10)),
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
        let (sql, values) = filter.sql(|n| format!("${n}"));
        let limit = filter.limit.map(|limit| limit as i64);
        let mut parameters: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
            values.iter().map(|v| v as &(dyn tokio_postgres::types::ToSql + Sync)).collect();
        parameters.push(&limit);
        let client = self.client().await?;
        let statement = client.prepare_cached(&sql).await.map_err(backend)?;
        let rows = client.query(&statement, &parameters).await.map_err(backend)?;
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

    async fn purge_finished_before(
        &self,
        cutoff: Timestamp,
        statuses: &[ExecutionStatus],
    ) -> Result<Vec<(ExecutionStatus, u64)>, StoreError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached("DELETE FROM executions WHERE status = $1 AND updated_at < $2")
            .await
            .map_err(backend)?;
        let mut purged = Vec::new();
        for status in statuses.iter().copied().filter(|status| status.is_final()) {
            let count = client.execute(&statement, &[&status.as_str(), &(cutoff.0 as i64)]).await.map_err(backend)?;
            if count > 0 {
                purged.push((status, count));
            }
        }
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
        Ok(purged)
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
        hosts::register_host(&self.client().await?, host).await
    }

    async fn heartbeat(&self, host: &HostId) -> Result<(), StoreError> {
        hosts::heartbeat(&self.client().await?, host).await
    }

    async fn deregister_host(&self, host: &HostId) -> Result<(), StoreError> {
        hosts::deregister_host(&self.client().await?, host).await
    }

    async fn expire_host(&self, host: &HostId) -> Result<(), StoreError> {
        hosts::expire_host(&self.client().await?, host).await
    }

    async fn hosts(&self) -> Result<Vec<HostRecord>, StoreError> {
        hosts::hosts(&self.client().await?).await
    }

    async fn claim(&self, id: &ExecutionId, host: &HostId) -> Result<Claim, StoreError> {
        hosts::claim(&self.client().await?, id, host).await
    }

    async fn claim_due(&self, host: &HostId, now: Timestamp, limit: usize) -> Result<Vec<DueClaim>, StoreError> {
        hosts::claim_due(&self.client().await?, host, now, limit).await
    }

    async fn release(&self, id: &ExecutionId, fence: Fence) -> Result<(), StoreError> {
        hosts::release(&self.client().await?, id, fence).await
    }

    async fn post(&self, id: &ExecutionId, message: &str) -> Result<i64, StoreError> {
        inbox::post(&self.client().await?, id, message).await
    }

    async fn inbox(&self, host: &HostId, only: Option<&ExecutionId>) -> Result<Vec<InboxMessage>, StoreError> {
        inbox::inbox(&self.client().await?, host, only).await
    }

    async fn answer(&self, message: i64, answer: &str) -> Result<(), StoreError> {
        inbox::answer(&self.client().await?, message, answer).await
    }

    async fn answer_of(&self, message: i64) -> Result<Option<String>, StoreError> {
        inbox::answer_of(&self.client().await?, message).await
    }

    fn kv(self: Arc<Self>) -> Option<Arc<dyn KvStore>> {
        Some(self)
    }

    fn wakeups(&self) -> Option<Arc<tokio::sync::Notify>> {
        Some(self.wakeups.clone())
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
