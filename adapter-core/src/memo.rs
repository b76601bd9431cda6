//! Per-connection memos of registry answers, forgotten when the registry changes.
//!
//! A device on a long-lived connection (HTTP keep-alive, MQTT, AMQP) asks the same questions with
//! every message: is this password right, what is my tenant, am I registered. The registry cache
//! answers them, but each cache lookup (hashing the key, the cache's bookkeeping) costs a good
//! share of a small request. A [`Memo`] keeps a connection's last answer to one question and
//! gives it back while
//!
//! * the question is the same (the caller's `matches` says so),
//! * no registry change was committed since the answer was fetched ([`RegistryGeneration`],
//!   which the registry bumps for every change after it invalidated the registry cache), and
//! * it is younger than [`MEMO_LIFETIME`] (the bound for a registry that does not report its
//!   changes, such as a remote Hono registry, and for an expiring secret).
//!
//! So a disabled tenant, a deleted device or a changed password are seen by the very next
//! message, as without the memo. Only answers the caller chose to keep are remembered (successes
//! that the registry allowed to be cached).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferry_registry_client::{ChangeListener, RegistryChange};

/// Longest reuse of one answer.
pub const MEMO_LIFETIME: Duration = Duration::from_secs(1);

/// Counts committed registry changes.
#[derive(Debug, Default)]
pub struct RegistryGeneration(AtomicU64);

impl RegistryGeneration {
    /// The number of changes so far.
    pub fn current(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }
}

impl ChangeListener for RegistryGeneration {
    fn registry_changed(&self, _change: &RegistryChange) {
        self.0.fetch_add(1, Ordering::AcqRel);
    }
}

/// One remembered answer.
#[derive(Debug)]
struct Remembered<K, V> {
    key: K,
    value: Arc<V>,
    generation: u64,
    /// Fetched plus [`MEMO_LIFETIME`] (comparing instants is cheaper than subtracting them).
    expires: Instant,
}

/// A connection's last answer to one kind of question (the connection's requests run one after
/// the other, so the lock is never contended).
#[derive(Debug)]
pub struct Memo<K, V> {
    generation: Arc<RegistryGeneration>,
    last: Mutex<Option<Remembered<K, V>>>,
}

impl<K, V> Memo<K, V> {
    /// An empty memo following `generation`.
    pub fn new(generation: Arc<RegistryGeneration>) -> Self {
        Self {
            generation,
            last: Mutex::new(None),
        }
    }

    /// The generation to [`remember`](Self::remember) an answer under: read it before asking,
    /// so a change while the answer is fetched invalidates it.
    pub fn generation(&self) -> u64 {
        self.generation.current()
    }

    /// The remembered answer, if its key `matches` and it is still valid.
    pub fn recall(&self, matches: impl FnOnce(&K) -> bool) -> Option<Arc<V>> {
        self.recall_at(Instant::now(), matches)
    }

    /// [`Self::recall`] at `now` (one clock reading serves several memos).
    pub fn recall_at(&self, now: Instant, matches: impl FnOnce(&K) -> bool) -> Option<Arc<V>> {
        let last = self.last.lock().ok()?;
        let last = last.as_ref()?;
        (last.generation == self.generation.current() && now < last.expires && matches(&last.key))
            .then(|| Arc::clone(&last.value))
    }

    /// Remembers `value` as the answer for `key`, fetched at `generation`.
    pub fn remember(&self, key: K, value: Arc<V>, generation: u64) {
        let now = Instant::now();
        if let Ok(mut last) = self.last.lock() {
            *last = Some(Remembered {
                key,
                value,
                generation,
                expires: now.checked_add(MEMO_LIFETIME).unwrap_or(now),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_registry_client::TenantId;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn change() -> Result<RegistryChange, Box<dyn std::error::Error>> {
        Ok(RegistryChange::Tenant {
            tenant_id: TenantId::parse("t")?,
        })
    }

    #[test]
    fn the_same_question_is_answered_from_the_memo() {
        let memo = Memo::new(Arc::default());
        assert!(memo.recall(|k: &&str| *k == "x").is_none());
        memo.remember("x", Arc::new(1), memo.generation());
        assert_eq!(memo.recall(|k| *k == "x").as_deref(), Some(&1));
        assert!(memo.recall(|k| *k == "y").is_none());
    }

    #[test]
    fn a_registry_change_forgets() -> TestResult {
        let generation = Arc::new(RegistryGeneration::default());
        let memo = Memo::new(Arc::clone(&generation));
        memo.remember("x", Arc::new(1), memo.generation());
        generation.registry_changed(&change()?);
        assert!(memo.recall(|k| *k == "x").is_none());
        Ok(())
    }

    #[test]
    fn an_answer_fetched_across_a_change_is_not_reused() -> TestResult {
        let generation = Arc::new(RegistryGeneration::default());
        let memo = Memo::new(Arc::clone(&generation));
        let before = memo.generation();
        generation.registry_changed(&change()?);
        memo.remember("x", Arc::new(1), before);
        assert!(memo.recall(|k| *k == "x").is_none());
        Ok(())
    }
}
