//! Admitting an authenticated device's connection: Hono's checks when a device connects.
//!
//! The tenant must exist, be enabled and allow this adapter, and the tenant's `max-connections`
//! resource limit (hono-api.md §14; `-1` or absent: unlimited) must leave room. Connections are
//! counted per tenant by this adapter instance; a [`Slot`] holds one place until it is dropped.
//! A refused device has completed SASL, so it learns why from the connection's `close` error
//! (`amqp:unauthorized-access` for limits, as Hono).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use fe2o3_amqp::types::definitions::{AmqpError as Condition, Error as ErrorBody};
use ferry_adapter_core::{AuthenticatedDevice, ForwardError, Forwarder};
use ferry_registry_client::TenantId;

use crate::error::connection_condition;

/// Name of the tenant resource limit on concurrent connections.
const MAX_CONNECTIONS: &str = "max-connections";

/// Why a connection was not admitted.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Refused {
    /// The tenant part of the pipeline's checks failed.
    #[error(transparent)]
    Tenant(#[from] ForwardError),
    /// The tenant's connection limit is reached.
    #[error("tenant {tenant} reached its limit of {max} connections")]
    TenantLimit {
        /// The tenant.
        tenant: TenantId,
        /// Its limit.
        max: i64,
    },
}

impl Refused {
    /// The error the connection is closed with.
    pub(crate) fn to_amqp(&self) -> ErrorBody {
        let condition = match self {
            Refused::Tenant(e) => connection_condition(e.kind()),
            Refused::TenantLimit { .. } => Condition::UnauthorizedAccess.into(),
        };
        ErrorBody::new(condition, self.to_string(), None)
    }
}

/// Open connections per tenant.
#[derive(Debug, Default)]
pub(crate) struct TenantConnections {
    counts: Mutex<HashMap<TenantId, i64>>,
}

/// One admitted connection's place in its tenant's count.
#[derive(Debug)]
pub(crate) struct Slot {
    tenant: TenantId,
    table: Arc<TenantConnections>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Ok(mut counts) = self.table.counts.lock()
            && let Some(count) = counts.get_mut(&self.tenant)
        {
            *count -= 1;
            if *count <= 0 {
                counts.remove(&self.tenant);
            }
        }
    }
}

impl TenantConnections {
    /// Takes a place for `tenant` unless `max` (when set and not negative) is reached.
    fn take(self: &Arc<Self>, tenant: &TenantId, max: Option<i64>) -> Result<Slot, Refused> {
        let mut counts = self
            .counts
            .lock()
            .map_err(|_| ForwardError::RegistryUnavailable("connection table poisoned".into()))?;
        let count = counts.entry(tenant.clone()).or_insert(0);
        if let Some(max) = max.filter(|m| *m >= 0)
            && *count >= max
        {
            return Err(Refused::TenantLimit {
                tenant: tenant.clone(),
                max,
            });
        }
        *count += 1;
        Ok(Slot {
            tenant: tenant.clone(),
            table: Arc::clone(self),
        })
    }
}

/// Runs the connect-time checks for `device`.
pub(crate) async fn admit(
    forwarder: &Forwarder,
    table: &Arc<TenantConnections>,
    device: &AuthenticatedDevice,
) -> Result<Slot, Refused> {
    let tenant = forwarder.check_tenant(&device.tenant_id, true).await?;
    table.take(&device.tenant_id, tenant.resource_limit(MAX_CONNECTIONS))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_count_per_tenant_and_free_on_drop() -> Result<(), Box<dyn std::error::Error>> {
        let table = Arc::new(TenantConnections::default());
        let (a, b) = (TenantId::parse("a")?, TenantId::parse("b")?);
        let first = table.take(&a, Some(2))?;
        let second = table.take(&a, Some(2))?;
        assert!(matches!(
            table.take(&a, Some(2)),
            Err(Refused::TenantLimit { max: 2, .. })
        ));
        let other = table.take(&b, Some(1))?;
        drop(first);
        let third = table.take(&a, Some(2))?;
        assert!(table.take(&a, None).is_ok());
        assert!(table.take(&a, Some(-1)).is_ok());
        assert!(table.take(&b, Some(0)).is_err());
        drop((second, third, other));
        assert!(
            table
                .counts
                .lock()
                .map_err(|_| "poisoned")?
                .get(&b)
                .is_none()
        );
        Ok(())
    }
}
