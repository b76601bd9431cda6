//! Rate limits for claim attempts, per device and per tenant, without I/O: callers pass `now`.
//!
//! Each key counts the attempts that did not succeed within a fixed window that starts with the
//! first one. Once a key has `max` of them, further attempts are refused until the window ends,
//! with the time left (the `Retry-After`). An attempt is counted when it starts (so concurrent
//! guesses cannot slip past the limit) and given back when it succeeds or turns out not to be
//! a guess at all (the device was already claimed).

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// Past this many keys, expired windows are dropped before a new key is added.
const PRUNE_AT: usize = 10_000;

#[derive(Clone, Copy, Debug)]
struct Entry {
    since: Instant,
    attempts: u32,
}

/// Fixed-window attempt counters for one kind of key.
#[derive(Debug)]
pub(crate) struct Window<K> {
    max: u32,
    window: Duration,
    entries: HashMap<K, Entry>,
}

impl<K: Eq + Hash + Clone> Window<K> {
    /// At most `max` unsuccessful attempts per key within `window`.
    pub(crate) fn new(max: u32, window: Duration) -> Self {
        Self {
            max,
            window,
            entries: HashMap::new(),
        }
    }

    /// `Err(retry_after)` if `key` used up its attempts in the current window.
    pub(crate) fn check(&self, key: &K, now: Instant) -> Result<(), Duration> {
        match self.entries.get(key) {
            Some(e) if e.attempts >= self.max => {
                let end = e.since + self.window;
                match end.checked_duration_since(now) {
                    Some(left) if !left.is_zero() => Err(left),
                    _ => Ok(()),
                }
            }
            _ => Ok(()),
        }
    }

    /// Counts an attempt for `key` (starting a new window if the last one ended).
    pub(crate) fn count(&mut self, key: &K, now: Instant) {
        if self.entries.len() >= PRUNE_AT && !self.entries.contains_key(key) {
            let window = self.window;
            self.entries.retain(|_, e| now < e.since + window);
        }
        let window = self.window;
        let entry = self.entries.entry(key.clone()).or_insert(Entry {
            since: now,
            attempts: 0,
        });
        if now >= entry.since + window {
            *entry = Entry {
                since: now,
                attempts: 0,
            };
        }
        entry.attempts = entry.attempts.saturating_add(1);
    }

    /// Gives one counted attempt of `key` back.
    pub(crate) fn give_back(&mut self, key: &K) {
        if let Some(e) = self.entries.get_mut(key) {
            e.attempts = e.attempts.saturating_sub(1);
        }
    }

    /// Forgets `key` (after a successful claim).
    pub(crate) fn reset(&mut self, key: &K) {
        self.entries.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_after_max_attempts_until_the_window_ends() {
        let mut w = Window::new(3, Duration::from_secs(60));
        let t0 = Instant::now();
        for i in 0..3 {
            assert_eq!(w.check(&"d", t0 + Duration::from_secs(i)), Ok(()));
            w.count(&"d", t0 + Duration::from_secs(i));
        }
        assert_eq!(
            w.check(&"d", t0 + Duration::from_secs(10)),
            Err(Duration::from_secs(50))
        );
        // Other keys are not affected.
        assert_eq!(w.check(&"e", t0 + Duration::from_secs(10)), Ok(()));
        // The window ends: attempts are allowed again, in a fresh window.
        assert_eq!(w.check(&"d", t0 + Duration::from_secs(60)), Ok(()));
        w.count(&"d", t0 + Duration::from_secs(60));
        assert_eq!(w.check(&"d", t0 + Duration::from_secs(61)), Ok(()));
    }

    #[test]
    fn given_back_and_reset_attempts_do_not_count() {
        let mut w = Window::new(2, Duration::from_secs(60));
        let t0 = Instant::now();
        w.count(&"d", t0);
        w.count(&"d", t0);
        assert!(w.check(&"d", t0).is_err());
        w.give_back(&"d");
        assert_eq!(w.check(&"d", t0), Ok(()));
        w.count(&"d", t0);
        w.reset(&"d");
        assert_eq!(w.check(&"d", t0), Ok(()));
    }

    #[test]
    fn expired_windows_are_pruned_when_the_table_is_full() {
        let mut w = Window::new(1, Duration::from_secs(1));
        let t0 = Instant::now();
        for i in 0..PRUNE_AT {
            w.count(&i, t0);
        }
        w.count(&usize::MAX, t0 + Duration::from_secs(2));
        assert_eq!(w.entries.len(), 1);
    }
}
