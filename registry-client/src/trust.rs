//! Validating a device's certificate chain against a tenant's trusted CAs with rustls-webpki.
//!
//! A tenant's trusted CA is only a subject DN string and a public key (hono-api.md §7), not a
//! certificate. webpki compares names byte for byte, so a trust anchor is built from the *raw
//! issuer bytes of the certificate that the CA signed* plus the CA's SubjectPublicKeyInfo: a DN
//! string is never re-encoded. [`anchors`] finds, for each certificate of the presented chain,
//! the CA entries whose RFC 2253 subject equals that certificate's issuer, and
//! [`verify_client_chain`] runs webpki's path building (intermediates sent by the device are
//! used; validity of every certificate and the client-auth extended key usage are checked).
//!
//! Used by adapter-core (authentication) and by the registry (it checks a certificate itself
//! before auto-provisioning a device for it).

use chrono::{DateTime, Utc};
use rustls_pki_types::{
    CertificateDer, Der, SignatureVerificationAlgorithm, TrustAnchor, UnixTime,
};
use webpki::{EndEntityCert, KeyUsage};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::TrustedCa;
use crate::x509::name_rfc2253;

/// Every signature algorithm rustls-webpki implements with ring.
pub static RING_ALGORITHMS: &[&dyn SignatureVerificationAlgorithm] = webpki::ALL_VERIFICATION_ALGS;

/// Why a chain does not lead to a trusted CA.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    /// A certificate of the chain cannot be parsed.
    #[error("malformed certificate: {0}")]
    Malformed(String),
    /// A certificate of the chain has expired.
    #[error("certificate expired")]
    Expired,
    /// A certificate of the chain is not valid yet.
    #[error("certificate not yet valid")]
    NotYetValid,
    /// No path to a trusted CA: wrong signature, unknown intermediate, wrong key usage, ...
    #[error("certificate chain does not verify: {0}")]
    Invalid(String),
}

/// One candidate trust anchor: a CA entry and the DER name it is known by in the chain.
#[derive(Clone, Debug)]
pub struct Anchor<'a> {
    /// The tenant's CA entry.
    pub ca: &'a TrustedCa,
    /// The CA's subject as the chain encodes it (DER `Name` contents, without the SEQUENCE header).
    subject: Vec<u8>,
    /// The CA's SubjectPublicKeyInfo contents (without the SEQUENCE header).
    spki: Vec<u8>,
}

/// A parsed chain: for each certificate its RFC 2253 issuer DN and raw issuer name.
#[derive(Clone, Debug)]
pub struct ChainNames {
    /// RFC 2253 issuer DN of each certificate, leaf first.
    pub issuers: Vec<String>,
    /// RFC 2253 subject DN of the leaf.
    pub subject: String,
    raw_issuers: Vec<Vec<u8>>,
}

/// Reads the issuer names of every certificate of `chain` (leaf first) and the leaf's subject.
pub fn chain_names(chain: &[CertificateDer<'_>]) -> Result<ChainNames, ChainError> {
    let mut issuers = Vec::with_capacity(chain.len());
    let mut raw_issuers = Vec::with_capacity(chain.len());
    let mut subject = None;
    for der in chain {
        let (_, cert) = X509Certificate::from_der(der.as_ref())
            .map_err(|e| ChainError::Malformed(e.to_string()))?;
        let raw = cert.issuer().as_raw();
        issuers.push(name_rfc2253(raw).map_err(|e| ChainError::Malformed(e.to_string()))?);
        raw_issuers.push(contents(raw)?.to_vec());
        if subject.is_none() {
            subject = Some(
                name_rfc2253(cert.subject().as_raw())
                    .map_err(|e| ChainError::Malformed(e.to_string()))?,
            );
        }
    }
    let subject = subject.ok_or_else(|| ChainError::Malformed("empty chain".to_owned()))?;
    Ok(ChainNames {
        issuers,
        subject,
        raw_issuers,
    })
}

/// The contents of one DER element (tag and length stripped); the input must be exactly one
/// element.
fn contents(der: &[u8]) -> Result<&[u8], ChainError> {
    let bad = || ChainError::Malformed("bad DER length".to_owned());
    let first = *der.get(1).ok_or_else(bad)?;
    let (len, header) = if first < 0x80 {
        (usize::from(first), 2)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return Err(bad());
        }
        let bytes = der.get(2..2 + n).ok_or_else(bad)?;
        let len = bytes
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, 2 + n)
    };
    let body = der.get(header..).ok_or_else(bad)?;
    if body.len() != len {
        return Err(bad());
    }
    Ok(body)
}

/// Whether `now` lies within the CA entry's `not-before`/`not-after` (absent bounds are open).
pub fn ca_valid_at(ca: &TrustedCa, now: DateTime<Utc>) -> bool {
    ca.not_before.is_none_or(|t| t <= now) && ca.not_after.is_none_or(|t| now <= t)
}

/// The candidate anchors among `cas` for a chain: every CA entry whose subject DN equals the
/// issuer DN of a certificate in the chain, with that certificate's raw issuer bytes as its
/// name. Entries without a usable `public-key` are skipped.
pub fn anchors<'a>(names: &ChainNames, cas: &'a [TrustedCa]) -> Vec<Anchor<'a>> {
    use base64::Engine as _;
    let mut out = Vec::new();
    for (issuer, raw) in names.issuers.iter().zip(&names.raw_issuers) {
        for ca in cas.iter().filter(|ca| ca.subject_dn == *issuer) {
            let Some(key) = ca.public_key.as_deref() else {
                continue;
            };
            let Ok(spki) = base64::engine::general_purpose::STANDARD.decode(key.trim()) else {
                tracing::warn!(ca = %ca.subject_dn, "trusted CA public key is not Base64");
                continue;
            };
            let Ok(spki) = contents(&spki).map(<[u8]>::to_vec) else {
                tracing::warn!(ca = %ca.subject_dn, "trusted CA public key is not DER");
                continue;
            };
            out.push(Anchor {
                ca,
                subject: raw.clone(),
                spki,
            });
        }
    }
    out
}

/// Verifies `chain` (leaf first, then intermediates in any order) for client authentication
/// against `anchors` at time `now`; returns the anchor the path ended in.
pub fn verify_client_chain<'a, 'b>(
    chain: &[CertificateDer<'_>],
    anchors: &'b [Anchor<'a>],
    now: DateTime<Utc>,
    algorithms: &[&dyn SignatureVerificationAlgorithm],
) -> Result<&'b Anchor<'a>, ChainError> {
    let (leaf, intermediates) = chain
        .split_first()
        .ok_or_else(|| ChainError::Malformed("empty chain".to_owned()))?;
    let trust: Vec<TrustAnchor<'_>> = anchors
        .iter()
        .map(|a| TrustAnchor {
            subject: Der::from(a.subject.as_slice()),
            subject_public_key_info: Der::from(a.spki.as_slice()),
            name_constraints: None,
        })
        .collect();
    let cert = EndEntityCert::try_from(leaf).map_err(|e| ChainError::Malformed(e.to_string()))?;
    let time = UnixTime::since_unix_epoch(std::time::Duration::from_secs(
        u64::try_from(now.timestamp()).unwrap_or(0),
    ));
    let path = cert
        .verify_for_usage(
            algorithms,
            &trust,
            intermediates,
            time,
            KeyUsage::client_auth(),
            None,
            None,
        )
        .map_err(|e| match e {
            webpki::Error::CertExpired { .. } => ChainError::Expired,
            webpki::Error::CertNotValidYet { .. } => ChainError::NotYetValid,
            other => ChainError::Invalid(format!("{other:?}")),
        })?;
    let used = path.anchor();
    anchors
        .iter()
        .zip(&trust)
        .find(|(_, t)| *t == used)
        .map(|(a, _)| a)
        .ok_or_else(|| ChainError::Invalid("path ended in an unknown anchor".to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contents_strips_short_and_long_headers() -> Result<(), ChainError> {
        assert_eq!(contents(&[0x30, 0x02, 1, 2])?, &[1, 2]);
        let mut long = vec![0x30, 0x81, 0x80];
        long.extend(std::iter::repeat_n(7u8, 0x80));
        assert_eq!(contents(&long)?.len(), 0x80);
        assert!(contents(&[0x30, 0x03, 1]).is_err());
        assert!(contents(&[0x30]).is_err());
        Ok(())
    }
}
