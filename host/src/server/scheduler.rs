//! The server's background work: adopting executions that need a driver and
//! have none (unfinished ones a crash or a dead host left, and those whose
//! deadline or backoff fell due while nobody drove them, read from the
//! store's timer index), starting workflows on their cron schedules, and
//! purging old finished executions.

use crate::engine::{Engine, StartOptions};
use crate::journal::time::Timestamp;
use crate::journal::ExecutionId;
use crate::workflow::WorkflowDirectory;
use chrono::{DateTime, Utc};
use std::collections::HashSet;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

/// How often the store is asked for executions that need a driver.
pub const ADOPT_EVERY: Duration = Duration::from_secs(1);

/// How many executions one look at the store adopts at most.
const ADOPT_AT_ONCE: usize = 256;

/// While this many executions or more are driven here, no more are adopted
/// (the rest wait for a later look, or another host takes them).
const DRIVING_AT_MOST: usize = 4096;

/// How soon the store is looked at again while a backlog waits for room.
const BACKLOG_RETRY: Duration = Duration::from_millis(200);

/// Starts the background work; abort the handle to stop it.
pub fn spawn(
    engine: Engine,
    workflows: Arc<WorkflowDirectory>,
    retention: Option<Duration>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        // Catch up: the latest slot of each schedule that came due while no
        // server ran is run now, once (its idempotency key makes a slot that
        // already ran a no-op); older missed slots are not replayed.
        let mut last_check = Utc::now();
        catch_up_schedules(&engine, &workflows, last_check).await;
        let mut last_purge: Option<std::time::Instant> = None;
        loop {
            // Executions that need a driver (what a crash or a dead host
            // left, deadlines due while nobody drives them): at start, then
            // once a second.
            let backlog = adopt_backlog(&engine).await;
            if let Some(age) = retention {
                if last_purge.is_none_or(|at| at.elapsed() >= Duration::from_secs(3600)) {
                    last_purge = Some(std::time::Instant::now());
                    let cutoff = Timestamp(Timestamp::now().0.saturating_sub(age.as_millis() as u64));
                    match engine.store().purge_finished_before(cutoff, &crate::store::PURGED_BY_DEFAULT).await {
                        Ok(purged) => tracing::info!("retention: purged {}", crate::store::describe_purge(&purged)),
                        Err(error) => tracing::error!("retention: {error}"),
                    }
                }
            }
            // Sleep until the next cron slot, or a second at most: an idle
            // server wakes once a second for one query.
            let next_slot = next_slot(&workflows, last_check);
            let idle = if backlog { BACKLOG_RETRY } else { ADOPT_EVERY };
            let wait = next_slot.map_or(idle, |slot| (slot - Utc::now()).to_std().unwrap_or_default().min(idle));
            tokio::time::sleep(wait).await;
            let now = Utc::now();
            run_due_schedules(&engine, &workflows, last_check, now).await;
            last_check = now;
        }
    })
}

/// The earliest slot of any workflow's schedule after `after`.
fn next_slot(workflows: &WorkflowDirectory, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    workflows
        .workflows()
        .iter()
        .filter_map(|workflow| workflow.definition().schedule.clone())
        .filter_map(|schedule| cron::Schedule::from_str(&schedule).ok()?.after(&after).next())
        .min()
}

/// The slots of `schedule` in `(after, until]`.
pub fn due_slots(schedule: &str, after: DateTime<Utc>, until: DateTime<Utc>) -> Vec<DateTime<Utc>> {
    match cron::Schedule::from_str(schedule) {
        Ok(schedule) => schedule.after(&after).take_while(|slot| *slot <= until).take(100).collect(),
        Err(_) => Vec::new(),
    }
}

async fn catch_up_schedules(engine: &Engine, workflows: &WorkflowDirectory, now: DateTime<Utc>) {
    for workflow in workflows.workflows() {
        let Some(schedule) = workflow.definition().schedule.clone() else { continue };
        let recent = due_slots_all(&schedule, now - chrono::Duration::days(1), now);
        if let Some(latest) = recent.last() {
            start_slot(engine, &workflow, *latest).await;
        }
    }
}

/// Every slot of `schedule` in `(after, until]` (for catch-up, unbounded by count).
fn due_slots_all(schedule: &str, after: DateTime<Utc>, until: DateTime<Utc>) -> Vec<DateTime<Utc>> {
    match cron::Schedule::from_str(schedule) {
        Ok(schedule) => schedule.after(&after).take_while(|slot| *slot <= until).collect(),
        Err(_) => Vec::new(),
    }
}

async fn start_slot(engine: &Engine, workflow: &Arc<crate::workflow::Workflow>, slot: DateTime<Utc>) {
    let at = slot.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let options = StartOptions { idempotency_key: Some(format!("schedule:{}:{at}", workflow.name())), tenant: None };
    let input = serde_json::json!({"scheduled_at": at});
    if let Err(error) = engine.start(workflow.clone(), input, options).await {
        tracing::error!(workflow = workflow.name(), "scheduled run at {at}: {error}");
    }
}

/// Starts each scheduled workflow once per slot that came due. A slot's
/// idempotency key makes a slot run at most once, even across restarts;
/// slots missed while no server ran are not run.
async fn run_due_schedules(engine: &Engine, workflows: &WorkflowDirectory, after: DateTime<Utc>, until: DateTime<Utc>) {
    for workflow in workflows.workflows() {
        let Some(schedule) = workflow.definition().schedule.clone() else { continue };
        for slot in due_slots(&schedule, after, until) {
            start_slot(engine, &workflow, slot).await;
        }
    }
}

/// Adopts what needs a driver: a look takes [`ADOPT_AT_ONCE`] at most, and
/// a full one is followed by another at once (a dead host's backlog is taken
/// in a few transactions, not [`ADOPT_AT_ONCE`] a second), never past
/// [`DRIVING_AT_MOST`] executions driven here, nor [`DRIVING_AT_MOST`]
/// adopted in one pass (schedules run between passes). Returns whether a
/// backlog is left: look again soon, not in a second. An execution adopted
/// twice in one pass came to rest at once and was claimable again (a parent
/// waiting for its child, say): that is not a backlog, and the pass ends.
async fn adopt_backlog(engine: &Engine) -> bool {
    let mut adopted_in_pass: HashSet<ExecutionId> = HashSet::new();
    loop {
        let room = DRIVING_AT_MOST.saturating_sub(engine.live_executions());
        if room == 0 || adopted_in_pass.len() >= DRIVING_AT_MOST {
            return true;
        }
        let limit = room.min(ADOPT_AT_ONCE);
        match engine.adopt_claimable(limit).await {
            Ok(adopted) => {
                let full = adopted.len() == limit;
                let fresh = adopted.into_iter().filter(|id| adopted_in_pass.insert(id.clone())).count();
                if !full || fresh < limit {
                    return false;
                }
                tokio::task::yield_now().await
            }
            Err(error) => {
                tracing::warn!("adopting executions that need a driver: {error}");
                return false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_those_in_the_window() {
        let start = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z").unwrap().with_timezone(&Utc);
        let slots = due_slots("*/10 * * * * *", start, start + chrono::Duration::seconds(35));
        assert_eq!(slots.len(), 3);
        assert!(due_slots("not cron", start, start + chrono::Duration::seconds(35)).is_empty());
    }
}
