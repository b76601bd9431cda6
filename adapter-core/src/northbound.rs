//! The interface between the device pipeline and whatever carries messages to applications.

use async_trait::async_trait;

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
#[async_trait]
pub trait Northbound: Send + Sync {
    /// Sends one message.
    async fn send(&self, message: DownstreamMessage) -> Result<(), NorthboundError>;
}
