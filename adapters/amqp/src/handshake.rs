//! The phases of a connection before it serves: the SASL exchange with asynchronous
//! authentication ([`crate::sasl`]), Hono's connect-time checks ([`crate::admission`]), then the
//! AMQP protocol header and the `open` exchange (AMQP 1.0 §2.4.1), which tells the device's
//! container id, its largest frame and its idle timeout. Each phase runs under
//! `handshake_timeout` and stops at shutdown.
//!
//! The caller boxes [`open`]: the authentication futures are large, and a boxed phase frees them
//! before the connection serves for hours (idle connection memory).

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use fe2o3_amqp::frames::amqp::FrameBody;
use fe2o3_amqp::types::performatives::{ChannelMax, Close, MaxFrameSize, Open};
use fe2o3_amqp::types::primitives::{Array, Symbol};
use ferry_adapter_core::AuthenticatedDevice;
use ferry_adapter_core::tls::TlsPeer;
use ferry_amqp_wire::frame::{self, FramingError, encode_or_log};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::admission::{self, Refused, Slot};
use crate::connection::Shared;
use crate::engine::MAX_CHANNEL;
use crate::error::sasl_code_for;
use crate::io::Io;
use crate::sasl::{self, Credentials, Mechanisms};

/// Container id of the adapter in `open`.
const CONTAINER_ID: &str = "ferry-amqp-adapter";
/// Capability offered in `open`: devices send on one link with a null target.
const ANONYMOUS_RELAY: &str = "ANONYMOUS-RELAY";
/// `AMQP` + protocol id 0 + version 1.0.0.
const AMQP_HEADER: [u8; 8] = *b"AMQP\x00\x01\x00\x00";
/// The largest frame the device may send; a message larger than a frame comes in several.
pub(crate) const MAX_FRAME_SIZE: u32 = 64 * 1024;
/// The largest `open` frame accepted. AMQP 1.0 §2.7.1 limits frames to 512 bytes until `open`
/// is exchanged; this leaves room for clients that send more properties.
const MAX_OPEN_FRAME: u32 = 4096;

/// A connection that completed its handshakes.
pub(crate) struct Opened<S> {
    /// The stream, with what the device sent after its `open`.
    pub(crate) io: Io<S>,
    /// The authenticated device, `None` for an anonymous one.
    pub(crate) device: Option<AuthenticatedDevice>,
    /// The place in the tenant's connection count, or why the connection is refused (told in a
    /// `close` right after the `open`).
    pub(crate) admission: Result<Option<Slot>, Refused>,
    /// The container id of the device's `open`.
    pub(crate) remote_id: String,
    /// How often the device wants to hear from the adapter at least (half its idle timeout).
    pub(crate) heartbeat: Option<Duration>,
}

/// Why the `open` exchange failed.
#[derive(Debug, thiserror::Error)]
enum OpenError {
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("the connection closed during the open exchange")]
    Closed,
    #[error("expected the AMQP protocol header, got {0:?}")]
    Header([u8; 8]),
    #[error(transparent)]
    Framing(#[from] FramingError),
    #[error("the first frame is not an open")]
    NotOpen,
}

/// SASL, the connect-time checks and the AMQP open, on the connection after TLS. `peer` is what
/// the TLS handshake told about the client (`None` on the insecure port). `None` when the
/// connection ended here (refused by SASL, timed out, shutdown, protocol error).
pub(crate) async fn open<S>(
    mut stream: S,
    peer: Option<TlsPeer>,
    shared: Arc<Shared>,
) -> Option<Opened<S>>
where
    S: AsyncRead + AsyncWrite + Send + Unpin,
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
    let mut io = Io::new(stream);
    let idle_ms = u32::try_from(shared.idle_timeout.as_millis()).unwrap_or(u32::MAX);
    let exchange = tokio::time::timeout(shared.handshake_timeout, exchange_open(&mut io, idle_ms));
    let open = tokio::select! {
        outcome = exchange => match outcome {
            Ok(Ok(open)) => open,
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
    tracing::Span::current().record("container", open.container_id.as_str());
    let heartbeat = open
        .idle_time_out
        .filter(|ms| *ms > 0)
        .map(|ms| Duration::from_millis(u64::from(ms) / 2));
    Some(Opened {
        io,
        device,
        admission,
        remote_id: open.container_id,
        heartbeat,
    })
}

/// Exchanges protocol headers and `open` frames; the adapter's `open` goes out with its header.
async fn exchange_open<S>(io: &mut Io<S>, idle_ms: u32) -> Result<Open, OpenError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    while io.received.len() < AMQP_HEADER.len() {
        if io.read().await? == 0 {
            return Err(OpenError::Closed);
        }
    }
    let header = io.received.split_to(AMQP_HEADER.len());
    let mut out = BytesMut::new();
    out.extend_from_slice(&AMQP_HEADER);
    if header[..] != AMQP_HEADER {
        // AMQP 1.0 §2.2: answer with the supported header, then close.
        io.write(&out).await?;
        let mut got = [0u8; 8];
        got.copy_from_slice(&header);
        return Err(OpenError::Header(got));
    }
    let open = Open {
        container_id: CONTAINER_ID.to_owned(),
        hostname: None,
        max_frame_size: MaxFrameSize(MAX_FRAME_SIZE),
        channel_max: ChannelMax(MAX_CHANNEL),
        idle_time_out: Some(idle_ms),
        outgoing_locales: None,
        incoming_locales: None,
        offered_capabilities: Some(Array::from(vec![Symbol::from(ANONYMOUS_RELAY)])),
        desired_capabilities: None,
        properties: None,
    };
    encode_or_log(&mut out, 0, &open);
    io.write(&out).await?;
    let outcome = loop {
        match frame::next_frame(&mut io.received, MAX_OPEN_FRAME) {
            Ok(Some(frame)) => match frame.body {
                FrameBody::Open(open) => break Ok(open),
                _ => break Err(OpenError::NotOpen),
            },
            Ok(None) => {
                if io.read().await? == 0 {
                    return Err(OpenError::Closed);
                }
            }
            Err(e) => break Err(OpenError::Framing(e)),
        }
    };
    if let Err(error) = &outcome {
        let close = Close {
            error: Some(ferry_amqp_wire::framing_error(error)),
        };
        let mut out = BytesMut::new();
        encode_or_log(&mut out, 0, &close);
        let _ = io.write(&out).await;
    }
    outcome
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
