//! Pre-shared keys (CoAP over DTLS): the key of a PSK identity `auth-id@tenant`, from the
//! device's `psk` credentials.
//!
//! DTLS libraries ask for the key synchronously inside the handshake; an adapter therefore
//! resolves the identity with [`Authenticator::psk_key`] (asynchronously, through the cached
//! registry) before it hands the client's key exchange to the DTLS library, and answers the
//! library's callback from what it resolved. Keys are never logged.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::Utc;
use ferry_registry_client::{CredentialType, RegistryError};
use serde_json::Map;

use super::{AuthenticatedDevice, Authenticator, split_username};
use crate::error::AuthError;

/// A device's pre-shared key, and who holds it.
#[derive(Clone, PartialEq, Eq)]
pub struct PskKey {
    /// The device the identity belongs to.
    pub device: AuthenticatedDevice,
    /// The key (the Base64-decoded `key` of the first enabled, currently valid secret).
    pub key: Vec<u8>,
}

impl std::fmt::Debug for PskKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PskKey")
            .field("device", &self.device)
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    /// Looks up the key of the PSK identity `auth-id@tenant` in its `psk` credentials.
    ///
    /// The first enabled secret within its validity window whose `key` is valid Base64 is used;
    /// the DTLS handshake then proves that the device holds it.
    pub async fn psk_key(&self, identity: &str) -> Result<PskKey, AuthError> {
        let (auth_id, tenant_id) = split_username(identity)?;
        let credentials = self
            .inner
            .registry
            .get_credentials(&tenant_id, CredentialType::Psk, auth_id, &Map::new())
            .await
            .map_err(|e| match e {
                RegistryError::NotFound
                | RegistryError::Forbidden(_)
                | RegistryError::BadRequest(_) => AuthError::UnknownCredentials,
                RegistryError::Unavailable(m) => AuthError::RegistryUnavailable(m),
            })?
            .payload;
        if !credentials.enabled {
            return Err(AuthError::CredentialsDisabled);
        }
        let now = Utc::now();
        let key = credentials
            .secrets
            .iter()
            .filter(|s| s.is_valid_at(now))
            .filter_map(|s| s.key.as_deref())
            .find_map(|k| STANDARD.decode(k.trim()).ok().filter(|k| !k.is_empty()))
            .ok_or(AuthError::NoValidSecret)?;
        Ok(PskKey {
            device: AuthenticatedDevice {
                tenant_id,
                device_id: credentials.device_id.clone(),
                auth_id: auth_id.to_owned(),
            },
            key,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use chrono::Duration;
    use ferry_registry_client::{CredentialsObject, DeviceId, Secret, TenantId};

    use super::*;
    use crate::config::CoreConfig;
    use crate::test_util::FakeRegistry;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn psk_secret(key: &str, enabled: bool) -> Secret {
        Secret {
            enabled,
            key: Some(key.to_owned()),
            ..Secret::default()
        }
    }

    fn authenticator(secrets: Vec<Secret>, enabled: bool) -> Result<Authenticator, AuthError> {
        let registry = Arc::new(FakeRegistry::new());
        let tenant = TenantId::parse("t1").map_err(|_| AuthError::MalformedUsername)?;
        let device = DeviceId::parse("dev-1").map_err(|_| AuthError::MalformedUsername)?;
        registry.add_credentials(
            &tenant,
            CredentialsObject {
                device_id: device,
                credential_type: CredentialType::Psk,
                auth_id: "sensor".to_owned(),
                enabled,
                secrets,
                ext: Map::new(),
            },
        );
        Ok(Authenticator::new(registry, &CoreConfig::default()))
    }

    #[tokio::test]
    async fn finds_the_first_valid_key_of_the_identity() -> TestResult {
        let expired = Secret {
            not_after: Some(Utc::now() - Duration::seconds(1)),
            ..psk_secret("b2xk", true)
        };
        let auth = authenticator(
            vec![
                expired,
                psk_secret("!!", true),
                psk_secret("c2VjcmV0", true),
            ],
            true,
        )?;
        let psk = auth.psk_key("sensor@t1").await?;
        assert_eq!(psk.key, b"secret");
        assert_eq!(psk.device.device_id.as_str(), "dev-1");
        assert_eq!(psk.device.tenant_id.as_str(), "t1");
        assert_eq!(psk.device.auth_id, "sensor");
        assert!(!format!("{psk:?}").contains("secret\""));
        Ok(())
    }

    #[tokio::test]
    async fn refuses_unknown_disabled_and_keyless_identities() -> TestResult {
        let auth = authenticator(vec![psk_secret("c2VjcmV0", true)], true)?;
        assert_eq!(
            auth.psk_key("other@t1").await,
            Err(AuthError::UnknownCredentials)
        );
        assert_eq!(
            auth.psk_key("no-tenant").await,
            Err(AuthError::MalformedUsername)
        );
        let disabled = authenticator(vec![psk_secret("c2VjcmV0", true)], false)?;
        assert_eq!(
            disabled.psk_key("sensor@t1").await,
            Err(AuthError::CredentialsDisabled)
        );
        let keyless = authenticator(vec![psk_secret("c2VjcmV0", false)], true)?;
        assert_eq!(
            keyless.psk_key("sensor@t1").await,
            Err(AuthError::NoValidSecret)
        );
        Ok(())
    }
}
