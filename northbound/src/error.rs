//! Errors of starting and running the embedded northbound.
//!
//! Errors of sending a message are [`ferry_adapter_core::NorthboundError`]; errors of the consumer
//! client are [`crate::consumer::ConsumerError`].

use std::net::SocketAddr;

/// The embedded northbound could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The configuration is inconsistent.
    #[error("invalid northbound configuration: {0}")]
    Config(String),
    /// The listener could not be bound.
    #[error("cannot bind the AMQP northbound listener to {addr}: {source}")]
    Bind {
        /// The configured address.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The event store could not be opened.
    #[error("cannot open the event store: {0}")]
    Store(#[from] crate::event_store::StoreError),
}
