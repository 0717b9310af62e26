//! The epoch ticker: advances the engine's epoch at a fixed rate while
//! guest code may run, so that running guest code yields to the executor at
//! every tick and is interrupted at its deadline (see `invoke`), and
//! sleeps while no call is in flight (an idle host wakes for nothing).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use wasmtime::Engine;

/// How often the epoch advances: how long guest code runs before it yields.
pub const TICK: Duration = Duration::from_millis(1);

/// How many calls are in flight, and the ticker's wake-up.
#[derive(Default)]
struct Activity {
    calls: Mutex<usize>,
    changed: Condvar,
}

/// Stops its thread when dropped.
pub struct Ticker {
    stop: Arc<AtomicBool>,
    activity: Arc<Activity>,
}

/// Keeps the ticker going while a call is in flight.
pub struct Running {
    activity: Arc<Activity>,
}

impl Drop for Running {
    fn drop(&mut self) {
        *self.activity.calls.lock().expect("epoch lock") -= 1;
    }
}

impl Ticker {
    /// Starts a thread that increments the engine's epoch once per [`TICK`]
    /// of wall-clock time while calls are in flight. A sleep that overshoots
    /// (a loaded machine) is made up with several increments, so deadlines
    /// track the wall clock rather than the number of times the thread
    /// happened to wake up. Deadlines are relative to the epoch when a call
    /// starts, so the epoch standing still while nothing runs changes none.
    pub fn start(engine: &Engine) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let activity = Arc::new(Activity::default());
        let engine = engine.weak();
        let (stopped, shared) = (stop.clone(), activity.clone());
        std::thread::Builder::new()
            .name("stepwise-epoch".into())
            .spawn(move || {
                while !stopped.load(Ordering::Relaxed) {
                    {
                        let calls = shared.calls.lock().expect("epoch lock");
                        let timeout = Duration::from_millis(500);
                        let (calls, _) =
                            shared.changed.wait_timeout_while(calls, timeout, |calls| *calls == 0).expect("epoch lock");
                        if *calls == 0 {
                            continue; // idle; look at `stopped` now and then
                        }
                    }
                    let started = Instant::now();
                    let mut ticked: u128 = 0;
                    while !stopped.load(Ordering::Relaxed) && *shared.calls.lock().expect("epoch lock") > 0 {
                        std::thread::sleep(TICK);
                        let Some(engine) = engine.upgrade() else { return };
                        let due = started.elapsed().as_nanos() / TICK.as_nanos();
                        while ticked < due {
                            engine.increment_epoch();
                            ticked += 1;
                        }
                    }
                }
            })
            .expect("spawning the epoch thread");
        Self { stop, activity }
    }

    /// Marks a call in flight until the returned guard is dropped.
    pub fn running(&self) -> Running {
        *self.activity.calls.lock().expect("epoch lock") += 1;
        self.activity.changed.notify_one();
        Running { activity: self.activity.clone() }
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.activity.changed.notify_one();
    }
}
