//! `GET /metrics`: Prometheus text exposition of the engine's counters, the
//! executions by status, and the plugin registry's work.

use super::AppState;
use std::fmt::Write;
use std::sync::atomic::Ordering;

/// Renders every metric as Prometheus text.
pub async fn render(state: &AppState) -> Result<String, crate::store::StoreError> {
    let metrics = state.engine.metrics();
    let mut out = String::new();
    let load = |counter: &std::sync::atomic::AtomicU64| counter.load(Ordering::Relaxed);

    let _ = writeln!(out, "# HELP stepwise_executions Executions in the store, by status.");
    let _ = writeln!(out, "# TYPE stepwise_executions gauge");
    for (status, count) in state.engine.store().count_by_status().await? {
        let _ = writeln!(out, "stepwise_executions{{status=\"{}\"}} {count}", status.as_str());
    }
    let _ = writeln!(out, "# HELP stepwise_executions_started_total Executions started by this process.");
    let _ = writeln!(out, "# TYPE stepwise_executions_started_total counter");
    let _ = writeln!(out, "stepwise_executions_started_total {}", load(&metrics.executions_started));
    let _ = writeln!(out, "# HELP stepwise_executions_finished_total Executions this process drove to a final status.");
    let _ = writeln!(out, "# TYPE stepwise_executions_finished_total counter");
    for (status, counter) in [
        ("succeeded", &metrics.executions_succeeded),
        ("compensated", &metrics.executions_compensated),
        ("failed", &metrics.executions_failed),
    ] {
        let _ = writeln!(out, "stepwise_executions_finished_total{{status=\"{status}\"}} {}", load(counter));
    }
    let _ = writeln!(out, "# HELP stepwise_step_attempts_total Step invoke attempts, by outcome.");
    let _ = writeln!(out, "# TYPE stepwise_step_attempts_total counter");
    let _ =
        writeln!(out, "stepwise_step_attempts_total{{outcome=\"succeeded\"}} {}", load(&metrics.attempts_succeeded));
    let _ = writeln!(out, "stepwise_step_attempts_total{{outcome=\"failed\"}} {}", load(&metrics.attempts_failed));
    let _ = writeln!(out, "# HELP stepwise_compensation_attempts_total Compensate attempts.");
    let _ = writeln!(out, "# TYPE stepwise_compensation_attempts_total counter");
    let _ = writeln!(out, "stepwise_compensation_attempts_total {}", load(&metrics.compensation_attempts));
    for (name, help, counter) in [
        ("stepwise_claims_total", "Executions this host claimed to drive.", &metrics.claims),
        ("stepwise_takeovers_total", "Claims taken over from a host whose lease expired.", &metrics.takeovers),
        (
            "stepwise_fencing_refusals_total",
            "Writes refused because another host had claimed the execution.",
            &metrics.fencing_refusals,
        ),
        (
            "stepwise_executions_unloadable_total",
            "Executions that could not be loaded and were marked failed.",
            &metrics.executions_unloadable,
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} counter");
        let _ = writeln!(out, "{name} {}", load(counter));
    }
    let _ = writeln!(out, "# HELP stepwise_live_executions Executions this host drives now.");
    let _ = writeln!(out, "# TYPE stepwise_live_executions gauge");
    let _ = writeln!(out, "stepwise_live_executions {}", state.engine.live_executions());

    let (buckets, count, sum) = metrics.latency();
    let _ = writeln!(out, "# HELP stepwise_step_latency_seconds Duration of step invoke attempts.");
    let _ = writeln!(out, "# TYPE stepwise_step_latency_seconds histogram");
    for (bound_ms, cumulative) in buckets {
        let _ =
            writeln!(out, "stepwise_step_latency_seconds_bucket{{le=\"{}\"}} {cumulative}", bound_ms as f64 / 1000.0);
    }
    let _ = writeln!(out, "stepwise_step_latency_seconds_bucket{{le=\"+Inf\"}} {count}");
    let _ = writeln!(out, "stepwise_step_latency_seconds_sum {sum}");
    let _ = writeln!(out, "stepwise_step_latency_seconds_count {count}");

    // What guest calls cost, per tenant and plugin: counters a platform can bill from.
    let costs = metrics.costs();
    for (name, help, value) in [
        ("stepwise_guest_calls_total", "Guest calls (attempts and compensations), by tenant and plugin.", 0),
        ("stepwise_guest_fuel_total", "Fuel guest calls consumed, by tenant and plugin.", 1),
        ("stepwise_guest_seconds_total", "Wall time of guest calls, by tenant and plugin.", 2),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} counter");
        for ((tenant, plugin), cost) in &costs {
            let labels = format!("tenant=\"{tenant}\",plugin=\"{plugin}\"");
            match value {
                0 => writeln!(out, "{name}{{{labels}}} {}", cost.calls),
                1 => writeln!(out, "{name}{{{labels}}} {}", cost.fuel),
                _ => writeln!(out, "{name}{{{labels}}} {}", cost.wall_us as f64 / 1e6),
            }
            .expect("writing to a string");
        }
    }

    let stats = state.engine.registry().stats();
    let _ = writeln!(out, "# HELP stepwise_plugin_loads_total Plugin versions loaded, by how.");
    let _ = writeln!(out, "# TYPE stepwise_plugin_loads_total counter");
    let _ = writeln!(out, "stepwise_plugin_loads_total{{source=\"compiled\"}} {}", load(&stats.compiled));
    let _ = writeln!(out, "stepwise_plugin_loads_total{{source=\"cache\"}} {}", load(&stats.cache_hits));
    let _ = writeln!(out, "# HELP stepwise_plugin_swaps_total Hot swaps of a plugin's current version.");
    let _ = writeln!(out, "# TYPE stepwise_plugin_swaps_total counter");
    let _ = writeln!(out, "stepwise_plugin_swaps_total {}", load(&stats.swaps));
    Ok(out)
}
