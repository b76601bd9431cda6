//! A deadline that moves on with every message and rarely passes (an idle timeout, a response
//! timeout), on one timer that is re-armed only when it fires before the deadline: moving the
//! deadline costs a comparison, not a timer-wheel update.

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::time::{Instant, Sleep};

/// One lazily re-armed timer.
#[derive(Debug)]
pub struct LazyDeadline {
    timer: Pin<Box<Sleep>>,
    deadline: Instant,
}

impl LazyDeadline {
    /// A timer for `deadline`.
    pub fn new(deadline: Instant) -> Self {
        Self {
            timer: Box::pin(tokio::time::sleep_until(deadline)),
            deadline,
        }
    }

    /// Moves the deadline. A later one leaves the timer as it is; an earlier one re-arms it.
    pub fn set(&mut self, deadline: Instant) {
        self.deadline = deadline;
        if deadline < self.timer.deadline() {
            self.timer.as_mut().reset(deadline);
        }
    }

    /// Ready once the deadline has passed; otherwise the task is woken when the timer fires.
    pub fn poll_passed(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        while self.timer.as_mut().poll(cx).is_ready() {
            if self.timer.deadline() >= self.deadline {
                return Poll::Ready(());
            }
            self.timer.as_mut().reset(self.deadline);
        }
        Poll::Pending
    }

    /// Runs `future` to completion unless the deadline passes first (`None`).
    pub async fn within<F: Future>(&mut self, future: F) -> Option<F::Output> {
        let mut future = std::pin::pin!(future);
        std::future::poll_fn(|cx| {
            if let Poll::Ready(output) = future.as_mut().poll(cx) {
                return Poll::Ready(Some(output));
            }
            self.poll_passed(cx).map(|()| None)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn passes_at_the_latest_deadline_set() {
        let start = Instant::now();
        let mut deadline = LazyDeadline::new(start + Duration::from_secs(1));
        // Moved on before the first expiry: the timer fires early once, then at the deadline.
        deadline.set(start + Duration::from_secs(3));
        assert_eq!(deadline.within(std::future::pending::<()>()).await, None);
        assert_eq!(start.elapsed(), Duration::from_secs(3));
        // Moved back: the earlier deadline counts.
        deadline.set(Instant::now() + Duration::from_secs(5));
        deadline.set(Instant::now() + Duration::from_secs(2));
        assert_eq!(deadline.within(std::future::pending::<()>()).await, None);
        assert_eq!(start.elapsed(), Duration::from_secs(5));
        // A future that completes first wins.
        let done = deadline
            .within(tokio::time::sleep(Duration::from_secs(1)))
            .await;
        assert_eq!(done, None, "deadline already passed");
        deadline.set(Instant::now() + Duration::from_secs(2));
        assert_eq!(
            deadline
                .within(tokio::time::sleep(Duration::from_secs(1)))
                .await,
            Some(())
        );
    }
}
