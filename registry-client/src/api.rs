//! The three service APIs adapters use, as async traits over Hono's objects.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Map, Value};

use crate::{
    CredentialType, CredentialsObject, DeviceId, RegistrationAssertion, TenantId, TenantObject,
};

/// How long an answer may be cached (Hono's `cache_control` application property).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheDirective {
    /// `no-cache`.
    NoCache,
    /// `max-age = N`.
    MaxAge(Duration),
    /// No directive given: the cache applies its default.
    Default,
}

impl CacheDirective {
    /// Parses Hono's `cache_control` value (`max-age = 180`, `no-cache`).
    pub fn parse(value: &str) -> Self {
        let value = value.trim();
        if value.eq_ignore_ascii_case("no-cache") {
            return CacheDirective::NoCache;
        }
        value
            .strip_prefix("max-age")
            .and_then(|rest| rest.trim_start().strip_prefix('='))
            .and_then(|n| n.trim().parse::<u64>().ok())
            .map(|secs| CacheDirective::MaxAge(Duration::from_secs(secs)))
            .unwrap_or(CacheDirective::Default)
    }

    /// Hono's textual form, or `None` for [`CacheDirective::Default`].
    pub fn to_header(self) -> Option<String> {
        match self {
            CacheDirective::NoCache => Some("no-cache".to_owned()),
            CacheDirective::MaxAge(d) => Some(format!("max-age = {}", d.as_secs())),
            CacheDirective::Default => None,
        }
    }
}

/// A successful answer of a registry service.
#[derive(Debug, PartialEq)]
pub struct Response<T> {
    /// The object.
    pub payload: Arc<T>,
    /// How long it may be cached.
    pub cache: CacheDirective,
    /// True when the registry created the object to answer (auto-provisioning; status 201).
    pub created: bool,
}

impl<T> Clone for Response<T> {
    fn clone(&self) -> Self {
        Self {
            payload: Arc::clone(&self.payload),
            cache: self.cache,
            created: self.created,
        }
    }
}

impl<T> Response<T> {
    /// A plain 200 answer with the given cache directive.
    pub fn ok(payload: T, cache: CacheDirective) -> Self {
        Self {
            payload: Arc::new(payload),
            cache,
            created: false,
        }
    }
}

/// Why a registry service did not answer with an object.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// 404: no such tenant, device or credentials (or disabled, where Hono hides that).
    #[error("not found")]
    NotFound,
    /// 403: the request is not allowed, e.g. a gateway not in the device's `via`.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// 400: the request was malformed.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// 503 or any failure to reach the registry: the caller may retry later.
    #[error("registry unavailable: {0}")]
    Unavailable(String),
}

/// The message of the 403 a registration assertion gets for a device that was provisioned by a
/// CA with `claim-required` and that its owner has not claimed yet (Ferry's extension). On the
/// wire it is a plain 403 with this text, so Hono's adapters refuse the device as well.
pub const DEVICE_NOT_CLAIMED: &str = "device is not claimed";

impl RegistryError {
    /// The 403 for a device that waits for its owner's claim.
    pub fn not_claimed() -> Self {
        RegistryError::Forbidden(DEVICE_NOT_CLAIMED.to_owned())
    }

    /// Whether this is the answer for a device that waits for its owner's claim.
    pub fn is_not_claimed(&self) -> bool {
        matches!(self, RegistryError::Forbidden(m) if m == DEVICE_NOT_CLAIMED)
    }
}

/// Hono's Tenant API.
#[async_trait]
pub trait TenantApi: Send + Sync {
    /// `get` with `{"tenant-id": ...}` (also matches tenant aliases).
    async fn get_tenant(
        &self,
        tenant_id: &TenantId,
    ) -> Result<Response<TenantObject>, RegistryError>;

    /// `get` with `{"subject-dn": ...}`: the tenant trusting the CA with that RFC 2253 subject DN.
    async fn get_tenant_by_ca(
        &self,
        subject_dn: &str,
    ) -> Result<Response<TenantObject>, RegistryError>;
}

/// Hono's Credentials API.
#[async_trait]
pub trait CredentialsApi: Send + Sync {
    /// `get` with `type`, `auth-id` and the client context (extra top-level members, e.g.
    /// `client-certificate`, which lets the registry auto-provision).
    async fn get_credentials(
        &self,
        tenant_id: &TenantId,
        credential_type: CredentialType,
        auth_id: &str,
        client_context: &Map<String, Value>,
    ) -> Result<Response<CredentialsObject>, RegistryError>;
}

/// Hono's Device Registration API.
#[async_trait]
pub trait RegistrationApi: Send + Sync {
    /// `assert`: the device exists and is enabled; with a gateway, the gateway may act for it.
    async fn assert_registration(
        &self,
        tenant_id: &TenantId,
        device_id: &DeviceId,
        gateway_id: Option<&DeviceId>,
    ) -> Result<Response<RegistrationAssertion>, RegistryError>;
}

/// All three service APIs, as adapters need them.
pub trait DeviceRegistry: TenantApi + CredentialsApi + RegistrationApi {}

impl<T: TenantApi + CredentialsApi + RegistrationApi> DeviceRegistry for T {}

/// What changed in the registry, so caches and open connections can follow at once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegistryChange {
    /// A tenant was created, updated or deleted.
    Tenant {
        /// The tenant.
        tenant_id: TenantId,
    },
    /// A device was created, updated or deleted.
    Device {
        /// Its tenant.
        tenant_id: TenantId,
        /// The device.
        device_id: DeviceId,
    },
    /// A device's credentials were replaced or deleted.
    Credentials {
        /// Its tenant.
        tenant_id: TenantId,
        /// The device.
        device_id: DeviceId,
    },
    /// Every device of a tenant was deleted.
    AllDevicesOfTenant {
        /// The tenant.
        tenant_id: TenantId,
    },
}

/// Told synchronously about every committed registry change, before the change is acknowledged.
pub trait ChangeListener: Send + Sync {
    /// Called after a change was committed.
    fn registry_changed(&self, change: &RegistryChange);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cache_directives_as_hono_writes_them() {
        assert_eq!(
            CacheDirective::parse("max-age = 180"),
            CacheDirective::MaxAge(Duration::from_secs(180))
        );
        assert_eq!(
            CacheDirective::parse("max-age=5"),
            CacheDirective::MaxAge(Duration::from_secs(5))
        );
        assert_eq!(CacheDirective::parse("no-cache"), CacheDirective::NoCache);
        assert_eq!(CacheDirective::parse("private"), CacheDirective::Default);
        assert_eq!(
            CacheDirective::MaxAge(Duration::from_secs(7)).to_header(),
            Some("max-age = 7".to_owned())
        );
    }
}
