//! The protocol-independent device pipeline shared by every Ferry adapter.
//!
//! An adapter decodes its protocol, asks the [`Authenticator`] who the device is, and hands each
//! upload to the [`Forwarder`], which checks tenant, adapter, registration and limits before the
//! [`Northbound`] takes the message. Failures come back as typed errors ([`AuthError`],
//! [`ForwardError`]) whose [`ErrorKind`] each adapter maps to its protocol's codes in one place.
//! Everything a listener needs travels in one cheap-to-clone [`AdapterContext`].

pub mod accept;
pub mod auth;
pub mod coalesce;
pub mod config;
pub mod context;
pub mod deadline;
pub mod error;
pub mod forward;
pub mod memo;
pub mod message;
pub mod northbound;
pub mod tls;
mod ttl;
pub mod watch;

#[cfg(any(test, feature = "test-util"))]
pub mod test_util;

pub use auth::{AuthenticatedDevice, Authenticator, PskKey};
pub use config::CoreConfig;
pub use context::AdapterContext;
pub use error::{AuthError, ErrorKind, ForwardError};
pub use forward::{ForwardMemo, Forwarder};
pub use message::{AdapterType, DownstreamMessage, Endpoint, Qos, Upload};
pub use northbound::{Northbound, NorthboundError, Sending};
