//! The SASL exchange, run by the adapter itself on the raw (TCP or TLS) stream.
//!
//! fe2o3-amqp's `SaslAcceptor` is synchronous: checking a password there would block a runtime
//! thread on the registry and on bcrypt. So the adapter speaks the few SASL frames itself (AMQP
//! 1.0 part 5.3): it answers the SASL protocol header, offers its mechanisms, reads `sasl-init`,
//! and returns the credentials; the caller authenticates asynchronously through adapter-core and
//! then sends the outcome with [`send_outcome`]. After an `ok` outcome the client sends the plain
//! AMQP header, which fe2o3's connection acceptor reads as if no SASL layer existed. Frames are
//! read exactly (length prefix first), so no byte of the AMQP layer is consumed here.
//!
//! Mechanisms: EXTERNAL (the TLS client certificate; offered first, and only when the TLS
//! handshake yielded a client chain), PLAIN (`authcid` = `auth-id@tenant`) and, when the adapter
//! does not require authentication, ANONYMOUS. EXTERNAL carries no credentials of its own: the
//! caller authenticates the chain it took from the handshake. Its optional initial response (an
//! authorization identity, RFC 4422 appendix A) is ignored, as Hono does.

use bytes::{BufMut, BytesMut};
use fe2o3_amqp::frames::sasl::{Frame, FrameCodec};
use fe2o3_amqp::types::primitives::{Array, Symbol};
use fe2o3_amqp::types::sasl::{SaslCode, SaslMechanisms, SaslOutcome};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::codec::{Decoder, Encoder};

/// `AMQP` + protocol id 3 (SASL) + version 1.0.0.
pub(crate) const SASL_HEADER: [u8; 8] = *b"AMQP\x03\x01\x00\x00";
/// The largest SASL frame accepted from a client: PLAIN needs a few hundred bytes.
const MAX_FRAME: u32 = 8 * 1024;
/// The smallest legal frame: size and frame header.
const MIN_FRAME: u32 = 8;

const EXTERNAL: &str = "EXTERNAL";
const PLAIN: &str = "PLAIN";
const ANONYMOUS: &str = "ANONYMOUS";

/// What a client presented in `sasl-init`. Passwords are never logged.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum Credentials {
    /// SASL PLAIN.
    Plain {
        /// `authcid`: `auth-id@tenant`.
        username: String,
        /// The password.
        password: String,
    },
    /// SASL EXTERNAL: the client certificate of the TLS handshake (only offered when there is
    /// one).
    External,
    /// SASL ANONYMOUS (only offered when authentication is not required).
    Anonymous,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Plain { username, .. } => f
                .debug_struct("Plain")
                .field("username", username)
                .finish_non_exhaustive(),
            Credentials::External => f.write_str("External"),
            Credentials::Anonymous => f.write_str("Anonymous"),
        }
    }
}

/// The mechanisms offered on one connection.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Mechanisms {
    /// Offer EXTERNAL (the client presented a certificate in the TLS handshake).
    pub(crate) external: bool,
    /// Offer ANONYMOUS (authentication not required).
    pub(crate) anonymous: bool,
}

impl Mechanisms {
    /// In order of preference: EXTERNAL, PLAIN, ANONYMOUS.
    fn offered(self) -> Vec<&'static str> {
        let mut offered = Vec::with_capacity(3);
        if self.external {
            offered.push(EXTERNAL);
        }
        offered.push(PLAIN);
        if self.anonymous {
            offered.push(ANONYMOUS);
        }
        offered
    }
}

/// Why the SASL layer failed before an outcome could be decided.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SaslError {
    /// Reading or writing failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The client did not start with the SASL protocol header.
    #[error("expected the SASL protocol header, got {0:?}")]
    Header([u8; 8]),
    /// The client broke the SASL framing or sent a frame out of order.
    #[error("SASL protocol violation: {0}")]
    Protocol(&'static str),
    /// The client chose a mechanism that was not offered, or sent malformed credentials.
    #[error("SASL mechanism refused: {0}")]
    Mechanism(String),
}

impl SaslError {
    /// Whether the client should get an `auth` outcome before the connection closes.
    pub(crate) fn answers_with_outcome(&self) -> bool {
        matches!(self, SaslError::Mechanism(_))
    }
}

/// Exchanges protocol headers, offers `mechanisms` and reads the client's `sasl-init`.
pub(crate) async fn negotiate<S>(
    stream: &mut S,
    mechanisms: Mechanisms,
) -> Result<Credentials, SaslError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut header = [0u8; 8];
    stream.read_exact(&mut header).await?;
    // Whatever the client asked for, the answer names the one layer we accept next (AMQP 1.0
    // part 2.2: a server that does not support the requested protocol answers with its own
    // header and closes).
    stream.write_all(&SASL_HEADER).await?;
    if header != SASL_HEADER {
        stream.flush().await?;
        return Err(SaslError::Header(header));
    }
    let offered = mechanisms.offered();
    let symbols: Vec<Symbol> = offered.iter().map(|m| Symbol::from(*m)).collect();
    let frame = Frame::Mechanisms(SaslMechanisms {
        sasl_server_mechanisms: Array::from(symbols),
    });
    write_frame(stream, frame).await?;
    let init = match read_frame(stream).await? {
        Frame::Init(init) => init,
        _ => return Err(SaslError::Protocol("expected sasl-init")),
    };
    let mechanism = init.mechanism.as_str();
    if !offered.contains(&mechanism) {
        return Err(SaslError::Mechanism(format!("{mechanism} is not offered")));
    }
    match mechanism {
        PLAIN => {
            let response = init
                .initial_response
                .map(|r| r.into_vec())
                .unwrap_or_default();
            parse_plain(&response)
        }
        EXTERNAL => Ok(Credentials::External),
        _ => Ok(Credentials::Anonymous),
    }
}

/// Sends the `sasl-outcome`.
pub(crate) async fn send_outcome<S>(stream: &mut S, code: SaslCode) -> Result<(), SaslError>
where
    S: AsyncWrite + Unpin,
{
    let frame = Frame::Outcome(SaslOutcome {
        code,
        additional_data: None,
    });
    write_frame(stream, frame).await
}

/// Splits PLAIN's `authzid NUL authcid NUL passwd` (RFC 4616). The authorization identity is
/// ignored, as Hono does.
fn parse_plain(response: &[u8]) -> Result<Credentials, SaslError> {
    let mut parts = response.split(|b| *b == 0);
    let (Some(_authzid), Some(authcid), Some(password), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(SaslError::Mechanism("malformed PLAIN response".to_owned()));
    };
    let text = |b: &[u8]| {
        String::from_utf8(b.to_vec())
            .map_err(|_| SaslError::Mechanism("PLAIN response is not UTF-8".to_owned()))
    };
    Ok(Credentials::Plain {
        username: text(authcid)?,
        password: text(password)?,
    })
}

async fn write_frame<S: AsyncWrite + Unpin>(stream: &mut S, frame: Frame) -> Result<(), SaslError> {
    let mut body = BytesMut::new();
    FrameCodec {}
        .encode(frame, &mut body)
        .map_err(|_| SaslError::Protocol("cannot encode a SASL frame"))?;
    let size =
        u32::try_from(body.len() + 4).map_err(|_| SaslError::Protocol("SASL frame too large"))?;
    let mut out = BytesMut::with_capacity(body.len() + 4);
    out.put_u32(size);
    out.extend_from_slice(&body);
    stream.write_all(&out).await?;
    stream.flush().await?;
    Ok(())
}

async fn read_frame<S: AsyncRead + Unpin>(stream: &mut S) -> Result<Frame, SaslError> {
    let size = stream.read_u32().await?;
    if !(MIN_FRAME..=MAX_FRAME).contains(&size) {
        return Err(SaslError::Protocol("SASL frame size out of range"));
    }
    // MIN_FRAME guarantees the four header bytes fe2o3's decoder reads unchecked.
    let mut body = BytesMut::zeroed((size - 4) as usize);
    stream.read_exact(&mut body).await?;
    if ferry_amqp_wire::check_performative(body.get(4..).unwrap_or_default()).is_err() {
        return Err(SaslError::Protocol("malformed SASL frame"));
    }
    let mut codec = FrameCodec {};
    match codec.decode(&mut body) {
        Ok(Some(frame)) => Ok(frame),
        Ok(None) | Err(_) => Err(SaslError::Protocol("malformed SASL frame")),
    }
}

#[cfg(test)]
mod tests {
    use fe2o3_amqp::types::sasl::SaslInit;

    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    #[test]
    fn plain_responses() -> TestResult {
        assert_eq!(
            parse_plain(b"\0dev@t\0pw")?,
            Credentials::Plain {
                username: "dev@t".into(),
                password: "pw".into()
            }
        );
        assert!(parse_plain(b"dev@t\0pw").is_err());
        assert!(parse_plain(b"\0a\0b\0c").is_err());
        assert!(parse_plain(b"\0\xff\0pw").is_err());
        let shown = format!("{:?}", parse_plain(b"\0dev@t\0secret-pw")?);
        assert!(!shown.contains("secret-pw"), "{shown}");
        Ok(())
    }

    #[tokio::test]
    async fn a_sasl_init_claiming_a_gigabyte_is_refused_before_decoding() {
        // sasl-init: mechanism PLAIN, then an initial response whose vbin32 length says 1 GiB.
        let mut frame = vec![0, 0, 0, 0, 2, 1, 0, 0, 0x00, 0x53, 0x41, 0xc0, 13, 2];
        frame.extend_from_slice(&[0xa3, 5]);
        frame.extend_from_slice(b"PLAIN");
        frame.extend_from_slice(&[0xb0, 0x40, 0, 0, 0]);
        let size = frame.len() as u32;
        frame[..4].copy_from_slice(&size.to_be_bytes());
        let read = read_frame(&mut frame.as_slice()).await;
        assert!(
            matches!(read, Err(SaslError::Protocol("malformed SASL frame"))),
            "{read:?}"
        );
    }

    /// Plays the client side of the exchange against [`negotiate`] over an in-memory pipe.
    async fn exchange(
        mechanism: &str,
        response: &[u8],
        mechanisms: Mechanisms,
    ) -> Result<Credentials, SaslError> {
        let (mut client, mut server) = tokio::io::duplex(4096);
        let server = tokio::spawn(async move { negotiate(&mut server, mechanisms).await });
        client.write_all(&SASL_HEADER).await?;
        let mut header = [0u8; 8];
        client.read_exact(&mut header).await?;
        assert_eq!(header, SASL_HEADER);
        let Frame::Mechanisms(offered) = read_frame(&mut client).await? else {
            return Err(SaslError::Protocol("no mechanisms"));
        };
        let names: Vec<String> = offered
            .sasl_server_mechanisms
            .0
            .iter()
            .map(|s| s.0.clone())
            .collect();
        let mut expected = Vec::new();
        if mechanisms.external {
            expected.push(EXTERNAL);
        }
        expected.push(PLAIN);
        if mechanisms.anonymous {
            expected.push(ANONYMOUS);
        }
        assert_eq!(names, expected);
        let init = SaslInit {
            mechanism: Symbol::from(mechanism),
            initial_response: Some(response.to_vec().into()),
            hostname: None,
        };
        write_frame(&mut client, Frame::Init(init)).await?;
        server
            .await
            .map_err(|_| SaslError::Protocol("server task failed"))?
    }

    const fn offer(external: bool, anonymous: bool) -> Mechanisms {
        Mechanisms {
            external,
            anonymous,
        }
    }

    #[tokio::test]
    async fn negotiates_plain_and_anonymous_as_configured() -> TestResult {
        let plain = exchange(PLAIN, b"\0d@t\0pw", offer(false, false)).await?;
        assert!(matches!(plain, Credentials::Plain { ref username, .. } if username == "d@t"));
        assert_eq!(
            exchange(ANONYMOUS, b"", offer(false, true)).await?,
            Credentials::Anonymous
        );
        let refused = exchange(ANONYMOUS, b"", offer(false, false)).await;
        assert!(
            matches!(refused, Err(SaslError::Mechanism(_))),
            "{refused:?}"
        );
        Ok(())
    }

    #[tokio::test]
    async fn external_only_when_a_certificate_was_presented() -> TestResult {
        // Without a client certificate EXTERNAL is neither offered nor accepted.
        let refused = exchange(EXTERNAL, b"", offer(false, true)).await;
        assert!(
            matches!(refused, Err(SaslError::Mechanism(_))),
            "{refused:?}"
        );
        // With one it comes first; an authorization identity in the response is ignored.
        assert_eq!(
            exchange(EXTERNAL, b"", offer(true, false)).await?,
            Credentials::External
        );
        assert_eq!(
            exchange(EXTERNAL, b"someone-else", offer(true, true)).await?,
            Credentials::External
        );
        // PLAIN stays available next to it.
        let plain = exchange(PLAIN, b"\0d@t\0pw", offer(true, false)).await?;
        assert!(matches!(plain, Credentials::Plain { ref username, .. } if username == "d@t"));
        Ok(())
    }

    #[tokio::test]
    async fn refuses_other_headers_and_bad_frames() -> TestResult {
        let (mut client, mut server) = tokio::io::duplex(1024);
        client.write_all(b"AMQP\x00\x01\x00\x00").await?;
        let outcome = negotiate(&mut server, offer(false, true)).await;
        assert!(matches!(outcome, Err(SaslError::Header(_))));
        let mut header = [0u8; 8];
        client.read_exact(&mut header).await?;
        assert_eq!(header, SASL_HEADER);

        let (mut client, mut server) = tokio::io::duplex(1024);
        client.write_all(&SASL_HEADER).await?;
        client.write_all(&[0, 0, 0, 5, 2]).await?;
        let outcome = negotiate(&mut server, offer(false, false)).await;
        assert!(
            matches!(outcome, Err(SaslError::Protocol(_))),
            "{outcome:?}"
        );

        let (mut client, mut server) = tokio::io::duplex(1024);
        client.write_all(&SASL_HEADER).await?;
        client
            .write_all(&[0, 0, 0, 12, 2, 1, 0, 0, 0xff, 0xff, 0xff, 0xff])
            .await?;
        let outcome = negotiate(&mut server, offer(false, false)).await;
        assert!(
            matches!(outcome, Err(SaslError::Protocol(_))),
            "{outcome:?}"
        );
        Ok(())
    }
}
