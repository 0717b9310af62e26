//! `stepwise bench`: runs the performance harness ([`crate::bench`]).

use crate::bench::{self, BenchOptions};
use anyhow::{bail, Context, Result};
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `stepwise bench`.
#[derive(clap::Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    command: Option<BenchCommand>,
    /// The directory of built guests (`scripts/build-guests.sh` fills it).
    #[arg(long, default_value = "build/plugins", global = true)]
    plugins: PathBuf,
    /// Write the figures as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// A smoke run (tiny loops): proves that every measurement runs.
    #[arg(long)]
    quick: bool,
    /// Run one measurement only.
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(bench::MEASUREMENTS))]
    only: Option<String>,
    /// Seconds per repetition of a timed loop.
    #[arg(long, default_value_t = 1.0)]
    seconds: f64,
    /// Repetitions of each measurement (at least 3).
    #[arg(long, default_value_t = 3)]
    repetitions: usize,
    /// A PostgreSQL server for the multi-host measurement (`scripts/postgres.sh`
    /// prints one); its database `stepwise_bench_hosts` is dropped and created.
    #[arg(long, env = "STEPWISE_BENCH_POSTGRES")]
    postgres: Option<String>,
}

/// What `stepwise bench` does besides measuring.
#[derive(clap::Subcommand)]
enum BenchCommand {
    /// Fill a new SQLite store with real executions (accept-quote, run by the
    /// engine on the built guests): finished ones, and ones waiting on an
    /// async approval spread among them, as a busy production store holds.
    GenerateStore {
        /// The SQLite file to create (it must not exist).
        path: PathBuf,
        /// Finished (`succeeded`) executions.
        #[arg(long, default_value_t = 1_000_000)]
        finished: usize,
        /// Executions waiting on their async `approve` step.
        #[arg(long, default_value_t = 10_000)]
        waiting: usize,
    },
    /// Crash with work in flight: start accept-quote executions on an
    /// existing SQLite store, all at once, and end the process as soon as
    /// every one is recorded, without a shutdown. They stay `running`, owned
    /// by a host that is gone, for a `serve` or `resume` to take over.
    CrashStore {
        /// The SQLite file (made by `generate-store`, or any store).
        path: PathBuf,
        /// Executions to leave in flight.
        #[arg(long, default_value_t = 10_000)]
        running: usize,
    },
}

/// Runs outside the command line's async runtime: each measurement builds
/// the runtime it needs (one worker, two workers).
pub fn run(args: BenchArgs) -> Result<ExitCode> {
    match args.command {
        Some(BenchCommand::GenerateStore { path, finished, waiting }) => {
            let report = bench::generate_store(args.plugins, &path, bench::Fill { finished, waiting })?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            return Ok(ExitCode::SUCCESS);
        }
        Some(BenchCommand::CrashStore { path, running }) => {
            let abandoned = bench::abandon_executions(args.plugins, &path, running)?;
            let report =
                serde_json::json!({ "store": format!("sqlite://{}", path.display()), "started": abandoned.started });
            println!("{}", serde_json::to_string_pretty(&report)?);
            std::io::Write::flush(&mut std::io::stdout())?;
            // The crash: no shutdown, the executions' drivers die with the process.
            std::process::exit(0);
        }
        None => {}
    }
    if args.repetitions < 3 {
        bail!("--repetitions must be at least 3");
    }
    if !(args.seconds > 0.0 && args.seconds.is_finite()) {
        bail!("--seconds must be a positive number");
    }
    let options = BenchOptions {
        plugins: args.plugins,
        seconds: args.seconds,
        repetitions: args.repetitions,
        only: args.only,
        quick: args.quick,
        postgres: args.postgres,
    };
    let report = bench::run(&options)?;
    print!("{}", bench::table(&report));
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}
