//! `ferry pki`: a demo CA and device certificates in files, to try X.509 authentication and
//! auto-provisioning without other tools.
//!
//! Writes `ca-cert.pem`, `ca-key.pem` (mode 0600), `device-N-cert.pem` / `device-N-key.pem`,
//! `tenant.json` (a tenant body trusting the CA with auto-provisioning, device ids from the CN)
//! and `devices.csv` (`device-id,certificate`, for `ferry provision`). Certificates come from
//! the registry's issuing code ([`ferry_registry::pki`]): ECDSA P-256, client-auth usage.

use std::path::{Path, PathBuf};

use anyhow::Context;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ferry_registry::pki;
use serde_json::json;

/// What `ferry pki` wrote.
#[derive(Debug)]
pub struct Written {
    /// The CA certificate.
    pub ca_cert: PathBuf,
    /// Certificate and key file of each device.
    pub devices: Vec<(PathBuf, PathBuf)>,
}

fn pem(label: &str, der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .filter_map(|c| std::str::from_utf8(c).ok())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

fn write(path: &Path, contents: &str, private: bool) -> anyhow::Result<()> {
    if private {
        crate::tls::write_private(path, contents.as_bytes())
    } else {
        std::fs::write(path, contents).with_context(|| format!("cannot write {}", path.display()))
    }
}

/// Creates a CA named `ca_name` and `devices` device certificates (`CN=<prefix>-N`) in `dir`.
pub fn run(dir: &Path, ca_name: &str, prefix: &str, devices: u32) -> anyhow::Result<Written> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let (ca_cert, ca_key) = pki::generate_ca(ca_name, 3650).context("cannot create the CA")?;
    let ca_path = dir.join("ca-cert.pem");
    write(&ca_path, &pem("CERTIFICATE", &ca_cert), false)?;
    write(&dir.join("ca-key.pem"), &pem("PRIVATE KEY", &ca_key), true)?;
    let tenant = json!({"trusted-ca": [{
        "cert": STANDARD.encode(&ca_cert),
        "auto-provisioning-enabled": true,
        "auto-provisioning-device-id-template": "{{subject-cn}}",
    }]});
    write(&dir.join("tenant.json"), &format!("{tenant:#}\n"), false)?;
    let mut csv = String::from("device-id,certificate\n");
    let mut written = Vec::new();
    for n in 1..=devices {
        let name = format!("{prefix}-{n}");
        let (cert, key) = pki::issue_generated(&ca_cert, &ca_key, &name, 365)
            .with_context(|| format!("cannot issue {name}"))?;
        let cert_pem = pem("CERTIFICATE", &cert);
        let cert_path = dir.join(format!("{name}-cert.pem"));
        let key_path = dir.join(format!("{name}-key.pem"));
        write(&cert_path, &cert_pem, false)?;
        write(&key_path, &key, true)?;
        csv.push_str(&format!("{name},\"{}\"\n", cert_pem.trim_end()));
        written.push((cert_path, key_path));
    }
    write(&dir.join("devices.csv"), &csv, false)?;
    Ok(Written {
        ca_cert: ca_path,
        devices: written,
    })
}

#[cfg(test)]
mod tests {
    use ferry_registry_client::TrustedCa;
    use ferry_registry_client::trust::{self, RING_ALGORITHMS};
    use ferry_registry_client::x509::certificate_info;
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;

    use super::*;

    #[test]
    fn device_certificates_chain_to_the_written_ca() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let written = run(dir.path(), "Demo CA", "demo", 2)?;
        assert_eq!(written.devices.len(), 2);
        let ca = CertificateDer::from_pem_file(&written.ca_cert)?;
        let info = certificate_info(&ca)?;
        let entry: TrustedCa = serde_json::from_value(json!({
            "subject-dn": info.subject_dn,
            "public-key": STANDARD.encode(&info.spki_der),
        }))?;
        for (cert, key) in &written.devices {
            let chain = [CertificateDer::from_pem_file(cert)?];
            let names = trust::chain_names(&chain)?;
            let cas = [entry.clone()];
            let anchors = trust::anchors(&names, &cas);
            trust::verify_client_chain(&chain, &anchors, chrono::Utc::now(), RING_ALGORITHMS)?;
            assert!(std::fs::read_to_string(key)?.contains("PRIVATE KEY"));
        }
        let csv = std::fs::read_to_string(dir.path().join("devices.csv"))?;
        assert!(csv.starts_with("device-id,certificate\ndemo-1,\"-----BEGIN CERTIFICATE-----"));
        Ok(())
    }
}
