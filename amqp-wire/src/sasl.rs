//! SASL frames (AMQP 1.0 part 5.3) on a receive buffer and into an output buffer, for servers
//! that run the SASL layer themselves before the AMQP layer.
//!
//! A SASL frame is refused when its size is below 8 or above `max`, its data offset is not 2, its
//! type is not SASL, or its performative fails [`check_performative`] (fe2o3's SASL decoder reads
//! the frame header without length checks and trusts nested lengths, so it only ever gets a body
//! that was checked).

use bytes::{BufMut, BytesMut};
use fe2o3_amqp::frames::sasl::{Frame, FrameCodec};
use tokio_util::codec::{Decoder, Encoder};

use crate::frame::{FramingError, check_performative};

/// Frame type of SASL frames.
const TYPE_SASL: u8 = 1;
/// The smallest frame: size, data offset, type and two ignored bytes.
const MIN_FRAME: u32 = 8;

/// Cuts the next complete SASL frame off the front of `received` and decodes it; `Ok(None)` until
/// the frame is complete.
pub fn next_sasl_frame(received: &mut BytesMut, max: u32) -> Result<Option<Frame>, FramingError> {
    let Some(header) = received.get(..MIN_FRAME as usize) else {
        return Ok(None);
    };
    let size = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
    if size < MIN_FRAME {
        return Err(FramingError::TooShort(size));
    }
    if size > max {
        return Err(FramingError::TooLarge { size, max });
    }
    if header[4] != 2 {
        return Err(FramingError::DataOffset(header[4]));
    }
    if header[5] != TYPE_SASL {
        return Err(FramingError::Type(header[5]));
    }
    if received.len() < size as usize {
        return Ok(None);
    }
    let mut frame = received.split_to(size as usize);
    let _size = frame.split_to(4);
    check_performative(frame.get(4..).unwrap_or_default())?;
    match (FrameCodec {}).decode(&mut frame) {
        Ok(Some(frame)) => Ok(Some(frame)),
        Ok(None) => Err(FramingError::Body("incomplete".to_owned())),
        Err(e) => Err(FramingError::Body(e.to_string())),
    }
}

/// Appends one SASL frame to `out`.
pub fn encode_sasl(out: &mut BytesMut, frame: Frame) -> Result<(), FramingError> {
    let start = out.len();
    out.put_u32(0);
    if let Err(e) = (FrameCodec {}).encode(frame, out) {
        out.truncate(start);
        return Err(FramingError::Body(e.to_string()));
    }
    let size = u32::try_from(out.len() - start).unwrap_or(u32::MAX);
    out[start..start + 4].copy_from_slice(&size.to_be_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use fe2o3_amqp::types::primitives::{Array, Symbol};
    use fe2o3_amqp::types::sasl::{SaslCode, SaslMechanisms, SaslOutcome};

    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    #[test]
    fn sasl_frames_round_trip_in_any_chunks() -> TestResult {
        let mut wire = BytesMut::new();
        encode_sasl(
            &mut wire,
            Frame::Mechanisms(SaslMechanisms {
                sasl_server_mechanisms: Array::from(vec![Symbol::from("PLAIN")]),
            }),
        )?;
        encode_sasl(
            &mut wire,
            Frame::Outcome(SaslOutcome {
                code: SaslCode::Ok,
                additional_data: None,
            }),
        )?;
        let mut received = BytesMut::new();
        let mut frames = Vec::new();
        for byte in wire.iter() {
            received.put_u8(*byte);
            while let Some(frame) = next_sasl_frame(&mut received, 512)? {
                frames.push(frame);
            }
        }
        assert!(matches!(
            frames.as_slice(),
            [
                Frame::Mechanisms(_),
                Frame::Outcome(SaslOutcome {
                    code: SaslCode::Ok,
                    ..
                })
            ]
        ));
        Ok(())
    }

    #[test]
    fn bad_sasl_frames_are_errors() {
        for (bytes, expected) in [
            (&[0, 0, 0, 4, 2, 1, 0, 0][..], FramingError::TooShort(4)),
            (
                &[0, 0, 4, 0, 2, 1, 0, 0],
                FramingError::TooLarge {
                    size: 1024,
                    max: 512,
                },
            ),
            (&[0, 0, 0, 8, 3, 1, 0, 0], FramingError::DataOffset(3)),
            (&[0, 0, 0, 8, 2, 0, 0, 0], FramingError::Type(0)),
        ] {
            let mut received = BytesMut::from(bytes);
            assert_eq!(next_sasl_frame(&mut received, 512).err(), Some(expected));
        }
        let mut garbage = BytesMut::from(&[0, 0, 0, 10, 2, 1, 0, 0, 0xff, 0xff][..]);
        assert!(matches!(
            next_sasl_frame(&mut garbage, 512),
            Err(FramingError::Body(_))
        ));
    }
}
