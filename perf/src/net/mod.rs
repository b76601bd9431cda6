//! The byte streams of the harness's own protocol clients ([`crate::amqp`], [`crate::http`],
//! [`crate::mqtt`]): connecting over plain TCP or TLS from the first byte ([`dial`]), the
//! buffered stream that batches writes and reads in place (`Wire`), and the timer that keeps an
//! idle connection alive ([`Heartbeat`]).

mod heartbeat;
pub(crate) mod wire;

use std::sync::Arc;

use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_util::either::Either;

pub use heartbeat::Heartbeat;

/// A client's stream: plain TCP or TLS from the first byte (`amqps://`, `https://`, `mqtts://`).
pub type Stream = Either<TcpStream, TlsStream<TcpStream>>;

/// Why [`dial`] failed.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    /// The TCP connection could not be made.
    #[error("connect: {0}")]
    Connect(std::io::Error),
    /// The TLS handshake failed.
    #[error("TLS handshake: {0}")]
    Tls(std::io::Error),
}

/// Connects to `host:port` (no Nagle delay), with TLS (`config`, the server's `name`) when given.
pub async fn dial(
    host: &str,
    port: u16,
    tls: Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>,
) -> Result<Stream, DialError> {
    let tcp = TcpStream::connect((host, port))
        .await
        .map_err(DialError::Connect)?;
    let _ = tcp.set_nodelay(true);
    match tls {
        None => Ok(Either::Left(tcp)),
        Some((config, name)) => TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map(Either::Right)
            .map_err(DialError::Tls),
    }
}
