//! `stepwise hosts`: the hosts sharing a store, read from the store itself
//! (no server needed): heartbeat, lease, how many executions each owns and
//! whether its lease holds now.

use super::StoreArg;
use crate::journal::Timestamp;
use anyhow::{Context, Result};
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct HostsArgs {
    /// Print JSON (as `GET /v1/hosts` does) instead of a table.
    #[arg(long)]
    json: bool,
    /// Also list hosts whose lease expired (they stay registered until they
    /// deregister or a newer host of the same node replaces them).
    #[arg(long)]
    all: bool,
    #[command(flatten)]
    store: StoreArg,
}

pub async fn run(args: HostsArgs) -> Result<ExitCode> {
    let store =
        crate::store::open(&args.store.url).await.with_context(|| format!("opening the store `{}`", args.store.url))?;
    let now = Timestamp::now();
    let hosts: Vec<_> = store.hosts().await?.into_iter().filter(|host| args.all || host.is_live(now)).collect();
    if args.json {
        let listed: Vec<serde_json::Value> = hosts.iter().map(|host| crate::server::host_json(host, now)).collect();
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "hosts": listed }))?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("{:<40} {:<6} {:>8} {:>9} {:>6} {:<5} ADDRESS", "HOST", "PID", "OWNS", "LEASE", "BEAT", "LIVE");
    for host in &hosts {
        let since_beat = now.0.saturating_sub(host.heartbeat_at.0);
        println!(
            "{:<40} {:<6} {:>8} {:>8}s {:>5}s {:<5} {}",
            host.id,
            host.pid,
            host.owned,
            host.lease_ms as f64 / 1000.0,
            since_beat / 1000,
            if host.is_live(now) { "yes" } else { "no" },
            host.address.as_deref().unwrap_or("-")
        );
    }
    if hosts.is_empty() {
        println!("(no {}hosts registered in this store)", if args.all { "" } else { "live " });
    }
    Ok(ExitCode::SUCCESS)
}
