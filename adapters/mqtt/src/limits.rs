//! The tenant connection limit (`resource-limits.max-connections`, hono-api.md §14): a count of
//! open connections per tenant, held by a guard for the connection's lifetime.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use ferry_registry_client::TenantId;

/// Open authenticated connections per tenant, shared by all connections of the adapter.
#[derive(Debug, Default)]
pub(crate) struct TenantConnections {
    counts: Mutex<HashMap<TenantId, usize>>,
}

/// One counted connection; gives its place back when dropped.
#[derive(Debug)]
pub(crate) struct TenantGuard {
    connections: Arc<TenantConnections>,
    tenant: TenantId,
}

impl TenantConnections {
    /// Counts a connection of `tenant` unless `limit` (a negative limit is unlimited) is reached.
    pub(crate) fn try_acquire(
        self: &Arc<Self>,
        tenant: &TenantId,
        limit: Option<i64>,
    ) -> Option<TenantGuard> {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let count = counts.entry(tenant.clone()).or_insert(0);
        if let Some(limit) = limit.filter(|l| *l >= 0)
            && *count as u64 >= limit.unsigned_abs()
        {
            if *count == 0 {
                counts.remove(tenant);
            }
            return None;
        }
        *count += 1;
        Some(TenantGuard {
            connections: Arc::clone(self),
            tenant: tenant.clone(),
        })
    }

    #[cfg(test)]
    fn count(&self, tenant: &TenantId) -> usize {
        let counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        counts.get(tenant).copied().unwrap_or(0)
    }
}

impl Drop for TenantGuard {
    fn drop(&mut self) {
        let mut counts = self
            .connections
            .counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = counts.get_mut(&self.tenant) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(&self.tenant);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_up_to_the_limit_and_gives_places_back() -> Result<(), Box<dyn std::error::Error>> {
        let c = Arc::new(TenantConnections::default());
        let t = TenantId::parse("t")?;
        let a = c.try_acquire(&t, Some(2));
        let b = c.try_acquire(&t, Some(2));
        assert!(a.is_some() && b.is_some());
        assert!(c.try_acquire(&t, Some(2)).is_none());
        drop(a);
        assert_eq!(c.count(&t), 1);
        assert!(c.try_acquire(&t, Some(2)).is_some());
        assert!(c.try_acquire(&t, Some(0)).is_none());
        assert!(c.try_acquire(&t, Some(-1)).is_some());
        assert!(c.try_acquire(&t, None).is_some());
        drop(b);
        assert_eq!(c.count(&t), 0);
        Ok(())
    }
}
