//! The phases of an application connection before it serves: the SASL layer (AMQP 1.0 part 5.3:
//! protocol headers, `sasl-mechanisms`, the client's `sasl-init`, `sasl-outcome`), then the AMQP
//! protocol header and the `open` exchange (§2.4.1), which tells the application's largest frame
//! and its idle timeout. Every byte is read into one buffer, so frames a client sends early (its
//! AMQP header and `open` right behind its `sasl-init`) are kept for the next phase. The caller
//! runs this under `handshake_timeout`.

use std::time::Duration;

use bytes::{BufMut, BytesMut};
use fe2o3_amqp::frames::amqp::FrameBody;
use fe2o3_amqp::frames::sasl::Frame as SaslFrame;
use fe2o3_amqp::types::performatives::{ChannelMax, Close, MaxFrameSize, Open};
use fe2o3_amqp::types::sasl::{SaslCode, SaslMechanisms, SaslOutcome};
use ferry_amqp_wire::frame::{self, FramingError, encode_or_log};
use ferry_amqp_wire::sasl::{encode_sasl, next_sasl_frame};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::engine::MAX_CHANNEL;
use crate::sasl::Authenticator;

/// Container id of the northbound in `open`.
const CONTAINER_ID: &str = "ferry-northbound";
/// `AMQP` + protocol id 3 (SASL) + version 1.0.0.
const SASL_HEADER: [u8; 8] = *b"AMQP\x03\x01\x00\x00";
/// `AMQP` + protocol id 0 + version 1.0.0.
const AMQP_HEADER: [u8; 8] = *b"AMQP\x00\x01\x00\x00";
/// The largest SASL frame accepted: PLAIN needs a few hundred bytes.
const MAX_SASL_FRAME: u32 = 8 * 1024;
/// The largest frame an application may send (consumers send small performatives only).
pub(crate) const MAX_FRAME_SIZE: u32 = 64 * 1024;

/// A connection that completed its handshakes.
#[derive(Debug)]
pub(crate) struct Opened {
    /// What the application sent after its `open`.
    pub received: BytesMut,
    /// The largest frame the application accepts.
    pub peer_max_frame_size: u32,
    /// How often the application wants to hear from us at least (half its idle timeout).
    pub heartbeat: Option<Duration>,
}

/// Why a connection ended before it served.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HandshakeError {
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("the connection closed during the handshake")]
    Closed,
    #[error("expected the {expected} protocol header, got {got:?}")]
    Header {
        expected: &'static str,
        got: [u8; 8],
    },
    #[error(transparent)]
    Framing(#[from] FramingError),
    #[error("expected {0}")]
    Unexpected(&'static str),
    #[error("authentication failed")]
    Refused,
}

/// Runs SASL and the `open` exchange on `stream`.
pub(crate) async fn open<S>(stream: &mut S, auth: &Authenticator) -> Result<Opened, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut received = BytesMut::with_capacity(1024);
    let mut out = BytesMut::with_capacity(256);
    // Whatever the client asked for, the answer names the layer we accept (AMQP 1.0 part 2.2: a
    // server that does not support the requested protocol answers with its own header and
    // closes).
    out.put_slice(&SASL_HEADER);
    let header = read_header(stream, &mut received).await?;
    if header != SASL_HEADER {
        stream.write_all(&out).await?;
        return Err(HandshakeError::Header {
            expected: "SASL",
            got: header,
        });
    }
    let mechanisms = SaslMechanisms {
        sasl_server_mechanisms: auth.mechanisms(),
    };
    encode_sasl(&mut out, SaslFrame::Mechanisms(mechanisms))?;
    stream.write_all(&out).await?;
    let init = loop {
        match next_sasl_frame(&mut received, MAX_SASL_FRAME)? {
            Some(SaslFrame::Init(init)) => break init,
            Some(_) => return Err(HandshakeError::Unexpected("sasl-init")),
            None => read_more(stream, &mut received).await?,
        }
    };
    let code = auth.on_init(init);
    let refused = !matches!(code, SaslCode::Ok);
    out.clear();
    encode_sasl(
        &mut out,
        SaslFrame::Outcome(SaslOutcome {
            code,
            additional_data: None,
        }),
    )?;
    stream.write_all(&out).await?;
    if refused {
        return Err(HandshakeError::Refused);
    }

    out.clear();
    out.put_slice(&AMQP_HEADER);
    let header = read_header(stream, &mut received).await?;
    if header != AMQP_HEADER {
        stream.write_all(&out).await?;
        return Err(HandshakeError::Header {
            expected: "AMQP",
            got: header,
        });
    }
    let ours = Open {
        container_id: CONTAINER_ID.to_owned(),
        hostname: None,
        max_frame_size: MaxFrameSize(MAX_FRAME_SIZE),
        channel_max: ChannelMax(MAX_CHANNEL),
        idle_time_out: None,
        outgoing_locales: None,
        incoming_locales: None,
        offered_capabilities: None,
        desired_capabilities: None,
        properties: None,
    };
    encode_or_log(&mut out, 0, &ours);
    stream.write_all(&out).await?;
    let theirs = loop {
        match frame::next_frame(&mut received, MAX_FRAME_SIZE) {
            Ok(Some(frame)) => match frame.body {
                FrameBody::Open(open) => break Ok(open),
                _ => break Err(HandshakeError::Unexpected("open")),
            },
            Ok(None) => read_more(stream, &mut received).await?,
            Err(error) => break Err(HandshakeError::Framing(error)),
        }
    };
    let theirs = match theirs {
        Ok(open) => open,
        Err(error) => {
            let close = Close {
                error: Some(ferry_amqp_wire::framing_error(&error)),
            };
            out.clear();
            encode_or_log(&mut out, 0, &close);
            let _ = stream.write_all(&out).await;
            return Err(error);
        }
    };
    tracing::debug!(container = %theirs.container_id, "application connected");
    Ok(Opened {
        received,
        peer_max_frame_size: theirs.max_frame_size.0,
        heartbeat: theirs
            .idle_time_out
            .filter(|ms| *ms > 0)
            .map(|ms| Duration::from_millis(u64::from(ms) / 2)),
    })
}

/// Takes the next 8-byte protocol header off `received`, reading as needed.
async fn read_header<S>(stream: &mut S, received: &mut BytesMut) -> Result<[u8; 8], HandshakeError>
where
    S: AsyncRead + Unpin,
{
    while received.len() < 8 {
        read_more(stream, received).await?;
    }
    let mut header = [0u8; 8];
    header.copy_from_slice(&received.split_to(8));
    Ok(header)
}

async fn read_more<S>(stream: &mut S, received: &mut BytesMut) -> Result<(), HandshakeError>
where
    S: AsyncRead + Unpin,
{
    received.reserve(1024);
    match stream.read_buf(received).await? {
        0 => Err(HandshakeError::Closed),
        _ => Ok(()),
    }
}
