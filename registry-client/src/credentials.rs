//! Hono's Credentials API object.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::DeviceId;

fn yes() -> bool {
    true
}

/// Credential types Ferry understands (hono-api.md §8).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CredentialType {
    /// A password checked against `pwd-hash`.
    #[serde(rename = "hashed-password")]
    HashedPassword,
    /// A DTLS pre-shared key.
    #[serde(rename = "psk")]
    Psk,
    /// An X.509 client certificate; the auth-id is its subject DN.
    #[serde(rename = "x509-cert")]
    X509Cert,
    /// A raw public key for JWT authentication.
    #[serde(rename = "rpk")]
    Rpk,
}

impl CredentialType {
    /// Hono's name of the type.
    pub fn as_str(self) -> &'static str {
        match self {
            CredentialType::HashedPassword => "hashed-password",
            CredentialType::Psk => "psk",
            CredentialType::X509Cert => "x509-cert",
            CredentialType::Rpk => "rpk",
        }
    }

    /// Parses Hono's name of a type.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "hashed-password" => CredentialType::HashedPassword,
            "psk" => CredentialType::Psk,
            "x509-cert" => CredentialType::X509Cert,
            "rpk" => CredentialType::Rpk,
            _ => return None,
        })
    }
}

/// A device's credentials of one type and auth-id, as the Credentials API `get` answers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct CredentialsObject {
    /// The device the credentials belong to.
    pub device_id: DeviceId,
    /// The credential type.
    #[serde(rename = "type")]
    pub credential_type: CredentialType,
    /// The identity the device presents.
    pub auth_id: String,
    /// Disabled credentials must not authenticate anybody.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// The secrets; at least one.
    #[serde(default)]
    pub secrets: Vec<Secret>,
    /// Extension properties.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub ext: Map<String, Value>,
}

/// One secret of a credential.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Secret {
    /// Identifier assigned by the registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// A disabled secret is skipped.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Start of validity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<DateTime<Utc>>,
    /// End of validity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after: Option<DateTime<Utc>>,
    /// Password hash (`hashed-password`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pwd_hash: Option<String>,
    /// `sha-256` (default), `sha-512` or `bcrypt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_function: Option<String>,
    /// Base64 salt for SHA hashes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub salt: Option<String>,
    /// Base64 key (`psk`, `rpk`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Any other member.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Secret {
    /// Whether the secret is enabled and `now` lies within its validity window.
    pub fn is_valid_at(&self, now: DateTime<Utc>) -> bool {
        self.enabled
            && self.not_before.is_none_or(|nb| nb <= now)
            && self.not_after.is_none_or(|na| now <= na)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    #[test]
    fn secret_validity_window() {
        let now = Utc::now();
        let mut s = Secret {
            enabled: true,
            ..Secret::default()
        };
        assert!(s.is_valid_at(now));
        s.not_after = Some(now - Duration::seconds(1));
        assert!(!s.is_valid_at(now));
        s.not_after = None;
        s.not_before = Some(now + Duration::seconds(1));
        assert!(!s.is_valid_at(now));
        s.not_before = None;
        s.enabled = false;
        assert!(!s.is_valid_at(now));
    }

    #[test]
    fn parses_hono_json() {
        let c: CredentialsObject = match serde_json::from_value(serde_json::json!({
            "device-id": "4711", "type": "hashed-password", "auth-id": "sensor1",
            "secrets": [{"pwd-hash": "x", "hash-function": "bcrypt", "not-after": "2037-01-01T00:00:00Z"}]
        })) {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        };
        assert!(c.enabled);
        assert_eq!(c.credential_type, CredentialType::HashedPassword);
        assert_eq!(c.secrets[0].hash_function.as_deref(), Some("bcrypt"));
        assert!(c.secrets[0].not_after.is_some());
    }
}
