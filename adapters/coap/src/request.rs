//! Parsing what a CoAP request says, without any I/O: the route (Uri-Path), the upload
//! parameters (Content-Format, Uri-Query `hono-ttd` and `empty`) and the delivery guarantee
//! (hono-api.md §4). Ids are parsed here, once, at the edge.

use coap_lite::{CoapOption, MessageClass, Packet, RequestType};
use ferry_adapter_core::message::EMPTY_NOTIFICATION;
use ferry_adapter_core::{Endpoint, Qos};
use ferry_registry_client::{DeviceId, TenantId};

use crate::error::RequestError;

/// Who a request sends for.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Target {
    /// `POST /t`: the authenticated device itself.
    Own,
    /// `PUT /t/TENANT/DEVICE`: a gateway, the device itself, or an unauthenticated device. An
    /// empty tenant segment means the gateway's tenant.
    Device {
        /// The tenant named in the path, if any.
        tenant: Option<TenantId>,
        /// The device named in the path.
        device: DeviceId,
    },
}

/// Everything an upload request says.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct UploadRequest {
    /// Telemetry or event.
    pub(crate) endpoint: Endpoint,
    /// Who it sends for.
    pub(crate) target: Target,
    /// CON = at least once, NON = at most once.
    pub(crate) qos: Qos,
    /// The MIME type from Content-Format, or the empty notification for `?empty`.
    pub(crate) content_type: Option<String>,
    /// `hono-ttd`.
    pub(crate) ttd: Option<i32>,
    /// The request path, e.g. `/t/tenant/device` (`orig_address`).
    pub(crate) path: String,
}

/// The path segments of the request (one Uri-Path option each; empty segments are kept).
fn segments(packet: &Packet) -> Result<Vec<String>, RequestError> {
    packet
        .get_option(CoapOption::UriPath)
        .into_iter()
        .flatten()
        .map(|s| {
            String::from_utf8(s.clone())
                .map_err(|_| RequestError::MalformedPath("path segment is not UTF-8".to_owned()))
        })
        .collect()
}

/// The `key` or `key=value` query parameters.
fn queries(packet: &Packet) -> impl Iterator<Item = (&str, Option<&str>)> {
    packet
        .get_option(CoapOption::UriQuery)
        .into_iter()
        .flatten()
        .filter_map(|q| std::str::from_utf8(q).ok())
        .map(|q| match q.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (q, None),
        })
}

/// MIME type of a CoAP Content-Format number (IANA "CoAP Content-Formats").
pub(crate) fn media_type(format: u16) -> &'static str {
    match format {
        0 => "text/plain; charset=utf-8",
        16 => "application/cose; cose-type=\"cose-encrypt0\"",
        17 => "application/cose; cose-type=\"cose-mac0\"",
        18 => "application/cose; cose-type=\"cose-sign1\"",
        21 => "image/gif",
        22 => "image/jpeg",
        23 => "image/png",
        40 => "application/link-format",
        41 => "application/xml",
        47 => "application/exi",
        50 => "application/json",
        51 => "application/json-patch+json",
        52 => "application/merge-patch+json",
        60 => "application/cbor",
        61 => "application/cwt",
        62 => "multipart/core",
        63 => "application/cbor-seq",
        110 => "application/senml+json",
        111 => "application/sensml+json",
        112 => "application/senml+cbor",
        113 => "application/sensml+cbor",
        310 => "application/senml+xml",
        311 => "application/sensml+xml",
        432 => "application/td+json",
        11542 => "application/vnd.oma.lwm2m+tlv",
        11543 => "application/vnd.oma.lwm2m+json",
        11544 => "application/vnd.oma.lwm2m+cbor",
        // 42, and formats without a registered name here.
        _ => "application/octet-stream",
    }
}

/// Reads a Content-Format option value (0 to 2 bytes, big endian).
fn content_format(packet: &Packet) -> Result<Option<u16>, RequestError> {
    let Some(value) = packet.get_first_option(CoapOption::ContentFormat) else {
        return Ok(None);
    };
    match value.as_slice() {
        [] => Ok(Some(0)),
        [a] => Ok(Some(u16::from(*a))),
        [a, b] => Ok(Some(u16::from_be_bytes([*a, *b]))),
        _ => Err(RequestError::BadContentFormat),
    }
}

fn parse_id<T>(
    segment: &str,
    parse: impl Fn(&str) -> Result<T, ferry_registry_client::InvalidId>,
) -> Result<T, RequestError> {
    parse(segment).map_err(|e| RequestError::MalformedPath(e.to_string()))
}

impl UploadRequest {
    /// Parses an upload request. `confirmable` is the message type (CON or NON).
    pub(crate) fn parse(packet: &Packet, confirmable: bool) -> Result<Self, RequestError> {
        let segments = segments(packet)?;
        let mut parts = segments.iter().map(String::as_str);
        let endpoint = match parts.next() {
            Some("t" | "telemetry") => Endpoint::Telemetry,
            Some("e" | "event") => Endpoint::Event,
            _ => return Err(RequestError::UnknownUri),
        };
        let rest: [Option<&str>; 3] = [parts.next(), parts.next(), parts.next()];
        let (target, allowed) = match rest {
            [None, None, None] => (Target::Own, RequestType::Post),
            [Some(tenant), Some(device), None] => {
                let tenant = match tenant {
                    "" => None,
                    t => Some(parse_id(t, TenantId::parse)?),
                };
                let device = parse_id(device, DeviceId::parse)?;
                (Target::Device { tenant, device }, RequestType::Put)
            }
            _ => return Err(RequestError::UnknownUri),
        };
        if packet.header.code != MessageClass::Request(allowed) {
            let allowed = match allowed {
                RequestType::Post => "POST",
                _ => "PUT",
            };
            return Err(RequestError::MethodNotAllowed { allowed });
        }
        let qos = match (endpoint, confirmable) {
            (Endpoint::Event, false) => return Err(RequestError::EventNotConfirmable),
            (_, true) => Qos::AtLeastOnce,
            (Endpoint::Telemetry, false) => Qos::AtMostOnce,
        };
        let mut ttd = None;
        let mut empty = false;
        for (key, value) in queries(packet) {
            match key {
                "hono-ttd" => {
                    let value = value.ok_or(RequestError::BadTtd)?;
                    ttd = Some(value.trim().parse().map_err(|_| RequestError::BadTtd)?);
                }
                "empty" => empty = value.is_none_or(|v| v != "false"),
                _ => {}
            }
        }
        let content_type = if empty {
            if !packet.payload.is_empty() {
                return Err(RequestError::EmptyWithPayload);
            }
            Some(EMPTY_NOTIFICATION.to_owned())
        } else {
            content_format(packet)?.map(|f| media_type(f).to_owned())
        };
        Ok(UploadRequest {
            endpoint,
            target,
            qos,
            content_type,
            ttd,
            path: format!("/{}", segments.join("/")),
        })
    }
}

#[cfg(test)]
mod tests;
