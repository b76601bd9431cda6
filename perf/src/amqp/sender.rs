//! A device's sender link (AMQP 1.0 §2.6): an anonymous-relay target (each message names its
//! address in `to`), link credit from the peer's `flow`s, and the unsettled deliveries whose
//! outcomes the peer's `disposition`s bring, a range at a time.
//!
//! Deliveries are sent settled (at most once) or unsettled (at least once). Unsettled ones are
//! kept in a window in delivery-id order with their send time, so each outcome comes back with
//! its latency; the window is bounded by the caller's limit as well as by the link credit.

use std::collections::VecDeque;
use std::time::Instant;

use fe2o3_amqp::types::definitions::{
    Error as ErrorBody, Handle, ReceiverSettleMode, Role, SenderSettleMode,
};
use fe2o3_amqp::types::messaging::{DeliveryState, Target, TargetArchetype};
use fe2o3_amqp::types::performatives::{Attach, Disposition, Flow, Transfer};
use fe2o3_amqp::types::primitives::Binary;
use tokio::io::{AsyncRead, AsyncWrite};

use super::connection::{Connection, LinkFlow, LinkFrame};
use super::error::AmqpError;

/// The link's handle (the only link of the session).
const HANDLE: u32 = 0;

/// What the peer made of an unsettled delivery.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Accepted.
    Accepted,
    /// Rejected, with the peer's error.
    Rejected(Option<ErrorBody>),
    /// Released (not processed).
    Released,
    /// Modified (not processed, maybe to be redelivered).
    Modified,
    /// Settled without one of the outcomes above.
    Other,
}

impl Outcome {
    fn of(state: Option<&DeliveryState>) -> Self {
        match state {
            Some(DeliveryState::Accepted(_)) => Outcome::Accepted,
            Some(DeliveryState::Rejected(r)) => Outcome::Rejected(r.error.clone()),
            Some(DeliveryState::Released(_)) => Outcome::Released,
            Some(DeliveryState::Modified(_)) => Outcome::Modified,
            _ => Outcome::Other,
        }
    }
}

/// The unsettled deliveries by delivery id: `base` is the oldest, `None` marks one settled out
/// of order.
#[derive(Debug, Default)]
struct Unsettled {
    base: u32,
    sent: VecDeque<Option<Instant>>,
    count: usize,
}

impl Unsettled {
    fn push(&mut self, id: u32, sent: Instant) {
        if self.sent.is_empty() {
            self.base = id;
        }
        self.sent.push_back(Some(sent));
        self.count += 1;
    }

    /// Settles the ids in `first..=last` (serial-number order) that are unsettled, calling
    /// `settled` with each one's send time.
    fn settle(&mut self, first: u32, last: u32, mut settled: impl FnMut(Instant)) {
        let span = last.wrapping_sub(first);
        for (offset, slot) in self.sent.iter_mut().enumerate() {
            let id = self.base.wrapping_add(offset as u32);
            if id.wrapping_sub(first) <= span
                && let Some(sent) = slot.take()
            {
                self.count -= 1;
                settled(sent);
            }
        }
        while let Some(None) = self.sent.front() {
            self.sent.pop_front();
            self.base = self.base.wrapping_add(1);
        }
    }
}

/// A sender link on its own connection.
#[derive(Debug)]
pub struct Sender<S> {
    connection: Connection<S>,
    presettled: bool,
    /// Most unsettled deliveries at once.
    max_unsettled: usize,
    delivery_count: u32,
    link_credit: u32,
    next_delivery_id: u32,
    unsettled: Unsettled,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Sender<S> {
    /// Attaches a sender link named `name` with an anonymous-relay target on `connection`;
    /// `presettled` sends every delivery settled. At most `max_unsettled` deliveries are
    /// unsettled at once.
    pub async fn attach(
        mut connection: Connection<S>,
        name: &str,
        presettled: bool,
        max_unsettled: usize,
    ) -> Result<Self, AmqpError> {
        let attach = Attach {
            name: name.to_owned(),
            handle: Handle(HANDLE),
            role: Role::Sender,
            snd_settle_mode: if presettled {
                SenderSettleMode::Settled
            } else {
                SenderSettleMode::Unsettled
            },
            rcv_settle_mode: ReceiverSettleMode::First,
            source: Some(Box::default()),
            target: Some(Box::new(TargetArchetype::Target(Target::builder().build()))),
            unsettled: None,
            incomplete_unsettled: false,
            initial_delivery_count: Some(0),
            max_message_size: None,
            offered_capabilities: None,
            desired_capabilities: None,
            properties: None,
        };
        connection.attach(&attach).await?;
        let mut sender = Self::attached(connection, presettled, max_unsettled);
        // The peer's first credit may have come with its attach.
        sender.process(|_, _| {})?;
        Ok(sender)
    }

    fn attached(connection: Connection<S>, presettled: bool, max_unsettled: usize) -> Self {
        Self {
            connection,
            presettled,
            max_unsettled,
            delivery_count: 0,
            link_credit: 0,
            next_delivery_id: 0,
            unsettled: Unsettled::default(),
        }
    }

    /// The connection, for reading, writing and heartbeats.
    pub fn connection(&mut self) -> &mut Connection<S> {
        &mut self.connection
    }

    /// Whether a message of `len` bytes may be sent now: link credit, room in the unsettled
    /// window and in the peer's session window.
    pub fn can_send(&self, len: usize) -> bool {
        self.link_credit > 0
            && self.unsettled.count < self.max_unsettled
            && self.connection.remote_incoming_window() >= self.connection.frames_for(len)
    }

    /// Deliveries sent and not yet settled by the peer.
    pub fn unsettled(&self) -> usize {
        self.unsettled.count
    }

    /// Encodes a delivery of `message` (an encoded AMQP message) sent at `sent`; check
    /// [`Sender::can_send`] first. It goes out with the next write.
    pub fn send(&mut self, message: &[u8], sent: Instant) {
        let id = self.next_delivery_id;
        self.next_delivery_id = id.wrapping_add(1);
        self.delivery_count = self.delivery_count.wrapping_add(1);
        self.link_credit = self.link_credit.saturating_sub(1);
        let transfer = Transfer {
            handle: Handle(HANDLE),
            delivery_id: Some(id),
            delivery_tag: Some(Binary::from(id.to_be_bytes().to_vec())),
            message_format: Some(0),
            settled: Some(self.presettled),
            more: false,
            rcv_settle_mode: None,
            state: None,
            resume: false,
            aborted: false,
            batchable: false,
        };
        self.connection.transfer(transfer, message);
        if !self.presettled {
            self.unsettled.push(id, sent);
        }
    }

    /// Handles the frames received so far: credit, and outcomes, which go to `settled` with the
    /// delivery's send time. An error (the peer detached, ended, closed, broke the protocol) ends
    /// the link.
    pub fn process(&mut self, mut settled: impl FnMut(Instant, Outcome)) -> Result<(), AmqpError> {
        while let Some(frame) = self.connection.next_frame()? {
            match frame {
                LinkFrame::Flow(flow) => self.on_flow(&flow),
                LinkFrame::Disposition(disposition) => {
                    self.on_disposition(&disposition, &mut settled);
                }
                LinkFrame::Transfer(..) => {
                    return Err(AmqpError::Protocol(
                        "a transfer on the sender's session".to_owned(),
                    ));
                }
            }
        }
        Ok(())
    }

    fn on_flow(&mut self, flow: &Flow) {
        // §2.6.7: the credit is what the receiver grants beyond the delivery count it knows.
        if let Some(credit) = flow.link_credit {
            let known = flow.delivery_count.unwrap_or(0);
            self.link_credit = known
                .wrapping_add(credit)
                .wrapping_sub(self.delivery_count)
                .min(credit);
        }
        if flow.drain && self.link_credit > 0 {
            // Nothing is waiting to be sent at this instant: give the credit back.
            self.delivery_count = self.delivery_count.wrapping_add(self.link_credit);
            self.link_credit = 0;
            self.send_flow(true);
        } else if flow.echo {
            self.send_flow(false);
        }
    }

    fn send_flow(&mut self, drain: bool) {
        self.connection.flow(Some(LinkFlow {
            handle: HANDLE,
            delivery_count: self.delivery_count,
            link_credit: self.link_credit,
            drain,
        }));
    }

    fn on_disposition(
        &mut self,
        disposition: &Disposition,
        settled: &mut impl FnMut(Instant, Outcome),
    ) {
        if disposition.role != Role::Receiver || !disposition.settled {
            return;
        }
        let outcome = Outcome::of(disposition.state.as_ref());
        let last = disposition.last.unwrap_or(disposition.first);
        self.unsettled.settle(disposition.first, last, |sent| {
            settled(sent, outcome.clone())
        });
    }

    /// Detaches, ends and closes (the caller bounds how long it may take).
    pub async fn close(self) {
        self.connection.close(Some(HANDLE)).await;
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use fe2o3_amqp::frames::amqp::FrameBody;
    use fe2o3_amqp::types::messaging::{Accepted, Released};
    use ferry_amqp_wire::frame;

    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn sender(presettled: bool) -> Sender<tokio::io::DuplexStream> {
        Sender::attached(Connection::for_test(512), presettled, 3)
    }

    fn flow(delivery_count: u32, link_credit: u32) -> Flow {
        Flow {
            next_incoming_id: Some(0),
            incoming_window: 1000,
            next_outgoing_id: 0,
            outgoing_window: 0,
            handle: Some(Handle(HANDLE)),
            delivery_count: Some(delivery_count),
            link_credit: Some(link_credit),
            available: None,
            drain: false,
            echo: false,
            properties: None,
        }
    }

    fn disposition(first: u32, last: Option<u32>, state: DeliveryState) -> Disposition {
        Disposition {
            role: Role::Receiver,
            first,
            last,
            settled: true,
            state: Some(state),
            batchable: false,
        }
    }

    /// Feeds `frames` as if received and processes them; returns the outcomes by send order.
    fn receive(
        sender: &mut Sender<tokio::io::DuplexStream>,
        frames: &[FrameBody],
        sent: &[Instant],
    ) -> Result<Vec<(usize, Outcome)>, AmqpError> {
        for body in frames {
            let received = sender.connection.received();
            match body {
                FrameBody::Flow(f) => frame::encode(received, 0, Some(f)),
                FrameBody::Disposition(d) => frame::encode(received, 0, Some(d)),
                _ => frame::encode::<Flow>(received, 0, None),
            }
            .map_err(|e| AmqpError::Protocol(e.to_string()))?;
        }
        let mut outcomes = Vec::new();
        sender.process(|at, outcome| {
            let index = sent.iter().position(|s| *s == at).unwrap_or(usize::MAX);
            outcomes.push((index, outcome));
        })?;
        Ok(outcomes)
    }

    /// What the sender wrote, decoded.
    fn written(sender: &mut Sender<tokio::io::DuplexStream>) -> Vec<(FrameBody, usize)> {
        let mut out = std::mem::take(sender.connection.output());
        let mut frames = Vec::new();
        while let Ok(Some(f)) = frame::next_frame(&mut out, u32::MAX) {
            let len = match &f.body {
                FrameBody::Transfer { payload, .. } => payload.len(),
                _ => 0,
            };
            frames.push((f.body, len));
        }
        frames
    }

    #[test]
    fn credit_and_the_unsettled_window_bound_what_is_sent() -> TestResult {
        let mut sender = sender(false);
        assert!(!sender.can_send(10), "no credit before the peer's flow");
        receive(&mut sender, &[FrameBody::Flow(flow(0, 5))], &[])?;
        let start = Instant::now();
        let sent: Vec<Instant> = (0..3)
            .map(|i| start + std::time::Duration::from_millis(i))
            .collect();
        for at in &sent {
            assert!(sender.can_send(10));
            sender.send(b"0123456789", *at);
        }
        assert!(!sender.can_send(10), "the window of 3 is full");
        assert_eq!(sender.link_credit, 2);
        let frames = written(&mut sender);
        assert_eq!(frames.len(), 3);
        assert!(frames.iter().enumerate().all(|(i, (f, len))| matches!(f,
            FrameBody::Transfer { performative, .. }
                if performative.delivery_id == Some(i as u32) && performative.settled == Some(false))
            && *len == 10));

        // Outcomes out of order and as ranges; ids not outstanding are ignored.
        let outcomes = receive(
            &mut sender,
            &[
                FrameBody::Disposition(disposition(1, None, Accepted {}.into())),
                FrameBody::Disposition(disposition(0, Some(7), Released {}.into())),
                FrameBody::Disposition(disposition(1, Some(1), Accepted {}.into())),
            ],
            &sent,
        )?;
        assert_eq!(
            outcomes,
            vec![
                (1, Outcome::Accepted),
                (0, Outcome::Released),
                (2, Outcome::Released)
            ]
        );
        assert_eq!(sender.unsettled(), 0);
        assert!(sender.can_send(10));

        // The receiver's view of the delivery count decides the credit.
        receive(&mut sender, &[FrameBody::Flow(flow(2, 4))], &[])?;
        assert_eq!(sender.link_credit, 3);
        Ok(())
    }

    #[test]
    fn presettled_deliveries_are_not_kept_and_large_messages_span_frames() -> TestResult {
        let mut sender = sender(true);
        receive(&mut sender, &[FrameBody::Flow(flow(0, 10))], &[])?;
        let message = vec![7u8; 1200];
        assert_eq!(sender.connection.frames_for(message.len()), 3);
        sender.send(&message, Instant::now());
        assert_eq!(sender.unsettled(), 0);
        let frames = written(&mut sender);
        let mut joined = Vec::new();
        for (i, (body, _)) in frames.iter().enumerate() {
            let FrameBody::Transfer {
                performative,
                payload,
            } = body
            else {
                return Err("not a transfer".into());
            };
            assert_eq!(performative.more, i + 1 < frames.len());
            assert_eq!(performative.delivery_id.is_some(), i == 0);
            assert_eq!(performative.settled, Some(true));
            joined.extend_from_slice(payload);
        }
        assert!(frames.len() >= 3, "{} frames", frames.len());
        assert_eq!(Bytes::from(joined), Bytes::from(message));
        Ok(())
    }

    #[test]
    fn drain_gives_the_credit_back_and_echo_is_answered() -> TestResult {
        let mut sender = sender(false);
        let mut drain = flow(0, 5);
        drain.drain = true;
        receive(&mut sender, &[FrameBody::Flow(drain)], &[])?;
        assert_eq!((sender.link_credit, sender.delivery_count), (0, 5));
        let mut echo = flow(5, 2);
        echo.echo = true;
        receive(&mut sender, &[FrameBody::Flow(echo)], &[])?;
        let frames = written(&mut sender);
        assert!(matches!(frames.as_slice(),
            [(FrameBody::Flow(a), _), (FrameBody::Flow(b), _)]
                if a.drain && a.delivery_count == Some(5) && a.link_credit == Some(0)
                    && !b.drain && b.link_credit == Some(2)));
        Ok(())
    }

    #[test]
    fn a_detach_or_a_transfer_from_the_peer_ends_the_link() {
        let mut sender = sender(false);
        let detach = fe2o3_amqp::types::performatives::Detach {
            handle: Handle(HANDLE),
            closed: true,
            error: None,
        };
        let _ = frame::encode(sender.connection.received(), 0, Some(&detach));
        assert!(matches!(
            sender.process(|_, _| {}),
            Err(AmqpError::Detached(None))
        ));
    }
}
