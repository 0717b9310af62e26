//! The SQLite store's API tokens (table `tokens`): written through the
//! writer thread like everything else, read on the reader connection.

use super::{backend, SqliteStore};
use crate::journal::Timestamp;
use crate::store::tokens::{TokenRecord, TokenStore};
use crate::store::StoreError;
use async_trait::async_trait;
use rusqlite::{params, OptionalExtension};

fn token_record(row: &rusqlite::Row<'_>) -> rusqlite::Result<TokenRecord> {
    Ok(TokenRecord {
        id: row.get(0)?,
        scope: row.get(1)?,
        label: row.get(2)?,
        secret_hash: row.get(3)?,
        created_at: Timestamp(row.get::<_, i64>(4)? as u64),
        revoked_at: row.get::<_, Option<i64>>(5)?.map(|at| Timestamp(at as u64)),
    })
}

const COLUMNS: &str = "id, scope, label, secret_hash, created_at, revoked_at";

#[async_trait]
impl TokenStore for SqliteStore {
    async fn insert_token(&self, token: &TokenRecord) -> Result<(), StoreError> {
        let token = token.clone();
        self.write(move |db, path| {
            db.execute(
                "INSERT INTO tokens (id, scope, label, secret_hash, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![token.id, token.scope, token.label, token.secret_hash, token.created_at.0 as i64],
            )
            .map_err(|e| backend(path, e))?;
            Ok(())
        })
        .await
    }

    async fn token(&self, id: &str) -> Result<Option<TokenRecord>, StoreError> {
        self.read(|db| {
            db.prepare_cached(&format!("SELECT {COLUMNS} FROM tokens WHERE id = ?1"))?
                .query_row([id], token_record)
                .optional()
        })
    }

    async fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        self.read(|db| {
            db.prepare_cached(&format!("SELECT {COLUMNS} FROM tokens ORDER BY created_at, id"))?
                .query_map([], token_record)?
                .collect()
        })
    }

    async fn revoke_token(&self, id: &str, at: Timestamp) -> Result<bool, StoreError> {
        let id = id.to_string();
        self.write(move |db, path| {
            let changed = db
                .execute(
                    "UPDATE tokens SET revoked_at = COALESCE(revoked_at, ?2) WHERE id = ?1",
                    params![id, at.0 as i64],
                )
                .map_err(|e| backend(path, e))?;
            Ok(changed > 0)
        })
        .await
    }
}
