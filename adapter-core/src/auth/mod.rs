//! Device authentication, independent of the protocol that carried the credentials.
//!
//! Username/password (HTTP Basic, MQTT CONNECT, AMQP SASL PLAIN): the username `auth-id@tenant`
//! is split at the first `@`, the `hashed-password` credentials are fetched through the (cached)
//! registry, disabled credentials and secrets outside their validity window are skipped, and the
//! password is checked against each remaining secret (module `password` has the formats).
//!
//! X.509 client certificates: see the `x509` module ([`Authenticator::authenticate_x509`]).
//!
//! bcrypt is deliberately slow, so it runs on tokio's blocking pool behind a semaphore (at most one
//! check per core at a time), hashes above a configured cost are refused without computing them,
//! and successful checks are remembered for a short while keyed by a digest of
//! (hash, salt, password). Passwords are never logged.

mod password;
mod psk;
mod x509;

pub use x509::MAX_CHAIN_LENGTH;

use std::sync::Arc;

use chrono::Utc;
use ferry_registry_client::{
    CredentialType, CredentialsObject, DeviceId, DeviceRegistry, RegistryError, Secret, TenantId,
};
use serde_json::Map;
use tokio::sync::Semaphore;

use crate::config::CoreConfig;
use crate::error::AuthError;
use password::Scheme;
pub use psk::PskKey;

/// A device whose identity was proven.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthenticatedDevice {
    /// The device's tenant.
    pub tenant_id: TenantId,
    /// The device (for a gateway: the gateway itself).
    pub device_id: DeviceId,
    /// The identity it presented (the part of the username before `@`, or a certificate's DN).
    pub auth_id: String,
}

/// Authenticates devices against the registry's credentials. Cheap to clone.
#[derive(Clone)]
pub struct Authenticator {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Arc<dyn DeviceRegistry>,
    bcrypt_permits: Arc<Semaphore>,
    bcrypt_max_cost: u32,
    verified: moka::future::Cache<[u8; 32], ()>,
    /// bcrypt computations started, for tests of the coalescing.
    #[cfg(test)]
    bcrypt_runs: std::sync::atomic::AtomicUsize,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("bcrypt_max_cost", &self.inner.bcrypt_max_cost)
            .finish_non_exhaustive()
    }
}

/// Splits `auth-id@tenant` at the first `@`.
fn split_username(username: &str) -> Result<(&str, TenantId), AuthError> {
    let (auth_id, tenant) = username
        .split_once('@')
        .ok_or(AuthError::MalformedUsername)?;
    if auth_id.is_empty() {
        return Err(AuthError::MalformedUsername);
    }
    let tenant = TenantId::parse(tenant).map_err(|_| AuthError::MalformedUsername)?;
    Ok((auth_id, tenant))
}

impl Authenticator {
    /// An authenticator asking `registry` (which should be the cached one).
    pub fn new(registry: Arc<dyn DeviceRegistry>, config: &CoreConfig) -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self {
            inner: Arc::new(Inner {
                registry,
                bcrypt_permits: Arc::new(Semaphore::new(cores)),
                bcrypt_max_cost: config.bcrypt_max_cost,
                verified: moka::future::Cache::builder()
                    .max_capacity(100_000)
                    .time_to_live(config.auth_cache_ttl)
                    .build(),
                #[cfg(test)]
                bcrypt_runs: std::sync::atomic::AtomicUsize::new(0),
            }),
        }
    }

    /// Whether `other` is a clone of this authenticator (same cache and bcrypt bound).
    #[cfg(test)]
    pub(crate) fn is_shared_with(&self, other: &Authenticator) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// Authenticates `auth-id@tenant` with a password against its `hashed-password` credentials.
    pub async fn authenticate_password(
        &self,
        username: &str,
        password: &str,
    ) -> Result<AuthenticatedDevice, AuthError> {
        let (auth_id, tenant_id) = split_username(username)?;
        let credentials = self
            .inner
            .registry
            .get_credentials(
                &tenant_id,
                CredentialType::HashedPassword,
                auth_id,
                &Map::new(),
            )
            .await
            .map_err(|e| match e {
                RegistryError::NotFound
                | RegistryError::Forbidden(_)
                | RegistryError::BadRequest(_) => AuthError::UnknownCredentials,
                RegistryError::Unavailable(m) => AuthError::RegistryUnavailable(m),
            })?
            .payload;
        self.check(&credentials, password).await?;
        Ok(AuthenticatedDevice {
            tenant_id,
            device_id: credentials.device_id.clone(),
            auth_id: auth_id.to_owned(),
        })
    }

    /// Checks `password` against the enabled, currently valid secrets of `credentials`.
    async fn check(
        &self,
        credentials: &CredentialsObject,
        password: &str,
    ) -> Result<(), AuthError> {
        if !credentials.enabled {
            return Err(AuthError::CredentialsDisabled);
        }
        let now = Utc::now();
        if !credentials.secrets.iter().any(|s| s.is_valid_at(now)) {
            return Err(AuthError::NoValidSecret);
        }
        for secret in &credentials.secrets {
            if secret.is_valid_at(now) && self.matches(secret, password, &credentials.auth_id).await
            {
                return Ok(());
            }
        }
        Err(AuthError::WrongPassword)
    }

    async fn matches(&self, secret: &Secret, password: &str, auth_id: &str) -> bool {
        match password::scheme(secret) {
            Scheme::Sha(sha512) => password::sha_matches(secret, sha512, password),
            Scheme::Bcrypt { hash, cost } => {
                self.bcrypt_matches(secret, hash, cost, password, auth_id)
                    .await
            }
            Scheme::Unusable(why) => {
                tracing::warn!(auth_id, reason = why, "skipping unusable password secret");
                false
            }
        }
    }

    async fn bcrypt_matches(
        &self,
        secret: &Secret,
        hash: &str,
        cost: u32,
        password: &str,
        auth_id: &str,
    ) -> bool {
        let max = self.inner.bcrypt_max_cost;
        if cost > max {
            tracing::warn!(
                auth_id,
                cost,
                max,
                "refusing bcrypt hash with a cost above the maximum"
            );
            return false;
        }
        let key = password::cache_key(secret, password);
        // Concurrent checks of the same password against the same hash (a reconnect storm of
        // devices sharing credentials) wait for one bcrypt run; only a match is remembered.
        let verify = async {
            let permit = Arc::clone(&self.inner.bcrypt_permits)
                .acquire_owned()
                .await
                .map_err(|_| BcryptFailure::Mismatch)?;
            #[cfg(test)]
            self.inner
                .bcrypt_runs
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let (hash, candidate) = (hash.to_owned(), password.to_owned());
            // The permit moves into the blocking task: if the caller gives up (the device hung
            // up), the computation still counts against the bound until it really ends.
            let outcome = tokio::task::spawn_blocking(move || {
                let outcome = bcrypt::verify(candidate, &hash);
                drop(permit);
                outcome
            })
            .await;
            match outcome {
                Ok(Ok(true)) => Ok(()),
                Ok(Ok(false)) => Err(BcryptFailure::Mismatch),
                Ok(Err(e)) => Err(BcryptFailure::Unusable(e.to_string())),
                Err(e) => Err(BcryptFailure::TaskFailed(e.to_string())),
            }
        };
        match self.inner.verified.try_get_with(key, verify).await {
            Ok(()) => true,
            Err(failure) => {
                match failure.as_ref() {
                    BcryptFailure::Mismatch => {}
                    BcryptFailure::Unusable(e) => {
                        tracing::warn!(auth_id, error = %e, "stored bcrypt hash cannot be checked");
                    }
                    BcryptFailure::TaskFailed(e) => {
                        tracing::error!(auth_id, error = %e, "bcrypt task failed");
                    }
                }
                false
            }
        }
    }
}

/// Why a bcrypt check did not match.
#[derive(Debug)]
enum BcryptFailure {
    /// The password is not the one hashed (or the check was shut down).
    Mismatch,
    /// The stored hash cannot be checked.
    Unusable(String),
    /// The blocking task did not finish.
    TaskFailed(String),
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod x509_tests;
