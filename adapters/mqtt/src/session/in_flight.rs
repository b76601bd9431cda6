//! The forwards of one connection that are still running, in arrival order.
//!
//! The queue is allocated with its first forward and given back once it is empty
//! ([`InFlight::release`]), so an idle connection holds none.

use std::task::{Context, Poll};

use futures_util::StreamExt;
use futures_util::stream::FuturesOrdered;

use super::{Outcome, Pending};

/// Forwards in flight; their outcomes come out in the order they were pushed.
#[derive(Default)]
pub(crate) struct InFlight(Option<Box<FuturesOrdered<Pending>>>);

impl InFlight {
    /// Number of forwards in flight.
    pub(crate) fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |queue| queue.len())
    }

    /// Whether none is in flight.
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds a forward at the end.
    pub(crate) fn push_back(&mut self, forward: Pending) {
        self.0
            .get_or_insert_with(|| Box::new(FuturesOrdered::new()))
            .push_back(forward);
    }

    /// The outcome of the oldest forward once it is done; `None` when none is in flight.
    pub(crate) async fn next(&mut self) -> Option<Outcome> {
        std::future::poll_fn(|cx| self.poll_next(cx)).await
    }

    /// The outcome of the oldest forward if it is done; `Ready(None)` when none is in flight.
    pub(crate) fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Outcome>> {
        match &mut self.0 {
            Some(queue) => queue.poll_next_unpin(cx),
            None => Poll::Ready(None),
        }
    }

    /// Gives the queue's memory back if no forward is in flight.
    pub(crate) fn release(&mut self) {
        if self.is_empty() {
            self.0 = None;
        }
    }
}
