//! One accepted TCP connection: the TLS handshake (under a timeout, never in the accept loop),
//! then the MQTT session's phases (`session.rs`), in one tracing span per connection. The
//! handshake accepts any client certificate; the chain is taken here and validated per tenant
//! when the CONNECT is handled.

use std::net::SocketAddr;
use std::sync::Arc;

use ferry_adapter_core::tls::TlsPeer;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio_rustls::TlsAcceptor;
use tracing::Instrument;

use crate::packet::Transport;
use crate::session::{self, AwaitingConnect, Shared};

/// An accepted TCP connection and what it needs to be served.
pub(crate) struct Connection {
    pub(crate) stream: TcpStream,
    pub(crate) peer: SocketAddr,
    pub(crate) tls: Option<TlsAcceptor>,
    pub(crate) shared: Arc<Shared>,
    /// The adapter connection limit's permit, held for the connection's lifetime; `None` when
    /// the limit is reached and the connection is only accepted to be refused with a CONNACK.
    pub(crate) permit: Option<OwnedSemaphorePermit>,
}

impl Connection {
    /// Serves the connection to its end, in its own tracing span.
    pub(crate) async fn run(self) {
        let span = tracing::info_span!(
            "mqtt",
            peer = %self.peer,
            tls = self.tls.is_some(),
            client_id = tracing::field::Empty,
            tenant = tracing::field::Empty,
            device = tracing::field::Empty,
        );
        self.serve().instrument(span).await;
    }

    async fn serve(self) {
        let Connection {
            stream,
            peer,
            tls,
            shared,
            permit,
        } = self;
        let _ = stream.set_nodelay(true);
        let shutdown = shared.ctx.shutdown.clone();
        // The phases are boxed so that the task holds only the one that runs: an idle
        // connection then costs the serving phase's state, not the sum of the TLS handshake,
        // authentication and serving futures' largest states.
        match tls {
            None => Box::pin(session(stream, peer, None, shared, permit)).await,
            Some(acceptor) => {
                let handshake = Box::pin(tokio::time::timeout(
                    shared.tls_handshake_timeout,
                    acceptor.accept(stream),
                ));
                let outcome = tokio::select! {
                    outcome = handshake => outcome,
                    () = shutdown.cancelled() => return,
                };
                match outcome {
                    Ok(Ok(stream)) => {
                        let tls_peer = TlsPeer::from_connection(stream.get_ref().1);
                        tracing::debug!(
                            client_certificate = tls_peer.has_certificate(),
                            sni = tls_peer.sni.as_deref().unwrap_or("-"),
                            "TLS established"
                        );
                        Box::pin(session(stream, peer, Some(tls_peer), shared, permit)).await;
                    }
                    Ok(Err(e)) => tracing::info!(error = %e, "TLS handshake failed"),
                    Err(_) => tracing::info!("TLS handshake timed out"),
                }
            }
        }
    }
}

async fn session<S>(
    stream: S,
    peer: SocketAddr,
    tls_peer: Option<TlsPeer>,
    shared: Arc<Shared>,
    permit: Option<OwnedSemaphorePermit>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let transport = Transport::new(stream, shared.max_packet_size);
    session::run(AwaitingConnect {
        transport,
        shared,
        peer,
        permit,
        tls_peer,
    })
    .await;
}
