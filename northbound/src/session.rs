//! One session of an application connection (AMQP 1.0 §2.5): its links, its transfer and
//! delivery ids, the consumer's incoming window, and the deliveries waiting for an outcome.
//!
//! A receiver link from `telemetry/TENANT` or `event/TENANT` becomes a consumer link and is
//! registered ([`crate::consumers::Registry`]); anything else is attached as asked and detached at
//! once with `amqp:not-found` (unknown address) or `amqp:not-allowed` (a sender link). (AMQP also
//! allows an attach with a null terminus before the detach, but fe2o3-amqp clients answer that
//! with a second detach whose handle may already belong to their next link.) Events are at least
//! once, so an event link never sends pre-settled: a consumer asking for `settled` gets
//! `unsettled`. Consumers settle first (receiver settle mode `first`).
//!
//! Outcomes arrive as `disposition` frames over ranges of delivery ids; each delivery with a
//! waiting sender is looked up in an ordered map, so a range costs what it settles, never its
//! width. A consumer that does not settle (`settled` false) with a terminal outcome is answered
//! with our settlement.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::BytesMut;
use fe2o3_amqp::types::definitions::{
    AmqpError, Error as ErrorBody, Handle, ReceiverSettleMode, Role, SenderSettleMode,
};
use fe2o3_amqp::types::messaging::{DeliveryState, Outcome, TargetArchetype};
use fe2o3_amqp::types::performatives::{Attach, Begin, Detach, Disposition, Flow};
use ferry_adapter_core::Endpoint;
use ferry_amqp_wire::channels;
use ferry_amqp_wire::frame::encode_or_log;
use ferry_registry_client::TenantId;
use tokio::sync::{Notify, oneshot};

use crate::consumers::{LinkQueue, Node, Registry, Reply};
use crate::link::{Consumer, Kind, Link};
use crate::transfer::{self, Head, TooLarge};

/// Transfer frames the application may send (it sends none: consumers only receive).
const INCOMING_WINDOW: u32 = 2048;
/// What we tell about our outgoing window: we never hold transfers back for it.
const OUTGOING_WINDOW: u32 = u32::MAX;
/// Highest link handle of a session (so at most 64 links).
pub(crate) const MAX_HANDLE: u32 = 63;

/// A delivery waiting for the consumer's outcome.
#[derive(Debug)]
struct Unsettled {
    /// The link it went out on.
    link: u64,
    reply: oneshot::Sender<Reply>,
}

/// A session the application began.
#[derive(Debug)]
pub(crate) struct Session {
    /// The channel, the same number on both sides.
    channel: u16,
    /// Our next transfer id.
    next_outgoing_id: u32,
    /// The application's next transfer id.
    next_incoming_id: u32,
    next_delivery_id: u32,
    /// Transfer frames the application can take before its next `flow`.
    remote_incoming_window: u32,
    links: Vec<Option<Link>>,
    unsettled: BTreeMap<u32, Unsettled>,
}

/// What the connection needs from a session's caller.
pub(crate) struct Context<'a> {
    pub registry: &'a Registry,
    /// The connection task's wake-up, for the queues of new links.
    pub wake: &'a Arc<Notify>,
    pub out: &'a mut BytesMut,
}

impl Session {
    /// Answers the application's `begin` on `channel`.
    pub(crate) fn begin(channel: u16, begin: &Begin, out: &mut BytesMut) -> Self {
        let session = Self {
            channel,
            next_outgoing_id: 0,
            next_incoming_id: begin.next_outgoing_id,
            next_delivery_id: 0,
            remote_incoming_window: begin.incoming_window,
            links: Vec::new(),
            unsettled: BTreeMap::new(),
        };
        let answer = channels::answer(channel, INCOMING_WINDOW, OUTGOING_WINDOW, MAX_HANDLE);
        encode_or_log(out, channel, &answer);
        session
    }

    fn link_mut(&mut self, handle: u32) -> Option<&mut Link> {
        self.links.get_mut(handle as usize).and_then(Option::as_mut)
    }

    /// Attaches the application's link: a consumer, or one refused at once. Returns the tenant
    /// whose event delivery task must be started, if any. An error ends the connection.
    pub(crate) fn on_attach(
        &mut self,
        attach: Attach,
        link_id: u64,
        cx: &mut Context<'_>,
    ) -> Result<Option<(TenantId, Arc<Notify>)>, ErrorBody> {
        let handle = attach.handle.0;
        channels::check_new_handle(handle, MAX_HANDLE, self.link_mut(handle).is_some())?;
        let node = match attach.role {
            Role::Receiver => {
                let address = attach
                    .source
                    .as_ref()
                    .and_then(|s| s.address.clone())
                    .unwrap_or_default();
                Node::parse(&address).map_err(|reason| (AmqpError::NotFound, address, reason))
            }
            Role::Sender => {
                let address = attach
                    .target
                    .as_deref()
                    .and_then(|t| match t {
                        TargetArchetype::Target(t) => t.address.clone(),
                        #[allow(unreachable_patterns)]
                        // other archetypes exist with fe2o3's `transaction` feature
                        _ => None,
                    })
                    .unwrap_or_default();
                let reason = format!(
                    "sending to {address:?} is not allowed: this endpoint only serves consumers"
                );
                Err((AmqpError::NotAllowed, address, reason))
            }
        };
        let settle_mode = match (&node, &attach.snd_settle_mode) {
            (Ok(node), SenderSettleMode::Settled) if node.endpoint == Endpoint::Event => {
                SenderSettleMode::Unsettled
            }
            (_, mode) => mode.clone(),
        };
        let role = match attach.role {
            Role::Sender => Role::Receiver,
            Role::Receiver => Role::Sender,
        };
        let max_message_size = attach.max_message_size;
        let name = attach.name.clone();
        let initial_delivery_count = (role == Role::Sender).then_some(0);
        let answer = Attach {
            role,
            snd_settle_mode: settle_mode.clone(),
            rcv_settle_mode: ReceiverSettleMode::First,
            unsettled: None,
            incomplete_unsettled: false,
            initial_delivery_count,
            max_message_size: None,
            offered_capabilities: None,
            desired_capabilities: None,
            properties: None,
            ..attach
        };
        encode_or_log(cx.out, self.channel, &answer);
        let mut start_delivery = None;
        let kind = match node {
            Ok(node) => {
                let queue = Arc::new(LinkQueue::new(cx.wake.clone()));
                let added = cx.registry.add(&node, queue.clone());
                tracing::info!(link = %name, %node, "consumer attached");
                start_delivery = added.start_delivery.map(|n| (node.tenant.clone(), n));
                Kind::Consumer(Consumer {
                    node,
                    registration: added.id,
                    queue,
                })
            }
            Err((condition, address, reason)) => {
                tracing::warn!(link = %name, %address, %reason, "link refused");
                let error = ErrorBody::new(condition, reason, None);
                self.send_detach(handle, Some(error), cx.out);
                Kind::Detached
            }
        };
        let mut link = Link::new(link_id, kind, settle_mode);
        link.max_message_size = max_message_size;
        if self.links.len() <= handle as usize {
            self.links.resize_with(handle as usize + 1, || None);
        }
        if let Some(slot) = self.links.get_mut(handle as usize) {
            *slot = Some(link);
        }
        Ok(start_delivery)
    }

    /// Takes the application's `flow`: its window, and a link's credit.
    pub(crate) fn on_flow(&mut self, flow: &Flow, out: &mut BytesMut) -> Result<(), ErrorBody> {
        self.next_incoming_id = flow.next_outgoing_id;
        self.remote_incoming_window = match flow.next_incoming_id {
            Some(next) => next
                .wrapping_add(flow.incoming_window)
                .wrapping_sub(self.next_outgoing_id),
            None => flow.incoming_window,
        };
        let Some(handle) = flow.handle.as_ref().map(|h| h.0) else {
            if flow.echo {
                let flow = self.flow(None);
                encode_or_log(out, self.channel, &flow);
            }
            return Ok(());
        };
        let Some(link) = self.link_mut(handle) else {
            // A client may still grant credit to a link it is detaching.
            tracing::debug!(handle, "flow of a link that is not attached ignored");
            return Ok(());
        };
        if link.consumer().is_some() {
            link.on_flow(
                flow.delivery_count,
                flow.link_credit.unwrap_or(0),
                flow.drain,
            );
            link.flow_due |= flow.echo;
        }
        Ok(())
    }

    /// Takes the consumer's outcomes of the deliveries `first..=last`.
    pub(crate) fn on_disposition(&mut self, disposition: &Disposition, out: &mut BytesMut) {
        if disposition.role != Role::Receiver {
            // We sent no deliveries the application could settle as their sender.
            return;
        }
        let first = disposition.first;
        let last = disposition.last.unwrap_or(first);
        let outcome = match &disposition.state {
            Some(DeliveryState::Accepted(a)) => Some(Outcome::Accepted(a.clone())),
            Some(DeliveryState::Rejected(r)) => Some(Outcome::Rejected(r.clone())),
            Some(DeliveryState::Released(r)) => Some(Outcome::Released(r.clone())),
            Some(DeliveryState::Modified(m)) => Some(Outcome::Modified(m.clone())),
            _ => None,
        };
        if outcome.is_none() && !disposition.settled {
            // A non-terminal state (`received`): nothing is decided yet.
            return;
        }
        let ids: Vec<u32> = if first <= last {
            self.unsettled
                .range(first..=last)
                .map(|(id, _)| *id)
                .collect()
        } else {
            // The range wraps around the end of the id space.
            self.unsettled
                .range(first..)
                .chain(self.unsettled.range(..=last))
                .map(|(id, _)| *id)
                .collect()
        };
        for id in ids {
            if let Some(unsettled) = self.unsettled.remove(&id) {
                let reply = outcome
                    .clone()
                    .ok_or_else(|| "the consumer settled without an outcome".to_owned());
                let _ = unsettled.reply.send(reply);
            }
        }
        if !disposition.settled {
            let settle = Disposition {
                role: Role::Sender,
                first,
                last: disposition.last,
                settled: true,
                state: disposition.state.clone(),
                batchable: false,
            };
            encode_or_log(out, self.channel, &settle);
        }
    }

    /// Takes the application's `detach`, answering it unless we detached first.
    pub(crate) fn on_detach(
        &mut self,
        detach: &Detach,
        registry: &Registry,
        out: &mut BytesMut,
    ) -> Result<(), ErrorBody> {
        let handle = detach.handle.0;
        let Some(link) = self.links.get_mut(handle as usize).and_then(Option::take) else {
            // fe2o3-amqp clients detach a link we refused a second time when they drop it.
            tracing::debug!(handle, "detach of a link that is not attached ignored");
            return Ok(());
        };
        if let Some(error) = &detach.error {
            tracing::info!(%error, "the application detached a link with an error");
        }
        if let Kind::Consumer(consumer) = &link.kind {
            tracing::info!(node = %consumer.node, "consumer detached");
            let answer = Detach {
                handle: Handle(handle),
                closed: detach.closed,
                error: None,
            };
            encode_or_log(out, self.channel, &answer);
        }
        self.release(link, registry);
        Ok(())
    }

    /// Unregisters a link that is gone; its queued and unsettled deliveries fail (events are
    /// redelivered).
    fn release(&mut self, link: Link, registry: &Registry) {
        if let Kind::Consumer(consumer) = link.kind {
            registry.remove(&consumer.node, consumer.registration);
            consumer.queue.close();
        }
        self.unsettled.retain(|_, u| u.link != link.id);
    }

    /// Unregisters every link (the session or connection ended).
    pub(crate) fn release_all(&mut self, registry: &Registry) {
        for link in std::mem::take(&mut self.links).into_iter().flatten() {
            self.release(link, registry);
        }
    }

    /// Closes every consumer link with `error` (it then waits for the application's detach).
    pub(crate) fn detach_all(
        &mut self,
        error: &ErrorBody,
        registry: &Registry,
        out: &mut BytesMut,
    ) {
        for handle in 0..self.links.len() {
            let Some(link) = self.links.get_mut(handle).and_then(Option::take) else {
                continue;
            };
            let id = link.id;
            let detached = link.consumer().is_some();
            self.release(link, registry);
            if detached {
                self.send_detach(handle as u32, Some(error.clone()), out);
            }
            if let Some(slot) = self.links.get_mut(handle) {
                *slot = Some(Link::new(id, Kind::Detached, SenderSettleMode::Unsettled));
            }
        }
    }

    /// Whether a sender still waits for an outcome of this session.
    pub(crate) fn awaits_outcomes(&self) -> bool {
        self.unsettled.values().any(|u| !u.reply.is_closed())
    }

    /// Writes the queued messages its consumers have credit for, and the `flow`s that are due.
    pub(crate) fn send_queued(&mut self, out: &mut BytesMut, max_frame: usize) {
        for handle in 0..self.links.len() {
            self.send_link(handle, out, max_frame);
        }
    }

    fn send_link(&mut self, handle: usize, out: &mut BytesMut, max_frame: usize) {
        let Some(link) = self.links.get_mut(handle).and_then(Option::as_mut) else {
            return;
        };
        let Some(queue) = link.consumer().map(|c| c.queue.clone()) else {
            return;
        };
        while link.credit > 0 {
            let Some(item) = queue.pop() else { break };
            if item.abandoned() {
                continue;
            }
            let mut generated = [0u8; uuid::fmt::Hyphenated::LENGTH];
            let message_id: &str = match &item.message_id {
                Some(id) => id,
                None => uuid::Uuid::new_v4()
                    .hyphenated()
                    .encode_lower(&mut generated),
            };
            if transfer::frames_needed(&item.message, message_id, max_frame)
                > self.remote_incoming_window
            {
                queue.unpop(item);
                break;
            }
            let presettled = link.presettled(item.reply.is_some());
            let head = Head {
                channel: self.channel,
                handle: handle as u32,
                delivery_id: self.next_delivery_id,
                settled: presettled,
            };
            match transfer::write(
                out,
                head,
                &item.message,
                message_id,
                max_frame,
                link.max_message_size,
            ) {
                Ok(frames) => {
                    self.next_outgoing_id = self.next_outgoing_id.wrapping_add(frames);
                    self.remote_incoming_window -= frames.min(self.remote_incoming_window);
                    self.next_delivery_id = self.next_delivery_id.wrapping_add(1);
                    link.spend();
                    if let Some(reply) = item.reply {
                        if presettled {
                            // The consumer cannot answer a pre-settled delivery: it counts as
                            // accepted, as in settle mode `settled` every delivery does.
                            let _ = reply.send(Ok(Outcome::Accepted(
                                fe2o3_amqp::types::messaging::Accepted {},
                            )));
                        } else {
                            self.unsettled.insert(
                                head.delivery_id,
                                Unsettled {
                                    link: link.id,
                                    reply,
                                },
                            );
                        }
                    }
                }
                Err(TooLarge(size)) => {
                    tracing::warn!(size, max = ?link.max_message_size, "message exceeds the consumer's max-message-size");
                    if let Some(reply) = item.reply {
                        let _ = reply.send(Err(format!(
                            "the message ({size} bytes) exceeds the consumer's max-message-size"
                        )));
                    }
                }
            }
        }
        if link.drain && queue.len() == 0 {
            link.finish_drain();
        }
        if std::mem::take(&mut link.flow_due) {
            let state = (handle as u32, link.delivery_count, link.credit, link.drain);
            let available = u32::try_from(queue.len()).unwrap_or(u32::MAX);
            let mut flow = self.flow(Some(state));
            flow.available = Some(available);
            encode_or_log(out, self.channel, &flow);
        }
    }

    fn send_detach(&self, handle: u32, error: Option<ErrorBody>, out: &mut BytesMut) {
        let detach = Detach {
            handle: Handle(handle),
            closed: true,
            error,
        };
        encode_or_log(out, self.channel, &detach);
    }

    /// A `flow` with the session's state, and a link's (handle, delivery count, credit, drain)
    /// when given.
    fn flow(&self, link: Option<(u32, u32, u32, bool)>) -> Flow {
        let (handle, delivery_count, link_credit, drain) = match link {
            Some((handle, count, credit, drain)) => {
                (Some(Handle(handle)), Some(count), Some(credit), drain)
            }
            None => (None, None, None, false),
        };
        Flow {
            next_incoming_id: Some(self.next_incoming_id),
            incoming_window: INCOMING_WINDOW,
            next_outgoing_id: self.next_outgoing_id,
            outgoing_window: OUTGOING_WINDOW,
            handle,
            delivery_count,
            link_credit,
            available: None,
            drain,
            echo: false,
            properties: None,
        }
    }
}
