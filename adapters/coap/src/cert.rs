//! The DTLS server certificate: webrtc-dtls signs only with EC (or Ed25519) keys, so an RSA
//! server key configured for the TLS listeners cannot serve DTLS. [`DtlsCertificate`] uses the
//! configured certificate when its key is ECDSA P-256, and otherwise creates (once) a self-signed
//! ECDSA P-256 certificate for `localhost` under `DATA_DIR/tls/` and reuses it.
//!
//! Only the certificate cipher suites (ECDHE_ECDSA, i.e. X.509 device authentication) use it;
//! PSK handshakes never do.

use std::path::Path;

use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivatePkcs8KeyDer};
use webrtc_dtls::crypto::{Certificate, CryptoPrivateKey, CryptoPrivateKeyKind};

use crate::error::CoapError;

/// File names of the generated certificate under `DATA_DIR/tls/`.
const CERT_FILE: &str = "coap-ec-cert.pem";
const KEY_FILE: &str = "coap-ec-key.pem";

/// An ECDSA P-256 certificate chain and key, as webrtc-dtls needs them.
#[derive(Clone)]
pub struct DtlsCertificate {
    certificate: Certificate,
    /// Where the certificate came from (a file name), for logs.
    pub source: String,
}

impl std::fmt::Debug for DtlsCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DtlsCertificate")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

fn fail(what: impl std::fmt::Display) -> CoapError {
    CoapError::Certificate(what.to_string())
}

/// Reads a chain and a PKCS#8 ECDSA P-256 key; `Ok(None)` if the key is of another kind.
fn load(cert: &Path, key: &Path) -> Result<Option<DtlsCertificate>, CoapError> {
    let Ok(pkcs8) = PrivatePkcs8KeyDer::from_pem_file(key) else {
        return Ok(None);
    };
    let Some(private_key) = ec_key(&pkcs8) else {
        return Ok(None);
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| fail(format!("cannot read {}: {e}", cert.display())))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail(format!("{}: {e}", cert.display())))?;
    DtlsCertificate::new(chain, private_key, cert.display().to_string()).map(Some)
}

/// The key in webrtc-dtls's form, if it is ECDSA P-256.
fn ec_key(pkcs8: &PrivatePkcs8KeyDer<'_>) -> Option<CryptoPrivateKey> {
    let der = pkcs8.secret_pkcs8_der().to_vec();
    let pair =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &der, &SystemRandom::new())
            .ok()?;
    Some(CryptoPrivateKey {
        kind: CryptoPrivateKeyKind::Ecdsa256(pair),
        serialized_der: der,
    })
}

fn create(dir: &Path) -> Result<(), CoapError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| fail(format!("cannot create {}: {e}", dir.display())))?;
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(fail)?;
    let names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    let cert = rcgen::CertificateParams::new(names)
        .and_then(|params| params.self_signed(&key))
        .map_err(fail)?;
    let key_path = dir.join(KEY_FILE);
    write_private(&key_path, key.serialize_pem().as_bytes())
        .map_err(|e| fail(format!("cannot write {}: {e}", key_path.display())))?;
    let cert_path = dir.join(CERT_FILE);
    std::fs::write(&cert_path, cert.pem())
        .map_err(|e| fail(format!("cannot write {}: {e}", cert_path.display())))?;
    tracing::info!(cert = %cert_path.display(), "created a self-signed ECDSA certificate for DTLS");
    Ok(())
}

#[cfg(unix)]
fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?
        .write_all(contents)
}

#[cfg(not(unix))]
fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, contents)
}

impl DtlsCertificate {
    fn new(
        chain: Vec<CertificateDer<'static>>,
        private_key: CryptoPrivateKey,
        source: String,
    ) -> Result<Self, CoapError> {
        if chain.is_empty() {
            return Err(fail(format!("{source} holds no certificate")));
        }
        Ok(Self {
            certificate: Certificate {
                certificate: chain,
                private_key,
            },
            source,
        })
    }

    /// A chain (PEM, leaf first) and its PKCS#8 PEM ECDSA P-256 key, e.g. a DTLS client's
    /// certificate in tests and load generators.
    pub fn from_pem(chain_pem: &str, key_pem: &str) -> Result<Self, CoapError> {
        let pkcs8 = PrivatePkcs8KeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|e| fail(format!("key: {e}")))?;
        let private_key =
            ec_key(&pkcs8).ok_or_else(|| fail("the key is not an ECDSA P-256 key"))?;
        let chain = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| fail(format!("certificate: {e}")))?;
        Self::new(chain, private_key, "PEM".to_owned())
    }

    /// The configured certificate (`cert`, `key`) if its key is ECDSA P-256 in PKCS#8, else the
    /// generated one under `data_dir/tls/` (created on first use).
    pub fn load_or_create(
        configured: Option<(&Path, &Path)>,
        data_dir: &Path,
    ) -> Result<Self, CoapError> {
        if let Some((cert, key)) = configured {
            if let Some(loaded) = load(cert, key)? {
                return Ok(loaded);
            }
            tracing::info!(key = %key.display(), "the server key is not ECDSA P-256; DTLS uses its own certificate");
        }
        let dir = data_dir.join("tls");
        let (cert, key) = (dir.join(CERT_FILE), dir.join(KEY_FILE));
        if !(cert.exists() && key.exists()) {
            create(&dir)?;
        }
        load(&cert, &key)?
            .ok_or_else(|| fail(format!("{} is not an ECDSA P-256 key", key.display())))
    }

    /// The certificate and key in webrtc-dtls's form.
    pub fn dtls_certificate(&self) -> &Certificate {
        &self.certificate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_an_ec_certificate_once_and_uses_only_ec_keys()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let first = DtlsCertificate::load_or_create(None, dir.path())?;
        let again = DtlsCertificate::load_or_create(None, dir.path())?;
        assert_eq!(first.dtls_certificate(), again.dtls_certificate());
        assert!(matches!(
            first.dtls_certificate().private_key.kind,
            CryptoPrivateKeyKind::Ecdsa256(_)
        ));
        // A configured key of another kind (here Ed25519) is not used; the generated EC
        // certificate is.
        let other = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)?;
        let (c, k) = (dir.path().join("ed.pem"), dir.path().join("ed-key.pem"));
        let cert = rcgen::CertificateParams::new(vec!["x".to_owned()])?.self_signed(&other)?;
        std::fs::write(&c, cert.pem())?;
        std::fs::write(&k, other.serialize_pem())?;
        let used = DtlsCertificate::load_or_create(Some((&c, &k)), dir.path())?;
        assert_eq!(used.dtls_certificate(), first.dtls_certificate());
        // A configured EC key is used as is.
        let ec = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let (c, k) = (dir.path().join("ec.pem"), dir.path().join("ec-key.pem"));
        let cert = rcgen::CertificateParams::new(vec!["x".to_owned()])?.self_signed(&ec)?;
        std::fs::write(&c, cert.pem())?;
        std::fs::write(&k, ec.serialize_pem())?;
        let used = DtlsCertificate::load_or_create(Some((&c, &k)), dir.path())?;
        assert_eq!(used.source, c.display().to_string());
        // The same from PEM text; other keys are refused.
        let pem = DtlsCertificate::from_pem(&cert.pem(), &ec.serialize_pem())?;
        assert_eq!(pem.dtls_certificate(), used.dtls_certificate());
        assert!(DtlsCertificate::from_pem(&cert.pem(), &other.serialize_pem()).is_err());
        Ok(())
    }
}
