//! The connections in the serving phase, and what ends one of them from outside: keep-alive,
//! shutdown and registry changes, without a timer, a cancellation token or a waiter in every
//! connection (at 10,000 idle connections those were about 300 bytes each).
//!
//! Each serving connection shares a small [`Link`] with the adapter's [`ServingConnections`]:
//! the time of its last packet, the reasons it has to end, and the waker of its task. One
//! sweeper task per adapter ([`ServingConnections::sweep`]) ends every connection that sent
//! nothing for 1.5 × its keep-alive, and on shutdown ends them all (their forwards in flight
//! finish first); a registry change ends one connection through the link `watch.rs` keeps. The
//! connection polls its link in its serving loop and touches it whenever bytes arrive.

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::task::AtomicWaker;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Longest time between two sweeps. A connection's first deadline is at least 1.5 s after it
/// registered (keep-alive ≥ 1 s), so sweeping at least this often, and at the earliest deadline
/// seen, closes every connection at its deadline.
const MAX_SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// `Link::ended` bits.
const SHUTDOWN: u8 = 1;
const REVOKED: u8 = 2;
const KEEP_ALIVE: u8 = 4;

/// Why a serving connection has to end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum End {
    /// The process shuts down.
    Shutdown,
    /// A registry change disabled or deleted the connection's tenant or device.
    Revoked,
    /// Nothing arrived for 1.5 × the client's keep-alive.
    KeepAliveTimeout,
}

/// What one serving connection shares with the sweeper and the registry watch (64 bytes with
/// its reference counts).
#[derive(Debug)]
pub(crate) struct Link {
    /// Milliseconds from the sweeper's epoch to the connection's last activity.
    last_active: AtomicU64,
    /// 1.5 × the keep-alive in milliseconds; 0 when the client has none.
    timeout_ms: u64,
    /// Why the connection has to end (`SHUTDOWN`, `REVOKED`, `KEEP_ALIVE` bits); 0 while it
    /// may go on.
    ended: AtomicU8,
    /// The connection's task, while it waits.
    waker: AtomicWaker,
}

impl Link {
    /// Ends the connection because a registry change revoked it.
    pub(crate) fn revoke(&self) {
        self.end(REVOKED);
    }

    fn end(&self, why: u8) {
        self.ended.fetch_or(why, Ordering::AcqRel);
        self.waker.wake();
    }

    fn end_reason(&self) -> Option<End> {
        let ended = self.ended.load(Ordering::Acquire);
        if ended & SHUTDOWN != 0 {
            Some(End::Shutdown)
        } else if ended & REVOKED != 0 {
            Some(End::Revoked)
        } else if ended & KEEP_ALIVE != 0 {
            Some(End::KeepAliveTimeout)
        } else {
            None
        }
    }

    /// Ready once the connection has to end; otherwise the task is woken when it has to.
    pub(crate) fn poll_end(&self, cx: &mut Context<'_>) -> Poll<End> {
        if let Some(end) = self.end_reason() {
            return Poll::Ready(end);
        }
        self.waker.register(cx.waker());
        // An end set between the first look and the registration woke nobody.
        match self.end_reason() {
            Some(end) => Poll::Ready(end),
            None => Poll::Pending,
        }
    }
}

/// A connection's registration; the sweeper forgets its link once this (and the watch's copy)
/// is dropped.
#[derive(Debug)]
pub(crate) struct Registered(Arc<Link>);

impl Registered {
    /// The link, to be shared (with the registry watch).
    pub(crate) fn link(&self) -> &Arc<Link> {
        &self.0
    }
}

impl std::ops::Deref for Registered {
    type Target = Link;

    fn deref(&self) -> &Link {
        &self.0
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        // The waker holds the connection's task: let it go now, not at the next sweep.
        drop(self.0.waker.take());
    }
}

/// The adapter's serving connections.
#[derive(Debug)]
pub(crate) struct ServingConnections {
    /// What `Link::last_active` counts from.
    epoch: Instant,
    table: Mutex<Table>,
}

#[derive(Debug, Default)]
struct Table {
    links: Vec<Arc<Link>>,
    /// Set on shutdown: new connections are born ended.
    shut: bool,
}

impl ServingConnections {
    /// An empty table; its sweeper is [`ServingConnections::sweep`].
    pub(crate) fn new() -> Self {
        Self {
            epoch: Instant::now(),
            table: Mutex::default(),
        }
    }

    fn now_ms(&self) -> u64 {
        let elapsed = Instant::now().saturating_duration_since(self.epoch);
        u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
    }

    /// Registers a connection that starts serving now, with the client's keep-alive in seconds
    /// (0: none). After shutdown the connection is told to end at once.
    pub(crate) fn register(&self, keep_alive: u16) -> Registered {
        let link = Arc::new(Link {
            last_active: AtomicU64::new(self.now_ms()),
            timeout_ms: u64::from(keep_alive) * 1500,
            ended: AtomicU8::new(0),
            waker: AtomicWaker::new(),
        });
        let mut table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        if table.shut {
            link.ended.store(SHUTDOWN, Ordering::Release);
        } else {
            table.links.push(Arc::clone(&link));
        }
        Registered(link)
    }

    /// Records activity on `link` (a packet arrived, or a forward finished: a connection that
    /// is not read because its forwards are in flight is not idle).
    pub(crate) fn touch(&self, link: &Link) {
        link.last_active.store(self.now_ms(), Ordering::Relaxed);
    }

    /// The sweeper: ends connections past their keep-alive deadline until `shutdown` fires,
    /// then ends every connection.
    pub(crate) async fn sweep(self: Arc<Self>, shutdown: CancellationToken) {
        let mut next = Instant::now() + MAX_SWEEP_INTERVAL;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep_until(next) => next = self.expire(),
            }
        }
        self.shut_down();
    }

    /// Ends the connections whose deadline passed and forgets those that are gone; returns
    /// when to sweep next.
    fn expire(&self) -> Instant {
        let now = self.now_ms();
        let mut next = now.saturating_add(MAX_SWEEP_INTERVAL.as_millis() as u64);
        let mut table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        let links = &mut table.links;
        links.retain(|link| {
            // Only the table holds it: the connection ended.
            if Arc::strong_count(link) == 1 {
                return false;
            }
            if link.timeout_ms > 0 && link.ended.load(Ordering::Acquire) == 0 {
                let deadline = link
                    .last_active
                    .load(Ordering::Relaxed)
                    .saturating_add(link.timeout_ms);
                if deadline <= now {
                    link.end(KEEP_ALIVE);
                } else {
                    next = next.min(deadline);
                }
            }
            true
        });
        if links.capacity() > 64 && links.len() < links.capacity() / 4 {
            links.shrink_to(links.len() * 2);
        }
        self.epoch + Duration::from_millis(next)
    }

    fn shut_down(&self) {
        let mut table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        table.shut = true;
        for link in std::mem::take(&mut table.links) {
            link.end(SHUTDOWN);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;

    use futures_util::FutureExt;
    use tokio::task::JoinHandle;

    use super::*;

    /// The link's end, if it has one now (a look with a waker of its own: not while a task
    /// waits on the same link).
    fn ended(link: &Link) -> Option<End> {
        poll_fn(|cx| link.poll_end(cx).map(Some))
            .now_or_never()
            .flatten()
    }

    /// A task waiting for the link's end, as a connection does; its end and when it came.
    fn wait(link: &Registered) -> JoinHandle<(End, Instant)> {
        let link = Arc::clone(link.link());
        tokio::spawn(async move { (poll_fn(|cx| link.poll_end(cx)).await, Instant::now()) })
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_connection_ends_at_its_deadline_and_an_active_one_does_not()
    -> Result<(), tokio::task::JoinError> {
        let serving = Arc::new(ServingConnections::new());
        let shutdown = CancellationToken::new();
        let sweeper = tokio::spawn(Arc::clone(&serving).sweep(shutdown.clone()));
        let started = Instant::now();
        let silent = serving.register(10);
        let active = serving.register(10);
        let without = serving.register(0);
        let silent_end = wait(&silent);
        // The active one sends every 9 s for 63 s; the silent one ends 15 s after it connected.
        for _ in 0..7 {
            tokio::time::sleep(Duration::from_secs(9)).await;
            serving.touch(&active);
        }
        assert_eq!(
            silent_end.await?,
            (End::KeepAliveTimeout, started + Duration::from_secs(15))
        );
        assert_eq!(ended(&active), None);
        assert_eq!(ended(&without), None);
        // Then the active one goes silent too: it ends 15 s after its last activity.
        let last = Instant::now();
        assert_eq!(
            wait(&active).await?,
            (End::KeepAliveTimeout, last + Duration::from_secs(15))
        );
        assert_eq!(ended(&without), None);
        // A dropped connection is forgotten at the next sweep.
        drop((silent, active));
        tokio::time::sleep(MAX_SWEEP_INTERVAL + Duration::from_millis(1)).await;
        assert_eq!(serving.table.lock().map(|t| t.links.len()).ok(), Some(1));
        // Shutdown ends the others, and connections registering later.
        let without_end = wait(&without);
        shutdown.cancel();
        sweeper.await?;
        assert_eq!(without_end.await?.0, End::Shutdown);
        assert_eq!(ended(&serving.register(10)), Some(End::Shutdown));
        Ok(())
    }

    #[tokio::test]
    async fn a_revoked_link_wakes_its_connection() -> Result<(), tokio::task::JoinError> {
        let serving = ServingConnections::new();
        let registered = serving.register(0);
        let end = wait(&registered);
        tokio::task::yield_now().await;
        assert!(!end.is_finished());
        registered.link().revoke();
        assert_eq!(end.await?.0, End::Revoked);
        Ok(())
    }
}
