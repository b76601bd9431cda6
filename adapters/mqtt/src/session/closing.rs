//! Phase 3, `Closing`: why a connection ends, draining forwards in flight after an orderly
//! end, the MQTT 5 DISCONNECT reason, and the `disconnected` event.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ferry_adapter_core::forward::connection_event::Cause;
use rmqtt_codec::v5::DisconnectReasonCode;
use tokio::io::{AsyncRead, AsyncWrite};

use super::{InFlight, Outcome, Shared, connection_event};
use crate::error::{PublishError, Refusal};
use crate::packet::{Outbound, Transport, TransportError};
use crate::publish::Identity;
use crate::serving::End;

/// Longest time forwards in flight may take to finish when a connection closes.
const DRAIN_DEADLINE: Duration = Duration::from_secs(10);
/// Longest time for the last packets and the close to be written.
const CLOSE_DEADLINE: Duration = Duration::from_secs(5);

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
    /// A registry change disabled or deleted the tenant or device.
    #[error("tenant or device disabled or deleted")]
    Revoked,
    /// The process shuts down.
    #[error("shutting down")]
    Shutdown,
}

impl From<End> for CloseReason {
    fn from(end: End) -> Self {
        match end {
            End::Shutdown => CloseReason::Shutdown,
            End::Revoked => CloseReason::Revoked,
            End::KeepAliveTimeout => CloseReason::KeepAliveTimeout,
        }
    }
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
            CloseReason::Revoked => Some(DisconnectReasonCode::NotAuthorized),
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

/// Phase 3: closing.
pub(crate) struct Closing<S> {
    pub(super) transport: Transport<S>,
    pub(super) shared: Arc<Shared>,
    /// The client's address, for the log lines.
    pub(super) peer: SocketAddr,
    pub(super) reason: CloseReason,
    /// Set once the CONNACK accepted the connection.
    pub(super) connected: Option<(Identity, Box<str>, InFlight)>,
    /// The place under the connection limit (or among the refusals) of a connection that was
    /// not accepted, held until it is closed.
    pub(super) _permit: Option<super::Permit>,
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Closing<S> {
    /// Drains (for an orderly end), says goodbye, closes, and sends the `disconnected` event.
    pub(crate) async fn finish(self) {
        let Closing {
            mut transport,
            shared,
            peer,
            reason,
            connected,
            _permit,
        } = self;
        let device = connected
            .as_ref()
            .and_then(|(identity, ..)| identity.device());
        let tenant = device.map_or("-", |d| d.tenant_id.as_str());
        let device_id = device.map_or("-", |d| d.device_id.as_str());
        match &reason {
            CloseReason::PeerClosed | CloseReason::ClientDisconnect => {
                tracing::debug!(%peer, tenant, device = device_id, %reason, "connection closed")
            }
            _ => tracing::info!(%peer, tenant, device = device_id, %reason, "connection closed"),
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
                        (Err(e), _) => {
                            tracing::info!(%peer, reason = %e, "upload refused while closing")
                        }
                        (Ok(()), None) => {}
                    }
                }
            };
            if tokio::time::timeout(DRAIN_DEADLINE, drain).await.is_err() {
                tracing::warn!(%peer, "forwards in flight did not finish before the deadline");
            }
        }
        drop(in_flight);
        if let Some(code) = reason.disconnect_code() {
            let _ = transport.queue(Outbound::Disconnect(code), announce);
        }
        let _ = tokio::time::timeout(CLOSE_DEADLINE, transport.close()).await;
        if let Some(device) = identity.device().filter(|_| shared.connection_events) {
            let event =
                connection_event(&shared.ctx, device.clone(), Cause::Disconnected, &client_id);
            match tokio::time::timeout(CLOSE_DEADLINE, event).await {
                Ok(Outcome { result: Ok(()), .. }) => {}
                Ok(Outcome { result: Err(e), .. }) => {
                    tracing::warn!(%peer, reason = %e, "disconnected event not sent")
                }
                Err(_) => tracing::warn!(%peer, "disconnected event timed out"),
            }
        }
    }
}
