//! One accepted connection: the TLS handshake (under a timeout, never in the accept loop), then
//! HTTP/1.1 with keep-alive until the peer leaves, the connection idles out, or shutdown.
//!
//! A client certificate chain and the SNI host name are read from the TLS session right after
//! the handshake and handed to every request of the connection: a request without
//! `authorization` authenticates by that certificate.
//!
//! On shutdown hyper's graceful shutdown lets a request in flight finish and closes the connection
//! after its response; idle connections close at once.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ferry_adapter_core::tls::TlsPeer;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::memo::ConnectionMemo;
use crate::service::{self, PerConnection, Shared};

/// hyper's read buffer limit per connection: bounds the memory a client can make us hold for
/// request headers and for one piece of body (bodies are further capped at the payload limit).
const MAX_READ_BUFFER: usize = 64 * 1024;

/// Per-connection settings.
#[derive(Clone, Debug)]
pub(crate) struct ConnectionConfig {
    /// Longest TLS handshake.
    pub(crate) tls_handshake_timeout: Duration,
    /// Longest idle time between requests (and to receive one request's headers).
    pub(crate) idle_timeout: Duration,
}

/// An accepted TCP connection and what it needs to be served.
pub(crate) struct Connection {
    pub(crate) stream: TcpStream,
    pub(crate) peer: SocketAddr,
    pub(crate) tls: Option<TlsAcceptor>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) config: Arc<ConnectionConfig>,
    /// Held for the connection's lifetime: the connection limit.
    pub(crate) permit: OwnedSemaphorePermit,
}

impl Connection {
    /// Serves the connection to its end, in its own tracing span.
    pub(crate) async fn run(self) {
        let span = tracing::info_span!("connection", peer = %self.peer, tls = self.tls.is_some());
        self.serve().instrument(span).await;
    }

    async fn serve(self) {
        let Connection {
            stream,
            tls,
            shared,
            config,
            permit,
            ..
        } = self;
        // Without it, a small response written while the peer has not yet acknowledged the
        // last TLS handshake flight waits for its delayed ACK (about 40 ms on Linux).
        let _ = stream.set_nodelay(true);
        let shutdown = shared.ctx.shutdown.clone();
        tracing::debug!("accepted");
        match tls {
            None => serve_http(stream, None, shared, &config, &shutdown).await,
            Some(acceptor) => {
                let handshake =
                    tokio::time::timeout(config.tls_handshake_timeout, acceptor.accept(stream));
                let outcome = tokio::select! {
                    outcome = handshake => outcome,
                    () = shutdown.cancelled() => return,
                };
                match outcome {
                    Ok(Ok(stream)) => {
                        // The chain was accepted as is; the device pipeline validates it per
                        // tenant when a request relies on it.
                        let peer = TlsPeer::from_connection(stream.get_ref().1);
                        tracing::debug!(
                            client_certificate = peer.has_certificate(),
                            sni = peer.sni.as_deref().unwrap_or("-"),
                            "TLS established"
                        );
                        let peer = peer.has_certificate().then_some(peer);
                        serve_http(stream, peer, shared, &config, &shutdown).await
                    }
                    Ok(Err(e)) => tracing::info!(error = %e, "TLS handshake failed"),
                    Err(_) => tracing::info!("TLS handshake timed out"),
                }
            }
        }
        drop(permit);
        tracing::debug!("closed");
    }
}

async fn serve_http<I>(
    io: I,
    peer: Option<TlsPeer>,
    shared: Arc<Shared>,
    config: &ConnectionConfig,
    shutdown: &CancellationToken,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let state = Arc::new(PerConnection {
        memo: ConnectionMemo::new(&shared.generation),
        shared,
        peer,
    });
    let service = service_fn(move |req| service::handle(req, Arc::clone(&state)));
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .keep_alive(true)
        .max_buf_size(MAX_READ_BUFFER)
        .header_read_timeout(config.idle_timeout);
    let connection = builder.serve_connection(TokioIo::new(io), service);
    let mut connection = std::pin::pin!(connection);
    let outcome = tokio::select! {
        outcome = connection.as_mut() => outcome,
        () = shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = outcome {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}
