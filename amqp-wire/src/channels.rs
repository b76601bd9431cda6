//! The sessions of a connection by channel (AMQP 1.0 §2.5), for servers that answer each `begin`
//! on the channel the peer chose: the checks of a `begin`, the lookup of a frame's session, and
//! the answering `begin`; and the checks of an `attach`'s handle.

use fe2o3_amqp::types::definitions::{AmqpError, Error as ErrorBody, Handle, SessionError};
use fe2o3_amqp::types::performatives::Begin;

/// Sessions by channel, the same number on both sides.
#[derive(Debug)]
pub struct Channels<T> {
    sessions: Vec<Option<T>>,
    max_channel: u16,
}

impl<T> Channels<T> {
    /// No session yet; the peer may use channels up to `max_channel` (our `channel-max`).
    pub fn new(max_channel: u16) -> Self {
        Self {
            sessions: Vec::new(),
            max_channel,
        }
    }

    /// The session on `channel`; a frame on a channel without one is a protocol error.
    pub fn get_mut(&mut self, channel: u16) -> Result<&mut T, ErrorBody> {
        self.sessions
            .get_mut(usize::from(channel))
            .and_then(Option::as_mut)
            .ok_or_else(|| no_session(channel))
    }

    /// Checks the peer's `begin` on `channel` (a new session, within `channel-max`, on a free
    /// channel) and stores the session `make` returns.
    pub fn begin(
        &mut self,
        channel: u16,
        begin: &Begin,
        make: impl FnOnce() -> T,
    ) -> Result<(), ErrorBody> {
        if begin.remote_channel.is_some() {
            return Err(ErrorBody::new(
                AmqpError::NotAllowed,
                "this endpoint begins no sessions".to_owned(),
                None,
            ));
        }
        if channel > self.max_channel {
            return Err(ErrorBody::new(
                AmqpError::NotAllowed,
                format!(
                    "channel {channel} exceeds the channel-max {}",
                    self.max_channel
                ),
                None,
            ));
        }
        let index = usize::from(channel);
        if self.sessions.len() <= index {
            self.sessions.resize_with(index + 1, || None);
        }
        match self.sessions.get_mut(index) {
            Some(slot @ None) => {
                *slot = Some(make());
                Ok(())
            }
            _ => Err(ErrorBody::new(
                AmqpError::NotAllowed,
                format!("channel {channel} is in use"),
                None,
            )),
        }
    }

    /// Removes the session on `channel` (the peer ended it).
    pub fn end(&mut self, channel: u16) -> Result<T, ErrorBody> {
        self.sessions
            .get_mut(usize::from(channel))
            .and_then(Option::take)
            .ok_or_else(|| no_session(channel))
    }

    /// Every session.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.sessions.iter().flatten()
    }

    /// Every session, mutably.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.sessions.iter_mut().flatten()
    }
}

/// Our `begin` answering the peer's on `channel`; our transfer ids start at 0.
pub fn answer(channel: u16, incoming_window: u32, outgoing_window: u32, handle_max: u32) -> Begin {
    Begin {
        remote_channel: Some(channel),
        next_outgoing_id: 0,
        incoming_window,
        outgoing_window,
        handle_max: Handle(handle_max),
        offered_capabilities: None,
        desired_capabilities: None,
        properties: None,
    }
}

/// Checks an `attach` on `handle`: within the `handle_max` we announced, and not `in_use` by a
/// link of the session (§2.6.2); the error ends the connection.
pub fn check_new_handle(handle: u32, handle_max: u32, in_use: bool) -> Result<(), ErrorBody> {
    if handle > handle_max {
        return Err(ErrorBody::new(
            AmqpError::NotAllowed,
            format!("handle {handle} exceeds the handle-max {handle_max}"),
            None,
        ));
    }
    if in_use {
        return Err(ErrorBody::new(
            SessionError::HandleInUse,
            format!("handle {handle} is in use"),
            None,
        ));
    }
    Ok(())
}

fn no_session(channel: u16) -> ErrorBody {
    ErrorBody::new(
        AmqpError::NotAllowed,
        format!("no session on channel {channel}"),
        None,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn begin(remote_channel: Option<u16>) -> Begin {
        Begin {
            remote_channel,
            ..answer(0, 10, 10, 1)
        }
    }

    #[test]
    fn new_handles_must_be_within_handle_max_and_free() {
        assert!(check_new_handle(3, 3, false).is_ok());
        let over = check_new_handle(4, 3, false).err();
        assert_eq!(
            over.map(|e| e.condition),
            Some(AmqpError::NotAllowed.into())
        );
        let taken = check_new_handle(1, 3, true).err();
        assert_eq!(
            taken.map(|e| e.condition),
            Some(SessionError::HandleInUse.into())
        );
    }

    #[test]
    fn begin_checks_the_channel_and_end_frees_it() -> Result<(), ErrorBody> {
        let mut channels = Channels::new(3);
        channels.begin(2, &begin(None), || "two")?;
        assert_eq!(*channels.get_mut(2)?, "two");
        assert!(channels.get_mut(1).is_err());
        assert!(channels.begin(2, &begin(None), || "again").is_err());
        assert!(channels.begin(4, &begin(None), || "beyond").is_err());
        assert!(channels.begin(0, &begin(Some(0)), || "answer").is_err());
        assert_eq!(channels.iter().count(), 1);
        assert_eq!(channels.end(2)?, "two");
        assert!(channels.end(2).is_err());
        channels.begin(2, &begin(None), || "reused")?;
        assert_eq!(channels.iter_mut().count(), 1);
        Ok(())
    }
}
