//! Parsing what a request says, without any I/O: the route, the Basic credentials and the upload
//! parameters (hono-api.md §2). Ids are parsed here, once, at the edge.

use std::borrow::Cow;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ferry_adapter_core::{Endpoint, Qos};
use ferry_registry_client::{DeviceId, TenantId};

use crate::error::RequestError;
use crate::h1::head::Fields;

/// Who a request sends for.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Target {
    /// `POST /telemetry`: the authenticated device itself.
    Own,
    /// `PUT /telemetry/TENANT/DEVICE`: a gateway, the device itself, or an unauthenticated device.
    /// An empty tenant segment means the gateway's tenant.
    Device {
        /// The tenant named in the path, if any.
        tenant: Option<TenantId>,
        /// The device named in the path.
        device: DeviceId,
    },
}

/// A request's resource.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Route {
    /// Telemetry or event.
    pub(crate) endpoint: Endpoint,
    /// Who it sends for.
    pub(crate) target: Target,
}

impl Route {
    /// Matches the method and path against the adapter's resources.
    pub(crate) fn parse(method: &str, path: &str) -> Result<Self, RequestError> {
        let mut segments = path.strip_prefix('/').unwrap_or(path).split('/');
        let endpoint = match segments.next() {
            Some("telemetry") => Endpoint::Telemetry,
            Some("event") => Endpoint::Event,
            _ => return Err(RequestError::UnknownUri),
        };
        let rest: [Option<&str>; 3] = [segments.next(), segments.next(), segments.next()];
        let (target, allowed) = match rest {
            [None, None, None] => (Target::Own, "POST"),
            [Some(tenant), Some(device), None] => {
                let malformed = |e: ferry_registry_client::InvalidId| {
                    RequestError::MalformedPath(e.to_string())
                };
                let tenant = match tenant {
                    "" => None,
                    t => Some(TenantId::parse(&percent_decode(t)?).map_err(malformed)?),
                };
                let device = DeviceId::parse(&percent_decode(device)?).map_err(malformed)?;
                (Target::Device { tenant, device }, "PUT")
            }
            _ => return Err(RequestError::UnknownUri),
        };
        if method != allowed {
            return Err(RequestError::MethodNotAllowed { allowed });
        }
        Ok(Route { endpoint, target })
    }
}

/// Decodes `%XX` escapes in a path segment (a client may escape `:` or `=` in a device id).
fn percent_decode(segment: &str) -> Result<Cow<'_, str>, RequestError> {
    if !segment.contains('%') {
        return Ok(Cow::Borrowed(segment));
    }
    let malformed = || RequestError::MalformedPath("invalid percent-encoding".to_owned());
    let bytes = segment.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or_else(malformed)?;
            let hex = std::str::from_utf8(hex).map_err(|_| malformed())?;
            decoded.push(u8::from_str_radix(hex, 16).map_err(|_| malformed())?);
            i += 3;
        } else {
            decoded.push(b);
            i += 1;
        }
    }
    String::from_utf8(decoded)
        .map(Cow::Owned)
        .map_err(|_| malformed())
}

/// Username and password from a Basic `authorization` header.
pub(crate) struct BasicCredentials {
    /// `auth-id@tenant`.
    pub(crate) username: String,
    /// The password; never logged.
    pub(crate) password: String,
}

impl std::fmt::Debug for BasicCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BasicCredentials")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl BasicCredentials {
    /// The credentials of an `authorization` header's value, `None` without one.
    pub(crate) fn from_header(value: Option<&[u8]>) -> Result<Option<Self>, RequestError> {
        let Some(value) = value else {
            return Ok(None);
        };
        let malformed = RequestError::MalformedAuthorization;
        let value = visible_ascii(value).ok_or(malformed("not ASCII"))?.trim();
        let (scheme, encoded) = value.split_once(' ').ok_or(malformed("expected Basic"))?;
        if !scheme.eq_ignore_ascii_case("basic") {
            return Err(malformed("only the Basic scheme is supported"));
        }
        let decoded = STANDARD
            .decode(encoded.trim())
            .map_err(|_| malformed("invalid Base64"))?;
        let decoded = String::from_utf8(decoded).map_err(|_| malformed("not UTF-8"))?;
        let (username, password) = decoded
            .split_once(':')
            .ok_or(malformed("expected username:password"))?;
        Ok(Some(Self {
            username: username.to_owned(),
            password: password.to_owned(),
        }))
    }
}

/// The upload parameters given in headers or the query.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Params {
    /// Requested delivery guarantee (events: always at least once).
    pub(crate) qos: Qos,
    /// `content-type`.
    pub(crate) content_type: Option<String>,
    /// `hono-ttl` (events only).
    pub(crate) ttl: Option<Duration>,
    /// `hono-ttd`.
    pub(crate) ttd: Option<i32>,
}

/// A header field's value as text: visible ASCII, spaces and tabs only.
fn visible_ascii(value: &[u8]) -> Option<&str> {
    value
        .iter()
        .all(|&b| b == b'\t' || (b' '..=b'~').contains(&b))
        .then(|| std::str::from_utf8(value).ok())
        .flatten()
}

/// A header's value, else the query parameter of the same name.
fn header_or_query<'a>(
    header: Option<&'a [u8]>,
    query: Option<&'a str>,
    name: &str,
) -> Option<&'a str> {
    match header {
        Some(value) => Some(visible_ascii(value).unwrap_or("\u{0}")),
        None => query?
            .split('&')
            .filter_map(|pair| pair.split_once('='))
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value),
    }
}

impl Params {
    /// Reads `qos-level`, `content-type`, `hono-ttl` and `hono-ttd`.
    pub(crate) fn parse(
        endpoint: Endpoint,
        fields: &Fields<'_>,
        query: Option<&str>,
    ) -> Result<Self, RequestError> {
        let qos = match endpoint {
            Endpoint::Event => Qos::AtLeastOnce,
            Endpoint::Telemetry => match fields.qos_level.map(<[u8]>::trim_ascii) {
                None | Some(b"0") => Qos::AtMostOnce,
                Some(b"1") => Qos::AtLeastOnce,
                Some(_) => return Err(RequestError::BadQos),
            },
        };
        let content_type = fields
            .content_type
            .map(|v| visible_ascii(v).map(str::to_owned))
            .map(|v| v.ok_or(RequestError::BadContentType))
            .transpose()?;
        let ttl = match endpoint {
            Endpoint::Telemetry => None,
            Endpoint::Event => header_or_query(fields.hono_ttl, query, "hono-ttl")
                .map(|v| v.trim().parse::<u64>().map(Duration::from_secs))
                .transpose()
                .map_err(|_| RequestError::BadTtl)?,
        };
        let ttd = header_or_query(fields.hono_ttd, query, "hono-ttd")
            .map(|v| v.trim().parse::<i32>())
            .transpose()
            .map_err(|_| RequestError::BadTtd)?;
        Ok(Params {
            qos,
            content_type,
            ttl,
            ttd,
        })
    }
}

#[cfg(test)]
mod tests;
