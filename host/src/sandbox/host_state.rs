//! The per-invocation state a guest's store holds: a WASI context with no
//! authority, the resource limiter, and the buffer the `log` capability and
//! the captured stdio write into.

use super::capabilities::http::HttpPolicy;
use super::{Grants, HostResources, Limits};
use crate::journal::{LogLevel, LogLine, Timestamp};
use crate::services::Caller;
use std::sync::{Arc, Mutex};
use wasmtime::component::ResourceTable;
use wasmtime::ResourceLimiter;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

/// Log lines of one call, bounded in bytes. Shared with the caller so that the
/// lines survive a call that is cut off at its deadline.
#[derive(Clone, Default)]
pub struct LogBuffer(Arc<Mutex<LogLines>>);

#[derive(Default)]
struct LogLines {
    lines: Vec<LogLine>,
    bytes: usize,
    dropped: usize,
}

impl LogBuffer {
    /// Appends a line unless the byte budget is spent (then counts it as dropped).
    pub fn push(&self, level: LogLevel, message: String, max_bytes: usize) {
        let mut log = self.0.lock().expect("log buffer poisoned");
        if log.bytes + message.len() > max_bytes {
            log.dropped += 1;
            return;
        }
        log.bytes += message.len();
        log.lines.push(LogLine { at: Timestamp::now(), level, message });
    }

    /// Takes the lines, with a final note when some were dropped.
    pub fn take(&self) -> Vec<LogLine> {
        let mut log = self.0.lock().expect("log buffer poisoned");
        let mut lines = std::mem::take(&mut log.lines);
        if log.dropped > 0 {
            lines.push(LogLine {
                at: Timestamp::now(),
                level: LogLevel::Warn,
                message: format!("{} log lines dropped: the call's log limit was reached", log.dropped),
            });
        }
        lines
    }
}

/// Captured stdout and stderr of one call.
#[derive(Clone)]
pub struct Stdio {
    /// The guest's stdout.
    pub stdout: MemoryOutputPipe,
    /// The guest's stderr.
    pub stderr: MemoryOutputPipe,
}

impl Stdio {
    /// Pipes that hold at most `capacity` bytes each (writing more traps the guest).
    pub fn new(capacity: usize) -> Self {
        Self { stdout: MemoryOutputPipe::new(capacity), stderr: MemoryOutputPipe::new(capacity) }
    }

    /// Moves what was captured into `logs`, one line per line of text.
    pub fn drain_into(&self, logs: &mut Vec<LogLine>) {
        for (pipe, level) in [(&self.stdout, LogLevel::Stdout), (&self.stderr, LogLevel::Stderr)] {
            let contents = pipe.contents();
            let at = Timestamp::now();
            for line in String::from_utf8_lossy(&contents).lines().filter(|line| !line.is_empty()) {
                logs.push(LogLine { at, level, message: line.to_string() });
            }
        }
    }

    /// The tail of stderr, to explain a trap (a panic message lands there).
    pub fn stderr_tail(&self, max_chars: usize) -> Option<String> {
        let contents = self.stderr.contents();
        let text = String::from_utf8_lossy(&contents);
        let text = text.trim();
        if text.is_empty() {
            return None;
        }
        let start = text.char_indices().rev().nth(max_chars.saturating_sub(1)).map_or(0, |(i, _)| i);
        Some(text[start..].to_string())
    }
}

/// The data of one store: everything a single guest call can reach.
pub struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: Limiter,
    pub(crate) logs: LogBuffer,
    pub(crate) max_log_bytes: usize,
    pub(crate) plugin: Arc<Grants>,
    pub(crate) resources: HostResources,
    pub(crate) caller: Caller,
    /// The kv namespace: the plugin's name, prefixed by the tenant's (`tenant/plugin`).
    pub(crate) kv_namespace: String,
    http: WasiHttpCtx,
    http_policy: HttpPolicy,
}

impl HostState {
    /// State for one call: no preopens, no environment, no arguments, no
    /// network, stdio captured into `stdio`.
    pub fn new(
        limits: &Limits,
        logs: LogBuffer,
        stdio: &Stdio,
        plugin: Arc<Grants>,
        resources: HostResources,
        caller: Caller,
    ) -> Self {
        let wasi = WasiCtx::builder()
            .stdout(stdio.stdout.clone())
            .stderr(stdio.stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        let http_policy = HttpPolicy::new(plugin.http_hosts.clone()).with_idempotency_key(&caller.idempotency_key);
        let kv_namespace = match &caller.tenant {
            Some(tenant) => format!("{tenant}/{}", plugin.plugin),
            None => plugin.plugin.clone(),
        };
        Self {
            kv_namespace,
            wasi,
            http: WasiHttpCtx::new(),
            http_policy,
            table: ResourceTable::new(),
            limiter: Limiter::new(limits),
            logs,
            max_log_bytes: limits.max_log_bytes,
            plugin,
            resources,
            caller,
        }
    }

    /// The resource limiter to install on the store.
    pub fn limiter(&mut self) -> &mut dyn ResourceLimiter {
        &mut self.limiter
    }

    /// Whether the guest tried to grow a memory past its limit.
    pub fn hit_memory_limit(&self) -> bool {
        self.limiter.memory_limit_hit
    }

    /// The largest linear memory the guest had, in bytes.
    pub fn peak_memory_bytes(&self) -> usize {
        self.limiter.peak_memory_bytes
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView { ctx: &mut self.http, table: &mut self.table, hooks: &mut self.http_policy }
    }
}

/// Enforces memory, table and instance limits and remembers a memory refusal,
/// which otherwise surfaces as an unrelated trap (the guest allocator aborts).
struct Limiter {
    memory_bytes: usize,
    table_elements: usize,
    instances: usize,
    memory_limit_hit: bool,
    peak_memory_bytes: usize,
}

impl Limiter {
    fn new(limits: &Limits) -> Self {
        Self {
            memory_bytes: limits.memory_bytes,
            table_elements: limits.max_table_elements,
            instances: limits.max_instances,
            memory_limit_hit: false,
            peak_memory_bytes: 0,
        }
    }
}

impl ResourceLimiter for Limiter {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.memory_bytes {
            self.memory_limit_hit = true;
            return Ok(false);
        }
        self.peak_memory_bytes = self.peak_memory_bytes.max(desired);
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= self.table_elements)
    }

    fn instances(&self) -> usize {
        self.instances
    }

    fn tables(&self) -> usize {
        self.instances * 4
    }

    fn memories(&self) -> usize {
        self.instances
    }
}
