//! The server certificate of Ferry's TLS listeners: loaded from PEM files, or created once as a
//! self-signed certificate for `localhost` under the data directory. The configuration comes
//! from [`ferry_adapter_core::tls::server_config`]: devices may authenticate with a client
//! certificate on the same port as password clients.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::TlsConfig;

/// The one crypto provider of the product (ring), passed explicitly to every TLS config.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Builds the rustls server configuration for the device-facing TLS listeners.
pub fn server_config(config: &TlsConfig, data_dir: &Path) -> anyhow::Result<Arc<ServerConfig>> {
    let (cert_path, key_path) = match (&config.cert, &config.key) {
        (Some(cert), Some(key)) => (cert.clone(), key.clone()),
        (None, None) => self_signed(data_dir)?,
        _ => bail!("tls.cert and tls.key must be given together"),
    };
    let certs = CertificateDer::pem_file_iter(&cert_path)
        .with_context(|| format!("cannot read certificate {}", cert_path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{} holds no valid PEM certificate", cert_path.display()))?;
    if certs.is_empty() {
        bail!("{} holds no certificate", cert_path.display());
    }
    let key = PrivateKeyDer::from_pem_file(&key_path)
        .with_context(|| format!("cannot read private key {}", key_path.display()))?;
    // Client certificates are asked for but not required; adapter-core validates them per tenant.
    let mut server = ferry_adapter_core::tls::server_config(provider(), certs, key)
        .context("the server certificate does not match its key")?;
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(server))
}

/// Returns the paths of the self-signed certificate under `data_dir/tls`, creating it if needed.
fn self_signed(data_dir: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    let dir = data_dir.join("tls");
    let cert_path = dir.join("server-cert.pem");
    let key_path = dir.join("server-key.pem");
    if cert_path.exists() && key_path.exists() {
        return Ok((cert_path, key_path));
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    let certified =
        rcgen::generate_simple_self_signed(names).context("cannot create a certificate")?;
    std::fs::write(&cert_path, certified.cert.pem())
        .with_context(|| format!("cannot write {}", cert_path.display()))?;
    write_private(&key_path, certified.signing_key.serialize_pem().as_bytes())?;
    tracing::info!(cert = %cert_path.display(), "created a self-signed server certificate for localhost");
    Ok((cert_path, key_path))
}

/// Writes a file only its owner can read.
#[cfg(unix)]
pub(crate) fn write_private(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(contents)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Writes a file (no permission bits on this platform).
#[cfg(not(unix))]
pub(crate) fn write_private(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    std::fs::write(path, contents).with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_a_certificate_once_and_reuses_it() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        server_config(&TlsConfig::default(), dir.path())?;
        let first = std::fs::read(dir.path().join("tls/server-cert.pem"))?;
        server_config(&TlsConfig::default(), dir.path())?;
        let second = std::fs::read(dir.path().join("tls/server-cert.pem"))?;
        assert_eq!(first, second);
        Ok(())
    }

    #[test]
    fn refuses_a_certificate_without_key() {
        let config = TlsConfig {
            cert: Some(PathBuf::from("/nonexistent.pem")),
            key: None,
        };
        assert!(server_config(&config, Path::new("/tmp")).is_err());
    }
}
