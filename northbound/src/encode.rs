//! Turns a [`DownstreamMessage`] into the AMQP 1.0 message Hono's consumers expect (hono-api.md
//! §11), written straight into a connection's output buffer:
//!
//! * header: `durable` for events, `ttl` when given;
//! * message annotation `x-opt-retain` when the device set MQTT's retain flag;
//! * properties: `message-id`, `to` = `ENDPOINT/TENANT/DEVICE`, `content-type`, `creation-time`;
//! * application properties: `device_id`, `tenant_id`, `orig_adapter`, `orig_address`, `qos`,
//!   `ttd` (when given), then every entry of `properties` (an entry named like one of these
//!   replaces its value in place);
//! * body: exactly one Data section.
//!
//! The encoder is hand-written (AMQP 1.0 part 1 types, part 3.2 sections) and writes the same
//! bytes fe2o3-amqp's serde encoding of the equivalent `Message<Data>` does (smallest constructor
//! of every value, trailing default fields left out); the tests check this byte for byte and by
//! decoding with fe2o3. [`encoded_len_bound`] tells an upper bound of the size beforehand, so the
//! output buffer grows at most once per message.

use bytes::{BufMut, BytesMut};
use ferry_adapter_core::{DownstreamMessage, Endpoint};

/// Annotation carrying MQTT's retain flag.
pub const RETAIN_ANNOTATION: &str = "x-opt-retain";

/// Section descriptors (AMQP 1.0 §3.2).
const HEADER: u8 = 0x70;
const MESSAGE_ANNOTATIONS: u8 = 0x72;
const PROPERTIES: u8 = 0x73;
const APPLICATION_PROPERTIES: u8 = 0x74;
const DATA: u8 = 0x75;

/// Room a compound's header takes while its size is unknown (list32/map32 constructor, size,
/// count); a small compound gives back six of these bytes.
const COMPOUND_HEADER: usize = 9;
/// What a value may take besides its bytes (constructor, 32-bit length).
const VALUE_OVERHEAD: usize = 5;
/// Fixed part of a message: descriptors, compound headers, numbers and short values.
const FIXED_OVERHEAD: usize = 160;

/// Appends the encoding of `message` with the given unique `message_id` to `out`.
pub(crate) fn encode(out: &mut BytesMut, message: &DownstreamMessage, message_id: &str) {
    out.reserve(encoded_len_bound(message, message_id));
    header(out, message);
    if message.retain {
        descriptor(out, MESSAGE_ANNOTATIONS);
        let map = begin(out);
        symbol(out, RETAIN_ANNOTATION);
        boolean(out, true);
        end(out, map, 2, Compound::Map);
    }
    properties(out, message, message_id);
    application_properties(out, message);
    descriptor(out, DATA);
    binary(out, &message.payload);
}

/// An upper bound of what [`encode`] appends for `message`.
pub(crate) fn encoded_len_bound(message: &DownstreamMessage, message_id: &str) -> usize {
    let strings = [
        message_id.len(),
        message.content_type.len(),
        // `to`, `device_id`, `tenant_id`
        message.endpoint.as_str().len() + 2 * message.tenant_id.as_str().len() + 2,
        2 * message.device_id.as_str().len(),
        message.orig_adapter.len(),
        message.orig_address.len(),
        message.payload.len(),
    ];
    let properties: usize = message
        .properties
        .iter()
        .map(|(key, value)| key.len() + json_len_bound(value) + 2 * VALUE_OVERHEAD)
        .sum();
    FIXED_OVERHEAD + strings.iter().map(|n| n + VALUE_OVERHEAD).sum::<usize>() + properties
}

fn json_len_bound(value: &serde_json::Value) -> usize {
    match value {
        serde_json::Value::String(s) => s.len(),
        serde_json::Value::Array(_) | serde_json::Value::Object(_) => value.to_string().len(),
        // Numbers take at most 8 bytes, or their text when no AMQP number holds them.
        serde_json::Value::Number(n) => n.to_string().len().max(8),
        serde_json::Value::Null | serde_json::Value::Bool(_) => 1,
    }
}

fn header(out: &mut BytesMut, message: &DownstreamMessage) {
    descriptor(out, HEADER);
    let list = begin(out);
    let durable = message.endpoint == Endpoint::Event;
    let count = match message.ttl_ms {
        Some(ttl) => {
            boolean_or_null(out, durable);
            // priority: the default
            null(out);
            uint(out, u32::try_from(ttl).unwrap_or(u32::MAX));
            3
        }
        None if durable => {
            boolean(out, true);
            1
        }
        None => 0,
    };
    end(out, list, count, Compound::List);
}

fn properties(out: &mut BytesMut, message: &DownstreamMessage, message_id: &str) {
    descriptor(out, PROPERTIES);
    let list = begin(out);
    string(out, message_id);
    // user-id
    null(out);
    let to = [
        message.endpoint.as_str(),
        "/",
        message.tenant_id.as_str(),
        "/",
        message.device_id.as_str(),
    ];
    strings(out, &to);
    // subject, reply-to, correlation-id
    out.put_slice(&[NULL; 3]);
    symbol(out, &message.content_type);
    // content-encoding, absolute-expiry-time
    out.put_slice(&[NULL; 2]);
    timestamp(out, message.creation_time);
    end(out, list, 10, Compound::List);
}

/// The application properties Ferry sets itself, in order.
const FIXED_KEYS: [&str; 6] = [
    "device_id",
    "tenant_id",
    "orig_adapter",
    "orig_address",
    "qos",
    "ttd",
];

/// [`FIXED_KEYS`] encoded (str8: constructor, length, UTF-8), written as they are.
const FIXED_KEYS_ENCODED: [&[u8]; 6] = [
    b"\xa1\x09device_id",
    b"\xa1\x09tenant_id",
    b"\xa1\x0corig_adapter",
    b"\xa1\x0corig_address",
    b"\xa1\x03qos",
    b"\xa1\x03ttd",
];

fn application_properties(out: &mut BytesMut, message: &DownstreamMessage) {
    descriptor(out, APPLICATION_PROPERTIES);
    let map = begin(out);
    let fixed = if message.ttd.is_some() { 6 } else { 5 };
    let mut entries = 0;
    for (index, key) in FIXED_KEYS[..fixed].iter().enumerate() {
        out.put_slice(FIXED_KEYS_ENCODED[index]);
        match message.properties.get(*key) {
            Some(value) => json(out, value),
            None => match index {
                0 => string(out, message.device_id.as_str()),
                1 => string(out, message.tenant_id.as_str()),
                2 => string(out, &message.orig_adapter),
                3 => string(out, &message.orig_address),
                4 => int(out, i32::from(message.qos.as_u8())),
                _ => int(out, message.ttd.unwrap_or_default()),
            },
        }
        entries += 1;
    }
    for (key, value) in &message.properties {
        if FIXED_KEYS[..fixed].contains(&key.as_str()) {
            continue;
        }
        string(out, key);
        json(out, value);
        entries += 1;
    }
    end(out, map, 2 * entries, Compound::Map);
}

/// JSON strings become AMQP strings, integers longs (ulongs beyond), other numbers doubles,
/// booleans booleans; arrays and objects are carried as their JSON text.
fn json(out: &mut BytesMut, value: &serde_json::Value) {
    use serde_json::Value as J;
    match value {
        J::Null => null(out),
        J::Bool(b) => boolean(out, *b),
        J::String(s) => string(out, s),
        J::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => long(out, i),
            (None, Some(u), _) => ulong(out, u),
            (_, _, Some(f)) => {
                out.put_u8(0x82);
                out.put_f64(f);
            }
            _ => string(out, &n.to_string()),
        },
        J::Array(_) | J::Object(_) => string(out, &value.to_string()),
    }
}

fn descriptor(out: &mut BytesMut, code: u8) {
    out.put_slice(&[0x00, 0x53, code]);
}

/// The null constructor.
const NULL: u8 = 0x40;

fn null(out: &mut BytesMut) {
    out.put_u8(NULL);
}

fn boolean(out: &mut BytesMut, value: bool) {
    out.put_u8(if value { 0x41 } else { 0x42 });
}

/// A boolean field whose default is `false`: the default is written as null.
fn boolean_or_null(out: &mut BytesMut, value: bool) {
    if value { boolean(out, true) } else { null(out) }
}

/// An AMQP uint in its smallest form.
pub(crate) fn uint(out: &mut BytesMut, value: u32) {
    match value {
        0 => out.put_u8(0x43),
        1..=255 => out.put_slice(&[0x52, value as u8]),
        _ => {
            out.put_u8(0x70);
            out.put_u32(value);
        }
    }
}

fn ulong(out: &mut BytesMut, value: u64) {
    match value {
        0 => out.put_u8(0x44),
        1..=255 => out.put_slice(&[0x53, value as u8]),
        _ => {
            out.put_u8(0x80);
            out.put_u64(value);
        }
    }
}

fn int(out: &mut BytesMut, value: i32) {
    match i8::try_from(value) {
        Ok(small) => out.put_slice(&[0x54, small as u8]),
        Err(_) => {
            out.put_u8(0x71);
            out.put_i32(value);
        }
    }
}

fn long(out: &mut BytesMut, value: i64) {
    match i8::try_from(value) {
        Ok(small) => out.put_slice(&[0x55, small as u8]),
        Err(_) => {
            out.put_u8(0x81);
            out.put_i64(value);
        }
    }
}

fn timestamp(out: &mut BytesMut, millis: i64) {
    out.put_u8(0x83);
    out.put_i64(millis);
}

/// A variable-width value: `small` with a one-byte length up to 255 bytes, `large` beyond.
#[inline]
fn variable(out: &mut BytesMut, small: u8, large: u8, len: usize) {
    match u8::try_from(len) {
        Ok(len) => out.put_slice(&[small, len]),
        Err(_) => {
            out.put_u8(large);
            out.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
        }
    }
}

fn string(out: &mut BytesMut, value: &str) {
    variable(out, 0xa1, 0xb1, value.len());
    out.put_slice(value.as_bytes());
}

/// One string made of `parts`.
fn strings(out: &mut BytesMut, parts: &[&str]) {
    variable(out, 0xa1, 0xb1, parts.iter().map(|p| p.len()).sum());
    for part in parts {
        out.put_slice(part.as_bytes());
    }
}

fn symbol(out: &mut BytesMut, value: &str) {
    variable(out, 0xa3, 0xb3, value.len());
    out.put_slice(value.as_bytes());
}

fn binary(out: &mut BytesMut, value: &[u8]) {
    variable(out, 0xa0, 0xb0, value.len());
    out.put_slice(value);
}

/// Lists and maps: both are written as a size, a count and the elements (a map's count counts
/// keys and values).
#[derive(Clone, Copy)]
enum Compound {
    List,
    Map,
}

/// Starts a compound whose elements follow; returns where it starts.
fn begin(out: &mut BytesMut) -> usize {
    let start = out.len();
    out.put_bytes(0, COMPOUND_HEADER);
    start
}

/// Writes the header of the compound started at `start` with `count` elements: the empty list,
/// the 8-bit form when it fits, else the 32-bit form.
fn end(out: &mut BytesMut, start: usize, count: usize, kind: Compound) {
    let body = out.len() - start - COMPOUND_HEADER;
    let (small, large) = match kind {
        Compound::List => (0xc0, 0xd0),
        Compound::Map => (0xc1, 0xd1),
    };
    if count == 0 && matches!(kind, Compound::List) {
        out[start] = 0x45;
        out.truncate(start + 1);
        return;
    }
    if let (Ok(size), Ok(count)) = (u8::try_from(body + 1), u8::try_from(count)) {
        out[start..start + 3].copy_from_slice(&[small, size, count]);
        out.copy_within(start + COMPOUND_HEADER.., start + 3);
        out.truncate(out.len() - (COMPOUND_HEADER - 3));
    } else {
        let size = u32::try_from(body + 4).unwrap_or(u32::MAX);
        let count = u32::try_from(count).unwrap_or(u32::MAX);
        out[start] = large;
        out[start + 1..start + 5].copy_from_slice(&size.to_be_bytes());
        out[start + 5..start + 9].copy_from_slice(&count.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    use bytes::Bytes;
    use fe2o3_amqp::types::messaging::message::__private::{Deserializable, Serializable};
    use fe2o3_amqp::types::messaging::{
        ApplicationProperties, Data, Header, Message, MessageAnnotations, MessageId, Properties,
    };
    use fe2o3_amqp::types::primitives::{
        Binary, OrderedMap, SimpleValue, Symbol, Timestamp, Value,
    };
    use ferry_adapter_core::Qos;
    use ferry_registry_client::{DeviceId, TenantId};

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    #[test]
    fn the_fixed_keys_are_encoded_as_strings() {
        for (key, encoded) in FIXED_KEYS.iter().zip(FIXED_KEYS_ENCODED) {
            let mut out = BytesMut::new();
            string(&mut out, key);
            assert_eq!(&out[..], encoded, "{key}");
        }
    }

    fn sample() -> Result<DownstreamMessage, Box<dyn std::error::Error>> {
        let mut properties = BTreeMap::new();
        properties.insert("gateway_id".to_owned(), serde_json::json!("gw"));
        properties.insert("n".to_owned(), serde_json::json!(5));
        properties.insert("big".to_owned(), serde_json::json!(1_000_000));
        properties.insert("huge".to_owned(), serde_json::json!(u64::MAX));
        properties.insert("neg".to_owned(), serde_json::json!(-3));
        properties.insert("f".to_owned(), serde_json::json!(1.5));
        properties.insert("yes".to_owned(), serde_json::json!(false));
        properties.insert("none".to_owned(), serde_json::Value::Null);
        properties.insert("obj".to_owned(), serde_json::json!({"a": 1}));
        Ok(DownstreamMessage {
            tenant_id: TenantId::parse("t1")?,
            device_id: DeviceId::parse("d1")?,
            endpoint: Endpoint::Event,
            qos: Qos::AtLeastOnce,
            content_type: "text/plain".into(),
            creation_time: 1_700_000_000_000,
            ttl_ms: Some(60_000),
            ttd: Some(30),
            orig_adapter: "hono-http".into(),
            orig_address: "/event".into(),
            properties,
            retain: true,
            payload: Bytes::from_static(b"hello"),
        })
    }

    fn encoded(message: &DownstreamMessage, id: &str) -> BytesMut {
        let mut out = BytesMut::new();
        encode(&mut out, message, id);
        out
    }

    /// The message as fe2o3-amqp's types describe it, field by field.
    fn reference(message: &DownstreamMessage, message_id: &str) -> Message<Data> {
        let header = Header {
            durable: message.endpoint == Endpoint::Event,
            ttl: message
                .ttl_ms
                .map(|ttl| u32::try_from(ttl).unwrap_or(u32::MAX)),
            ..Header::default()
        };
        let properties = Properties {
            message_id: Some(MessageId::String(message_id.to_owned())),
            to: Some(format!(
                "{}/{}/{}",
                message.endpoint.as_str(),
                message.tenant_id,
                message.device_id
            )),
            content_type: Some(Symbol::from(message.content_type.as_str())),
            creation_time: Some(Timestamp::from(message.creation_time)),
            ..Properties::default()
        };
        let mut app = OrderedMap::new();
        let string = |s: &str| SimpleValue::String(s.to_owned());
        app.insert("device_id".to_owned(), string(message.device_id.as_str()));
        app.insert("tenant_id".to_owned(), string(message.tenant_id.as_str()));
        app.insert("orig_adapter".to_owned(), string(&message.orig_adapter));
        app.insert("orig_address".to_owned(), string(&message.orig_address));
        app.insert(
            "qos".to_owned(),
            SimpleValue::Int(i32::from(message.qos.as_u8())),
        );
        if let Some(ttd) = message.ttd {
            app.insert("ttd".to_owned(), SimpleValue::Int(ttd));
        }
        for (key, value) in &message.properties {
            let value = match value {
                serde_json::Value::Null => SimpleValue::Null,
                serde_json::Value::Bool(b) => SimpleValue::Bool(*b),
                serde_json::Value::String(s) => SimpleValue::String(s.clone()),
                serde_json::Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
                    (Some(i), _, _) => SimpleValue::Long(i),
                    (None, Some(u), _) => SimpleValue::Ulong(u),
                    (_, _, Some(f)) => SimpleValue::Double(f.into()),
                    _ => SimpleValue::String(n.to_string()),
                },
                other => SimpleValue::String(other.to_string()),
            };
            app.insert(key.clone(), value);
        }
        let message_annotations = message.retain.then(|| {
            let mut annotations = OrderedMap::new();
            annotations.insert(RETAIN_ANNOTATION.into(), Value::Bool(true));
            MessageAnnotations(annotations)
        });
        Message {
            header: Some(header),
            delivery_annotations: None,
            message_annotations,
            properties: Some(properties),
            application_properties: Some(ApplicationProperties(app)),
            body: Data(Binary::from(message.payload.to_vec())),
            footer: None,
        }
    }

    #[test]
    fn decodes_with_fe2o3_to_every_promised_field() -> TestResult {
        let bytes = encoded(&sample()?, "id-1");
        let Deserializable(message): Deserializable<Message<Data>> =
            serde_amqp::from_slice(&bytes)?;
        let header = message.header.ok_or("header")?;
        assert!(header.durable);
        assert_eq!(header.ttl, Some(60_000));
        assert_eq!(header.priority.0, 4);
        let props = message.properties.ok_or("properties")?;
        assert_eq!(props.to.as_deref(), Some("event/t1/d1"));
        assert_eq!(props.message_id, Some(MessageId::String("id-1".to_owned())));
        assert_eq!(
            props.content_type,
            Some(Symbol::from("text/plain")),
            "content-type is a symbol"
        );
        assert_eq!(
            props.creation_time.map(Timestamp::into_inner),
            Some(1_700_000_000_000)
        );
        let app = message.application_properties.ok_or("app")?.0;
        let keys: Vec<&str> = app.keys().map(String::as_str).collect();
        assert_eq!(
            keys[..6],
            FIXED_KEYS,
            "Ferry's own properties come first, in order"
        );
        let string = |s: &str| Some(SimpleValue::String(s.to_owned()));
        assert_eq!(app.get("device_id").cloned(), string("d1"));
        assert_eq!(app.get("tenant_id").cloned(), string("t1"));
        assert_eq!(app.get("orig_adapter").cloned(), string("hono-http"));
        assert_eq!(app.get("orig_address").cloned(), string("/event"));
        assert_eq!(app.get("qos"), Some(&SimpleValue::Int(1)));
        assert_eq!(app.get("ttd"), Some(&SimpleValue::Int(30)));
        assert_eq!(app.get("n"), Some(&SimpleValue::Long(5)));
        assert_eq!(app.get("big"), Some(&SimpleValue::Long(1_000_000)));
        assert_eq!(app.get("neg"), Some(&SimpleValue::Long(-3)));
        assert_eq!(app.get("huge"), Some(&SimpleValue::Ulong(u64::MAX)));
        assert_eq!(app.get("f"), Some(&SimpleValue::Double(1.5.into())));
        assert_eq!(app.get("yes"), Some(&SimpleValue::Bool(false)));
        assert_eq!(app.get("none"), Some(&SimpleValue::Null));
        assert_eq!(app.get("obj").cloned(), string("{\"a\":1}"));
        assert_eq!(app.get("gateway_id").cloned(), string("gw"));
        let annotations = message.message_annotations.ok_or("annotations")?;
        assert_eq!(annotations.0.len(), 1);
        assert!(message.delivery_annotations.is_none() && message.footer.is_none());
        assert_eq!(message.body.0.as_slice(), b"hello");
        Ok(())
    }

    #[test]
    fn writes_the_bytes_fe2o3_writes() -> TestResult {
        let mut variants = Vec::new();
        let full = sample()?;
        variants.push(full.clone());
        // Telemetry without ttl, ttd, retain or properties: empty header, five properties.
        let mut bare = full.clone();
        bare.endpoint = Endpoint::Telemetry;
        bare.qos = Qos::AtMostOnce;
        bare.ttl_ms = None;
        bare.ttd = None;
        bare.retain = false;
        bare.properties.clear();
        variants.push(bare.clone());
        // An event without ttl; a telemetry message with one.
        let mut event = bare.clone();
        event.endpoint = Endpoint::Event;
        variants.push(event);
        let mut ttl = bare.clone();
        ttl.ttl_ms = Some(u64::MAX);
        ttl.ttd = Some(-1);
        variants.push(ttl);
        // Large values: 32-bit strings, binary, lists and maps.
        let mut large = full.clone();
        large.payload = Bytes::from(vec![7u8; 70_000]);
        large.content_type = "x".repeat(300);
        large
            .properties
            .insert("long".to_owned(), serde_json::json!("v".repeat(400)));
        variants.push(large);
        // Properties named like Ferry's own replace their values in place.
        let mut overridden = full.clone();
        overridden
            .properties
            .insert("qos".to_owned(), serde_json::json!("high"));
        overridden
            .properties
            .insert("device_id".to_owned(), serde_json::json!(9));
        variants.push(overridden.clone());
        let mut ttd_property = overridden;
        ttd_property.ttd = None;
        ttd_property
            .properties
            .insert("ttd".to_owned(), serde_json::json!(12));
        variants.push(ttd_property);
        for (index, message) in variants.iter().enumerate() {
            let id = "6f1c0b1e-0000-4000-8000-000000000001";
            let ours = encoded(message, id);
            let theirs = serde_amqp::to_vec(&Serializable(reference(message, id)))?;
            assert_eq!(ours[..], theirs[..], "variant {index}");
            assert!(
                ours.len() <= encoded_len_bound(message, id),
                "variant {index}: {} > bound {}",
                ours.len(),
                encoded_len_bound(message, id)
            );
        }
        Ok(())
    }
}
