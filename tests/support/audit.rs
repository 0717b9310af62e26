//! The audit of the demo services' ledger (every call they received, with
//! the calling step's idempotency key) against the events an execution
//! store recorded: no side effect applied again after its completion was
//! recorded, and every reservation and authorization applied once and
//! undone exactly when its execution rolled back.

use rusqlite::{params, Connection};
use serde_json::Value;
use std::collections::HashMap;
use std::path::Path;

/// One call the demo services recorded.
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

/// Every call the demo services recorded in the SQLite store `db`, in order.
pub fn ledger(db: &Path) -> Vec<Call> {
    let db = Connection::open(db).unwrap();
    let mut statement =
        db.prepare("SELECT service, method, input, idempotency_key, at FROM demo_calls ORDER BY seq").unwrap();
    let rows = statement
        .query_map([], |row| {
            let input: String = row.get(2)?;
            let input: Value = serde_json::from_str(&input).unwrap();
            let id = input["reservation_id"].as_str().or(input["authorization_id"].as_str()).unwrap_or_default();
            Ok(Call {
                service: row.get(0)?,
                method: row.get(1)?,
                id: id.to_string(),
                key: row.get(3)?,
                at: row.get::<_, i64>(4)? as u64,
            })
        })
        .unwrap();
    rows.map(Result::unwrap).collect()
}

/// When each step of each execution had its completion (and its
/// compensation) recorded: (execution, step, event type) -> time.
pub fn recorded_completions(db: &Path) -> HashMap<(String, String, String), u64> {
    let db = Connection::open(db).unwrap();
    let mut statement = db.prepare("SELECT execution_id, at, event FROM events").unwrap();
    let mut found = HashMap::new();
    let rows = statement
        .query_map(params![], |row| Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?, row.get::<_, String>(2)?)))
        .unwrap();
    for row in rows {
        let (execution, at, event) = row.unwrap();
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
pub fn audit_side_effects(db: &Path, executions: &[Value], compensated: &dyn Fn(&Value) -> bool) -> (usize, usize) {
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
