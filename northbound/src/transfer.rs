//! Writing a delivery as `transfer` frames straight into the connection's output buffer.
//!
//! The `transfer` performative is hand-encoded (a list of handle, delivery id, a four-byte
//! delivery tag, message format 0, `settled` and `more`), followed by the message as
//! [`crate::encode`] writes it. A message larger than the consumer's `max-frame-size` is split
//! into several frames with `more` set on all but the last (AMQP 1.0 §2.6.14); each frame repeats
//! the delivery id and tag.

use bytes::{BufMut, BytesMut};
use ferry_adapter_core::DownstreamMessage;

use crate::encode::{encode, encoded_len_bound, uint};

/// The frame header: size, data offset, type, channel.
const FRAME_HEADER: usize = 8;
/// The largest `transfer` performative written here.
const PERFORMATIVE_MAX: usize = 32;
/// The smallest frame size a peer may announce (AMQP 1.0 §2.7.1).
const MIN_MAX_FRAME_SIZE: u32 = 512;

/// Where and how a delivery goes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Head {
    /// The session's channel.
    pub channel: u16,
    /// The link's handle.
    pub handle: u32,
    /// The session's delivery id (also the delivery tag).
    pub delivery_id: u32,
    /// Sent pre-settled.
    pub settled: bool,
}

/// The message is larger than the consumer accepts; nothing was written.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("the message ({0} bytes) exceeds the consumer's max-message-size")]
pub(crate) struct TooLarge(pub u64);

/// The frame size used for a peer's `max-frame-size` (at least the AMQP minimum).
pub(crate) fn frame_size(peer_max: u32) -> usize {
    peer_max.max(MIN_MAX_FRAME_SIZE) as usize
}

/// The most frames [`write`] can take for `message` with frames of `max_frame` bytes.
pub(crate) fn frames_needed(
    message: &DownstreamMessage,
    message_id: &str,
    max_frame: usize,
) -> u32 {
    let chunk = max_frame - FRAME_HEADER - PERFORMATIVE_MAX;
    let frames = encoded_len_bound(message, message_id).div_ceil(chunk);
    u32::try_from(frames.max(1)).unwrap_or(u32::MAX)
}

/// Appends the transfer frame(s) of `message` to `out`; returns how many frames were written.
/// Nothing is written when the encoded message exceeds `max_message_size`.
pub(crate) fn write(
    out: &mut BytesMut,
    head: Head,
    message: &DownstreamMessage,
    message_id: &str,
    max_frame: usize,
    max_message_size: Option<u64>,
) -> Result<u32, TooLarge> {
    let frame_start = out.len();
    frame_header(out, head.channel);
    performative(out, head, false);
    let message_start = out.len();
    encode(out, message, message_id);
    let size = (out.len() - message_start) as u64;
    if max_message_size.is_some_and(|max| max > 0 && size > max) {
        out.truncate(frame_start);
        return Err(TooLarge(size));
    }
    if out.len() - frame_start <= max_frame {
        finish_frame(out, frame_start);
        return Ok(1);
    }
    // Rare: split the message over several frames.
    let body = out[message_start..].to_vec();
    out.truncate(frame_start);
    let chunk = max_frame - FRAME_HEADER - PERFORMATIVE_MAX;
    let mut frames = 0;
    let mut parts = body.chunks(chunk).peekable();
    while let Some(part) = parts.next() {
        let start = out.len();
        frame_header(out, head.channel);
        performative(out, head, parts.peek().is_some());
        out.put_slice(part);
        finish_frame(out, start);
        frames += 1;
    }
    Ok(frames)
}

fn frame_header(out: &mut BytesMut, channel: u16) {
    out.put_u32(0);
    out.put_slice(&[2, 0]);
    out.put_u16(channel);
}

fn finish_frame(out: &mut BytesMut, start: usize) {
    let size = u32::try_from(out.len() - start).unwrap_or(u32::MAX);
    out[start..start + 4].copy_from_slice(&size.to_be_bytes());
}

/// The `transfer` performative (descriptor 0x14) as a list8.
fn performative(out: &mut BytesMut, head: Head, more: bool) {
    out.put_slice(&[0x00, 0x53, 0x14, 0xc0]);
    let size_at = out.len();
    out.put_u8(0);
    let count = if more {
        6
    } else if head.settled {
        5
    } else {
        4
    };
    out.put_u8(count);
    uint(out, head.handle);
    uint(out, head.delivery_id);
    out.put_slice(&[0xa0, 4]);
    out.put_u32(head.delivery_id);
    // message-format 0
    out.put_u8(0x43);
    if count > 4 {
        out.put_u8(if head.settled { 0x41 } else { 0x42 });
    }
    if more {
        out.put_u8(0x41);
    }
    // The size counts the count byte and the fields.
    out[size_at] = (out.len() - size_at - 1) as u8;
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeMap;

    use bytes::Bytes;
    use fe2o3_amqp::frames::amqp::FrameBody;
    use fe2o3_amqp::types::messaging::Data;
    use fe2o3_amqp::types::messaging::Message;
    use fe2o3_amqp::types::messaging::message::__private::Deserializable;
    use ferry_adapter_core::{Endpoint, Qos};
    use ferry_amqp_wire::next_frame;
    use ferry_registry_client::{DeviceId, TenantId};

    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    pub(crate) fn message(
        payload: Vec<u8>,
    ) -> Result<DownstreamMessage, Box<dyn std::error::Error>> {
        Ok(DownstreamMessage {
            tenant_id: TenantId::parse("t")?,
            device_id: DeviceId::parse("d")?,
            endpoint: Endpoint::Telemetry,
            qos: Qos::AtMostOnce,
            content_type: "text/plain".into(),
            creation_time: 1,
            ttl_ms: None,
            ttd: None,
            orig_adapter: "test".into(),
            orig_address: "/telemetry".into(),
            properties: BTreeMap::new(),
            retain: false,
            payload: Bytes::from(payload),
        })
    }

    #[test]
    fn a_large_message_is_split_and_joins_again() -> TestResult {
        let payload: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
        let message = message(payload.clone())?;
        let head = Head {
            channel: 3,
            handle: 300,
            delivery_id: 70_000,
            settled: true,
        };
        let mut out = BytesMut::new();
        let frames = write(&mut out, head, &message, "id", 1024, None)?;
        assert!(frames >= 5 && frames <= frames_needed(&message, "id", 1024));
        let mut joined = Vec::new();
        let mut seen = 0;
        while let Some(frame) = next_frame(&mut out, 1024)? {
            assert_eq!(frame.channel, 3);
            let FrameBody::Transfer {
                performative,
                payload,
            } = frame.body
            else {
                return Err("not a transfer".into());
            };
            seen += 1;
            assert_eq!(performative.handle.0, 300);
            assert_eq!(performative.delivery_id, Some(70_000));
            assert_eq!(
                performative.delivery_tag.as_ref().map(|t| t.to_vec()),
                Some(70_000u32.to_be_bytes().to_vec())
            );
            assert_eq!(performative.message_format, Some(0));
            assert_eq!(performative.settled, Some(true));
            assert_eq!(performative.more, seen < frames);
            joined.extend_from_slice(&payload);
        }
        assert_eq!(seen, frames);
        let Deserializable(decoded): Deserializable<Message<Data>> =
            serde_amqp::from_slice(&joined)?;
        assert_eq!(decoded.body.0.as_slice(), payload.as_slice());
        Ok(())
    }

    #[test]
    fn a_message_beyond_max_message_size_writes_nothing() -> TestResult {
        let message = message(vec![0; 100])?;
        let head = Head {
            channel: 0,
            handle: 0,
            delivery_id: 0,
            settled: false,
        };
        let mut out = BytesMut::from(&b"kept"[..]);
        assert!(write(&mut out, head, &message, "id", 4096, Some(50)).is_err());
        assert_eq!(&out[..], b"kept");
        assert_eq!(write(&mut out, head, &message, "id", 4096, Some(0)), Ok(1));
        Ok(())
    }
}
