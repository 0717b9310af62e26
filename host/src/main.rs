//! The `stepwise` binary: see [`stepwise::cli`].

/// mimalloc: the engine allocates per event and per guest call, from every
/// worker thread (`stepwise bench` measures the difference).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    stepwise::cli::main()
}
