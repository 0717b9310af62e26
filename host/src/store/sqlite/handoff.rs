//! The hand-off between the engine and the writer thread, without a sleep
//! on either side when writes come one after another.
//!
//! A sequential execution appends, waits for the fsync, runs its next step
//! and appends again. Parked between two writes, the writer thread and the
//! engine's worker would each have to be woken for every append: on a VM
//! that is tens of microseconds per wake, two wakes per append, five appends
//! per execution. So both sides spin for a short, bounded time first:
//! - the writer thread, after a commit, polls its queue for
//!   [`WRITER_SPIN`] (yielding the CPU between polls) before it blocks;
//! - a writer's caller polls its answer between turns of its tokio worker
//!   ([`tokio::task::yield_now`], so other tasks run meanwhile), for twice
//!   the recent average round trip and at most [`ANSWER_SPIN_LIMIT`]; after
//!   that, or when the average is longer than that (many writers share each
//!   commit), it waits asleep as before.
//!
//! Nothing here changes what is written or when it is durable: only how the
//! two threads learn of each other's turn.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// How long the writer thread polls its queue after a batch before it blocks.
pub(super) const WRITER_SPIN: Duration = Duration::from_micros(100);

/// The longest a caller polls for its answer before it waits asleep.
pub(super) const ANSWER_SPIN_LIMIT: Duration = Duration::from_micros(500);

/// The next job of the writer thread's queue: polled for [`WRITER_SPIN`],
/// then waited for. `None` once every sender is gone.
pub(super) fn next_job<T>(queue: &mpsc::Receiver<T>) -> Option<T> {
    let polling = Instant::now();
    while polling.elapsed() < WRITER_SPIN {
        match queue.try_recv() {
            Ok(job) => return Some(job),
            Err(mpsc::TryRecvError::Disconnected) => return None,
            Err(mpsc::TryRecvError::Empty) => std::thread::yield_now(),
        }
    }
    queue.recv().ok()
}

/// How long a write's answer has been taking lately: a moving average
/// (weight 1/8 for each new round trip), in microseconds.
#[derive(Default)]
pub(super) struct RoundTrips {
    average_us: AtomicU64,
}

impl RoundTrips {
    /// Waits for `answer`: polling it between the worker's other tasks while
    /// answers come quickly, asleep otherwise. `None` when the writer went
    /// away without answering.
    pub(super) async fn wait<T>(&self, mut answer: oneshot::Receiver<T>) -> Option<T> {
        let asked = Instant::now();
        let typical = Duration::from_micros(self.average_us.load(Ordering::Relaxed));
        if typical < ANSWER_SPIN_LIMIT {
            // Twice the usual wait: most answers arrive within it.
            let spin = (typical * 2).min(ANSWER_SPIN_LIMIT);
            while asked.elapsed() < spin {
                match answer.try_recv() {
                    Ok(value) => return Some(self.took(asked, value)),
                    // A receiver that reported its end must not be awaited.
                    Err(oneshot::error::TryRecvError::Closed) => return None,
                    Err(oneshot::error::TryRecvError::Empty) => tokio::task::yield_now().await,
                }
            }
        }
        answer.await.ok().map(|value| self.took(asked, value))
    }

    fn took<T>(&self, asked: Instant, value: T) -> T {
        let took = asked.elapsed().as_micros().min(u64::MAX as u128) as u64;
        let average = self.average_us.load(Ordering::Relaxed);
        // Racing updates may lose one sample: it is a hint, not a count.
        self.average_us.store(average - average / 8 + took / 8, Ordering::Relaxed);
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spinning_for(trips: &RoundTrips, typical: Duration) {
        trips.average_us.store(typical.as_micros() as u64, Ordering::Relaxed);
    }

    #[tokio::test]
    async fn an_answer_is_received_whether_it_comes_during_the_spin_or_after_it() {
        let trips = RoundTrips::default();
        // An answer already there: awaited at once (no average yet), then
        // taken by the poll (an average that makes the caller spin).
        for typical in [Duration::ZERO, Duration::from_micros(200)] {
            spinning_for(&trips, typical);
            let (tell, answer) = oneshot::channel();
            tell.send(1).unwrap();
            assert_eq!(trips.wait(answer).await, Some(1));
        }

        // The answer comes from another thread, while the caller spins (up
        // to 400 us) or after it.
        spinning_for(&trips, Duration::from_micros(200));
        let (tell, answer) = oneshot::channel();
        let soon = std::thread::spawn(move || tell.send(3).unwrap());
        assert_eq!(trips.wait(answer).await, Some(3));
        soon.join().unwrap();

        // An answer long after the spin: the caller must be woken, not lost.
        spinning_for(&trips, Duration::from_micros(200));
        let (tell, answer) = oneshot::channel();
        let late = std::thread::spawn(move || {
            std::thread::sleep(ANSWER_SPIN_LIMIT * 4);
            tell.send(2).unwrap();
        });
        assert_eq!(trips.wait(answer).await, Some(2));
        late.join().unwrap();

        // A writer that goes away is an error, not a hang or a panic, whether
        // it is seen while polling or asleep.
        for typical in [Duration::from_micros(200), ANSWER_SPIN_LIMIT * 2] {
            spinning_for(&trips, typical);
            let (tell, answer) = oneshot::channel::<u8>();
            drop(tell);
            assert_eq!(trips.wait(answer).await, None);
        }
    }

    #[test]
    fn the_writer_takes_a_job_sent_after_its_spin_and_stops_when_the_queue_closes() {
        let (send, queue) = mpsc::channel();
        let late = std::thread::spawn(move || {
            std::thread::sleep(WRITER_SPIN * 4);
            send.send(7).unwrap();
        });
        assert_eq!(next_job(&queue), Some(7));
        late.join().unwrap();
        assert_eq!(next_job(&queue), None, "every sender gone");
    }

    #[test]
    fn the_average_follows_the_round_trips_so_that_slow_answers_are_awaited_asleep() {
        let trips = RoundTrips::default();
        for _ in 0..64 {
            trips.took(Instant::now() - Duration::from_millis(5), ());
        }
        let average = Duration::from_micros(trips.average_us.load(Ordering::Relaxed));
        assert!(average > ANSWER_SPIN_LIMIT, "{average:?}");
    }
}
