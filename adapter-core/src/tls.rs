//! TLS for every device-facing listener: a server configuration that asks for a client
//! certificate without requiring one, and the peer identity read after the handshake.
//!
//! The handshake accepts any client chain: rustls still checks the CertificateVerify signature,
//! which proves that the client holds the certificate's private key. Which CA the chain must
//! lead to depends on the tenant, which is known only after a registry lookup, so the chain is
//! validated afterwards by [`crate::Authenticator::authenticate_x509`], before any protocol byte
//! is handled. No root hints are sent (the list would grow with every tenant), so clients offer
//! whatever certificate they have; password clients simply send none and share the port.
//!
//! After the handshake a connection may leave rustls: [`accept`] hands a TLS 1.3 connection to
//! our own record layer ([`RecordStream`], `record_protection.rs`) on the traffic keys rustls
//! extracts, so that an idle connection holds two keys instead of a whole rustls connection.

use std::sync::Arc;

mod accept;
mod record_protection;
mod record_stream;
mod whole_records;

pub use accept::{Established, accept};
pub use record_protection::RecordError;
pub use record_stream::RecordStream;
pub use whole_records::WholeRecords;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    DigitallySignedStruct, DistinguishedName, ServerConfig, ServerConnection, SignatureScheme,
};

/// Offers client authentication, does not require it, and accepts any chain at handshake time
/// (the chain is validated per tenant after the handshake); handshake signatures are verified
/// with the given provider's algorithms.
#[derive(Debug)]
pub struct AnyClientCertificate {
    algorithms: WebPkiSupportedAlgorithms,
}

impl AnyClientCertificate {
    /// A verifier using `provider`'s signature verification algorithms.
    pub fn new(provider: &CryptoProvider) -> Self {
        Self {
            algorithms: provider.signature_verification_algorithms,
        }
    }
}

impl ClientCertVerifier for AnyClientCertificate {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// A server configuration for a device-facing listener: `provider` for everything, the server's
/// `chain` and `key`, safe default protocol versions, and [`AnyClientCertificate`]. The caller
/// sets ALPN.
pub fn server_config(
    provider: Arc<CryptoProvider>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<ServerConfig, rustls::Error> {
    let verifier = Arc::new(AnyClientCertificate::new(&provider));
    ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
}

/// What the TLS handshake tells about a client: its certificate chain (leaf first) and the host
/// name it asked for (SNI).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsPeer {
    /// The client's certificate chain; empty when it sent none.
    pub chain: Vec<CertificateDer<'static>>,
    /// The SNI host name, if the client sent one.
    pub sni: Option<String>,
}

impl TlsPeer {
    /// Reads the peer identity of an established server connection.
    pub fn from_connection(connection: &ServerConnection) -> Self {
        Self {
            chain: connection
                .peer_certificates()
                .map(|c| c.iter().map(|c| c.clone().into_owned()).collect())
                .unwrap_or_default(),
            sni: connection.server_name().map(str::to_owned),
        }
    }

    /// Whether the client presented a certificate.
    pub fn has_certificate(&self) -> bool {
        !self.chain.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use ferry_registry_client::test_pki::TestCa;
    use rustls::pki_types::{PrivatePkcs8KeyDer, ServerName};
    use rustls::{ClientConfig, RootCertStore};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::{TlsAcceptor, TlsConnector};

    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

    /// Always presents one certificate.
    #[derive(Debug)]
    struct Present(Arc<rustls::sign::CertifiedKey>);

    impl rustls::client::ResolvesClientCert for Present {
        fn resolve(
            &self,
            _root_hint_subjects: &[&[u8]],
            _sigschemes: &[SignatureScheme],
        ) -> Option<Arc<rustls::sign::CertifiedKey>> {
            Some(Arc::clone(&self.0))
        }

        fn has_certs(&self) -> bool {
            true
        }
    }

    fn provider() -> Arc<CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    /// Runs one handshake over an in-memory pipe and returns what the server learnt.
    async fn handshake(
        client_identity: Option<(Vec<CertificateDer<'static>>, String)>,
    ) -> Result<TlsPeer, Box<dyn std::error::Error + Send + Sync>> {
        let rcgen::CertifiedKey { cert, signing_key } =
            rcgen::generate_simple_self_signed(vec!["t1.ferry.test".to_owned()])?;
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(signing_key.serialize_der()));
        let server = server_config(provider(), vec![cert.der().clone()], key)?;
        let mut roots = RootCertStore::empty();
        roots.add(cert.der().clone())?;
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots);
        let client = match client_identity {
            Some((chain, key_pem)) => {
                use rustls::pki_types::pem::PemObject;
                let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())?;
                let key = provider().key_provider.load_private_key(key)?;
                // `CertifiedKey::new` does not check that key and certificate match, so a test
                // can present someone else's certificate.
                let certified = Arc::new(rustls::sign::CertifiedKey::new(chain, key));
                builder.with_client_cert_resolver(Arc::new(Present(certified)))
            }
            None => builder.with_no_client_auth(),
        };
        let (a, b) = tokio::io::duplex(64 * 1024);
        let acceptor = TlsAcceptor::from(Arc::new(server));
        let connector = TlsConnector::from(Arc::new(client));
        let server_side = tokio::spawn(async move {
            let mut stream = acceptor.accept(a).await?;
            let peer = TlsPeer::from_connection(stream.get_ref().1);
            let mut byte = [0u8; 1];
            stream.read_exact(&mut byte).await?;
            Ok::<_, std::io::Error>(peer)
        });
        let mut stream = connector
            .connect(ServerName::try_from("t1.ferry.test")?, b)
            .await?;
        stream.write_all(b"x").await?;
        stream.flush().await?;
        Ok(server_side.await??)
    }

    #[tokio::test]
    async fn a_client_certificate_is_offered_but_not_required() -> TestResult {
        let anonymous = handshake(None).await?;
        assert!(!anonymous.has_certificate());
        assert_eq!(anonymous.sni.as_deref(), Some("t1.ferry.test"));

        // Any chain is accepted at handshake time, even from a CA nobody trusts.
        let intermediate = TestCa::root("untrusted root")?.intermediate("issuing")?;
        let device = intermediate.device("dev-1")?;
        let peer = handshake(Some((device.chain.clone(), device.key_pem.clone()))).await?;
        assert_eq!(peer.chain, device.chain);
        Ok(())
    }

    #[tokio::test]
    async fn a_client_without_the_private_key_fails_the_handshake() -> TestResult {
        let ca = TestCa::root("ca")?;
        let device = ca.device("dev-1")?;
        let other_key = ca.device("dev-2")?.key_pem;
        // rustls checks the CertificateVerify signature: proof of key possession.
        let outcome = handshake(Some((device.chain.clone(), other_key))).await;
        assert!(outcome.is_err(), "{outcome:?}");
        // The same certificate with its own key passes.
        assert!(
            handshake(Some((device.chain, device.key_pem)))
                .await
                .is_ok()
        );
        Ok(())
    }
}
