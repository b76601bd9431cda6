//! The protocol-independent device pipeline shared by every Ferry adapter.
//!
//! An adapter decodes its protocol, asks the [`Authenticator`] who the device is, and hands each
//! upload to the [`Forwarder`], which checks tenant, adapter, registration and limits before the
//! [`Northbound`] takes the message. Failures come back as typed errors whose [`ErrorKind`] each
//! adapter maps to its protocol's codes in one place.

pub mod message;
pub mod northbound;

pub use message::{DownstreamMessage, Endpoint, Qos, Upload};
pub use northbound::{Northbound, NorthboundError};
