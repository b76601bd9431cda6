//! The harness's own AMQP 1.0 client: one connection, one session and one link, run entirely by
//! the task that uses it (no tasks, channels or locks of its own), so a simulated device or the
//! northbound consumer costs one task and little CPU per message.
//!
//! * [`Connection`] ([`connection`]): TCP or TLS ([`crate::net::dial`]), SASL PLAIN, ANONYMOUS or
//!   EXTERNAL ([`sasl`]), `open`, `begin`, the session's flow control, heartbeats, and closing.
//! * [`Sender`] ([`sender`]): the device's anonymous-relay sender link, settled or unsettled,
//!   with the outcome and send time of every unsettled delivery.
//! * [`Receiver`] ([`receiver`]): the consumer's receiver link with generous credit, accepting in
//!   ranges, reading only the Data sections of each message ([`message`]).
//!
//! Frames are cut and encoded with `ferry-amqp-wire` over fe2o3-amqp's performative types, as the
//! gateway's own AMQP engines do. The caller drives the I/O: it writes what the link encoded
//! ([`Connection::write`]), reads ([`Connection::read`], cancel safe, so it can sit in a
//! `select!` beside a pacer), and lets the link process what arrived.

pub mod connection;
pub mod error;
pub mod message;
pub mod receiver;
pub mod sasl;
pub mod sender;

use tokio::io::{AsyncRead, AsyncWrite};

use crate::net::wire::Wire;

pub use connection::{ConnectOptions, Connection};
pub use error::AmqpError;
pub use receiver::Receiver;
pub use sasl::Mechanism;
pub use sender::{Outcome, Sender};

/// Reads the peer's protocol header, which must be `expected`.
pub(crate) async fn expect_header<S: AsyncRead + AsyncWrite + Unpin>(
    wire: &mut Wire<S>,
    expected: [u8; 8],
) -> Result<(), AmqpError> {
    wire.read_at_least(expected.len()).await?;
    let header = wire.received.split_to(expected.len());
    if header[..] != expected {
        return Err(AmqpError::Protocol(format!(
            "expected the protocol header {expected:?}, got {:?}",
            &header[..]
        )));
    }
    Ok(())
}
