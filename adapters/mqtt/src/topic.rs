//! Hono's MQTT topic names, parsed once at the edge (hono-api.md §3).
//!
//! * Uploads: `telemetry`/`t` and `event`/`e`, optionally followed by `/TENANT/DEVICE` (tenant may
//!   be empty for a gateway of the same tenant), optionally followed by a property bag
//!   `/?key=value&...` (URL-encoded): `content-type`, `hono-ttl` (seconds), `correlation-id`,
//!   `on-error`.
//! * Error subscriptions: `error`/`e` `/[TENANT]/[DEVICE]/#`, with `+` as the device for a
//!   gateway that wants the errors of all its devices.

use std::time::Duration;

use ferry_adapter_core::Endpoint;
use ferry_registry_client::{DeviceId, TenantId};

use crate::error::PublishError;

/// What to do when an upload fails (`on-error` in the property bag).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum OnError {
    /// With an error subscription: publish the error and acknowledge; without: disconnect.
    #[default]
    Default,
    /// Always disconnect.
    Disconnect,
    /// Publish the error (if subscribed) and acknowledge.
    Ignore,
    /// Publish the error (if subscribed), do not acknowledge, keep the connection.
    SkipAck,
}

impl OnError {
    /// Hono treats unknown values as `default`.
    fn parse(value: &str) -> Self {
        match value {
            "disconnect" => OnError::Disconnect,
            "ignore" => OnError::Ignore,
            "skip-ack" => OnError::SkipAck,
            _ => OnError::Default,
        }
    }
}

/// The property bag of an upload topic.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct PropertyBag {
    /// `content-type`.
    pub(crate) content_type: Option<String>,
    /// `hono-ttl`, seconds.
    pub(crate) ttl: Option<Duration>,
    /// `correlation-id`, used in the error topic.
    pub(crate) correlation_id: Option<String>,
    /// `on-error`.
    pub(crate) on_error: OnError,
}

/// Where an upload goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Target {
    /// The authenticated device itself (`t`).
    Own,
    /// Another device (`t/TENANT/DEVICE`, or `t//DEVICE` for the sender's tenant).
    Device {
        /// The tenant, if given.
        tenant: Option<TenantId>,
        /// The device.
        device: DeviceId,
    },
}

/// A parsed upload topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct UploadTopic {
    /// Telemetry or event.
    pub(crate) endpoint: Endpoint,
    /// The first level as the device wrote it (`t`, `telemetry`, `e`, `event`), for the error
    /// topic.
    pub(crate) word: &'static str,
    /// For whom.
    pub(crate) target: Target,
    /// The property bag.
    pub(crate) bag: PropertyBag,
}

fn endpoint(word: &str) -> Option<(Endpoint, &'static str)> {
    match word {
        "telemetry" => Some((Endpoint::Telemetry, "telemetry")),
        "t" => Some((Endpoint::Telemetry, "t")),
        "event" => Some((Endpoint::Event, "event")),
        "e" => Some((Endpoint::Event, "e")),
        _ => None,
    }
}

/// Reads just the `on-error` and `correlation-id` of a topic's bag, for error handling when the
/// topic as a whole does not parse.
pub(crate) fn lenient_bag(topic: &str) -> PropertyBag {
    topic
        .split_once("/?")
        .map(|(_, query)| {
            let mut bag = PropertyBag::default();
            for (key, value) in form_urlencoded::parse(query.as_bytes()) {
                match &*key {
                    "on-error" => bag.on_error = OnError::parse(&value),
                    "correlation-id" => bag.correlation_id = Some(value.into_owned()),
                    _ => {}
                }
            }
            bag
        })
        .unwrap_or_default()
}

fn parse_bag(query: &str) -> Result<PropertyBag, PublishError> {
    let mut bag = PropertyBag::default();
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        match &*key {
            "content-type" => bag.content_type = Some(value.into_owned()),
            "hono-ttl" => {
                let secs = value.parse::<u64>().map_err(|_| {
                    PublishError::BadPropertyBag(
                        "hono-ttl must be a non-negative number of seconds".to_owned(),
                    )
                })?;
                bag.ttl = Some(Duration::from_secs(secs));
            }
            "correlation-id" => bag.correlation_id = Some(value.into_owned()),
            "on-error" => bag.on_error = OnError::parse(&value),
            // Other keys are application properties in Hono; Ferry ignores them for now.
            _ => {}
        }
    }
    Ok(bag)
}

impl UploadTopic {
    /// Parses an upload topic name.
    pub(crate) fn parse(topic: &str) -> Result<Self, PublishError> {
        let bad = || PublishError::BadTopic(topic.chars().take(128).collect());
        let (path, bag) = match topic.split_once("/?") {
            Some((path, query)) => (path, parse_bag(query)?),
            None => (topic, PropertyBag::default()),
        };
        let mut levels = path.split('/');
        let (endpoint, word) = levels.next().and_then(endpoint).ok_or_else(bad)?;
        let target = match (levels.next(), levels.next(), levels.next()) {
            (None, None, None) => Target::Own,
            (Some(tenant), Some(device), None) if !device.is_empty() => Target::Device {
                tenant: match tenant {
                    "" => None,
                    t => Some(TenantId::parse(t).map_err(|_| bad())?),
                },
                device: DeviceId::parse(device).map_err(|_| bad())?,
            },
            _ => return Err(bad()),
        };
        Ok(Self {
            endpoint,
            word,
            target,
            bag,
        })
    }
}

/// Which devices an error subscription covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum DeviceFilter {
    /// Empty: the connected device itself.
    Own,
    /// `+`: every device a gateway sends for.
    Any,
    /// One device.
    Device(DeviceId),
}

/// A parsed error subscription `e/[tenant]/[device]/#`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ErrorSubscription {
    /// `e` or `error`, as subscribed.
    word: &'static str,
    /// The tenant level as subscribed (possibly empty).
    tenant: String,
    /// The device level.
    device: DeviceFilter,
}

impl ErrorSubscription {
    /// Parses a filter; `None` if it is no error subscription.
    pub(crate) fn parse(filter: &str) -> Option<Self> {
        let mut levels = filter.split('/');
        let word = match levels.next()? {
            "e" => "e",
            "error" => "error",
            _ => return None,
        };
        let (tenant, device, hash, rest) = (
            levels.next()?,
            levels.next()?,
            levels.next()?,
            levels.next(),
        );
        if hash != "#" || rest.is_some() {
            return None;
        }
        if !tenant.is_empty() {
            TenantId::parse(tenant).ok()?;
        }
        let device = match device {
            "" => DeviceFilter::Own,
            "+" => DeviceFilter::Any,
            d => DeviceFilter::Device(DeviceId::parse(d).ok()?),
        };
        Some(Self {
            word,
            tenant: tenant.to_owned(),
            device,
        })
    }

    /// The tenant level, if not empty.
    pub(crate) fn tenant(&self) -> Option<&str> {
        Some(self.tenant.as_str()).filter(|t| !t.is_empty())
    }

    /// The device filter.
    pub(crate) fn device(&self) -> &DeviceFilter {
        &self.device
    }

    /// Whether errors about `device` go to this subscription; `own` is the connected device.
    pub(crate) fn covers(&self, device: &DeviceId, own: Option<&DeviceId>) -> bool {
        match &self.device {
            DeviceFilter::Own => own == Some(device),
            DeviceFilter::Any => true,
            DeviceFilter::Device(d) => d == device,
        }
    }

    /// The topic an error is published to: `e/[tenant]/[device]/${endpoint}/${corrId}/${status}`,
    /// mirroring the subscription's words and ids (a `+` becomes the device id).
    pub(crate) fn error_topic(
        &self,
        device: &DeviceId,
        endpoint_word: &str,
        correlation_id: &str,
        status: u16,
    ) -> String {
        let device = match &self.device {
            DeviceFilter::Own => "",
            DeviceFilter::Any | DeviceFilter::Device(_) => device.as_str(),
        };
        format!(
            "{}/{}/{device}/{endpoint_word}/{correlation_id}/{status}",
            self.word, self.tenant
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type R = Result<(), Box<dyn std::error::Error>>;

    #[test]
    fn upload_topics_in_every_form() -> R {
        let t = UploadTopic::parse("t")?;
        assert_eq!(
            (t.endpoint, t.word, &t.target),
            (Endpoint::Telemetry, "t", &Target::Own)
        );
        let t = UploadTopic::parse("event")?;
        assert_eq!((t.endpoint, t.word), (Endpoint::Event, "event"));
        let t = UploadTopic::parse("telemetry/t1/d1")?;
        assert_eq!(
            t.target,
            Target::Device {
                tenant: Some(TenantId::parse("t1")?),
                device: DeviceId::parse("d1")?
            }
        );
        let t = UploadTopic::parse("e//d2")?;
        assert_eq!(
            t.target,
            Target::Device {
                tenant: None,
                device: DeviceId::parse("d2")?
            }
        );
        for bad in [
            "", "x", "t/", "t/a", "t/a/", "t/a/b/c", "command", "t/a b/d", "t//",
        ] {
            assert!(UploadTopic::parse(bad).is_err(), "{bad:?}");
        }
        Ok(())
    }

    #[test]
    fn property_bags_are_url_decoded() -> R {
        let t = UploadTopic::parse(
            "t/t1/d1/?content-type=application%2Fjson&hono-ttl=30&correlation-id=c%201&on-error=skip-ack&x=y",
        )?;
        assert_eq!(t.bag.content_type.as_deref(), Some("application/json"));
        assert_eq!(t.bag.ttl, Some(Duration::from_secs(30)));
        assert_eq!(t.bag.correlation_id.as_deref(), Some("c 1"));
        assert_eq!(t.bag.on_error, OnError::SkipAck);
        let t = UploadTopic::parse("e/?on-error=ignore")?;
        assert_eq!((t.target, t.bag.on_error), (Target::Own, OnError::Ignore));
        assert_eq!(
            UploadTopic::parse("t/?on-error=what")?.bag.on_error,
            OnError::Default
        );
        assert!(matches!(
            UploadTopic::parse("t/?hono-ttl=-1"),
            Err(PublishError::BadPropertyBag(_))
        ));
        let lenient = lenient_bag("nope/?on-error=disconnect&correlation-id=7");
        assert_eq!(lenient.on_error, OnError::Disconnect);
        assert_eq!(lenient.correlation_id.as_deref(), Some("7"));
        Ok(())
    }

    #[test]
    fn error_subscriptions_and_their_topics() -> R {
        let own = DeviceId::parse("gw")?;
        let dev = DeviceId::parse("d1")?;
        let s = ErrorSubscription::parse("e///#").ok_or("e///#")?;
        assert!(s.covers(&own, Some(&own)) && !s.covers(&dev, Some(&own)));
        assert_eq!(s.error_topic(&own, "t", "-1", 503), "e///t/-1/503");
        let s = ErrorSubscription::parse("error/t1/+/#").ok_or("+")?;
        assert!(s.covers(&dev, Some(&own)));
        assert_eq!(s.tenant(), Some("t1"));
        assert_eq!(
            s.error_topic(&dev, "event", "c7", 400),
            "error/t1/d1/event/c7/400"
        );
        let s = ErrorSubscription::parse("e//d1/#").ok_or("d1")?;
        assert!(s.covers(&dev, Some(&own)) && !s.covers(&own, Some(&own)));
        for bad in [
            "e/#",
            "e///",
            "e///x/#",
            "c///q/#",
            "error/t1/d1",
            "e/a b//#",
        ] {
            assert!(ErrorSubscription::parse(bad).is_none(), "{bad:?}");
        }
        Ok(())
    }
}
