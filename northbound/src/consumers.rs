//! Registry of the consumer links attached to `telemetry/TENANT` and `event/TENANT`.
//!
//! Every accepted consumer link runs in its own task ([`crate::link`]) fed by a small bounded
//! queue; the registry hands out those queues in round-robin order, so several consumers of one
//! tenant share the load. A full queue means the consumer has no credit left: the message goes to
//! the next consumer, and nothing is buffered beyond the queues' fixed size.
//!
//! The registry also tracks the per-tenant event delivery tasks ([`crate::delivery`]): the first
//! consumer of `event/TENANT` starts one, and the task ends once no consumer is left.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use fe2o3_amqp::link::SendError;
use fe2o3_amqp::link::delivery::DeliveryFut;
use fe2o3_amqp::types::messaging::{Data, Message, Outcome};
use ferry_adapter_core::Endpoint;
use ferry_registry_client::TenantId;
use tokio::sync::{Notify, mpsc, oneshot};

/// Messages queued per consumer link beyond what the link is sending.
pub(crate) const LINK_QUEUE: usize = 16;

/// The future that resolves with the consumer's outcome of one delivery.
pub(crate) type Settlement = DeliveryFut<Result<Outcome, SendError>>;

/// What a link task answers once a message was written to the link: the settlement to await, or
/// why it could not be sent.
pub(crate) type SentReply = Result<Settlement, String>;

/// One message for a consumer link.
pub(crate) struct Outgoing {
    /// The encoded message (boxed: messages move through queues).
    pub message: Box<Message<Data>>,
    /// Where to report that the transfer was written. Absent for QoS 0 telemetry, which is sent
    /// pre-settled when the link allows it (at most once; no unsettled state piles up when a
    /// consumer settles slowly or never).
    pub reply: Option<oneshot::Sender<SentReply>>,
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

/// The queue of one consumer link.
#[derive(Clone, Debug)]
pub(crate) struct LinkHandle {
    id: u64,
    tx: mpsc::Sender<Outgoing>,
}

#[derive(Default)]
struct Group {
    links: Vec<LinkHandle>,
    next: usize,
}

struct EventTask {
    notify: Arc<Notify>,
    running: bool,
}

#[derive(Default)]
struct State {
    groups: HashMap<Node, Group>,
    events: HashMap<TenantId, EventTask>,
}

/// All attached consumer links.
#[derive(Default)]
pub(crate) struct Registry {
    state: Mutex<State>,
    next_id: AtomicU64,
}

/// What [`Registry::add`] tells the caller.
pub(crate) struct Added {
    /// Id to pass to [`Registry::remove`].
    pub id: u64,
    /// Set when the caller must start the event delivery task of the tenant.
    pub start_delivery: Option<Arc<Notify>>,
}

impl Registry {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the maps inconsistent: keep going.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Registers a consumer link of `node`.
    pub(crate) fn add(&self, node: &Node, tx: mpsc::Sender<Outgoing>) -> Added {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut state = self.lock();
        state
            .groups
            .entry(node.clone())
            .or_default()
            .links
            .push(LinkHandle { id, tx });
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
        if let Some(group) = state.groups.get_mut(node) {
            group.links.retain(|l| l.id != id);
            if group.links.is_empty() {
                state.groups.remove(node);
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
        self.lock().groups.get(node).map_or(0, |g| g.links.len())
    }

    /// The links of `node`, starting with the next one in round-robin order.
    pub(crate) fn rotation(&self, node: &Node) -> Vec<LinkHandle> {
        let mut state = self.lock();
        let Some(group) = state.groups.get_mut(node) else {
            return Vec::new();
        };
        let n = group.links.len();
        if n == 0 {
            return Vec::new();
        }
        let start = group.next % n;
        group.next = (start + 1) % n;
        group.links[start..]
            .iter()
            .chain(&group.links[..start])
            .cloned()
            .collect()
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
        let node = Node {
            endpoint: Endpoint::Event,
            tenant: tenant.clone(),
        };
        if state.groups.get(&node).is_some_and(|g| !g.links.is_empty()) {
            return false;
        }
        state.events.remove(tenant);
        true
    }
}

/// Why a message could not be queued for any consumer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HandOverError {
    /// No consumer link is attached.
    #[error("no consumer is attached")]
    NoConsumer,
    /// Every consumer's queue stayed full (no credit) for the whole wait.
    #[error("no consumer has credit")]
    NoCredit,
}

/// Queues `item` on the first link with room, without waiting; gives the item back otherwise.
pub(crate) fn try_hand_over(links: &[LinkHandle], mut item: Outgoing) -> Result<(), Outgoing> {
    for link in links {
        match link.tx.try_send(item) {
            Ok(()) => return Ok(()),
            Err(
                mpsc::error::TrySendError::Full(back) | mpsc::error::TrySendError::Closed(back),
            ) => {
                item = back;
            }
        }
    }
    Err(item)
}

/// Queues `item` on the first link with room, waiting up to `wait` for room on the first link.
pub(crate) async fn hand_over(
    links: &[LinkHandle],
    item: Outgoing,
    wait: Duration,
) -> Result<(), HandOverError> {
    let item = match try_hand_over(links, item) {
        Ok(()) => return Ok(()),
        Err(item) => item,
    };
    let link = links
        .iter()
        .find(|l| !l.tx.is_closed())
        .ok_or(HandOverError::NoConsumer)?;
    match tokio::time::timeout(wait, link.tx.send(item)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(HandOverError::NoConsumer),
        Err(_) => Err(HandOverError::NoCredit),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_addresses() -> Result<(), Box<dyn std::error::Error>> {
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
    fn rotates_and_tracks_delivery_tasks() -> Result<(), Box<dyn std::error::Error>> {
        let registry = Registry::default();
        let node = Node::parse("event/t")?;
        let (tx1, _rx1) = mpsc::channel(1);
        let (tx2, _rx2) = mpsc::channel(1);
        let a = registry.add(&node, tx1);
        assert!(a.start_delivery.is_some());
        let b = registry.add(&node, tx2);
        assert!(b.start_delivery.is_none());
        let first: Vec<u64> = registry.rotation(&node).iter().map(|l| l.id).collect();
        let second: Vec<u64> = registry.rotation(&node).iter().map(|l| l.id).collect();
        assert_eq!(first, vec![a.id, b.id]);
        assert_eq!(second, vec![b.id, a.id]);
        assert!(!registry.finish_delivery(&node.tenant));
        registry.remove(&node, a.id);
        registry.remove(&node, b.id);
        assert!(registry.rotation(&node).is_empty());
        assert!(registry.finish_delivery(&node.tenant));
        let (tx3, _rx3) = mpsc::channel(1);
        assert!(registry.add(&node, tx3).start_delivery.is_some());
        Ok(())
    }
}
