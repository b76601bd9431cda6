//! Forwarding one upload: the checks Hono makes before a message goes north, in Hono's order.
//!
//! 1. Payload size.
//! 2. Content-type rules: an empty body needs a type, the empty notification needs an empty body.
//! 3. An authenticated sender only sends within its own tenant.
//! 4. The tenant exists and is enabled.
//! 5. The tenant allows this adapter (and, for unauthenticated uploads, does not require
//!    authentication).
//! 6. The registration assertion, with the sender as `gateway_id` when it sends for another device
//!    (a device that waits for its owner's claim is refused as [`ForwardError::DeviceNotClaimed`]).
//! 7. The [`DownstreamMessage`] is built (content type and TTL from the upload, the device's and the
//!    tenant's defaults) and handed to the [`Northbound`].
//!
//! [`Forwarder::forward_with`] does the same for a connection that keeps a [`ForwardMemo`]: the
//! tenant and registration answers of its previous upload are reused while the registry has not
//! changed (module `memo`), which saves the two registry cache lookups per message.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use ferry_registry_client::{
    DeviceId, DeviceRegistry, RegistrationAssertion, RegistryError, TenantId, TenantObject,
};
use serde_json::{Map, Value};

use crate::auth::AuthenticatedDevice;
use crate::error::ForwardError;
use crate::message::{
    self, AdapterType, DEFAULT_CONTENT_TYPE, DownstreamMessage, EMPTY_NOTIFICATION, Endpoint, Qos,
    Upload,
};
use crate::northbound::Northbound;
use crate::ttl;
use ferry_registry_client::AdapterAccess;

pub mod connection_event;
mod memo;

pub use memo::ForwardMemo;
use memo::recall_or_fetch;

/// Keys of `defaults` that are message fields rather than application properties.
const NOT_PROPERTIES: [&str; 8] = [
    "content-type",
    "ttd",
    "qos",
    "device_id",
    "tenant_id",
    "gateway_id",
    "orig_adapter",
    "orig_address",
];

/// Checks uploads and hands them to the northbound. Cheap to clone.
#[derive(Clone)]
pub struct Forwarder {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Arc<dyn DeviceRegistry>,
    northbound: Arc<dyn Northbound>,
    adapter_type: AdapterType,
    max_payload_size: usize,
}

impl std::fmt::Debug for Forwarder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forwarder")
            .field("adapter_type", &self.inner.adapter_type)
            .field("max_payload_size", &self.inner.max_payload_size)
            .finish_non_exhaustive()
    }
}

/// True if `content_type`'s media type (without parameters) is `expected` (ASCII): it starts
/// with `expected` (after white space, in any case), followed by nothing but white space up to
/// the parameters. Checked for every upload, so a shorter type is refused without scanning it.
fn is_media_type(content_type: &str, expected: &str) -> bool {
    let t = content_type.trim_start();
    match (t.get(..expected.len()), t.get(expected.len()..)) {
        (Some(head), Some(rest)) => {
            head.eq_ignore_ascii_case(expected)
                && rest.split(';').next().is_some_and(|r| r.trim().is_empty())
        }
        _ => false,
    }
}

fn check_content(upload: &Upload, max: usize) -> Result<(), ForwardError> {
    let size = upload.payload.len();
    if size > max {
        return Err(ForwardError::PayloadTooLarge { size, max });
    }
    match upload
        .content_type
        .as_deref()
        .filter(|t| !t.trim().is_empty())
    {
        None if upload.payload.is_empty() => Err(ForwardError::EmptyBodyWithoutContentType),
        Some(t) if !upload.payload.is_empty() && is_media_type(t, EMPTY_NOTIFICATION) => {
            Err(ForwardError::EmptyNotificationWithBody)
        }
        _ => Ok(()),
    }
}

impl Forwarder {
    /// A forwarder for adapter type `adapter_type` (e.g. `hono-http`) that refuses payloads over
    /// `max_payload_size` bytes.
    pub fn new(
        registry: Arc<dyn DeviceRegistry>,
        northbound: Arc<dyn Northbound>,
        adapter_type: impl Into<String>,
        max_payload_size: usize,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                registry,
                northbound,
                adapter_type: AdapterType::from(adapter_type.into()),
                max_payload_size,
            }),
        }
    }

    /// A forwarder for another adapter type, with the same registry, northbound and payload
    /// limit.
    pub fn for_adapter(&self, adapter_type: impl Into<String>) -> Self {
        Self {
            inner: Arc::new(Inner {
                registry: Arc::clone(&self.inner.registry),
                northbound: Arc::clone(&self.inner.northbound),
                adapter_type: AdapterType::from(adapter_type.into()),
                max_payload_size: self.inner.max_payload_size,
            }),
        }
    }

    /// The adapter type name, e.g. `hono-http`.
    pub fn adapter_type(&self) -> &str {
        &self.inner.adapter_type
    }

    /// The largest payload forwarded, in bytes.
    pub fn max_payload_size(&self) -> usize {
        self.inner.max_payload_size
    }

    /// Checks `upload` from `sender` (`None`: an unauthenticated device) for `device_id` of
    /// `tenant_id`, and sends it north. Returns once the northbound took the message as its QoS
    /// requires.
    pub async fn forward(
        &self,
        sender: Option<&AuthenticatedDevice>,
        tenant_id: &TenantId,
        device_id: &DeviceId,
        upload: Upload,
    ) -> Result<(), ForwardError> {
        self.send(None, sender, tenant_id, device_id, upload).await
    }

    /// [`Self::forward`] for a connection that keeps `memo` (one per connection): the tenant and
    /// registration answers of its previous upload are reused while the registry is unchanged.
    pub async fn forward_with(
        &self,
        memo: &ForwardMemo,
        sender: Option<&AuthenticatedDevice>,
        tenant_id: &TenantId,
        device_id: &DeviceId,
        upload: Upload,
    ) -> Result<(), ForwardError> {
        self.send(Some(memo), sender, tenant_id, device_id, upload)
            .await
    }

    async fn send(
        &self,
        memo: Option<&ForwardMemo>,
        sender: Option<&AuthenticatedDevice>,
        tenant_id: &TenantId,
        device_id: &DeviceId,
        upload: Upload,
    ) -> Result<(), ForwardError> {
        check_content(&upload, self.inner.max_payload_size)?;
        if let Some(sender) = sender.filter(|s| s.tenant_id != *tenant_id) {
            return Err(ForwardError::OtherTenant {
                sender: sender.tenant_id.clone(),
                tenant: tenant_id.clone(),
            });
        }
        // One clock reading for both memos.
        let memo = memo.map(|memo| (memo, Instant::now()));
        let tenant = self.tenant(tenant_id, sender.is_some(), memo).await?;
        let gateway = sender
            .map(|s| &s.device_id)
            .filter(|gateway| *gateway != device_id);
        let assertion = recall_or_fetch(
            memo.map(|(m, now)| (&m.registration, now)),
            |(t, d, g)| t == tenant_id && d == device_id && g.as_ref() == gateway,
            || (tenant_id.clone(), device_id.clone(), gateway.cloned()),
            || {
                self.inner
                    .registry
                    .assert_registration(tenant_id, device_id, gateway)
            },
        )
        .await
        .map_err(|e| match (e, gateway) {
            (e, _) if e.is_not_claimed() => ForwardError::DeviceNotClaimed(device_id.clone()),
            (RegistryError::NotFound, _) => {
                ForwardError::DeviceUnknownOrDisabled(device_id.clone())
            }
            (RegistryError::Forbidden(_), Some(gateway)) => ForwardError::GatewayNotAuthorised {
                gateway: gateway.clone(),
                device: device_id.clone(),
            },
            (RegistryError::Forbidden(m), None) => ForwardError::RegistrationForbidden(m),
            (RegistryError::BadRequest(m), _) => ForwardError::RegistryBadRequest(m),
            (RegistryError::Unavailable(m), _) => ForwardError::RegistryUnavailable(m),
        })?;
        let message = self.message(&tenant, &assertion, gateway, upload);
        self.inner.northbound.send(message).await?;
        Ok(())
    }

    /// Checks that `tenant_id` exists, is enabled and allows this adapter (and, for an
    /// unauthenticated device, does not require authentication), and returns the tenant.
    /// Adapters that hold connections (MQTT, AMQP) call it when a device connects.
    pub async fn check_tenant(
        &self,
        tenant_id: &TenantId,
        authenticated: bool,
    ) -> Result<Arc<TenantObject>, ForwardError> {
        self.tenant(tenant_id, authenticated, None).await
    }

    /// Checks that `device_id` of `tenant_id` exists and is enabled (its registration assertion),
    /// the device part of [`Self::forward`]. Connection-oriented adapters call it to re-check an
    /// open connection after the registry changed.
    pub async fn check_device(
        &self,
        tenant_id: &TenantId,
        device_id: &DeviceId,
    ) -> Result<(), ForwardError> {
        self.inner
            .registry
            .assert_registration(tenant_id, device_id, None)
            .await
            .map(|_| ())
            .map_err(|e| match e {
                e if e.is_not_claimed() => ForwardError::DeviceNotClaimed(device_id.clone()),
                RegistryError::NotFound => ForwardError::DeviceUnknownOrDisabled(device_id.clone()),
                RegistryError::Forbidden(m) => ForwardError::RegistrationForbidden(m),
                RegistryError::BadRequest(m) => ForwardError::RegistryBadRequest(m),
                RegistryError::Unavailable(m) => ForwardError::RegistryUnavailable(m),
            })
    }

    /// Fetches the tenant (or recalls it from `memo`) and applies its enabled and adapter
    /// settings.
    async fn tenant(
        &self,
        tenant_id: &TenantId,
        authenticated: bool,
        memo: Option<(&ForwardMemo, Instant)>,
    ) -> Result<Arc<TenantObject>, ForwardError> {
        let tenant = recall_or_fetch(
            memo.map(|(m, now)| (&m.tenant, now)),
            |t| t == tenant_id,
            || tenant_id.clone(),
            || self.inner.registry.get_tenant(tenant_id),
        )
        .await
        .map_err(|e| tenant_lookup_error(e, tenant_id))?;
        if !tenant.enabled {
            return Err(ForwardError::TenantDisabled(tenant_id.clone()));
        }
        match tenant.adapter_access(&self.inner.adapter_type) {
            AdapterAccess::Disabled => Err(ForwardError::AdapterDisabled {
                adapter: self.inner.adapter_type.to_string(),
                tenant: tenant_id.clone(),
            }),
            AdapterAccess::Enabled {
                authentication_required: true,
            } if !authenticated => Err(ForwardError::AuthenticationRequired(tenant_id.clone())),
            AdapterAccess::Enabled { .. } => Ok(tenant),
        }
    }

    /// Builds the northbound message; device defaults beat tenant defaults.
    fn message(
        &self,
        tenant: &TenantObject,
        assertion: &RegistrationAssertion,
        gateway: Option<&DeviceId>,
        upload: Upload,
    ) -> DownstreamMessage {
        let (device, tenant_defaults) = (&assertion.defaults, &tenant.defaults);
        let default = |key: &str| device.get(key).or_else(|| tenant_defaults.get(key));
        let qos = match upload.endpoint {
            Endpoint::Event => Qos::AtLeastOnce,
            Endpoint::Telemetry => upload.qos,
        };
        let content_type = upload
            .content_type
            .filter(|t| !t.trim().is_empty())
            .or_else(|| {
                default("content-type")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| DEFAULT_CONTENT_TYPE.to_owned());
        let (max_key, default_key) = ttl::keys(upload.endpoint, qos);
        let ttl_ms = ttl::effective_ttl_ms(
            tenant.resource_limit(max_key),
            upload.ttl.map(|t| t.as_secs()),
            default(default_key).and_then(Value::as_i64),
        );
        let mut properties = BTreeMap::new();
        add_defaults(&mut properties, tenant_defaults);
        add_defaults(&mut properties, device);
        if let Some(gateway) = gateway {
            properties.insert(
                "gateway_id".to_owned(),
                Value::String(gateway.as_str().to_owned()),
            );
        }
        DownstreamMessage {
            tenant_id: tenant.tenant_id.clone(),
            device_id: assertion.device_id.clone(),
            endpoint: upload.endpoint,
            qos,
            content_type,
            creation_time: message::now_millis(),
            ttl_ms,
            ttd: upload.ttd,
            orig_adapter: self.inner.adapter_type.clone(),
            orig_address: upload.orig_address,
            properties,
            retain: upload.retain,
            payload: upload.payload,
        }
    }
}

/// The refusal for a failed tenant lookup.
fn tenant_lookup_error(error: RegistryError, tenant_id: &TenantId) -> ForwardError {
    match error {
        RegistryError::NotFound => ForwardError::TenantUnknown(tenant_id.clone()),
        RegistryError::Forbidden(m) => ForwardError::RegistrationForbidden(m),
        RegistryError::BadRequest(m) => ForwardError::RegistryBadRequest(m),
        RegistryError::Unavailable(m) => ForwardError::RegistryUnavailable(m),
    }
}

/// Copies `defaults` that are application properties (later calls override earlier ones).
fn add_defaults(properties: &mut BTreeMap<String, Value>, defaults: &Map<String, Value>) {
    let skip = |k: &str| NOT_PROPERTIES.contains(&k) || ttl::TTL_DEFAULT_KEYS.contains(&k);
    for (key, value) in defaults.iter().filter(|(k, _)| !skip(k)) {
        properties.insert(key.clone(), value.clone());
    }
}

#[cfg(test)]
mod tests;
