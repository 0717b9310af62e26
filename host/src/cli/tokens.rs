//! `stepwise tokens`: API tokens of a store, created, listed and revoked
//! directly in the store (no server needed; every host sharing the store
//! honours them at once). A created token is printed once: only the hash of
//! its secret is kept.

use super::StoreArg;
use crate::access::{tokens, Scope};
use crate::journal::Timestamp;
use crate::store::tokens::TokenRecord;
use anyhow::{bail, Context, Result};
use std::process::ExitCode;

/// Subcommands of `stepwise tokens`.
#[derive(clap::Subcommand)]
pub enum TokensCommand {
    /// Create a token and print it (once: it cannot be shown again).
    Create {
        /// What it may do: `admin`, `operator` (read, cancel, retry,
        /// complete), `read`, or `tenant:<id>` (only that tenant's executions).
        #[arg(long)]
        scope: String,
        /// What it is for (shown in listings).
        #[arg(long)]
        label: Option<String>,
        /// Print JSON (`id`, `scope`, `token`) instead of the token alone.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        store: StoreArg,
    },
    /// List tokens: id, scope, label, created, revoked (never the secrets).
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        store: StoreArg,
    },
    /// Revoke a token: requests presenting it are refused from now on.
    Revoke {
        /// The token's id (from `tokens list`, or the part after `sw_`).
        id: String,
        #[command(flatten)]
        store: StoreArg,
    },
}

async fn open(store: &StoreArg) -> Result<std::sync::Arc<dyn crate::store::ExecutionStore>> {
    crate::store::open(&store.url).await.with_context(|| format!("opening the store `{}`", store.url))
}

pub async fn run(command: TokensCommand) -> Result<ExitCode> {
    match command {
        TokensCommand::Create { scope, label, json, store } => {
            let scope: Scope = scope.parse().map_err(|error: String| anyhow::anyhow!("--scope: {error}"))?;
            if label.as_ref().is_some_and(|label| label.len() > 200 || label.chars().any(char::is_control)) {
                bail!("--label: at most 200 characters, no control characters");
            }
            let minted = tokens::mint().map_err(anyhow::Error::msg)?;
            let record = TokenRecord {
                id: minted.id.clone(),
                scope: scope.to_string(),
                label,
                secret_hash: minted.secret_hash,
                created_at: Timestamp::now(),
                revoked_at: None,
            };
            open(&store).await?.insert_token(&record).await?;
            if json {
                let created = serde_json::json!({"id": record.id, "scope": record.scope, "token": minted.token});
                println!("{}", serde_json::to_string_pretty(&created)?);
            } else {
                eprintln!("created token {} with scope {scope}; it is shown once, keep it now:", record.id);
                println!("{}", minted.token);
            }
            Ok(ExitCode::SUCCESS)
        }
        TokensCommand::List { json, store } => {
            let listed = open(&store).await?.tokens().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "tokens": listed }))?);
                return Ok(ExitCode::SUCCESS);
            }
            println!("{:<17} {:<24} {:<25} {:<25} LABEL", "ID", "SCOPE", "CREATED", "REVOKED");
            for token in &listed {
                println!(
                    "{:<17} {:<24} {:<25} {:<25} {}",
                    token.id,
                    token.scope,
                    token.created_at.to_rfc3339(),
                    token.revoked_at.map_or("-".to_string(), |at| at.to_rfc3339()),
                    token.label.as_deref().unwrap_or("")
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        TokensCommand::Revoke { id, store } => {
            if !open(&store).await?.revoke_token(&id, Timestamp::now()).await? {
                bail!("no token with id `{id}` in this store (see `stepwise tokens list`)");
            }
            println!("revoked token {id}");
            Ok(ExitCode::SUCCESS)
        }
    }
}
