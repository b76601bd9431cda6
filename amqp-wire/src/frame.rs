//! AMQP 1.0 framing (part 2.3): cutting complete frames off the received bytes, and encoding
//! frames into an output buffer.
//!
//! The frame's size, data offset and type are checked here before fe2o3's `FrameDecoder` sees the
//! frame: that decoder reads the frame header without length checks, so it only ever gets a body
//! that has one. A frame is refused when its size is below 8, above the negotiated
//! `max-frame-size`, its data offset is below 2 or beyond the frame, or its type is not AMQP; the
//! connection then closes with `amqp:connection:framing-error`. An extended header is skipped.
//! Plain `transfer` frames, nearly all a receiver gets, are read in place instead (their few
//! fields, with the payload sharing the received bytes), and so are `disposition` frames with no
//! state, `accepted` or `released`, nearly all a sender gets; anything unusual goes to fe2o3.
//!
//! Sent frames are encoded with serde_amqp into one output buffer (fe2o3's encoder cannot be
//! built outside its crate).

use bytes::{Buf, BufMut, BytesMut};
use fe2o3_amqp::frames::amqp::{Frame, FrameBody, FrameDecoder};
use fe2o3_amqp::types::definitions::{
    ConnectionError, DeliveryTag, Error as ErrorBody, Handle, Role,
};
use fe2o3_amqp::types::messaging::{Accepted, DeliveryState, Released};
use fe2o3_amqp::types::performatives::{Disposition, Transfer};
use serde::Serialize;
use tokio_util::codec::Decoder;

use crate::codec::{Fields, Reader, binary, boolean, uint};
use crate::message::MessageError;

/// The size field in front of every frame.
const SIZE_FIELD: usize = 4;
/// The smallest frame: size, data offset, type and channel.
const MIN_FRAME: u32 = 8;
/// Frame type of AMQP frames (SASL frames are type 1 and only come before the AMQP layer).
const TYPE_AMQP: u8 = 0;

/// Why received bytes are not a frame.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FramingError {
    /// The size field is below the 8 bytes of a frame header.
    #[error("frame size {0} is below the minimum of 8")]
    TooShort(u32),
    /// The frame is larger than the negotiated maximum.
    #[error("frame size {size} exceeds the maximum of {max}")]
    TooLarge {
        /// The announced size.
        size: u32,
        /// The maximum.
        max: u32,
    },
    /// The data offset is below 2 words or points beyond the frame.
    #[error("data offset {0} is invalid")]
    DataOffset(u8),
    /// Not an AMQP frame.
    #[error("frame type {0} is not AMQP")]
    Type(u8),
    /// The frame body is not a performative fe2o3 can decode.
    #[error("undecodable frame body: {0}")]
    Body(String),
}

/// The error a connection closes with when a peer's bytes are not frames
/// (`amqp:connection:framing-error`), with `description` saying why.
pub fn framing_error(description: impl std::fmt::Display) -> ErrorBody {
    ErrorBody::new(ConnectionError::FramingError, description.to_string(), None)
}

/// Cuts the next complete frame off the front of `received` and decodes it; `Ok(None)` until a
/// frame is complete. Frames larger than `max_frame_size` are refused before they are buffered.
pub fn next_frame(
    received: &mut BytesMut,
    max_frame_size: u32,
) -> Result<Option<Frame>, FramingError> {
    let Some(header) = received.get(..MIN_FRAME as usize) else {
        // Check the size as soon as it is there, so an oversized frame is not waited for.
        if let Some(size) = received.get(..SIZE_FIELD) {
            check_size(
                u32::from_be_bytes([size[0], size[1], size[2], size[3]]),
                max_frame_size,
            )?;
        }
        return Ok(None);
    };
    let size = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
    check_size(size, max_frame_size)?;
    let (doff, frame_type) = (header[4], header[5]);
    let body_offset = usize::from(doff) * 4;
    if doff < 2 || body_offset > size as usize {
        return Err(FramingError::DataOffset(doff));
    }
    if frame_type != TYPE_AMQP {
        return Err(FramingError::Type(frame_type));
    }
    if received.len() < size as usize {
        received.reserve(size as usize - received.len());
        return Ok(None);
    }
    let mut frame = received.split_to(size as usize);
    let channel = [frame[6], frame[7]];
    frame.advance(body_offset - 4);
    if let Some((performative, len)) = frame.get(4..).and_then(read_transfer) {
        frame.advance(4 + len);
        let body = FrameBody::Transfer {
            performative,
            payload: frame.freeze(),
        };
        return Ok(Some(Frame::new(u16::from_be_bytes(channel), body)));
    }
    if let Some(disposition) = frame.get(4..).and_then(read_disposition) {
        let body = FrameBody::Disposition(disposition);
        return Ok(Some(Frame::new(u16::from_be_bytes(channel), body)));
    }
    if let Some(body) = frame.get(4..).filter(|body| !body.is_empty()) {
        check_performative(body)?;
    }
    // What fe2o3's decoder expects: a 4-byte header with data offset 2, then the body.
    frame[..4].copy_from_slice(&[2, TYPE_AMQP, channel[0], channel[1]]);
    let mut decoder = FrameDecoder {};
    match decoder.decode(&mut frame) {
        Ok(Some(frame)) => Ok(Some(frame)),
        Ok(None) => Err(FramingError::Body("incomplete".to_owned())),
        Err(e) => Err(FramingError::Body(e.to_string())),
    }
}

/// Reads a frame body that is a plain `transfer` (no delivery state, not resumed or aborted) and
/// returns it with its encoded length; `None` leaves anything else to fe2o3's decoder. Transfers
/// are nearly every frame a receiver gets, and reading their few fields in place is several times
/// cheaper than serde.
fn read_transfer(body: &[u8]) -> Option<(Transfer, usize)> {
    let rest = body.strip_prefix(&[0x00, 0x53, 0x14])?;
    let mut reader = Reader(rest);
    let list = reader.value().ok()?;
    let mut fields = Fields::of(list).ok()?;
    // Each field: `None` when malformed (fe2o3 then reports it), `Some(None)` past the list's end.
    let mut next = || fields.nth(0).ok();
    let handle = uint(next()??).ok()??;
    let delivery_id = optional(next()?, uint)?;
    let delivery_tag = optional(next()?, binary)?.map(|tag: &[u8]| DeliveryTag::from(tag.to_vec()));
    let message_format = optional(next()?, uint)?;
    let settled = optional(next()?, boolean)?;
    let more = optional(next()?, boolean)?;
    // rcv-settle-mode, state, resume, aborted: only their defaults take this path.
    for _ in 0..4 {
        if !matches!(next()?, None | Some([0x40] | [0x42] | [0x56, 0])) {
            return None;
        }
    }
    let batchable = optional(next()?, boolean)?;
    if next()?.is_some() {
        return None;
    }
    let transfer = Transfer {
        handle: Handle(handle),
        delivery_id,
        delivery_tag,
        message_format,
        settled,
        more: more.unwrap_or(false),
        rcv_settle_mode: None,
        state: None,
        resume: false,
        aborted: false,
        batchable: batchable.unwrap_or(false),
    };
    Some((transfer, 3 + list.len()))
}

/// Reads a frame body that is a `disposition` settling with no state, `accepted` or `released`
/// (nearly every disposition a sender gets); `None` leaves anything else, and a disposition
/// followed by more bytes, to fe2o3's decoder.
fn read_disposition(body: &[u8]) -> Option<Disposition> {
    let rest = body.strip_prefix(&[0x00, 0x53, 0x15])?;
    let mut reader = Reader(rest);
    let list = reader.value().ok()?;
    if !reader.0.is_empty() {
        return None;
    }
    let mut fields = Fields::of(list).ok()?;
    let mut next = || fields.nth(0).ok();
    let role = boolean(next()??).ok()??;
    let first = uint(next()??).ok()??;
    let last = optional(next()?, uint)?;
    let settled = optional(next()?, boolean)?;
    let state = match next()? {
        None | Some([0x40]) => None,
        Some(state) => Some(plain_outcome(state)?),
    };
    let batchable = optional(next()?, boolean)?;
    if next()?.is_some() {
        return None;
    }
    Some(Disposition {
        role: if role { Role::Receiver } else { Role::Sender },
        first,
        last,
        settled: settled.unwrap_or(false),
        state,
        batchable: batchable.unwrap_or(false),
    })
}

/// An `accepted` or `released` outcome without fields; `None` for any other state.
fn plain_outcome(value: &[u8]) -> Option<DeliveryState> {
    let (code, fields) = match value {
        [0x00, 0x53, code, fields @ ..] => (*code, fields),
        _ => return None,
    };
    // The empty list in each of its encodings.
    if !matches!(
        fields,
        [0x45] | [0xc0, 1, 0] | [0xd0, 0, 0, 0, 4, 0, 0, 0, 0]
    ) {
        return None;
    }
    match code {
        0x24 => Some(Accepted {}.into()),
        0x26 => Some(Released {}.into()),
        _ => None,
    }
}

/// Checks the performative at the start of `body` (a frame body after its header) down to every
/// nested length before a decoder sees it: fe2o3's decoders allocate whatever a length field
/// says and recurse without limit, so a few crafted bytes could otherwise claim gigabytes or
/// exhaust the stack. The payload after the performative is not looked at.
pub fn check_performative(body: &[u8]) -> Result<(), FramingError> {
    match Reader(body).checked_value() {
        Ok(_) => Ok(()),
        Err(e) => Err(FramingError::Body(format!("malformed performative: {e}"))),
    }
}

/// A list field (`None` past the list's end, read as null) read with `read`; `None` when it is
/// not of `read`'s type.
fn optional<'a, T>(
    field: Option<&'a [u8]>,
    read: fn(&'a [u8]) -> Result<Option<T>, MessageError>,
) -> Option<Option<T>> {
    field.map_or(Ok(None), read).ok()
}

fn check_size(size: u32, max: u32) -> Result<(), FramingError> {
    if size < MIN_FRAME {
        return Err(FramingError::TooShort(size));
    }
    if size > max {
        return Err(FramingError::TooLarge { size, max });
    }
    Ok(())
}

/// Appends one frame carrying `performative` (`None`: an empty frame, the heartbeat) to `out`.
pub fn encode<P: Serialize>(
    out: &mut BytesMut,
    channel: u16,
    performative: Option<&P>,
) -> Result<(), serde_amqp::Error> {
    let start = out.len();
    out.put_u32(0);
    out.put_slice(&[2, TYPE_AMQP]);
    out.put_u16(channel);
    if let Some(performative) = performative {
        let mut serializer = serde_amqp::ser::Serializer::from((&mut *out).writer());
        if let Err(e) = performative.serialize(&mut serializer) {
            out.truncate(start);
            return Err(e);
        }
    }
    let size = u32::try_from(out.len() - start).unwrap_or(u32::MAX);
    out[start..start + SIZE_FIELD].copy_from_slice(&size.to_be_bytes());
    Ok(())
}

/// [`encode`]s a frame; a performative that cannot be encoded (none of Ferry's can fail) is
/// logged and left out.
pub fn encode_or_log<P: Serialize>(out: &mut BytesMut, channel: u16, performative: &P) {
    if let Err(error) = encode(out, channel, Some(performative)) {
        tracing::warn!(%error, "a frame could not be encoded");
    }
}

#[cfg(test)]
mod tests {
    use fe2o3_amqp::types::performatives::{Close, Flow};

    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn flow() -> Flow {
        Flow {
            next_incoming_id: Some(1),
            incoming_window: 10,
            next_outgoing_id: 0,
            outgoing_window: 0,
            handle: None,
            delivery_count: None,
            link_credit: None,
            available: None,
            drain: false,
            echo: true,
            properties: None,
        }
    }

    #[test]
    fn encoded_frames_decode_again_in_any_chunks() -> TestResult {
        let mut wire = BytesMut::new();
        encode(&mut wire, 3, Some(&flow()))?;
        encode::<Flow>(&mut wire, 0, None)?;
        let expected = wire.len();
        let mut received = BytesMut::new();
        let mut frames = Vec::new();
        for byte in wire.iter() {
            received.put_u8(*byte);
            while let Some(frame) = next_frame(&mut received, 512)? {
                frames.push(frame);
            }
        }
        assert!(
            received.is_empty(),
            "{expected} bytes, {} left",
            received.len()
        );
        let [first, second] = frames.as_slice() else {
            return Err(format!("{frames:?}").into());
        };
        assert_eq!(first.channel, 3);
        assert!(matches!(&first.body, FrameBody::Flow(f) if *f == flow()));
        assert!(matches!(second.body, FrameBody::Empty));
        Ok(())
    }

    fn transfer(settled: Option<bool>) -> Transfer {
        Transfer {
            handle: Handle(3),
            delivery_id: Some(70_000),
            delivery_tag: Some(DeliveryTag::from(vec![1, 2, 3, 4])),
            message_format: Some(0),
            settled,
            more: false,
            rcv_settle_mode: None,
            state: None,
            resume: false,
            aborted: false,
            batchable: true,
        }
    }

    /// One transfer frame on `channel` carrying `payload`.
    fn transfer_frame(
        performative: &Transfer,
        payload: &[u8],
    ) -> Result<BytesMut, serde_amqp::Error> {
        let mut wire = BytesMut::new();
        encode(&mut wire, 1, Some(performative))?;
        wire.put_slice(payload);
        let size = wire.len() as u32;
        wire[..4].copy_from_slice(&size.to_be_bytes());
        Ok(wire)
    }

    /// What fe2o3's own decoder makes of a frame.
    fn fe2o3_decode(mut wire: BytesMut) -> Result<Option<Frame>, Box<dyn std::error::Error>> {
        wire.advance(4);
        Ok(FrameDecoder {}.decode(&mut wire)?)
    }

    #[test]
    fn plain_transfers_are_read_in_place_as_fe2o3_reads_them() -> TestResult {
        let payload = vec![9u8; 300];
        for settled in [None, Some(true), Some(false)] {
            let performative = transfer(settled);
            let wire = transfer_frame(&performative, &payload)?;
            let body_start = 8;
            let (fast, len) = read_transfer(&wire[body_start..]).ok_or("not read in place")?;
            assert_eq!(fast, performative);
            assert_eq!(body_start + len, wire.len() - payload.len());
            let expected = fe2o3_decode(wire.clone())?.ok_or("fe2o3 read nothing")?;
            let frame = next_frame(&mut wire.clone(), 4096)?.ok_or("incomplete")?;
            assert_eq!(frame.channel, 1);
            match (frame.body, expected.body) {
                (
                    FrameBody::Transfer {
                        performative: a,
                        payload: p,
                    },
                    FrameBody::Transfer {
                        performative: b,
                        payload: q,
                    },
                ) => {
                    assert_eq!((a, &p), (b, &q));
                    assert_eq!(p.as_ref(), payload.as_slice());
                }
                other => return Err(format!("{other:?}").into()),
            }
        }
        Ok(())
    }

    #[test]
    fn other_transfers_go_to_fe2o3() -> TestResult {
        let aborted = Transfer {
            aborted: true,
            ..transfer(Some(false))
        };
        let with_state = Transfer {
            state: Some(fe2o3_amqp::types::messaging::Accepted {}.into()),
            ..transfer(Some(false))
        };
        for performative in [aborted, with_state] {
            let wire = transfer_frame(&performative, b"x")?;
            assert!(read_transfer(&wire[8..]).is_none(), "{performative:?}");
            let frame = next_frame(&mut wire.clone(), 4096)?.ok_or("incomplete")?;
            assert!(
                matches!(&frame.body, FrameBody::Transfer { performative: p, .. } if *p == performative)
            );
        }
        // A transfer list cut short is not read in place (fe2o3 decides what it is).
        let wire = transfer_frame(&transfer(None), b"")?;
        let mut cut = BytesMut::from(&wire[..wire.len() - 3]);
        let size = cut.len() as u32;
        cut[..4].copy_from_slice(&size.to_be_bytes());
        assert!(read_transfer(&cut[8..]).is_none());
        let mut garbage = cut.clone();
        garbage[14] = 0xff; // the handle's constructor
        assert!(read_transfer(&garbage[8..]).is_none());
        assert!(matches!(
            next_frame(&mut garbage, 4096),
            Err(FramingError::Body(_))
        ));
        Ok(())
    }

    fn disposition(state: Option<DeliveryState>, last: Option<u32>) -> Disposition {
        Disposition {
            role: Role::Receiver,
            first: 70_000,
            last,
            settled: true,
            state,
            batchable: false,
        }
    }

    /// One disposition frame on channel 1.
    fn disposition_frame(performative: &Disposition) -> Result<BytesMut, serde_amqp::Error> {
        let mut wire = BytesMut::new();
        encode(&mut wire, 1, Some(performative))?;
        Ok(wire)
    }

    #[test]
    fn plain_dispositions_are_read_in_place_as_fe2o3_reads_them() -> TestResult {
        let states: [Option<DeliveryState>; 3] =
            [None, Some(Accepted {}.into()), Some(Released {}.into())];
        for state in states {
            for last in [None, Some(70_005)] {
                let performative = disposition(state.clone(), last);
                let wire = disposition_frame(&performative)?;
                let fast = read_disposition(&wire[8..]).ok_or("not read in place")?;
                assert_eq!(fast, performative);
                let expected = fe2o3_decode(wire.clone())?.ok_or("fe2o3 read nothing")?;
                let frame = next_frame(&mut wire.clone(), 4096)?.ok_or("incomplete")?;
                assert_eq!(frame.channel, 1);
                match (frame.body, expected.body) {
                    (FrameBody::Disposition(a), FrameBody::Disposition(b)) => assert_eq!(a, b),
                    other => return Err(format!("{other:?}").into()),
                }
            }
        }
        // The empty list of an outcome in its longer encodings.
        for fields in [&[0xc0, 1, 0][..], &[0xd0, 0, 0, 0, 4, 0, 0, 0, 0]] {
            let mut state = vec![0x00, 0x53, 0x24];
            state.extend_from_slice(fields);
            assert!(matches!(
                plain_outcome(&state),
                Some(DeliveryState::Accepted(_))
            ));
        }
        Ok(())
    }

    #[test]
    fn other_dispositions_go_to_fe2o3() -> TestResult {
        let rejected = disposition(
            Some(fe2o3_amqp::types::messaging::Rejected { error: None }.into()),
            None,
        );
        let modified = disposition(
            Some(
                fe2o3_amqp::types::messaging::Modified {
                    delivery_failed: Some(true),
                    undeliverable_here: None,
                    message_annotations: None,
                }
                .into(),
            ),
            None,
        );
        for performative in [rejected, modified] {
            let wire = disposition_frame(&performative)?;
            assert!(read_disposition(&wire[8..]).is_none(), "{performative:?}");
            let frame = next_frame(&mut wire.clone(), 4096)?.ok_or("incomplete")?;
            assert!(matches!(&frame.body, FrameBody::Disposition(d) if *d == performative));
        }
        // Bytes after the performative: fe2o3 decides what the frame is.
        let wire = disposition_frame(&disposition(None, None))?;
        let mut longer = wire.to_vec();
        longer.push(0x40);
        assert!(read_disposition(&longer[8..]).is_none());
        // A field of the wrong type is not read in place.
        let mut garbage = wire.to_vec();
        // Header (8), descriptor (3), list8 constructor, size and count (3), then the role.
        let role = 14;
        assert_eq!(garbage[11], 0xc0);
        assert_eq!(garbage[role], 0x41);
        garbage[role] = 0xa1;
        assert!(read_disposition(&garbage[8..]).is_none());
        Ok(())
    }

    #[test]
    fn an_extended_header_is_skipped() -> TestResult {
        let mut plain = BytesMut::new();
        encode(&mut plain, 1, Some(&Close { error: None }))?;
        // Same frame with data offset 3 and four bytes of extended header.
        let mut extended = BytesMut::new();
        extended.put_u32(plain.len() as u32 + 4);
        extended.put_slice(&[3, 0, 0, 1, 0xde, 0xad, 0xbe, 0xef]);
        extended.put_slice(&plain[8..]);
        let frame = next_frame(&mut extended, 512)?.ok_or("incomplete")?;
        assert_eq!(frame.channel, 1);
        assert!(matches!(
            frame.body,
            FrameBody::Close(Close { error: None })
        ));
        Ok(())
    }

    #[test]
    fn short_oversized_and_garbage_frames_are_errors_not_panics() {
        let cases: [(&[u8], FramingError); 6] = [
            (&[0, 0, 0, 4], FramingError::TooShort(4)),
            (&[0, 0, 0, 0, 2, 0, 0, 0], FramingError::TooShort(0)),
            (
                &[0xff, 0xff, 0xff, 0xff],
                FramingError::TooLarge {
                    size: u32::MAX,
                    max: 512,
                },
            ),
            (&[0, 0, 0, 8, 1, 0, 0, 0], FramingError::DataOffset(1)),
            (&[0, 0, 0, 8, 3, 0, 0, 0], FramingError::DataOffset(3)),
            (&[0, 0, 0, 8, 2, 1, 0, 0], FramingError::Type(1)),
        ];
        for (bytes, expected) in cases {
            let mut received = BytesMut::from(bytes);
            assert_eq!(
                next_frame(&mut received, 512).err(),
                Some(expected),
                "{bytes:?}"
            );
        }
        for garbage in [
            &[0, 0, 0, 9, 2, 0, 0, 0, 0xff][..],
            &[0, 0, 0, 12, 2, 0, 0, 0, 0x00, 0x53, 0x13, 0xd0][..],
            &[
                0, 0, 0, 16, 2, 0, 0, 0, 0x00, 0x53, 0x14, 0xc0, 0xff, 0xff, 0xff, 0xff,
            ][..],
            &[0, 0, 0, 10, 2, 0, 0, 0, 0x00, 0xa3][..],
        ] {
            let mut received = BytesMut::from(garbage);
            assert!(
                matches!(next_frame(&mut received, 512), Err(FramingError::Body(_))),
                "{garbage:?}"
            );
        }
    }

    #[test]
    fn lengths_beyond_the_frame_and_deep_nesting_never_reach_fe2o3() {
        // An attach whose first field claims a 1.4 GB string; fe2o3 would allocate it.
        let huge: &[u8] = &[
            0, 0, 0, 20, 2, 0, 0, 0, 0x00, 0x53, 0x12, 0xc0, 7, 1, 0xb1, 0x53, 0x14, 0xc0, 0x0c, 0,
        ];
        assert!(matches!(
            next_frame(&mut BytesMut::from(huge), 512),
            Err(FramingError::Body(e)) if e.contains("truncated")
        ));
        // A flow whose properties nest lists 40 deep.
        let mut nested = vec![0, 0, 0, 0, 2, 0, 0, 0, 0x00, 0x53, 0x13];
        for _ in 0..40 {
            nested.extend_from_slice(&[0xc0, 0, 1]);
        }
        nested.push(0x40);
        let size = nested.len() as u32;
        nested[..4].copy_from_slice(&size.to_be_bytes());
        for i in 0..40 {
            // Each list's size byte: what follows it.
            let at = 11 + 3 * i + 1;
            nested[at] = (nested.len() - at - 1) as u8;
        }
        assert!(matches!(
            next_frame(&mut BytesMut::from(nested.as_slice()), 512),
            Err(FramingError::Body(e)) if e.contains("too deep")
        ));
    }

    #[test]
    fn arrays_are_checked_element_by_element() {
        // Described list (sasl-mechanisms) holding an array of two sym8 elements.
        let mut ok = vec![
            0x00, 0x53, 0x40, 0xc0, 12, 1, 0xe0, 9, 2, 0xa3, 2, b'a', b'b', 3,
        ];
        ok.extend_from_slice(b"xyz");
        ok[4] = (ok.len() - 5) as u8;
        ok[7] = (ok.len() - 8) as u8;
        assert_eq!(check_performative(&ok), Ok(()));
        // The same as array32 of sym32 elements.
        let mut wide = vec![
            0x00, 0x53, 0x40, 0xc0, 0, 1, 0xf0, 0, 0, 0, 0, 0, 0, 0, 2, 0xb3,
        ];
        wide.extend_from_slice(&[0, 0, 0, 2, b'a', b'b', 0, 0, 0, 1, b'x']);
        wide[4] = (wide.len() - 5) as u8;
        wide[10] = (wide.len() - 11) as u8;
        assert_eq!(check_performative(&wide), Ok(()));
        // An element whose length runs past the array.
        let mut bad = ok.clone();
        bad[13] = 200;
        assert!(check_performative(&bad).is_err());
    }

    #[test]
    fn incomplete_frames_wait_for_more_bytes() -> TestResult {
        for partial in [
            &[][..],
            &[0, 0],
            &[0, 0, 0, 8, 2],
            &[0, 0, 0, 9, 2, 0, 0, 0],
        ] {
            let mut received = BytesMut::from(partial);
            assert!(next_frame(&mut received, 512)?.is_none(), "{partial:?}");
            assert_eq!(received.len(), partial.len());
        }
        Ok(())
    }
}
