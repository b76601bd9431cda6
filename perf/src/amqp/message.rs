//! The two message shapes the harness handles, without decoding whole messages.
//!
//! A transfer's payload is the message's sections one after the other (AMQP 1.0 §3.2), each a
//! described value. The consumer needs only the bytes of the Data sections (the harness's
//! timestamp header is at the front of the body, see [`crate::payload`]), so [`data`] walks the
//! sections by their constructors and skips everything else: every AMQP type's encoded size
//! follows from its constructor's subcategory (§1.2, the upper four bits), which is what lets a
//! reader step over values it does not understand. Nothing is copied for a message with one Data
//! section.
//!
//! A device's message is a properties section with the `to` address and the content type, which
//! is the same for every message of a device and so encoded once ([`DeviceMessage`]), followed by
//! one Data section with the payload.

use std::borrow::Cow;

use fe2o3_amqp::types::messaging::Properties;
use fe2o3_amqp::types::primitives::Symbol;

/// Constructor of a described value.
const DESCRIBED: u8 = 0x00;
/// Descriptor code of a Data section.
const DATA_CODE: u64 = 0x75;
/// Descriptor name of a Data section.
const DATA_NAME: &[u8] = b"amqp:data:binary";
/// Binary with a one-byte and with a four-byte length.
const VBIN8: u8 = 0xa0;
const VBIN32: u8 = 0xb0;
/// How deeply described values may nest inside a skipped value.
const MAX_DEPTH: u8 = 16;

/// Why a transfer's payload is not an AMQP message.
#[derive(Debug, Clone, Copy, thiserror::Error, PartialEq, Eq)]
pub enum MessageError {
    /// A section or value runs beyond the payload.
    #[error("a section is cut short")]
    Truncated,
    /// A section is not a described value.
    #[error("byte {0:#04x} where a section starts")]
    NotASection(u8),
    /// A descriptor is neither a code nor a symbol.
    #[error("descriptor constructor {0:#04x}")]
    Descriptor(u8),
    /// A Data section whose value is not binary.
    #[error("data section with constructor {0:#04x}")]
    DataNotBinary(u8),
    /// A constructor no AMQP type has.
    #[error("constructor {0:#04x}")]
    Constructor(u8),
    /// Described values nested too deeply.
    #[error("values nested too deeply")]
    TooDeep,
}

/// The body of `message` (a transfer's payload, all frames joined): the Data sections' bytes
/// joined (borrowed when there is one), empty when the body is not Data.
pub fn data(message: &[u8]) -> Result<Cow<'_, [u8]>, MessageError> {
    let mut cursor = Cursor { bytes: message };
    let mut found: Option<Cow<'_, [u8]>> = None;
    while !cursor.bytes.is_empty() {
        let constructor = cursor.byte()?;
        if constructor != DESCRIBED {
            return Err(MessageError::NotASection(constructor));
        }
        if !cursor.descriptor_is_data()? {
            cursor.skip_value(0)?;
            continue;
        }
        let bytes = match cursor.byte()? {
            VBIN8 => {
                let len = cursor.byte()?;
                cursor.take(usize::from(len))?
            }
            VBIN32 => {
                let len = cursor.u32()?;
                cursor.take(len as usize)?
            }
            other => return Err(MessageError::DataNotBinary(other)),
        };
        found = Some(match found {
            None => Cow::Borrowed(bytes),
            Some(before) => {
                let mut joined = before.into_owned();
                joined.extend_from_slice(bytes);
                Cow::Owned(joined)
            }
        });
    }
    Ok(found.unwrap_or(Cow::Borrowed(&[])))
}

/// Reads AMQP encodings off the front of a byte slice.
struct Cursor<'a> {
    bytes: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], MessageError> {
        if n > self.bytes.len() {
            return Err(MessageError::Truncated);
        }
        let (taken, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(taken)
    }

    fn byte(&mut self) -> Result<u8, MessageError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, MessageError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// Reads a section's descriptor: whether it names a Data section.
    fn descriptor_is_data(&mut self) -> Result<bool, MessageError> {
        match self.byte()? {
            // smallulong, ulong, ulong0
            0x53 => Ok(u64::from(self.byte()?) == DATA_CODE),
            0x80 => {
                let b = self.take(8)?;
                let code = u64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
                Ok(code == DATA_CODE)
            }
            0x44 => Ok(false),
            // sym8, sym32
            0xa3 => {
                let len = self.byte()?;
                Ok(self.take(usize::from(len))? == DATA_NAME)
            }
            0xb3 => {
                let len = self.u32()?;
                Ok(self.take(len as usize)? == DATA_NAME)
            }
            other => Err(MessageError::Descriptor(other)),
        }
    }

    /// Steps over one value of any type.
    fn skip_value(&mut self, depth: u8) -> Result<(), MessageError> {
        let constructor = self.byte()?;
        if constructor == DESCRIBED {
            if depth >= MAX_DEPTH {
                return Err(MessageError::TooDeep);
            }
            self.skip_value(depth + 1)?;
            return self.skip_value(depth + 1);
        }
        let len = match constructor >> 4 {
            0x4 => 0,
            0x5 => 1,
            0x6 => 2,
            0x7 => 4,
            0x8 => 8,
            0x9 => 16,
            // variable width, compound and array with a one-byte size
            0xa | 0xc | 0xe => usize::from(self.byte()?),
            // ... and with a four-byte size
            0xb | 0xd | 0xf => self.u32()? as usize,
            _ => return Err(MessageError::Constructor(constructor)),
        };
        self.take(len).map(|_| ())
    }
}

/// What every message of one device carries besides its payload, encoded once.
#[derive(Clone, Debug)]
pub struct DeviceMessage {
    /// The properties section.
    properties: Vec<u8>,
}

impl DeviceMessage {
    /// Messages to `to` (`telemetry`, `event`) with content type `application/octet-stream`.
    pub fn new(to: &str) -> Result<Self, serde_amqp::Error> {
        let properties = Properties {
            to: Some(to.to_owned()),
            content_type: Some(Symbol::from("application/octet-stream")),
            ..Properties::default()
        };
        Ok(Self {
            properties: serde_amqp::to_vec(&properties)?,
        })
    }

    /// Writes the message carrying `payload` into `out` (cleared first).
    pub fn write(&self, payload: &[u8], out: &mut Vec<u8>) {
        out.clear();
        out.extend_from_slice(&self.properties);
        out.extend_from_slice(&[DESCRIBED, 0x53, DATA_CODE as u8]);
        match u8::try_from(payload.len()) {
            Ok(len) => out.extend_from_slice(&[VBIN8, len]),
            Err(_) => {
                out.push(VBIN32);
                let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
                out.extend_from_slice(&len.to_be_bytes());
            }
        }
        out.extend_from_slice(payload);
    }
}

/// Messages encoded by fe2o3-amqp, as real peers send them.
#[cfg(test)]
pub(crate) mod fixtures {
    use fe2o3_amqp::types::messaging::message::__private::Serializable;
    use fe2o3_amqp::types::messaging::{
        ApplicationProperties, Data, Header, Message, MessageAnnotations, Properties,
        SerializableBody,
    };
    use fe2o3_amqp::types::primitives::{Binary, OrderedMap, SimpleValue, Value};

    /// `message` encoded as fe2o3-amqp's sender does.
    pub(crate) fn encode<B: SerializableBody>(message: Message<B>) -> Vec<u8> {
        serde_amqp::to_vec(&Serializable(message)).unwrap_or_default()
    }

    /// A message with every section Ferry's northbound fills (hono-api.md §11), `body` as body.
    pub(crate) fn northbound<B>(body: B) -> Message<B> {
        let mut app = OrderedMap::new();
        app.insert(
            "device_id".to_owned(),
            SimpleValue::String("perf-00001".to_owned()),
        );
        app.insert("qos".to_owned(), SimpleValue::Int(1));
        app.insert("big".to_owned(), SimpleValue::String("v".repeat(300)));
        let mut annotations = OrderedMap::new();
        annotations.insert("x-opt-retain".into(), Value::Bool(true));
        Message {
            header: Some(Header {
                durable: true,
                ttl: Some(60_000),
                ..Header::default()
            }),
            delivery_annotations: None,
            message_annotations: Some(MessageAnnotations(annotations)),
            properties: Some(Properties {
                to: Some("telemetry/t/perf-00001".to_owned()),
                content_type: Some("application/octet-stream".into()),
                ..Properties::default()
            }),
            application_properties: Some(ApplicationProperties(app)),
            body,
            footer: None,
        }
    }

    /// A northbound message with one Data section holding `payload`.
    pub(crate) fn northbound_data(payload: &[u8]) -> Vec<u8> {
        encode(northbound(Data(Binary::from(payload.to_vec()))))
    }
}

#[cfg(test)]
mod tests {
    use fe2o3_amqp::types::messaging::message::DecodeIntoMessage;
    use fe2o3_amqp::types::messaging::{AmqpValue, Batch, Body, Data, Message};
    use fe2o3_amqp::types::primitives::{Binary, Value};

    use super::fixtures::{encode, northbound, northbound_data};
    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    #[test]
    fn the_body_of_real_messages_is_found_without_a_copy() -> TestResult {
        for size in [0, 24, 255, 256, 70_000] {
            let payload: Vec<u8> = (0..size).map(|i| i as u8).collect();
            let encoded = northbound_data(&payload);
            let body = data(&encoded)?;
            assert!(matches!(body, Cow::Borrowed(_)), "size {size}");
            assert_eq!(&body[..], &payload[..], "size {size}");
        }
        // Just a body, and a message with a symbolic descriptor on its Data section.
        let bare = encode(
            Message::builder()
                .data(Binary::from(b"abc".to_vec()))
                .build(),
        );
        assert_eq!(&data(&bare)?[..], b"abc");
        let mut symbolic = vec![0x00, 0xa3, 16];
        symbolic.extend_from_slice(DATA_NAME);
        symbolic.extend_from_slice(&[VBIN8, 2, b'h', b'i']);
        assert_eq!(&data(&symbolic)?[..], b"hi");
        Ok(())
    }

    #[test]
    fn several_data_sections_are_joined_and_other_bodies_are_empty() -> TestResult {
        let batch = Batch::new(vec![
            Data(Binary::from(b"one-".to_vec())),
            Data(Binary::from(b"two".to_vec())),
        ]);
        let encoded = encode(northbound(batch));
        assert_eq!(&data(&encoded)?[..], b"one-two");

        let value = encode(northbound(AmqpValue(Value::String("text".to_owned()))));
        assert!(data(&value)?.is_empty());
        Ok(())
    }

    #[test]
    fn broken_messages_are_errors_not_panics() {
        let good = northbound_data(b"0123456789");
        // Cut anywhere: no panic; cut inside the last section (the Data section, 15 bytes): an
        // error (a cut between sections is a shorter message).
        for cut in 1..good.len() {
            let outcome = data(&good[..cut]);
            assert!(cut <= good.len() - 15 || outcome.is_err(), "cut at {cut}");
        }
        let nested = [DESCRIBED; 40];
        let cases: [(&[u8], MessageError); 5] = [
            (&[0x53], MessageError::NotASection(0x53)),
            (&[0x00, 0x71], MessageError::Descriptor(0x71)),
            (&[0x00, 0x53, 0x75, 0x41], MessageError::DataNotBinary(0x41)),
            (&[0x00, 0x53, 0x70, 0x20], MessageError::Constructor(0x20)),
            (
                &[0x00, 0x53, 0x70, 0xd0, 0xff, 0xff, 0xff, 0xff],
                MessageError::Truncated,
            ),
        ];
        for (bytes, expected) in cases {
            assert_eq!(data(bytes).err(), Some(expected), "{bytes:?}");
        }
        let mut deep = vec![0x00, 0x53, 0x70];
        deep.extend_from_slice(&nested);
        assert_eq!(data(&deep).err(), Some(MessageError::TooDeep));
    }

    #[test]
    fn device_messages_decode_as_the_adapter_decodes_them() -> TestResult {
        let template = DeviceMessage::new("telemetry")?;
        let mut out = Vec::new();
        for size in [24, 255, 256, 1000] {
            let payload = vec![b'x'; size];
            template.write(&payload, &mut out);
            let message = <Body<Value>>::decode_message_from_reader(
                serde_amqp::read::SliceReader::new(&out),
            )?;
            let properties = message.properties.ok_or("no properties")?;
            assert_eq!(properties.to.as_deref(), Some("telemetry"));
            assert_eq!(
                properties.content_type.map(|c| c.0).as_deref(),
                Some("application/octet-stream")
            );
            assert!(matches!(message.body, Body::Data(ref d) if d.len() == 1 && d[0].0 == payload));
            assert_eq!(&data(&out)?[..], &payload[..]);
        }
        Ok(())
    }
}
