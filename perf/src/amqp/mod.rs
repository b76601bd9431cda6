//! The harness's own AMQP 1.0 client: one connection, one session and one link, run entirely by
//! the task that uses it (no tasks, channels or locks of its own), so a simulated device or the
//! northbound consumer costs one task and little CPU per message.
//!
//! * [`Connection`] ([`connection`]): TCP or TLS ([`dial`]), SASL PLAIN, ANONYMOUS or EXTERNAL
//!   ([`sasl`]), `open`, `begin`, the session's flow control, heartbeats, and closing.
//! * [`Sender`] ([`sender`]): the device's anonymous-relay sender link, settled or unsettled,
//!   with the outcome and send time of every unsettled delivery.
//! * [`Receiver`] ([`receiver`]): the consumer's receiver link with generous credit, accepting in
//!   ranges, reading only the Data sections of each message ([`message`]).
//! * [`Heartbeat`]: the timer that keeps the peer's idle timeout from firing.
//!
//! Frames are cut and encoded with `ferry-amqp-wire` over fe2o3-amqp's performative types, as the
//! gateway's own AMQP engines do. The caller drives the I/O: it writes what the link encoded
//! ([`Connection::write`]), reads ([`Connection::read`], cancel safe, so it can sit in a
//! `select!` beside a pacer), and lets the link process what arrived.

pub mod connection;
pub mod error;
mod heartbeat;
pub mod message;
pub mod receiver;
pub mod sasl;
pub mod sender;
mod wire;

use std::sync::Arc;

use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_util::either::Either;

pub use connection::{ConnectOptions, Connection};
pub use error::AmqpError;
pub use heartbeat::Heartbeat;
pub use receiver::Receiver;
pub use sasl::Mechanism;
pub use sender::{Outcome, Sender};

/// A client's stream: plain TCP or TLS from the first byte (`amqps://`).
pub type Stream = Either<TcpStream, TlsStream<TcpStream>>;

/// Connects to `host:port`, with TLS (`config`, the server's `name`) when given.
pub async fn dial(
    host: &str,
    port: u16,
    tls: Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>,
) -> Result<Stream, AmqpError> {
    let tcp = TcpStream::connect((host, port))
        .await
        .map_err(AmqpError::Connect)?;
    let _ = tcp.set_nodelay(true);
    match tls {
        None => Ok(Either::Left(tcp)),
        Some((config, name)) => TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map(Either::Right)
            .map_err(AmqpError::Tls),
    }
}
