//! The `stepwise` command line: parses arguments, builds the engine, and maps
//! outcomes to exit codes (0 succeeded, 1 the execution did not succeed,
//! 2 invalid input or setup). Errors go to stderr, results to stdout.

mod plugins;
mod run;

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
    /// Run a workflow file once and print the execution as JSON.
    Run(run::RunArgs),
    /// Inspect and check step plugins.
    #[command(subcommand)]
    Plugins(plugins::PluginsCommand),
    /// Print the JSON Schema of workflow files.
    Schema,
}

/// Where plugins are looked up: `--plugins`, else `$STEPWISE_PLUGINS`, else `./plugins`.
#[derive(clap::Args, Clone)]
pub struct PluginDirArg {
    /// Directory of plugin components (`<name>.wasm`).
    #[arg(long = "plugins", env = "STEPWISE_PLUGINS", default_value = "plugins")]
    pub dir: PathBuf,
}

/// The sandbox of the command-line host: default limits, an in-memory kv
/// store and the demo services (`inventory`, `payments`).
fn demo_sandbox() -> anyhow::Result<std::sync::Arc<crate::sandbox::Sandbox>> {
    use crate::services::demo;
    use std::sync::Arc;
    let services = demo::registry(Arc::new(demo::Inventory::new()), Arc::new(demo::Payments::new()));
    let resources = crate::sandbox::HostResources { services: Arc::new(services), ..Default::default() };
    crate::sandbox::Sandbox::with_resources(crate::sandbox::Limits::default(), resources)
}

/// Runs the command line and returns the process exit code.
pub fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("STEPWISE_LOG").unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => return fail(anyhow::anyhow!(error).context("starting the async runtime")),
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Run(args) => run::run(args).await,
            Command::Plugins(command) => plugins::run(command).await,
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
