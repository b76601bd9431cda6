//! TLS client configurations of the simulated devices (rustls with the ring provider only).
//!
//! Every device that authenticates with a certificate gets its own [`rustls::ClientConfig`]
//! carrying its key and certificate; all of them share one root store (the CA of the server
//! certificate, `--ca`). Session resumption is off, so every connection is a full handshake with
//! the client certificate, which is what the gateway's X.509 path must see.

use std::path::Path;
use std::sync::Arc;

use rustls::client::Resumption;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject as _;

use crate::PerfError;
use crate::pki::DeviceCert;

/// The CA certificates in the PEM file `ca_file`, the roots the gateway's certificate must chain to.
pub fn roots(ca_file: Option<&Path>) -> Result<Arc<rustls::RootCertStore>, PerfError> {
    let Some(path) = ca_file else {
        return Err(PerfError::Config(
            "TLS (https://, mqtts://, amqps://) needs --ca FILE: the PEM CA that signed the server's \
             certificate (a Ferry's own: DATA_DIR/tls/server-cert.pem)"
                .to_owned(),
        ));
    };
    let bad = |e: &dyn std::fmt::Display| PerfError::Config(format!("{}: {e}", path.display()));
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(path).map_err(|e| bad(&e))? {
        roots.add(cert.map_err(|e| bad(&e))?).map_err(|e| bad(&e))?;
    }
    if roots.is_empty() {
        return Err(bad(&"no certificate in the file"));
    }
    Ok(Arc::new(roots))
}

/// A client configuration (without a client certificate) trusting the CA certificates in
/// `ca_file`.
pub fn anonymous_config(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, PerfError> {
    client_config(&roots(ca_file)?, None)
}

/// A client configuration trusting `roots`, presenting `identity` when given, without session
/// resumption.
pub fn client_config(
    roots: &Arc<rustls::RootCertStore>,
    identity: Option<&DeviceCert>,
) -> Result<Arc<rustls::ClientConfig>, PerfError> {
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| PerfError::Config(format!("TLS: {e}")))?
    .with_root_certificates(roots.clone());
    let mut config = match identity {
        Some(device) => builder
            .with_client_auth_cert(vec![device.cert.clone()], device.key.clone_key())
            .map_err(|e| PerfError::Config(format!("client certificate: {e}")))?,
        None => builder.with_no_client_auth(),
    };
    config.resumption = Resumption::disabled();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roots_need_a_file_with_certificates() -> Result<(), Box<dyn std::error::Error>> {
        assert!(matches!(roots(None), Err(PerfError::Config(_))));
        let dir = tempfile::tempdir()?;
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "")?;
        assert!(matches!(roots(Some(&empty)), Err(PerfError::Config(_))));

        let pki = crate::pki::Pki::open(&dir.path().join("pki"))?;
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, pki.ca_pem())?;
        let roots = roots(Some(&ca))?;
        assert_eq!(roots.len(), 1);
        let device = pki.device("perf-00000")?;
        let config = client_config(&roots, Some(&device))?;
        assert!(config.client_auth_cert_resolver.has_certs());
        assert!(
            !client_config(&roots, None)?
                .client_auth_cert_resolver
                .has_certs()
        );
        Ok(())
    }
}
