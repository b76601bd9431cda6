//! Event delivery: one task per tenant with consumers of `event/TENANT`.
//!
//! The task reads the tenant's stored events in pages, oldest first, and hands each to a consumer
//! link (round-robin) as an unsettled transfer. An event is deleted only once a consumer settled
//! it `accepted` (or `rejected`, which is logged: the consumer will never take it). `released`,
//! `modified` or a lost link put it back: the task rewinds to it after a short delay, so order is
//! kept as far as redelivery allows. Memory stays bounded: one page in memory, at most
//! `max_unsettled_events` in flight, and each link's queue is small and drained only as fast as
//! the consumer grants credit. The task ends when the last consumer of the tenant is gone.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use fe2o3_amqp::types::messaging::Outcome;
use ferry_adapter_core::Endpoint;
use ferry_registry_client::TenantId;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;
use tracing::Instrument;

use crate::consumers::{Node, Offer, Outgoing};
use crate::event_store::StoredEvent;
use crate::server::{Shared, outcome_name};

/// How often to retry handing over while every consumer's queue is full.
const FULL_RETRY: Duration = Duration::from_millis(20);
/// How long to wait after a store error.
const STORE_RETRY: Duration = Duration::from_secs(1);
/// Safety net: re-check the store this often even without a notification.
const IDLE_CHECK: Duration = Duration::from_secs(5);

/// Starts the delivery task of `tenant`.
pub(crate) fn spawn(tenant: TenantId, notify: Arc<Notify>, shared: Arc<Shared>) {
    let tasks = shared.tasks.clone();
    let span = tracing::info_span!("event_delivery", tenant = %tenant);
    tasks.spawn(Delivery::new(tenant, shared).run(notify).instrument(span));
}

struct Delivery {
    node: Node,
    shared: Arc<Shared>,
    /// Highest id loaded so far.
    cursor: i64,
    /// Loaded events not yet handed to a consumer.
    buffer: VecDeque<StoredEvent>,
    /// Whether the last page was full (more events may be waiting).
    more: bool,
    in_flight: HashSet<i64>,
    /// Smallest id that must be offered again.
    rewind_to: Option<i64>,
    /// No dispatching before this instant (after a redelivery request or a store error).
    not_before: Option<Instant>,
    to_delete: Vec<i64>,
}

type Settled =
    std::pin::Pin<Box<dyn std::future::Future<Output = (i64, Result<Outcome, String>)> + Send>>;

impl Delivery {
    fn new(tenant: TenantId, shared: Arc<Shared>) -> Self {
        Self {
            node: Node {
                endpoint: Endpoint::Event,
                tenant,
            },
            shared,
            cursor: 0,
            buffer: VecDeque::new(),
            more: false,
            in_flight: HashSet::new(),
            rewind_to: None,
            not_before: None,
            to_delete: Vec::new(),
        }
    }

    async fn run(mut self, notify: Arc<Notify>) {
        tracing::debug!(node = %self.node, "event delivery started");
        let mut pending: FuturesUnordered<Settled> = FuturesUnordered::new();
        let shutdown = self.shared.shutdown.clone();
        loop {
            let paused = self.not_before.is_some_and(|t| Instant::now() < t);
            let mut no_room = false;
            if !paused {
                self.not_before = None;
                if let Some(id) = self.rewind_to.take() {
                    self.cursor = self.cursor.min(id - 1);
                    self.buffer.clear();
                }
                self.refill().await;
                no_room = self.dispatch(&mut pending);
            }
            if !self.to_delete.is_empty() {
                self.shared
                    .store
                    .delete(std::mem::take(&mut self.to_delete))
                    .await;
            }
            if pending.is_empty() && self.shared.registry.finish_delivery(&self.node.tenant) {
                break;
            }
            let can_continue = self.in_flight.len() < self.shared.config.max_unsettled_events;
            if !paused && !no_room && can_continue && self.buffer.is_empty() && self.more {
                continue;
            }
            let wait = match self.not_before {
                Some(t) => t.saturating_duration_since(Instant::now()),
                None if no_room => FULL_RETRY,
                None => IDLE_CHECK,
            };
            tokio::select! {
                () = shutdown.cancelled() => break,
                Some((id, result)) = pending.next(), if !pending.is_empty() => {
                    self.settled(id, result);
                }
                () = notify.notified() => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
        if !self.to_delete.is_empty() {
            self.shared
                .store
                .delete(std::mem::take(&mut self.to_delete))
                .await;
        }
        tracing::debug!(node = %self.node, "event delivery stopped");
    }

    /// Loads the next page when the buffer is empty and more may be sent.
    async fn refill(&mut self) {
        let config = &self.shared.config;
        if !self.buffer.is_empty() || self.in_flight.len() >= config.max_unsettled_events {
            return;
        }
        let page = config.event_page_size;
        match self
            .shared
            .store
            .load(&self.node.tenant, self.cursor, page)
            .await
        {
            Ok(events) => {
                self.more = events.len() == page;
                let now_ms = chrono::Utc::now().timestamp_millis();
                for event in events {
                    self.cursor = self.cursor.max(event.id);
                    if self.in_flight.contains(&event.id) {
                        continue;
                    }
                    let expired = event.message.ttl_ms.is_some_and(|ttl| {
                        event
                            .message
                            .creation_time
                            .saturating_add(i64::try_from(ttl).unwrap_or(i64::MAX))
                            < now_ms
                    });
                    if expired {
                        tracing::debug!(id = event.id, "dropping expired event");
                        self.to_delete.push(event.id);
                        continue;
                    }
                    self.buffer.push_back(event);
                }
            }
            Err(error) => {
                tracing::error!(%error, "loading events failed");
                self.more = false;
                self.not_before = Some(Instant::now() + STORE_RETRY);
            }
        }
    }

    /// Hands buffered events to consumers; returns `true` if it stopped for lack of room.
    fn dispatch(&mut self, pending: &mut FuturesUnordered<Settled>) -> bool {
        while self.in_flight.len() < self.shared.config.max_unsettled_events {
            let Some(event) = self.buffer.pop_front() else {
                return false;
            };
            let StoredEvent {
                id,
                message,
                message_id,
            } = event;
            let (reply, outcome) = oneshot::channel();
            let item = Outgoing {
                message: Box::new(message),
                message_id: Some(message_id),
                reply: Some(reply),
            };
            let node = &self.node;
            match self
                .shared
                .registry
                .offer(node.endpoint, &node.tenant, item)
            {
                Offer::Queued => {}
                Offer::Full(item, _) | Offer::NoConsumer(item) => {
                    self.buffer.push_front(StoredEvent {
                        id,
                        message: *item.message,
                        message_id: item.message_id.unwrap_or_default(),
                    });
                    return true;
                }
            }
            self.in_flight.insert(id);
            pending.push(Box::pin(async move {
                let result = match outcome.await {
                    Ok(result) => result,
                    Err(_) => Err("the consumer link went away".to_owned()),
                };
                (id, result)
            }));
        }
        false
    }

    fn settled(&mut self, id: i64, result: Result<Outcome, String>) {
        self.in_flight.remove(&id);
        match result {
            Ok(Outcome::Accepted(_)) => self.to_delete.push(id),
            Ok(Outcome::Rejected(rejected)) => {
                tracing::warn!(id, error = ?rejected.error, "consumer rejected an event; it is dropped");
                self.to_delete.push(id);
            }
            Ok(other) => {
                tracing::debug!(
                    id,
                    outcome = outcome_name(&other),
                    "event will be redelivered"
                );
                self.redeliver(id);
            }
            Err(reason) => {
                tracing::debug!(id, %reason, "event delivery failed; it will be redelivered");
                self.redeliver(id);
            }
        }
    }

    fn redeliver(&mut self, id: i64) {
        self.rewind_to = Some(self.rewind_to.map_or(id, |r| r.min(id)));
        if self.not_before.is_none() {
            self.not_before = Some(Instant::now() + self.shared.config.redelivery_delay);
        }
    }
}
