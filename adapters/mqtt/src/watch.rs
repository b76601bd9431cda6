//! Following registry changes: an open connection whose tenant or device gets disabled or
//! deleted is closed at once, not only when it next publishes (Hono 2.0).
//!
//! Each authenticated connection registers itself here for as long as it is open. The registry
//! tells [`ConnectionWatch`] about every committed change (synchronously, after the cache was
//! invalidated); the affected connections are re-checked in a spawned task through the pipeline
//! (`check_tenant`, `check_device` of the connected device itself), and a terminal answer
//! cancels the connection's token: it then closes (MQTT 5: DISCONNECT 0x87 first). A gateway's
//! connection is re-checked only for changes of its tenant or of the gateway itself, never of
//! the devices it publishes for.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use ferry_adapter_core::Forwarder;
use ferry_registry_client::{ChangeListener, DeviceId, RegistryChange, TenantId};
use tokio_util::sync::CancellationToken;

use crate::error::PublishError;

/// One watched connection.
#[derive(Debug)]
struct Entry {
    id: u64,
    device: DeviceId,
    revoked: CancellationToken,
}

/// The open, authenticated connections by tenant.
#[derive(Debug)]
pub(crate) struct ConnectionWatch {
    forwarder: Forwarder,
    next_id: AtomicU64,
    connections: Mutex<HashMap<TenantId, Vec<Entry>>>,
}

/// Keeps a connection watched until dropped.
#[derive(Debug)]
pub(crate) struct Watched {
    id: u64,
    tenant: TenantId,
    watch: Arc<ConnectionWatch>,
}

impl Drop for Watched {
    fn drop(&mut self) {
        if let Ok(mut connections) = self.watch.connections.lock()
            && let Some(entries) = connections.get_mut(&self.tenant)
        {
            entries.retain(|e| e.id != self.id);
            if entries.is_empty() {
                connections.remove(&self.tenant);
            }
        }
    }
}

impl ConnectionWatch {
    /// A watch re-checking through `forwarder`.
    pub(crate) fn new(forwarder: Forwarder) -> Self {
        Self {
            forwarder,
            next_id: AtomicU64::new(0),
            connections: Mutex::new(HashMap::new()),
        }
    }

    /// Watches the connection of `device` until the returned guard is dropped; `revoked` is
    /// cancelled when the device may no longer be connected.
    pub(crate) fn watch(
        self: &Arc<Self>,
        tenant: &TenantId,
        device: &DeviceId,
        revoked: &CancellationToken,
    ) -> Watched {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut connections) = self.connections.lock() {
            connections.entry(tenant.clone()).or_default().push(Entry {
                id,
                device: device.clone(),
                revoked: revoked.clone(),
            });
        }
        Watched {
            id,
            tenant: tenant.clone(),
            watch: Arc::clone(self),
        }
    }

    /// The connections `change` may affect, with their device.
    fn affected(&self, change: &RegistryChange) -> (TenantId, Vec<(DeviceId, CancellationToken)>) {
        let (tenant, device) = match change {
            RegistryChange::Tenant { tenant_id }
            | RegistryChange::AllDevicesOfTenant { tenant_id } => (tenant_id, None),
            RegistryChange::Device {
                tenant_id,
                device_id,
            }
            | RegistryChange::Credentials {
                tenant_id,
                device_id,
            } => (tenant_id, Some(device_id)),
        };
        let affected = self
            .connections
            .lock()
            .ok()
            .and_then(|c| {
                c.get(tenant).map(|entries| {
                    entries
                        .iter()
                        .filter(|e| device.is_none_or(|d| *d == e.device))
                        .map(|e| (e.device.clone(), e.revoked.clone()))
                        .collect()
                })
            })
            .unwrap_or_default();
        (tenant.clone(), affected)
    }
}

/// Re-checks one connection; revokes it when the tenant or device may no longer connect.
async fn recheck(
    forwarder: Forwarder,
    tenant: TenantId,
    device: DeviceId,
    revoked: CancellationToken,
) {
    let outcome = match forwarder.check_tenant(&tenant, true).await {
        Ok(_) => forwarder.check_device(&tenant, &device).await,
        Err(e) => Err(e),
    };
    if let Err(error) = outcome {
        let error = PublishError::from(error);
        if error.is_terminal() {
            tracing::info!(%tenant, %device, reason = %error, "closing the connection after a registry change");
            revoked.cancel();
        }
    }
}

impl ChangeListener for ConnectionWatch {
    fn registry_changed(&self, change: &RegistryChange) {
        let (tenant, affected) = self.affected(change);
        if affected.is_empty() {
            return;
        }
        // Called from the registry's (async) caller: re-check off its path, on the runtime.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!("registry change outside a runtime: open connections not re-checked");
            return;
        };
        for (device, revoked) in affected {
            runtime.spawn(recheck(
                self.forwarder.clone(),
                tenant.clone(),
                device,
                revoked,
            ));
        }
    }
}
