//! The AMQP 1.0 engine of an application connection, without I/O: it takes the frames the
//! application sent after the `open` exchange and writes ours into one output buffer.
//!
//! It keeps the sessions (by channel) and their links, registers consumer links with the
//! [`Registry`], writes the messages queued for them as transfers as far as credit and the
//! application's session window allow ([`Engine::send_queued`]), and completes waiting senders
//! with the outcomes the application's `disposition`s carry. A protocol violation is returned as
//! the error the connection is to be closed with. The connection task ([`crate::connection`])
//! does the I/O and the timers; one such task is all a connection costs.

use std::sync::Arc;

use bytes::BytesMut;
use fe2o3_amqp::frames::amqp::{Frame, FrameBody};
use fe2o3_amqp::types::definitions::{AmqpError, Error as ErrorBody};
use fe2o3_amqp::types::performatives::{Close, End};
use ferry_amqp_wire::Channels;
use ferry_amqp_wire::frame::{self, FramingError, encode_or_log};
use ferry_registry_client::TenantId;
use tokio::sync::Notify;

use crate::consumers::Registry;
use crate::session::{Context, Session};
use crate::transfer;

/// Highest session channel of an application connection (so at most 32 sessions).
pub(crate) const MAX_CHANNEL: u16 = 31;

/// What a frame of the application meant for the connection task.
#[derive(Debug)]
pub(crate) enum Event {
    /// The first consumer of `event/TENANT` attached: start the tenant's delivery task.
    StartDelivery(TenantId, Arc<Notify>),
    /// The application closed the connection (with this error, if any); the `close` is answered.
    Closed(Option<ErrorBody>),
}

/// The state of one open connection.
#[derive(Debug)]
pub(crate) struct Engine {
    sessions: Channels<Session>,
    out: BytesMut,
    registry: Arc<Registry>,
    /// Woken when a message is queued for one of this connection's links.
    wake: Arc<Notify>,
    /// Largest frame accepted from the application.
    max_frame_size: u32,
    /// Largest frame the application accepts.
    peer_max_frame: usize,
    next_link_id: u64,
    closed: bool,
}

impl Engine {
    /// An engine for a connection whose `open` was exchanged; `peer_max_frame_size` from the
    /// application's `open`.
    pub(crate) fn new(
        registry: Arc<Registry>,
        wake: Arc<Notify>,
        max_frame_size: u32,
        peer_max_frame_size: u32,
    ) -> Self {
        Self {
            sessions: Channels::new(MAX_CHANNEL),
            out: BytesMut::new(),
            registry,
            wake,
            max_frame_size,
            peer_max_frame: transfer::frame_size(peer_max_frame_size),
            next_link_id: 0,
            closed: false,
        }
    }

    /// Cuts the next complete frame off `received` (bytes read from the application).
    pub(crate) fn next_frame(
        &self,
        received: &mut BytesMut,
    ) -> Result<Option<Frame>, FramingError> {
        frame::next_frame(received, self.max_frame_size)
    }

    /// Takes one frame of the application. `Err` is the error to close the connection with.
    pub(crate) fn on_frame(&mut self, frame: Frame) -> Result<Option<Event>, ErrorBody> {
        let channel = frame.channel;
        match frame.body {
            FrameBody::Flow(flow) => {
                self.sessions
                    .get_mut(channel)?
                    .on_flow(&flow, &mut self.out)?;
                Ok(None)
            }
            FrameBody::Disposition(disposition) => {
                self.sessions
                    .get_mut(channel)?
                    .on_disposition(&disposition, &mut self.out);
                Ok(None)
            }
            FrameBody::Attach(attach) => {
                let id = self.next_link_id;
                self.next_link_id += 1;
                let mut cx = Context {
                    registry: &self.registry,
                    wake: &self.wake,
                    out: &mut self.out,
                };
                let start = self
                    .sessions
                    .get_mut(channel)?
                    .on_attach(attach, id, &mut cx)?;
                Ok(start.map(|(tenant, notify)| Event::StartDelivery(tenant, notify)))
            }
            FrameBody::Detach(detach) => {
                self.sessions.get_mut(channel)?.on_detach(
                    &detach,
                    &self.registry,
                    &mut self.out,
                )?;
                Ok(None)
            }
            FrameBody::Transfer { .. } => Err(ErrorBody::new(
                AmqpError::NotAllowed,
                "this endpoint only serves consumers: it takes no transfers".to_owned(),
                None,
            )),
            FrameBody::Begin(begin) => {
                let out = &mut self.out;
                self.sessions
                    .begin(channel, &begin, || Session::begin(channel, &begin, out))?;
                Ok(None)
            }
            FrameBody::End(end) => {
                let mut ended = self.sessions.end(channel)?;
                if let Some(error) = &end.error {
                    tracing::info!(%error, "the application ended a session with an error");
                }
                ended.release_all(&self.registry);
                encode_or_log(&mut self.out, channel, &End { error: None });
                Ok(None)
            }
            FrameBody::Close(close) => {
                self.close(None);
                Ok(Some(Event::Closed(close.error)))
            }
            FrameBody::Open(_) => Err(ErrorBody::new(
                AmqpError::IllegalState,
                "the connection is already open".to_owned(),
                None,
            )),
            FrameBody::Empty => Ok(None),
        }
    }

    /// Writes the queued messages the consumers have credit for, and the `flow`s that are due.
    pub(crate) fn send_queued(&mut self) {
        for session in self.sessions.iter_mut() {
            session.send_queued(&mut self.out, self.peer_max_frame);
        }
    }

    /// Closes every consumer link with `error`; their queued messages fail.
    pub(crate) fn detach_all(&mut self, error: &ErrorBody) {
        for session in self.sessions.iter_mut() {
            session.detach_all(error, &self.registry, &mut self.out);
        }
    }

    /// Whether a sender still waits for a consumer's outcome of a delivery of this connection.
    pub(crate) fn awaits_outcomes(&self) -> bool {
        self.sessions.iter().any(Session::awaits_outcomes)
    }

    /// Sends `close` (once).
    pub(crate) fn close(&mut self, error: Option<ErrorBody>) {
        if std::mem::replace(&mut self.closed, true) {
            return;
        }
        encode_or_log(&mut self.out, 0, &Close { error });
    }

    /// Sends an empty frame, which keeps the application's idle timer from firing.
    pub(crate) fn heartbeat(&mut self) {
        if let Err(error) = frame::encode::<Close>(&mut self.out, 0, None) {
            tracing::warn!(%error, "the heartbeat could not be encoded");
        }
    }

    /// The frames to write; the caller clears it once written.
    pub(crate) fn output(&mut self) -> &mut BytesMut {
        &mut self.out
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        // However the connection ended, its links leave the registry and their senders learn.
        for session in self.sessions.iter_mut() {
            session.release_all(&self.registry);
        }
    }
}

#[cfg(test)]
mod tests {
    use fe2o3_amqp::types::definitions::{Handle, ReceiverSettleMode, Role, SenderSettleMode};
    use fe2o3_amqp::types::messaging::{
        Accepted, DeliveryState, Outcome, Released, Source, Target, TargetArchetype,
    };
    use fe2o3_amqp::types::performatives::{Attach, Begin, Detach, Disposition, Flow};
    use ferry_adapter_core::Qos;
    use tokio::sync::oneshot;

    use super::*;
    use crate::consumers::{Node, Offer, Outgoing, Reply};

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    /// The frames the engine wrote, decoded.
    fn written(engine: &mut Engine) -> Result<Vec<FrameBody>, FramingError> {
        let mut out = std::mem::take(engine.output());
        let mut frames = Vec::new();
        while let Some(frame) = frame::next_frame(&mut out, u32::MAX)? {
            frames.push(frame.body);
        }
        Ok(frames)
    }

    fn attach(handle: u32, role: Role, address: &str, mode: SenderSettleMode) -> FrameBody {
        let (source, target) = match role {
            Role::Receiver => (
                Some(Box::new(Source::builder().address(address).build())),
                Some(Box::new(TargetArchetype::Target(Target::builder().build()))),
            ),
            Role::Sender => (
                Some(Box::new(Source::builder().build())),
                Some(Box::new(TargetArchetype::Target(
                    Target::builder().address(address).build(),
                ))),
            ),
        };
        FrameBody::Attach(Attach {
            name: format!("link-{handle}"),
            handle: Handle(handle),
            role,
            snd_settle_mode: mode,
            rcv_settle_mode: ReceiverSettleMode::First,
            source,
            target,
            unsettled: None,
            incomplete_unsettled: false,
            initial_delivery_count: None,
            max_message_size: None,
            offered_capabilities: None,
            desired_capabilities: None,
            properties: None,
        })
    }

    fn flow(handle: u32, delivery_count: u32, credit: u32, drain: bool, echo: bool) -> FrameBody {
        FrameBody::Flow(Flow {
            next_incoming_id: Some(0),
            incoming_window: 1000,
            next_outgoing_id: 1,
            outgoing_window: 1000,
            handle: Some(Handle(handle)),
            delivery_count: Some(delivery_count),
            link_credit: Some(credit),
            available: None,
            drain,
            echo,
            properties: None,
        })
    }

    fn disposition(first: u32, last: Option<u32>, state: DeliveryState) -> FrameBody {
        FrameBody::Disposition(Disposition {
            role: Role::Receiver,
            first,
            last,
            settled: true,
            state: Some(state),
            batchable: false,
        })
    }

    fn feed(engine: &mut Engine, body: FrameBody) -> Result<Option<Event>, ErrorBody> {
        engine.on_frame(Frame::new(1u16, body))
    }

    /// An engine with a session on channel 1 (the application's window: 1000 transfers).
    fn begun() -> Result<(Engine, Arc<Registry>), Box<dyn std::error::Error>> {
        let registry = Arc::new(Registry::default());
        let mut engine = Engine::new(registry.clone(), Arc::new(Notify::new()), 65_536, 65_536);
        let begin = Begin {
            remote_channel: None,
            next_outgoing_id: 1,
            incoming_window: 1000,
            outgoing_window: 1000,
            handle_max: Handle(100),
            offered_capabilities: None,
            desired_capabilities: None,
            properties: None,
        };
        feed(&mut engine, FrameBody::Begin(begin))?;
        let frames = written(&mut engine)?;
        assert!(matches!(
            frames.as_slice(),
            [FrameBody::Begin(b)] if b.remote_channel == Some(1)
        ));
        Ok((engine, registry))
    }

    /// A message for a consumer link, and where its outcome arrives (QoS 1).
    type Queued = (Outgoing, Option<oneshot::Receiver<Reply>>);

    fn outgoing(qos: Qos, payload: &'static [u8]) -> Result<Queued, Box<dyn std::error::Error>> {
        let mut message = crate::transfer::tests::message(payload.to_vec())?;
        message.qos = qos;
        Ok(Outgoing::telemetry(message))
    }

    /// Queues a message for `node` and returns the receiver of its outcome (QoS 1).
    fn queue(
        registry: &Registry,
        node: &Node,
        qos: Qos,
    ) -> Result<Option<oneshot::Receiver<Reply>>, Box<dyn std::error::Error>> {
        let (item, outcome) = outgoing(qos, b"payload")?;
        match registry.offer(node.endpoint, &node.tenant, item) {
            Offer::Queued => Ok(outcome),
            other => Err(format!("not queued: {other:?}").into()),
        }
    }

    /// The (delivery id, settled) of each transfer in `frames`.
    fn transfers(frames: &[FrameBody]) -> Vec<(u32, bool)> {
        frames
            .iter()
            .filter_map(|f| match f {
                FrameBody::Transfer { performative, .. } => Some((
                    performative.delivery_id.unwrap_or(u32::MAX),
                    performative.settled == Some(true),
                )),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn credit_gates_transfers_and_disposition_ranges_complete_the_senders() -> TestResult {
        let (mut engine, registry) = begun()?;
        let node = Node::parse("telemetry/t")?;
        feed(
            &mut engine,
            attach(0, Role::Receiver, "telemetry/t", SenderSettleMode::Mixed),
        )?;
        let frames = written(&mut engine)?;
        assert!(matches!(
            frames.as_slice(),
            [FrameBody::Attach(a)] if a.role == Role::Sender
                && a.initial_delivery_count == Some(0)
                && a.snd_settle_mode == SenderSettleMode::Mixed
                && a.source.as_ref().and_then(|s| s.address.as_deref()) == Some("telemetry/t")
        ));
        assert_eq!(registry.count(&node), 1);

        let mut outcomes = Vec::new();
        for _ in 0..3 {
            outcomes.push(queue(&registry, &node, Qos::AtLeastOnce)?.ok_or("qos 1")?);
        }
        queue(&registry, &node, Qos::AtMostOnce)?;
        engine.send_queued();
        assert!(written(&mut engine)?.is_empty(), "no credit, no transfer");

        feed(&mut engine, flow(0, 0, 2, false, false))?;
        engine.send_queued();
        let frames = written(&mut engine)?;
        assert_eq!(transfers(&frames), [(0, false), (1, false)]);
        feed(
            &mut engine,
            disposition(0, Some(1), DeliveryState::Accepted(Accepted {})),
        )?;
        for outcome in outcomes.iter_mut().take(2) {
            assert!(matches!(outcome.try_recv(), Ok(Ok(Outcome::Accepted(_)))));
        }
        assert!(outcomes[2].try_recv().is_err(), "not sent yet");

        // More credit with echo: the rest goes out, QoS 0 pre-settled, then the echoed flow.
        feed(&mut engine, flow(0, 2, 10, false, true))?;
        engine.send_queued();
        let frames = written(&mut engine)?;
        assert_eq!(transfers(&frames), [(2, false), (3, true)]);
        assert!(matches!(
            frames.last(),
            Some(FrameBody::Flow(f)) if f.delivery_count == Some(4) && f.link_credit == Some(8)
                && f.handle == Some(Handle(0))
        ));
        // A range wider than what is unsettled settles what it covers.
        feed(
            &mut engine,
            disposition(0, Some(u32::MAX), DeliveryState::Released(Released {})),
        )?;
        assert!(matches!(
            outcomes[2].try_recv(),
            Ok(Ok(Outcome::Released(_)))
        ));
        assert!(!engine.awaits_outcomes());
        Ok(())
    }

    #[test]
    fn a_detach_fails_what_waits_and_unregisters_the_link() -> TestResult {
        let (mut engine, registry) = begun()?;
        let node = Node::parse("event/t")?;
        let start = feed(
            &mut engine,
            attach(3, Role::Receiver, "event/t", SenderSettleMode::Settled),
        )?;
        assert!(matches!(start, Some(Event::StartDelivery(tenant, _)) if tenant.as_str() == "t"));
        let frames = written(&mut engine)?;
        assert!(
            matches!(
                frames.as_slice(),
                [FrameBody::Attach(a)] if a.snd_settle_mode == SenderSettleMode::Unsettled
            ),
            "events are never sent pre-settled: {frames:?}"
        );
        let mut sent = queue(&registry, &node, Qos::AtLeastOnce)?.ok_or("qos 1")?;
        let mut queued = queue(&registry, &node, Qos::AtLeastOnce)?.ok_or("qos 1")?;
        feed(&mut engine, flow(3, 0, 1, false, false))?;
        engine.send_queued();
        assert_eq!(transfers(&written(&mut engine)?), [(0, false)]);
        assert!(engine.awaits_outcomes());

        let detach = Detach {
            handle: Handle(3),
            closed: true,
            error: None,
        };
        feed(&mut engine, FrameBody::Detach(detach))?;
        assert!(matches!(
            written(&mut engine)?.as_slice(),
            [FrameBody::Detach(d)] if d.handle == Handle(3) && d.closed && d.error.is_none()
        ));
        assert_eq!(registry.count(&node), 0);
        // Both senders learn the link went away (their reply channels are dropped).
        assert!(matches!(
            sent.try_recv(),
            Err(oneshot::error::TryRecvError::Closed)
        ));
        assert!(matches!(
            queued.try_recv(),
            Err(oneshot::error::TryRecvError::Closed)
        ));
        assert!(!engine.awaits_outcomes());
        Ok(())
    }

    #[test]
    fn unknown_addresses_and_sender_links_are_attached_then_detached() -> TestResult {
        let (mut engine, registry) = begun()?;
        for (handle, role, address, condition) in [
            (0, Role::Receiver, "command/t", AmqpError::NotFound),
            (
                1,
                Role::Receiver,
                "telemetry/bad tenant",
                AmqpError::NotFound,
            ),
            (2, Role::Sender, "telemetry/t", AmqpError::NotAllowed),
        ] {
            feed(
                &mut engine,
                attach(handle, role.clone(), address, SenderSettleMode::Mixed),
            )?;
            let frames = written(&mut engine)?;
            let [FrameBody::Attach(answer), FrameBody::Detach(detach)] = frames.as_slice() else {
                return Err(format!("{address}: {frames:?}").into());
            };
            assert_ne!(answer.role, role, "{address}");
            assert_eq!(detach.handle, Handle(handle));
            assert_eq!(
                detach.error.as_ref().map(|e| e.condition.clone()),
                Some(condition.into()),
                "{address}"
            );
        }
        assert_eq!(registry.count(&Node::parse("telemetry/t")?), 0);
        // The application's detach is not answered again; a second one is ignored.
        for _ in 0..2 {
            let detach = Detach {
                handle: Handle(0),
                closed: true,
                error: None,
            };
            feed(&mut engine, FrameBody::Detach(detach))?;
            assert!(written(&mut engine)?.is_empty());
        }
        Ok(())
    }

    #[test]
    fn drain_without_messages_uses_the_credit_up() -> TestResult {
        let (mut engine, _registry) = begun()?;
        feed(
            &mut engine,
            attach(0, Role::Receiver, "telemetry/t", SenderSettleMode::Settled),
        )?;
        written(&mut engine)?;
        feed(&mut engine, flow(0, 0, 5, true, false))?;
        engine.send_queued();
        let frames = written(&mut engine)?;
        assert!(
            matches!(
                frames.as_slice(),
                [FrameBody::Flow(f)] if f.drain && f.link_credit == Some(0)
                    && f.delivery_count == Some(5)
            ),
            "{frames:?}"
        );
        Ok(())
    }

    #[test]
    fn settle_mode_settled_sends_qos1_pre_settled_and_counts_it_accepted() -> TestResult {
        let (mut engine, registry) = begun()?;
        let node = Node::parse("telemetry/t")?;
        feed(
            &mut engine,
            attach(0, Role::Receiver, "telemetry/t", SenderSettleMode::Settled),
        )?;
        written(&mut engine)?;
        let mut outcome = queue(&registry, &node, Qos::AtLeastOnce)?.ok_or("qos 1")?;
        feed(&mut engine, flow(0, 0, 5, false, false))?;
        engine.send_queued();
        assert_eq!(transfers(&written(&mut engine)?), [(0, true)]);
        assert!(matches!(outcome.try_recv(), Ok(Ok(Outcome::Accepted(_)))));
        assert!(!engine.awaits_outcomes());
        Ok(())
    }

    #[test]
    fn a_small_window_holds_transfers_back_and_a_sender_that_gave_up_is_skipped() -> TestResult {
        let (mut engine, registry) = begun()?;
        let node = Node::parse("telemetry/t")?;
        feed(
            &mut engine,
            attach(0, Role::Receiver, "telemetry/t", SenderSettleMode::Mixed),
        )?;
        written(&mut engine)?;
        let gave_up = queue(&registry, &node, Qos::AtLeastOnce)?;
        drop(gave_up);
        queue(&registry, &node, Qos::AtMostOnce)?;
        queue(&registry, &node, Qos::AtMostOnce)?;
        // Credit for ten, but room in the session window for one transfer.
        let mut window = flow(0, 0, 10, false, false);
        if let FrameBody::Flow(f) = &mut window {
            f.incoming_window = 1;
        }
        feed(&mut engine, window)?;
        engine.send_queued();
        assert_eq!(transfers(&written(&mut engine)?), [(0, true)]);
        feed(&mut engine, flow(0, 1, 9, false, false))?;
        engine.send_queued();
        assert_eq!(transfers(&written(&mut engine)?), [(1, true)]);
        Ok(())
    }

    #[test]
    fn protocol_violations_are_errors_to_close_with() -> TestResult {
        let (mut engine, _registry) = begun()?;
        // A flow on a channel without a session.
        assert!(
            engine
                .on_frame(Frame::new(2u16, flow(0, 0, 1, false, false)))
                .is_err()
        );
        // A handle beyond handle-max, and one in use.
        assert!(
            feed(
                &mut engine,
                attach(64, Role::Receiver, "telemetry/t", SenderSettleMode::Mixed)
            )
            .is_err()
        );
        feed(
            &mut engine,
            attach(0, Role::Receiver, "telemetry/t", SenderSettleMode::Mixed),
        )?;
        assert!(
            feed(
                &mut engine,
                attach(0, Role::Receiver, "telemetry/t", SenderSettleMode::Mixed)
            )
            .is_err()
        );
        // A second session on the same channel.
        let begin = Begin {
            remote_channel: None,
            next_outgoing_id: 0,
            incoming_window: 10,
            outgoing_window: 10,
            handle_max: Handle(1),
            offered_capabilities: None,
            desired_capabilities: None,
            properties: None,
        };
        assert!(feed(&mut engine, FrameBody::Begin(begin)).is_err());
        Ok(())
    }

    #[test]
    fn dropping_the_engine_unregisters_its_links() -> TestResult {
        let (mut engine, registry) = begun()?;
        feed(
            &mut engine,
            attach(0, Role::Receiver, "telemetry/t", SenderSettleMode::Mixed),
        )?;
        let node = Node::parse("telemetry/t")?;
        let mut waiting = queue(&registry, &node, Qos::AtLeastOnce)?.ok_or("qos 1")?;
        assert_eq!(registry.count(&node), 1);
        drop(engine);
        assert_eq!(registry.count(&node), 0);
        assert!(matches!(
            waiting.try_recv(),
            Err(oneshot::error::TryRecvError::Closed)
        ));
        Ok(())
    }
}
