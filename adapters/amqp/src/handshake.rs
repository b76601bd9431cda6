//! The phases of a connection before it serves: the SASL exchange with asynchronous
//! authentication ([`crate::sasl`]), Hono's connect-time checks ([`crate::admission`]) and the
//! AMQP `open` through fe2o3's acceptor, which the device's container id is read from in passing
//! ([`crate::peek`]). Each phase runs under `handshake_timeout` and stops at shutdown.
//!
//! The caller boxes [`open`]: the authentication and handshake futures are large, and a boxed
//! phase frees them before the connection serves for hours (idle connection memory).

use std::sync::Arc;

use fe2o3_amqp::acceptor::{ConnectionAcceptor, ListenerConnectionHandle};
use ferry_adapter_core::AuthenticatedDevice;
use ferry_adapter_core::tls::TlsPeer;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::admission::{self, Slot};
use crate::connection::{ANONYMOUS_RELAY, CLOSE_TIMEOUT, Shared};
use crate::error::sasl_code_for;
use crate::peek::PeekOpen;
use crate::sasl::{self, Credentials, Mechanisms};

/// Container id of the adapter in `open`.
const CONTAINER_ID: &str = "ferry-amqp-adapter";
/// Highest session channel of a device connection (so at most 4 sessions): a device needs one.
const MAX_SESSIONS: u16 = 3;

/// A connection that completed its handshakes and was admitted.
pub(crate) struct Opened {
    /// fe2o3's handle of the open connection.
    pub(crate) connection: ListenerConnectionHandle,
    /// The authenticated device, `None` for an anonymous one.
    pub(crate) device: Option<AuthenticatedDevice>,
    /// The place in the tenant's connection count, held while the connection is open.
    pub(crate) _slot: Option<Slot>,
    /// The container id of the device's `open` (empty if it could not be read).
    pub(crate) remote_id: String,
}

/// SASL, the connect-time checks and the AMQP open, on the connection after TLS. `peer` is what
/// the TLS handshake told about the client (`None` on the insecure port). `None` when the
/// connection ended here (refused, timed out, shutdown).
pub(crate) async fn open<S>(
    mut stream: S,
    peer: Option<TlsPeer>,
    shared: Arc<Shared>,
) -> Option<Opened>
where
    S: AsyncRead + AsyncWrite + std::fmt::Debug + Send + Unpin + 'static,
{
    let shutdown = shared.ctx.shutdown.clone();
    let handshake = tokio::time::timeout(
        shared.handshake_timeout,
        authenticate(&mut stream, peer.as_ref(), &shared),
    );
    let device = tokio::select! {
        outcome = handshake => match outcome {
            Ok(Some(device)) => device,
            Ok(None) => return None,
            Err(_) => {
                tracing::info!("SASL handshake timed out");
                return None;
            }
        },
        () = shutdown.cancelled() => return None,
    };
    // Hono's connect-time checks; a refusal is told in the close after the open.
    let admission = match &device {
        Some(device) => {
            let span = tracing::Span::current();
            span.record("tenant", device.tenant_id.as_str());
            span.record("device", device.device_id.as_str());
            admission::admit(&shared.ctx.forwarder, &shared.tenants, device)
                .await
                .map(Some)
        }
        None => Ok(None),
    };
    let idle_ms = u32::try_from(shared.idle_timeout.as_millis()).unwrap_or(u32::MAX);
    let acceptor = ConnectionAcceptor::builder()
        .container_id(CONTAINER_ID)
        .channel_max(MAX_SESSIONS)
        .idle_time_out(idle_ms)
        .add_offered_capabilities(ANONYMOUS_RELAY)
        .build();
    let (stream, container) = PeekOpen::new(stream);
    let open = tokio::time::timeout(shared.handshake_timeout, acceptor.accept(stream));
    let connection = tokio::select! {
        outcome = open => match outcome {
            Ok(Ok(connection)) => connection,
            Ok(Err(error)) => {
                tracing::info!(%error, "AMQP open failed");
                return None;
            }
            Err(_) => {
                tracing::info!("AMQP open timed out");
                return None;
            }
        },
        () = shutdown.cancelled() => return None,
    };
    let slot = match admission {
        Ok(slot) => slot,
        Err(refused) => {
            tracing::info!(reason = %refused, "connection refused");
            let mut connection = connection;
            let closing = connection.close_with_error(refused.to_amqp());
            if let Ok(Err(error)) = tokio::time::timeout(CLOSE_TIMEOUT, closing).await {
                tracing::debug!(%error, "refused connection closed with error");
            }
            return None;
        }
    };
    let remote_id = container.get().unwrap_or_default().to_owned();
    tracing::Span::current().record("container", remote_id.as_str());
    Some(Opened {
        connection,
        device,
        _slot: slot,
        remote_id,
    })
}

/// Runs the SASL exchange and authenticates; `None` when the device was refused (it has been
/// told, where SASL allows). EXTERNAL is offered when `peer` presented a client certificate.
async fn authenticate<S>(
    stream: &mut S,
    peer: Option<&TlsPeer>,
    shared: &Shared,
) -> Option<Option<AuthenticatedDevice>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let certificate = peer.filter(|p| p.has_certificate());
    let mechanisms = Mechanisms {
        external: certificate.is_some(),
        anonymous: !shared.authentication_required,
    };
    let credentials = match sasl::negotiate(stream, mechanisms).await {
        Ok(credentials) => credentials,
        Err(error) => {
            tracing::info!(%error, "SASL negotiation failed");
            if error.answers_with_outcome() {
                let _ = sasl::send_outcome(stream, fe2o3_amqp::types::sasl::SaslCode::Auth).await;
            }
            return None;
        }
    };
    let outcome = match &credentials {
        Credentials::Plain { username, password } => shared
            .ctx
            .authenticator
            .authenticate_password(username, password)
            .await
            .map(Some),
        Credentials::External => match certificate {
            Some(peer) => shared
                .ctx
                .authenticator
                .authenticate_x509(&peer.chain, peer.sni.as_deref())
                .await
                .map(Some),
            // EXTERNAL is offered only with a certificate, so `negotiate` refused it already.
            None => Err(ferry_adapter_core::AuthError::NoClientCertificate),
        },
        Credentials::Anonymous => Ok(None),
    };
    match outcome {
        Ok(device) => {
            sasl::send_outcome(stream, fe2o3_amqp::types::sasl::SaslCode::Ok)
                .await
                .ok()?;
            Some(device)
        }
        Err(error) => {
            tracing::info!(%error, ?credentials, "device authentication failed");
            let _ = sasl::send_outcome(stream, sasl_code_for(error.kind())).await;
            None
        }
    }
}
