//! Auto-provisioning (hono-api.md §13): devices created on first contact.
//!
//! * **By certificate**: a Credentials `get` of type `x509-cert` for an unknown auth-id that
//!   carries `client-certificate` creates the device and its `x509-cert` credential in one
//!   store transaction, if the tenant's CA that issued the certificate (matched by issuer DN and
//!   within its validity window) has `auto-provisioning-enabled`. The registry checks the
//!   certificate itself (signature by the CA's key, validity, client-auth usage) and that it
//!   matches the auth-id: it never trusts the adapter blindly. The device id comes from the CA's
//!   `auto-provisioning-device-id-template` or is a UUID; `auto-provision-as-gateway` gives the
//!   device the `auto-provisioning-enabled` authority. Concurrent first contacts with one
//!   certificate create one device: the database's unique (tenant, type, auth-id) index decides
//!   and the losers read the winner's credentials.
//! * **By gateway**: an `assert` for an unknown device by a gateway with the
//!   `auto-provisioning-enabled` authority creates the device with `via` = the gateway and
//!   `viaGroups` = the gateway's `memberOf`.
//!
//! A CA with `claim-required` provisions its devices unclaimed (module `claim`).
//!
//! Either way a provisioning notification goes to the [`ProvisioningNotifier`] (the binary sends
//! it northbound as an event); once it was accepted, `status.auto-provisioning-notification-sent`
//! is set. While the flag is false, later lookups of the device send it again (at least once).

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::Utc;
use ferry_registry_client::trust::{self, RING_ALGORITHMS};
use ferry_registry_client::x509::normalize_dn;
use ferry_registry_client::{
    CredentialType, CredentialsObject, DeviceId, RegistryChange, RegistryError, Response, TenantId,
    TrustedCa, template,
};
use rustls_pki_types::CertificateDer;
use serde_json::{Map, Value, json};

use crate::Registry;
use crate::claim;
use crate::model::device::strings;
use crate::model::{credentials, format_time, new_id, tenant};
use crate::store::{CredentialRecord, DeviceRecord, StoreError};

/// The authority that lets a gateway provision devices (and that a CA may grant).
pub const AUTO_PROVISIONING_AUTHORITY: &str = "auto-provisioning-enabled";

/// Content type of Hono's device provisioning notification event.
pub const PROVISIONING_NOTIFICATION: &str =
    "application/vnd.eclipse-hono-device-provisioning-notification";

/// A device was auto-provisioned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProvisioningNotice {
    /// Its tenant.
    pub tenant_id: TenantId,
    /// The new device.
    pub device_id: DeviceId,
    /// The gateway it was provisioned by, if any.
    pub gateway_id: Option<DeviceId>,
    /// The device waits for its owner's claim (its CA has `claim-required`); Ferry adds the
    /// application property `ferry_unclaimed=true` to the event.
    pub unclaimed: bool,
}

/// The notification could not be delivered; it is sent again on a later lookup.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("provisioning notification not delivered: {0}")]
pub struct NotifyError(pub String);

/// Delivers provisioning notifications (Hono: an event to `event/TENANT` with content type
/// [`PROVISIONING_NOTIFICATION`], `hono_registration_status=NEW`, `orig_adapter` =
/// `hono-device-registry`).
#[async_trait]
pub trait ProvisioningNotifier: Send + Sync {
    /// Returns once the notification was accepted durably (an event stored by the northbound).
    async fn device_provisioned(&self, notice: &ProvisioningNotice) -> Result<(), NotifyError>;
}

/// Notifications being sent right now, so concurrent lookups do not send duplicates.
#[derive(Default)]
pub(crate) struct InFlight(Mutex<HashSet<(TenantId, DeviceId)>>);

struct InFlightGuard<'a> {
    set: &'a InFlight,
    key: (TenantId, DeviceId),
}

impl InFlight {
    fn enter(&self, key: (TenantId, DeviceId)) -> Option<InFlightGuard<'_>> {
        // The lock is released before a guard exists: a guard's drop takes it again (and a
        // guard must only be made when the key was inserted, or its drop would remove the key
        // of the notification in flight).
        let inserted = self
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key.clone());
        inserted.then(|| InFlightGuard { set: self, key })
    }
}

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        self.set
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.key);
    }
}

fn bad(msg: impl Into<String>) -> RegistryError {
    RegistryError::BadRequest(msg.into())
}

fn store_error(e: StoreError) -> RegistryError {
    match e {
        StoreError::NotFound => RegistryError::NotFound,
        StoreError::Conflict(m) | StoreError::LimitExceeded(m) => RegistryError::Forbidden(m),
        other => RegistryError::Unavailable(other.to_string()),
    }
}

/// The status of a device created by auto-provisioning.
fn provisioned_status() -> Value {
    json!({
        "created": format_time(Utc::now()),
        "auto-provisioned": true,
        "auto-provisioning-notification-sent": false,
    })
}

/// Whether a device document still waits for its provisioning notification.
pub(crate) fn notification_pending(doc: &Map<String, Value>) -> bool {
    let status = doc.get("status");
    let flag = |key| status.and_then(|s| s.get(key)).and_then(Value::as_bool);
    flag("auto-provisioned") == Some(true)
        && flag("auto-provisioning-notification-sent") != Some(true)
}

impl Registry {
    /// Sets where provisioning notifications go. Without one, none are sent and the
    /// `auto-provisioning-notification-sent` flags stay false.
    pub fn set_provisioning_notifier(&self, notifier: Arc<dyn ProvisioningNotifier>) {
        if let Ok(mut slot) = self.inner.notifier.write() {
            *slot = Some(notifier);
        }
    }

    fn notifier(&self) -> Option<Arc<dyn ProvisioningNotifier>> {
        self.inner.notifier.read().ok()?.clone()
    }

    /// Certificate-based auto-provisioning for an unknown `auth_id` (see the module docs).
    pub(crate) async fn provision_by_certificate(
        &self,
        tenant_id: &TenantId,
        auth_id: &str,
        certificate: &str,
    ) -> Result<Response<CredentialsObject>, RegistryError> {
        let der = STANDARD
            .decode(certificate.trim())
            .map_err(|_| bad("client-certificate is not Base64"))?;
        let chain = [CertificateDer::from(der)];
        let names = trust::chain_names(&chain).map_err(|e| bad(e.to_string()))?;
        let tenant = self
            .store()
            .get_tenant(tenant_id)
            .await?
            .ok_or(RegistryError::NotFound)?
            .value;
        let now = Utc::now();
        let raw_cas: Vec<&Map<String, Value>> = tenant
            .doc
            .get("trusted-ca")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_object)
            .collect();
        let cas: Vec<TrustedCa> = raw_cas
            .iter()
            .filter_map(|ca| serde_json::from_value(Value::Object((*ca).clone())).ok())
            .filter(|ca: &TrustedCa| {
                ca.auto_provisioning_enabled
                    && ca.subject_dn == names.issuers[0]
                    && trust::ca_valid_at(ca, now)
            })
            .collect();
        if cas.is_empty() {
            // No CA of the tenant provisions this certificate: simply unknown.
            return Err(RegistryError::NotFound);
        }
        let anchors = trust::anchors(&names, &cas);
        let ca = trust::verify_client_chain(&chain, &anchors, now, RING_ALGORITHMS)
            .map_err(|e| bad(format!("client-certificate: {e}")))?
            .ca;
        let raw_ca = raw_cas
            .iter()
            .find(|raw| raw.get("id").and_then(Value::as_str) == ca.id.as_deref())
            .copied();
        let leaf = chain[0].as_ref();
        let expected = match &ca.auth_id_template {
            Some(t) => template::apply(t, leaf).map_err(|e| bad(e.to_string()))?,
            None => names.subject.clone(),
        };
        if expected != auth_id && normalize_dn(&expected).ok().as_deref() != Some(auth_id) {
            return Err(bad("the certificate's subject does not match the auth-id"));
        }
        let setting = |key: &str| raw_ca.and_then(|raw| raw.get(key));
        let device_id =
            match setting("auto-provisioning-device-id-template").and_then(Value::as_str) {
                Some(t) => {
                    let id = template::apply(t, leaf).map_err(|e| bad(e.to_string()))?;
                    DeviceId::parse(&id).map_err(|e| bad(e.to_string()))?
                }
                None => DeviceId::parse(&new_id()).map_err(|e| bad(e.to_string()))?,
            };
        let mut doc = Map::new();
        doc.insert("enabled".into(), true.into());
        if setting("auto-provision-as-gateway").and_then(Value::as_bool) == Some(true) {
            doc.insert("authorities".into(), json!([AUTO_PROVISIONING_AUTHORITY]));
        }
        let mut status = provisioned_status();
        if raw_ca.is_some_and(tenant::claim_required)
            && let Value::Object(status) = &mut status
        {
            status.insert("claim".into(), claim::unclaimed_status(&names.subject));
        }
        doc.insert("status".into(), status);
        let credential = CredentialRecord {
            credential_type: CredentialType::X509Cert,
            auth_id: auth_id.to_owned(),
            doc: json!({
                "type": "x509-cert",
                "auth-id": auth_id,
                "enabled": true,
                "secrets": [{"id": new_id()}],
            })
            .as_object()
            .cloned()
            .unwrap_or_default(),
        };
        let object = credentials::credentials_object(&device_id, &credential)
            .map_err(|e| RegistryError::Unavailable(e.to_string()))?;
        let unclaimed = claim::unclaimed(&doc);
        let record = DeviceRecord {
            id: device_id.clone(),
            doc,
        };
        match self
            .store()
            .create_device(
                tenant_id,
                record,
                vec![credential],
                tenant::max_devices(&tenant.doc),
            )
            .await
        {
            Ok(_) => {}
            Err(StoreError::Conflict(why)) => {
                // Another first contact with the same certificate won the race: its answer.
                return match self
                    .store()
                    .find_credentials(tenant_id, CredentialType::X509Cert, auth_id)
                    .await?
                {
                    Some((device, record)) => Ok(self.answer(
                        credentials::credentials_object(&device, &record)
                            .map_err(|e| RegistryError::Unavailable(e.to_string()))?,
                    )),
                    None => Err(RegistryError::Forbidden(why)),
                };
            }
            Err(e) => return Err(store_error(e)),
        }
        tracing::info!(tenant = %tenant_id, device = %device_id, auth_id, unclaimed, "auto-provisioned a device by its certificate");
        self.notify(&[
            RegistryChange::Device {
                tenant_id: tenant_id.clone(),
                device_id: device_id.clone(),
            },
            RegistryChange::Credentials {
                tenant_id: tenant_id.clone(),
                device_id: device_id.clone(),
            },
        ]);
        self.send_notification(tenant_id, &device_id, None).await;
        let mut response = self.answer(object);
        response.created = true;
        Ok(response)
    }

    /// Gateway-based auto-provisioning of `device_id` by `gateway_id`: the new device document,
    /// or `None` if the gateway may not provision (unknown, disabled, or without the authority).
    pub(crate) async fn provision_by_gateway(
        &self,
        tenant_id: &TenantId,
        device_id: &DeviceId,
        gateway_id: &DeviceId,
    ) -> Result<Option<Map<String, Value>>, RegistryError> {
        let Some(gateway) = self.store().get_device(tenant_id, gateway_id).await? else {
            return Ok(None);
        };
        let gateway = gateway.value.doc;
        if !crate::model::enabled(&gateway)
            || !strings(&gateway, "authorities").any(|a| a == AUTO_PROVISIONING_AUTHORITY)
        {
            return Ok(None);
        }
        let tenant = self
            .store()
            .get_tenant(tenant_id)
            .await?
            .ok_or(RegistryError::NotFound)?
            .value;
        let mut doc = Map::new();
        doc.insert("enabled".into(), true.into());
        doc.insert("via".into(), json!([gateway_id.as_str()]));
        let groups: Vec<&str> = strings(&gateway, "memberOf").collect();
        if !groups.is_empty() {
            doc.insert("viaGroups".into(), json!(groups));
        }
        doc.insert("status".into(), provisioned_status());
        let record = DeviceRecord {
            id: device_id.clone(),
            doc: doc.clone(),
        };
        match self
            .store()
            .create_device(
                tenant_id,
                record,
                Vec::new(),
                tenant::max_devices(&tenant.doc),
            )
            .await
        {
            Ok(_) => {}
            Err(StoreError::Conflict(_)) => {
                // Created concurrently: use what is stored.
                return Ok(self
                    .store()
                    .get_device(tenant_id, device_id)
                    .await?
                    .map(|d| d.value.doc));
            }
            Err(e) => return Err(store_error(e)),
        }
        tracing::info!(tenant = %tenant_id, device = %device_id, gateway = %gateway_id, "auto-provisioned a device for its gateway");
        self.notify(&[RegistryChange::Device {
            tenant_id: tenant_id.clone(),
            device_id: device_id.clone(),
        }]);
        self.send_notification(tenant_id, device_id, Some(gateway_id))
            .await;
        Ok(Some(doc))
    }

    /// Sends the provisioning notification unless one is in flight for the device, and on
    /// success sets `auto-provisioning-notification-sent`. Failures are logged: the flag stays
    /// false and a later lookup tries again.
    pub(crate) async fn send_notification(
        &self,
        tenant_id: &TenantId,
        device_id: &DeviceId,
        gateway_id: Option<&DeviceId>,
    ) {
        let Some(notifier) = self.notifier() else {
            return;
        };
        let Some(_guard) = self
            .inner
            .in_flight
            .enter((tenant_id.clone(), device_id.clone()))
        else {
            return;
        };
        // Another lookup may have sent it between our read of the device and now.
        let unclaimed = match self.store().get_device(tenant_id, device_id).await {
            Ok(Some(device)) if notification_pending(&device.value.doc) => {
                claim::unclaimed(&device.value.doc)
            }
            Ok(_) => return,
            Err(e) => {
                tracing::warn!(tenant = %tenant_id, device = %device_id, error = %e, "cannot read the device to notify its provisioning");
                return;
            }
        };
        let notice = ProvisioningNotice {
            tenant_id: tenant_id.clone(),
            device_id: device_id.clone(),
            gateway_id: gateway_id.cloned(),
            unclaimed,
        };
        if let Err(e) = notifier.device_provisioned(&notice).await {
            tracing::warn!(tenant = %tenant_id, device = %device_id, error = %e, "provisioning notification failed; it is sent again on a later lookup");
            return;
        }
        if let Err(e) = self.mark_notification_sent(tenant_id, device_id).await {
            tracing::warn!(tenant = %tenant_id, device = %device_id, error = %e, "cannot record the provisioning notification");
        }
    }

    async fn mark_notification_sent(
        &self,
        tenant_id: &TenantId,
        device_id: &DeviceId,
    ) -> Result<(), StoreError> {
        for _ in 0..3 {
            let Some(current) = self.store().get_device(tenant_id, device_id).await? else {
                return Ok(());
            };
            let mut doc = current.value.doc;
            if !notification_pending(&doc) {
                return Ok(());
            }
            if let Some(Value::Object(status)) = doc.get_mut("status") {
                status.insert("auto-provisioning-notification-sent".into(), true.into());
            }
            let record = DeviceRecord {
                id: device_id.clone(),
                doc,
            };
            match self
                .store()
                .update_device(tenant_id, record, Some(current.version))
                .await
            {
                Err(StoreError::PreconditionFailed) => continue,
                other => return other.map(|_| ()),
            }
        }
        Err(StoreError::PreconditionFailed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_notification_per_device_is_in_flight() -> Result<(), Box<dyn std::error::Error>> {
        let in_flight = InFlight::default();
        let key = (TenantId::parse("t")?, DeviceId::parse("d")?);
        let first = in_flight.enter(key.clone());
        assert!(first.is_some());
        // Refused while the first is in flight, and the refusal does not end the first.
        assert!(in_flight.enter(key.clone()).is_none());
        assert!(in_flight.enter(key.clone()).is_none());
        drop(first);
        assert!(in_flight.enter(key).is_some());
        Ok(())
    }
}
