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
    sessions: Vec<Option<Session>>,
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
            sessions: Vec::new(),
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
                session(&mut self.sessions, channel)?.on_flow(&flow, &mut self.out)?;
                Ok(None)
            }
            FrameBody::Disposition(disposition) => {
                session(&mut self.sessions, channel)?.on_disposition(&disposition, &mut self.out);
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
                let start = session(&mut self.sessions, channel)?.on_attach(attach, id, &mut cx)?;
                Ok(start.map(|(tenant, notify)| Event::StartDelivery(tenant, notify)))
            }
            FrameBody::Detach(detach) => {
                session(&mut self.sessions, channel)?.on_detach(
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
                if begin.remote_channel.is_some() {
                    return Err(ErrorBody::new(
                        AmqpError::NotAllowed,
                        "the northbound begins no sessions".to_owned(),
                        None,
                    ));
                }
                if channel > MAX_CHANNEL {
                    return Err(ErrorBody::new(
                        AmqpError::NotAllowed,
                        format!("channel {channel} exceeds the channel-max {MAX_CHANNEL}"),
                        None,
                    ));
                }
                let index = usize::from(channel);
                if self.sessions.len() <= index {
                    self.sessions.resize_with(index + 1, || None);
                }
                let Some(slot) = self.sessions.get_mut(index).filter(|s| s.is_none()) else {
                    return Err(ErrorBody::new(
                        AmqpError::NotAllowed,
                        format!("channel {channel} is in use"),
                        None,
                    ));
                };
                *slot = Some(Session::begin(channel, &begin, &mut self.out));
                Ok(None)
            }
            FrameBody::End(end) => {
                let mut ended = self
                    .sessions
                    .get_mut(usize::from(channel))
                    .and_then(Option::take)
                    .ok_or_else(|| no_session(channel))?;
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
        for session in self.sessions.iter_mut().flatten() {
            session.send_queued(&mut self.out, self.peer_max_frame);
        }
    }

    /// Closes every consumer link with `error`; their queued messages fail.
    pub(crate) fn detach_all(&mut self, error: &ErrorBody) {
        for session in self.sessions.iter_mut().flatten() {
            session.detach_all(error, &self.registry, &mut self.out);
        }
    }

    /// Whether a sender still waits for a consumer's outcome of a delivery of this connection.
    pub(crate) fn awaits_outcomes(&self) -> bool {
        self.sessions.iter().flatten().any(Session::awaits_outcomes)
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
        for session in self.sessions.iter_mut().flatten() {
            session.release_all(&self.registry);
        }
    }
}

fn no_session(channel: u16) -> ErrorBody {
    ErrorBody::new(
        AmqpError::NotAllowed,
        format!("no session on channel {channel}"),
        None,
    )
}

fn session(sessions: &mut [Option<Session>], channel: u16) -> Result<&mut Session, ErrorBody> {
    sessions
        .get_mut(usize::from(channel))
        .and_then(Option::as_mut)
        .ok_or_else(|| no_session(channel))
}
