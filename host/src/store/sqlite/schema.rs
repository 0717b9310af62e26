//! The SQLite store's schema: its migrations, applied in order on open
//! (`user_version` counts those applied; several processes opening one file
//! at once migrate it once), and the connection settings every connection
//! uses (WAL, `synchronous = FULL`, foreign keys).

use super::backend;
use crate::store::StoreError;
use rusqlite::{Connection, TransactionBehavior};
use std::path::Path;

/// Schema migrations, applied in order; `user_version` counts those applied.
pub(super) const MIGRATIONS: &[&str] = &[
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
    // 6: API tokens (the hash of each secret) and listing a tenant's executions.
    "CREATE TABLE tokens (
        id TEXT PRIMARY KEY,
        scope TEXT NOT NULL,
        label TEXT,
        secret_hash TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        revoked_at INTEGER
    ) WITHOUT ROWID;
    CREATE INDEX executions_by_tenant ON executions (tenant, id) WHERE tenant IS NOT NULL;",
    // 7: listings by status or workflow are newest first by id: their
    // indexes end with the id, so that a page is read from the index in order
    // (at a million executions, a status nobody has took a scan of all).
    // The new indexes are built before the old ones are dropped, so that the
    // table is exclusively locked (PostgreSQL) only from the drops to the commit.
    "CREATE INDEX executions_by_status_id ON executions (status, id);
    CREATE INDEX executions_by_workflow_id ON executions (workflow, id);
    DROP INDEX executions_by_status;
    DROP INDEX executions_by_workflow;",
    // 8: the scan for work that needs a driver reads the executions in
    // flight per owner, oldest first (only unfinished ones are indexed).
    "CREATE INDEX executions_in_flight ON executions (status, owner, created_at)
        WHERE status IN ('running', 'waiting', 'compensating');",
    // 9: the same index, its condition written as equalities joined by OR
    // (`in_flight!`, which the scans repeat): SQLite tested the IN list
    // through a temporary B-tree at each write of a row. Written out rather
    // than built from the macro, so that a change to the macro cannot change
    // a migration that stores have applied already (a test checks the two
    // agree: a new condition needs a new migration).
    "DROP INDEX executions_in_flight;
    CREATE INDEX executions_in_flight ON executions (status, owner, created_at)
        WHERE (status = 'running' OR status = 'waiting' OR status = 'compensating');",
];

pub(super) fn open_connection(path: &Path) -> Result<Connection, StoreError> {
    let connection = Connection::open(path).map_err(|e| backend(path, e))?;
    connection.busy_timeout(std::time::Duration::from_secs(5)).map_err(|e| backend(path, e))?;
    connection
        .execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")
        .map_err(|e| backend(path, format!("not a usable SQLite database: {e}")))?;
    Ok(connection)
}

pub(super) fn migrate(connection: &mut Connection, path: &Path) -> Result<(), StoreError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_of_schema_8_keeps_its_executions_in_flight_indexed_after_migration_9() {
        let mut db = Connection::open_in_memory().unwrap();
        for migration in &MIGRATIONS[..8] {
            db.execute_batch(migration).unwrap();
        }
        db.pragma_update(None, "user_version", 8).unwrap();
        for (id, status) in [("a", "running"), ("b", "succeeded"), ("c", "waiting"), ("d", "compensating")] {
            db.execute(
                "INSERT INTO executions (id, workflow, definition, input, status, created_at, updated_at)
                 VALUES (?1, 'w', '{}', '{}', ?2, 0, 0)",
                [id, status],
            )
            .unwrap();
        }
        migrate(&mut db, Path::new(":memory:")).unwrap();
        let version: usize = db.query_row("PRAGMA user_version", [], |row| row.get(0)).unwrap();
        assert_eq!(version, MIGRATIONS.len());
        let in_flight: Vec<String> = db
            .prepare(concat!("SELECT id FROM executions INDEXED BY executions_in_flight WHERE ", in_flight!()))
            .unwrap()
            .query_map([], |row| row.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(in_flight.len(), 3, "{in_flight:?}");
        assert!(!in_flight.contains(&"b".to_string()), "{in_flight:?}");
        // The index's condition is the one the scans repeat (SQLite would
        // also read the old one for them: the rows alone do not tell).
        let index: String = db
            .query_row("SELECT sql FROM sqlite_master WHERE name = 'executions_in_flight'", [], |row| row.get(0))
            .unwrap();
        assert!(index.ends_with(concat!("WHERE ", in_flight!())), "{index}");
    }

    #[test]
    fn the_bundled_sqlite_has_no_global_memory_statistics_or_shared_page_cache() {
        // `.cargo/config.toml` builds it so (LIBSQLITE3_FLAGS): each took a
        // mutex shared by every connection at every allocation or page fetch.
        let db = Connection::open_in_memory().unwrap();
        let options: Vec<String> = db
            .prepare("PRAGMA compile_options")
            .unwrap()
            .query_map([], |row| row.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert!(options.iter().any(|option| option == "DEFAULT_MEMSTATUS=0"), "{options:?}");
        assert!(!options.iter().any(|option| option == "ENABLE_MEMORY_MANAGEMENT"), "{options:?}");
    }
}
