//! One PUBLISH: from topic and packet to an [`Upload`] for the pipeline, and what to do when it
//! fails (hono-api.md §3 "Errors"). No I/O here: [`prepare`] and [`on_failure`] are pure, so the
//! rules are tested deterministically.

use std::num::NonZeroU16;

use ferry_adapter_core::{AuthenticatedDevice, Endpoint, Qos, Upload};
use ferry_registry_client::{DeviceId, TenantId};

use crate::error::PublishError;
use crate::packet::PublishIn;
use crate::topic::{OnError, Target, UploadTopic, lenient_bag};

/// Who is connected.
#[derive(Clone, Debug)]
pub(crate) enum Identity {
    /// An authenticated device (or gateway).
    Device(AuthenticatedDevice),
    /// A device that connected without credentials (adapter authentication switched off).
    Anonymous,
}

impl Identity {
    /// The authenticated device, if any.
    pub(crate) fn device(&self) -> Option<&AuthenticatedDevice> {
        match self {
            Identity::Device(d) => Some(d),
            Identity::Anonymous => None,
        }
    }
}

/// What error handling needs to know about an upload.
#[derive(Clone, Debug)]
pub(crate) struct ErrorContext {
    /// The device the message was for, when known.
    pub(crate) device: Option<DeviceId>,
    /// The topic's first level (`t`, `telemetry`, `e`, `event`).
    pub(crate) word: &'static str,
    /// `correlation-id` of the bag, else the QoS 1 packet id, else `-1`.
    pub(crate) correlation_id: String,
    /// The bag's `on-error`.
    pub(crate) on_error: OnError,
}

/// A PUBLISH ready for the pipeline.
#[derive(Debug)]
pub(crate) struct Prepared {
    /// Tenant of the target device.
    pub(crate) tenant: TenantId,
    /// Target device.
    pub(crate) device: DeviceId,
    /// The upload.
    pub(crate) upload: Upload,
}

/// Reads a PUBLISH: topic, QoS rules, property bag, content type (the MQTT 5 property wins over
/// the bag), target device. The [`ErrorContext`] is returned in every case.
pub(crate) fn prepare(
    publish: &PublishIn,
    identity: &Identity,
) -> (ErrorContext, Result<Prepared, PublishError>) {
    let packet_id = publish.packet_id.filter(|_| publish.qos == 1);
    let own = identity.device().map(|d| d.device_id.clone());
    let topic = UploadTopic::parse(&publish.topic);
    let bag = match &topic {
        Ok(t) => t.bag.clone(),
        Err(_) => lenient_bag(&publish.topic),
    };
    let device = match &topic {
        Ok(UploadTopic {
            target: Target::Device { device, .. },
            ..
        }) => Some(device.clone()),
        _ => own,
    };
    let context = ErrorContext {
        device,
        word: topic.as_ref().map_or("telemetry", |t| t.word),
        correlation_id: bag
            .correlation_id
            .clone()
            .or_else(|| packet_id.map(|id| id.get().to_string()))
            .unwrap_or_else(|| "-1".to_owned()),
        on_error: bag.on_error,
    };
    let prepared = topic.and_then(|topic| upload(publish, topic, identity));
    (context, prepared)
}

fn upload(
    publish: &PublishIn,
    topic: UploadTopic,
    identity: &Identity,
) -> Result<Prepared, PublishError> {
    if publish.topic_alias {
        return Err(PublishError::BadTopic(
            "topic aliases are not supported".to_owned(),
        ));
    }
    let qos = match (publish.qos, topic.endpoint) {
        (2, _) => return Err(PublishError::Qos2),
        (0, Endpoint::Event) => return Err(PublishError::EventNeedsQos1),
        (0, Endpoint::Telemetry) => Qos::AtMostOnce,
        _ => Qos::AtLeastOnce,
    };
    let (tenant, device) = match (topic.target, identity) {
        (Target::Own, Identity::Device(d)) => (d.tenant_id.clone(), d.device_id.clone()),
        (Target::Device { tenant, device }, Identity::Device(d)) => {
            (tenant.unwrap_or_else(|| d.tenant_id.clone()), device)
        }
        (
            Target::Device {
                tenant: Some(tenant),
                device,
            },
            Identity::Anonymous,
        ) => (tenant, device),
        (Target::Own | Target::Device { tenant: None, .. }, Identity::Anonymous) => {
            return Err(PublishError::BadTopic(
                "unauthenticated devices must name tenant and device".to_owned(),
            ));
        }
    };
    let content_type = publish
        .content_type
        .clone()
        .or(topic.bag.content_type)
        .filter(|c| !c.is_empty());
    Ok(Prepared {
        tenant,
        device,
        upload: Upload {
            endpoint: topic.endpoint,
            qos,
            content_type,
            ttl: topic.bag.ttl.filter(|_| topic.endpoint == Endpoint::Event),
            ttd: None,
            orig_address: publish.topic.clone(),
            retain: publish.retain,
            payload: publish.payload.clone(),
        },
    })
}

/// What to do about a failed upload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ErrorActions {
    /// Publish the error to the device's error subscription.
    pub(crate) publish_error: bool,
    /// Send the PUBACK anyway (QoS 1).
    pub(crate) ack: bool,
    /// Close the connection.
    pub(crate) disconnect: bool,
}

/// Hono's `on-error` rules: terminal errors and `disconnect` close the connection; `default`
/// publishes the error and acknowledges when the device subscribed to errors, else closes;
/// `ignore` acknowledges; `skip-ack` does not acknowledge and keeps the connection.
pub(crate) fn on_failure(mode: OnError, subscribed: bool, terminal: bool) -> ErrorActions {
    let close = ErrorActions {
        publish_error: false,
        ack: false,
        disconnect: true,
    };
    if terminal {
        return close;
    }
    match mode {
        OnError::Disconnect => close,
        OnError::Default if !subscribed => close,
        OnError::Default | OnError::Ignore => ErrorActions {
            publish_error: subscribed,
            ack: true,
            disconnect: false,
        },
        OnError::SkipAck => ErrorActions {
            publish_error: subscribed,
            ack: false,
            disconnect: false,
        },
    }
}

/// The error message's JSON payload: `code`, `message`, `timestamp`, `correlation-id`.
pub(crate) fn error_payload(status: u16, message: &str, correlation_id: &str) -> bytes::Bytes {
    let json = serde_json::json!({
        "code": status,
        "message": message,
        "timestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "correlation-id": correlation_id,
    });
    bytes::Bytes::from(json.to_string())
}

/// The packet id to acknowledge, for a QoS 1 PUBLISH.
pub(crate) fn ack_id(publish: &PublishIn) -> Option<NonZeroU16> {
    publish.packet_id.filter(|_| publish.qos == 1)
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    type R = Result<(), Box<dyn std::error::Error>>;

    fn publish(topic: &str, qos: u8) -> PublishIn {
        PublishIn {
            topic: topic.to_owned(),
            qos,
            packet_id: NonZeroU16::new(7).filter(|_| qos > 0),
            retain: true,
            content_type: None,
            topic_alias: false,
            payload: Bytes::from_static(b"x"),
        }
    }

    fn device() -> Result<Identity, Box<dyn std::error::Error>> {
        Ok(Identity::Device(AuthenticatedDevice {
            tenant_id: TenantId::parse("t1")?,
            device_id: DeviceId::parse("gw")?,
            auth_id: "gw".to_owned(),
        }))
    }

    #[test]
    fn devices_gateways_and_anonymous_senders() -> R {
        let id = device()?;
        let (ctx, p) = prepare(&publish("t", 0), &id);
        let p = p?;
        assert_eq!((p.tenant.as_str(), p.device.as_str()), ("t1", "gw"));
        assert_eq!(p.upload.qos, Qos::AtMostOnce);
        assert!(p.upload.retain);
        assert_eq!(ctx.correlation_id, "-1");
        let (ctx, p) = prepare(&publish("event//d1/?hono-ttl=5&content-type=a%2Fb", 1), &id);
        let p = p?;
        assert_eq!((p.tenant.as_str(), p.device.as_str()), ("t1", "d1"));
        assert_eq!(p.upload.ttl, Some(std::time::Duration::from_secs(5)));
        assert_eq!(p.upload.content_type.as_deref(), Some("a/b"));
        assert_eq!((ctx.correlation_id.as_str(), ctx.word), ("7", "event"));
        assert_eq!(ctx.device.as_ref().map(DeviceId::as_str), Some("d1"));
        let (_, p) = prepare(&publish("t/t2/d2", 1), &Identity::Anonymous);
        assert_eq!(p?.tenant.as_str(), "t2");
        for topic in ["t", "t//d2"] {
            assert!(prepare(&publish(topic, 0), &Identity::Anonymous).1.is_err());
        }
        Ok(())
    }

    #[test]
    fn qos_rules_and_mqtt5_content_type() -> R {
        let id = device()?;
        assert!(matches!(
            prepare(&publish("e", 0), &id).1,
            Err(PublishError::EventNeedsQos1)
        ));
        assert!(matches!(
            prepare(&publish("t", 2), &id).1,
            Err(PublishError::Qos2)
        ));
        let mut p = publish("t/?content-type=text%2Fplain", 1);
        p.content_type = Some("application/json".to_owned());
        assert_eq!(
            prepare(&p, &id).1?.upload.content_type.as_deref(),
            Some("application/json")
        );
        let (ctx, p) = prepare(&publish("x/?correlation-id=c9&on-error=ignore", 1), &id);
        assert!(matches!(p, Err(PublishError::BadTopic(_))));
        assert_eq!(
            (ctx.correlation_id.as_str(), ctx.on_error),
            ("c9", OnError::Ignore)
        );
        Ok(())
    }

    #[test]
    fn on_error_modes() {
        let a = |publish_error, ack, disconnect| ErrorActions {
            publish_error,
            ack,
            disconnect,
        };
        assert_eq!(
            on_failure(OnError::Default, false, false),
            a(false, false, true)
        );
        assert_eq!(
            on_failure(OnError::Default, true, false),
            a(true, true, false)
        );
        assert_eq!(
            on_failure(OnError::Ignore, false, false),
            a(false, true, false)
        );
        assert_eq!(
            on_failure(OnError::Ignore, true, false),
            a(true, true, false)
        );
        assert_eq!(
            on_failure(OnError::SkipAck, true, false),
            a(true, false, false)
        );
        assert_eq!(
            on_failure(OnError::SkipAck, false, false),
            a(false, false, false)
        );
        assert_eq!(
            on_failure(OnError::Disconnect, true, false),
            a(false, false, true)
        );
        for mode in [OnError::Default, OnError::Ignore, OnError::SkipAck] {
            assert!(on_failure(mode, true, true).disconnect, "{mode:?}");
        }
    }

    #[test]
    fn error_payload_is_hono_json() -> R {
        let p: serde_json::Value = serde_json::from_slice(&error_payload(503, "m", "c"))?;
        assert_eq!(p["code"], 503);
        assert_eq!(p["message"], "m");
        assert_eq!(p["correlation-id"], "c");
        assert!(p["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')));
        Ok(())
    }
}
