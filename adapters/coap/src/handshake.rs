//! How a DTLS peer authenticates: the choice of the DTLS configuration from the peer's first
//! ClientHello, and the device the finished handshake proved.
//!
//! webrtc-dtls cannot serve PSK and certificate suites from one `Config` (it refuses a config
//! with both a PSK callback and certificates), so the port looks at the cipher suites the first
//! ClientHello offers and gives the peer one of two configurations ([`Method::of`]):
//! - **PSK** (any of [`PSK_SUITES`]): the key comes from the peer's [`PskSlot`], which the
//!   peer's transport filled before webrtc-dtls asks for it;
//! - **certificate** (any of [`CERTIFICATE_SUITES`], and no PSK suite): the server presents its
//!   ECDSA certificate and requires a client certificate. webrtc-dtls checks the client's
//!   CertificateVerify (possession of the key) and accepts any chain; adapter-core's
//!   `Authenticator::authenticate_x509` validates the chain right after the handshake (tenant by
//!   issuer DN, chain against the tenant's trusted CAs, auto-provisioning), before any CoAP is
//!   served. Its verify callbacks are synchronous, so the registry cannot be asked inside them.

use std::sync::Arc;

use ferry_adapter_core::{AuthError, AuthenticatedDevice, Authenticator};
use rustls_pki_types::CertificateDer;
use webrtc_dtls::cipher_suite::CipherSuiteId;
use webrtc_dtls::config::{ClientAuthType, Config, ExtendedMasterSecretType};
use webrtc_dtls::conn::DTLSConn;

use crate::cert::DtlsCertificate;
use crate::handshaking::PskSlot;
use crate::record;

/// The PSK cipher suites the port offers, best first.
pub(crate) const PSK_SUITES: [CipherSuiteId; 3] = [
    CipherSuiteId::Tls_Psk_With_Aes_128_Ccm_8,
    CipherSuiteId::Tls_Psk_With_Aes_128_Ccm,
    CipherSuiteId::Tls_Psk_With_Aes_128_Gcm_Sha256,
];

/// The certificate (ECDHE_ECDSA) cipher suites the port offers, best first. Only AEAD suites:
/// established sessions run on the port's own record layer (`protection.rs`), which implements
/// exactly these and [`PSK_SUITES`].
pub(crate) const CERTIFICATE_SUITES: [CipherSuiteId; 3] = [
    CipherSuiteId::Tls_Ecdhe_Ecdsa_With_Aes_128_Gcm_Sha256,
    CipherSuiteId::Tls_Ecdhe_Ecdsa_With_Aes_128_Ccm_8,
    CipherSuiteId::Tls_Ecdhe_Ecdsa_With_Aes_128_Ccm,
];

/// How a peer authenticates, chosen from its first ClientHello.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Method {
    /// A pre-shared key (identity `auth-id@tenant`).
    Psk,
    /// An X.509 client certificate.
    Certificate,
}

impl Method {
    /// The method for a ClientHello: PSK if it offers a PSK suite, else certificates if it offers
    /// an ECDHE_ECDSA suite; `None` if it offers neither (or is not a ClientHello).
    pub(crate) fn of(client_hello: &[u8]) -> Option<Self> {
        let offered = record::client_hello_suites(client_hello)?;
        let offers =
            |suites: &[CipherSuiteId]| suites.iter().any(|s| offered.contains(&(*s as u16)));
        if offers(&PSK_SUITES) {
            Some(Method::Psk)
        } else if offers(&CERTIFICATE_SUITES) {
            Some(Method::Certificate)
        } else {
            None
        }
    }
}

/// The server configuration of one PSK handshake, its callback answering from `slot`.
///
/// The suites must be named: webrtc-dtls's default list has no PSK suite, so a PSK config
/// without them fails every handshake with "no available cipher suites".
pub(crate) fn psk_config(slot: Arc<PskSlot>) -> Config {
    Config {
        cipher_suites: PSK_SUITES.to_vec(),
        psk: Some(Arc::new(move |identity: &[u8]| {
            slot.key(identity)
                .ok_or_else(|| webrtc_dtls::Error::Other("unknown PSK identity".to_owned()))
        })),
        extended_master_secret: ExtendedMasterSecretType::Request,
        ..Config::default()
    }
}

/// The server configuration of one certificate handshake: the server's ECDSA certificate, and
/// any client certificate required (its chain is validated after the handshake, see the
/// module header).
pub(crate) fn certificate_config(server: &DtlsCertificate) -> Config {
    Config {
        certificates: vec![server.dtls_certificate().clone()],
        cipher_suites: CERTIFICATE_SUITES.to_vec(),
        client_auth: ClientAuthType::RequireAnyClientCert,
        extended_master_secret: ExtendedMasterSecretType::Request,
        ..Config::default()
    }
}

/// Why a finished handshake does not make an authenticated session.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SessionRefused {
    /// A PSK handshake finished without an identity the registry accepted (cannot happen while
    /// the key callback only answers accepted identities; kept as a guard).
    #[error("no accepted PSK identity")]
    NoPskIdentity,
    /// adapter-core refused the client certificate chain.
    #[error(transparent)]
    Certificate(#[from] AuthError),
}

/// The device a finished handshake authenticated: the PSK identity's device, or the device of
/// the client certificate chain (validated, and possibly auto-provisioned, here).
pub(crate) async fn authenticate(
    method: Method,
    conn: &DTLSConn,
    psk: &PskSlot,
    authenticator: &Authenticator,
) -> Result<AuthenticatedDevice, SessionRefused> {
    match method {
        Method::Psk => psk.device().ok_or(SessionRefused::NoPskIdentity),
        Method::Certificate => {
            let chain: Vec<CertificateDer<'static>> = conn
                .connection_state()
                .await
                .peer_certificates
                .into_iter()
                .map(CertificateDer::from)
                .collect();
            // webrtc-dtls does not expose the SNI a client sent, so the tenant comes from the
            // issuer DN only.
            Ok(authenticator.authenticate_x509(&chain, None).await?)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::tests::client_hello;

    #[test]
    fn the_offered_suites_choose_the_method() {
        assert_eq!(
            Method::of(&client_hello(&[0xc02b, 0xc0a8])),
            Some(Method::Psk)
        );
        assert_eq!(Method::of(&client_hello(&[0x00a8])), Some(Method::Psk));
        // ECDHE_ECDSA only: a certificate handshake.
        assert_eq!(
            Method::of(&client_hello(&[0xc02b, 0xc0ae])),
            Some(Method::Certificate)
        );
        assert_eq!(
            Method::of(&client_hello(&[0x1301, 0xc0ae])),
            Some(Method::Certificate)
        );
        // Only suites the port cannot serve (RSA, CBC, TLS 1.3), or no ClientHello at all.
        assert_eq!(Method::of(&client_hello(&[0xc02f, 0x1301])), None);
        assert_eq!(Method::of(&client_hello(&[0xc00a, 0xc014])), None);
        assert_eq!(Method::of(&[22, 0xfe, 0xfd]), None);
    }
}
