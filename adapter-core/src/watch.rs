//! Following registry changes: an open connection whose tenant or device gets disabled or
//! deleted is closed at once, not only when it next sends (Hono 2.0).
//!
//! Connection-oriented adapters (MQTT, AMQP) register each authenticated connection here for as
//! long as it is open. The registry tells [`ConnectionWatch`] about every committed change
//! (synchronously, after the cache was invalidated); the affected connections are re-checked in a
//! spawned task through the pipeline ([`Forwarder::check_tenant`], [`Forwarder::check_device`] of
//! the connected device itself), and a refusal is handed to the connection's [`Revoke`] handle,
//! which decides, per protocol, whether and how the connection ends. A gateway's connection is
//! re-checked only for changes of its tenant or of the gateway itself, never of the devices it
//! sends for.
//!
//! The watch also counts the changes ([`ConnectionWatch::forward_memo`]): a connection's
//! [`ForwardMemo`] follows that count, so its uploads reuse the tenant and registration answers
//! of the previous upload until the registry changes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use ferry_registry_client::{ChangeListener, DeviceId, RegistryChange, TenantId};

use crate::memo::RegistryGeneration;
use crate::{ForwardError, ForwardMemo, Forwarder};

/// How a protocol adapter ends one watched connection.
pub trait Revoke: Clone + Send + Sync + 'static {
    /// The re-check of `device` was refused with `error`: end the connection if the error is
    /// terminal for the protocol (and log why).
    fn refused(&self, tenant: &TenantId, device: &DeviceId, error: ForwardError);
}

/// One watched connection.
#[derive(Debug)]
struct Entry<H> {
    id: u64,
    device: DeviceId,
    handle: H,
}

/// The open, authenticated connections of one adapter, by tenant.
#[derive(Debug)]
pub struct ConnectionWatch<H> {
    forwarder: Forwarder,
    /// Counts the registry changes, for the connections' forward memos.
    generation: Arc<RegistryGeneration>,
    next_id: AtomicU64,
    connections: Mutex<HashMap<TenantId, Vec<Entry<H>>>>,
}

/// Keeps a connection watched until dropped.
#[derive(Debug)]
pub struct Watched<H> {
    id: u64,
    tenant: TenantId,
    watch: Arc<ConnectionWatch<H>>,
}

impl<H> Drop for Watched<H> {
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

impl<H: Revoke> ConnectionWatch<H> {
    /// A watch re-checking through `forwarder`.
    pub fn new(forwarder: Forwarder) -> Self {
        Self {
            forwarder,
            generation: Arc::default(),
            next_id: AtomicU64::new(0),
            connections: Mutex::new(HashMap::new()),
        }
    }

    /// Watches the connection of `device` until the returned guard is dropped; `handle` is told
    /// when a re-check refuses the device.
    pub fn watch(self: &Arc<Self>, tenant: &TenantId, device: &DeviceId, handle: H) -> Watched<H> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut connections) = self.connections.lock() {
            connections.entry(tenant.clone()).or_default().push(Entry {
                id,
                device: device.clone(),
                handle,
            });
        }
        Watched {
            id,
            tenant: tenant.clone(),
            watch: Arc::clone(self),
        }
    }

    /// An empty memo for one connection's uploads ([`Forwarder::forward_with`]), forgotten on
    /// every registry change this watch is told about.
    pub fn forward_memo(&self) -> ForwardMemo {
        ForwardMemo::new(Arc::clone(&self.generation))
    }

    /// The connections `change` may affect, with their device.
    fn affected(&self, change: &RegistryChange) -> (TenantId, Vec<(DeviceId, H)>) {
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
                        .map(|e| (e.device.clone(), e.handle.clone()))
                        .collect()
                })
            })
            .unwrap_or_default();
        (tenant.clone(), affected)
    }
}

/// Re-checks one connection; hands a refusal to its handle.
async fn recheck<H: Revoke>(forwarder: Forwarder, tenant: TenantId, device: DeviceId, handle: H) {
    let outcome = match forwarder.check_tenant(&tenant, true).await {
        Ok(_) => forwarder.check_device(&tenant, &device).await,
        Err(e) => Err(e),
    };
    if let Err(error) = outcome {
        handle.refused(&tenant, &device, error);
    }
}

impl<H: Revoke> ChangeListener for ConnectionWatch<H> {
    fn registry_changed(&self, change: &RegistryChange) {
        self.generation.registry_changed(change);
        let (tenant, affected) = self.affected(change);
        if affected.is_empty() {
            return;
        }
        // Called from the registry's (async) caller: re-check off its path, on the runtime.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!("registry change outside a runtime: open connections not re-checked");
            return;
        };
        for (device, handle) in affected {
            runtime.spawn(recheck(
                self.forwarder.clone(),
                tenant.clone(),
                device,
                handle,
            ));
        }
    }
}
