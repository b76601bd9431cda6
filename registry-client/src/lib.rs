//! Hono's Tenant, Credentials and Device Registration APIs as Rust traits.
//!
//! The types mirror Hono's JSON objects (hono-api.md §7–§9). [`Cached`] wraps any backend with a
//! moka cache that follows Hono's cache directives and drops entries the moment the registry
//! reports a change ([`ChangeListener`]). The embedded registry implements the traits in-process.

mod api;
mod cache;
mod credentials;
mod ids;
mod registration;
pub mod template;
mod tenant;
#[cfg(feature = "test-pki")]
pub mod test_pki;
pub mod trust;
pub mod x509;

pub use api::{
    CacheDirective, ChangeListener, CredentialsApi, DEVICE_NOT_CLAIMED, DeviceRegistry,
    RegistrationApi, RegistryChange, RegistryError, Response, TenantApi,
};
pub use cache::{CacheConfig, Cached};
pub use credentials::{CredentialType, CredentialsObject, Secret};
pub use ids::{DeviceId, InvalidId, TenantId};
pub use registration::RegistrationAssertion;
pub use tenant::{AdapterAccess, AdapterConfig, TenantObject, TrustedCa};
