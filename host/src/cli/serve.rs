//! `stepwise serve`: the long-running host (see [`crate::server`]).

use super::{demo_engine, PluginDirArg, StoreArg};
use crate::server::{serve, ServeOptions};
use crate::workflow::WorkflowDirectory;
use anyhow::{bail, Context, Result};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

/// Arguments of `stepwise serve`.
#[derive(clap::Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: std::net::SocketAddr,
    /// Directory of workflow files (watched).
    #[arg(long, env = "STEPWISE_WORKFLOWS", default_value = "workflows")]
    workflows: PathBuf,
    #[command(flatten)]
    plugins: PluginDirArg,
    #[command(flatten)]
    store: StoreArg,
    #[command(flatten)]
    tenants: super::TenantDirArg,
    /// Bearer token that every write endpoint requires.
    #[arg(long, env = "STEPWISE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Serve without a token: every write endpoint is open (local development only).
    #[arg(long, conflicts_with = "token")]
    no_auth: bool,
    /// Purge finished executions older than this (e.g. `30d`), hourly.
    #[arg(long)]
    retention: Option<humantime::Duration>,
    /// How long this host's claims on executions hold without a heartbeat
    /// (another host takes them over after that).
    #[arg(long, default_value = "10s")]
    lease: humantime::Duration,
}

pub async fn run(args: ServeArgs) -> Result<ExitCode> {
    if args.token.is_none() && !args.no_auth {
        bail!("set a bearer token for write endpoints (--token or STEPWISE_TOKEN), or pass --no-auth to serve without one");
    }
    if args.token.as_deref().is_some_and(|token| token.len() < 16) {
        bail!("the bearer token must be at least 16 characters");
    }
    let engine = demo_engine(&args.store, &args.plugins).await?.with_tenants(args.tenants.load()?);
    let workflows = WorkflowDirectory::load(&args.workflows, engine.registry().clone())
        .with_context(|| format!("reading the workflow directory {}", args.workflows.display()))?;
    for (file, status) in workflows.files() {
        if let Some(error) = status.error {
            eprintln!("warning: {} is not loaded: {error}", file.display());
        }
    }
    let options = ServeOptions {
        addr: args.addr,
        token: args.token,
        retention: args.retention.map(Into::into),
        lease: args.lease.into(),
    };
    serve(engine, Arc::new(workflows), options).await?;
    Ok(ExitCode::SUCCESS)
}
