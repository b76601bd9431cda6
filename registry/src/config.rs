//! Registry configuration: a serde tree with defaults, checked once at [`crate::Registry::open`].

use std::time::Duration;

use serde::Deserialize;

/// Settings of the embedded device registry.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct RegistryConfig {
    /// How long (seconds) adapters may cache the registry's service answers (tenant, credentials,
    /// registration assertion): sent as `max-age`. Hono's default is 180.
    pub cache_max_age: u64,
    /// bcrypt cost used to hash `pwd-plain` passwords set through the Management API (4..=14;
    /// default 10, about 75 ms per hash on a small machine). Hashes are written as `$2a$`, the
    /// only bcrypt version Hono verifies.
    pub bcrypt_cost: u32,
    /// Largest Management API request body in bytes; larger bodies get 413. Default 64 KiB.
    pub max_body_size: usize,
    /// Management API users (HTTP Basic). Empty: the Management API needs no authentication.
    pub users: Vec<ManagementUser>,
    /// Key (Base64 of 32 random bytes, e.g. `openssl rand -base64 32`) that encrypts the private
    /// keys of tenant CAs created or imported under `/v1/provisioning` (AES-256-GCM). Without it
    /// those endpoints answer 503.
    pub ca_encryption_key: Option<EncryptionKey>,
    /// Largest bulk provisioning file in bytes (`/v1/provisioning/{tenant}/bulk`); default 64 MiB.
    pub max_bulk_body_size: usize,
    /// Longest validity of a device certificate issued under `/v1/provisioning`, in days
    /// (default 825).
    pub max_device_certificate_days: u32,
    /// Rate limits of `POST /v1/provisioning/{tenant}/claims` (claiming JITP devices).
    pub claim_limits: ClaimLimits,
}

/// How many unsuccessful claim attempts are allowed before further ones get 429.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct ClaimLimits {
    /// Unsuccessful attempts per device within `window_secs` (default 5).
    pub per_device: u32,
    /// Unsuccessful attempts per tenant within `window_secs` (default 100).
    pub per_tenant: u32,
    /// Length of the window in seconds, counted from its first attempt (default 900).
    pub window_secs: u64,
}

impl Default for ClaimLimits {
    fn default() -> Self {
        Self {
            per_device: 5,
            per_tenant: 100,
            window_secs: 900,
        }
    }
}

/// A secret key from the configuration; never printed.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct EncryptionKey(pub String);

impl std::fmt::Debug for EncryptionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EncryptionKey(***)")
    }
}

impl EncryptionKey {
    /// The 32 key bytes, or why the value is unusable.
    pub fn bytes(&self) -> Result<[u8; 32], String> {
        use base64::Engine;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(self.0.trim())
            .map_err(|_| "ca_encryption_key must be Base64".to_owned())?;
        raw.try_into().map_err(|_| {
            "ca_encryption_key must be 32 bytes (Base64 of 32 random bytes)".to_owned()
        })
    }
}

/// One Management API user.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ManagementUser {
    /// The user name (HTTP Basic user).
    pub name: String,
    /// The password, in plain text.
    pub password: String,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        Self {
            cache_max_age: 180,
            bcrypt_cost: 10,
            max_body_size: 64 * 1024,
            users: Vec::new(),
            ca_encryption_key: None,
            max_bulk_body_size: 64 * 1024 * 1024,
            max_device_certificate_days: 825,
            claim_limits: ClaimLimits::default(),
        }
    }
}

/// Largest accepted bcrypt cost: a higher cost would let one request block a core for seconds.
pub const MAX_BCRYPT_COST: u32 = 14;

impl RegistryConfig {
    /// The cache directive's age.
    pub fn cache_max_age(&self) -> Duration {
        Duration::from_secs(self.cache_max_age)
    }

    /// Checks value ranges; the error says which field is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if !(4..=MAX_BCRYPT_COST).contains(&self.bcrypt_cost) {
            return Err(format!(
                "bcrypt_cost must be between 4 and {MAX_BCRYPT_COST}, not {}",
                self.bcrypt_cost
            ));
        }
        if let Some(key) = &self.ca_encryption_key {
            key.bytes()?;
        }
        if self.max_device_certificate_days == 0 {
            return Err("max_device_certificate_days must be at least 1".to_owned());
        }
        let limits = &self.claim_limits;
        if limits.per_device == 0 || limits.per_tenant == 0 || limits.window_secs == 0 {
            return Err("claim_limits values must be at least 1".to_owned());
        }
        if self.max_body_size < 1024 {
            return Err("max_body_size must be at least 1024 bytes".to_owned());
        }
        if self
            .users
            .iter()
            .any(|u| u.name.is_empty() || u.name.contains(':'))
        {
            return Err("management user names must be non-empty and contain no ':'".to_owned());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_unknown_fields() -> Result<(), Box<dyn std::error::Error>> {
        let c: RegistryConfig = serde_json::from_str(r#"{"bcrypt_cost": 4}"#)?;
        assert_eq!(c.bcrypt_cost, 4);
        assert_eq!(c.cache_max_age, 180);
        assert!(c.validate().is_ok());
        assert!(serde_json::from_str::<RegistryConfig>(r#"{"bcrypt": 4}"#).is_err());
        let bad = RegistryConfig {
            bcrypt_cost: 31,
            ..RegistryConfig::default()
        };
        assert!(bad.validate().is_err());
        Ok(())
    }
}
