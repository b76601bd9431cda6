//! A sending device's clock: waits for the slots of its [`Schedule`] and notices the end of the
//! run.
//!
//! The harness's own CPU per message counts against what it measures, so the per-message path
//! reuses its timer and its wait for the stop token instead of making a fresh one for every
//! message (each fresh wait registers on, and leaves, the stop token's list shared by every
//! device).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use tokio::time::Sleep;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use crate::rate::Schedule;
use crate::stats::Recorder;

/// Paces one device until the run stops.
pub struct Pacer {
    schedule: Option<Schedule>,
    recorder: Arc<Recorder>,
    stop: CancellationToken,
    stopped: Pin<Box<WaitForCancellationFutureOwned>>,
    timer: Pin<Box<Sleep>>,
    /// The timer is set for a slot not yet handed out.
    waiting: bool,
    over: bool,
}

impl Pacer {
    /// A pacer following `schedule` (`None`: no waiting, rate `max`) until `stop` fires; skipped
    /// slots go to `recorder`.
    pub fn new(
        schedule: Option<Schedule>,
        recorder: Arc<Recorder>,
        stop: CancellationToken,
    ) -> Self {
        Self {
            schedule,
            recorder,
            stopped: Box::pin(stop.clone().cancelled_owned()),
            stop,
            timer: Box::pin(tokio::time::sleep(std::time::Duration::ZERO)),
            waiting: false,
            over: false,
        }
    }

    /// Waits for the next slot; false once the run is over. Cancel safe: a slot being waited
    /// for is still the next one.
    pub async fn next(&mut self) -> bool {
        if self.over || self.stop.is_cancelled() {
            self.over = true;
            return false;
        }
        let Some(schedule) = &mut self.schedule else {
            return true;
        };
        if !self.waiting {
            let now = Instant::now();
            let slot = schedule.next_slot(now);
            self.recorder.skipped(slot.skipped);
            if slot.at <= now {
                return true;
            }
            self.timer.as_mut().reset(slot.at.into());
            self.waiting = true;
        }
        tokio::select! {
            biased;
            () = self.timer.as_mut() => {
                self.waiting = false;
                true
            }
            () = self.stopped.as_mut() => {
                self.over = true;
                false
            }
        }
    }

    /// Runs `work` unless the run stops first (`None`).
    pub async fn unless_stopped<F: Future>(&mut self, work: F) -> Option<F::Output> {
        if self.over {
            return None;
        }
        tokio::select! {
            biased;
            out = work => Some(out),
            () = self.stopped.as_mut() => {
                self.over = true;
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn slots_come_on_schedule_until_the_stop() {
        let recorder = Arc::new(Recorder::new(1));
        let stop = CancellationToken::new();
        let start = Instant::now();
        let schedule = Schedule::new(start, 100.0, 0.0, Duration::from_secs(1));
        let mut pacer = Pacer::new(Some(schedule), recorder, stop.clone());
        for _ in 0..5 {
            assert!(pacer.next().await);
        }
        // Slots 0..4 at 10 ms intervals: the fifth is not handed out before 40 ms.
        assert!(start.elapsed() >= Duration::from_millis(40));
        stop.cancel();
        assert!(!pacer.next().await);
        assert_eq!(pacer.unless_stopped(async { 1 }).await, None);
    }

    #[tokio::test]
    async fn a_slot_whose_wait_was_cancelled_is_not_lost() {
        use futures_util::FutureExt as _;
        let slots = |p: &Pacer| p.schedule.as_ref().map(Schedule::slots);
        // One slot per 500 ms: the second is not due while the test looks.
        let schedule = Schedule::new(Instant::now(), 2.0, 0.0, Duration::from_secs(60));
        let mut pacer = Pacer::new(
            Some(schedule),
            Arc::new(Recorder::new(1)),
            CancellationToken::new(),
        );
        assert!(pacer.next().await);
        assert_eq!(slots(&pacer), Some(1));
        // The wait for the second slot is given up twice, as in a `select!` that a read wins...
        assert_eq!(pacer.next().now_or_never(), None);
        assert_eq!(pacer.next().now_or_never(), None);
        assert_eq!(slots(&pacer), Some(2));
        // ...and that slot is the one handed out next.
        assert!(pacer.next().await);
        assert_eq!(slots(&pacer), Some(2));
    }

    #[tokio::test]
    async fn a_waiting_pacer_returns_when_the_run_stops() {
        let stop = CancellationToken::new();
        // The first slot is 500 s away: only the stop can end the wait.
        let schedule = Schedule::new(Instant::now(), 0.001, 0.5, Duration::from_secs(1));
        let mut pacer = Pacer::new(Some(schedule), Arc::new(Recorder::new(1)), stop.clone());
        let canceller = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            stop.cancel();
        });
        assert!(!pacer.next().await);
        assert!(canceller.await.is_ok());
    }

    #[tokio::test]
    async fn work_that_never_finishes_ends_with_the_stop() {
        let stop = CancellationToken::new();
        let mut pacer = Pacer::new(None, Arc::new(Recorder::new(1)), stop.clone());
        assert!(pacer.next().await, "rate max never waits");
        stop.cancel();
        assert_eq!(
            pacer.unless_stopped(std::future::pending::<()>()).await,
            None
        );
    }
}
