//! Management operations on [`Registry`]: checks, storage, then change notifications.
//!
//! The HTTP layer (`management`) only parses requests and maps results; everything a second
//! front end (bulk provisioning, a CLI) would need lives here.

use chrono::Utc;
use ferry_registry_client::{DeviceId, RegistryChange, TenantId};
use serde_json::{Map, Value};

use crate::Registry;
use crate::error::ManageError;
use crate::model::{credentials, device, new_id, tenant};
use crate::store::{DeviceRecord, Versioned};

/// A created resource: its id and version.
pub(crate) struct Created<Id> {
    pub id: Id,
    pub version: String,
}

fn generated<T: std::str::FromStr>() -> Result<T, ManageError> {
    new_id()
        .parse()
        .map_err(|_| ManageError::Internal("generated id is invalid".into()))
}

impl Registry {
    pub(crate) async fn create_tenant(
        &self,
        id: Option<TenantId>,
        body: Value,
    ) -> Result<Created<TenantId>, ManageError> {
        let id = match id {
            Some(id) => id,
            None => generated()?,
        };
        let record = tenant::prepare(id.clone(), body)?;
        let version = self.store().create_tenant(record).await?;
        self.notify(&[RegistryChange::Tenant {
            tenant_id: id.clone(),
        }]);
        Ok(Created { id, version })
    }

    pub(crate) async fn read_tenant(
        &self,
        id: &TenantId,
    ) -> Result<Versioned<Map<String, Value>>, ManageError> {
        let t = self
            .store()
            .get_tenant(id)
            .await?
            .ok_or(ManageError::NotFound)?;
        Ok(Versioned {
            version: t.version,
            value: t.value.doc,
        })
    }

    pub(crate) async fn update_tenant(
        &self,
        id: &TenantId,
        body: Value,
        if_match: Option<String>,
    ) -> Result<String, ManageError> {
        let record = tenant::prepare(id.clone(), body)?;
        let version = self.store().update_tenant(record, if_match).await?;
        self.notify(&[RegistryChange::Tenant {
            tenant_id: id.clone(),
        }]);
        Ok(version)
    }

    pub(crate) async fn delete_tenant(
        &self,
        id: &TenantId,
        if_match: Option<String>,
    ) -> Result<(), ManageError> {
        self.store().delete_tenant(id, if_match).await?;
        self.notify(&[
            RegistryChange::Tenant {
                tenant_id: id.clone(),
            },
            RegistryChange::AllDevicesOfTenant {
                tenant_id: id.clone(),
            },
        ]);
        Ok(())
    }

    /// Every tenant as `{"id": ..., ...}` (the search result form).
    pub(crate) async fn all_tenants(&self) -> Result<Vec<Value>, ManageError> {
        Ok(self
            .store()
            .list_tenants()
            .await?
            .into_iter()
            .map(|t| with_id(t.value.id.as_str(), t.value.doc))
            .collect())
    }

    async fn tenant_doc(&self, tenant: &TenantId) -> Result<Map<String, Value>, ManageError> {
        Ok(self
            .store()
            .get_tenant(tenant)
            .await?
            .ok_or(ManageError::NotFound)?
            .value
            .doc)
    }

    pub(crate) async fn create_device(
        &self,
        tenant: &TenantId,
        id: Option<DeviceId>,
        body: Value,
        user: Option<&str>,
    ) -> Result<Created<DeviceId>, ManageError> {
        let tenant_doc = self.tenant_doc(tenant).await?;
        let id = match id {
            Some(id) => id,
            None => generated()?,
        };
        let doc = device::prepare(body, None, user, Utc::now())?;
        let record = DeviceRecord {
            id: id.clone(),
            doc,
        };
        let version = self
            .store()
            .create_device(tenant, record, Vec::new(), tenant::max_devices(&tenant_doc))
            .await?;
        self.notify(&[RegistryChange::Device {
            tenant_id: tenant.clone(),
            device_id: id.clone(),
        }]);
        Ok(Created { id, version })
    }

    pub(crate) async fn read_device(
        &self,
        tenant: &TenantId,
        id: &DeviceId,
    ) -> Result<Versioned<Map<String, Value>>, ManageError> {
        let d = self
            .store()
            .get_device(tenant, id)
            .await?
            .ok_or(ManageError::NotFound)?;
        Ok(Versioned {
            version: d.version,
            value: d.value.doc,
        })
    }

    pub(crate) async fn update_device(
        &self,
        tenant: &TenantId,
        id: &DeviceId,
        body: Value,
        if_match: Option<String>,
        user: Option<&str>,
    ) -> Result<String, ManageError> {
        let previous = self.read_device(tenant, id).await?;
        let doc = device::prepare(body, Some(&previous.value), user, Utc::now())?;
        let expected = if_match.or(Some(previous.version));
        let record = DeviceRecord {
            id: id.clone(),
            doc,
        };
        let version = self.store().update_device(tenant, record, expected).await?;
        self.notify(&[RegistryChange::Device {
            tenant_id: tenant.clone(),
            device_id: id.clone(),
        }]);
        Ok(version)
    }

    pub(crate) async fn delete_device(
        &self,
        tenant: &TenantId,
        id: &DeviceId,
        if_match: Option<String>,
    ) -> Result<(), ManageError> {
        self.store().delete_device(tenant, id, if_match).await?;
        self.notify(&[
            RegistryChange::Device {
                tenant_id: tenant.clone(),
                device_id: id.clone(),
            },
            RegistryChange::Credentials {
                tenant_id: tenant.clone(),
                device_id: id.clone(),
            },
        ]);
        Ok(())
    }

    pub(crate) async fn delete_all_devices(&self, tenant: &TenantId) -> Result<(), ManageError> {
        self.store().delete_all_devices(tenant).await?;
        self.notify(&[RegistryChange::AllDevicesOfTenant {
            tenant_id: tenant.clone(),
        }]);
        Ok(())
    }

    /// Every device of a tenant as `{"id": ..., ...}`; 404 without the tenant.
    pub(crate) async fn all_devices(&self, tenant: &TenantId) -> Result<Vec<Value>, ManageError> {
        self.tenant_doc(tenant).await?;
        Ok(self
            .store()
            .list_devices(tenant)
            .await?
            .into_iter()
            .map(|d| with_id(d.value.id.as_str(), d.value.doc))
            .collect())
    }

    pub(crate) async fn read_credentials(
        &self,
        tenant: &TenantId,
        id: &DeviceId,
    ) -> Result<Versioned<Vec<Value>>, ManageError> {
        let set = self
            .store()
            .get_credentials(tenant, id)
            .await?
            .ok_or(ManageError::NotFound)?;
        Ok(Versioned {
            version: set.version,
            value: set.value.iter().map(credentials::management_view).collect(),
        })
    }

    pub(crate) async fn update_credentials(
        &self,
        tenant: &TenantId,
        id: &DeviceId,
        body: Value,
        if_match: Option<String>,
    ) -> Result<String, ManageError> {
        let tenant_doc = self.tenant_doc(tenant).await?;
        let existing = self
            .store()
            .get_credentials(tenant, id)
            .await?
            .ok_or(ManageError::NotFound)?;
        if let Some(max) = tenant::max_credentials_per_device(&tenant_doc)
            && body.as_array().is_some_and(|a| a.len() as u64 > max)
        {
            return Err(ManageError::Forbidden(format!(
                "the tenant's registration limit of {max} credentials per device is exceeded"
            )));
        }
        let cost = self.config().bcrypt_cost;
        let stored = existing.value;
        let set = tokio::task::spawn_blocking(move || credentials::prepare(body, &stored, cost))
            .await
            .map_err(|e| ManageError::Internal(e.to_string()))??;
        let expected = if_match.or(Some(existing.version));
        let version = self
            .store()
            .set_credentials(tenant, id, set, expected)
            .await?;
        self.notify(&[RegistryChange::Credentials {
            tenant_id: tenant.clone(),
            device_id: id.clone(),
        }]);
        Ok(version)
    }
}

fn with_id(id: &str, doc: Map<String, Value>) -> Value {
    let mut out = Map::with_capacity(doc.len() + 1);
    out.insert("id".into(), id.into());
    out.extend(doc);
    Value::Object(out)
}
