//! The audit of the demo services' ledger (every call they received, with
//! the calling step's idempotency key) against the events an execution
//! store recorded: no side effect applied again after its completion was
//! recorded, and every reservation and authorization applied once and
//! undone exactly when its execution rolled back.

use rusqlite::{params, Connection};
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Where the ledger and the events are: a SQLite store's file, or a
/// PostgreSQL store's URL.
#[derive(Clone, Copy)]
pub enum Db<'a> {
    /// The SQLite file.
    Sqlite(&'a Path),
    /// The PostgreSQL URL.
    Postgres(&'a str),
}

impl<'a> From<&'a Path> for Db<'a> {
    fn from(path: &'a Path) -> Self {
        Db::Sqlite(path)
    }
}

impl<'a> From<&'a PathBuf> for Db<'a> {
    fn from(path: &'a PathBuf) -> Self {
        Db::Sqlite(path)
    }
}

/// Rows of a query on PostgreSQL, from synchronous test code (on a thread
/// of its own, so that it works inside an async test too).
fn postgres_rows<T: Send + 'static>(url: &str, query: &'static str, row: fn(&tokio_postgres::Row) -> T) -> Vec<T> {
    let url = url.to_string();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async move {
            let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
            tokio::spawn(connection);
            client.query(query, &[]).await.unwrap().iter().map(row).collect()
        })
    })
    .join()
    .unwrap()
}

/// (service, method, input, idempotency key, at) of every recorded call, in order.
fn raw_calls(db: Db<'_>) -> Vec<(String, String, String, String, i64)> {
    const QUERY: &str = "SELECT service, method, input, idempotency_key, at FROM demo_calls ORDER BY seq";
    match db {
        Db::Postgres(url) => {
            postgres_rows(url, QUERY, |row| (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4)))
        }
        Db::Sqlite(path) => {
            let db = Connection::open(path).unwrap();
            let mut statement = db.prepare(QUERY).unwrap();
            let rows = statement
                .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?, row.get(4)?)))
                .unwrap();
            rows.map(Result::unwrap).collect()
        }
    }
}

/// (execution, at, event JSON) of every recorded event.
fn raw_events(db: Db<'_>) -> Vec<(String, i64, String)> {
    const QUERY: &str = "SELECT execution_id, at, event FROM events";
    match db {
        Db::Postgres(url) => postgres_rows(url, QUERY, |row| (row.get(0), row.get(1), row.get(2))),
        Db::Sqlite(path) => {
            let db = Connection::open(path).unwrap();
            let mut statement = db.prepare(QUERY).unwrap();
            let rows = statement.query_map(params![], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?))).unwrap();
            rows.map(Result::unwrap).collect()
        }
    }
}

/// One call the demo services recorded.
#[derive(Debug)]
pub struct Call {
    /// `inventory` or `payments`.
    pub service: String,
    /// `reserve`, `release`, `authorize` or `void`.
    pub method: String,
    /// The reservation or authorization it names.
    pub id: String,
    /// The calling step's idempotency key (`execution/step`).
    pub key: String,
    /// When it was called (ms since the epoch).
    pub at: u64,
}

/// Every call the demo services recorded in the store `db`, in order.
pub fn ledger<'a>(db: impl Into<Db<'a>>) -> Vec<Call> {
    raw_calls(db.into())
        .into_iter()
        .map(|(service, method, input, key, at)| {
            let input: Value = serde_json::from_str(&input).unwrap();
            let id = input["reservation_id"].as_str().or(input["authorization_id"].as_str()).unwrap_or_default();
            Call { service, method, id: id.to_string(), key, at: at as u64 }
        })
        .collect()
}

/// When each step of each execution had its completion (and its
/// compensation) recorded: (execution, step, event type) -> time.
pub fn recorded_completions<'a>(db: impl Into<Db<'a>>) -> HashMap<(String, String, String), u64> {
    let mut found = HashMap::new();
    for (execution, at, event) in raw_events(db.into()) {
        let event: Value = serde_json::from_str(&event).unwrap();
        let kind = event["type"].as_str().unwrap().to_string();
        if kind == "attempt_succeeded" || kind == "compensation_succeeded" {
            let step = event["step"].as_str().unwrap().to_string();
            found.insert((execution, step, kind), at as u64);
        }
    }
    found
}

/// Checks the service ledger against the recorded events: no side effect
/// applied again after its completion was recorded, and every resource of a
/// `reserve`/`payment` step applied once and undone once exactly when
/// `compensated(execution)`. Returns the number of calls and of checks made.
pub fn audit_side_effects<'a>(
    db: impl Into<Db<'a>>,
    executions: &[Value],
    compensated: &dyn Fn(&Value) -> bool,
) -> (usize, usize) {
    let db = db.into();
    let calls = ledger(db);
    let completions = recorded_completions(db);
    let mut checked = 0;
    for call in &calls {
        let (execution, step) = call.key.split_once('/').unwrap();
        let (kind, what) = match call.method.as_str() {
            "reserve" | "authorize" => ("attempt_succeeded", "invoked"),
            _ => ("compensation_succeeded", "compensated"),
        };
        if let Some(&recorded) = completions.get(&(execution.to_string(), step.to_string(), kind.to_string())) {
            assert!(
                call.at <= recorded,
                "{} {} of {execution}/{step} {what} again after it was recorded",
                call.service,
                call.method
            );
            checked += 1;
        }
    }
    // Replay the ledger: per resource, how often it was really applied and undone.
    let mut applied: HashMap<&str, (u32, u32, bool)> = HashMap::new();
    for call in &calls {
        let entry = applied.entry(&call.id).or_insert((0, 0, false));
        match call.method.as_str() {
            "reserve" | "authorize" if !entry.2 => *entry = (entry.0 + 1, entry.1, true),
            "release" | "void" if entry.2 => *entry = (entry.0, entry.1 + 1, false),
            _ => {}
        }
    }
    for execution in executions {
        let id = execution["execution_id"].as_str().unwrap();
        let compensated = compensated(execution);
        for step in ["reserve", "payment"] {
            let key = format!("{id}/{step}");
            let ids: Vec<&str> = calls.iter().filter(|c| c.key == key).map(|c| c.id.as_str()).collect();
            let Some(resource) = ids.first() else { continue };
            assert!(ids.iter().all(|other| other == resource), "one resource per step");
            let (done, undone, _) = applied[resource];
            assert_eq!(done, 1, "{key}: applied {done} times");
            assert_eq!(undone, u32::from(compensated), "{key}: undone {undone} times");
        }
    }
    (calls.len(), checked)
}
