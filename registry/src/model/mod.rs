//! The Management API's documents: checks and normalization of request bodies, and conversion
//! of stored documents into the service APIs' objects.
//!
//! Documents stay JSON (unknown members survive); only the members Ferry interprets are checked.

pub mod credentials;
pub mod device;
pub mod tenant;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value};

use crate::error::ManageError;

fn bad(msg: impl Into<String>) -> ManageError {
    ManageError::BadRequest(msg.into())
}

/// The body as a JSON object.
pub(crate) fn object(value: Value, what: &str) -> Result<Map<String, Value>, ManageError> {
    match value {
        Value::Object(m) => Ok(m),
        _ => Err(bad(format!("{what} must be a JSON object"))),
    }
}

/// Checks that `key`, if present and not null, has the type `check` accepts.
pub(crate) fn check_type(
    map: &Map<String, Value>,
    key: &str,
    kind: &str,
    check: fn(&Value) -> bool,
) -> Result<(), ManageError> {
    match map.get(key) {
        Some(v) if !v.is_null() && !check(v) => Err(bad(format!("'{key}' must be {kind}"))),
        _ => Ok(()),
    }
}

/// Checks the common optional members `enabled` (boolean) and `ext` (object).
pub(crate) fn check_common(map: &Map<String, Value>) -> Result<(), ManageError> {
    check_type(map, "enabled", "a boolean", Value::is_boolean)?;
    check_type(map, "ext", "an object", Value::is_object)
}

/// An array of strings under `key` (absent: empty); 400 if it is something else.
pub(crate) fn string_array(
    map: &Map<String, Value>,
    key: &str,
) -> Result<Vec<String>, ManageError> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| match v {
                Value::String(s) if !s.is_empty() => Ok(s.clone()),
                _ => Err(bad(format!(
                    "'{key}' must be an array of non-empty strings"
                ))),
            })
            .collect(),
        Some(_) => Err(bad(format!("'{key}' must be an array of strings"))),
    }
}

/// The optional ISO 8601 time under `key`; normalized in place to RFC 3339 UTC.
pub(crate) fn time(
    map: &mut Map<String, Value>,
    key: &str,
) -> Result<Option<DateTime<Utc>>, ManageError> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => {
            let t = DateTime::parse_from_rfc3339(s)
                .map_err(|_| bad(format!("'{key}' must be an ISO 8601 date-time")))?
                .with_timezone(&Utc);
            map.insert(key.to_owned(), Value::String(format_time(t)));
            Ok(Some(t))
        }
        Some(_) => Err(bad(format!("'{key}' must be an ISO 8601 date-time"))),
    }
}

/// RFC 3339 in UTC with a `Z`, as Hono writes times.
pub(crate) fn format_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// A generated identifier (secrets, CA entries, devices, tenants).
pub(crate) fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// The `enabled` flag of a document (default true).
pub(crate) fn enabled(map: &Map<String, Value>) -> bool {
    map.get("enabled").and_then(Value::as_bool).unwrap_or(true)
}

/// Decodes standard Base64 or gives 400 naming the member.
pub(crate) fn base64(value: &str, key: &str) -> Result<Vec<u8>, ManageError> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(value.trim())
        .map_err(|_| bad(format!("'{key}' must be Base64")))
}
