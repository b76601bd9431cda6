//! The TLS handshake of a device connection, and what serves the connection afterwards: for
//! TLS 1.3 our own [`RecordStream`] on the traffic keys rustls hands over, for anything else
//! (TLS 1.2) rustls itself.
//!
//! Why: an idle rustls connection keeps its handshake-sized buffers, its state and the client's
//! certificate chain, about 14 KB per connection; a [`RecordStream`] keeps two AEAD keys.
//! rustls hands its keys over only if the server configuration has
//! `enable_secret_extraction` set, it has nothing left to send (its NewSessionTickets are
//! flushed by the handshake), and it holds no partial record: [`WholeRecords`] sees to that. A
//! record it has already decrypted is read out first and passed on.

use std::io::{self, Read};

use rustls::ProtocolVersion;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use super::TlsPeer;
use super::record_protection::DirectionKey;
use super::record_stream::RecordStream;
use super::whole_records::WholeRecords;

/// A device connection after its TLS handshake.
// The common variant is kept inline: it is moved once, into the connection's boxed session.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Established<IO> {
    /// TLS 1.3: records protected by [`RecordStream`].
    Records(RecordStream<IO>),
    /// Anything else: rustls keeps serving the connection.
    Rustls(Box<TlsStream<WholeRecords<IO>>>),
}

/// Runs the TLS handshake on `io` and returns the connection's stream and what the handshake
/// told about the client.
pub async fn accept<IO>(acceptor: &TlsAcceptor, io: IO) -> io::Result<(Established<IO>, TlsPeer)>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let extract = acceptor.config().enable_secret_extraction;
    let mut stream = acceptor.accept(WholeRecords::new(io)).await?;
    let connection = stream.get_mut().1;
    let peer = TlsPeer::from_connection(connection);
    let limit = connection
        .negotiated_cipher_suite()
        .and_then(|suite| suite.tls13())
        .map(|suite| suite.common.confidentiality_limit);
    let limit = match limit {
        Some(limit)
            if extract
                && connection.protocol_version() == Some(ProtocolVersion::TLSv1_3)
                && !connection.wants_write() =>
        {
            limit
        }
        _ => return Ok((Established::Rustls(Box::new(stream)), peer)),
    };
    let mut plaintext = Vec::new();
    loop {
        let mut chunk = [0u8; 512];
        match connection.reader().read(&mut chunk) {
            Ok(0) => return Ok((Established::Rustls(Box::new(stream)), peer)),
            Ok(n) => plaintext.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(_) => return Ok((Established::Rustls(Box::new(stream)), peer)),
        }
    }
    let (records, connection) = stream.into_inner();
    let secrets = connection
        .dangerous_extract_secrets()
        .map_err(io::Error::other)?;
    let (io, received) = records.into_parts();
    let rx = DirectionKey::new(secrets.rx.0, &secrets.rx.1, u64::MAX)?;
    let tx = DirectionKey::new(secrets.tx.0, &secrets.tx.1, limit)?;
    let stream = RecordStream::new(io, rx, tx, &plaintext, &received);
    Ok((Established::Records(stream), peer))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
    use rustls::{ClientConfig, RootCertStore, SupportedProtocolVersion};
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
    use tokio_rustls::TlsConnector;
    use tokio_rustls::client::TlsStream as ClientStream;

    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

    fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    /// A connected client and the server's side of one handshake over an in-memory pipe.
    async fn connect(
        versions: &[&'static SupportedProtocolVersion],
        extract: bool,
    ) -> Result<
        (ClientStream<DuplexStream>, Established<DuplexStream>),
        Box<dyn std::error::Error + Send + Sync>,
    > {
        let rcgen::CertifiedKey { cert, signing_key } =
            rcgen::generate_simple_self_signed(vec!["t1.ferry.test".to_owned()])?;
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(signing_key.serialize_der()));
        let mut server = super::super::server_config(provider(), vec![cert.der().clone()], key)?;
        server.enable_secret_extraction = extract;
        let mut roots = RootCertStore::empty();
        roots.add(cert.der().clone())?;
        let client = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(versions)?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let (a, b) = tokio::io::duplex(64 * 1024);
        let acceptor = TlsAcceptor::from(Arc::new(server));
        let server_side = tokio::spawn(async move { accept(&acceptor, a).await });
        let mut client = TlsConnector::from(Arc::new(client))
            .connect(ServerName::try_from("t1.ferry.test")?, b)
            .await?;
        // Sent right behind the client's Finished, as an MQTT client sends its CONNECT: rustls
        // may already have decrypted it when the keys are handed over.
        client.write_all(b"first").await?;
        client.flush().await?;
        let (server, _peer) = server_side.await??;
        Ok((client, server))
    }

    async fn records(
        versions: &[&'static SupportedProtocolVersion],
    ) -> Result<
        (ClientStream<DuplexStream>, RecordStream<DuplexStream>),
        Box<dyn std::error::Error + Send + Sync>,
    > {
        match connect(versions, true).await? {
            (client, Established::Records(server)) => Ok((client, server)),
            (_, Established::Rustls(_)) => Err("TLS 1.3 stayed with rustls".into()),
        }
    }

    #[tokio::test]
    async fn tls13_data_flows_both_ways_on_the_extracted_keys() -> TestResult {
        let (mut client, mut server) = records(&[&rustls::version::TLS13]).await?;
        let mut first = [0u8; 5];
        server.read_exact(&mut first).await?;
        assert_eq!(&first, b"first");
        // More than one record each way.
        let big: Vec<u8> = (0..40_000u32).map(|i| (i % 251) as u8).collect();
        client.write_all(&big).await?;
        client.flush().await?;
        let mut got = vec![0u8; big.len()];
        server.read_exact(&mut got).await?;
        assert_eq!(got, big);
        server.write_all(&big).await?;
        server.flush().await?;
        client.read_exact(&mut got).await?;
        assert_eq!(got, big);
        // Our close_notify: rustls reports a clean end (an error without it).
        server.shutdown().await?;
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).await?;
        assert!(rest.is_empty());
        Ok(())
    }

    #[tokio::test]
    async fn the_peers_close_notify_ends_the_stream() -> TestResult {
        let (mut client, mut server) = records(&[&rustls::version::TLS13]).await?;
        client.shutdown().await?;
        let mut rest = Vec::new();
        server.read_to_end(&mut rest).await?;
        assert_eq!(rest, b"first");
        Ok(())
    }

    #[tokio::test]
    async fn a_bad_tag_is_an_error() -> TestResult {
        let (mut client, mut server) = records(&[&rustls::version::TLS13]).await?;
        let mut first = [0u8; 5];
        server.read_exact(&mut first).await?;
        // An application_data record that was not sealed with the client's key.
        let mut forged = vec![23, 3, 3, 0, 32];
        forged.extend_from_slice(&[0x5a; 32]);
        client.get_mut().0.write_all(&forged).await?;
        let error = server.read(&mut first).await.err().ok_or("no error")?;
        assert_eq!(error.kind(), io::ErrorKind::InvalidData, "{error}");
        Ok(())
    }

    #[tokio::test]
    async fn a_truncated_record_is_an_error() -> TestResult {
        let (mut client, mut server) = records(&[&rustls::version::TLS13]).await?;
        let mut first = [0u8; 5];
        server.read_exact(&mut first).await?;
        client
            .get_mut()
            .0
            .write_all(&[23, 3, 3, 0, 64, 1, 2, 3])
            .await?;
        client.get_mut().0.shutdown().await?;
        let error = server.read(&mut first).await.err().ok_or("no error")?;
        assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof, "{error}");
        Ok(())
    }

    #[tokio::test]
    async fn tls12_and_disabled_extraction_stay_with_rustls() -> TestResult {
        let (mut client, server) = connect(&[&rustls::version::TLS12], true).await?;
        let Established::Rustls(mut server) = server else {
            return Err("TLS 1.2 left rustls".into());
        };
        let mut first = [0u8; 5];
        server.read_exact(&mut first).await?;
        assert_eq!(&first, b"first");
        server.write_all(b"back").await?;
        server.flush().await?;
        let mut back = [0u8; 4];
        client.read_exact(&mut back).await?;
        assert_eq!(&back, b"back");
        let (_, server) = connect(&[&rustls::version::TLS13], false).await?;
        assert!(matches!(server, Established::Rustls(_)));
        Ok(())
    }
}
