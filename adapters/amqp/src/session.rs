//! One session of a device connection (AMQP 1.0 §2.5): its incoming window, its links, and the
//! settlements waiting to be sent.
//!
//! A device's sender link with a null target (anonymous relay) becomes an upload link; anything
//! else (a target address, a receiver link for commands) is attached as asked and detached at once
//! with `amqp:not-implemented` (the way the northbound refuses: fe2o3 clients mishandle an attach
//! with a null terminus followed by a detach). The adapter sends no transfers, so only the
//! incoming side of the session has state: the device may send [`INCOMING_WINDOW`] transfer
//! frames beyond the last `flow`, and every `flow` opens the window again.

use bytes::{Bytes, BytesMut};
use fe2o3_amqp::types::definitions::{
    AmqpError, Error as ErrorBody, Handle, ReceiverSettleMode, Role, SenderSettleMode, SessionError,
};
use fe2o3_amqp::types::messaging::{DeliveryState, TargetArchetype};
use fe2o3_amqp::types::performatives::{Attach, Begin, Detach, Flow, Transfer};
use ferry_amqp_wire::channels;
use ferry_amqp_wire::frame::encode_or_log;

use crate::disposition::Settlements;
use crate::link::{Kind, Link, Received};

/// Transfer frames the device may send beyond the last `flow`.
pub(crate) const INCOMING_WINDOW: u32 = 8192;
/// Highest link handle of a session (so at most 8 links): a device needs an upload link and,
/// later, a command link. With the link credit and the message size this bounds the memory one
/// connection can make the adapter hold.
pub(crate) const MAX_HANDLE: u32 = 7;

/// A session the device began.
#[derive(Debug)]
pub(crate) struct Session {
    /// The channel, the same number on both sides.
    channel: u16,
    next_incoming_id: u32,
    /// The transfer id at which the window the device was last told ends.
    window_end: u32,
    links: Vec<Option<Link>>,
    settlements: Settlements,
}

/// What a transfer brought.
#[derive(Debug)]
pub(crate) struct Transferred {
    /// The link's handle.
    pub(crate) handle: u32,
    /// The link's connection-wide id.
    pub(crate) link: u64,
    /// The complete delivery.
    pub(crate) received: Received,
}

impl Session {
    /// Answers the device's `begin` on `channel`.
    pub(crate) fn begin(channel: u16, begin: &Begin, out: &mut BytesMut) -> Self {
        let session = Self {
            channel,
            next_incoming_id: begin.next_outgoing_id,
            window_end: begin.next_outgoing_id.wrapping_add(INCOMING_WINDOW),
            links: Vec::new(),
            settlements: Settlements::default(),
        };
        let answer = channels::answer(channel, INCOMING_WINDOW, 0, MAX_HANDLE);
        encode_or_log(out, channel, &answer);
        session
    }

    fn link_mut(&mut self, handle: u32) -> Option<&mut Link> {
        self.links.get_mut(handle as usize).and_then(Option::as_mut)
    }

    /// Attaches the device's link: an upload link, or one refused at once. An error ends the
    /// connection.
    pub(crate) fn on_attach(
        &mut self,
        attach: Attach,
        link_id: u64,
        max_message_size: u64,
        out: &mut BytesMut,
    ) -> Result<(), ErrorBody> {
        let handle = attach.handle.0;
        channels::check_new_handle(handle, MAX_HANDLE, self.link_mut(handle).is_some())?;
        let refusal = refusal(&attach);
        let presettled = attach.snd_settle_mode == SenderSettleMode::Settled;
        let kind = if refusal.is_some() {
            Kind::Detached
        } else {
            Kind::Upload
        };
        let mut link = Link::new(
            link_id,
            kind,
            presettled,
            attach.initial_delivery_count.unwrap_or(0),
            max_message_size,
        );
        let role = match attach.role {
            Role::Sender => Role::Receiver,
            Role::Receiver => Role::Sender,
        };
        let answer = Attach {
            initial_delivery_count: (role == Role::Sender).then_some(0),
            role,
            rcv_settle_mode: ReceiverSettleMode::First,
            unsettled: None,
            incomplete_unsettled: false,
            max_message_size: Some(max_message_size),
            offered_capabilities: None,
            desired_capabilities: None,
            properties: None,
            ..attach
        };
        tracing::debug!(link = %answer.name, presettled, refused = refusal.is_some(), "link attach");
        encode_or_log(out, self.channel, &answer);
        match refusal {
            Some(error) => {
                tracing::info!(link = %answer.name, %error, "link refused");
                self.send_detach(handle, Some(error), out);
            }
            None => {
                if let Some(credit) = link.refill(false) {
                    let flow = self.flow(Some((handle, link.delivery_count, credit)));
                    encode_or_log(out, self.channel, &flow);
                }
            }
        }
        if self.links.len() <= handle as usize {
            self.links.resize_with(handle as usize + 1, || None);
        }
        if let Some(slot) = self.links.get_mut(handle as usize) {
            *slot = Some(link);
        }
        Ok(())
    }

    /// Takes a transfer frame. A link error detaches the link; a session error ends the
    /// connection.
    pub(crate) fn on_transfer(
        &mut self,
        transfer: &Transfer,
        payload: Bytes,
        out: &mut BytesMut,
    ) -> Result<Option<Transferred>, ErrorBody> {
        if self.next_incoming_id == self.window_end {
            return Err(ErrorBody::new(
                SessionError::WindowViolation,
                "transfer beyond the incoming window".to_owned(),
                None,
            ));
        }
        self.next_incoming_id = self.next_incoming_id.wrapping_add(1);
        let handle = transfer.handle.0;
        let Some(link) = self.link_mut(handle) else {
            return Err(unattached(handle));
        };
        let id = link.id;
        match link.on_transfer(transfer, payload) {
            Ok(received) => Ok(received.map(|received| Transferred {
                handle,
                link: id,
                received,
            })),
            Err(error) => {
                tracing::info!(%error, "closing the link");
                self.detach(handle, id, error, out);
                Ok(None)
            }
        }
    }

    /// Takes the device's `flow`: its delivery count, and an echo request.
    pub(crate) fn on_flow(&mut self, flow: &Flow, out: &mut BytesMut) -> Result<(), ErrorBody> {
        let Some(handle) = flow.handle.as_ref().map(|h| h.0) else {
            if flow.echo {
                let flow = self.flow(None);
                encode_or_log(out, self.channel, &flow);
            }
            return Ok(());
        };
        let Some(link) = self.link_mut(handle) else {
            return Err(unattached(handle));
        };
        if let Some(count) = flow.delivery_count {
            // Credit the device gave up (or claims) by advancing its delivery count.
            let limit = link.delivery_count.wrapping_add(link.credit);
            link.credit = limit.wrapping_sub(count).min(link.credit);
            link.delivery_count = count;
        }
        if flow.echo {
            let credit = link.refill(true).unwrap_or(0);
            let count = link.delivery_count;
            let flow = self.flow(Some((handle, count, credit)));
            encode_or_log(out, self.channel, &flow);
        }
        Ok(())
    }

    /// Takes the device's `detach`, answering it unless the adapter detached first.
    pub(crate) fn on_detach(
        &mut self,
        detach: &Detach,
        out: &mut BytesMut,
    ) -> Result<(), ErrorBody> {
        let handle = detach.handle.0;
        let Some(link) = self.links.get_mut(handle as usize).and_then(Option::take) else {
            return Err(unattached(handle));
        };
        if let Some(error) = &detach.error {
            tracing::info!(%error, "the device detached a link with an error");
        }
        if link.kind == Kind::Upload {
            let answer = Detach {
                handle: Handle(handle),
                closed: detach.closed,
                error: None,
            };
            encode_or_log(out, self.channel, &answer);
        }
        Ok(())
    }

    /// Notes the adapter's outcome of a delivery (`None`: the device settled it already).
    pub(crate) fn settle(
        &mut self,
        handle: u32,
        link: u64,
        delivery_id: u32,
        state: Option<DeliveryState>,
    ) {
        let Some(found) = self.link_mut(handle).filter(|l| l.id == link) else {
            return;
        };
        found.settled();
        if let (Kind::Upload, Some(state)) = (found.kind, state) {
            self.settlements.push(delivery_id, state);
        }
    }

    /// Closes a link with `error` (it then waits for the device's detach).
    pub(crate) fn detach(&mut self, handle: u32, link: u64, error: ErrorBody, out: &mut BytesMut) {
        let Some(found) = self.link_mut(handle).filter(|l| l.id == link) else {
            return;
        };
        if found.kind == Kind::Detached {
            return;
        }
        found.kind = Kind::Detached;
        self.send_detach(handle, Some(error), out);
    }

    fn send_detach(&self, handle: u32, error: Option<ErrorBody>, out: &mut BytesMut) {
        let detach = Detach {
            handle: Handle(handle),
            closed: true,
            error,
        };
        encode_or_log(out, self.channel, &detach);
    }

    /// Whether a link of this session has deliveries in the adapter's hands.
    pub(crate) fn is_busy(&self) -> bool {
        !self.settlements.is_empty() || self.links.iter().flatten().any(Link::is_busy)
    }

    /// Writes the waiting settlements, the credit top-ups that are due, and a session `flow`
    /// when the incoming window runs low.
    pub(crate) fn flush(&mut self, out: &mut BytesMut) {
        for disposition in self.settlements.take_frames() {
            encode_or_log(out, self.channel, &disposition);
        }
        let mut flows = Vec::new();
        for (handle, link) in self.links.iter_mut().enumerate() {
            if let Some(link) = link
                && let Some(credit) = link.refill(false)
            {
                flows.push((handle as u32, link.delivery_count, credit));
            }
        }
        let window_sent = !flows.is_empty();
        for link in flows {
            let flow = self.flow(Some(link));
            encode_or_log(out, self.channel, &flow);
        }
        if !window_sent && self.window_end.wrapping_sub(self.next_incoming_id) < INCOMING_WINDOW / 2
        {
            let flow = self.flow(None);
            encode_or_log(out, self.channel, &flow);
        }
    }

    /// A `flow` with the session's state, and a link's (handle, delivery count, credit) when
    /// given; opens the incoming window again.
    fn flow(&mut self, link: Option<(u32, u32, u32)>) -> Flow {
        self.window_end = self.next_incoming_id.wrapping_add(INCOMING_WINDOW);
        let (handle, delivery_count, link_credit) = match link {
            Some((handle, count, credit)) => (Some(Handle(handle)), Some(count), Some(credit)),
            None => (None, None, None),
        };
        Flow {
            next_incoming_id: Some(self.next_incoming_id),
            incoming_window: INCOMING_WINDOW,
            next_outgoing_id: 0,
            outgoing_window: 0,
            handle,
            delivery_count,
            link_credit,
            available: None,
            drain: false,
            echo: false,
            properties: None,
        }
    }
}

fn unattached(handle: u32) -> ErrorBody {
    ErrorBody::new(
        SessionError::UnattachedHandle,
        format!("no link with handle {handle}"),
        None,
    )
}

/// Why an attach is refused, if it is.
fn refusal(attach: &Attach) -> Option<ErrorBody> {
    let target = attach.target.as_deref().and_then(|t| match t {
        TargetArchetype::Target(t) => t.address.clone(),
        #[allow(unreachable_patterns)] // other archetypes exist with fe2o3's `transaction` feature
        _ => None,
    });
    let description = match (&attach.role, target) {
        (Role::Sender, None) => return None,
        (Role::Sender, Some(address)) => format!(
            "target {address:?}: this adapter only supports anonymous relay (a null target, the \
             address in each message's `to`)"
        ),
        (Role::Receiver, _) => "receiving commands is not supported yet".to_owned(),
    };
    Some(ErrorBody::new(AmqpError::NotImplemented, description, None))
}
