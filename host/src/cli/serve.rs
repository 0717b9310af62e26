//! `stepwise serve`: the long-running host (see [`crate::server`]).

use super::{demo_engine, PluginDirArg, StoreArg};
use crate::server::{serve, ServeOptions};
use crate::telemetry::Traces;
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
    /// The admin bearer token (else `$STEPWISE_TOKEN`): every route but
    /// `/healthz`, `/openapi.json` and the web view's page needs a token, this
    /// one or an API token from `stepwise tokens create`.
    #[arg(long)]
    token: Option<String>,
    /// Serve without authentication: every route is open to anyone who can
    /// reach the address (local development only; a `$STEPWISE_TOKEN` in the
    /// environment is then ignored).
    #[arg(long, conflicts_with = "token")]
    no_auth: bool,
    /// Purge finished executions older than this (e.g. `30d`), hourly.
    #[arg(long)]
    retention: Option<humantime::Duration>,
    /// How long this host's claims on executions hold without a heartbeat
    /// (another host takes them over after that).
    #[arg(long, default_value = "10s")]
    lease: humantime::Duration,
    /// Export each execution as a trace (each attempt and compensation a
    /// span) to this OTLP/HTTP collector, e.g. `http://127.0.0.1:4318`.
    #[arg(long, env = "STEPWISE_OTLP_ENDPOINT")]
    otlp_endpoint: Option<String>,
}

pub async fn run(args: ServeArgs) -> Result<ExitCode> {
    let from_environment = std::env::var("STEPWISE_TOKEN").ok();
    let token = match (args.token.clone(), args.no_auth) {
        (Some(token), _) => Some(token),
        (None, true) => {
            if from_environment.is_some() {
                eprintln!("warning: --no-auth: STEPWISE_TOKEN is ignored");
            }
            eprintln!(
                "warning: --no-auth: every route (reads, writes, uploads) is open to anyone who can reach {}; \
                 for local development only",
                args.addr
            );
            None
        }
        (None, false) => match from_environment {
            Some(token) => Some(token),
            None => bail!(
                "set the admin bearer token (--token or STEPWISE_TOKEN), or pass --no-auth to serve without \
                 authentication (local development only)"
            ),
        },
    };
    if let Some(token) = &token {
        crate::server::auth::check_token(token).map_err(anyhow::Error::msg)?;
    }
    let mut engine = demo_engine(&args.store, &args.plugins).await?.with_tenants(args.tenants.load()?);
    let traces = match &args.otlp_endpoint {
        Some(endpoint) => Some(Arc::new(Traces::otlp(endpoint).context("--otlp-endpoint")?)),
        None => None,
    };
    if let Some(traces) = &traces {
        engine = engine.with_traces(traces.clone());
    }
    let workflows = WorkflowDirectory::load(&args.workflows, engine.registry().clone())
        .with_context(|| format!("reading the workflow directory {}", args.workflows.display()))?;
    for (file, status) in workflows.files() {
        match status.error {
            Some(_) if !status.missing_plugins.is_empty() => eprintln!(
                "warning: {} waits for plugin(s) {}: it loads once they are there",
                file.display(),
                status.missing_plugins.join(", ")
            ),
            Some(error) => eprintln!("warning: {} is not loaded: {error}", file.display()),
            None => {}
        }
    }
    let options =
        ServeOptions { addr: args.addr, token, retention: args.retention.map(Into::into), lease: args.lease.into() };
    let served = serve(engine, Arc::new(workflows), options).await;
    // Spans buffered at shutdown are sent before the process ends.
    if let Some(traces) = traces {
        traces.shutdown().await;
    }
    served?;
    Ok(ExitCode::SUCCESS)
}
