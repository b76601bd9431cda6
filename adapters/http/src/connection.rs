//! One accepted connection: the TLS handshake (under a timeout, never in the accept loop), then
//! HTTP/1.1 with keep-alive until the peer leaves, the connection idles out, or shutdown.
//!
//! A client certificate chain and the SNI host name are read from the TLS session right after
//! the handshake and handed to every request of the connection: a request without
//! `authorization` authenticates by that certificate.
//!
//! Requests are read with the adapter's own HTTP/1.1 layer ([`crate::h1`]) and handled by
//! [`service`] one after the other. On shutdown a request in flight finishes and its response
//! closes the connection; idle connections close at once.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ferry_adapter_core::tls::TlsPeer;
use http::StatusCode;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::error::RequestError;
use crate::h1::Framing;
use crate::h1::error::ProtocolError;
use crate::h1::head;
use crate::h1::io::{BodyError, Interrupted, Io};
use crate::h1::response::{PLAIN_TEXT, Persistence, Response};
use crate::memo::ConnectionMemo;
use crate::service::{self, Pending, PerConnection, Refusal, Shared};

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
        // A DEBUG span: at the default INFO level it costs nothing per poll and no memory per
        // connection, so the INFO lines of a connection carry its peer themselves.
        let span = tracing::debug_span!("connection", peer = %self.peer, tls = self.tls.is_some());
        if span.is_disabled() {
            self.serve().await;
        } else {
            self.serve().instrument(span).await;
        }
    }

    async fn serve(self) {
        let Connection {
            stream,
            peer,
            tls,
            shared,
            config,
            permit,
        } = self;
        // Without it, a small response written while the peer has not yet acknowledged the
        // last TLS handshake flight waits for its delayed ACK (about 40 ms on Linux).
        let _ = stream.set_nodelay(true);
        let shutdown = shared.ctx.shutdown.clone();
        tracing::debug!("accepted");
        match tls {
            None => serve_http(stream, peer, None, shared, &config).await,
            Some(acceptor) => {
                // Boxed, like the TLS stream after it: the task keeps a pointer to the
                // handshake's and the TLS session's state, not room for them.
                let handshake = handshake(acceptor, stream, peer, &config, &shutdown);
                if let Some((stream, certificate)) = Box::pin(handshake).await {
                    serve_http(stream, peer, certificate, shared, &config).await;
                }
            }
        }
        drop(permit);
        tracing::debug!("closed");
    }
}

/// The TLS handshake under its timeout (given up on shutdown): the session, and the client
/// certificate chain if the client presented one.
async fn handshake(
    acceptor: TlsAcceptor,
    stream: TcpStream,
    addr: SocketAddr,
    config: &ConnectionConfig,
    shutdown: &CancellationToken,
) -> Option<(Box<TlsStream<TcpStream>>, Option<TlsPeer>)> {
    let handshake = tokio::time::timeout(config.tls_handshake_timeout, acceptor.accept(stream));
    let outcome = tokio::select! {
        outcome = handshake => outcome,
        () = shutdown.cancelled() => return None,
    };
    match outcome {
        Ok(Ok(stream)) => {
            // The chain was accepted as is; the device pipeline validates it per tenant when a
            // request relies on it.
            let peer = TlsPeer::from_connection(stream.get_ref().1);
            tracing::debug!(
                client_certificate = peer.has_certificate(),
                sni = peer.sni.as_deref().unwrap_or("-"),
                "TLS established"
            );
            Some((Box::new(stream), peer.has_certificate().then_some(peer)))
        }
        Ok(Err(e)) => {
            tracing::info!(peer = %addr, error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::info!(peer = %addr, "TLS handshake timed out");
            None
        }
    }
}

/// Serves requests on `io` one after the other until the client or the adapter ends the
/// connection.
async fn serve_http<I>(
    io: I,
    addr: SocketAddr,
    peer: Option<TlsPeer>,
    shared: Arc<Shared>,
    config: &ConnectionConfig,
) where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let state = PerConnection {
        memo: ConnectionMemo::new(&shared.generation),
        shared,
        addr,
        peer,
    };
    let mut io = Io::new(io, &state.shared.ctx.shutdown, config.idle_timeout);
    loop {
        let request = match next_request(&mut io, &state).await {
            Ok(request) => request,
            Err(end) => {
                match &end {
                    End::Refused(e) => {
                        tracing::info!(
                            peer = %state.addr,
                            status = e.status().as_u16(),
                            reason = %e,
                            "request refused"
                        );
                        let body = format!("{e}\n");
                        let response = Response {
                            status: e.status(),
                            headers: &[PLAIN_TEXT],
                            body: body.as_bytes(),
                        };
                        io.respond(&response, Persistence::Close);
                    }
                    End::Quiet(e) => tracing::debug!(reason = %e, "connection ends"),
                }
                io.close(matches!(end, End::Refused(_))).await;
                return;
            }
        };
        let keep_alive = serve_request(&mut io, request, &state).await;
        if !keep_alive {
            io.close(true).await;
            return;
        }
        io.set_deadline(config.idle_timeout);
    }
}

/// What ends waiting for a request.
#[derive(Debug)]
enum End {
    /// The client left, idled out or the adapter shuts down: close quietly.
    Quiet(Interrupted),
    /// The request cannot be read: answer and close.
    Refused(ProtocolError),
}

/// A request whose head was handled, with the parts of the head the connection still needs.
struct Request {
    framing: Framing,
    keep_alive: bool,
    http10: bool,
    /// A `HEAD` request: its answer has no body.
    head_only: bool,
    expect_continue: bool,
    prepared: Result<Pending, Refusal>,
}

/// Waits for the next request head and handles it (routing, authentication, parameters).
async fn next_request<I>(io: &mut Io<I>, state: &PerConnection) -> Result<Request, End>
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        let head = match io.buffered() {
            [] => None,
            buffered => head::parse(buffered).map_err(End::Refused)?,
        };
        if let Some(head) = head {
            let len = head.len;
            let request = Request {
                framing: head.framing,
                keep_alive: head.keep_alive,
                http10: head.http10,
                head_only: head.method == "HEAD",
                expect_continue: head.expect_continue,
                prepared: service::prepare(&head, state).await,
            };
            io.consume(len);
            return Ok(request);
        }
        // Shutdown ends the wait for a head, even a partly received one: no request has
        // started yet.
        let partial = !io.buffered().is_empty();
        match io.fill(true).await {
            Ok(()) => {}
            Err(Interrupted::TimedOut) if partial => {
                return Err(End::Refused(ProtocolError::HeadTimeout));
            }
            Err(e) => return Err(End::Quiet(e)),
        }
    }
}

/// Reads the request's body, forwards it and buffers the response; whether the connection
/// stays open.
async fn serve_request<I>(io: &mut Io<I>, request: Request, state: &PerConnection) -> bool
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let shared = &*state.shared;
    let Request {
        framing,
        mut keep_alive,
        http10,
        head_only,
        expect_continue,
        prepared,
    } = request;
    let (max, timeout) = (shared.max_payload_size, shared.body_timeout);
    let outcome = match prepared {
        Ok(pending) => {
            // A client waiting to be asked is asked, unless its body is refused for its size.
            let ask = expect_continue
                && framing != Framing::Empty
                && !matches!(framing, Framing::Length(n) if n > max as u64);
            let asked = if ask {
                io.send_continue(timeout).await
            } else {
                Ok(())
            };
            let body = match asked {
                Ok(()) => io.read_body(framing, max, timeout).await,
                Err(e) => Err(BodyError::Interrupted(e)),
            };
            match body {
                Ok(payload) => pending.forward(payload, state).await,
                Err(e) => {
                    // The rest of the stream cannot be framed: answer and close.
                    keep_alive = false;
                    Err(pending.refuse(body_error(e, max), state))
                }
            }
        }
        // A refusal before the body: read it past (not when the client waits to be asked).
        Err(refusal) => {
            let passed = framing == Framing::Empty
                || (!expect_continue && io.read_body(framing, max, timeout).await.is_ok());
            keep_alive &= passed;
            Err(refusal)
        }
    };
    keep_alive &= !io.shutting_down();
    let persistence = match (keep_alive, http10) {
        (false, _) => Persistence::Close,
        (true, false) => Persistence::Implied,
        (true, true) => Persistence::KeepAlive,
    };
    match &outcome {
        Ok(()) => io.respond(&ACCEPTED, persistence),
        Err(refusal) => {
            let mut response = refusal.response();
            if head_only {
                response.body = b"";
            }
            io.respond(&response, persistence);
        }
    }
    keep_alive
}

/// The answer to a forwarded message.
const ACCEPTED: Response<'static> = Response {
    status: StatusCode::ACCEPTED,
    headers: &[],
    body: b"",
};

/// The refusal of a body that could not be read.
fn body_error(e: BodyError, max: usize) -> RequestError {
    match e {
        BodyError::TooLarge => RequestError::PayloadTooLarge { max },
        BodyError::Malformed(why) => RequestError::Body(why.to_owned()),
        BodyError::Interrupted(Interrupted::TimedOut) => RequestError::BodyTimeout,
        BodyError::Interrupted(e) => RequestError::Body(e.to_string()),
    }
}
