//! Counters of the engine's work (attempts, their latency, finished
//! executions), kept in atomics so that the hot path only increments them.
//! The server renders them as Prometheus text.

use crate::journal::{CallCost, ExecutionStatus};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds of the step latency histogram buckets, in milliseconds.
pub const LATENCY_BUCKETS_MS: [u64; 12] = [1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 5000, 30000];

/// The engine's counters.
#[derive(Debug, Default)]
pub struct EngineMetrics {
    /// Executions started.
    pub executions_started: AtomicU64,
    /// Executions that succeeded.
    pub executions_succeeded: AtomicU64,
    /// Executions that were compensated.
    pub executions_compensated: AtomicU64,
    /// Executions that failed (a compensation failed).
    pub executions_failed: AtomicU64,
    /// `invoke` attempts that succeeded.
    pub attempts_succeeded: AtomicU64,
    /// `invoke` attempts that failed.
    pub attempts_failed: AtomicU64,
    /// `compensate` attempts made.
    pub compensation_attempts: AtomicU64,
    /// Executions this host claimed (to start driving them after a rest,
    /// a crash or another host's death).
    pub claims: AtomicU64,
    /// Claims that took an execution over from a host whose lease expired.
    pub takeovers: AtomicU64,
    /// Appends the store refused because another host had claimed the execution.
    pub fencing_refusals: AtomicU64,
    /// Executions that could not be loaded and were marked `failed`.
    pub executions_unloadable: AtomicU64,
    /// What guest calls cost, by tenant (`""` for none), then plugin.
    costs: Mutex<BTreeMap<String, BTreeMap<String, CallCost>>>,
    latency_buckets: [AtomicU64; LATENCY_BUCKETS_MS.len()],
    latency_count: AtomicU64,
    latency_sum_micros: AtomicU64,
}

impl EngineMetrics {
    /// Counts an `invoke` attempt that took `elapsed`.
    pub fn observe_attempt(&self, succeeded: bool, elapsed: Duration) {
        let counter = if succeeded { &self.attempts_succeeded } else { &self.attempts_failed };
        counter.fetch_add(1, Ordering::Relaxed);
        let millis = elapsed.as_millis() as u64;
        if let Some(bucket) = LATENCY_BUCKETS_MS.iter().position(|&bound| millis <= bound) {
            self.latency_buckets[bucket].fetch_add(1, Ordering::Relaxed);
        }
        self.latency_count.fetch_add(1, Ordering::Relaxed);
        self.latency_sum_micros.fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
    }

    /// Adds the cost of one guest call of `plugin` for `tenant`.
    pub fn observe_cost(&self, tenant: Option<&str>, plugin: &str, cost: &CallCost) {
        if cost.is_empty() {
            return;
        }
        let tenant = tenant.unwrap_or_default();
        let mut costs = self.costs.lock().expect("metrics lock");
        // Looked up by reference: the hot path allocates only for a new pair.
        let plugins = match costs.get_mut(tenant) {
            Some(plugins) => plugins,
            None => costs.entry(tenant.to_string()).or_default(),
        };
        match plugins.get_mut(plugin) {
            Some(sum) => sum.add(cost),
            None => {
                plugins.insert(plugin.to_string(), *cost);
            }
        }
    }

    /// What guest calls cost so far, by (tenant, plugin).
    pub fn costs(&self) -> Vec<((String, String), CallCost)> {
        let costs = self.costs.lock().expect("metrics lock");
        costs
            .iter()
            .flat_map(|(tenant, plugins)| {
                plugins.iter().map(move |(plugin, cost)| ((tenant.clone(), plugin.clone()), *cost))
            })
            .collect()
    }

    /// Counts an execution reaching a final status.
    pub fn observe_finished(&self, status: ExecutionStatus) {
        let counter = match status {
            ExecutionStatus::Succeeded => &self.executions_succeeded,
            ExecutionStatus::Compensated => &self.executions_compensated,
            ExecutionStatus::Failed => &self.executions_failed,
            _ => return,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The latency histogram: cumulative counts per bucket bound, total count, sum in seconds.
    pub fn latency(&self) -> (Vec<(u64, u64)>, u64, f64) {
        let mut cumulative = 0;
        let buckets = LATENCY_BUCKETS_MS
            .iter()
            .zip(&self.latency_buckets)
            .map(|(&bound, count)| {
                cumulative += count.load(Ordering::Relaxed);
                (bound, cumulative)
            })
            .collect();
        let count = self.latency_count.load(Ordering::Relaxed);
        let sum = self.latency_sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        (buckets, count, sum)
    }
}
