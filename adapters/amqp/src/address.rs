//! Parsing what a device sent: the message's `to` address and its body (hono-api.md §5).
//!
//! Addresses are `ENDPOINT`, `ENDPOINT/TENANT/DEVICE` or `ENDPOINT//DEVICE`, with `ENDPOINT` one
//! of `t`, `telemetry`, `e`, `event`. An authenticated device may use all three (the latter two
//! make it a gateway when DEVICE is another device); an unauthenticated device must name tenant
//! and device. The body is one Data section, or an AmqpValue holding a string or binary, or no
//! body at all (then a content type is required, which the pipeline checks).

use std::time::Duration;

use bytes::Bytes;
use ferry_adapter_core::{AuthenticatedDevice, Endpoint, ForwardError, Qos, Upload};
use ferry_amqp_wire::message::{Body, MessageView};
use ferry_registry_client::{DeviceId, TenantId};

use crate::error::DeliveryError;

/// A parsed `to` address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Address {
    /// Telemetry or event.
    pub(crate) endpoint: Endpoint,
    /// The tenant, when given (`t/TENANT/DEVICE`).
    pub(crate) tenant: Option<TenantId>,
    /// The device, when given.
    pub(crate) device: Option<DeviceId>,
}

impl Address {
    /// Parses a message's `to`.
    pub(crate) fn parse(to: &str) -> Result<Self, DeliveryError> {
        let bad = |why: &str| DeliveryError::Address(format!("{why}: {to:?}"));
        let mut parts = to.split('/');
        let endpoint = match parts.next() {
            Some("t" | "telemetry") => Endpoint::Telemetry,
            Some("e" | "event") => Endpoint::Event,
            _ => return Err(bad("unknown endpoint, use t, telemetry, e or event")),
        };
        let (tenant, device) = match (parts.next(), parts.next(), parts.next()) {
            (None, None, None) => (None, None),
            (Some(tenant), Some(device), None) if !device.is_empty() => {
                let tenant = match tenant {
                    "" => None,
                    t => Some(TenantId::parse(t).map_err(|_| bad("invalid tenant id"))?),
                };
                let device = DeviceId::parse(device).map_err(|_| bad("invalid device id"))?;
                (tenant, Some(device))
            }
            _ => {
                return Err(bad(
                    "expected ENDPOINT, ENDPOINT/TENANT/DEVICE or ENDPOINT//DEVICE",
                ));
            }
        };
        Ok(Self {
            endpoint,
            tenant,
            device,
        })
    }

    /// The tenant and device the message is for, given who sent it (`None`: an unauthenticated
    /// device).
    pub(crate) fn resolve(
        &self,
        sender: Option<&AuthenticatedDevice>,
    ) -> Result<(TenantId, DeviceId), DeliveryError> {
        match (sender, &self.tenant, &self.device) {
            (_, Some(tenant), Some(device)) => Ok((tenant.clone(), device.clone())),
            (Some(sender), None, Some(device)) => Ok((sender.tenant_id.clone(), device.clone())),
            (Some(sender), None, None) => Ok((sender.tenant_id.clone(), sender.device_id.clone())),
            (None, _, _) => Err(DeliveryError::Address(
                "unauthenticated devices must send to ENDPOINT/TENANT/DEVICE".to_owned(),
            )),
            (Some(_), Some(_), None) => Err(DeliveryError::Address(
                "a tenant without a device".to_owned(),
            )),
        }
    }
}

/// The payload: one Data section, an AmqpValue string or binary, or nothing; shares the bytes
/// of `message`, the encoded message the body was read from.
fn payload(body: Body<'_>, message: &Bytes) -> Result<Bytes, DeliveryError> {
    match body {
        Body::Empty => Ok(Bytes::new()),
        Body::Data(data) | Body::Binary(data) => Ok(message.slice_ref(data)),
        Body::String(text) => Ok(message.slice_ref(text.as_bytes())),
        Body::DataSections => Err(DeliveryError::Body("expected exactly one Data section")),
        Body::OtherValue => Err(DeliveryError::Body(
            "an AmqpValue body must hold a string or binary",
        )),
        Body::Sequence => Err(DeliveryError::Body("AmqpSequence bodies are not supported")),
    }
}

/// Builds the pipeline's upload from `view`, read from the encoded `message` sent to `address`
/// (`to`); refuses payloads over `max` bytes.
pub(crate) fn upload(
    view: &MessageView<'_>,
    message: &Bytes,
    address: &Address,
    to: &str,
    qos: Qos,
    max: usize,
) -> Result<Upload, DeliveryError> {
    let payload = payload(view.body, message)?;
    if payload.len() > max {
        return Err(ForwardError::PayloadTooLarge {
            size: payload.len(),
            max,
        }
        .into());
    }
    let ttl = match address.endpoint {
        Endpoint::Event => view.ttl.map(|ms| Duration::from_millis(u64::from(ms))),
        Endpoint::Telemetry => None,
    };
    Ok(Upload {
        endpoint: address.endpoint,
        qos,
        content_type: view.content_type.map(str::to_owned),
        ttl,
        ttd: None,
        orig_address: to.to_owned(),
        retain: false,
        payload,
    })
}

#[cfg(test)]
mod tests {
    use fe2o3_amqp::types::messaging::message::__private::Serializable;
    use fe2o3_amqp::types::messaging::{AmqpValue, Body, Data, Message, Properties};
    use fe2o3_amqp::types::primitives::{Binary, Value};

    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn device(tenant: &str, id: &str) -> Result<AuthenticatedDevice, Box<dyn std::error::Error>> {
        Ok(AuthenticatedDevice {
            tenant_id: TenantId::parse(tenant)?,
            device_id: DeviceId::parse(id)?,
            auth_id: id.to_owned(),
        })
    }

    #[test]
    fn addresses_follow_hono() -> TestResult {
        let gw = device("t1", "gw")?;
        let short = Address::parse("t")?;
        assert_eq!(short.endpoint, Endpoint::Telemetry);
        assert_eq!(
            short.resolve(Some(&gw))?,
            (TenantId::parse("t1")?, DeviceId::parse("gw")?)
        );
        assert_eq!(Address::parse("event")?.endpoint, Endpoint::Event);
        let for_device = Address::parse("e//d7")?;
        assert_eq!(for_device.endpoint, Endpoint::Event);
        assert_eq!(
            for_device.resolve(Some(&gw))?,
            (TenantId::parse("t1")?, DeviceId::parse("d7")?)
        );
        let full = Address::parse("telemetry/t2/d8")?;
        assert_eq!(
            full.resolve(None)?,
            (TenantId::parse("t2")?, DeviceId::parse("d8")?)
        );
        assert!(short.resolve(None).is_err());
        assert!(for_device.resolve(None).is_err());
        for bad in [
            "", "x", "t/", "t/a", "t/a/", "t/a/b/c", "command", "t/a b/c", "T",
        ] {
            assert!(Address::parse(bad).is_err(), "{bad:?}");
        }
        Ok(())
    }

    /// A message encoded by fe2o3, as a device client sends it.
    fn message(body: Body<Value>, content_type: Option<&str>) -> Result<Bytes, serde_amqp::Error> {
        let mut message = Message::from(body);
        message.properties = content_type.map(|c| Properties {
            content_type: Some(c.into()),
            ..Properties::default()
        });
        serde_amqp::to_vec(&Serializable(message)).map(Bytes::from)
    }

    #[test]
    fn bodies_and_limits() -> TestResult {
        let address = Address::parse("t")?;
        let up = |m: &Bytes| {
            let view = ferry_amqp_wire::message::scan(m)
                .map_err(|e| DeliveryError::Decode(e.to_string()))?;
            upload(&view, m, &address, "t", Qos::AtLeastOnce, 4)
        };
        let data = message(
            Body::Data(vec![Data(Binary::from(b"abcd".to_vec()))].into()),
            Some("a/b"),
        )?;
        let u = up(&data)?;
        assert_eq!(u.payload.as_ref(), b"abcd");
        assert_eq!(u.content_type.as_deref(), Some("a/b"));
        assert_eq!(u.orig_address, "t");
        let text = message(Body::Value(AmqpValue(Value::String("hi".into()))), None)?;
        assert_eq!(up(&text)?.payload.as_ref(), b"hi");
        let binary = message(
            Body::Value(AmqpValue(Value::Binary(Binary::from(vec![1u8])))),
            None,
        )?;
        assert_eq!(up(&binary)?.payload.as_ref(), [1u8]);
        assert!(up(&message(Body::Empty, None)?)?.payload.is_empty());
        let int = message(Body::Value(AmqpValue(Value::Int(1))), None)?;
        assert!(matches!(up(&int), Err(DeliveryError::Body(b)) if b.contains("string or binary")));
        let two = message(
            Body::Data(vec![Data(Binary::from(vec![1u8])), Data(Binary::from(vec![2u8]))].into()),
            None,
        )?;
        assert!(matches!(up(&two), Err(DeliveryError::Body(b)) if b.contains("exactly one")));
        let big = message(Body::Value(AmqpValue(Value::String("12345".into()))), None)?;
        assert!(matches!(
            up(&big),
            Err(DeliveryError::Forward(ForwardError::PayloadTooLarge {
                size: 5,
                max: 4
            }))
        ));
        Ok(())
    }
}
