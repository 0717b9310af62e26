//! The demo services' call ledger: every call, recorded before it is applied.
//!
//! The services rebuild their state by replaying it, so with the SQLite
//! ledger their side effects survive a crash of the host like a real
//! inventory's would; tests audit it to count side effects.

use super::Caller;
use crate::journal::time::Timestamp;
use crate::store::SqliteStore;
use rusqlite::params;
use serde_json::Value;
use std::sync::{Arc, Mutex};

/// One recorded call.
#[derive(Clone, Debug, PartialEq)]
pub struct LedgerEntry {
    /// The service called.
    pub service: String,
    /// The method called.
    pub method: String,
    /// Its input.
    pub input: Value,
    /// The calling step's idempotency key.
    pub idempotency_key: String,
    /// When it was called.
    pub at: Timestamp,
}

impl LedgerEntry {
    /// An entry for a call happening now.
    pub fn new(service: &str, method: &str, input: Value, caller: &Caller) -> Self {
        Self {
            service: service.to_string(),
            method: method.to_string(),
            input,
            idempotency_key: caller.idempotency_key.clone(),
            at: Timestamp::now(),
        }
    }
}

/// A call being recorded: durable once [`Recording::wait`] (on a thread
/// that may block) or [`Recording::durable`] (in a task) returns `Ok`.
pub struct Recording(Waiting);

enum Waiting {
    /// Over: durable, or failed.
    Done(Result<(), String>),
    /// Answered by the SQLite store's writer thread once its commit is over.
    Commit(tokio::sync::oneshot::Receiver<Result<(), crate::store::StoreError>>),
}

impl Recording {
    /// A recording that is over (durable, or failed).
    pub fn done(result: Result<(), String>) -> Self {
        Self(Waiting::Done(result))
    }

    /// Waits, blocking the thread, until the call is durable (never on a
    /// tokio worker: use [`Self::durable`] there).
    pub fn wait(self) -> Result<(), String> {
        match self.0 {
            Waiting::Done(result) => result,
            Waiting::Commit(reply) => committed(reply.blocking_recv()),
        }
    }

    /// Waits, without blocking the thread, until the call is durable.
    pub async fn durable(self) -> Result<(), String> {
        match self.0 {
            Waiting::Done(result) => result,
            Waiting::Commit(reply) => committed(reply.await),
        }
    }
}

/// The writer thread's answer for a recorded call.
fn committed(
    answer: Result<Result<(), crate::store::StoreError>, tokio::sync::oneshot::error::RecvError>,
) -> Result<(), String> {
    match answer {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(format!("recording the call: {error}")),
        Err(_) => Err("recording the call: the store's writer thread stopped".into()),
    }
}

/// Where calls are recorded.
pub trait Ledger: Send + Sync {
    /// Records a call; durable when it returns.
    fn record(&self, entry: LedgerEntry) -> Result<(), String>;
    /// Starts recording a call and returns before it is durable (an error:
    /// it could not even be started): the ledger's order is the order of
    /// `submit`s. A service that submits a call and applies it under its
    /// lock, and waits outside, lets other calls share the wait (one commit
    /// for many).
    fn submit(&self, entry: LedgerEntry) -> Result<Recording, String> {
        self.record(entry).map(|()| Recording::done(Ok(())))
    }
    /// Every call to `service`, in order.
    fn entries(&self, service: &str) -> Result<Vec<LedgerEntry>, String>;
    /// Whether [`Ledger::submit`] may block its thread on a disk or a
    /// database (`false` when its only wait is [`Recording::durable`]'s): a
    /// call is then not submitted on a tokio worker.
    fn may_block(&self) -> bool {
        true
    }
}

/// A ledger in memory.
#[derive(Default)]
pub struct MemoryLedger {
    entries: Mutex<Vec<LedgerEntry>>,
}

impl Ledger for MemoryLedger {
    fn record(&self, entry: LedgerEntry) -> Result<(), String> {
        self.entries.lock().expect("ledger lock").push(entry);
        Ok(())
    }

    fn may_block(&self) -> bool {
        false
    }

    fn entries(&self, service: &str) -> Result<Vec<LedgerEntry>, String> {
        Ok(self.entries.lock().expect("ledger lock").iter().filter(|e| e.service == service).cloned().collect())
    }
}

/// A ledger in the SQLite store's file (table `demo_calls`): each call is
/// written by the store's writer thread, in the same group commit as the
/// executions' transitions (one fsync for many), and recorded once durable.
pub struct SqliteLedger {
    store: Arc<SqliteStore>,
}

impl SqliteLedger {
    /// The ledger of `store`, creating its table there if needed.
    pub async fn on(store: Arc<SqliteStore>) -> Result<Self, String> {
        let created = store.submit_durably(|db| {
            db.execute_batch(
                "CREATE TABLE IF NOT EXISTS demo_calls (
                     seq INTEGER PRIMARY KEY AUTOINCREMENT,
                     service TEXT NOT NULL,
                     method TEXT NOT NULL,
                     input TEXT NOT NULL,
                     idempotency_key TEXT NOT NULL,
                     at INTEGER NOT NULL
                 );",
            )
        })?;
        Recording(Waiting::Commit(created)).durable().await?;
        Ok(Self { store })
    }
}

impl Ledger for SqliteLedger {
    fn record(&self, entry: LedgerEntry) -> Result<(), String> {
        self.submit(entry)?.wait()
    }

    fn submit(&self, entry: LedgerEntry) -> Result<Recording, String> {
        let input = entry.input.to_string();
        let durable = self
            .store
            .submit_durably(move |db| {
                db.prepare_cached(
                    "INSERT INTO demo_calls (service, method, input, idempotency_key, at) VALUES (?1, ?2, ?3, ?4, ?5)",
                )?
                .execute(params![entry.service, entry.method, input, entry.idempotency_key, entry.at.0 as i64])
                .map(|_| ())
            })
            .map_err(|e| format!("recording the call: {e}"))?;
        Ok(Recording(Waiting::Commit(durable)))
    }

    fn may_block(&self) -> bool {
        false
    }

    fn entries(&self, service: &str) -> Result<Vec<LedgerEntry>, String> {
        let rows = self.store.read_with(|db| {
            let mut statement = db
                .prepare("SELECT method, input, idempotency_key, at FROM demo_calls WHERE service = ?1 ORDER BY seq")?;
            let rows = statement.query_map(params![service], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, i64>(3)?,
                ))
            })?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })?;
        rows.into_iter()
            .map(|(method, input, idempotency_key, at)| {
                Ok(LedgerEntry {
                    service: service.to_string(),
                    method,
                    input: serde_json::from_str(&input).map_err(|e| e.to_string())?,
                    idempotency_key,
                    at: Timestamp(at as u64),
                })
            })
            .collect()
    }
}

/// A ledger in the PostgreSQL store's database (table `demo_calls`), shared
/// by every host of that store. Calls come from inside guests' host calls:
/// it has a connection of its own on its own thread.
pub struct PostgresLedger {
    connection: crate::store::BlockingPostgres,
}

impl PostgresLedger {
    /// Connects to the database `config` names (the store created its table).
    pub fn connect(config: tokio_postgres::Config) -> Result<Self, String> {
        Ok(Self { connection: crate::store::BlockingPostgres::connect(config)? })
    }
}

impl Ledger for PostgresLedger {
    fn record(&self, entry: LedgerEntry) -> Result<(), String> {
        self.connection.run(move |client| async move {
            client
                .execute(
                    "INSERT INTO demo_calls (service, method, input, idempotency_key, at) VALUES ($1, $2, $3, $4, $5)",
                    &[
                        &entry.service,
                        &entry.method,
                        &entry.input.to_string(),
                        &entry.idempotency_key,
                        &(entry.at.0 as i64),
                    ],
                )
                .await
                .map(|_| ())
                .map_err(|e| format!("recording the call: {e}"))
        })
    }

    fn entries(&self, service: &str) -> Result<Vec<LedgerEntry>, String> {
        let service = service.to_string();
        self.connection.run(move |client| async move {
            let rows = client
                .query(
                    "SELECT method, input, idempotency_key, at FROM demo_calls WHERE service = $1 ORDER BY seq",
                    &[&service],
                )
                .await
                .map_err(|e| e.to_string())?;
            rows.iter()
                .map(|row| {
                    Ok(LedgerEntry {
                        service: service.clone(),
                        method: row.get(0),
                        input: serde_json::from_str(row.get(1)).map_err(|e| e.to_string())?,
                        idempotency_key: row.get(2),
                        at: Timestamp(row.get::<_, i64>(3) as u64),
                    })
                })
                .collect()
        })
    }
}
