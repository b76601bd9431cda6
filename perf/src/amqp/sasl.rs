//! The client's side of the SASL layer (AMQP 1.0 part 5.3): the SASL protocol header, the
//! server's mechanisms, `sasl-init` with the configured mechanism, and the outcome.
//!
//! PLAIN sends `\0username\0password` (RFC 4616); ANONYMOUS an empty response; EXTERNAL none: the
//! server takes the identity from the TLS client certificate. A mechanism the server does not
//! offer is an error before anything is sent; so is a challenge (none of these mechanisms has
//! one). Frames are cut off the receive buffer exactly, so no byte of the AMQP layer is consumed.

use bytes::{Buf, BufMut, BytesMut};
use fe2o3_amqp::frames::sasl::{Frame, FrameCodec};
use fe2o3_amqp::types::primitives::{Binary, Symbol};
use fe2o3_amqp::types::sasl::{SaslCode, SaslInit};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::codec::{Decoder, Encoder};

use super::error::AmqpError;
use crate::net::wire::Wire;

/// `AMQP` + protocol id 3 (SASL) + version 1.0.0.
const SASL_HEADER: [u8; 8] = *b"AMQP\x03\x01\x00\x00";
/// The smallest SASL frame (size and frame header) and the largest the client reads.
const MIN_FRAME: usize = 8;
const MAX_FRAME: usize = 8 * 1024;
/// Frame type of SASL frames.
const TYPE_SASL: u8 = 1;

/// How the client authenticates.
#[derive(Clone, PartialEq, Eq)]
pub enum Mechanism {
    /// SASL PLAIN with `auth-id@tenant` and a password.
    Plain {
        /// The authentication identity.
        username: String,
        /// The password.
        password: String,
    },
    /// SASL ANONYMOUS.
    Anonymous,
    /// SASL EXTERNAL: the TLS client certificate.
    External,
}

impl std::fmt::Debug for Mechanism {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Mechanism::Plain { username, .. } => f
                .debug_struct("Plain")
                .field("username", username)
                .finish_non_exhaustive(),
            Mechanism::Anonymous => f.write_str("Anonymous"),
            Mechanism::External => f.write_str("External"),
        }
    }
}

impl Mechanism {
    fn name(&self) -> &'static str {
        match self {
            Mechanism::Plain { .. } => "PLAIN",
            Mechanism::Anonymous => "ANONYMOUS",
            Mechanism::External => "EXTERNAL",
        }
    }

    fn initial_response(&self) -> Option<Binary> {
        match self {
            Mechanism::Plain { username, password } => {
                let mut response = Vec::with_capacity(username.len() + password.len() + 2);
                response.push(0);
                response.extend_from_slice(username.as_bytes());
                response.push(0);
                response.extend_from_slice(password.as_bytes());
                Some(Binary::from(response))
            }
            Mechanism::Anonymous => Some(Binary::from(Vec::new())),
            Mechanism::External => None,
        }
    }
}

/// Runs the SASL exchange with `mechanism` on a fresh stream.
pub(crate) async fn authenticate<S>(
    wire: &mut Wire<S>,
    mechanism: &Mechanism,
    hostname: Option<&str>,
) -> Result<(), AmqpError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    wire.out.extend_from_slice(&SASL_HEADER);
    wire.write().await?;
    super::expect_header(wire, SASL_HEADER).await?;
    let Frame::Mechanisms(offered) = read_frame(wire).await? else {
        return Err(AmqpError::Protocol("expected sasl-mechanisms".to_owned()));
    };
    let name = mechanism.name();
    if !offered.sasl_server_mechanisms.0.iter().any(|m| m.0 == name) {
        return Err(AmqpError::Mechanism(name));
    }
    let init = SaslInit {
        mechanism: Symbol::from(name),
        initial_response: mechanism.initial_response(),
        hostname: hostname.map(str::to_owned),
    };
    write_frame(&mut wire.out, Frame::Init(init))?;
    wire.write().await?;
    match read_frame(wire).await? {
        Frame::Outcome(outcome) if outcome.code == SaslCode::Ok => Ok(()),
        Frame::Outcome(outcome) => Err(AmqpError::Sasl(outcome.code)),
        _ => Err(AmqpError::Protocol("expected sasl-outcome".to_owned())),
    }
}

fn write_frame(out: &mut BytesMut, frame: Frame) -> Result<(), AmqpError> {
    let start = out.len();
    out.put_u32(0);
    FrameCodec {}
        .encode(frame, out)
        .map_err(|e| AmqpError::Protocol(format!("cannot encode a SASL frame: {e}")))?;
    let size = u32::try_from(out.len() - start).unwrap_or(u32::MAX);
    out[start..start + 4].copy_from_slice(&size.to_be_bytes());
    Ok(())
}

async fn read_frame<S>(wire: &mut Wire<S>) -> Result<Frame, AmqpError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    wire.read_at_least(4).await?;
    let size = wire.received.get_u32() as usize;
    if !(MIN_FRAME..=MAX_FRAME).contains(&size) {
        return Err(AmqpError::Protocol(format!("SASL frame size {size}")));
    }
    wire.read_at_least(size - 4).await?;
    let mut body = wire.received.split_to(size - 4);
    // MIN_FRAME guarantees the header bytes fe2o3's decoder reads unchecked.
    if body[1] != TYPE_SASL {
        return Err(AmqpError::Protocol(format!("frame type {}", body[1])));
    }
    match (FrameCodec {}).decode(&mut body) {
        Ok(Some(frame)) => Ok(frame),
        Ok(None) | Err(_) => Err(AmqpError::Protocol("malformed SASL frame".to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use fe2o3_amqp::types::primitives::Array;
    use fe2o3_amqp::types::sasl::{SaslMechanisms, SaslOutcome};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    /// A server offering `offered` and answering with `code`; returns the `sasl-init` it got.
    async fn server(
        mut stream: tokio::io::DuplexStream,
        offered: &[&str],
        code: SaslCode,
    ) -> Result<Option<SaslInit>, AmqpError> {
        let mut header = [0u8; 8];
        stream.read_exact(&mut header).await?;
        assert_eq!(header, SASL_HEADER);
        let mut out = BytesMut::from(&SASL_HEADER[..]);
        let symbols = offered.iter().map(|m| Symbol::from(*m)).collect();
        write_frame(
            &mut out,
            Frame::Mechanisms(SaslMechanisms {
                sasl_server_mechanisms: Array(symbols),
            }),
        )?;
        stream.write_all(&out).await?;
        let mut wire = Wire::new(stream);
        let init = match read_frame(&mut wire).await {
            Ok(Frame::Init(init)) => init,
            _ => return Ok(None), // the client gave up
        };
        write_frame(
            &mut wire.out,
            Frame::Outcome(SaslOutcome {
                code,
                additional_data: None,
            }),
        )?;
        wire.write().await?;
        Ok(Some(init))
    }

    async fn exchange(
        mechanism: Mechanism,
        offered: &'static [&'static str],
        code: SaslCode,
    ) -> Result<(Result<(), AmqpError>, Option<SaslInit>), Box<dyn std::error::Error>> {
        let (client, peer) = tokio::io::duplex(4096);
        let server = tokio::spawn(server(peer, offered, code));
        let mut wire = Wire::new(client);
        let outcome = authenticate(&mut wire, &mechanism, Some("localhost")).await;
        drop(wire);
        Ok((outcome, server.await??))
    }

    #[tokio::test]
    async fn plain_sends_the_credentials_and_reads_the_outcome() -> TestResult {
        let plain = Mechanism::Plain {
            username: "d@t".to_owned(),
            password: "pw".to_owned(),
        };
        let (outcome, init) = exchange(plain.clone(), &["EXTERNAL", "PLAIN"], SaslCode::Ok).await?;
        assert!(outcome.is_ok(), "{outcome:?}");
        let init = init.ok_or("no init")?;
        assert_eq!(init.mechanism.as_str(), "PLAIN");
        assert_eq!(
            init.initial_response.map(|r| r.into_vec()),
            Some(b"\0d@t\0pw".to_vec())
        );
        assert_eq!(init.hostname.as_deref(), Some("localhost"));
        assert!(!format!("{plain:?}").contains("pw"));

        let (outcome, _) = exchange(plain, &["PLAIN"], SaslCode::Auth).await?;
        assert!(matches!(outcome, Err(AmqpError::Sasl(SaslCode::Auth))));
        Ok(())
    }

    #[tokio::test]
    async fn external_and_anonymous_only_when_offered() -> TestResult {
        let (outcome, init) =
            exchange(Mechanism::External, &["EXTERNAL", "PLAIN"], SaslCode::Ok).await?;
        assert!(outcome.is_ok(), "{outcome:?}");
        let init = init.ok_or("no init")?;
        assert_eq!(init.mechanism.as_str(), "EXTERNAL");
        assert!(init.initial_response.is_none());

        let (outcome, init) = exchange(Mechanism::External, &["PLAIN"], SaslCode::Ok).await?;
        assert!(matches!(outcome, Err(AmqpError::Mechanism("EXTERNAL"))));
        assert!(
            init.is_none(),
            "nothing is sent for a mechanism not offered"
        );

        let (outcome, _) = exchange(Mechanism::Anonymous, &["ANONYMOUS"], SaslCode::Ok).await?;
        assert!(outcome.is_ok(), "{outcome:?}");
        Ok(())
    }

    #[tokio::test]
    async fn bad_frames_are_errors_not_panics() -> TestResult {
        for bytes in [
            &[0, 0, 0, 4][..],
            &[0, 0, 0, 8, 2, 0, 0, 0],
            &[0, 0, 0, 12, 2, 1, 0, 0, 0xff, 0xff, 0xff, 0xff],
            &[0xff, 0, 0, 0],
        ] {
            let (client, mut peer) = tokio::io::duplex(1024);
            peer.write_all(bytes).await?;
            drop(peer);
            let mut wire = Wire::new(client);
            let outcome = read_frame(&mut wire).await;
            assert!(
                matches!(outcome, Err(AmqpError::Protocol(_) | AmqpError::Eof)),
                "{bytes:?}: {outcome:?}"
            );
        }
        Ok(())
    }
}
