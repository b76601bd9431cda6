//! One accepted TCP connection: the TLS handshake (under a timeout, never in the accept loop),
//! then the MQTT session's phases (`session.rs`), in one tracing span per connection (DEBUG). The
//! handshake accepts any client certificate; the chain is taken here and validated per tenant
//! when the CONNECT is handled. A TLS 1.3 connection then runs on adapter-core's own record
//! layer ([`ferry_adapter_core::tls::accept`]), which holds two traffic keys instead of a rustls
//! connection while the device is idle.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use ferry_adapter_core::tls::{self, Established, TlsPeer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tracing::Instrument;

use crate::packet::Transport;
use crate::session::{self, AwaitingConnect, Permit, Shared};

/// An accepted TCP connection and what it needs to be served.
pub(crate) struct Connection {
    pub(crate) stream: TcpStream,
    pub(crate) peer: SocketAddr,
    pub(crate) tls: Option<TlsAcceptor>,
    pub(crate) shared: Arc<Shared>,
    /// The connection's place under the adapter's connection limit (or among the refusals).
    pub(crate) permit: Permit,
}

impl Connection {
    /// The future serving the connection to its end, in its own tracing span.
    ///
    /// Not an `async fn`: the task holds the boxed session only, and every phase is boxed and
    /// only the running one is held, so an idle connection's task holds a pointer, not the
    /// largest state of the TLS handshake, authentication and serving futures together (a
    /// generator keeps room for its arguments and for every local in scope at an `.await`,
    /// moved out or not). With that pointer alone the tokio task takes 128 bytes instead of 256
    /// (its size is a multiple of 128 on x86-64).
    pub(crate) fn run(self) -> Session {
        // A DEBUG span: at the default INFO level it costs nothing (an INFO span allocates its
        // formatted fields for the connection's lifetime, about 0.6 KB per idle connection), and
        // a disabled span is not even kept (40 bytes), so the INFO lines of a connection carry
        // its peer and identity themselves.
        let span = tracing::debug_span!(
            "mqtt",
            peer = %self.peer,
            tls = self.tls.is_some(),
            client_id = tracing::field::Empty,
            tenant = tracing::field::Empty,
            device = tracing::field::Empty,
        );
        let Connection {
            stream,
            peer,
            tls,
            shared,
            permit,
        } = self;
        let _ = stream.set_nodelay(true);
        let session = match tls {
            None => session(stream, peer, None, shared, permit),
            Some(acceptor) => {
                let handshake = Box::pin(handshake(acceptor, stream, peer, shared, permit));
                Box::pin(async move {
                    // `{ handshake }` moves the box out of the captured variable, so it is
                    // freed once the handshake is done, not when the connection ends.
                    if let Some(session) = { handshake }.await {
                        session.await;
                    }
                })
            }
        };
        if span.is_disabled() {
            session
        } else {
            Box::pin(session.instrument(span))
        }
    }
}

/// A connection's protocol phases, boxed: built outside any `async fn`, so no task keeps a
/// moved-out copy of the stream or of the unboxed future in its own state.
pub(crate) type Session = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The TLS handshake under its timeout; the session to run after it, if it succeeded.
async fn handshake(
    acceptor: TlsAcceptor,
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    permit: Permit,
) -> Option<Session> {
    let shutdown = shared.ctx.shutdown.clone();
    let outcome = tokio::select! {
        outcome = tokio::time::timeout(
            shared.tls_handshake_timeout,
            tls::accept(&acceptor, stream),
        ) => outcome,
        () = shutdown.cancelled() => return None,
    };
    match outcome {
        Ok(Ok((stream, tls_peer))) => {
            tracing::debug!(
                client_certificate = tls_peer.has_certificate(),
                sni = tls_peer.sni.as_deref().unwrap_or("-"),
                own_records = matches!(stream, Established::Records(_)),
                "TLS established"
            );
            let tls_peer = Some(tls_peer);
            Some(match stream {
                Established::Records(stream) => session(stream, peer, tls_peer, shared, permit),
                Established::Rustls(stream) => session(stream, peer, tls_peer, shared, permit),
            })
        }
        Ok(Err(e)) => {
            tracing::info!(%peer, error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::info!(%peer, "TLS handshake timed out");
            None
        }
    }
}

fn session<S>(
    stream: S,
    peer: SocketAddr,
    tls_peer: Option<TlsPeer>,
    shared: Arc<Shared>,
    permit: Permit,
) -> Session
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let transport = Transport::new(stream, shared.max_packet_size);
    Box::pin(session::run(AwaitingConnect {
        transport,
        shared,
        peer,
        permit: Some(permit),
        tls_peer,
    }))
}
