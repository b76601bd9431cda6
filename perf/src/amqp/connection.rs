//! One AMQP 1.0 connection of the harness with its one session (channel 0), run by the task
//! that uses it: SASL, the protocol header and `open` exchange (§2.4.1), `begin`, `attach`, then
//! frames cut off the received bytes with `ferry-amqp-wire` and frames encoded into one output
//! buffer.
//!
//! The session's flow control (§2.5.6) lives here: transfers sent count against the peer's
//! incoming window; transfers received against the client's, which every `flow` opens again.
//! Frames of the connection and the session are handled here (heartbeats, session `flow`s and
//! their echo, `end` and `close` as errors); the link's frames go to the [`super::sender`] or
//! [`super::receiver`] on top. The peer's idle timeout is honoured with empty frames
//! ([`Connection::heartbeat`]).

use std::time::Duration;

use bytes::{BufMut, Bytes};
use fe2o3_amqp::frames::amqp::{Frame, FrameBody};
use fe2o3_amqp::types::definitions::Handle;
use fe2o3_amqp::types::performatives::{
    Attach, Begin, ChannelMax, Close, Detach, Disposition, End, Flow, MaxFrameSize, Open, Transfer,
};
use ferry_amqp_wire::frame;
use tokio::io::{AsyncRead, AsyncWrite};

use super::error::AmqpError;
use super::sasl::{self, Mechanism};
use crate::net::wire::Wire;

/// `AMQP` + protocol id 0 + version 1.0.0.
const AMQP_HEADER: [u8; 8] = *b"AMQP\x00\x01\x00\x00";
/// The largest frame the client accepts.
const MAX_FRAME_SIZE: u32 = 64 * 1024;
/// Transfer frames the peer may send beyond the client's last `flow`.
const INCOMING_WINDOW: u32 = 65_536;
/// Transfer frames the client may send, as it tells the peer (it never limits itself).
const OUTGOING_WINDOW: u32 = 65_536;
/// The session's channel.
const CHANNEL: u16 = 0;

/// How a connection is opened.
#[derive(Clone, Debug)]
pub struct ConnectOptions<'a> {
    /// The container id in `open`.
    pub container_id: &'a str,
    /// The host name in `sasl-init` and `open` (the server's name, for virtual hosting).
    pub hostname: Option<&'a str>,
    /// The SASL mechanism, `None` for no SASL layer.
    pub sasl: Option<&'a Mechanism>,
}

/// The link's part of a `flow`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LinkFlow {
    pub(crate) handle: u32,
    pub(crate) delivery_count: u32,
    pub(crate) link_credit: u32,
    pub(crate) drain: bool,
}

/// A frame for the link on top.
#[derive(Debug)]
pub(crate) enum LinkFrame {
    Flow(Flow),
    Transfer(Transfer, Bytes),
    Disposition(Disposition),
}

/// An open connection with its session.
#[derive(Debug)]
pub struct Connection<S> {
    wire: Wire<S>,
    /// The largest frame the peer accepts.
    peer_max_frame: u32,
    /// How often to check for silence: a quarter of the peer's idle timeout, so that at most
    /// half of it passes without a frame.
    heartbeat: Option<Duration>,
    /// Something was written since the last [`Connection::heartbeat`].
    written: bool,
    next_outgoing_id: u32,
    /// Transfer frames the peer still accepts.
    remote_incoming_window: u32,
    next_incoming_id: u32,
    /// Transfer frames the client still accepts before its next `flow`.
    incoming_window: u32,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    /// Authenticates (SASL), opens the connection and begins the session on a fresh stream.
    pub async fn open(stream: S, options: &ConnectOptions<'_>) -> Result<Self, AmqpError> {
        let mut wire = Wire::new(stream);
        if let Some(mechanism) = options.sasl {
            sasl::authenticate(&mut wire, mechanism, options.hostname).await?;
        }
        wire.out.extend_from_slice(&AMQP_HEADER);
        let open = Open {
            container_id: options.container_id.to_owned(),
            hostname: options.hostname.map(str::to_owned),
            max_frame_size: MaxFrameSize(MAX_FRAME_SIZE),
            channel_max: ChannelMax(CHANNEL),
            idle_time_out: None,
            outgoing_locales: None,
            incoming_locales: None,
            offered_capabilities: None,
            desired_capabilities: None,
            properties: None,
        };
        frame::encode_or_log(&mut wire.out, CHANNEL, &open);
        wire.write().await?;
        super::expect_header(&mut wire, AMQP_HEADER).await?;
        let mut connection = Self {
            wire,
            peer_max_frame: MAX_FRAME_SIZE,
            heartbeat: None,
            written: false,
            next_outgoing_id: 0,
            remote_incoming_window: 0,
            next_incoming_id: 0,
            incoming_window: INCOMING_WINDOW,
        };
        let FrameBody::Open(open) = connection.wait_for_frame().await? else {
            return Err(AmqpError::Protocol(
                "the first frame is not an open".to_owned(),
            ));
        };
        // Frames of at least 512 bytes are always allowed (§2.7.1).
        connection.peer_max_frame = open.max_frame_size.0.max(512);
        connection.heartbeat = open
            .idle_time_out
            .filter(|ms| *ms > 0)
            .map(|ms| Duration::from_millis(u64::from(ms) / 4));
        let begin = Begin {
            remote_channel: None,
            next_outgoing_id: 0,
            incoming_window: INCOMING_WINDOW,
            outgoing_window: OUTGOING_WINDOW,
            handle_max: Handle(0),
            offered_capabilities: None,
            desired_capabilities: None,
            properties: None,
        };
        frame::encode_or_log(&mut connection.wire.out, CHANNEL, &begin);
        connection.write().await?;
        match connection.wait_for_frame().await? {
            FrameBody::Begin(begin) if begin.remote_channel == Some(CHANNEL) => {
                connection.next_incoming_id = begin.next_outgoing_id;
                connection.remote_incoming_window = begin.incoming_window;
                Ok(connection)
            }
            other => Err(unexpected("begin", &other)),
        }
    }

    /// Reads until the next frame that is not a heartbeat, which must be on the session's
    /// channel; `end` and `close` are errors.
    async fn wait_for_frame(&mut self) -> Result<FrameBody, AmqpError> {
        loop {
            while let Some(Frame { channel, body }) =
                frame::next_frame(&mut self.wire.received, MAX_FRAME_SIZE)?
            {
                match body {
                    FrameBody::Empty => {}
                    FrameBody::Close(close) => return Err(AmqpError::Closed(close.error)),
                    FrameBody::End(end) => return Err(AmqpError::Ended(end.error)),
                    _ if channel != CHANNEL => {
                        return Err(AmqpError::Protocol(format!("a frame on channel {channel}")));
                    }
                    body => return Ok(body),
                }
            }
            self.wire.read().await?;
        }
    }

    /// Sends `attach` and waits for the peer's; a refusal (the peer's attach without the
    /// terminus asked for, then its `detach`) is [`AmqpError::Detached`] with the peer's error.
    pub(crate) async fn attach(&mut self, attach: &Attach) -> Result<Attach, AmqpError> {
        frame::encode_or_log(&mut self.wire.out, CHANNEL, attach);
        self.write().await?;
        let answer = match self.wait_for_frame().await? {
            FrameBody::Attach(answer) => answer,
            FrameBody::Detach(detach) => return Err(AmqpError::Detached(detach.error)),
            other => return Err(unexpected("attach", &other)),
        };
        let refused = match answer.role {
            // The peer's role is the opposite of ours: a receiving peer names the target.
            fe2o3_amqp::types::definitions::Role::Receiver => answer.target.is_none(),
            fe2o3_amqp::types::definitions::Role::Sender => answer.source.is_none(),
        };
        if refused {
            return match self.wait_for_frame().await? {
                FrameBody::Detach(detach) => Err(AmqpError::Detached(detach.error)),
                other => Err(unexpected("detach", &other)),
            };
        }
        Ok(answer)
    }

    /// Cuts the next frame for the link off the received bytes, handling the connection's and
    /// the session's own frames on the way; `Ok(None)` once more bytes are needed.
    pub(crate) fn next_frame(&mut self) -> Result<Option<LinkFrame>, AmqpError> {
        while let Some(Frame { channel, body }) =
            frame::next_frame(&mut self.wire.received, MAX_FRAME_SIZE)?
        {
            if channel != CHANNEL && !matches!(body, FrameBody::Empty | FrameBody::Close(_)) {
                return Err(AmqpError::Protocol(format!("a frame on channel {channel}")));
            }
            match body {
                FrameBody::Empty => {}
                FrameBody::Flow(flow) => {
                    // §2.5.6: what the peer still accepts of the transfers the client sends.
                    self.remote_incoming_window = flow
                        .next_incoming_id
                        .unwrap_or(0)
                        .wrapping_add(flow.incoming_window)
                        .wrapping_sub(self.next_outgoing_id);
                    if flow.handle.is_some() {
                        return Ok(Some(LinkFrame::Flow(flow)));
                    }
                    if flow.echo {
                        self.flow(None);
                    }
                }
                FrameBody::Transfer {
                    performative,
                    payload,
                } => {
                    if self.incoming_window == 0 {
                        return Err(AmqpError::Protocol(
                            "a transfer beyond the incoming window".to_owned(),
                        ));
                    }
                    self.incoming_window -= 1;
                    self.next_incoming_id = self.next_incoming_id.wrapping_add(1);
                    return Ok(Some(LinkFrame::Transfer(performative, payload)));
                }
                FrameBody::Disposition(disposition) => {
                    return Ok(Some(LinkFrame::Disposition(disposition)));
                }
                FrameBody::Detach(detach) => return Err(AmqpError::Detached(detach.error)),
                FrameBody::End(end) => return Err(AmqpError::Ended(end.error)),
                FrameBody::Close(close) => return Err(AmqpError::Closed(close.error)),
                other @ (FrameBody::Open(_) | FrameBody::Begin(_) | FrameBody::Attach(_)) => {
                    return Err(unexpected("no open, begin or attach", &other));
                }
            }
        }
        Ok(None)
    }

    /// Whether the client's incoming window is below half, so a `flow` should open it again.
    pub(crate) fn incoming_window_low(&self) -> bool {
        self.incoming_window < INCOMING_WINDOW / 2
    }

    /// Encodes a `flow` with the session's state (opening the incoming window again) and the
    /// link's, if given.
    pub(crate) fn flow(&mut self, link: Option<LinkFlow>) {
        self.incoming_window = INCOMING_WINDOW;
        let flow = Flow {
            next_incoming_id: Some(self.next_incoming_id),
            incoming_window: INCOMING_WINDOW,
            next_outgoing_id: self.next_outgoing_id,
            outgoing_window: OUTGOING_WINDOW,
            handle: link.map(|l| Handle(l.handle)),
            delivery_count: link.map(|l| l.delivery_count),
            link_credit: link.map(|l| l.link_credit),
            available: None,
            drain: link.is_some_and(|l| l.drain),
            echo: false,
            properties: None,
        };
        frame::encode_or_log(&mut self.wire.out, CHANNEL, &flow);
    }

    /// Transfer frames a message of `len` bytes takes.
    pub(crate) fn frames_for(&self, len: usize) -> u32 {
        // Room for the performative: a transfer's is well below 64 bytes.
        let room = (self.peer_max_frame as usize).saturating_sub(8 + 64).max(1);
        u32::try_from(len.div_ceil(room).max(1)).unwrap_or(u32::MAX)
    }

    /// Transfer frames the peer accepts now.
    pub(crate) fn remote_incoming_window(&self) -> u32 {
        self.remote_incoming_window
    }

    /// Encodes `message` as the transfer frames of one delivery, `transfer` being the first
    /// one's performative; frames are cut at the peer's maximum frame size.
    pub(crate) fn transfer(&mut self, mut transfer: Transfer, message: &[u8]) {
        let mut rest = message;
        loop {
            let out = &mut self.wire.out;
            let start = out.len();
            transfer.more = false;
            frame::encode_or_log(out, CHANNEL, &transfer);
            let mut room = (self.peer_max_frame as usize).saturating_sub(out.len() - start);
            if rest.len() > room {
                out.truncate(start);
                transfer.more = true;
                frame::encode_or_log(out, CHANNEL, &transfer);
                room = (self.peer_max_frame as usize).saturating_sub(out.len() - start);
            }
            let (part, after) = rest.split_at(room.min(rest.len()));
            out.put_slice(part);
            let size = u32::try_from(out.len() - start).unwrap_or(u32::MAX);
            out[start..start + 4].copy_from_slice(&size.to_be_bytes());
            self.next_outgoing_id = self.next_outgoing_id.wrapping_add(1);
            self.remote_incoming_window = self.remote_incoming_window.saturating_sub(1);
            rest = after;
            if rest.is_empty() {
                return;
            }
            // Continuation frames carry the handle and the flags only.
            transfer = Transfer {
                handle: transfer.handle,
                delivery_id: None,
                delivery_tag: None,
                message_format: None,
                settled: transfer.settled,
                more: false,
                rcv_settle_mode: None,
                state: None,
                resume: false,
                aborted: false,
                batchable: transfer.batchable,
            };
        }
    }

    /// Encodes a `disposition`.
    pub(crate) fn disposition(&mut self, disposition: &Disposition) {
        frame::encode_or_log(&mut self.wire.out, CHANNEL, disposition);
    }

    /// Whether frames wait to be written.
    pub fn has_output(&self) -> bool {
        !self.wire.out.is_empty()
    }

    /// Writes the frames encoded so far.
    pub async fn write(&mut self) -> Result<(), AmqpError> {
        self.written = true;
        Ok(self.wire.write().await?)
    }

    /// Reads what the peer sent next (cancel safe); the end of the stream is an error.
    pub async fn read(&mut self) -> Result<(), AmqpError> {
        Ok(self.wire.read().await?)
    }

    /// How often [`Connection::heartbeat`] should be called: a quarter of the peer's idle
    /// timeout (`None`: the peer has none).
    pub fn heartbeat_interval(&self) -> Option<Duration> {
        self.heartbeat
    }

    /// Encodes an empty frame if nothing was written since the last call (the caller writes it),
    /// so the peer's idle timer does not fire.
    pub fn heartbeat(&mut self) {
        if !std::mem::replace(&mut self.written, false)
            && self.wire.out.is_empty()
            && let Err(error) = frame::encode::<Close>(&mut self.wire.out, CHANNEL, None)
        {
            tracing::warn!(%error, "the heartbeat could not be encoded");
        }
    }

    /// Detaches the link `handle` (if any), ends the session and closes the connection, waits
    /// for the peer's `close` and shuts the stream down. The caller bounds how long this takes.
    pub(crate) async fn close(mut self, handle: Option<u32>) {
        if let Some(handle) = handle {
            let detach = Detach {
                handle: Handle(handle),
                closed: true,
                error: None,
            };
            frame::encode_or_log(&mut self.wire.out, CHANNEL, &detach);
        }
        frame::encode_or_log(&mut self.wire.out, CHANNEL, &End { error: None });
        frame::encode_or_log(&mut self.wire.out, CHANNEL, &Close { error: None });
        if self.write().await.is_ok() {
            // Whatever else comes first (outcomes, the detach and end answers) is of no interest.
            while self.wait_for_frame().await.is_ok() {}
        }
        self.wire.shutdown().await;
    }

    /// The received bytes (tests feed frames through it).
    #[cfg(test)]
    pub(crate) fn received(&mut self) -> &mut bytes::BytesMut {
        &mut self.wire.received
    }

    /// The encoded frames (tests read them back).
    #[cfg(test)]
    pub(crate) fn output(&mut self) -> &mut bytes::BytesMut {
        &mut self.wire.out
    }
}

#[cfg(test)]
impl Connection<tokio::io::DuplexStream> {
    /// A connection in the state right after `begin`, over a stream nobody reads, for tests of
    /// the link logic; the peer's max frame size is `peer_max_frame`.
    pub(crate) fn for_test(peer_max_frame: u32) -> Self {
        let (stream, _) = tokio::io::duplex(1);
        Self {
            wire: Wire::new(stream),
            peer_max_frame,
            heartbeat: None,
            written: false,
            next_outgoing_id: 0,
            remote_incoming_window: 1000,
            next_incoming_id: 0,
            incoming_window: INCOMING_WINDOW,
        }
    }
}

fn unexpected(expected: &str, got: &FrameBody) -> AmqpError {
    let name = match got {
        FrameBody::Open(_) => "open",
        FrameBody::Begin(_) => "begin",
        FrameBody::Attach(_) => "attach",
        FrameBody::Flow(_) => "flow",
        FrameBody::Transfer { .. } => "transfer",
        FrameBody::Disposition(_) => "disposition",
        FrameBody::Detach(_) => "detach",
        FrameBody::End(_) => "end",
        FrameBody::Close(_) => "close",
        FrameBody::Empty => "an empty frame",
    };
    AmqpError::Protocol(format!("expected {expected}, got {name}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(connection: &mut Connection<tokio::io::DuplexStream>) -> Vec<FrameBody> {
        let mut out = std::mem::take(connection.output());
        let mut frames = Vec::new();
        while let Ok(Some(f)) = frame::next_frame(&mut out, u32::MAX) {
            frames.push(f.body);
        }
        frames
    }

    #[tokio::test]
    async fn a_heartbeat_goes_out_only_after_a_silent_interval() -> Result<(), AmqpError> {
        let (stream, _peer) = tokio::io::duplex(1024);
        let mut connection = Connection::for_test(512);
        connection.wire = Wire::new(stream);
        connection.heartbeat();
        assert!(matches!(
            frames(&mut connection).as_slice(),
            [FrameBody::Empty]
        ));
        // Something was written since: no heartbeat at the next tick, one at the tick after.
        connection.flow(None);
        connection.write().await?;
        connection.heartbeat();
        assert!(frames(&mut connection).is_empty());
        connection.heartbeat();
        assert!(matches!(
            frames(&mut connection).as_slice(),
            [FrameBody::Empty]
        ));
        Ok(())
    }

    #[test]
    fn session_frames_are_handled_and_link_frames_passed_on() -> Result<(), AmqpError> {
        let mut connection = Connection::for_test(512);
        let flow = |handle: Option<u32>, echo: bool| Flow {
            next_incoming_id: Some(0),
            incoming_window: 7,
            next_outgoing_id: 0,
            outgoing_window: 0,
            handle: handle.map(Handle),
            delivery_count: None,
            link_credit: None,
            available: None,
            drain: false,
            echo,
            properties: None,
        };
        let received = connection.received();
        let encode = |received: &mut bytes::BytesMut, body: &Flow| {
            frame::encode(received, CHANNEL, Some(body))
                .map_err(|e| AmqpError::Protocol(e.to_string()))
        };
        encode(received, &flow(None, true))?;
        encode(received, &flow(Some(0), false))?;
        frame::encode(received, CHANNEL, Some(&End { error: None }))
            .map_err(|e| AmqpError::Protocol(e.to_string()))?;
        // The session flow is answered (echo), the link's comes out, the end is an error.
        assert!(matches!(connection.next_frame()?, Some(LinkFrame::Flow(f)) if f.handle.is_some()));
        assert_eq!(connection.remote_incoming_window(), 7);
        assert!(
            matches!(frames(&mut connection).as_slice(), [FrameBody::Flow(f)] if f.handle.is_none())
        );
        assert!(matches!(
            connection.next_frame(),
            Err(AmqpError::Ended(None))
        ));
        Ok(())
    }
}
