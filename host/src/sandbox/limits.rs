//! Per-invocation resource limits and their defaults.

use std::time::Duration;

/// The pool reserves this much address space per linear memory; no per-call
/// memory limit can exceed it.
pub const POOL_MAX_MEMORY_BYTES: usize = 256 << 20;

/// What one call into a guest may consume.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Fuel (roughly, wasm instructions) for one call.
    pub fuel: u64,
    /// Wall-clock deadline for one call when the step sets no `timeout_ms`.
    pub deadline: Duration,
    /// Linear memory bytes per memory.
    pub memory_bytes: usize,
    /// Elements per table.
    pub max_table_elements: usize,
    /// Instances (core and component) per store.
    pub max_instances: usize,
    /// Size of the JSON input handed to the guest.
    pub max_input_bytes: usize,
    /// Size of the JSON output (and compensation data) a guest may return.
    pub max_output_bytes: usize,
    /// Bytes of stdout and of stderr captured per call.
    pub max_stdio_bytes: usize,
    /// Bytes of `log` messages kept per call; later lines are dropped.
    pub max_log_bytes: usize,
    /// Native stack for wasm code (engine-wide). 1 MiB: a JavaScript step's
    /// recursion is stopped by QuickJS's own limit (a `RangeError` it can
    /// catch, ~700 frames) well before this one traps.
    pub max_wasm_stack_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            fuel: 500_000_000,
            deadline: Duration::from_secs(30),
            memory_bytes: 64 << 20,
            max_table_elements: 20_000,
            max_instances: 64,
            max_input_bytes: 1 << 20,
            max_output_bytes: 1 << 20,
            max_stdio_bytes: 64 << 10,
            max_log_bytes: 64 << 10,
            max_wasm_stack_bytes: 1 << 20,
        }
    }
}
