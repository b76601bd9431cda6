//! Registry of the consumer links attached to `telemetry/TENANT` and `event/TENANT`, and the
//! bounded queue through which messages reach each link.
//!
//! A link's queue ([`LinkQueue`]) holds at most [`LINK_QUEUE`] messages; pushing one into an
//! empty queue wakes the connection task that owns the link, which takes messages off the queue
//! as the consumer grants credit and writes them as transfers (a queue that is not empty already
//! has a wake-up pending, or waits for credit, which arrives as a frame the task reads anyway). The registry offers a message to the links of a node in
//! round-robin order ([`Registry::offer`]), so several consumers of one tenant share the load. A
//! full queue means the consumer has no credit left: the message goes to the next consumer, and
//! nothing is buffered beyond the queues' fixed size.
//!
//! The registry also tracks the per-tenant event delivery tasks ([`crate::delivery`]): the first
//! consumer of `event/TENANT` starts one, and the task ends once no consumer is left.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use fe2o3_amqp::types::messaging::Outcome;
use ferry_adapter_core::{DownstreamMessage, Endpoint, Qos};
use ferry_registry_client::TenantId;
use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;

/// Messages queued per consumer link beyond what the consumer gave credit for.
pub(crate) const LINK_QUEUE: usize = 16;

/// What the connection tells the sender of a message: the consumer's outcome, or why there is
/// none (the link went away, the message is too large for the consumer).
pub(crate) type Reply = Result<Outcome, String>;

/// One message for a consumer link.
#[derive(Debug)]
pub(crate) struct Outgoing {
    /// The message (boxed: it moves through the queues, which is cheaper for a pointer than
    /// for the message itself, even counting the allocation).
    pub message: Box<DownstreamMessage>,
    /// The message id of a stored event; telemetry gets a fresh UUID when it is encoded.
    pub message_id: Option<String>,
    /// Where to report the consumer's outcome. Absent for QoS 0 telemetry, which is sent
    /// pre-settled when the link allows it (at most once; no unsettled state piles up when a
    /// consumer settles slowly or never). Dropping it tells the sender the delivery failed.
    pub reply: Option<oneshot::Sender<Reply>>,
}

impl Outgoing {
    /// A telemetry message to hand over, and where its outcome arrives when its QoS asks for one
    /// (QoS 1; QoS 0 telemetry has none).
    pub(crate) fn telemetry(
        message: DownstreamMessage,
    ) -> (Self, Option<oneshot::Receiver<Reply>>) {
        let (reply, outcome) = match message.qos {
            Qos::AtMostOnce => (None, None),
            Qos::AtLeastOnce => {
                let (tx, rx) = oneshot::channel();
                (Some(tx), Some(rx))
            }
        };
        let item = Self {
            message: Box::new(message),
            message_id: None,
            reply,
        };
        (item, outcome)
    }

    /// Whether the sender stopped waiting for the outcome (it timed out): the message is then
    /// not sent, as its sender was told it failed.
    pub(crate) fn abandoned(&self) -> bool {
        self.reply.as_ref().is_some_and(oneshot::Sender::is_closed)
    }
}

/// A consumer source address: `telemetry/TENANT` or `event/TENANT`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Node {
    /// Telemetry or event.
    pub endpoint: Endpoint,
    /// The tenant consumed.
    pub tenant: TenantId,
}

impl Node {
    /// Parses a source address of Hono's northbound consumer API.
    pub(crate) fn parse(address: &str) -> Result<Self, String> {
        let (prefix, tenant) = address.split_once('/').ok_or_else(|| {
            format!("unknown address {address:?}: expected telemetry/TENANT or event/TENANT")
        })?;
        let endpoint = match prefix {
            "telemetry" => Endpoint::Telemetry,
            "event" => Endpoint::Event,
            _ => {
                return Err(format!(
                    "unknown address {address:?}: expected telemetry/TENANT or event/TENANT"
                ));
            }
        };
        let tenant = TenantId::parse(tenant).map_err(|e| e.to_string())?;
        Ok(Self { endpoint, tenant })
    }
}

impl std::fmt::Display for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.endpoint.as_str(), self.tenant)
    }
}

#[derive(Debug, Default)]
struct QueueState {
    items: VecDeque<Outgoing>,
    closed: bool,
    /// Senders waiting for room ([`LinkQueue::push`]); only then does a pop wake anyone.
    waiting: usize,
}

/// The bounded queue between senders and the connection task of one consumer link.
#[derive(Debug)]
pub(crate) struct LinkQueue {
    state: Mutex<QueueState>,
    /// Wakes the connection task that owns the link.
    wake: Arc<Notify>,
    /// Wakes a sender waiting for room.
    room: Notify,
}

impl LinkQueue {
    /// An empty queue whose pushes wake `wake`.
    pub(crate) fn new(wake: Arc<Notify>) -> Self {
        Self {
            state: Mutex::new(QueueState::default()),
            wake,
            room: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, QueueState> {
        // The state stays consistent whatever panicked while holding the lock.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `item` if there is room; gives it back otherwise (also when the link is gone).
    pub(crate) fn try_push(&self, item: Outgoing) -> Result<(), Outgoing> {
        let was_empty = {
            let mut state = self.lock();
            if state.closed || state.items.len() >= LINK_QUEUE {
                return Err(item);
            }
            state.items.push_back(item);
            state.items.len() == 1
        };
        if was_empty {
            self.wake.notify_one();
        }
        Ok(())
    }

    /// Queues `item`, waiting until `deadline` for room.
    pub(crate) async fn push(
        &self,
        mut item: Outgoing,
        deadline: Instant,
    ) -> Result<(), HandOverError> {
        self.lock().waiting += 1;
        // Counted out however the wait ends, also when the sender is dropped.
        let _waiting = Waiting(self);
        loop {
            let room = self.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            item = match self.try_push(item) {
                Ok(()) => return Ok(()),
                Err(_) if self.is_closed() => return Err(HandOverError::NoConsumer),
                Err(back) => back,
            };
            if tokio::time::timeout_at(deadline, room).await.is_err() {
                return Err(HandOverError::NoCredit);
            }
        }
    }

    /// Takes the next message.
    pub(crate) fn pop(&self) -> Option<Outgoing> {
        let (item, waiting) = {
            let mut state = self.lock();
            (state.items.pop_front(), state.waiting > 0)
        };
        if item.is_some() && waiting {
            self.room.notify_one();
        }
        item
    }

    /// Puts a message taken with [`Self::pop`] back in front (it could not be sent yet).
    pub(crate) fn unpop(&self, item: Outgoing) {
        self.lock().items.push_front(item);
    }

    /// The number of messages waiting.
    pub(crate) fn len(&self) -> usize {
        self.lock().items.len()
    }

    /// Whether the link is gone.
    pub(crate) fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Refuses further messages and drops the queued ones, whose senders see a failure (events
    /// are then redelivered).
    pub(crate) fn close(&self) {
        let dropped = {
            let mut state = self.lock();
            state.closed = true;
            std::mem::take(&mut state.items)
        };
        drop(dropped);
        self.room.notify_waiters();
    }
}

/// Counts a sender out of [`LinkQueue::push`] when it stops waiting.
struct Waiting<'a>(&'a LinkQueue);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.waiting = state.waiting.saturating_sub(1);
    }
}

#[derive(Debug)]
struct LinkHandle {
    id: u64,
    queue: Arc<LinkQueue>,
}

#[derive(Debug, Default)]
struct Group {
    links: Vec<LinkHandle>,
    next: usize,
}

#[derive(Debug)]
struct EventTask {
    notify: Arc<Notify>,
    running: bool,
}

/// The consumer links of one tenant: telemetry, event.
#[derive(Debug, Default)]
struct Groups([Group; 2]);

impl Groups {
    fn get_mut(&mut self, endpoint: Endpoint) -> &mut Group {
        match endpoint {
            Endpoint::Telemetry => &mut self.0[0],
            Endpoint::Event => &mut self.0[1],
        }
    }

    fn get(&self, endpoint: Endpoint) -> &Group {
        match endpoint {
            Endpoint::Telemetry => &self.0[0],
            Endpoint::Event => &self.0[1],
        }
    }

    fn is_empty(&self) -> bool {
        self.0.iter().all(|g| g.links.is_empty())
    }
}

#[derive(Debug, Default)]
struct State {
    /// Consumer links by tenant. Looked up for every message, so with a fast hasher (randomly
    /// seeded; the keys are the tenants of attached consumers, which authenticated applications
    /// choose, not devices).
    groups: HashMap<TenantId, Groups, foldhash::fast::RandomState>,
    events: HashMap<TenantId, EventTask>,
}

impl State {
    fn group(&self, node: &Node) -> Option<&Group> {
        self.groups.get(&node.tenant).map(|g| g.get(node.endpoint))
    }
}

/// All attached consumer links.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    state: Mutex<State>,
    next_id: AtomicU64,
}

/// What [`Registry::add`] tells the caller.
#[derive(Debug)]
pub(crate) struct Added {
    /// Id to pass to [`Registry::remove`].
    pub id: u64,
    /// Set when the caller must start the event delivery task of the tenant.
    pub start_delivery: Option<Arc<Notify>>,
}

/// What became of a message offered to the consumers of a node.
#[derive(Debug)]
pub(crate) enum Offer {
    /// Queued on a link.
    Queued,
    /// Every queue is full: the message, and the queue to wait on.
    Full(Outgoing, Arc<LinkQueue>),
    /// No consumer is attached.
    NoConsumer(Outgoing),
}

impl Registry {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the maps inconsistent: keep going.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a consumer link of `node` fed by `queue`.
    pub(crate) fn add(&self, node: &Node, queue: Arc<LinkQueue>) -> Added {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut state = self.lock();
        state
            .groups
            .entry(node.tenant.clone())
            .or_default()
            .get_mut(node.endpoint)
            .links
            .push(LinkHandle { id, queue });
        let mut start_delivery = None;
        if node.endpoint == Endpoint::Event {
            let task = state
                .events
                .entry(node.tenant.clone())
                .or_insert_with(|| EventTask {
                    notify: Arc::new(Notify::new()),
                    running: false,
                });
            task.notify.notify_one();
            if !task.running {
                task.running = true;
                start_delivery = Some(task.notify.clone());
            }
        }
        Added { id, start_delivery }
    }

    /// Removes a consumer link.
    pub(crate) fn remove(&self, node: &Node, id: u64) {
        let mut state = self.lock();
        if let Some(groups) = state.groups.get_mut(&node.tenant) {
            let group = groups.get_mut(node.endpoint);
            group.links.retain(|l| l.id != id);
            if groups.is_empty() {
                state.groups.remove(&node.tenant);
            }
        }
        if node.endpoint == Endpoint::Event
            && let Some(task) = state.events.get(&node.tenant)
        {
            task.notify.notify_one();
        }
    }

    /// Number of links attached to `node`.
    pub(crate) fn count(&self, node: &Node) -> usize {
        self.lock().group(node).map_or(0, |g| g.links.len())
    }

    /// Queues `item` on the first link of `ENDPOINT/TENANT` with room, in round-robin order,
    /// without waiting.
    pub(crate) fn offer(&self, endpoint: Endpoint, tenant: &TenantId, mut item: Outgoing) -> Offer {
        let mut state = self.lock();
        let Some(group) = state
            .groups
            .get_mut(tenant)
            .map(|g| g.get_mut(endpoint))
            .filter(|g| !g.links.is_empty())
        else {
            return Offer::NoConsumer(item);
        };
        let n = group.links.len();
        let start = group.next % n;
        group.next = (start + 1) % n;
        for link in group.links[start..].iter().chain(&group.links[..start]) {
            item = match link.queue.try_push(item) {
                Ok(()) => return Offer::Queued,
                Err(back) => back,
            };
        }
        let first = group.links[start..]
            .iter()
            .chain(&group.links[..start])
            .find(|l| !l.queue.is_closed());
        match first {
            Some(link) => Offer::Full(item, link.queue.clone()),
            None => Offer::NoConsumer(item),
        }
    }

    /// Wakes the delivery task of `tenant`, if one runs, after an event was stored.
    pub(crate) fn event_stored(&self, tenant: &TenantId) {
        if let Some(task) = self.lock().events.get(tenant) {
            task.notify.notify_one();
        }
    }

    /// Called by a delivery task that has nothing in flight: returns `true` (and marks the task
    /// stopped) when the tenant has no event consumer left, `false` if the task must go on.
    pub(crate) fn finish_delivery(&self, tenant: &TenantId) -> bool {
        let mut state = self.lock();
        if state
            .groups
            .get(tenant)
            .is_some_and(|g| !g.get(Endpoint::Event).links.is_empty())
        {
            return false;
        }
        state.events.remove(tenant);
        true
    }
}

/// Why a message could not be queued for any consumer.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum HandOverError {
    /// No consumer link is attached.
    #[error("no consumer is attached")]
    NoConsumer,
    /// Every consumer's queue stayed full (no credit) for the whole wait.
    #[error("no consumer has credit")]
    NoCredit,
}

#[cfg(test)]
mod tests {
    use super::*;

    use bytes::Bytes;
    use ferry_adapter_core::Qos;
    use ferry_registry_client::DeviceId;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn item(payload: &'static [u8]) -> Result<Outgoing, Box<dyn std::error::Error>> {
        Ok(Outgoing {
            message: Box::new(DownstreamMessage {
                tenant_id: TenantId::parse("t")?,
                device_id: DeviceId::parse("d")?,
                endpoint: Endpoint::Telemetry,
                qos: Qos::AtMostOnce,
                content_type: "text/plain".into(),
                creation_time: 0,
                ttl_ms: None,
                ttd: None,
                orig_adapter: "test".into(),
                orig_address: "/".into(),
                properties: Default::default(),
                retain: false,
                payload: Bytes::from_static(payload),
            }),
            message_id: None,
            reply: None,
        })
    }

    #[test]
    fn parses_addresses() -> TestResult {
        let node = Node::parse("telemetry/DEFAULT_TENANT")?;
        assert_eq!(node.endpoint, Endpoint::Telemetry);
        assert_eq!(node.tenant.as_str(), "DEFAULT_TENANT");
        assert_eq!(Node::parse("event/t")?.endpoint, Endpoint::Event);
        assert!(Node::parse("command/t").is_err());
        assert!(Node::parse("telemetry").is_err());
        assert!(Node::parse("telemetry/").is_err());
        assert!(Node::parse("telemetry/a/b").is_err());
        Ok(())
    }

    #[test]
    fn offers_round_robin_and_tracks_delivery_tasks() -> TestResult {
        let registry = Registry::default();
        let node = Node::parse("event/t")?;
        let wake = Arc::new(Notify::new());
        let (qa, qb) = (
            Arc::new(LinkQueue::new(wake.clone())),
            Arc::new(LinkQueue::new(wake)),
        );
        let a = registry.add(&node, qa.clone());
        assert!(a.start_delivery.is_some());
        let b = registry.add(&node, qb.clone());
        assert!(b.start_delivery.is_none());
        for payload in [b"1", b"2", b"3"] {
            assert!(matches!(
                registry.offer(node.endpoint, &node.tenant, item(payload)?),
                Offer::Queued
            ));
        }
        assert_eq!((qa.len(), qb.len()), (2, 1));
        assert!(!registry.finish_delivery(&node.tenant));
        registry.remove(&node, a.id);
        registry.remove(&node, b.id);
        assert!(matches!(
            registry.offer(node.endpoint, &node.tenant, item(b"4")?),
            Offer::NoConsumer(_)
        ));
        assert!(registry.finish_delivery(&node.tenant));
        let qc = Arc::new(LinkQueue::new(Arc::new(Notify::new())));
        assert!(registry.add(&node, qc).start_delivery.is_some());
        Ok(())
    }

    /// What the server does with telemetry: offer, then wait for room on the first link.
    async fn hand_over(
        registry: &Registry,
        node: &Node,
        item: Outgoing,
        deadline: Instant,
    ) -> Result<(), HandOverError> {
        match registry.offer(node.endpoint, &node.tenant, item) {
            Offer::Queued => Ok(()),
            Offer::NoConsumer(_) => Err(HandOverError::NoConsumer),
            Offer::Full(item, queue) => queue.push(item, deadline).await,
        }
    }

    #[tokio::test]
    async fn only_a_push_into_an_empty_queue_wakes_the_connection() -> TestResult {
        let wake = Arc::new(Notify::new());
        let queue = LinkQueue::new(wake.clone());
        queue.try_push(item(b"1")?).map_err(|_| "room")?;
        // The first push left a wake-up for the connection task.
        wake.notified().await;
        queue.try_push(item(b"2")?).map_err(|_| "room")?;
        let woken = wake.notified();
        tokio::pin!(woken);
        assert!(futures_util::poll!(woken.as_mut()).is_pending());
        assert!(queue.pop().is_some() && queue.pop().is_some());
        queue.try_push(item(b"3")?).map_err(|_| "room")?;
        assert!(futures_util::poll!(woken.as_mut()).is_ready());
        Ok(())
    }

    #[tokio::test]
    async fn a_full_queue_passes_on_then_waits_for_room() -> TestResult {
        let registry = Registry::default();
        let node = Node::parse("telemetry/t")?;
        let wake = Arc::new(Notify::new());
        let (full, open) = (
            Arc::new(LinkQueue::new(wake.clone())),
            Arc::new(LinkQueue::new(wake)),
        );
        for _ in 0..LINK_QUEUE {
            full.try_push(item(b"x")?).map_err(|_| "room")?;
        }
        registry.add(&node, full.clone());
        let second = registry.add(&node, open.clone());
        // Whichever link comes first in the rotation, the message lands on the open one.
        for _ in 0..2 {
            assert!(matches!(
                registry.offer(node.endpoint, &node.tenant, item(b"y")?),
                Offer::Queued
            ));
        }
        assert_eq!(open.len(), 2);
        registry.remove(&node, second.id);
        open.close();
        let soon = Instant::now() + std::time::Duration::from_millis(20);
        assert_eq!(
            hand_over(&registry, &node, item(b"z")?, soon).await,
            Err(HandOverError::NoCredit)
        );
        let later = Instant::now() + std::time::Duration::from_secs(30);
        let waiting = hand_over(&registry, &node, item(b"w")?, later);
        tokio::pin!(waiting);
        assert!(futures_util::poll!(waiting.as_mut()).is_pending());
        assert!(full.pop().is_some());
        waiting.await?;
        assert_eq!(full.len(), LINK_QUEUE);
        full.close();
        assert_eq!(full.len(), 0);
        assert!(full.try_push(item(b"v")?).is_err());
        Ok(())
    }
}
