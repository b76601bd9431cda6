//! One MQTT connection's protocol phases as states that are consumed:
//! [`AwaitingConnect`] → [`Connected`] → [`Closing`].
//!
//! * `AwaitingConnect` reads the CONNECT within the connect timeout, authenticates, checks the
//!   tenant (enabled, adapter enabled, connection limit) and answers with the CONNACK; a refusal
//!   goes straight to `Closing`.
//! * `Connected` reads packets and forwards uploads with up to `max_in_flight` forwards running
//!   at once; their results are taken in arrival order, so PUBACKs go out in order, each only
//!   after the northbound accepted its message. At the limit the connection is not read
//!   (backpressure). Keep-alive: 1.5 × the client's interval without a packet closes it.
//! * `Closing` lets forwards in flight finish when the client left in an orderly way or the
//!   process shuts down, tells an MQTT 5 client why, closes the stream and sends the
//!   `disconnected` event.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ferry_adapter_core::{AdapterContext, AuthenticatedDevice, Endpoint, Qos, Upload};
use futures_util::StreamExt;
use futures_util::stream::FuturesOrdered;
use rmqtt_codec::error::DecodeError;
use rmqtt_codec::v5::DisconnectReasonCode;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

use crate::error::{PublishError, Refusal};
use crate::limits::{TenantConnections, TenantGuard};
use crate::packet::{
    Announce, ConnectInfo, Inbound, Outbound, PublishIn, Transport, TransportError,
};
use crate::publish::{self, ErrorContext, Identity};
use crate::topic::ErrorSubscription;

/// Content type of Hono's connection events.
const CONNECTION_EVENT: &str = "application/vnd.eclipse-hono-dc-notification+json";
/// Longest time forwards in flight may take to finish when a connection closes.
const DRAIN_DEADLINE: Duration = Duration::from_secs(10);
/// Longest time for the last packets and the close to be written.
const CLOSE_DEADLINE: Duration = Duration::from_secs(5);
/// Longest time a write may wait for a client that does not read: its connection is closed
/// instead of holding a connection slot forever.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

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
}

impl Shared {
    fn announce(&self) -> Announce {
        Announce {
            receive_max: u16::try_from(self.max_in_flight).unwrap_or(u16::MAX),
            max_packet_size: self.max_packet_size,
        }
    }
}

/// Why a connection ends.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CloseReason {
    /// The CONNECT was refused with a CONNACK code.
    #[error("connection refused: {0}")]
    Refused(Refusal),
    /// No CONNECT arrived in time.
    #[error("no CONNECT within the connect timeout")]
    ConnectTimeout,
    /// Bytes that are not MQTT, or a socket error.
    #[error("{0}")]
    Transport(#[from] TransportError),
    /// A packet that is not allowed in this phase.
    #[error("protocol violation: unexpected {0}")]
    ProtocolViolation(&'static str),
    /// The peer closed the stream.
    #[error("peer closed the connection")]
    PeerClosed,
    /// The client sent DISCONNECT.
    #[error("client disconnected")]
    ClientDisconnect,
    /// The client did not read what the adapter had to send.
    #[error("write timeout: the client does not read")]
    WriteTimeout,
    /// No packet within 1.5 × keep-alive.
    #[error("keep-alive timeout")]
    KeepAliveTimeout,
    /// A PUBLISH payload (or a whole packet) over the limit.
    #[error("{size} bytes exceed the maximum of {max} bytes")]
    PayloadTooLarge {
        /// Payload size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// An upload failed and error handling closes the connection.
    #[error("upload failed: {error}")]
    PublishFailed {
        /// The failure.
        error: PublishError,
    },
    /// The process shuts down.
    #[error("shutting down")]
    Shutdown,
}

impl CloseReason {
    /// The MQTT 5 DISCONNECT reason, if the client should be told.
    fn disconnect_code(&self) -> Option<DisconnectReasonCode> {
        match self {
            CloseReason::Refused(_)
            | CloseReason::ConnectTimeout
            | CloseReason::PeerClosed
            | CloseReason::ClientDisconnect => None,
            CloseReason::Transport(TransportError::Decode(_)) => {
                Some(DisconnectReasonCode::MalformedPacket)
            }
            CloseReason::Transport(TransportError::Io(_) | TransportError::Encode(_))
            | CloseReason::WriteTimeout => None,
            CloseReason::ProtocolViolation(_) => Some(DisconnectReasonCode::ProtocolError),
            CloseReason::KeepAliveTimeout => Some(DisconnectReasonCode::KeepAliveTimeout),
            CloseReason::PayloadTooLarge { .. } => Some(DisconnectReasonCode::PacketTooLarge),
            CloseReason::PublishFailed { error } if error.is_terminal() => {
                Some(DisconnectReasonCode::NotAuthorized)
            }
            CloseReason::PublishFailed { .. } => {
                Some(DisconnectReasonCode::ImplementationSpecificError)
            }
            CloseReason::Shutdown => Some(DisconnectReasonCode::ServerShuttingDown),
        }
    }

    /// Whether forwards in flight are allowed to finish (an orderly end).
    fn drains(&self) -> bool {
        matches!(
            self,
            CloseReason::PeerClosed | CloseReason::ClientDisconnect | CloseReason::Shutdown
        )
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
/// (the authentication futures of `AwaitingConnect` are gone while it serves).
pub(crate) async fn run<S: AsyncRead + AsyncWrite + Unpin + Send>(awaiting: AwaitingConnect<S>) {
    let closing = match Box::pin(awaiting.connect()).await {
        Ok(connected) => Box::pin(connected.serve()).await,
        Err(closing) => closing,
    };
    Box::pin(closing.finish()).await;
}

/// Phase 1: waiting for the CONNECT.
pub(crate) struct AwaitingConnect<S> {
    pub(crate) transport: Transport<S>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) peer: SocketAddr,
    /// The adapter connection limit's permit; `None` when the limit is reached (the CONNECT is
    /// then answered with a refusal).
    pub(crate) permit: Option<OwnedSemaphorePermit>,
}

/// Phase 2: connected and serving.
pub(crate) struct Connected<S> {
    transport: Transport<S>,
    shared: Arc<Shared>,
    identity: Identity,
    client_id: String,
    keep_alive: Option<Duration>,
    error_subscriptions: Vec<ErrorSubscription>,
    in_flight: FuturesOrdered<Pending>,
    _permit: Option<OwnedSemaphorePermit>,
    _tenant: Option<TenantGuard>,
}

/// Phase 3: closing.
pub(crate) struct Closing<S> {
    transport: Transport<S>,
    shared: Arc<Shared>,
    reason: CloseReason,
    /// Set once the CONNACK accepted the connection.
    connected: Option<(Identity, String, FuturesOrdered<Pending>)>,
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
            None => Err(Refusal::AdapterConnectionLimit),
            Some(permit) => admit(&self.shared, self.peer, &connect)
                .await
                .map(|a| (a, permit)),
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
            tracing::info!("device connected");
        } else {
            tracing::info!("unauthenticated device connected");
        }
        let mut in_flight = FuturesOrdered::new();
        if let Some(device) = identity.device().filter(|_| self.shared.connection_events) {
            in_flight.push_back(connection_event(
                &self.shared.ctx,
                device.clone(),
                "connected",
                &connect.client_id,
            ));
        }
        Ok(Connected {
            transport: self.transport,
            shared: self.shared,
            identity,
            client_id: connect.client_id,
            keep_alive: (connect.keep_alive > 0)
                .then(|| Duration::from_millis(u64::from(connect.keep_alive) * 1500)),
            error_subscriptions: Vec::new(),
            in_flight,
            _permit: Some(permit),
            _tenant: tenant,
        })
    }

    fn close(self, reason: CloseReason) -> Closing<S> {
        Closing {
            transport: self.transport,
            shared: self.shared,
            reason,
            connected: None,
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
    connect: &ConnectInfo,
) -> Result<(Identity, Option<TenantGuard>), Refusal> {
    let Some(username) = &connect.username else {
        if shared.authentication_required {
            return Err(Refusal::BadCredentials("credentials required".to_owned()));
        }
        return Ok((Identity::Anonymous, None));
    };
    let password = connect
        .password
        .as_deref()
        .and_then(|p| std::str::from_utf8(p).ok())
        .ok_or_else(|| Refusal::BadCredentials("password missing or not UTF-8".to_owned()))?;
    let ctx = &shared.ctx;
    let device = ctx
        .authenticator
        .authenticate_password(username, password)
        .await
        .map_err(|e| {
            tracing::info!(user = %username.chars().take(128).collect::<String>(), peer = %peer, reason = %e, "authentication failed");
            Refusal::from_auth(&e)
        })?;
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

/// Forwards a connection event (`connected`/`disconnected`) of `device`.
fn connection_event(
    ctx: &AdapterContext,
    device: AuthenticatedDevice,
    cause: &str,
    client_id: &str,
) -> Pending {
    let payload = serde_json::json!({
        "cause": cause,
        "remote-id": client_id,
        "source": crate::ADAPTER_TYPE,
    });
    let upload = Upload {
        endpoint: Endpoint::Event,
        qos: Qos::AtLeastOnce,
        content_type: Some(CONNECTION_EVENT.to_owned()),
        ttl: None,
        ttd: None,
        orig_address: String::new(),
        retain: false,
        payload: Bytes::from(payload.to_string()),
    };
    let forwarder = ctx.forwarder.clone();
    Box::pin(async move {
        let result = forwarder
            .forward(Some(&device), &device.tenant_id, &device.device_id, upload)
            .await
            .map_err(PublishError::from);
        Outcome {
            ack: None,
            context: None,
            result,
        }
    })
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Connected<S> {
    /// Serves until the connection ends.
    pub(crate) async fn serve(mut self) -> Closing<S> {
        let reason = self.serve_loop().await;
        Closing {
            transport: self.transport,
            shared: self.shared,
            reason,
            connected: Some((self.identity, self.client_id, self.in_flight)),
        }
    }

    async fn serve_loop(&mut self) -> CloseReason {
        let shutdown = self.shared.ctx.shutdown.clone();
        let max = self.shared.max_in_flight;
        let keep_alive = self.keep_alive.unwrap_or(Duration::from_secs(86_400));
        let idle = tokio::time::sleep(keep_alive);
        tokio::pin!(idle);
        loop {
            while self.in_flight.len() < max {
                match self.transport.decode() {
                    Ok(Some(packet)) => {
                        if let Err(reason) = self.handle(packet) {
                            return reason;
                        }
                    }
                    Ok(None) => break,
                    Err(TransportError::Decode(DecodeError::MaxSizeExceeded { size, max })) => {
                        // Refused from the fixed header, before the packet is buffered.
                        return CloseReason::PayloadTooLarge {
                            size: size as usize,
                            max: max as usize,
                        };
                    }
                    Err(e) => return e.into(),
                }
            }
            if self.transport.has_pending_writes() {
                let flushed = tokio::select! {
                    () = shutdown.cancelled() => return CloseReason::Shutdown,
                    flushed = tokio::time::timeout(WRITE_TIMEOUT, self.transport.flush()) => flushed,
                };
                match flushed {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => return TransportError::Io(e).into(),
                    Err(_) => return CloseReason::WriteTimeout,
                }
            }
            if self.in_flight.is_empty() {
                self.transport.release_read_buffer();
            }
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return CloseReason::Shutdown,
                Some(outcome) = self.in_flight.next(), if !self.in_flight.is_empty() => {
                    // Not reading while the in-flight window is full is our doing, not the
                    // client's: it must not count as idle time.
                    idle.as_mut().reset(Instant::now() + keep_alive);
                    if let Err(reason) = self.complete(outcome) {
                        return reason;
                    }
                }
                read = self.transport.fill(), if self.in_flight.len() < max => match read {
                    Ok(0) => return CloseReason::PeerClosed,
                    Ok(_) => idle.as_mut().reset(Instant::now() + keep_alive),
                    Err(e) => return TransportError::Io(e).into(),
                },
                () = &mut idle, if self.keep_alive.is_some() => return CloseReason::KeepAliveTimeout,
            }
        }
    }

    fn queue(&mut self, packet: Outbound) -> Result<(), CloseReason> {
        let announce = self.shared.announce();
        self.transport.queue(packet, announce)?;
        Ok(())
    }

    fn handle(&mut self, packet: Inbound) -> Result<(), CloseReason> {
        match packet {
            Inbound::Publish(publish) => self.publish(*publish),
            Inbound::Subscribe { packet_id, filters } => {
                let granted = filters.iter().map(|f| self.subscribe(f)).collect();
                self.queue(Outbound::SubAck { packet_id, granted })
            }
            Inbound::Unsubscribe { packet_id, filters } => {
                let count = filters.len();
                for filter in &filters {
                    if let Some(s) = ErrorSubscription::parse(filter) {
                        self.error_subscriptions.retain(|e| *e != s);
                    }
                }
                self.queue(Outbound::UnsubAck { packet_id, count })
            }
            Inbound::Ping => self.queue(Outbound::Pong),
            Inbound::Disconnect => Err(CloseReason::ClientDisconnect),
            Inbound::Ack => Ok(()),
            Inbound::Connect(_) => Err(CloseReason::ProtocolViolation("second CONNECT")),
            Inbound::Unexpected(what) => Err(CloseReason::ProtocolViolation(what)),
        }
    }

    /// Accepts error subscriptions of the connected device's own tenant; commands come later,
    /// so every other filter is refused (SUBACK 0x80).
    fn subscribe(&mut self, filter: &str) -> bool {
        let Some(subscription) = ErrorSubscription::parse(filter) else {
            tracing::debug!(filter, "subscription refused");
            return false;
        };
        let allowed = match &self.identity {
            Identity::Device(d) => subscription
                .tenant()
                .is_none_or(|t| t == d.tenant_id.as_str()),
            Identity::Anonymous => {
                subscription.tenant().is_some()
                    && matches!(subscription.device(), crate::topic::DeviceFilter::Device(_))
            }
        };
        if allowed && !self.error_subscriptions.contains(&subscription) {
            self.error_subscriptions.push(subscription);
        }
        allowed
    }

    fn publish(&mut self, publish: PublishIn) -> Result<(), CloseReason> {
        let max = self.shared.max_payload_size;
        if publish.payload.len() > max {
            return Err(CloseReason::PayloadTooLarge {
                size: publish.payload.len(),
                max,
            });
        }
        let ack = publish::ack_id(&publish);
        let (context, prepared) = publish::prepare(&publish, &self.identity);
        let sender = self.identity.device().cloned();
        let forwarder = self.shared.ctx.forwarder.clone();
        self.in_flight.push_back(Box::pin(async move {
            let result = match prepared {
                Ok(p) => forwarder
                    .forward(sender.as_ref(), &p.tenant, &p.device, p.upload)
                    .await
                    .map_err(PublishError::from),
                Err(e) => Err(e),
            };
            Outcome {
                ack,
                context: Some(context),
                result,
            }
        }));
        Ok(())
    }

    fn complete(&mut self, outcome: Outcome) -> Result<(), CloseReason> {
        let error = match outcome.result {
            Ok(()) => {
                return outcome
                    .ack
                    .map_or(Ok(()), |id| self.queue(Outbound::PubAck(id)));
            }
            Err(error) => error,
        };
        let Some(context) = outcome.context else {
            tracing::warn!(reason = %error, "connection event not sent");
            return Ok(());
        };
        let own = self.identity.device().map(|d| &d.device_id);
        let subscription = context.device.as_ref().and_then(|device| {
            self.error_subscriptions
                .iter()
                .find(|s| s.covers(device, own))
                .map(|s| (s, device))
        });
        let status = error.status();
        let actions = publish::on_failure(
            context.on_error,
            subscription.is_some(),
            error.is_terminal(),
        );
        tracing::info!(
            device = context.device.as_ref().map_or("-", |d| d.as_str()),
            status,
            reason = %error,
            on_error = ?context.on_error,
            disconnect = actions.disconnect,
            "upload refused"
        );
        let mut packets = Vec::with_capacity(2);
        if let Some((subscription, device)) = subscription.filter(|_| actions.publish_error) {
            packets.push(Outbound::Publish {
                topic: subscription.error_topic(
                    device,
                    context.word,
                    &context.correlation_id,
                    status,
                ),
                payload: publish::error_payload(
                    status,
                    &error.client_message(),
                    &context.correlation_id,
                ),
            });
        }
        if let Some(id) = outcome.ack.filter(|_| actions.ack) {
            packets.push(Outbound::PubAck(id));
        }
        for packet in packets {
            self.queue(packet)?;
        }
        if actions.disconnect {
            return Err(CloseReason::PublishFailed { error });
        }
        Ok(())
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Closing<S> {
    /// Drains (for an orderly end), says goodbye, closes, and sends the `disconnected` event.
    pub(crate) async fn finish(self) {
        let Closing {
            mut transport,
            shared,
            reason,
            connected,
        } = self;
        match &reason {
            CloseReason::PeerClosed | CloseReason::ClientDisconnect => {
                tracing::debug!(%reason, "connection closed")
            }
            _ => tracing::info!(%reason, "connection closed"),
        }
        let announce = shared.announce();
        let Some((identity, client_id, mut in_flight)) = connected else {
            let _ = tokio::time::timeout(CLOSE_DEADLINE, transport.close()).await;
            return;
        };
        if reason.drains() {
            let drain = async {
                while let Some(outcome) = in_flight.next().await {
                    match (outcome.result, outcome.ack) {
                        (Ok(()), Some(id)) => {
                            let _ = transport.queue(Outbound::PubAck(id), announce);
                        }
                        (Err(e), _) => tracing::info!(reason = %e, "upload refused while closing"),
                        (Ok(()), None) => {}
                    }
                }
            };
            if tokio::time::timeout(DRAIN_DEADLINE, drain).await.is_err() {
                tracing::warn!("forwards in flight did not finish before the deadline");
            }
        }
        drop(in_flight);
        if let Some(code) = reason.disconnect_code() {
            let _ = transport.queue(Outbound::Disconnect(code), announce);
        }
        let _ = tokio::time::timeout(CLOSE_DEADLINE, transport.close()).await;
        if let Some(device) = identity.device().filter(|_| shared.connection_events) {
            let event = connection_event(&shared.ctx, device.clone(), "disconnected", &client_id);
            match tokio::time::timeout(CLOSE_DEADLINE, event).await {
                Ok(Outcome { result: Ok(()), .. }) => {}
                Ok(Outcome { result: Err(e), .. }) => {
                    tracing::warn!(reason = %e, "disconnected event not sent")
                }
                Err(_) => tracing::warn!("disconnected event timed out"),
            }
        }
    }
}

#[cfg(test)]
mod tests;
