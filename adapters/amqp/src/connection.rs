//! One accepted connection, through its phases: TLS (on the TLS port, under a timeout), SASL with
//! asynchronous authentication and the AMQP `open` ([`crate::handshake`]), then the connection
//! engine ([`crate::serve`]) until the device leaves, a terminal error or shutdown. All of it
//! runs in the connection's one task. A TLS 1.3 connection runs on adapter-core's own record
//! layer ([`ferry_adapter_core::tls::accept`]), which holds two traffic keys instead of a rustls
//! connection while the device is idle; the client's chain and SNI are read before the handover.
//!
//! With connection events enabled, an authenticated device's connection sends `connected` once
//! it is admitted (while the connection already serves) and `disconnected` after it closed,
//! whatever ended it; `disconnected` always follows `connected`.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use fe2o3_amqp::types::definitions::Error as ErrorBody;
use ferry_adapter_core::forward::connection_event::Cause;
use ferry_adapter_core::tls::{self, Established, TlsPeer};
use ferry_adapter_core::{AdapterContext, AuthenticatedDevice, ForwardMemo};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::admission::TenantConnections;
use crate::engine::Engine;
use crate::handshake::{self, MAX_FRAME_SIZE, Opened};
use crate::serve::Served;
use crate::watch::ConnectionWatch;

/// Bytes a message may carry on top of its payload (properties, annotations, encoding).
const MESSAGE_OVERHEAD: usize = 16 * 1024;
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

/// What a connection shares with the registry watch.
#[derive(Debug)]
pub(crate) struct ConnectionState {
    /// The authenticated device, `None` for an anonymous one.
    pub(crate) device: Option<AuthenticatedDevice>,
    /// Fires when a terminal error ends the connection.
    pub(crate) terminal: CancellationToken,
    terminal_error: Mutex<Option<ErrorBody>>,
    /// The tenant and registration answers of the last upload, reused by the next while the
    /// registry is unchanged; made at the first delivery.
    memo: OnceLock<Arc<ForwardMemo>>,
}

impl ConnectionState {
    /// Ends the connection with `error` (the first terminal error wins).
    pub(crate) fn terminate(&self, error: ErrorBody) {
        if let Ok(mut slot) = self.terminal_error.lock() {
            slot.get_or_insert(error);
        }
        self.terminal.cancel();
    }

    pub(crate) fn take_error(&self) -> Option<ErrorBody> {
        self.terminal_error.lock().ok().and_then(|mut e| e.take())
    }

    /// The connection's forward memo (made on first use, following `watch`'s changes).
    pub(crate) fn memo(&self, watch: &ConnectionWatch) -> Arc<ForwardMemo> {
        Arc::clone(self.memo.get_or_init(|| Arc::new(watch.forward_memo())))
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
                    tls::accept(&acceptor, stream),
                ));
                let outcome = tokio::select! {
                    outcome = handshake => outcome,
                    () = shutdown.cancelled() => return,
                };
                let serving: Option<Serving> = match outcome {
                    Ok(Ok((stream, peer))) => {
                        tracing::debug!(
                            client_certificate = peer.has_certificate(),
                            sni = peer.sni.as_deref().unwrap_or("-"),
                            own_records = matches!(stream, Established::Records(_)),
                            "TLS established"
                        );
                        Some(match stream {
                            Established::Records(stream) => {
                                Box::pin(serve_amqp(stream, Some(peer), shared))
                            }
                            Established::Rustls(stream) => {
                                Box::pin(serve_amqp(stream, Some(peer), shared))
                            }
                        })
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

/// A connection served after its TLS handshake, on either record layer.
type Serving = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The connection after TLS: the handshake phases (boxed, see [`crate::handshake`]), then the
/// connection engine until the device leaves, a terminal error or shutdown.
async fn serve_amqp<S>(stream: S, peer: Option<TlsPeer>, shared: Arc<Shared>)
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let opened = Box::pin(handshake::open(stream, peer, Arc::clone(&shared))).await;
    if let Some(opened) = opened {
        serve_open(opened, shared).await;
    }
}

/// Serves a connection whose `open` was exchanged: closes a refused one, serves an admitted one
/// with its connection events around it.
async fn serve_open<S>(opened: Opened<S>, shared: Arc<Shared>)
where
    S: AsyncRead + AsyncWrite + Send + Unpin,
{
    let Opened {
        io,
        device,
        admission,
        remote_id,
        heartbeat,
    } = opened;
    let engine = Engine::new(MAX_FRAME_SIZE, max_message_size(&shared));
    let mut served = Served {
        io,
        engine,
        heartbeat,
        shared: Arc::clone(&shared),
    };
    let _slot = match admission {
        Ok(slot) => slot,
        Err(refused) => {
            tracing::info!(reason = %refused, "connection refused");
            served.close(Some(refused.to_amqp())).await;
            return;
        }
    };
    tracing::info!("device connected");
    let state = Arc::new(ConnectionState {
        device,
        terminal: CancellationToken::new(),
        terminal_error: Mutex::new(None),
        memo: OnceLock::new(),
    });
    let _watched = state.device.as_ref().map(|d| {
        let handle = crate::watch::Terminate(Arc::downgrade(&state));
        shared.watch.watch(&d.tenant_id, &d.device_id, handle)
    });
    // The connected event goes out while the connection already serves, and ahead of the
    // disconnected event. Boxed, so its state is freed once it is sent.
    let connected = Box::pin(announce(&shared, &state, Cause::Connected, &remote_id));
    served.run(&state, connected).await;
    tracing::info!("device disconnected");
    Box::pin(announce(&shared, &state, Cause::Disconnected, &remote_id)).await;
}

/// The largest message accepted: the payload limit plus room for the message's other sections.
fn max_message_size(shared: &Shared) -> u64 {
    (shared.max_payload_size + MESSAGE_OVERHEAD) as u64
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
