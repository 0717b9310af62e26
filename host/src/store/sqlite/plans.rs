//! The query plans of the statements that run per poll or per scan: each
//! reads the few rows it needs through the index meant for it, never every
//! execution in flight or every execution a host owns (SQLite's planner,
//! without statistics, picked those walks for both; they grew with the work
//! in flight and ran dozens of times a second); and the programs of the
//! writes every execution makes, which must not build temporary B-trees.

use super::due::{OWNED_BY, UNOWNED, WAKING};
use super::log::{INSERT_EXECUTION, UPDATES, WAKE_PARENT};
use super::schema::migrate;
use super::{CLAIM_ROW, OPEN_MESSAGES_OF_HOST, UNFINISHED};
use rusqlite::{params, Connection, Params};
use std::path::Path;

const HOST: &str = "a-live-host";

/// A store with `in_flight` executions `HOST` drives, resting without a
/// timer, and beside them: one whose timer is due at 500, one whose timer is
/// not, one with a message posted, one of another host with a message posted
/// and one finished with a stale timer.
fn store_with(in_flight: usize) -> Connection {
    let mut db = Connection::open_in_memory().unwrap();
    migrate(&mut db, Path::new(":memory:")).unwrap();
    let insert =
        "INSERT INTO executions (id, workflow, definition, input, status, created_at, updated_at, owner, next_due)
                  VALUES (?1, 'w', '{}', '{}', ?2, ?3, ?3, ?4, ?5)";
    for n in 0..in_flight {
        let status = if n % 2 == 0 { "waiting" } else { "running" };
        db.execute(insert, params![format!("rest-{n:05}"), status, n as i64, HOST, None::<i64>]).unwrap();
    }
    db.execute(insert, params!["timer-due", "waiting", 1, HOST, 100]).unwrap();
    db.execute(insert, params!["timer-later", "waiting", 2, HOST, 900]).unwrap();
    db.execute(insert, params!["messaged", "running", 3, HOST, None::<i64>]).unwrap();
    db.execute(insert, params!["messaged-elsewhere", "running", 4, "another-host", None::<i64>]).unwrap();
    db.execute(insert, params!["finished", "succeeded", 5, None::<String>, 100]).unwrap();
    let post = "INSERT INTO inbox (execution_id, message, posted_at) VALUES (?1, '{}', 0)";
    db.execute(post, ["messaged"]).unwrap();
    db.execute(post, ["messaged-elsewhere"]).unwrap();
    // An answered message stays until the retention purge: not read again.
    db.execute(post, ["rest-00001"]).unwrap();
    db.execute("UPDATE inbox SET answer = '{}', answered_at = 0 WHERE execution_id = 'rest-00001'", []).unwrap();
    db
}

/// SQLite's plan for `sql`, one step a line.
fn plan(db: &Connection, sql: &str, parameters: impl Params) -> String {
    let steps: Vec<String> = db
        .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
        .unwrap()
        .query_map(parameters, |row| row.get(3))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    steps.join("\n")
}

/// Column `column` of every row `sql` returns, sorted.
fn ids(db: &Connection, sql: &str, column: usize, parameters: impl Params) -> Vec<String> {
    let mut ids: Vec<String> = db
        .prepare(sql)
        .unwrap()
        .query_map(parameters, |row| row.get(column))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    ids.sort();
    ids
}

#[test]
fn the_waking_scan_reads_the_timer_index_and_the_inbox_not_every_execution_in_flight() {
    let db = store_with(2_000);
    let plan = plan(&db, WAKING, params![500]);
    assert!(plan.contains("executions_by_due"), "{plan}");
    assert!(!plan.contains("executions_in_flight"), "{plan}");
    assert!(!plan.contains("SCAN executions"), "{plan}");
    assert_eq!(ids(&db, WAKING, 0, params![500]), ["messaged", "messaged-elsewhere", "timer-due"]);
}

#[test]
fn a_hosts_inbox_is_read_from_the_open_messages_not_from_every_execution_it_owns() {
    let db = store_with(2_000);
    let plan = plan(&db, OPEN_MESSAGES_OF_HOST, params![HOST]);
    assert!(plan.contains("inbox_open"), "{plan}");
    assert!(!plan.contains("executions_by_owner"), "{plan}");
    assert!(!plan.contains("SCAN executions"), "{plan}");
    assert_eq!(ids(&db, OPEN_MESSAGES_OF_HOST, 1, params![HOST]), ["messaged"]);
}

#[test]
fn the_scans_for_work_in_flight_read_the_in_flight_index() {
    let db = store_with(2_000);
    for (sql, parameters, found) in [
        (UNOWNED, params!["running", 10].to_vec(), vec![]),
        (OWNED_BY, params!["running", HOST, 2].to_vec(), vec!["rest-00001", "rest-00003"]),
        (OWNED_BY, params!["running", "another-host", 10].to_vec(), vec!["messaged-elsewhere"]),
    ] {
        let plan = plan(&db, sql, parameters.as_slice());
        assert!(plan.contains("executions_in_flight"), "{sql}: {plan}");
        assert_eq!(ids(&db, sql, 0, parameters.as_slice()), found, "{sql}");
    }
    let plan = plan(&db, UNFINISHED, []);
    assert!(plan.contains("executions_in_flight"), "{plan}");
    assert!(!plan.contains("SCAN executions"), "{plan}");
    // Every execution but the finished one, and nothing twice.
    assert_eq!(ids(&db, UNFINISHED, 0, []).len(), 2_000 + 4);
}

#[test]
fn the_writes_every_execution_makes_build_no_temporary_b_tree() {
    // An `IN (...)` list of three in a partial index's condition made every
    // insert and every status or owner update open, fill and free one (a
    // fifth of the writer thread's time at 64 executions in flight); a
    // claim's `RETURNING` collected its row in another.
    let db = store_with(10);
    for sql in UPDATES.iter().chain([&INSERT_EXECUTION, &WAKE_PARENT, &CLAIM_ROW]) {
        // The program, its parameters left unbound (NULL).
        let mut explain = db.prepare(&format!("EXPLAIN {sql}")).unwrap();
        let mut rows = explain.raw_query();
        let mut opcodes: Vec<String> = Vec::new();
        while let Some(row) = rows.next().unwrap() {
            opcodes.push(row.get(1).unwrap());
        }
        assert!(opcodes.iter().any(|opcode| opcode == "Insert" || opcode == "IdxInsert"), "{sql}: {opcodes:?}");
        assert!(!opcodes.iter().any(|opcode| opcode == "OpenEphemeral"), "{sql}: {opcodes:?}");
    }
}
