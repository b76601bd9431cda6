//! Hono's Tenant, Credentials and Device Registration APIs, answered in-process by [`Registry`].
//!
//! Every answer carries `max-age = cache_max_age`. An `x509-cert` lookup for an unknown auth-id
//! whose client context carries `client-certificate`, and an `assert` for an unknown device by a
//! provisioning gateway, auto-provision the device (module `provisioning`). Lookups of an
//! auto-provisioned device whose notification was not yet sent send it again. Assertions for a
//! device (or gateway) that waits for its owner's claim answer 403 (module `claim`).

use async_trait::async_trait;
use chrono::Utc;
use ferry_registry_client::x509::normalize_dn;
use ferry_registry_client::{
    CacheDirective, CredentialType, CredentialsApi, CredentialsObject, DeviceId, RegistrationApi,
    RegistrationAssertion, RegistryError, Response, TenantApi, TenantId, TenantObject,
};
use serde_json::{Map, Value};

use crate::Registry;
use crate::claim::unclaimed;
use crate::error::ManageError;
use crate::model::device::{strings, via};
use crate::model::{credentials, enabled, tenant};
use crate::provisioning::notification_pending;
use crate::store::{StoreError, TenantRecord, Versioned};

fn unavailable(e: impl std::fmt::Display) -> RegistryError {
    RegistryError::Unavailable(e.to_string())
}

impl From<StoreError> for RegistryError {
    fn from(e: StoreError) -> Self {
        unavailable(e)
    }
}

fn internal(e: ManageError) -> RegistryError {
    unavailable(e)
}

impl Registry {
    pub(crate) fn answer<T>(&self, payload: T) -> Response<T> {
        Response::ok(
            payload,
            CacheDirective::MaxAge(self.config().cache_max_age()),
        )
    }

    fn tenant_answer(&self, t: Versioned<TenantRecord>) -> Result<TenantObject, RegistryError> {
        tenant::tenant_object(&t.value.id, &t.value.doc, Utc::now()).map_err(internal)
    }
}

#[async_trait]
impl TenantApi for Registry {
    async fn get_tenant(
        &self,
        tenant_id: &TenantId,
    ) -> Result<Response<TenantObject>, RegistryError> {
        let found = match self.store().get_tenant(tenant_id).await? {
            Some(t) => Some(t),
            None => {
                self.store()
                    .find_tenant_by_alias(tenant_id.as_str())
                    .await?
            }
        };
        let t = found.ok_or(RegistryError::NotFound)?;
        Ok(self.answer(self.tenant_answer(t)?))
    }

    async fn get_tenant_by_ca(
        &self,
        subject_dn: &str,
    ) -> Result<Response<TenantObject>, RegistryError> {
        let normalized = normalize_dn(subject_dn).unwrap_or_else(|_| subject_dn.to_owned());
        let subject_dn = normalized.as_str();
        // Only tenants with a CA of this subject inside its validity period count.
        let mut trusting = Vec::new();
        for t in self.store().find_tenants_by_ca(subject_dn).await? {
            let object = self.tenant_answer(t)?;
            if object
                .trusted_ca
                .iter()
                .any(|ca| ca.subject_dn == subject_dn)
            {
                trusting.push(object);
            }
        }
        if trusting.len() > 1 {
            // Tenants of a trust anchor group share the CA: the issuer alone names no tenant,
            // so answer 404 as Hono does and let the adapter fall back to the SNI host name.
            let tenants: Vec<&str> = trusting.iter().map(|t| t.tenant_id.as_str()).collect();
            tracing::debug!(
                subject_dn,
                ?tenants,
                "CA shared by a trust anchor group: ambiguous"
            );
            return Err(RegistryError::NotFound);
        }
        let object = trusting.pop().ok_or(RegistryError::NotFound)?;
        Ok(self.answer(object))
    }
}

#[async_trait]
impl CredentialsApi for Registry {
    async fn get_credentials(
        &self,
        tenant_id: &TenantId,
        credential_type: CredentialType,
        auth_id: &str,
        client_context: &Map<String, Value>,
    ) -> Result<Response<CredentialsObject>, RegistryError> {
        if auth_id.is_empty() {
            return Err(RegistryError::BadRequest("auth-id is empty".into()));
        }
        let normalized = match credential_type {
            CredentialType::X509Cert => normalize_dn(auth_id).ok(),
            _ => None,
        };
        let auth_id = normalized.as_deref().unwrap_or(auth_id);
        let found = self
            .store()
            .find_credentials(tenant_id, credential_type, auth_id)
            .await?;
        let certificate = client_context
            .get("client-certificate")
            .and_then(Value::as_str)
            .filter(|_| credential_type == CredentialType::X509Cert);
        let (device, record) = match (found, certificate) {
            (Some(found), _) => found,
            (None, Some(certificate)) => {
                return self
                    .provision_by_certificate(tenant_id, auth_id, certificate)
                    .await;
            }
            (None, None) => return Err(RegistryError::NotFound),
        };
        if !enabled(&record.doc) {
            return Err(RegistryError::NotFound);
        }
        if credential_type == CredentialType::X509Cert
            && let Some(doc) = self.store().get_device(tenant_id, &device).await?
            && notification_pending(&doc.value.doc)
        {
            self.send_notification(tenant_id, &device, None).await;
        }
        Ok(self.answer(credentials::credentials_object(&device, &record).map_err(internal)?))
    }
}

#[async_trait]
impl RegistrationApi for Registry {
    async fn assert_registration(
        &self,
        tenant_id: &TenantId,
        device_id: &DeviceId,
        gateway_id: Option<&DeviceId>,
    ) -> Result<Response<RegistrationAssertion>, RegistryError> {
        if self.store().get_tenant(tenant_id).await?.is_none() {
            return Err(RegistryError::NotFound);
        }
        let device = match (
            self.store().get_device(tenant_id, device_id).await?,
            gateway_id,
        ) {
            (Some(d), _) => {
                if notification_pending(&d.value.doc) {
                    self.send_notification(tenant_id, device_id, gateway_id)
                        .await;
                }
                Some(d.value.doc)
            }
            (None, Some(gw)) => self.provision_by_gateway(tenant_id, device_id, gw).await?,
            (None, None) => None,
        };
        let device = device.filter(enabled).ok_or(RegistryError::NotFound)?;
        if unclaimed(&device) {
            return Err(RegistryError::not_claimed());
        }
        let mut via_ids = via(&device);
        let via_groups: Vec<String> = strings(&device, "viaGroups").map(str::to_owned).collect();
        if !via_groups.is_empty() {
            for member in self.store().group_members(tenant_id, &via_groups).await? {
                if !via_ids.contains(&member) {
                    via_ids.push(member);
                }
            }
        }
        if let Some(gw) = gateway_id {
            let gateway = self
                .store()
                .get_device(tenant_id, gw)
                .await?
                .map(|d| d.value.doc)
                .ok_or_else(|| RegistryError::Forbidden(format!("gateway {gw} is unknown")))?;
            if !enabled(&gateway) {
                return Err(RegistryError::Forbidden(format!(
                    "gateway {gw} is disabled"
                )));
            }
            if unclaimed(&gateway) {
                return Err(RegistryError::Forbidden(format!(
                    "gateway {gw} is not claimed"
                )));
            }
            if !via_ids.contains(gw) {
                return Err(RegistryError::Forbidden(format!(
                    "gateway {gw} may not act for device {device_id}"
                )));
            }
        }
        Ok(self.answer(assertion(device_id, &device, via_ids)))
    }
}

fn assertion(
    device_id: &DeviceId,
    device: &Map<String, Value>,
    via: Vec<DeviceId>,
) -> RegistrationAssertion {
    let mut extra = Map::new();
    for key in ["downstream-message-mapper", "upstream-message-mapper"] {
        if let Some(v) = device.get(key).filter(|v| !v.is_null()) {
            extra.insert(key.to_owned(), v.clone());
        }
    }
    if let Some(Value::Object(endpoint)) = device.get("command-endpoint") {
        let mut endpoint = endpoint.clone();
        if let Some(Value::String(uri)) = endpoint.get_mut("uri") {
            *uri = uri.replace("{{deviceId}}", device_id.as_str());
        }
        extra.insert("command-endpoint".into(), Value::Object(endpoint));
    }
    RegistrationAssertion {
        device_id: device_id.clone(),
        via,
        defaults: device
            .get("defaults")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default(),
        extra,
    }
}
