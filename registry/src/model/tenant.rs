//! Tenant documents: Management API checks, CA derivation from `cert`, Tenant API conversion.

use std::collections::HashSet;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use ferry_registry_client::x509::{certificate_info, normalize_dn};
use ferry_registry_client::{TenantId, TenantObject};
use serde_json::{Map, Value};

use super::{bad, base64, check_common, check_type, format_time, new_id, object, time};
use crate::error::ManageError;
use crate::store::TenantRecord;

/// Checks and normalizes a tenant body: derives CA fields from `cert`, gives CAs an `id`,
/// and collects what the store keeps unique.
pub fn prepare(id: TenantId, body: Value) -> Result<TenantRecord, ManageError> {
    let mut doc = object(body, "tenant")?;
    doc.remove("tenant-id");
    check_common(&doc)?;
    for key in [
        "defaults",
        "resource-limits",
        "registration-limits",
        "tracing",
    ] {
        check_type(&doc, key, "an object", Value::is_object)?;
    }
    check_type(&doc, "minimum-message-size", "a number", Value::is_u64)?;
    check_type(&doc, "trust-anchor-group", "a string", Value::is_string)?;
    let trust_anchor_group = TenantRecord::anchor_group_of(&doc);
    let alias = match doc.get("alias") {
        None | Some(Value::Null) => None,
        Some(Value::String(a))
            if !a.is_empty()
                && a.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') =>
        {
            Some(a.clone())
        }
        Some(_) => return Err(bad("'alias' must match [a-z0-9-]+")),
    };
    if let Some(limits) = doc.get("registration-limits").and_then(Value::as_object) {
        for key in ["max-devices", "max-credentials-per-device"] {
            check_type(limits, key, "an integer >= -1", |v| {
                v.as_i64().is_some_and(|n| n >= -1)
            })?;
        }
    }
    check_adapters(&doc)?;
    let mut ca_subjects = Vec::new();
    if let Some(cas) = doc.get_mut("trusted-ca") {
        let Value::Array(cas) = cas else {
            return Err(bad("'trusted-ca' must be an array"));
        };
        let mut ids = HashSet::new();
        for ca in cas.iter_mut() {
            let Value::Object(ca) = ca else {
                return Err(bad("'trusted-ca' entries must be objects"));
            };
            prepare_ca(ca)?;
            let ca_id = ca
                .get("id")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            if !ids.insert(ca_id) {
                return Err(bad("'trusted-ca' ids must be unique"));
            }
            if let Some(dn) = ca.get("subject-dn").and_then(Value::as_str)
                && !ca_subjects.iter().any(|s| s == dn)
            {
                ca_subjects.push(dn.to_owned());
            }
        }
    }
    Ok(TenantRecord {
        id,
        alias,
        ca_subjects,
        trust_anchor_group,
        doc,
    })
}

fn check_adapters(doc: &Map<String, Value>) -> Result<(), ManageError> {
    let Some(adapters) = doc.get("adapters") else {
        return Ok(());
    };
    let Value::Array(adapters) = adapters else {
        return Err(bad("'adapters' must be an array"));
    };
    let mut types = HashSet::new();
    for a in adapters {
        let a = a
            .as_object()
            .ok_or_else(|| bad("'adapters' entries must be objects"))?;
        let t = a
            .get("type")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| bad("every adapter entry needs a 'type'"))?;
        if !types.insert(t) {
            return Err(bad(format!("adapter type {t} is listed twice")));
        }
        check_common(a)?;
        check_type(
            a,
            "device-authentication-required",
            "a boolean",
            Value::is_boolean,
        )?;
    }
    Ok(())
}

fn prepare_ca(ca: &mut Map<String, Value>) -> Result<(), ManageError> {
    for key in [
        "auto-provisioning-enabled",
        "auto-provision-as-gateway",
        CLAIM_REQUIRED,
    ] {
        check_type(ca, key, "a boolean", Value::is_boolean)?;
    }
    if claim_required(ca) {
        // Claiming happens after auto-provisioning: the one implies the other, and every
        // adapter (Hono's too) then sends the certificate along.
        if ca.get("auto-provisioning-enabled") == Some(&Value::Bool(false)) {
            return Err(bad(
                "'claim-required' needs 'auto-provisioning-enabled' (leave it out or set it true)",
            ));
        }
        ca.insert("auto-provisioning-enabled".into(), true.into());
    }
    for key in [
        "id",
        "auth-id-template",
        "auto-provisioning-device-id-template",
        "subject-dn",
        "public-key",
        "algorithm",
        "cert",
    ] {
        check_type(ca, key, "a string", Value::is_string)?;
    }
    if let Some(cert) = ca.get("cert").and_then(Value::as_str) {
        let der = base64(cert, "cert")?;
        let info = certificate_info(&der).map_err(|e| bad(format!("'cert': {e}")))?;
        let algorithm = info
            .algorithm
            .hono_name()
            .ok_or_else(|| bad("the CA key must be RSA or EC"))?;
        ca.insert("subject-dn".into(), info.subject_dn.into());
        ca.insert("public-key".into(), STANDARD.encode(&info.spki_der).into());
        ca.insert("algorithm".into(), algorithm.into());
        ca.insert("not-before".into(), format_time(info.not_before).into());
        ca.insert("not-after".into(), format_time(info.not_after).into());
    }
    let dn = ca
        .get("subject-dn")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let dn = normalize_dn(dn).map_err(|e| bad(format!("'subject-dn': {e}")))?;
    if dn.is_empty() {
        return Err(bad(
            "a trusted CA needs 'subject-dn' and 'public-key', or 'cert'",
        ));
    }
    ca.insert("subject-dn".into(), dn.into());
    let key = ca
        .get("public-key")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("a trusted CA needs 'public-key' or 'cert'"))?;
    base64(key, "public-key")?;
    match ca.get("algorithm").and_then(Value::as_str) {
        None => {
            ca.insert("algorithm".into(), "RSA".into());
        }
        Some("RSA" | "EC") => {}
        Some(_) => return Err(bad("'algorithm' must be RSA or EC")),
    }
    let not_before =
        time(ca, "not-before")?.ok_or_else(|| bad("a trusted CA needs 'not-before'"))?;
    let not_after = time(ca, "not-after")?.ok_or_else(|| bad("a trusted CA needs 'not-after'"))?;
    if not_after < not_before {
        return Err(bad("'not-after' lies before 'not-before'"));
    }
    if ca.get("id").is_none_or(Value::is_null) {
        ca.insert("id".into(), new_id().into());
    }
    Ok(())
}

/// Ferry's `trusted-ca` member that makes devices of the CA wait for an owner's claim.
pub const CLAIM_REQUIRED: &str = "claim-required";

/// Whether a `trusted-ca` entry has `claim-required`.
pub fn claim_required(ca: &Map<String, Value>) -> bool {
    ca.get(CLAIM_REQUIRED).and_then(Value::as_bool) == Some(true)
}

/// `registration-limits.max-devices`, if limited.
pub fn max_devices(doc: &Map<String, Value>) -> Option<u64> {
    limit(doc, "max-devices")
}

/// `registration-limits.max-credentials-per-device`, if limited.
pub fn max_credentials_per_device(doc: &Map<String, Value>) -> Option<u64> {
    limit(doc, "max-credentials-per-device")
}

fn limit(doc: &Map<String, Value>, key: &str) -> Option<u64> {
    doc.get("registration-limits")?.get(key)?.as_u64()
}

fn ca_valid_at(ca: &Value, now: DateTime<Utc>) -> bool {
    let at = |key: &str| {
        ca.get(key)
            .and_then(Value::as_str)
            .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
    };
    at("not-before").is_none_or(|t| t <= now) && at("not-after").is_none_or(|t| now <= t)
}

/// The Tenant API object: CAs outside their validity left out, management-only CA members
/// (`cert`, `auto-provision-as-gateway`, `auto-provisioning-device-id-template`) removed.
pub fn tenant_object(
    id: &TenantId,
    doc: &Map<String, Value>,
    now: DateTime<Utc>,
) -> Result<TenantObject, ManageError> {
    let mut doc = doc.clone();
    if let Some(Value::Array(cas)) = doc.get_mut("trusted-ca") {
        cas.retain(|ca| ca_valid_at(ca, now));
        for ca in cas.iter_mut().filter_map(Value::as_object_mut) {
            for key in [
                "cert",
                "auto-provision-as-gateway",
                "auto-provisioning-device-id-template",
            ] {
                ca.remove(key);
            }
        }
    }
    doc.insert("tenant-id".into(), id.as_str().into());
    serde_json::from_value(Value::Object(doc))
        .map_err(|e| ManageError::Internal(format!("stored tenant {id}: {e}")))
}
