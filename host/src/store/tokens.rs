//! Where API tokens are kept: the [`TokenStore`] every execution store
//! implements, so that hosts sharing a store share their tokens. A record
//! holds the hash of a token's secret, never the secret; what a scope means
//! is `crate::access`'s business, the store keeps it as text.

use crate::journal::Timestamp;
use async_trait::async_trait;
use serde::Serialize;

use super::StoreError;

/// An API token as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TokenRecord {
    /// Its id (shown in listings, used to revoke it).
    pub id: String,
    /// Its scope, as text (`admin`, `operator`, `read`, `tenant:<id>`).
    pub scope: String,
    /// What it is for, as its creator described it.
    pub label: Option<String>,
    /// The SHA-256 of its secret, hex.
    #[serde(skip)]
    pub secret_hash: String,
    /// When it was created.
    #[serde(serialize_with = "crate::journal::time::rfc3339")]
    pub created_at: Timestamp,
    /// When it was revoked, if it was.
    #[serde(serialize_with = "crate::journal::time::rfc3339_opt")]
    pub revoked_at: Option<Timestamp>,
}

/// Where API tokens are kept.
#[async_trait]
pub trait TokenStore: Send + Sync {
    /// Adds a token (its id is new).
    async fn insert_token(&self, token: &TokenRecord) -> Result<(), StoreError>;
    /// The token with this id, revoked or not.
    async fn token(&self, id: &str) -> Result<Option<TokenRecord>, StoreError>;
    /// Every token, oldest first.
    async fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError>;
    /// Revokes a token at `at`; whether a token with this id existed
    /// (revoking one twice keeps the first time).
    async fn revoke_token(&self, id: &str, at: Timestamp) -> Result<bool, StoreError>;
}
