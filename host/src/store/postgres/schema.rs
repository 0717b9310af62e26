//! The PostgreSQL store's schema: versioned migrations, applied in order
//! under an advisory lock (hosts starting together migrate once; a host
//! newer than the schema is refused with the versions named).

use super::backend;
use crate::store::StoreError;

/// The migrations, in order; `stepwise_migrations` records those applied.
const MIGRATIONS: &[&str] = &[
    // 1: executions, their logs and definitions, hosts, the inbox, kv and the
    // demo services' ledger; a clock every host shares (the database's).
    "CREATE FUNCTION stepwise_now_ms() RETURNS BIGINT
        AS $$ SELECT (extract(epoch FROM clock_timestamp()) * 1000)::BIGINT $$ LANGUAGE SQL VOLATILE;
    CREATE TABLE definitions (hash TEXT PRIMARY KEY, definition TEXT NOT NULL);
    CREATE TABLE hosts (
        id TEXT PRIMARY KEY,
        node TEXT NOT NULL,
        pid BIGINT NOT NULL,
        started_at BIGINT NOT NULL,
        heartbeat_at BIGINT NOT NULL,
        lease_ms BIGINT NOT NULL,
        address TEXT
    );
    CREATE TABLE executions (
        id TEXT PRIMARY KEY,
        workflow TEXT NOT NULL,
        definition TEXT NOT NULL REFERENCES definitions (hash),
        input TEXT NOT NULL,
        idempotency_key TEXT UNIQUE,
        status TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL,
        tenant TEXT,
        parent_id TEXT,
        owner TEXT,
        fence BIGINT NOT NULL DEFAULT 0,
        next_due BIGINT,
        error TEXT
    );
    CREATE INDEX executions_by_status ON executions (status, created_at);
    CREATE INDEX executions_by_workflow ON executions (workflow, created_at);
    CREATE INDEX executions_by_due ON executions (next_due) WHERE next_due IS NOT NULL;
    CREATE INDEX executions_by_owner ON executions (owner) WHERE owner IS NOT NULL;
    CREATE TABLE events (
        execution_id TEXT NOT NULL REFERENCES executions (id) ON DELETE CASCADE,
        seq BIGINT NOT NULL,
        at BIGINT NOT NULL,
        event TEXT NOT NULL,
        PRIMARY KEY (execution_id, seq)
    );
    CREATE TABLE inbox (
        id BIGSERIAL PRIMARY KEY,
        execution_id TEXT NOT NULL REFERENCES executions (id) ON DELETE CASCADE,
        message TEXT NOT NULL,
        posted_at BIGINT NOT NULL,
        answer TEXT,
        answered_at BIGINT
    );
    CREATE INDEX inbox_open ON inbox (execution_id) WHERE answer IS NULL;
    CREATE TABLE kv (namespace TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY (namespace, key));
    CREATE TABLE demo_calls (
        seq BIGSERIAL PRIMARY KEY,
        service TEXT NOT NULL,
        method TEXT NOT NULL,
        input TEXT NOT NULL,
        idempotency_key TEXT NOT NULL,
        at BIGINT NOT NULL
    );",
    // 2: API tokens (the hash of each secret) and listing a tenant's executions.
    "CREATE TABLE tokens (
        id TEXT PRIMARY KEY,
        scope TEXT NOT NULL,
        label TEXT,
        secret_hash TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        revoked_at BIGINT
    );
    CREATE INDEX executions_by_tenant ON executions (tenant, id) WHERE tenant IS NOT NULL;",
    // 3: listings by status or workflow are newest first by id: their
    // indexes end with the id, so that a page is read from the index in order.
    // The new indexes are built before the old ones are dropped, so that the
    // table is exclusively locked (PostgreSQL) only from the drops to the commit.
    "CREATE INDEX executions_by_status_id ON executions (status, id);
    CREATE INDEX executions_by_workflow_id ON executions (workflow, id);
    DROP INDEX executions_by_status;
    DROP INDEX executions_by_workflow;",
];

/// A constant the advisory lock of migrations is taken on.
const MIGRATION_LOCK: i64 = 0x5354_4550_5749_5345; // "STEPWISE"

/// Applies the migrations this database lacks, in one transaction that holds
/// the migration lock from its first statement.
pub(super) async fn migrate(client: &mut deadpool_postgres::Object) -> Result<(), StoreError> {
    // The lock comes first: `CREATE TABLE IF NOT EXISTS` is not safe against
    // a concurrent creator (the loser fails on the table's row type).
    let tx = client.transaction().await.map_err(backend)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await.map_err(backend)?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS stepwise_migrations (version INT PRIMARY KEY)")
        .await
        .map_err(backend)?;
    let applied: i32 =
        tx.query_one("SELECT COALESCE(MAX(version), 0) FROM stepwise_migrations", &[]).await.map_err(backend)?.get(0);
    if applied as usize > MIGRATIONS.len() {
        return Err(StoreError::Backend(format!(
            "postgres: schema version {applied} is newer than this Stepwise ({}); upgrade Stepwise",
            MIGRATIONS.len()
        )));
    }
    for (index, migration) in MIGRATIONS.iter().enumerate().skip(applied as usize) {
        tx.batch_execute(migration)
            .await
            .map_err(|e| StoreError::Backend(format!("postgres: migration {}: {e}", index + 1)))?;
        tx.execute("INSERT INTO stepwise_migrations (version) VALUES ($1)", &[&((index + 1) as i32)])
            .await
            .map_err(backend)?;
    }
    tx.commit().await.map_err(backend)
}
