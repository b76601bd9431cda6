//! A connection's memo of the registry answers its last upload needed (the tenant and the
//! registration assertion), for [`Forwarder::forward_with`](super::Forwarder::forward_with).
//!
//! The memo keeps answers, not verdicts: the tenant's enabled and adapter settings are checked
//! on every upload as before, only the two registry cache lookups are saved. Answers are kept
//! only when the registry allowed them to be cached (not `no-cache`, not "just created"), and
//! [`crate::memo`] forgets them on the next registry change or after a second.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_registry_client::{
    CacheDirective, DeviceId, RegistrationAssertion, RegistryError, Response, TenantId,
    TenantObject,
};

use crate::memo::{Memo, RegistryGeneration};

/// Tenant, device and gateway of a registration assertion.
type RegistrationKey = (TenantId, DeviceId, Option<DeviceId>);

/// One connection's last tenant and registration answers. Create one per connection.
#[derive(Debug)]
pub struct ForwardMemo {
    pub(super) tenant: Memo<TenantId, TenantObject>,
    pub(super) registration: Memo<RegistrationKey, RegistrationAssertion>,
}

impl ForwardMemo {
    /// An empty memo following `generation` (bumped by every committed registry change).
    pub fn new(generation: Arc<RegistryGeneration>) -> Self {
        Self {
            tenant: Memo::new(Arc::clone(&generation)),
            registration: Memo::new(generation),
        }
    }
}

/// Whether the registry allowed `response` to be reused.
fn reusable<T>(response: &Response<T>) -> bool {
    !response.created
        && !matches!(
            response.cache,
            CacheDirective::NoCache | CacheDirective::MaxAge(Duration::ZERO)
        )
}

/// The answer `memo` (if any) remembers at the given instant for a key that `matches`, else what
/// `fetch()` gets (then remembered under `key()` if reusable). `fetch` is only called on a miss:
/// the registry's futures are boxed, so even making one costs an allocation.
pub(super) async fn recall_or_fetch<K, V, F>(
    memo: Option<(&Memo<K, V>, Instant)>,
    matches: impl FnOnce(&K) -> bool,
    key: impl FnOnce() -> K,
    fetch: impl FnOnce() -> F,
) -> Result<Arc<V>, RegistryError>
where
    F: Future<Output = Result<Response<V>, RegistryError>>,
{
    let memo = match memo {
        Some((memo, now)) => match memo.recall_at(now, matches) {
            Some(value) => return Ok(value),
            None => Some(memo),
        },
        None => None,
    };
    let generation = memo.map(Memo::generation);
    let response = fetch().await?;
    if let (Some(memo), Some(generation)) = (memo, generation)
        && reusable(&response)
    {
        memo.remember(key(), Arc::clone(&response.payload), generation);
    }
    Ok(response.payload)
}
