//! The interface between the device pipeline and whatever carries messages to applications.

use std::future::{Future, Ready};
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::message::DownstreamMessage;

/// Why the northbound did not take a message.
#[derive(Debug, thiserror::Error)]
pub enum NorthboundError {
    /// Telemetry for a tenant that no application consumes (Hono answers 503).
    #[error("no consumer is attached for {0}")]
    NoConsumer(String),
    /// A consumer or broker refused the message.
    #[error("the northbound rejected the message: {0}")]
    Rejected(String),
    /// The message could not be handed over in time, or the link failed.
    #[error("the northbound is unavailable: {0}")]
    Unavailable(String),
    /// An event could not be written to durable storage.
    #[error("the event store failed: {0}")]
    Storage(String),
}

/// Sends device messages to business applications.
///
/// `send` returns once the message is handled as its QoS requires: QoS 0 telemetry once it was handed
/// to a consumer, QoS 1 telemetry once a consumer accepted it, events once they are stored durably
/// (delivery then follows, at least once).
pub trait Northbound: Send + Sync {
    /// Sends one message.
    fn send(&self, message: DownstreamMessage) -> Sending<'_>;
}

/// The future [`Northbound::send`] returns: either already decided (the northbound took or
/// refused the message without waiting, as for QoS 0 telemetry queued for a consumer at once),
/// which costs no allocation, or a boxed future that waits for the outcome.
#[must_use = "the message is only sent as far as its QoS requires once this is awaited"]
pub struct Sending<'a>(State<'a>);

/// The result type of a send.
type SendResult = Result<(), NorthboundError>;

enum State<'a> {
    Decided(Ready<SendResult>),
    Waiting(Pin<Box<dyn Future<Output = SendResult> + Send + 'a>>),
}

impl<'a> Sending<'a> {
    /// A send decided at once.
    pub fn decided(result: SendResult) -> Self {
        Self(State::Decided(std::future::ready(result)))
    }

    /// A send that completes when `future` does.
    pub fn waiting(future: impl Future<Output = SendResult> + Send + 'a) -> Self {
        Self(State::Waiting(Box::pin(future)))
    }
}

impl Future for Sending<'_> {
    type Output = SendResult;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<SendResult> {
        match &mut self.get_mut().0 {
            State::Decided(ready) => Pin::new(ready).poll(cx),
            State::Waiting(future) => future.as_mut().poll(cx),
        }
    }
}

impl std::fmt::Debug for Sending<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match self.0 {
            State::Decided(_) => "decided",
            State::Waiting(_) => "waiting",
        };
        f.debug_tuple("Sending").field(&state).finish()
    }
}
