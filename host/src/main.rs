//! The `stepwise` binary: see [`stepwise::cli`].

fn main() -> std::process::ExitCode {
    stepwise::cli::main()
}
