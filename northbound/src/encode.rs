//! Turns a [`DownstreamMessage`] into the AMQP 1.0 message Hono's consumers expect (hono-api.md §11).
//!
//! * properties: `to` = `ENDPOINT/TENANT/DEVICE`, `content-type`, `creation-time`, `message-id`;
//! * header: `durable` for events, `ttl` when given;
//! * application properties: `device_id`, `tenant_id`, `orig_adapter`, `orig_address`, `qos`,
//!   `ttd` (when given), then every entry of `properties`;
//! * message annotation `x-opt-retain` when the device set MQTT's retain flag;
//! * body: exactly one Data section.

use fe2o3_amqp::types::messaging::{
    ApplicationProperties, Data, Header, Message, MessageAnnotations, MessageId, Properties,
};
use fe2o3_amqp::types::primitives::{Binary, OrderedMap, SimpleValue, Symbol, Timestamp, Value};
use ferry_adapter_core::{DownstreamMessage, Endpoint};

/// Annotation carrying MQTT's retain flag.
pub const RETAIN_ANNOTATION: &str = "x-opt-retain";

/// Encodes `message` with the given unique `message_id`.
pub(crate) fn encode(message: &DownstreamMessage, message_id: &str) -> Message<Data> {
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
    app.insert(
        "device_id".to_owned(),
        SimpleValue::String(message.device_id.to_string()),
    );
    app.insert(
        "tenant_id".to_owned(),
        SimpleValue::String(message.tenant_id.to_string()),
    );
    app.insert(
        "orig_adapter".to_owned(),
        SimpleValue::String(message.orig_adapter.clone()),
    );
    app.insert(
        "orig_address".to_owned(),
        SimpleValue::String(message.orig_address.clone()),
    );
    app.insert(
        "qos".to_owned(),
        SimpleValue::Int(i32::from(message.qos.as_u8())),
    );
    if let Some(ttd) = message.ttd {
        app.insert("ttd".to_owned(), SimpleValue::Int(ttd));
    }
    for (key, value) in &message.properties {
        app.insert(key.clone(), json_to_amqp(value));
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

/// JSON strings become AMQP strings, integers longs, other numbers doubles, booleans booleans;
/// arrays and objects are carried as their JSON text.
pub(crate) fn json_to_amqp(value: &serde_json::Value) -> SimpleValue {
    use serde_json::Value as J;
    match value {
        J::Null => SimpleValue::Null,
        J::Bool(b) => SimpleValue::Bool(*b),
        J::String(s) => SimpleValue::String(s.clone()),
        J::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => SimpleValue::Long(i),
            (None, Some(u), _) => SimpleValue::Ulong(u),
            (_, _, Some(f)) => SimpleValue::Double(f.into()),
            _ => SimpleValue::String(n.to_string()),
        },
        J::Array(_) | J::Object(_) => SimpleValue::String(value.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    use bytes::Bytes;
    use ferry_adapter_core::Qos;
    use ferry_registry_client::{DeviceId, TenantId};

    fn sample() -> Result<DownstreamMessage, Box<dyn std::error::Error>> {
        let mut properties = BTreeMap::new();
        properties.insert("gateway_id".to_owned(), serde_json::json!("gw"));
        properties.insert("n".to_owned(), serde_json::json!(5));
        properties.insert("f".to_owned(), serde_json::json!(1.5));
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

    #[test]
    fn encodes_every_field() -> Result<(), Box<dyn std::error::Error>> {
        let message = encode(&sample()?, "id-1");
        let header = message.header.ok_or("header")?;
        assert!(header.durable);
        assert_eq!(header.ttl, Some(60_000));
        let props = message.properties.ok_or("properties")?;
        assert_eq!(props.to.as_deref(), Some("event/t1/d1"));
        assert_eq!(props.message_id, Some(MessageId::String("id-1".to_owned())));
        assert_eq!(
            props.creation_time.map(Timestamp::into_inner),
            Some(1_700_000_000_000)
        );
        let app = message.application_properties.ok_or("app")?.0;
        assert_eq!(app.get("qos"), Some(&SimpleValue::Int(1)));
        assert_eq!(app.get("ttd"), Some(&SimpleValue::Int(30)));
        assert_eq!(app.get("n"), Some(&SimpleValue::Long(5)));
        assert_eq!(app.get("f"), Some(&SimpleValue::Double(1.5.into())));
        assert_eq!(
            app.get("obj"),
            Some(&SimpleValue::String("{\"a\":1}".to_owned()))
        );
        assert_eq!(
            app.get("gateway_id"),
            Some(&SimpleValue::String("gw".to_owned()))
        );
        let annotations = message.message_annotations.ok_or("annotations")?;
        assert_eq!(annotations.0.len(), 1);
        assert_eq!(message.body.0.as_slice(), b"hello");
        Ok(())
    }
}
