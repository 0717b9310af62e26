//! The epoch ticker: advances the engine's epoch at a fixed rate so that
//! running guest code can be interrupted at its deadline.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use wasmtime::Engine;

/// How often the epoch advances; deadlines are expressed in these ticks.
pub const TICK: Duration = Duration::from_millis(1);

/// Stops its thread when dropped.
pub struct Ticker {
    stop: Arc<AtomicBool>,
}

impl Ticker {
    /// Starts a thread that increments the engine's epoch once per [`TICK`]
    /// of wall-clock time. A sleep that overshoots (a loaded machine) is
    /// made up with several increments, so deadlines track the wall clock
    /// rather than the number of times the thread happened to wake up.
    pub fn start(engine: &Engine) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let engine = engine.weak();
        let stopped = stop.clone();
        std::thread::Builder::new()
            .name("stepwise-epoch".into())
            .spawn(move || {
                let started = std::time::Instant::now();
                let mut ticked: u128 = 0;
                while !stopped.load(Ordering::Relaxed) {
                    std::thread::sleep(TICK);
                    let Some(engine) = engine.upgrade() else { break };
                    let due = started.elapsed().as_nanos() / TICK.as_nanos();
                    while ticked < due {
                        engine.increment_epoch();
                        ticked += 1;
                    }
                }
            })
            .expect("spawning the epoch thread");
        Self { stop }
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The number of ticks that covers `duration`, rounded up, at least one.
pub fn ticks(duration: Duration) -> u64 {
    (duration.as_nanos().div_ceil(TICK.as_nanos()) as u64).max(1)
}
