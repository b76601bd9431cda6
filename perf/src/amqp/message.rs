//! The message a simulated device sends: a properties section with the `to` address and the
//! content type, which is the same for every message of a device and so encoded once
//! ([`DeviceMessage`]), followed by one Data section with the payload. (Received messages are
//! read with `ferry_amqp_wire::message::scan`, which takes the body without decoding the rest.)

use fe2o3_amqp::types::messaging::Properties;
use fe2o3_amqp::types::primitives::Symbol;

/// Constructor of a described value.
const DESCRIBED: u8 = 0x00;
/// Descriptor code of a Data section.
const DATA_CODE: u8 = 0x75;
/// Binary with a one-byte and with a four-byte length.
const VBIN8: u8 = 0xa0;
const VBIN32: u8 = 0xb0;

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
        out.extend_from_slice(&[DESCRIBED, 0x53, DATA_CODE]);
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
    use fe2o3_amqp::types::messaging::Body;
    use fe2o3_amqp::types::messaging::message::DecodeIntoMessage;
    use fe2o3_amqp::types::primitives::Value;
    use ferry_amqp_wire::message::{self, Body as View};

    use super::fixtures::northbound_data;
    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    #[test]
    fn the_body_of_northbound_messages_is_read_in_place() -> TestResult {
        for size in [0, 24, 255, 256, 70_000] {
            let payload: Vec<u8> = (0..size).map(|i| i as u8).collect();
            let encoded = northbound_data(&payload);
            assert_eq!(
                message::scan(&encoded)?.body,
                View::Data(&payload),
                "size {size}"
            );
        }
        Ok(())
    }

    #[test]
    fn device_messages_decode_as_the_adapter_and_fe2o3_decode_them() -> TestResult {
        let template = DeviceMessage::new("telemetry")?;
        let mut out = Vec::new();
        for size in [24, 255, 256, 1000] {
            let payload = vec![b'x'; size];
            template.write(&payload, &mut out);
            let view = message::scan(&out)?;
            assert_eq!(view.to, Some("telemetry"));
            assert_eq!(view.content_type, Some("application/octet-stream"));
            assert_eq!(view.body, View::Data(&payload));
            let message = <Body<Value>>::decode_message_from_reader(
                serde_amqp::read::SliceReader::new(&out),
            )?;
            let properties = message.properties.ok_or("no properties")?;
            assert_eq!(properties.to.as_deref(), Some("telemetry"));
            assert!(matches!(message.body, Body::Data(ref d) if d.len() == 1 && d[0].0 == payload));
        }
        Ok(())
    }
}
