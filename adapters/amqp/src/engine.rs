//! The AMQP 1.0 connection engine of a device connection, without I/O: it takes the frames the
//! device sent after the `open` exchange and writes the adapter's frames into one output buffer.
//!
//! It keeps the sessions (by channel) and their links, hands complete deliveries to the caller
//! ([`Event::Delivery`]), takes the caller's outcomes ([`Engine::settle`]) and sends them batched
//! with the credit top-ups at the next [`Engine::flush`]. A protocol violation is returned as the
//! error the connection is to be closed with. The connection task (`serve.rs`) does the I/O,
//! the forwarding and the timers; one such task is all a connection costs.

use bytes::BytesMut;
use fe2o3_amqp::frames::amqp::{Frame, FrameBody};
use fe2o3_amqp::types::definitions::{AmqpError, Error as ErrorBody};
use fe2o3_amqp::types::messaging::DeliveryState;
use fe2o3_amqp::types::performatives::{Close, End};
use ferry_amqp_wire::Channels;
use ferry_amqp_wire::frame::{self, FramingError, encode_or_log};

use crate::link::Received;
use crate::session::Session;

/// Highest session channel of a device connection (so at most 4 sessions): a device needs one.
pub(crate) const MAX_CHANNEL: u16 = 3;

/// Where a delivery came from: enough to settle it, or to close its link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DeliveryKey {
    channel: u16,
    handle: u32,
    link: u64,
    delivery_id: u32,
}

/// A complete delivery to forward.
#[derive(Debug)]
pub(crate) struct Delivery {
    /// Where it came from.
    pub(crate) key: DeliveryKey,
    /// Received as a transfer.
    pub(crate) received: Received,
}

/// What a frame of the device meant for the connection task.
#[derive(Debug)]
pub(crate) enum Event {
    /// A delivery to forward.
    Delivery(Delivery),
    /// The device closed the connection (with this error, if any); the `close` is answered.
    Closed(Option<ErrorBody>),
}

/// The state of one open connection.
#[derive(Debug)]
pub(crate) struct Engine {
    sessions: Channels<Session>,
    out: BytesMut,
    /// Largest frame accepted from the device.
    max_frame_size: u32,
    max_message_size: u64,
    next_link_id: u64,
    closed: bool,
}

impl Engine {
    /// An engine for a connection whose `open` was exchanged.
    pub(crate) fn new(max_frame_size: u32, max_message_size: u64) -> Self {
        Self {
            sessions: Channels::new(MAX_CHANNEL),
            out: BytesMut::new(),
            max_frame_size,
            max_message_size,
            next_link_id: 0,
            closed: false,
        }
    }

    /// Cuts the next complete frame off `received` (bytes read from the device).
    pub(crate) fn next_frame(
        &self,
        received: &mut BytesMut,
    ) -> Result<Option<Frame>, FramingError> {
        frame::next_frame(received, self.max_frame_size)
    }

    /// Takes one frame of the device. `Err` is the error to close the connection with.
    pub(crate) fn on_frame(&mut self, frame: Frame) -> Result<Option<Event>, ErrorBody> {
        let channel = frame.channel;
        match frame.body {
            FrameBody::Transfer {
                performative,
                payload,
            } => {
                let session = self.sessions.get_mut(channel)?;
                let transferred = session.on_transfer(&performative, payload, &mut self.out)?;
                Ok(transferred.map(|t| {
                    Event::Delivery(Delivery {
                        key: DeliveryKey {
                            channel,
                            handle: t.handle,
                            link: t.link,
                            delivery_id: t.received.delivery_id,
                        },
                        received: t.received,
                    })
                }))
            }
            FrameBody::Flow(flow) => {
                let session = self.sessions.get_mut(channel)?;
                session.on_flow(&flow, &mut self.out)?;
                Ok(None)
            }
            FrameBody::Disposition(_) => {
                // The adapter settles first; a device's disposition has nothing left to settle.
                Ok(None)
            }
            FrameBody::Attach(attach) => {
                let (id, max) = (self.next_link_id, self.max_message_size);
                self.next_link_id += 1;
                let session = self.sessions.get_mut(channel)?;
                session.on_attach(attach, id, max, &mut self.out)?;
                Ok(None)
            }
            FrameBody::Detach(detach) => {
                let session = self.sessions.get_mut(channel)?;
                session.on_detach(&detach, &mut self.out)?;
                Ok(None)
            }
            FrameBody::Begin(begin) => {
                let out = &mut self.out;
                self.sessions
                    .begin(channel, &begin, || Session::begin(channel, &begin, out))?;
                Ok(None)
            }
            FrameBody::End(end) => {
                self.sessions.end(channel)?;
                if let Some(error) = &end.error {
                    tracing::info!(%error, "the device ended a session with an error");
                }
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

    /// Notes the outcome of a delivery; `None` when the device settled it already (only its
    /// credit comes back). Nothing is sent for a link that is gone.
    pub(crate) fn settle(&mut self, key: &DeliveryKey, state: Option<DeliveryState>) {
        if let Ok(session) = self.sessions.get_mut(key.channel) {
            session.settle(key.handle, key.link, key.delivery_id, state);
        }
    }

    /// Closes the link a delivery came on with `error`, after the settlements noted so far.
    pub(crate) fn detach(&mut self, key: &DeliveryKey, error: ErrorBody) {
        self.flush();
        if let Ok(session) = self.sessions.get_mut(key.channel) {
            session.detach(key.handle, key.link, error, &mut self.out);
        }
    }

    /// Sends `close` (once).
    pub(crate) fn close(&mut self, error: Option<ErrorBody>) {
        if std::mem::replace(&mut self.closed, true) {
            return;
        }
        self.flush();
        encode_or_log(&mut self.out, 0, &Close { error });
    }

    /// Sends an empty frame, which keeps the device's idle timer from firing.
    pub(crate) fn heartbeat(&mut self) {
        if let Err(error) = frame::encode::<Close>(&mut self.out, 0, None) {
            tracing::warn!(%error, "the heartbeat could not be encoded");
        }
    }

    /// Writes the settlements and credit top-ups that are due into the output.
    pub(crate) fn flush(&mut self) {
        for session in self.sessions.iter_mut() {
            session.flush(&mut self.out);
        }
    }

    /// The frames to write; the caller clears it once written.
    pub(crate) fn output(&mut self) -> &mut BytesMut {
        &mut self.out
    }

    /// Whether no delivery is in the adapter's hands (buffers can be released).
    pub(crate) fn is_idle(&self) -> bool {
        !self.sessions.iter().any(Session::is_busy)
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use fe2o3_amqp::types::definitions::{Handle, ReceiverSettleMode, Role, SenderSettleMode};
    use fe2o3_amqp::types::messaging::{Accepted, Target, TargetArchetype};
    use fe2o3_amqp::types::performatives::{Attach, Begin, Transfer};

    use super::*;
    use crate::link::CREDIT_WINDOW;

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

    fn transfer(delivery_id: u32) -> FrameBody {
        FrameBody::Transfer {
            performative: Transfer {
                handle: Handle(0),
                delivery_id: Some(delivery_id),
                delivery_tag: None,
                message_format: None,
                settled: None,
                more: false,
                rcv_settle_mode: None,
                state: None,
                resume: false,
                aborted: false,
                batchable: false,
            },
            payload: Bytes::from_static(b"message"),
        }
    }

    /// An engine with one session on channel 1 and an upload link with handle 0.
    fn attached() -> Result<Engine, Box<dyn std::error::Error>> {
        let mut engine = Engine::new(1024, 1024);
        let begin = Begin {
            remote_channel: None,
            next_outgoing_id: 10,
            incoming_window: 100,
            outgoing_window: 100,
            handle_max: Handle(7),
            offered_capabilities: None,
            desired_capabilities: None,
            properties: None,
        };
        engine.on_frame(Frame::new(1u16, FrameBody::Begin(begin)))?;
        let attach = Attach {
            name: "upload".to_owned(),
            handle: Handle(0),
            role: Role::Sender,
            snd_settle_mode: SenderSettleMode::Mixed,
            rcv_settle_mode: ReceiverSettleMode::First,
            source: None,
            target: Some(Box::new(TargetArchetype::Target(Target::builder().build()))),
            unsettled: None,
            incomplete_unsettled: false,
            initial_delivery_count: Some(0),
            max_message_size: None,
            offered_capabilities: None,
            desired_capabilities: None,
            properties: None,
        };
        engine.on_frame(Frame::new(1u16, FrameBody::Attach(attach)))?;
        let frames = written(&mut engine)?;
        assert!(matches!(
            frames.as_slice(),
            [FrameBody::Begin(_), FrameBody::Attach(_), FrameBody::Flow(flow)]
                if flow.link_credit == Some(CREDIT_WINDOW) && flow.next_incoming_id == Some(10)
        ));
        Ok(engine)
    }

    #[test]
    fn outcomes_of_consecutive_deliveries_go_out_in_one_disposition() -> TestResult {
        let mut engine = attached()?;
        let mut keys = Vec::new();
        for id in 0..3 {
            match engine.on_frame(Frame::new(1u16, transfer(id)))? {
                Some(Event::Delivery(delivery)) => keys.push(delivery.key),
                other => return Err(format!("{other:?}").into()),
            }
        }
        for key in keys.iter().rev() {
            engine.settle(key, Some(Accepted {}.into()));
        }
        engine.flush();
        let frames = written(&mut engine)?;
        let [FrameBody::Disposition(disposition)] = frames.as_slice() else {
            return Err(format!("{frames:?}").into());
        };
        assert_eq!((disposition.first, disposition.last), (0, Some(2)));
        assert!(disposition.settled);
        Ok(())
    }

    #[test]
    fn protocol_violations_are_errors_to_close_with() -> TestResult {
        let mut engine = attached()?;
        // A transfer on a channel without a session.
        assert!(engine.on_frame(Frame::new(2u16, transfer(0))).is_err());
        // A second open.
        let mut engine = attached()?;
        let open = fe2o3_amqp::types::performatives::Open {
            container_id: "again".to_owned(),
            hostname: None,
            max_frame_size: Default::default(),
            channel_max: Default::default(),
            idle_time_out: None,
            outgoing_locales: None,
            incoming_locales: None,
            offered_capabilities: None,
            desired_capabilities: None,
            properties: None,
        };
        assert!(
            engine
                .on_frame(Frame::new(0u16, FrameBody::Open(open)))
                .is_err()
        );
        // More transfers than credit: the link is detached, the connection stays.
        let mut engine = attached()?;
        for id in 0..CREDIT_WINDOW {
            engine.on_frame(Frame::new(1u16, transfer(id)))?;
        }
        assert!(
            engine
                .on_frame(Frame::new(1u16, transfer(CREDIT_WINDOW)))?
                .is_none()
        );
        let frames = written(&mut engine)?;
        assert!(matches!(
            frames.as_slice(),
            [FrameBody::Detach(detach)] if detach.error.as_ref().is_some_and(|e| e.condition
                == fe2o3_amqp::types::definitions::LinkError::TransferLimitExceeded.into())
        ));
        Ok(())
    }
}
