//! X.509 client-certificate authentication (hono-api.md §1), the one code path of every TLS
//! listener (HTTP, MQTT, AMQP SASL EXTERNAL, CoAP over DTLS).
//!
//! The TLS layer accepted the chain and proved key possession ([`crate::tls`]). Here:
//! 1. the tenant: Tenant API `get` by the RFC 2253 issuer DN of the leaf (then of each
//!    intermediate the device sent), cached; on 404 the first label of the SNI host name is
//!    taken as the tenant id (`t1.hono.example` → `t1`);
//! 2. the tenant's `trusted-ca` entries whose subject is an issuer in the chain become trust
//!    anchors (raw issuer bytes + the CA's public key, never a re-encoded DN); entries outside
//!    their `not-before`/`not-after` are left out, so CAs roll over;
//! 3. rustls-webpki validates the path: signatures, validity of every certificate, and the
//!    client-auth extended key usage;
//! 4. auth-id = the subject DN (RFC 2253) or the CA's `auth-id-template`;
//! 5. Credentials `get` of type `x509-cert` with the client context `subject-dn`, `tenant-id`,
//!    `auth-id-template` and, when the CA auto-provisions, `client-certificate`, which lets the
//!    registry create the device on its first connection (answer `created`).
//!
//! Everything is cheap CPU work (one or two signature checks) done on the calling task; registry
//! answers come from the cache.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::Utc;
use ferry_registry_client::trust::{self, ChainError, ChainNames};
use ferry_registry_client::{
    CredentialType, RegistryError, Response, TenantId, TenantObject, template,
};
use rustls::pki_types::CertificateDer;
use serde_json::{Map, Value};

use super::{AuthenticatedDevice, Authenticator};
use crate::error::AuthError;

/// Longest chain a device may present (leaf and intermediates): bounds the registry lookups and
/// path building one handshake can cause.
pub const MAX_CHAIN_LENGTH: usize = 8;

/// The ring provider's signature verification algorithms: the product's only crypto provider.
fn algorithms() -> &'static [&'static dyn rustls::pki_types::SignatureVerificationAlgorithm] {
    rustls::crypto::ring::default_provider()
        .signature_verification_algorithms
        .all
}

impl Authenticator {
    /// Authenticates a device by the client certificate chain it presented in the TLS handshake
    /// (leaf first), with the SNI host name it asked for.
    pub async fn authenticate_x509(
        &self,
        chain: &[CertificateDer<'_>],
        sni: Option<&str>,
    ) -> Result<AuthenticatedDevice, AuthError> {
        if chain.is_empty() {
            return Err(AuthError::NoClientCertificate);
        }
        if chain.len() > MAX_CHAIN_LENGTH {
            return Err(AuthError::MalformedCertificate(format!(
                "a chain of {} certificates exceeds the maximum of {MAX_CHAIN_LENGTH}",
                chain.len()
            )));
        }
        let names = trust::chain_names(chain)
            .map_err(|e| AuthError::MalformedCertificate(e.to_string()))?;
        let tenant = self.tenant_for(&names, sni).await?;
        let now = Utc::now();
        let candidates = trust::anchors(&names, &tenant.trusted_ca);
        let (current, outside): (Vec<_>, Vec<_>) = candidates
            .into_iter()
            .partition(|a| trust::ca_valid_at(a.ca, now));
        if current.is_empty() {
            return Err(match outside.first() {
                Some(a) => AuthError::CaOutsideValidity(a.ca.subject_dn.clone()),
                None => AuthError::UnknownIssuer(names.issuers.join(" / ")),
            });
        }
        let anchor = trust::verify_client_chain(chain, &current, now, algorithms()).map_err(
            |e| match e {
                ChainError::Expired => AuthError::CertificateExpired,
                ChainError::NotYetValid => AuthError::CertificateNotYetValid,
                ChainError::Malformed(m) => AuthError::MalformedCertificate(m),
                ChainError::Invalid(m) => AuthError::UntrustedChain(m),
            },
        )?;
        let ca = anchor.ca;
        let leaf = &chain[0];
        let auth_id = match ca.auth_id_template.as_deref() {
            Some(t) => template::apply(t, leaf.as_ref())
                .map_err(|e| AuthError::AuthIdTemplate(e.to_string()))?,
            None => names.subject.clone(),
        };
        let mut context = Map::new();
        context.insert("subject-dn".into(), Value::from(names.subject.clone()));
        context.insert("tenant-id".into(), Value::from(tenant.tenant_id.as_str()));
        if let Some(t) = &ca.auth_id_template {
            context.insert("auth-id-template".into(), Value::from(t.clone()));
        }
        if ca.auto_provisioning_enabled {
            context.insert(
                "client-certificate".into(),
                Value::from(STANDARD.encode(leaf.as_ref())),
            );
        }
        let tenant_id = tenant.tenant_id.clone();
        let response = self
            .inner
            .registry
            .get_credentials(&tenant_id, CredentialType::X509Cert, &auth_id, &context)
            .await
            .map_err(|e| match e {
                RegistryError::Unavailable(m) => AuthError::RegistryUnavailable(m),
                _ if ca.auto_provisioning_enabled => AuthError::UnknownCredentials,
                _ => AuthError::UnregisteredCertificate,
            })?;
        let credentials = &response.payload;
        if !credentials.enabled {
            return Err(AuthError::CredentialsDisabled);
        }
        if !credentials.secrets.is_empty()
            && !credentials.secrets.iter().any(|s| s.is_valid_at(now))
        {
            return Err(AuthError::NoValidSecret);
        }
        if response.created {
            tracing::info!(tenant = %tenant_id, device = %credentials.device_id, auth_id, "device auto-provisioned by its certificate");
        }
        Ok(AuthenticatedDevice {
            tenant_id,
            device_id: credentials.device_id.clone(),
            auth_id,
        })
    }

    /// The tenant trusting an issuer of the chain, else the tenant named by the SNI's first label.
    async fn tenant_for(
        &self,
        names: &ChainNames,
        sni: Option<&str>,
    ) -> Result<std::sync::Arc<TenantObject>, AuthError> {
        let unavailable = |e: RegistryError| match e {
            RegistryError::Unavailable(m) => Err(AuthError::RegistryUnavailable(m)),
            _ => Ok(()),
        };
        let registry = &self.inner.registry;
        for (i, issuer) in names.issuers.iter().enumerate() {
            if names.issuers[..i].contains(issuer) {
                continue;
            }
            match registry.get_tenant_by_ca(issuer).await {
                Ok(Response { payload, .. }) => return Ok(payload),
                Err(e) => unavailable(e)?,
            }
        }
        let label = sni.and_then(|host| host.split('.').next());
        if let Some(tenant_id) = label.and_then(|l| TenantId::parse(l).ok()) {
            match registry.get_tenant(&tenant_id).await {
                Ok(Response { payload, .. }) => return Ok(payload),
                Err(e) => unavailable(e)?,
            }
        }
        Err(AuthError::UnknownIssuer(names.issuers.join(" / ")))
    }
}
