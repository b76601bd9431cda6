//! A test PKI made with rcgen (feature `test-pki`): root and intermediate CAs, device
//! certificates that are current, expired or not yet valid, in DER and PEM, and the tenant
//! `trusted-ca` entries that trust them. Tests generate their certificates; none are checked in.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SerialNumber, date_time_ymd,
};
use rustls_pki_types::CertificateDer;
use serde_json::{Value, json};

use crate::x509::{certificate_info, subject_dn_rfc2253};

/// Validity of a generated certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Validity {
    /// 2020 to 2090.
    Current,
    /// 2000 to 2001.
    Expired,
    /// 2090 to 2099.
    NotYetValid,
}

impl Validity {
    fn apply(self, params: &mut CertificateParams) {
        let (from, to) = match self {
            Validity::Current => (2020, 2090),
            Validity::Expired => (2000, 2001),
            Validity::NotYetValid => (2090, 2099),
        };
        params.not_before = date_time_ymd(from, 1, 1);
        params.not_after = date_time_ymd(to, 1, 1);
    }
}

fn serial() -> SerialNumber {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    SerialNumber::from_slice(&[&[0x01], &nanos.to_be_bytes()[..], &n.to_be_bytes()[..]].concat())
}

fn name(attributes: &[(DnType, &str)]) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    for (t, v) in attributes {
        dn.push(t.clone(), *v);
    }
    dn
}

/// A certificate authority that can issue CA and device certificates.
pub struct TestCa {
    /// Its certificate.
    pub cert: CertificateDer<'static>,
    /// Certificates between it and the root (itself excluded), nearest first.
    pub parents: Vec<CertificateDer<'static>>,
    params: CertificateParams,
    key: KeyPair,
}

/// A device certificate with its key.
pub struct TestCert {
    /// The leaf certificate.
    pub cert: CertificateDer<'static>,
    /// The chain a device sends: the leaf, then the intermediates.
    pub chain: Vec<CertificateDer<'static>>,
    /// The private key, PKCS#8 PEM.
    pub key_pem: String,
}

fn pem(der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .filter_map(|c| std::str::from_utf8(c).ok())
        .collect();
    format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        lines.join("\n")
    )
}

impl TestCert {
    /// The chain as PEM, leaf first.
    pub fn chain_pem(&self) -> String {
        self.chain.iter().map(|c| pem(c)).collect()
    }

    /// Key and chain in one PEM (what `reqwest::Identity::from_pem` and `curl --cert` take).
    pub fn identity_pem(&self) -> String {
        format!("{}{}", self.key_pem, self.chain_pem())
    }

    /// The leaf as standard Base64 DER (Hono's `client-certificate`).
    pub fn base64(&self) -> String {
        STANDARD.encode(&self.cert)
    }

    /// The subject DN in RFC 2253 form (the default auth-id).
    pub fn subject_dn(&self) -> String {
        subject_dn_rfc2253(&self.cert).unwrap_or_default()
    }
}

impl TestCa {
    /// A self-signed root CA `CN=<cn>,O=Ferry Test`, valid 2020 to 2090.
    pub fn root(cn: &str) -> Result<Self, rcgen::Error> {
        let (params, key) = Self::ca_params(cn, Validity::Current)?;
        let cert = params.self_signed(&key)?.der().clone();
        Ok(Self {
            cert,
            parents: Vec::new(),
            params,
            key,
        })
    }

    fn ca_params(
        cn: &str,
        validity: Validity,
    ) -> Result<(CertificateParams, KeyPair), rcgen::Error> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = name(&[
            (DnType::OrganizationName, "Ferry Test"),
            (DnType::CommonName, cn),
        ]);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.serial_number = Some(serial());
        validity.apply(&mut params);
        Ok((params, KeyPair::generate()?))
    }

    /// An intermediate CA signed by this CA.
    pub fn intermediate(&self, cn: &str) -> Result<Self, rcgen::Error> {
        let (params, key) = Self::ca_params(cn, Validity::Current)?;
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer)?.der().clone();
        let mut parents = vec![self.cert.clone()];
        parents.extend(self.parents.iter().cloned());
        Ok(Self {
            cert,
            parents,
            params,
            key,
        })
    }

    /// A current client certificate for `CN=<cn>,OU=Devices,O=Ferry Test`.
    pub fn device(&self, cn: &str) -> Result<TestCert, rcgen::Error> {
        self.issue(
            &[
                (DnType::OrganizationName, "Ferry Test"),
                (DnType::OrganizationalUnitName, "Devices"),
                (DnType::CommonName, cn),
            ],
            Validity::Current,
        )
    }

    /// A client certificate (client-auth usage) with the given subject and validity.
    pub fn issue(
        &self,
        subject: &[(DnType, &str)],
        validity: Validity,
    ) -> Result<TestCert, rcgen::Error> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = name(subject);
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(serial());
        validity.apply(&mut params);
        let key = KeyPair::generate()?;
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer)?.der().clone();
        let mut chain = vec![cert.clone()];
        if !self.parents.is_empty() {
            // An intermediate issued it: the device sends the intermediates, not the root.
            chain.push(self.cert.clone());
            chain.extend(self.parents.iter().take(self.parents.len() - 1).cloned());
        }
        Ok(TestCert {
            cert,
            chain,
            key_pem: key.serialize_pem(),
        })
    }

    /// The CA's subject DN in RFC 2253 form.
    pub fn subject_dn(&self) -> String {
        subject_dn_rfc2253(&self.cert).unwrap_or_default()
    }

    /// The CA's public key as Base64 SubjectPublicKeyInfo DER (Hono's `public-key`).
    pub fn public_key(&self) -> String {
        certificate_info(&self.cert)
            .map(|i| STANDARD.encode(i.spki_der))
            .unwrap_or_default()
    }

    /// The CA certificate as Base64 DER (a `trusted-ca` entry's `cert`).
    pub fn cert_base64(&self) -> String {
        STANDARD.encode(&self.cert)
    }

    /// A `trusted-ca` entry for this CA: subject DN, EC public key, valid 2020 to 2090.
    pub fn trusted_ca(&self) -> Value {
        json!({
            "subject-dn": self.subject_dn(),
            "public-key": self.public_key(),
            "algorithm": "EC",
            "not-before": "2020-01-01T00:00:00Z",
            "not-after": "2090-01-01T00:00:00Z",
        })
    }

    /// The certificate as PEM.
    pub fn pem(&self) -> String {
        pem(&self.cert)
    }
}
