//! One accepted connection, through its phases: TLS (on the TLS port, under a timeout), SASL with
//! asynchronous authentication ([`crate::sasl`]), the AMQP open through fe2o3's acceptor, then
//! sessions and links until the device leaves, a terminal error or shutdown.
//!
//! Sessions run in their own tasks ([`crate::session`]). On shutdown, links stop taking
//! deliveries, settle the ones in flight, and the connection closes.
//!
//! With connection events enabled, an authenticated device's connection sends `connected` once
//! it is admitted (while the connection already serves) and `disconnected` after it closed,
//! whatever ended it; `disconnected` always follows `connected`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fe2o3_amqp::acceptor::{ListenerConnectionHandle, SessionAcceptor};
use fe2o3_amqp::types::definitions::Error as ErrorBody;
use ferry_adapter_core::forward::connection_event::Cause;
use ferry_adapter_core::tls::TlsPeer;
use ferry_adapter_core::{AdapterContext, AuthenticatedDevice};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::admission::TenantConnections;
use crate::handshake::{self, Opened};
use crate::watch::ConnectionWatch;

/// Capability offered in `open`: devices send on one link with a null target.
pub(crate) const ANONYMOUS_RELAY: &str = "ANONYMOUS-RELAY";
/// Highest link handle of a session (so at most 8 links): a device needs an upload link and,
/// later, a command link. With the link credit and the message size this bounds the memory one
/// connection can make the adapter hold.
const MAX_LINKS: u32 = 7;
/// How long closing a link, session or connection waits for the peer.
pub(crate) const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a connection waits for its links to settle what they have in flight on shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// How long sending a connection event may take.
const EVENT_TIMEOUT: Duration = Duration::from_secs(5);

/// Adapter-wide settings and handles every connection uses.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) ctx: AdapterContext,
    /// Largest payload forwarded.
    pub(crate) max_payload_size: usize,
    pub(crate) tls_handshake_timeout: Duration,
    pub(crate) handshake_timeout: Duration,
    pub(crate) idle_timeout: Duration,
    pub(crate) authentication_required: bool,
    /// Whether connection events are sent.
    pub(crate) connection_events: bool,
    /// Open connections per tenant (the tenants' `max-connections`).
    pub(crate) tenants: Arc<TenantConnections>,
    /// Open authenticated connections, re-checked on registry changes.
    pub(crate) watch: Arc<ConnectionWatch>,
}

/// What the tasks of one connection share.
#[derive(Debug)]
pub(crate) struct ConnectionState {
    /// The authenticated device, `None` for an anonymous one.
    pub(crate) device: Option<AuthenticatedDevice>,
    /// Fires when a terminal error ends the connection.
    pub(crate) terminal: CancellationToken,
    terminal_error: Mutex<Option<ErrorBody>>,
}

impl ConnectionState {
    /// Ends the connection with `error` (the first terminal error wins).
    pub(crate) fn terminate(&self, error: ErrorBody) {
        if let Ok(mut slot) = self.terminal_error.lock() {
            slot.get_or_insert(error);
        }
        self.terminal.cancel();
    }

    fn take_error(&self) -> Option<ErrorBody> {
        self.terminal_error.lock().ok().and_then(|mut e| e.take())
    }
}

/// An accepted TCP connection and what it needs to be served.
pub(crate) struct Connection {
    pub(crate) stream: TcpStream,
    pub(crate) peer: SocketAddr,
    pub(crate) tls: Option<TlsAcceptor>,
    pub(crate) shared: Arc<Shared>,
    /// Held for the connection's lifetime: the connection limit.
    pub(crate) permit: OwnedSemaphorePermit,
}

impl Connection {
    /// Serves the connection to its end, in its own tracing span.
    pub(crate) async fn run(self) {
        let span = tracing::info_span!(
            "connection",
            protocol = "amqp",
            peer = %self.peer,
            tls = self.tls.is_some(),
            tenant = tracing::field::Empty,
            device = tracing::field::Empty,
            container = tracing::field::Empty,
        );
        self.serve().instrument(span).await;
    }

    /// The served connection's future is boxed in both arms: this task then keeps neither the
    /// TLS handshake's state nor two copies of the serving state (idle connection memory).
    async fn serve(self) {
        let Connection {
            stream,
            tls,
            shared,
            permit,
            ..
        } = self;
        let _ = stream.set_nodelay(true);
        let shutdown = shared.ctx.shutdown.clone();
        tracing::debug!("accepted");
        match tls {
            None => Box::pin(serve_amqp(stream, None, shared)).await,
            Some(acceptor) => {
                // Boxed, so the TLS handshake's state is freed once it is done.
                let handshake = Box::pin(tokio::time::timeout(
                    shared.tls_handshake_timeout,
                    acceptor.accept(stream),
                ));
                let outcome = tokio::select! {
                    outcome = handshake => outcome,
                    () = shutdown.cancelled() => return,
                };
                let serving = match outcome {
                    Ok(Ok(stream)) => {
                        let peer = TlsPeer::from_connection(stream.get_ref().1);
                        Some(Box::pin(serve_amqp(stream, Some(peer), shared)))
                    }
                    Ok(Err(e)) => {
                        tracing::info!(error = %e, "TLS handshake failed");
                        None
                    }
                    Err(_) => {
                        tracing::info!("TLS handshake timed out");
                        None
                    }
                };
                if let Some(serving) = serving {
                    serving.await;
                }
            }
        }
        drop(permit);
        tracing::debug!("closed");
    }
}

/// The connection after TLS: the handshake phases (boxed, see [`crate::handshake`]), then
/// sessions until the device leaves, a terminal error or shutdown.
fn serve_amqp<S>(
    stream: S,
    peer: Option<TlsPeer>,
    shared: Arc<Shared>,
) -> impl Future<Output = ()> + Send
where
    S: AsyncRead + AsyncWrite + std::fmt::Debug + Send + Unpin + 'static,
{
    // Built outside the async block, so the stream is not kept in its state: the open connection
    // lives in fe2o3's engine task.
    let opening = Box::pin(handshake::open(stream, peer, Arc::clone(&shared)));
    async move {
        if let Some(opened) = opening.await {
            serve_open(opened, shared).await;
        }
    }
}

/// Serves an admitted connection to its end.
async fn serve_open(opened: Opened, shared: Arc<Shared>) {
    let Opened {
        mut connection,
        device,
        _slot,
        remote_id,
    } = opened;
    tracing::info!("device connected");
    let state = Arc::new(ConnectionState {
        device,
        terminal: CancellationToken::new(),
        terminal_error: Mutex::new(None),
    });
    let _watched = state.device.as_ref().map(|d| {
        let handle = crate::watch::Terminate(Arc::downgrade(&state));
        shared.watch.watch(&d.tenant_id, &d.device_id, handle)
    });
    // The connected event goes out while the connection already serves; joining both keeps it
    // ahead of the disconnected event. Boxed, so its state is freed once it is sent.
    let connected = Box::pin(announce(&shared, &state, Cause::Connected, &remote_id));
    tokio::join!(connected, run_connection(&mut connection, &state, &shared));
    let error = state.take_error();
    if let Some(error) = &error {
        tracing::info!(%error, "closing the connection after a terminal error");
    }
    let closing = Box::pin(async {
        match error {
            Some(error) => connection.close_with_error(error).await,
            None => connection.close().await,
        }
    });
    if let Ok(Err(error)) = tokio::time::timeout(CLOSE_TIMEOUT, closing).await {
        tracing::debug!(%error, "connection closed with error");
    }
    tracing::info!("device disconnected");
    Box::pin(announce(&shared, &state, Cause::Disconnected, &remote_id)).await;
}

/// Sends the connection event `cause` of an authenticated device, if the adapter is configured
/// to; a failure is logged, never fatal.
async fn announce(shared: &Shared, state: &ConnectionState, cause: Cause, remote_id: &str) {
    let Some(device) = state.device.as_ref().filter(|_| shared.connection_events) else {
        return;
    };
    let sending = shared
        .ctx
        .forwarder
        .connection_event(device, cause, remote_id);
    match tokio::time::timeout(EVENT_TIMEOUT, sending).await {
        Ok(Ok(())) => tracing::debug!(cause = cause.as_str(), "connection event sent"),
        Ok(Err(error)) => {
            tracing::warn!(cause = cause.as_str(), %error, "connection event not sent")
        }
        Err(_) => tracing::warn!(cause = cause.as_str(), "connection event timed out"),
    }
}

async fn run_connection(
    connection: &mut ListenerConnectionHandle,
    state: &Arc<ConnectionState>,
    shared: &Arc<Shared>,
) {
    let session_acceptor = SessionAcceptor::builder().handle_max(MAX_LINKS).build();
    let sessions = TaskTracker::new();
    let shutdown = shared.ctx.shutdown.clone();
    loop {
        let incoming = tokio::select! {
            () = shutdown.cancelled() => break,
            () = state.terminal.cancelled() => break,
            incoming = connection.next_incoming_session() => incoming,
        };
        let Some(incoming) = incoming else { break };
        // Boxed: the accept future is large and the loop waits in `next_incoming_session`.
        let accepted = Box::pin(session_acceptor.accept_incoming_session(incoming, connection));
        match accepted.await {
            Ok(session) => {
                sessions.spawn(
                    crate::session::run(session, Arc::clone(state), Arc::clone(shared))
                        .in_current_span(),
                );
            }
            Err(error) => {
                tracing::info!(%error, "session refused");
                break;
            }
        }
    }
    sessions.close();
    if tokio::time::timeout(DRAIN_TIMEOUT, sessions.wait())
        .await
        .is_err()
    {
        tracing::warn!("links did not settle their deliveries in time");
    }
}
