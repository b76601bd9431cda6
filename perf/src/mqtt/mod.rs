//! The harness's own MQTT client for simulated devices: MQTT 3.1.1 and 5, QoS 0 and 1, over
//! plain TCP or TLS ([`crate::net::dial`]), with username and password or with the TLS client
//! certificate alone, one connection run entirely by the task that uses it (no tasks, channels
//! or locks of its own).
//!
//! * [`codec`]: the packets a device sends and receives, encoded into the send buffer and
//!   decoded in place from the receive buffer.
//! * [`Connection`] ([`connection`]): CONNECT and CONNACK, publishes written together (every
//!   publish that is due goes out in one write and one TLS flush), PUBACKs matched to their send
//!   times, keep-alive PINGREQs, DISCONNECT.
//! * [`MqttError`] ([`error`]): why a connection failed, as the error kinds the reports count.
//!
//! The caller drives the I/O as with [`crate::amqp`]: it encodes ([`Connection::publish`]),
//! writes ([`Connection::write`]), reads ([`Connection::read`], cancel safe, so it can sit in a
//! `select!` beside a pacer) and lets the connection process what arrived.

pub mod codec;
pub mod connection;
pub mod error;

pub use codec::Connect;
pub use connection::{Ack, Connection};
pub use error::MqttError;
