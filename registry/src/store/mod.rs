//! Storage behind the [`Store`] trait.
//!
//! Tenants, devices and credentials are kept as JSON documents beside the columns the database
//! must keep unique: (tenant, device-id), (tenant, credential type, auth-id), the tenant alias and
//! each trusted CA subject DN (per trust anchor group). Ownership codes for claiming are kept
//! hashed, by tenant and certificate subject DN. Every tenant and device row carries a version (the HTTP `ETag`);
//! a device's credential set has a version of its own. Deleting a tenant deletes its devices,
//! deleting a device deletes its credentials. Implementations: [`sqlite::SqliteStore`]; a
//! PostgreSQL one can follow behind the same trait.

pub mod sqlite;

use async_trait::async_trait;
use ferry_registry_client::{CredentialType, DeviceId, TenantId};
use serde_json::{Map, Value};

/// A storage operation failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The tenant or device does not exist.
    #[error("not found")]
    NotFound,
    /// A uniqueness constraint was violated; the text says which.
    #[error("{0}")]
    Conflict(String),
    /// The expected version did not match.
    #[error("version mismatch")]
    PreconditionFailed,
    /// A registration limit of the tenant would be exceeded.
    #[error("{0}")]
    LimitExceeded(String),
    /// The database failed.
    #[error("storage failure: {0}")]
    Backend(String),
}

/// A stored value with its version.
#[derive(Clone, Debug, PartialEq)]
pub struct Versioned<T> {
    /// The version (ETag without quotes).
    pub version: String,
    /// The value.
    pub value: T,
}

/// A tenant as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct TenantRecord {
    /// The tenant id.
    pub id: TenantId,
    /// Its alias, unique over all tenants.
    pub alias: Option<String>,
    /// Distinct subject DNs of its trusted CAs, each unique over all tenants unless the tenants
    /// share a trust anchor group.
    pub ca_subjects: Vec<String>,
    /// Its `trust-anchor-group` (non-empty), which lets it share CA subject DNs with the other
    /// tenants of the group.
    pub trust_anchor_group: Option<String>,
    /// The Management API document (without the id).
    pub doc: Map<String, Value>,
}

impl TenantRecord {
    /// The non-empty `trust-anchor-group` of a tenant document.
    pub fn anchor_group_of(doc: &Map<String, Value>) -> Option<String> {
        doc.get("trust-anchor-group")
            .and_then(Value::as_str)
            .filter(|g| !g.is_empty())
            .map(str::to_owned)
    }
}

/// One credential (type and auth-id) of a device, as stored (secrets with hashes and keys).
#[derive(Clone, Debug, PartialEq)]
pub struct CredentialRecord {
    /// The type.
    pub credential_type: CredentialType,
    /// The auth-id.
    pub auth_id: String,
    /// The whole entry (`type`, `auth-id`, `enabled`, `ext`, `secrets`).
    pub doc: Map<String, Value>,
}

/// A device as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct DeviceRecord {
    /// The device id.
    pub id: DeviceId,
    /// The Management API document (including `status`).
    pub doc: Map<String, Value>,
}

/// A tenant-managed CA: its certificate and its sealed private key.
#[derive(Clone, PartialEq, Eq)]
pub struct TenantCaRecord {
    /// The CA id (also the `id` of its `trusted-ca` entry).
    pub id: String,
    /// The CA certificate, DER.
    pub cert: Vec<u8>,
    /// The private key, sealed (never stored in the clear).
    pub sealed_key: Vec<u8>,
}

impl std::fmt::Debug for TenantCaRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantCaRecord")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// A change with an optional expected version (`If-Match`).
pub type Expected = Option<String>;

/// The registry's storage. Methods are async so that blocking databases run off the runtime.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Creates a tenant; `Conflict` for a used id, alias or CA subject DN (a DN may be shared
    /// only by tenants of one trust anchor group).
    async fn create_tenant(&self, tenant: TenantRecord) -> Result<String, StoreError>;
    /// The tenant with this id.
    async fn get_tenant(
        &self,
        id: &TenantId,
    ) -> Result<Option<Versioned<TenantRecord>>, StoreError>;
    /// The tenant with this alias.
    async fn find_tenant_by_alias(
        &self,
        alias: &str,
    ) -> Result<Option<Versioned<TenantRecord>>, StoreError>;
    /// The tenants trusting a CA with this subject DN: one, or several of one trust anchor group.
    async fn find_tenants_by_ca(
        &self,
        subject_dn: &str,
    ) -> Result<Vec<Versioned<TenantRecord>>, StoreError>;
    /// Replaces a tenant; returns the new version.
    async fn update_tenant(
        &self,
        tenant: TenantRecord,
        expected: Expected,
    ) -> Result<String, StoreError>;
    /// Deletes a tenant with its devices and credentials.
    async fn delete_tenant(&self, id: &TenantId, expected: Expected) -> Result<(), StoreError>;
    /// Every tenant.
    async fn list_tenants(&self) -> Result<Vec<Versioned<TenantRecord>>, StoreError>;

    /// Creates a device, and in the same transaction its credentials (auto-provisioning).
    /// `NotFound` without the tenant; `LimitExceeded` if the tenant already has `max_devices`.
    async fn create_device(
        &self,
        tenant: &TenantId,
        device: DeviceRecord,
        credentials: Vec<CredentialRecord>,
        max_devices: Option<u64>,
    ) -> Result<String, StoreError>;
    /// One device.
    async fn get_device(
        &self,
        tenant: &TenantId,
        device: &DeviceId,
    ) -> Result<Option<Versioned<DeviceRecord>>, StoreError>;
    /// Replaces a device document; returns the new version.
    async fn update_device(
        &self,
        tenant: &TenantId,
        device: DeviceRecord,
        expected: Expected,
    ) -> Result<String, StoreError>;
    /// Deletes a device and its credentials.
    async fn delete_device(
        &self,
        tenant: &TenantId,
        device: &DeviceId,
        expected: Expected,
    ) -> Result<(), StoreError>;
    /// Deletes every device of a tenant; `NotFound` without the tenant.
    async fn delete_all_devices(&self, tenant: &TenantId) -> Result<(), StoreError>;
    /// Every device of a tenant.
    async fn list_devices(
        &self,
        tenant: &TenantId,
    ) -> Result<Vec<Versioned<DeviceRecord>>, StoreError>;

    /// Ids of the tenant's devices that are member (`memberOf`) of any of `groups`.
    async fn group_members(
        &self,
        tenant: &TenantId,
        groups: &[String],
    ) -> Result<Vec<DeviceId>, StoreError>;

    /// A device's credential set with its version; `None` if the device does not exist.
    async fn get_credentials(
        &self,
        tenant: &TenantId,
        device: &DeviceId,
    ) -> Result<Option<Versioned<Vec<CredentialRecord>>>, StoreError>;
    /// Replaces a device's credential set; returns its new version.
    async fn set_credentials(
        &self,
        tenant: &TenantId,
        device: &DeviceId,
        credentials: Vec<CredentialRecord>,
        expected: Expected,
    ) -> Result<String, StoreError>;
    /// The credential with this type and auth-id, and the device it belongs to.
    async fn find_credentials(
        &self,
        tenant: &TenantId,
        credential_type: CredentialType,
        auth_id: &str,
    ) -> Result<Option<(DeviceId, CredentialRecord)>, StoreError>;

    /// Stores a tenant CA; `Conflict` if the id is used, `NotFound` without the tenant.
    async fn put_tenant_ca(&self, tenant: &TenantId, ca: TenantCaRecord) -> Result<(), StoreError>;
    /// A tenant CA.
    async fn get_tenant_ca(
        &self,
        tenant: &TenantId,
        ca_id: &str,
    ) -> Result<Option<TenantCaRecord>, StoreError>;

    /// Sets (replacing) the hashed ownership code for device certificates with this subject DN;
    /// `NotFound` without the tenant.
    async fn set_ownership_code(
        &self,
        tenant: &TenantId,
        subject_dn: &str,
        code_hash: &str,
    ) -> Result<(), StoreError>;
    /// The hashed ownership code for certificates with this subject DN.
    async fn get_ownership_code(
        &self,
        tenant: &TenantId,
        subject_dn: &str,
    ) -> Result<Option<String>, StoreError>;

    /// Creates many devices with their credentials in one transaction; each row succeeds or
    /// fails on its own (in order).
    async fn create_devices(
        &self,
        tenant: &TenantId,
        rows: Vec<(DeviceRecord, Vec<CredentialRecord>)>,
        max_devices: Option<u64>,
    ) -> Result<Vec<Result<String, StoreError>>, StoreError>;
}
