//! Certificates and keys of tenant-managed CAs: generation and import of a CA, issuance of
//! device certificates from a CSR or with a generated key (rcgen, ECDSA P-256 by default), and
//! sealing of CA private keys at rest (AES-256-GCM with ring, bound to tenant and CA id).
//!
//! Issued device certificates are always end entities with the client-auth usage, an authority
//! key identifier, a random serial and the requested validity: whatever a CSR asks for beyond its
//! subject and key (CA=true, other extensions) is not copied.

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, PublicKeyData,
    SerialNumber,
};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use rustls_pki_types::CertificateDer;

/// A PKI operation failed.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// The caller's input is unusable (PEM, CSR, key that does not match, ...).
    #[error("{0}")]
    Input(String),
    /// Key generation, signing or sealing failed.
    #[error("{0}")]
    Crypto(String),
}

fn input(e: impl std::fmt::Display) -> PkiError {
    PkiError::Input(e.to_string())
}

fn crypto(e: impl std::fmt::Display) -> PkiError {
    PkiError::Crypto(e.to_string())
}

/// A random positive serial number of 16 bytes.
fn serial() -> Result<SerialNumber, PkiError> {
    let mut bytes = [0u8; 16];
    SystemRandom::new().fill(&mut bytes).map_err(crypto)?;
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    Ok(SerialNumber::from_slice(&bytes))
}

fn validity(params: &mut CertificateParams, days: u32) {
    let now = time_now();
    params.not_before = now - time::Duration::minutes(5);
    params.not_after = now + time::Duration::days(i64::from(days));
}

fn time_now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

/// A new CA: `CN=<common_name>`, ECDSA P-256, `days` long. Returns certificate and PKCS#8 key.
pub fn generate_ca(common_name: &str, days: u32) -> Result<(Vec<u8>, Vec<u8>), PkiError> {
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(input)?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.serial_number = Some(serial()?);
    validity(&mut params, days);
    let key = KeyPair::generate().map_err(crypto)?;
    let cert = params.self_signed(&key).map_err(crypto)?;
    Ok((cert.der().to_vec(), key.serialize_der()))
}

/// An existing CA from PEM: checks that the key belongs to the certificate. Returns certificate
/// DER and PKCS#8 key DER.
pub fn import_ca(cert_pem: &str, key_pem: &str) -> Result<(Vec<u8>, Vec<u8>), PkiError> {
    use rustls_pki_types::pem::PemObject;
    let cert = CertificateDer::from_pem_slice(cert_pem.as_bytes())
        .map_err(|e| input(format!("'cert' is not a PEM certificate: {e}")))?;
    let key = KeyPair::from_pem(key_pem).map_err(|e| input(format!("'key': {e}")))?;
    let (_, parsed) =
        x509_parser::parse_x509_certificate(&cert).map_err(|e| input(format!("'cert': {e}")))?;
    if parsed.public_key().raw != key.subject_public_key_info().as_slice() {
        return Err(input("'key' does not belong to 'cert'"));
    }
    if !parsed.is_ca() {
        return Err(input("'cert' is not a CA certificate"));
    }
    Ok((cert.to_vec(), key.serialize_der()))
}

fn issuer(ca_cert: &[u8], ca_key: &[u8]) -> Result<Issuer<'static, KeyPair>, PkiError> {
    let key = KeyPair::try_from(ca_key).map_err(crypto)?;
    Issuer::from_ca_cert_der(&CertificateDer::from(ca_cert.to_vec()), key).map_err(crypto)
}

/// Makes `params` a device certificate: end entity, client auth, AKI, serial, validity.
fn device_params(params: &mut CertificateParams, days: u32) -> Result<(), PkiError> {
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    params.custom_extensions.clear();
    params.name_constraints = None;
    params.crl_distribution_points.clear();
    params.serial_number = Some(serial()?);
    validity(params, days);
    Ok(())
}

/// A device certificate for the key and subject of a PEM CSR (its signature is checked).
pub fn issue_from_csr(
    ca_cert: &[u8],
    ca_key: &[u8],
    csr_pem: &str,
    days: u32,
) -> Result<Vec<u8>, PkiError> {
    let mut csr = CertificateSigningRequestParams::from_pem(csr_pem)
        .map_err(|e| input(format!("'csr': {e}")))?;
    if csr.params.distinguished_name.iter().next().is_none() {
        return Err(input("the CSR has an empty subject"));
    }
    device_params(&mut csr.params, days)?;
    let issuer = issuer(ca_cert, ca_key)?;
    Ok(csr.signed_by(&issuer).map_err(crypto)?.der().to_vec())
}

/// A device certificate `CN=<common_name>` with a new ECDSA P-256 key: certificate DER and the
/// key as PKCS#8 PEM.
pub fn issue_generated(
    ca_cert: &[u8],
    ca_key: &[u8],
    common_name: &str,
    days: u32,
) -> Result<(Vec<u8>, String), PkiError> {
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(input)?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    device_params(&mut params, days)?;
    let key = KeyPair::generate().map_err(crypto)?;
    let issuer = issuer(ca_cert, ca_key)?;
    let cert = params.signed_by(&key, &issuer).map_err(crypto)?;
    Ok((cert.der().to_vec(), key.serialize_pem()))
}

/// Encrypts `plain` with `key`; `aad` binds the result to its owner. Output: nonce || ciphertext.
pub fn seal(key: &[u8; 32], aad: &str, plain: &[u8]) -> Result<Vec<u8>, PkiError> {
    let sealing = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).map_err(crypto)?);
    let mut nonce = [0u8; NONCE_LEN];
    SystemRandom::new().fill(&mut nonce).map_err(crypto)?;
    let mut data = plain.to_vec();
    sealing
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad.as_bytes()),
            &mut data,
        )
        .map_err(crypto)?;
    let mut out = nonce.to_vec();
    out.extend(data);
    Ok(out)
}

/// Decrypts what [`seal`] produced with the same key and `aad`.
pub fn unseal(key: &[u8; 32], aad: &str, sealed: &[u8]) -> Result<Vec<u8>, PkiError> {
    let opening = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).map_err(crypto)?);
    if sealed.len() < NONCE_LEN {
        return Err(crypto("sealed key is truncated"));
    }
    let (nonce, data) = sealed.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(crypto)?;
    let mut data = data.to_vec();
    let plain = opening
        .open_in_place(nonce, Aad::from(aad.as_bytes()), &mut data)
        .map_err(|_| crypto("cannot unseal the CA key (wrong ca_encryption_key?)"))?;
    Ok(plain.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_keys_open_only_with_their_key_and_owner() -> Result<(), PkiError> {
        let key = [7u8; 32];
        let sealed = seal(&key, "t1/ca", b"secret")?;
        assert!(!sealed.windows(6).any(|w| w == b"secret"));
        assert_eq!(unseal(&key, "t1/ca", &sealed)?, b"secret");
        assert!(unseal(&[8u8; 32], "t1/ca", &sealed).is_err());
        assert!(unseal(&key, "t2/ca", &sealed).is_err());
        Ok(())
    }

    #[test]
    fn a_csr_asking_to_be_a_ca_gets_a_device_certificate() -> Result<(), Box<dyn std::error::Error>>
    {
        let (ca_cert, ca_key) = generate_ca("Tenant CA", 30)?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, "dev-1");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate()?;
        let csr = params.serialize_request(&key)?.pem()?;
        let der = issue_from_csr(&ca_cert, &ca_key, &csr, 10)?;
        let (_, cert) = x509_parser::parse_x509_certificate(&der)?;
        assert!(!cert.is_ca());
        assert_eq!(
            cert.public_key().raw,
            key.subject_public_key_info().as_slice()
        );
        let days = (cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp())
            / 86_400;
        assert_eq!(days, 10);
        Ok(())
    }
}
