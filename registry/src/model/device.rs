//! Device documents: Management API checks and the read-only `status`.

use chrono::{DateTime, Utc};
use ferry_registry_client::DeviceId;
use serde_json::{Map, Value};

use super::{bad, check_common, check_type, format_time, object, string_array};
use crate::error::ManageError;

/// Checks a device body and sets its `status` (`created` kept from `previous`, `updated` on
/// updates, `last-user`, and the auto-provisioning flags kept from `previous`).
pub fn prepare(
    body: Value,
    previous: Option<&Map<String, Value>>,
    user: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Map<String, Value>, ManageError> {
    let mut doc = object(body, "device")?;
    doc.remove("id");
    check_common(&doc)?;
    check_type(&doc, "defaults", "an object", Value::is_object)?;
    for key in ["downstream-message-mapper", "upstream-message-mapper"] {
        check_type(&doc, key, "a string", Value::is_string)?;
    }
    if let Some(endpoint) = doc.get("command-endpoint").filter(|v| !v.is_null()) {
        let uri_ok = endpoint
            .get("uri")
            .and_then(Value::as_str)
            .is_some_and(|u| !u.is_empty());
        if !uri_ok {
            return Err(bad("'command-endpoint' must be an object with a 'uri'"));
        }
        for key in ["headers", "payload-properties"] {
            if let Some(map) = endpoint.as_object() {
                check_type(map, key, "an object", Value::is_object)?;
            }
        }
    }
    for id in string_array(&doc, "via")? {
        DeviceId::parse(&id).map_err(|e| bad(format!("'via': {e}")))?;
    }
    let via_groups = string_array(&doc, "viaGroups")?;
    let member_of = string_array(&doc, "memberOf")?;
    string_array(&doc, "authorities")?;
    if !member_of.is_empty() && (!via(&doc).is_empty() || !via_groups.is_empty()) {
        return Err(bad(
            "'memberOf' cannot be combined with 'via' or 'viaGroups'",
        ));
    }
    let mut status = previous
        .and_then(|p| p.get("status"))
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    status.remove("last-user");
    if previous.is_some() {
        status.insert("updated".into(), format_time(now).into());
    } else {
        status.insert("created".into(), format_time(now).into());
    }
    if let Some(user) = user {
        status.insert("last-user".into(), user.into());
    }
    doc.insert("status".into(), Value::Object(status));
    Ok(doc)
}

/// The device's `via` gateway ids (invalid entries skipped; they are checked on write).
pub fn via(doc: &Map<String, Value>) -> Vec<DeviceId> {
    strings(doc, "via")
        .filter_map(|s| DeviceId::parse(s).ok())
        .collect()
}

/// The strings of an array member (absent or not an array: none).
pub fn strings<'a>(doc: &'a Map<String, Value>, key: &str) -> impl Iterator<Item = &'a str> {
    doc.get(key)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
}
