//! The epoch ticker: advances the epoch of every lane's engine at a fixed rate while
//! guest code may run, so that running guest code yields to the executor at
//! every tick and is interrupted at its deadline (see `invoke`), and
//! sleeps while no call is in flight (an idle host wakes for nothing).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::Thread;
use std::time::{Duration, Instant};
use wasmtime::Engine;

/// How often the epoch advances: how long guest code runs before it yields.
pub const TICK: Duration = Duration::from_millis(1);

/// Stops its thread when dropped.
pub struct Ticker {
    stop: Arc<AtomicBool>,
    /// How many calls are in flight.
    calls: Arc<AtomicUsize>,
    /// The ticker's thread, unparked when the first call starts.
    thread: Thread,
}

/// Keeps the ticker going while a call is in flight.
pub struct Running {
    calls: Arc<AtomicUsize>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.calls.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Ticker {
    /// Starts a thread that increments the engines' epochs once per [`TICK`]
    /// of wall-clock time while calls are in flight. A sleep that overshoots
    /// (a loaded machine) is made up with several increments, so deadlines
    /// track the wall clock rather than the number of times the thread
    /// happened to wake up. Deadlines are relative to the epoch when a call
    /// starts, so the epoch standing still while nothing runs changes none.
    ///
    /// A call's start and end are an atomic count each: a call costs the
    /// ticker a wake-up only when it is the first after an idle spell and
    /// the thread is parked (no lock, no system call per call otherwise).
    pub fn start(engines: &[&Engine]) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let calls = Arc::new(AtomicUsize::new(0));
        let engines: Vec<_> = engines.iter().map(|engine| engine.weak()).collect();
        let (stopped, in_flight) = (stop.clone(), calls.clone());
        let thread = std::thread::Builder::new()
            .name("stepwise-epoch".into())
            .spawn(move || {
                while !stopped.load(Ordering::SeqCst) {
                    if in_flight.load(Ordering::SeqCst) == 0 {
                        // Unparked by the next call's start or by the drop
                        // (an unpark between the load and the park leaves
                        // its token: no wake is lost); a spurious wake-up
                        // only goes round the loop again.
                        std::thread::park();
                        continue;
                    }
                    let started = Instant::now();
                    let mut ticked: u128 = 0;
                    while !stopped.load(Ordering::SeqCst) && in_flight.load(Ordering::SeqCst) > 0 {
                        std::thread::sleep(TICK);
                        let due = started.elapsed().as_nanos() / TICK.as_nanos();
                        for engine in &engines {
                            let Some(engine) = engine.upgrade() else { return };
                            for _ in ticked..due {
                                engine.increment_epoch();
                            }
                        }
                        ticked = ticked.max(due);
                    }
                }
            })
            .expect("spawning the epoch thread")
            .thread()
            .clone();
        Self { stop, calls, thread }
    }

    /// Marks a call in flight until the returned guard is dropped.
    pub fn running(&self) -> Running {
        if self.calls.fetch_add(1, Ordering::SeqCst) == 0 {
            // A system call only if the thread is parked.
            self.thread.unpark();
        }
        Running { calls: self.calls.clone() }
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.unpark();
    }
}
