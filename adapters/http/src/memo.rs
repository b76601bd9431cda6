//! Reusing a connection's last password authentication.
//!
//! A device on a keep-alive connection sends the same `authorization` header with every request.
//! Checking it again means decoding Base64, two cache lookups and hashing the password for the
//! verified-password cache: a tenth of the cost of a whole request. The connection therefore
//! remembers its last successful password authentication ([`AuthMemo`]) and answers the same
//! header bytes from it, for at most [`MEMO_LIFETIME`] and only while the registry has not
//! changed since ([`RegistryGeneration`], bumped by every committed registry change after the
//! registry cache was invalidated). So a changed password, disabled credentials or a deleted
//! device are seen by the very next request, as without the memo, and an expiring secret at
//! most [`MEMO_LIFETIME`] late. Only successes are remembered; a refused header is checked anew
//! every time.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ferry_adapter_core::AuthenticatedDevice;
use ferry_registry_client::{ChangeListener, RegistryChange};

/// Longest reuse of one authentication.
pub(crate) const MEMO_LIFETIME: Duration = Duration::from_secs(1);

/// Counts committed registry changes.
#[derive(Debug, Default)]
pub(crate) struct RegistryGeneration(AtomicU64);

impl RegistryGeneration {
    /// The number of changes so far.
    pub(crate) fn current(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }
}

impl ChangeListener for RegistryGeneration {
    fn registry_changed(&self, _change: &RegistryChange) {
        self.0.fetch_add(1, Ordering::AcqRel);
    }
}

/// One connection's last successful password authentication.
#[derive(Debug)]
struct Remembered {
    authorization: Box<[u8]>,
    device: AuthenticatedDevice,
    generation: u64,
    at: Instant,
}

/// A connection's memo (requests on one connection are handled one after the other).
#[derive(Debug)]
pub(crate) struct AuthMemo {
    generation: Arc<RegistryGeneration>,
    last: std::sync::Mutex<Option<Remembered>>,
}

impl AuthMemo {
    /// An empty memo following `generation`.
    pub(crate) fn new(generation: Arc<RegistryGeneration>) -> Self {
        Self {
            generation,
            last: std::sync::Mutex::new(None),
        }
    }

    /// The registry generation to [`remember`](Self::remember) an authentication under: read it
    /// before authenticating, so a change during the check invalidates the result.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.current()
    }

    /// The device `authorization` authenticated last time, if that is still valid.
    pub(crate) fn recall(&self, authorization: &[u8]) -> Option<AuthenticatedDevice> {
        let last = self.last.lock().ok()?;
        let last = last.as_ref()?;
        (*last.authorization == *authorization
            && last.generation == self.generation.current()
            && last.at.elapsed() < MEMO_LIFETIME)
            .then(|| last.device.clone())
    }

    /// Remembers that `authorization` authenticated `device`, checked at `generation`.
    pub(crate) fn remember(
        &self,
        authorization: &[u8],
        device: &AuthenticatedDevice,
        generation: u64,
    ) {
        if let Ok(mut last) = self.last.lock() {
            *last = Some(Remembered {
                authorization: authorization.into(),
                device: device.clone(),
                generation,
                at: Instant::now(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_registry_client::{DeviceId, TenantId};

    fn device() -> Result<AuthenticatedDevice, Box<dyn std::error::Error>> {
        Ok(AuthenticatedDevice {
            tenant_id: TenantId::parse("t")?,
            device_id: DeviceId::parse("d")?,
            auth_id: "a".to_owned(),
        })
    }

    #[test]
    fn the_same_header_is_recalled() -> Result<(), Box<dyn std::error::Error>> {
        let memo = AuthMemo::new(Arc::default());
        assert!(memo.recall(b"Basic x").is_none());
        memo.remember(b"Basic x", &device()?, memo.generation());
        assert_eq!(memo.recall(b"Basic x"), Some(device()?));
        assert!(memo.recall(b"Basic y").is_none());
        Ok(())
    }

    #[test]
    fn a_registry_change_forgets() -> Result<(), Box<dyn std::error::Error>> {
        let generation = Arc::new(RegistryGeneration::default());
        let memo = AuthMemo::new(Arc::clone(&generation));
        memo.remember(b"Basic x", &device()?, memo.generation());
        generation.registry_changed(&RegistryChange::Tenant {
            tenant_id: TenantId::parse("t")?,
        });
        assert!(memo.recall(b"Basic x").is_none());
        Ok(())
    }

    #[test]
    fn a_check_that_overlapped_a_change_is_not_reused() -> Result<(), Box<dyn std::error::Error>> {
        let generation = Arc::new(RegistryGeneration::default());
        let memo = AuthMemo::new(Arc::clone(&generation));
        let before = memo.generation();
        generation.registry_changed(&RegistryChange::Tenant {
            tenant_id: TenantId::parse("t")?,
        });
        memo.remember(b"Basic x", &device()?, before);
        assert!(memo.recall(b"Basic x").is_none());
        Ok(())
    }
}
