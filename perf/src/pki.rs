//! The harness's own test PKI: one CA (ECDSA P-256) and device certificates, made with rcgen.
//!
//! The CA and the certificates of the numbered devices are cached in a directory (`--pki-dir`),
//! so repeated runs register the same certificates and skip key generation:
//!
//! ```text
//! PKI_DIR/ca-cert.pem  ca-key.pem          the CA (the tenant's trusted CA)
//! PKI_DIR/devices/perf-00000.pem ...      each device's key and certificate in one file
//! ```
//!
//! A cached device file whose certificate was not issued by the current CA (the CA was made anew)
//! is replaced. Certificates for `provision-storm` are never cached: they must be unknown to the
//! registry, so each run makes fresh ones ([`Pki::fresh`]).

use std::path::{Path, PathBuf};

use base64::Engine as _;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SerialNumber, date_time_ymd,
};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use ferry_registry_client::x509::{issuer_dn_rfc2253, subject_dn_rfc2253};

/// The PKI could not be read, made or written.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// A file holds no usable key or certificate.
    #[error("{path}: {reason}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// rcgen could not make a key or certificate.
    #[error("certificate generation: {0}")]
    Generate(#[from] rcgen::Error),
    /// A generated certificate has no printable subject (cannot happen with our subjects).
    #[error("certificate subject: {0}")]
    Subject(#[from] ferry_registry_client::x509::X509Error),
}

/// A device's certificate and key.
#[derive(Debug)]
pub struct DeviceCert {
    /// The certificate, DER.
    pub cert: CertificateDer<'static>,
    /// Its private key (PKCS#8).
    pub key: PrivateKeyDer<'static>,
    /// The subject DN in RFC 2253 form: the `x509-cert` credential's auth-id.
    pub subject_dn: String,
}

impl DeviceCert {
    /// The certificate as PEM (for a bulk file's `certificate` column).
    pub fn cert_pem(&self) -> String {
        pem("CERTIFICATE", &self.cert)
    }
}

/// The CA and its cache directory.
pub struct Pki {
    dir: PathBuf,
    ca_cert: CertificateDer<'static>,
    ca_dn: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pki")
            .field("dir", &self.dir)
            .field("ca", &self.ca_dn)
            .finish_non_exhaustive()
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PkiError + '_ {
    move |source| PkiError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn malformed(path: &Path, reason: impl ToString) -> PkiError {
    PkiError::Malformed {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

fn pem(label: &str, der: &[u8]) -> String {
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// A random serial number (positive, 16 bytes).
fn serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] &= 0x7f;
    SerialNumber::from_slice(&bytes)
}

fn name(attributes: &[(DnType, &str)]) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    for (t, v) in attributes {
        dn.push(t.clone(), *v);
    }
    dn
}

/// Writes a file only its owner can read (it may hold a private key).
fn write_private(path: &Path, contents: &str) -> Result<(), PkiError> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(io(path))?;
    file.write_all(contents.as_bytes()).map_err(io(path))
}

impl Pki {
    /// Opens the PKI in `dir`, making the directory and a new CA if there is none.
    pub fn open(dir: &Path) -> Result<Self, PkiError> {
        let devices = dir.join("devices");
        std::fs::create_dir_all(&devices).map_err(io(&devices))?;
        let cert_path = dir.join("ca-cert.pem");
        let key_path = dir.join("ca-key.pem");
        if !(cert_path.exists() && key_path.exists()) {
            let mut params = CertificateParams::new(Vec::<String>::new())?;
            let cn = format!("ferry-perf CA {:08x}", rand::random::<u32>());
            params.distinguished_name = name(&[
                (DnType::OrganizationName, "Ferry Perf"),
                (DnType::CommonName, &cn),
            ]);
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            params.serial_number = Some(serial());
            params.not_before = date_time_ymd(2020, 1, 1);
            params.not_after = date_time_ymd(2090, 1, 1);
            let key = KeyPair::generate()?;
            let cert = params.self_signed(&key)?;
            write_private(&key_path, &key.serialize_pem())?;
            std::fs::write(&cert_path, cert.pem()).map_err(io(&cert_path))?;
        }
        let key_pem = std::fs::read_to_string(&key_path).map_err(io(&key_path))?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| malformed(&key_path, e))?;
        let ca_cert =
            CertificateDer::from_pem_file(&cert_path).map_err(|e| malformed(&cert_path, e))?;
        let issuer =
            Issuer::from_ca_cert_der(&ca_cert, key).map_err(|e| malformed(&cert_path, e))?;
        let ca_dn = subject_dn_rfc2253(&ca_cert).map_err(|e| malformed(&cert_path, e))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            ca_cert,
            ca_dn,
            issuer,
        })
    }

    /// The CA certificate as Base64 DER (a tenant `trusted-ca` entry's `cert`).
    pub fn ca_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(&self.ca_cert)
    }

    /// The CA certificate as PEM (Mosquitto's `cafile`).
    pub fn ca_pem(&self) -> String {
        pem("CERTIFICATE", &self.ca_cert)
    }

    /// The CA's subject DN (RFC 2253).
    pub fn ca_subject_dn(&self) -> &str {
        &self.ca_dn
    }

    /// The certificate of device `device_id` (subject `CN=<device_id>,O=Ferry Perf`), from the
    /// cache when it holds one issued by this CA, else made and cached.
    pub fn device(&self, device_id: &str) -> Result<DeviceCert, PkiError> {
        let path = self.dir.join("devices").join(format!("{device_id}.pem"));
        if path.exists()
            && let Some(cached) = self.read_cached(&path)?
        {
            return Ok(cached);
        }
        let (device, key_pem) = self.issue(device_id)?;
        write_private(&path, &format!("{key_pem}{}", device.cert_pem()))?;
        Ok(device)
    }

    /// A new certificate for `cn` that is cached nowhere (a device the registry has never seen).
    pub fn fresh(&self, cn: &str) -> Result<DeviceCert, PkiError> {
        Ok(self.issue(cn)?.0)
    }

    fn read_cached(&self, path: &Path) -> Result<Option<DeviceCert>, PkiError> {
        let bytes = std::fs::read(path).map_err(io(path))?;
        let (Ok(key), Ok(cert)) = (
            PrivateKeyDer::from_pem_slice(&bytes),
            CertificateDer::from_pem_slice(&bytes),
        ) else {
            return Ok(None);
        };
        // Issued by an earlier CA of this directory: not trusted any more.
        if issuer_dn_rfc2253(&cert).ok().as_deref() != Some(self.ca_dn.as_str()) {
            return Ok(None);
        }
        let subject_dn = subject_dn_rfc2253(&cert).map_err(|e| malformed(path, e))?;
        Ok(Some(DeviceCert {
            cert,
            key,
            subject_dn,
        }))
    }

    /// Issues an end-entity client certificate for `CN=<cn>,O=Ferry Perf`; returns it with its
    /// key as PEM.
    fn issue(&self, cn: &str) -> Result<(DeviceCert, String), PkiError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = name(&[
            (DnType::OrganizationName, "Ferry Perf"),
            (DnType::CommonName, cn),
        ]);
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(serial());
        params.not_before = date_time_ymd(2020, 1, 1);
        params.not_after = date_time_ymd(2090, 1, 1);
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?.der().clone();
        let subject_dn = subject_dn_rfc2253(&cert)?;
        let key_der = PrivateKeyDer::Pkcs8(key.serialize_der().into());
        Ok((
            DeviceCert {
                cert,
                key: key_der,
                subject_dn,
            },
            key.serialize_pem(),
        ))
    }
}

/// A new key and a PEM certificate signing request for `CN=<cn>,O=Ferry Perf` (the key is
/// dropped: the harness only measures issuance).
pub fn csr(cn: &str) -> Result<String, PkiError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name = name(&[
        (DnType::OrganizationName, "Ferry Perf"),
        (DnType::CommonName, cn),
    ]);
    let key = KeyPair::generate()?;
    Ok(params.serialize_request(&key)?.pem()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    #[test]
    fn ca_and_device_certificates_are_cached_and_reused() -> TestResult {
        let dir = tempfile::tempdir()?;
        let pki = Pki::open(dir.path())?;
        let first = pki.device("perf-00001")?;
        assert_eq!(first.subject_dn, "CN=perf-00001,O=Ferry Perf");
        assert_eq!(
            issuer_dn_rfc2253(&first.cert)?,
            pki.ca_subject_dn(),
            "issued by the CA"
        );

        // A second run: the same CA and the same device certificate and key.
        let again = Pki::open(dir.path())?;
        assert_eq!(again.ca_base64(), pki.ca_base64());
        let second = again.device("perf-00001")?;
        assert_eq!(second.cert, first.cert);
        assert_eq!(second.key.secret_der(), first.key.secret_der());

        // Fresh certificates are new every time and are not cached.
        let a = again.fresh("storm-1")?;
        let b = again.fresh("storm-1")?;
        assert_ne!(a.cert, b.cert);
        assert!(!dir.path().join("devices/storm-1.pem").exists());
        Ok(())
    }

    #[test]
    fn csrs_are_pem_requests() -> TestResult {
        let pem = csr("issued-1")?;
        assert!(
            pem.starts_with("-----BEGIN CERTIFICATE REQUEST-----"),
            "{pem}"
        );
        assert_ne!(csr("issued-1")?, pem, "a new key each time");
        Ok(())
    }

    #[test]
    fn device_certificates_of_a_replaced_ca_are_made_anew() -> TestResult {
        let dir = tempfile::tempdir()?;
        let old = Pki::open(dir.path())?.device("perf-00000")?;
        std::fs::remove_file(dir.path().join("ca-cert.pem"))?;
        let pki = Pki::open(dir.path())?;
        let new = pki.device("perf-00000")?;
        assert_ne!(new.cert, old.cert);
        assert_eq!(issuer_dn_rfc2253(&new.cert)?, pki.ca_subject_dn());
        Ok(())
    }

    #[test]
    fn a_garbled_cache_file_is_replaced() -> TestResult {
        let dir = tempfile::tempdir()?;
        let pki = Pki::open(dir.path())?;
        std::fs::write(dir.path().join("devices/perf-00002.pem"), "not pem")?;
        let device = pki.device("perf-00002")?;
        assert_eq!(device.subject_dn, "CN=perf-00002,O=Ferry Perf");
        Ok(())
    }
}
