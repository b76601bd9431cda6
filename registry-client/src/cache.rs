//! A moka cache in front of any registry backend, following Hono's caching rules.
//!
//! Positive answers live as long as their cache directive says (capped), or a default when there
//! is none; `404`/`403` answers are cached briefly; failures to reach the registry are never cached.
//! Concurrent lookups of one key share a single backend call. [`Cached`] is a [`ChangeListener`]:
//! the registry tells it what changed before acknowledging the change, so nothing stale is served.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use moka::Expiry;
use moka::future::Cache;
use serde_json::{Map, Value};

use crate::{
    CacheDirective, ChangeListener, CredentialType, CredentialsApi, CredentialsObject, DeviceId,
    DeviceRegistry, RegistrationApi, RegistrationAssertion, RegistryChange, RegistryError,
    Response, TenantApi, TenantId, TenantObject,
};

/// Cache sizes and lifetimes.
#[derive(Clone, Debug)]
pub struct CacheConfig {
    /// Maximum number of entries per cache (tenants, credentials, registrations).
    pub max_entries: u64,
    /// Lifetime of an answer without a cache directive (Hono: `responseCacheDefaultTimeout`).
    pub default_ttl: Duration,
    /// Upper bound for any `max-age`.
    pub max_ttl: Duration,
    /// Lifetime of a cached `404`/`403` answer.
    pub negative_ttl: Duration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            max_entries: 100_000,
            default_ttl: Duration::from_secs(600),
            max_ttl: Duration::from_secs(86_400),
            negative_ttl: Duration::from_secs(5),
        }
    }
}

/// A cached answer with its own lifetime.
struct Entry<T> {
    result: Result<Response<T>, RegistryError>,
    ttl: Duration,
}

impl<T> Clone for Entry<T> {
    fn clone(&self) -> Self {
        Self {
            result: self.result.clone(),
            ttl: self.ttl,
        }
    }
}

struct PerEntryTtl;

impl<K, T> Expiry<K, Entry<T>> for PerEntryTtl {
    fn expire_after_create(&self, _key: &K, value: &Entry<T>, _now: Instant) -> Option<Duration> {
        Some(value.ttl)
    }
}

#[derive(Clone, PartialEq, Eq, Hash)]
enum TenantKey {
    Id(TenantId),
    Ca(String),
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct CredentialsKey {
    tenant_id: TenantId,
    credential_type: CredentialType,
    auth_id: String,
    context_hash: u64,
}

type RegistrationKey = (TenantId, DeviceId, Option<DeviceId>);

/// A caching [`DeviceRegistry`] around a backend.
pub struct Cached<B> {
    backend: B,
    config: CacheConfig,
    tenants: Cache<TenantKey, Entry<TenantObject>>,
    credentials: Cache<CredentialsKey, Entry<CredentialsObject>>,
    registrations: Cache<RegistrationKey, Entry<RegistrationAssertion>>,
}

fn build<K, V>(config: &CacheConfig) -> Cache<K, Entry<V>>
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    Cache::builder()
        .max_capacity(config.max_entries)
        .expire_after(PerEntryTtl)
        .support_invalidation_closures()
        .build()
}

impl<B: DeviceRegistry> Cached<B> {
    /// Wraps `backend`.
    pub fn new(backend: B, config: CacheConfig) -> Self {
        Self {
            tenants: build(&config),
            credentials: build(&config),
            registrations: build(&config),
            backend,
            config,
        }
    }

    /// The wrapped backend.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    fn entry<T>(
        &self,
        result: Result<Response<T>, RegistryError>,
    ) -> Result<Entry<T>, RegistryError> {
        let ttl = match &result {
            // "Just created" is true once: the next lookup asks the backend again.
            Ok(r) if r.created => Duration::ZERO,
            Ok(r) => match r.cache {
                CacheDirective::NoCache => Duration::ZERO,
                CacheDirective::MaxAge(age) => age.min(self.config.max_ttl),
                CacheDirective::Default => self.config.default_ttl,
            },
            Err(RegistryError::NotFound | RegistryError::Forbidden(_)) => self.config.negative_ttl,
            Err(e) => return Err(e.clone()),
        };
        Ok(Entry { result, ttl })
    }
}

/// Turns the cache's shared loader error back into ours.
fn unshare(e: Arc<RegistryError>) -> RegistryError {
    Arc::unwrap_or_clone(e)
}

fn context_hash(context: &Map<String, Value>) -> u64 {
    if context.is_empty() {
        return 0;
    }
    let mut hasher = DefaultHasher::new();
    for (k, v) in context {
        k.hash(&mut hasher);
        v.to_string().hash(&mut hasher);
    }
    hasher.finish()
}

#[async_trait]
impl<B: DeviceRegistry> TenantApi for Cached<B> {
    async fn get_tenant(
        &self,
        tenant_id: &TenantId,
    ) -> Result<Response<TenantObject>, RegistryError> {
        self.tenants
            .try_get_with(TenantKey::Id(tenant_id.clone()), async {
                self.entry(self.backend.get_tenant(tenant_id).await)
            })
            .await
            .map_err(unshare)?
            .result
    }

    async fn get_tenant_by_ca(
        &self,
        subject_dn: &str,
    ) -> Result<Response<TenantObject>, RegistryError> {
        self.tenants
            .try_get_with(TenantKey::Ca(subject_dn.to_owned()), async {
                self.entry(self.backend.get_tenant_by_ca(subject_dn).await)
            })
            .await
            .map_err(unshare)?
            .result
    }
}

#[async_trait]
impl<B: DeviceRegistry> CredentialsApi for Cached<B> {
    async fn get_credentials(
        &self,
        tenant_id: &TenantId,
        credential_type: CredentialType,
        auth_id: &str,
        client_context: &Map<String, Value>,
    ) -> Result<Response<CredentialsObject>, RegistryError> {
        let key = CredentialsKey {
            tenant_id: tenant_id.clone(),
            credential_type,
            auth_id: auth_id.to_owned(),
            context_hash: context_hash(client_context),
        };
        self.credentials
            .try_get_with(key, async {
                self.entry(
                    self.backend
                        .get_credentials(tenant_id, credential_type, auth_id, client_context)
                        .await,
                )
            })
            .await
            .map_err(unshare)?
            .result
    }
}

#[async_trait]
impl<B: DeviceRegistry> RegistrationApi for Cached<B> {
    async fn assert_registration(
        &self,
        tenant_id: &TenantId,
        device_id: &DeviceId,
        gateway_id: Option<&DeviceId>,
    ) -> Result<Response<RegistrationAssertion>, RegistryError> {
        let key = (tenant_id.clone(), device_id.clone(), gateway_id.cloned());
        self.registrations
            .try_get_with(key, async {
                self.entry(
                    self.backend
                        .assert_registration(tenant_id, device_id, gateway_id)
                        .await,
                )
            })
            .await
            .map_err(unshare)?
            .result
    }
}

impl<B: Send + Sync> Cached<B> {
    fn drop_registrations(&self, tenant: &TenantId, device: Option<&DeviceId>) {
        let tenant = tenant.clone();
        let device = device.cloned();
        let outcome = self
            .registrations
            .invalidate_entries_if(move |(t, d, gw), _| {
                *t == tenant
                    && device
                        .as_ref()
                        .is_none_or(|dev| d == dev || gw.as_ref() == Some(dev))
            });
        if let Err(e) = outcome {
            tracing::error!(error = %e, "cannot invalidate cached registrations");
        }
    }

    fn drop_credentials(&self, tenant: &TenantId, device: Option<&DeviceId>) {
        let tenant = tenant.clone();
        let device = device.cloned();
        let outcome = self.credentials.invalidate_entries_if(move |key, entry| {
            key.tenant_id == tenant
                && match (&device, &entry.result) {
                    (None, _) | (_, Err(_)) => true,
                    (Some(dev), Ok(r)) => r.payload.device_id == *dev,
                }
        });
        if let Err(e) = outcome {
            tracing::error!(error = %e, "cannot invalidate cached credentials");
        }
    }
}

impl<B: Send + Sync> ChangeListener for Cached<B> {
    fn registry_changed(&self, change: &RegistryChange) {
        match change {
            RegistryChange::Tenant { tenant_id } => {
                self.tenants.invalidate_all();
                self.drop_registrations(tenant_id, None);
                self.drop_credentials(tenant_id, None);
            }
            RegistryChange::Device {
                tenant_id,
                device_id,
            } => {
                self.drop_registrations(tenant_id, Some(device_id));
                self.drop_credentials(tenant_id, Some(device_id));
            }
            RegistryChange::Credentials {
                tenant_id,
                device_id,
            } => self.drop_credentials(tenant_id, Some(device_id)),
            RegistryChange::AllDevicesOfTenant { tenant_id } => {
                self.drop_registrations(tenant_id, None);
                self.drop_credentials(tenant_id, None);
            }
        }
    }
}
