//! The `stepwise` command line: parses arguments, builds the engine, and maps
//! outcomes to exit codes (0 succeeded, 1 the execution did not succeed,
//! 2 invalid input or setup). Errors go to stderr, results to stdout.

mod bench;
mod executions;
mod hosts;
mod invoke;
pub mod new;
mod plugins;
mod run;
mod serve;
mod tokens;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// Exit code for invalid input: a bad file, bad JSON, a broken plugin.
pub const EXIT_INVALID: u8 = 2;

#[derive(Parser)]
#[command(name = "stepwise", version, about = "A workflow engine whose steps are sandboxed WebAssembly components")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a workflow file once and print the execution as JSON (unfinished
    /// executions in the store are resumed first).
    Run(run::RunArgs),
    /// Resume every unfinished execution in the store.
    Resume(executions::ResumeArgs),
    /// Report an async step done, with its output; the execution carries on.
    Complete(executions::CompleteArgs),
    /// Report an async step failed; the execution rolls back.
    Fail(executions::FailArgs),
    /// Roll an execution back: running steps settle, then every completed
    /// step is compensated in reverse order (also after it succeeded).
    Cancel(executions::CancelArgs),
    /// Retry a `failed` execution: its compensations that failed for good are
    /// tried again (fresh attempts, the same idempotency keys) and the
    /// rollback goes on; any other execution is refused (exit 2).
    Retry(executions::RetryArgs),
    /// List, show and purge recorded executions.
    #[command(subcommand)]
    Executions(executions::ExecutionsCommand),
    /// Run one step's invoke (or compensate) alone, in the sandbox, with its
    /// services answered from fixtures: prints the result, logs, service
    /// calls and cost (exit 1 when the step failed).
    Invoke(invoke::InvokeArgs),
    /// Inspect and check step plugins.
    #[command(subcommand)]
    Plugins(plugins::PluginsCommand),
    /// Print the JSON Schema of workflow files.
    Schema,
    /// Create a ready-to-build step project in Rust, JavaScript, TypeScript or Python.
    New(new::NewArgs),
    /// Measure the engine: isolated steps vs native, sagas per second, per-step cost, loads, hot swap.
    Bench(bench::BenchArgs),
    /// Serve the HTTP API and web view, run events, schedules and deadlines.
    Serve(serve::ServeArgs),
    /// List the hosts sharing the store: heartbeat, lease, executions owned.
    Hosts(hosts::HostsArgs),
    /// Create, list and revoke the API tokens of the store (each with a scope).
    #[command(subcommand)]
    Tokens(tokens::TokensCommand),
}

/// Where plugins are looked up: `--plugins`, else `$STEPWISE_PLUGINS`, else `./plugins`.
#[derive(clap::Args, Clone)]
pub struct PluginDirArg {
    /// Directory of plugin components (`<name>.wasm`).
    #[arg(long = "plugins", env = "STEPWISE_PLUGINS", default_value = "plugins")]
    pub dir: PathBuf,
}

/// Where tenants' hook handler bindings are: `--tenants`, else `$STEPWISE_TENANTS`,
/// else `./tenants` when it exists (no bindings otherwise).
#[derive(clap::Args, Clone)]
pub struct TenantDirArg {
    /// Directory of tenant files (`<tenant>.toml`, binding plugins to hooks).
    #[arg(id = "tenants_dir", long = "tenants", env = "STEPWISE_TENANTS")]
    pub dir: Option<std::path::PathBuf>,
}

impl TenantDirArg {
    /// Loads the bindings; a named directory must exist and every file in it must be valid.
    pub fn load(&self) -> anyhow::Result<std::sync::Arc<crate::tenants::TenantBindings>> {
        use crate::tenants::TenantBindings;
        let dir = match &self.dir {
            Some(dir) => dir.clone(),
            None if std::path::Path::new("tenants").is_dir() => std::path::PathBuf::from("tenants"),
            None => return Ok(std::sync::Arc::new(TenantBindings::none())),
        };
        Ok(std::sync::Arc::new(TenantBindings::load(&dir).map_err(anyhow::Error::msg)?))
    }
}

/// Which execution store to use: `--store`, else `$STEPWISE_STORE`, else `sqlite://stepwise.db`.
#[derive(clap::Args, Clone)]
pub struct StoreArg {
    /// Execution store: `sqlite://PATH` (durable, the default), `postgres://...` (shared by
    /// several hosts) or `memory`.
    #[arg(long = "store", env = "STEPWISE_STORE", default_value = "sqlite://stepwise.db")]
    pub url: String,
}

/// The sandbox of the command-line host: default limits, the demo services
/// (`inventory`, `payments`) recording their calls in `ledger`, and `kv`.
fn demo_sandbox_with(
    ledger: std::sync::Arc<dyn crate::services::ledger::Ledger>,
    kv: std::sync::Arc<dyn crate::store::kv::KvStore>,
) -> anyhow::Result<std::sync::Arc<crate::sandbox::Sandbox>> {
    use crate::services::demo;
    use std::sync::Arc;
    let inventory = demo::Inventory::with_ledger(ledger.clone()).map_err(anyhow::Error::msg)?;
    let payments = demo::Payments::with_ledger(ledger).map_err(anyhow::Error::msg)?;
    let services = demo::registry(Arc::new(inventory), Arc::new(payments));
    let resources = crate::sandbox::HostResources { services: Arc::new(services), kv };
    crate::sandbox::Sandbox::with_resources(crate::sandbox::Limits::default(), resources)
}

/// A sandbox with in-memory services, for commands that run no execution.
fn demo_sandbox() -> anyhow::Result<std::sync::Arc<crate::sandbox::Sandbox>> {
    let ledger = std::sync::Arc::new(crate::services::ledger::MemoryLedger::default());
    demo_sandbox_with(ledger, std::sync::Arc::new(crate::store::kv::MemoryKv::default()))
}

/// The engine of the command-line host: the store `store`, plugins from
/// `plugins`, the demo services recording durably beside a SQLite store.
pub async fn demo_engine(store: &StoreArg, plugins: &PluginDirArg) -> anyhow::Result<crate::engine::Engine> {
    engine_over(store, plugins, true).await
}

/// The engine for commands that only read or purge executions: a missing
/// plugin directory is no error (they call no plugin).
pub async fn reading_engine(store: &StoreArg, plugins: &PluginDirArg) -> anyhow::Result<crate::engine::Engine> {
    engine_over(store, plugins, plugins.dir.exists()).await
}

async fn engine_over(
    store: &StoreArg,
    plugins: &PluginDirArg,
    scan_plugins: bool,
) -> anyhow::Result<crate::engine::Engine> {
    use crate::services::ledger::{Ledger, MemoryLedger, PostgresLedger, SqliteLedger};
    use anyhow::Context;
    use std::sync::Arc;
    let opening = || format!("opening the store `{}`", store.url);
    let (execution_store, ledger): (Arc<dyn crate::store::ExecutionStore>, Arc<dyn Ledger>) =
        if let Some(path) = store.url.strip_prefix("sqlite://").filter(|path| !path.is_empty()) {
            let sqlite = Arc::new(crate::store::SqliteStore::open(std::path::Path::new(path)).with_context(opening)?);
            let ledger = SqliteLedger::on(sqlite.clone()).await.map_err(anyhow::Error::msg)?;
            (sqlite, Arc::new(ledger))
        } else if store.url.starts_with("postgres://") || store.url.starts_with("postgresql://") {
            let postgres = Arc::new(crate::store::PostgresStore::open(&store.url).await.with_context(opening)?);
            let ledger = PostgresLedger::connect(postgres.config().clone()).map_err(anyhow::Error::msg)?;
            (postgres, Arc::new(ledger))
        } else {
            (crate::store::open(&store.url).await.with_context(opening)?, Arc::new(MemoryLedger::default()))
        };
    let kv = execution_store.clone().kv().unwrap_or_else(|| Arc::new(crate::store::kv::MemoryKv::default()));
    let sandbox = demo_sandbox_with(ledger, kv)?;
    let directory = if scan_plugins {
        crate::plugin::PluginDirectory::scan(&plugins.dir)
            .with_context(|| format!("reading the plugin directory {}", plugins.dir.display()))?
    } else {
        crate::plugin::PluginDirectory::empty(&plugins.dir)
    };
    let cache = crate::plugin::CodeCache::new(&crate::plugin::CodeCache::default_dir());
    let registry = Arc::new(crate::plugin::PluginRegistry::with_cache(sandbox, directory, Some(cache)));
    Ok(crate::engine::Engine::new(registry, execution_store))
}

/// Exit code for an execution: 0 when it succeeded, 1 otherwise.
fn exit_code(status: crate::journal::ExecutionStatus) -> ExitCode {
    if status == crate::journal::ExecutionStatus::Succeeded {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Runs the command line and returns the process exit code.
pub fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("STEPWISE_LOG").unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    if let Command::Bench(args) = cli.command {
        return bench::run(args).unwrap_or_else(fail);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => return fail(anyhow::anyhow!(error).context("starting the async runtime")),
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Run(args) => run::run(args).await,
            Command::Resume(args) => executions::resume(args).await,
            Command::Complete(args) => executions::complete(args).await,
            Command::Fail(args) => executions::fail(args).await,
            Command::Cancel(args) => executions::cancel(args).await,
            Command::Retry(args) => executions::retry(args).await,
            Command::Executions(command) => executions::run(command).await,
            Command::Plugins(command) => plugins::run(command).await,
            Command::Invoke(args) => invoke::run(args).await,
            Command::Serve(args) => serve::run(args).await,
            Command::Hosts(args) => hosts::run(args).await,
            Command::Tokens(command) => tokens::run(command).await,
            Command::New(args) => new::run(args),
            Command::Bench(_) => unreachable!("handled before the runtime starts"),
            Command::Schema => {
                println!("{}", serde_json::to_string_pretty(&crate::workflow::json_schema())?);
                Ok(ExitCode::SUCCESS)
            }
        }
    });
    result.unwrap_or_else(fail)
}

fn fail(error: anyhow::Error) -> ExitCode {
    eprintln!("error: {error:#}");
    ExitCode::from(EXIT_INVALID)
}
