//! One MQTT connection's protocol phases as states that are consumed:
//! [`AwaitingConnect`] → [`Connected`] → [`Closing`].
//!
//! * `AwaitingConnect` reads the CONNECT within the connect timeout, authenticates (the TLS
//!   client certificate if the device presented one, otherwise the CONNECT's username and
//!   password), checks the tenant (enabled, adapter enabled, connection limit) and answers with
//!   the CONNACK; a refusal goes straight to `Closing`.
//! * `Connected` reads packets and forwards uploads with up to `max_in_flight` forwards running
//!   at once; their results are taken in arrival order, so PUBACKs go out in order, each only
//!   after the northbound accepted its message. At the limit the connection is not read
//!   (backpressure). Keep-alive: 1.5 × the client's interval without a packet closes it (the
//!   adapter's sweeper, `serving.rs`, decides when).
//! * `Closing` lets forwards in flight finish when the client left in an orderly way or the
//!   process shuts down, tells an MQTT 5 client why, closes the stream and sends the
//!   `disconnected` event.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use ferry_adapter_core::forward::connection_event::Cause;
use ferry_adapter_core::tls::TlsPeer;
use ferry_adapter_core::{AdapterContext, AuthenticatedDevice};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

use crate::error::{PublishError, Refusal};
use crate::limits::{TenantConnections, TenantGuard};
use crate::packet::{Announce, ConnectInfo, Inbound, Outbound, Transport, TransportError};
use crate::publish::{ErrorContext, Identity};
use crate::serving::ServingConnections;
use crate::watch::ConnectionWatch;

mod closing;
mod connected;
mod in_flight;

pub(crate) use closing::{CloseReason, Closing};
pub(crate) use connected::Connected;
use in_flight::InFlight;

/// What every connection of the adapter shares.
#[derive(Debug)]
pub(crate) struct Shared {
    /// The device pipeline.
    pub(crate) ctx: AdapterContext,
    /// Largest PUBLISH payload.
    pub(crate) max_payload_size: usize,
    /// Largest inbound packet.
    pub(crate) max_packet_size: u32,
    /// Time allowed for the CONNECT.
    pub(crate) connect_timeout: Duration,
    /// Time allowed for a TLS handshake.
    pub(crate) tls_handshake_timeout: Duration,
    /// Whether devices must authenticate.
    pub(crate) authentication_required: bool,
    /// Whether connection events are sent.
    pub(crate) connection_events: bool,
    /// Forwards in flight per connection.
    pub(crate) max_in_flight: usize,
    /// Open connections per tenant.
    pub(crate) tenants: Arc<TenantConnections>,
    /// Open authenticated connections, for registry changes.
    pub(crate) watch: Arc<ConnectionWatch>,
    /// Serving connections, for keep-alive and shutdown.
    pub(crate) serving: Arc<ServingConnections>,
}

impl Shared {
    fn announce(&self) -> Announce {
        Announce {
            receive_max: u16::try_from(self.max_in_flight).unwrap_or(u16::MAX),
            max_packet_size: self.max_packet_size,
        }
    }
}

/// The result of one forward, in arrival order.
struct Outcome {
    /// QoS 1 packet id to acknowledge.
    ack: Option<std::num::NonZeroU16>,
    /// For error handling; `None` for the adapter's own connection event.
    context: Option<ErrorContext>,
    result: Result<(), PublishError>,
}

type Pending = Pin<Box<dyn Future<Output = Outcome> + Send>>;

/// Runs a connection's phases to the end.
///
/// Each phase's future is boxed, so a connection holds the state of the phase it is in only
/// (the authentication futures of `AwaitingConnect` are gone while it serves). Not an
/// `async fn`, and no phase value is kept in a variable across an `.await`: a generator keeps
/// room for its arguments and for every local in scope at an await point, even after they were
/// moved into a box.
pub(crate) fn run<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    awaiting: AwaitingConnect<S>,
) -> impl Future<Output = ()> + Send {
    let connect = Box::pin(awaiting.connect());
    async move {
        // `{ connect }` moves the box out of the captured variable: it is freed once the
        // CONNECT is answered, not when the connection ends.
        let serve = match { connect }.await {
            Ok(connected) => Ok(Box::pin(connected.serve())),
            Err(closing) => Err(Box::new(closing)),
        };
        let finish = match serve {
            Ok(serve) => Box::pin(serve.await.finish()),
            Err(closing) => Box::pin((*closing).finish()),
        };
        finish.await;
    }
}

/// A connection's place under the adapter's connection limit.
#[derive(Debug)]
pub(crate) enum Permit {
    /// Within the limit: held while the connection is open.
    Within(OwnedSemaphorePermit),
    /// Over the limit: the CONNECT is refused with a CONNACK; held until the connection is
    /// closed, so that only a bounded number of connections wait for their refusal at once.
    Over(
        #[expect(dead_code, reason = "held until the connection is closed, never read")]
        OwnedSemaphorePermit,
    ),
}

/// Phase 1: waiting for the CONNECT.
pub(crate) struct AwaitingConnect<S> {
    pub(crate) transport: Transport<S>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) peer: SocketAddr,
    /// The connection's place under the adapter connection limit; the CONNECT is refused when
    /// it has none (`Over`); taken when the CONNECT was accepted.
    pub(crate) permit: Option<Permit>,
    /// What the TLS handshake told about the client; `None` on the insecure port.
    pub(crate) tls_peer: Option<TlsPeer>,
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> AwaitingConnect<S> {
    /// Reads and answers the CONNECT.
    pub(crate) async fn connect(mut self) -> Result<Connected<S>, Closing<S>> {
        let connect = match self.read_connect().await {
            Ok(connect) => connect,
            Err(reason) => return Err(self.close(reason)),
        };
        tracing::debug!(client_id = %connect.client_id, version = ?connect.version, "CONNECT");
        let admitted = match self.permit.take() {
            Some(Permit::Within(permit)) => {
                admit(&self.shared, self.peer, self.tls_peer.take(), &connect)
                    .await
                    .map(|a| (a, permit))
            }
            over => {
                self.permit = over;
                Err(Refusal::AdapterConnectionLimit)
            }
        };
        let ((identity, tenant), permit) = match admitted {
            Ok(admitted) => admitted,
            Err(refusal) => {
                let _ = self.transport.queue(
                    Outbound::ConnAck(Err(refusal.clone())),
                    self.shared.announce(),
                );
                return Err(self.close(CloseReason::Refused(refusal)));
            }
        };
        if let Err(e) = self
            .transport
            .queue(Outbound::ConnAck(Ok(())), self.shared.announce())
        {
            return Err(self.close(e.into()));
        }
        let span = tracing::Span::current();
        span.record("client_id", connect.client_id.as_str());
        if let Identity::Device(d) = &identity {
            span.record("tenant", d.tenant_id.as_str());
            span.record("device", d.device_id.as_str());
            tracing::info!(
                peer = %self.peer,
                client_id = %connect.client_id,
                tenant = %d.tenant_id,
                device = %d.device_id,
                "device connected"
            );
        } else {
            tracing::info!(peer = %self.peer, client_id = %connect.client_id, "unauthenticated device connected");
        }
        let mut in_flight = InFlight::default();
        if let Some(device) = identity.device().filter(|_| self.shared.connection_events) {
            in_flight.push_back(connection_event(
                &self.shared.ctx,
                device.clone(),
                Cause::Connected,
                &connect.client_id,
            ));
        }
        // Kept for the `disconnected` event only (an empty box allocates nothing).
        let client_id = match self.shared.connection_events {
            true => connect.client_id.into_boxed_str(),
            false => Box::default(),
        };
        let link = self.shared.serving.register(connect.keep_alive);
        let watched = identity.device().map(|d| {
            self.shared.watch.watch(
                &d.tenant_id,
                &d.device_id,
                crate::watch::Revoked(Arc::clone(link.link())),
            )
        });
        Ok(Connected {
            transport: self.transport,
            shared: self.shared,
            peer: self.peer,
            identity,
            client_id,
            error_subscriptions: Box::default(),
            in_flight,
            memo: None,
            _permit: Some(permit),
            _tenant: tenant,
            link,
            _watched: watched,
        })
    }

    fn close(self, reason: CloseReason) -> Closing<S> {
        Closing {
            transport: self.transport,
            shared: self.shared,
            peer: self.peer,
            reason,
            connected: None,
            _permit: self.permit,
        }
    }

    async fn read_connect(&mut self) -> Result<ConnectInfo, CloseReason> {
        let deadline = Instant::now() + self.shared.connect_timeout;
        let shutdown = self.shared.ctx.shutdown.clone();
        loop {
            match self.transport.decode()? {
                Some(Inbound::Connect(connect)) => return Ok(*connect),
                Some(_) => return Err(CloseReason::ProtocolViolation("packet before CONNECT")),
                None => {}
            }
            let read = tokio::select! {
                () = shutdown.cancelled() => return Err(CloseReason::Shutdown),
                read = tokio::time::timeout_at(deadline, self.transport.fill()) => read,
            };
            match read {
                Err(_) => return Err(CloseReason::ConnectTimeout),
                Ok(Ok(0)) => return Err(CloseReason::PeerClosed),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(TransportError::Io(e).into()),
            }
        }
    }
}

/// Authenticates and applies the tenant's rules.
async fn admit(
    shared: &Shared,
    peer: SocketAddr,
    tls_peer: Option<TlsPeer>,
    connect: &ConnectInfo,
) -> Result<(Identity, Option<TenantGuard>), Refusal> {
    let device = match tls_peer.filter(TlsPeer::has_certificate) {
        Some(tls_peer) => {
            if connect.username.is_some() {
                tracing::debug!("client certificate presented; ignoring the CONNECT credentials");
            }
            authenticate_certificate(shared, peer, &tls_peer).await?
        }
        None => match authenticate_password(shared, peer, connect).await? {
            Some(device) => device,
            None => return Ok((Identity::Anonymous, None)),
        },
    };
    let ctx = &shared.ctx;
    let tenant = ctx
        .forwarder
        .check_tenant(&device.tenant_id, true)
        .await
        .map_err(|e| Refusal::from_tenant_check(&e))?;
    let guard = shared
        .tenants
        .try_acquire(&device.tenant_id, tenant.resource_limit("max-connections"))
        .ok_or(Refusal::TenantConnectionLimit)?;
    Ok((Identity::Device(device), Some(guard)))
}

/// Authenticates by the client certificate of the TLS handshake (Hono: the certificate comes
/// first, the CONNECT's username and password are then ignored). A certificate that fails is
/// refused, never a fallback to the password.
async fn authenticate_certificate(
    shared: &Shared,
    peer: SocketAddr,
    tls_peer: &TlsPeer,
) -> Result<AuthenticatedDevice, Refusal> {
    shared
        .ctx
        .authenticator
        .authenticate_x509(&tls_peer.chain, tls_peer.sni.as_deref())
        .await
        .map_err(|e| {
            tracing::info!(
                peer = %peer,
                sni = tls_peer.sni.as_deref().unwrap_or("-"),
                reason = %e,
                "client certificate authentication failed"
            );
            Refusal::from_auth(&e)
        })
}

/// Authenticates by the CONNECT's username and password; `None` for an anonymous device where
/// the adapter does not require authentication.
async fn authenticate_password(
    shared: &Shared,
    peer: SocketAddr,
    connect: &ConnectInfo,
) -> Result<Option<AuthenticatedDevice>, Refusal> {
    let Some(username) = &connect.username else {
        if shared.authentication_required {
            return Err(Refusal::BadCredentials("credentials required".to_owned()));
        }
        return Ok(None);
    };
    let password = connect
        .password
        .as_deref()
        .and_then(|p| std::str::from_utf8(p).ok())
        .ok_or_else(|| Refusal::BadCredentials("password missing or not UTF-8".to_owned()))?;
    shared
        .ctx
        .authenticator
        .authenticate_password(username, password)
        .await
        .map(Some)
        .map_err(|e| {
            tracing::info!(user = %username.chars().take(128).collect::<String>(), peer = %peer, reason = %e, "authentication failed");
            Refusal::from_auth(&e)
        })
}

/// Forwards a connection event (`connected`/`disconnected`) of `device`.
fn connection_event(
    ctx: &AdapterContext,
    device: AuthenticatedDevice,
    cause: Cause,
    client_id: &str,
) -> Pending {
    let forwarder = ctx.forwarder.clone();
    let client_id = client_id.to_owned();
    Box::pin(async move {
        let result = forwarder
            .connection_event(&device, cause, &client_id)
            .await
            .map_err(PublishError::from);
        Outcome {
            ack: None,
            context: None,
            result,
        }
    })
}

#[cfg(test)]
mod tests;
