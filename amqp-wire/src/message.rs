//! Reading the few fields Ferry needs from an encoded AMQP 1.0 message without decoding all of it
//! (part 3.2 of the specification).
//!
//! A message is a sequence of described sections (header, delivery and message annotations,
//! properties, application properties, body, footer). [`scan`] walks them once, checking every
//! length against the bytes it has, and borrows what it finds: the header's `ttl`, the
//! properties' `to` and `content-type`, the application properties and the body. Sections Ferry
//! does not read are skipped by their encoded size, never decoded. Malformed input (a length
//! beyond the end, an unknown constructor, a section out of place) is an error, never a panic.

use crate::codec::{Fields, Reader, binary, string, symbol, uint};

/// Why bytes are not a message [`scan`] can read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MessageError {
    /// The bytes end inside a value.
    #[error("message truncated")]
    Truncated,
    /// A format code that AMQP 1.0 does not define.
    #[error("unknown format code 0x{0:02x}")]
    FormatCode(u8),
    /// A value of an unexpected type where the message format requires another.
    #[error("unexpected {0}")]
    Unexpected(&'static str),
    /// A string that is not UTF-8.
    #[error("string is not UTF-8")]
    Utf8,
}

/// The body of a message, borrowed from its bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Body<'a> {
    /// No body section, or an `amqp-value` holding null (what fe2o3 sends for an empty body).
    Empty,
    /// Exactly one `data` section.
    Data(&'a [u8]),
    /// More than one `data` section.
    DataSections,
    /// An `amqp-value` holding a string.
    String(&'a str),
    /// An `amqp-value` holding binary.
    Binary(&'a [u8]),
    /// An `amqp-value` holding anything else.
    OtherValue,
    /// One or more `amqp-sequence` sections.
    Sequence,
}

/// What [`scan`] found in a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MessageView<'a> {
    /// The header's `ttl` in milliseconds.
    pub ttl: Option<u32>,
    /// The properties' `to`.
    pub to: Option<&'a str>,
    /// The properties' `content-type`.
    pub content_type: Option<&'a str>,
    /// The application properties map, encoded (its constructor included).
    pub application_properties: Option<&'a [u8]>,
    /// The body.
    pub body: Body<'a>,
}

/// Section descriptor codes (the `amqp:*:list`/`map`/`binary` descriptors' numeric form).
mod code {
    pub(super) const HEADER: u64 = 0x70;
    pub(super) const DELIVERY_ANNOTATIONS: u64 = 0x71;
    pub(super) const MESSAGE_ANNOTATIONS: u64 = 0x72;
    pub(super) const PROPERTIES: u64 = 0x73;
    pub(super) const APPLICATION_PROPERTIES: u64 = 0x74;
    pub(super) const DATA: u64 = 0x75;
    pub(super) const SEQUENCE: u64 = 0x76;
    pub(super) const VALUE: u64 = 0x77;
    pub(super) const FOOTER: u64 = 0x78;
}

/// The symbolic descriptors of the sections, in the order of their codes from 0x70.
const SECTION_NAMES: [&[u8]; 9] = [
    b"amqp:header:list",
    b"amqp:delivery-annotations:map",
    b"amqp:message-annotations:map",
    b"amqp:properties:list",
    b"amqp:application-properties:map",
    b"amqp:data:binary",
    b"amqp:amqp-sequence:list",
    b"amqp:amqp-value:*",
    b"amqp:footer:map",
];

/// Reads `message`, an encoded AMQP 1.0 message (the payload of its transfers, concatenated).
pub fn scan(message: &[u8]) -> Result<MessageView<'_>, MessageError> {
    walk(message, true)
}

/// Reads only the body of `message`: like [`scan`], with the header, properties and
/// application properties skipped by their size instead of read (a consumer that wants the
/// payload alone).
pub fn body(message: &[u8]) -> Result<Body<'_>, MessageError> {
    walk(message, false).map(|view| view.body)
}

/// Walks the sections of `message`; reads the header and properties only when `all`.
fn walk(message: &[u8], all: bool) -> Result<MessageView<'_>, MessageError> {
    let mut view = MessageView {
        ttl: None,
        to: None,
        content_type: None,
        application_properties: None,
        body: Body::Empty,
    };
    let mut reader = Reader(message);
    while !reader.0.is_empty() {
        if reader.byte()? != 0x00 {
            return Err(MessageError::Unexpected("value where a section belongs"));
        }
        let section = section_code(&mut reader)?;
        let value = reader.value()?;
        match section {
            code::HEADER | code::PROPERTIES | code::APPLICATION_PROPERTIES if !all => {}
            code::HEADER => view.ttl = header_ttl(value)?,
            code::PROPERTIES => (view.to, view.content_type) = properties(value)?,
            code::APPLICATION_PROPERTIES => {
                if !matches!(value.first(), Some(0x40 | 0xc1 | 0xd1)) {
                    return Err(MessageError::Unexpected("application-properties not a map"));
                }
                view.application_properties = Some(value);
            }
            code::DATA => {
                let data = binary(value)?.ok_or(MessageError::Unexpected("data not binary"))?;
                view.body = match view.body {
                    Body::Empty => Body::Data(data),
                    Body::Data(_) | Body::DataSections => Body::DataSections,
                    _ => return Err(MessageError::Unexpected("second kind of body")),
                };
            }
            code::VALUE => {
                if view.body != Body::Empty {
                    return Err(MessageError::Unexpected("second body"));
                }
                view.body = match (string(value), binary(value)) {
                    _ if value == [0x40] => Body::Empty,
                    (Ok(Some(s)), _) => Body::String(s),
                    (_, Ok(Some(b))) => Body::Binary(b),
                    _ => Body::OtherValue,
                }
            }
            code::SEQUENCE => {
                if !matches!(view.body, Body::Empty | Body::Sequence) {
                    return Err(MessageError::Unexpected("second kind of body"));
                }
                view.body = Body::Sequence;
            }
            code::DELIVERY_ANNOTATIONS | code::MESSAGE_ANNOTATIONS | code::FOOTER => {}
            _ => return Err(MessageError::Unexpected("section descriptor")),
        }
    }
    Ok(view)
}

/// The header's third field, `ttl`.
fn header_ttl(list: &[u8]) -> Result<Option<u32>, MessageError> {
    let Some(ttl) = Fields::of(list)?.nth(2)? else {
        return Ok(None);
    };
    uint(ttl)
}

/// A section descriptor: a numeric code (`smallulong` or `ulong`) or its symbolic name.
fn section_code(reader: &mut Reader<'_>) -> Result<u64, MessageError> {
    let value = reader.value()?;
    match value {
        [0x53, code] => Ok(u64::from(*code)),
        [0x80, code @ ..] => code
            .try_into()
            .map(u64::from_be_bytes)
            .map_err(|_| MessageError::Truncated),
        _ => {
            let name = symbol(value)?.ok_or(MessageError::Unexpected("null descriptor"))?;
            SECTION_NAMES
                .iter()
                .position(|n| *n == name.as_bytes())
                .map(|i| code::HEADER + i as u64)
                .ok_or(MessageError::Unexpected("section descriptor"))
        }
    }
}

/// The properties' `to` (third field) and `content-type` (seventh).
fn properties(list: &[u8]) -> Result<(Option<&str>, Option<&str>), MessageError> {
    let mut fields = Fields::of(list)?;
    let to = fields.nth(2)?.map(string).transpose()?.flatten();
    let content_type = fields.nth(3)?.map(symbol).transpose()?.flatten();
    Ok((to, content_type))
}

#[cfg(test)]
mod tests {
    use fe2o3_amqp::types::messaging::{
        AmqpValue, ApplicationProperties, Body as Fe2o3Body, Data, Header, Message,
        MessageAnnotations, Properties,
    };
    use fe2o3_amqp::types::primitives::{Binary, Symbol, Value};
    use serde_amqp::to_vec;

    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn encode(message: Message<Fe2o3Body<Value>>) -> Result<Vec<u8>, serde_amqp::Error> {
        to_vec(&fe2o3_amqp::types::messaging::message::__private::Serializable(message))
    }

    fn full_message(body: Fe2o3Body<Value>) -> Message<Fe2o3Body<Value>> {
        Message {
            header: Some(Header {
                durable: true,
                priority: 4.into(),
                ttl: Some(70_000),
                first_acquirer: false,
                delivery_count: 0,
            }),
            delivery_annotations: None,
            message_annotations: Some(
                MessageAnnotations::builder()
                    .insert("x-opt-a", Value::String("a".repeat(300)))
                    .build(),
            ),
            properties: Some(Properties {
                message_id: Some(String::from("m-1").into()),
                to: Some("t/DEFAULT_TENANT/4711".into()),
                content_type: Some(Symbol::from("application/json")),
                ..Default::default()
            }),
            application_properties: Some(
                ApplicationProperties::builder()
                    .insert("device_id", "4711")
                    .build(),
            ),
            body,
            footer: None,
        }
    }

    #[test]
    fn reads_header_properties_and_a_data_body_of_an_fe2o3_message() -> TestResult {
        let payload = vec![7u8; 300];
        let bytes = encode(full_message(Fe2o3Body::Data(
            vec![Data(Binary::from(payload.clone()))].into(),
        )))?;
        let view = scan(&bytes)?;
        assert_eq!(body(&bytes)?, Body::Data(&payload));
        assert_eq!(view.ttl, Some(70_000));
        assert_eq!(view.to, Some("t/DEFAULT_TENANT/4711"));
        assert_eq!(view.content_type, Some("application/json"));
        assert_eq!(view.body, Body::Data(&payload));
        assert!(view.application_properties.is_some());
        Ok(())
    }

    #[test]
    fn reads_value_bodies_and_counts_data_sections() -> TestResult {
        let string = encode(full_message(Fe2o3Body::Value(AmqpValue(Value::String(
            "hi".into(),
        )))))?;
        assert_eq!(scan(&string)?.body, Body::String("hi"));
        let binary = encode(full_message(Fe2o3Body::Value(AmqpValue(Value::Binary(
            Binary::from(vec![1, 2]),
        )))))?;
        assert_eq!(scan(&binary)?.body, Body::Binary(&[1, 2]));
        let number = encode(full_message(Fe2o3Body::Value(AmqpValue(Value::Int(5)))))?;
        assert_eq!(scan(&number)?.body, Body::OtherValue);
        let two = encode(full_message(Fe2o3Body::Data(
            vec![Data(Binary::from(vec![1])), Data(Binary::from(vec![2]))].into(),
        )))?;
        assert_eq!(scan(&two)?.body, Body::DataSections);
        for message in [&string, &binary, &number, &two] {
            assert_eq!(body(message)?, scan(message)?.body);
        }
        Ok(())
    }

    #[test]
    fn a_bare_message_has_no_fields() -> TestResult {
        let bytes = encode(Message::builder().body(Fe2o3Body::Empty).build())?;
        let view = scan(&bytes)?;
        assert_eq!(
            view,
            MessageView {
                ttl: None,
                to: None,
                content_type: None,
                application_properties: None,
                body: Body::Empty,
            }
        );
        Ok(())
    }

    #[test]
    fn symbolic_descriptors_and_long_encodings_are_read() -> TestResult {
        // properties as list32 under the symbolic descriptor, to as str32, then data as vbin32.
        let mut bytes = vec![0x00, 0xa3, 20];
        bytes.extend_from_slice(b"amqp:properties:list");
        let to = b"telemetry";
        let body_len = 4 + 1 + 1 + 1 + 4 + to.len();
        bytes.push(0xd0);
        bytes.extend_from_slice(&(body_len as u32).to_be_bytes());
        bytes.extend_from_slice(&3u32.to_be_bytes());
        bytes.extend_from_slice(&[0x40, 0x40, 0xb1]);
        bytes.extend_from_slice(&(to.len() as u32).to_be_bytes());
        bytes.extend_from_slice(to);
        bytes.extend_from_slice(&[
            0x00, 0x80, 0, 0, 0, 0, 0, 0, 0, 0x75, 0xb0, 0, 0, 0, 2, 9, 9,
        ]);
        let view = scan(&bytes)?;
        assert_eq!(view.to, Some("telemetry"));
        assert_eq!(view.body, Body::Data(&[9, 9]));
        Ok(())
    }

    #[test]
    fn malformed_messages_are_errors_not_panics() -> TestResult {
        let good = encode(full_message(Fe2o3Body::Data(
            vec![Data(Binary::from(vec![1u8; 40]))].into(),
        )))?;
        // Every truncation of a valid message is refused or reads as a shorter message.
        for end in 0..good.len() {
            let _ = scan(&good[..end]);
        }
        let cases: [(&[u8], MessageError); 5] = [
            (
                &[0x53],
                MessageError::Unexpected("value where a section belongs"),
            ),
            (&[0x00, 0x53], MessageError::Truncated),
            (&[0x00, 0x53, 0x75, 0xa0, 9, 1], MessageError::Truncated),
            (&[0x00, 0x53, 0x73, 0xff], MessageError::FormatCode(0xff)),
            (
                &[0x00, 0x53, 0x99, 0x40],
                MessageError::Unexpected("section descriptor"),
            ),
        ];
        for (bytes, expected) in cases {
            assert_eq!(scan(bytes), Err(expected), "{bytes:?}");
        }
        // A chain of descriptors as long as a message: refused, not followed down the stack.
        assert_eq!(
            scan(&[0u8; 100_000]),
            Err(MessageError::Unexpected("values nested too deep"))
        );
        assert_eq!(
            scan(&[0x00, 0x53, 0x73, 0xc0, 4, 3, 0x40, 0x40, 0x53]),
            Err(MessageError::Truncated)
        );
        assert_eq!(
            scan(&[0x00, 0x53, 0x73, 0xc0, 6, 3, 0x40, 0x40, 0xa1, 0x01, 0xff]),
            Err(MessageError::Utf8)
        );
        Ok(())
    }
}
