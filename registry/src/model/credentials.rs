//! Credential sets: checks, password hashing, patch semantics of secret ids, and the views for
//! the Management API (confidential members stripped) and the Credentials API (complete).

use std::collections::{HashMap, HashSet};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ferry_registry_client::x509::{certificate_info, normalize_dn, subject_dn_rfc2253};
use ferry_registry_client::{CredentialType, CredentialsObject, DeviceId};
use serde_json::{Map, Value};

use super::{bad, base64, check_common, check_type, new_id, object, time};
use crate::config::MAX_BCRYPT_COST;
use crate::error::ManageError;
use crate::password::{HASH_FUNCTIONS, bcrypt_2a};
use crate::store::CredentialRecord;

/// Secret members a PUT with only a secret `id` keeps from the stored secret.
const CONFIDENTIAL: &[&str] = &["pwd-plain", "pwd-hash", "salt", "key", "cert"];

/// Secret members the Management API never returns: as Hono's `stripPrivateInfo`, which also
/// removes `hash-function`.
const STRIPPED: &[&str] = &[
    "pwd-plain",
    "pwd-hash",
    "salt",
    "key",
    "cert",
    "hash-function",
];

/// Checks a PUT body (an array of credentials) against the stored set and builds the new set.
/// Blocking (bcrypt): run it off the runtime.
pub fn prepare(
    body: Value,
    existing: &[CredentialRecord],
    bcrypt_cost: u32,
) -> Result<Vec<CredentialRecord>, ManageError> {
    let Value::Array(entries) = body else {
        return Err(bad("credentials must be a JSON array"));
    };
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(entries.len());
    for entry in entries {
        let record = prepare_one(object(entry, "a credential")?, existing, bcrypt_cost)?;
        if !seen.insert((record.credential_type, record.auth_id.clone())) {
            return Err(bad(format!(
                "type {} and auth-id {} appear twice",
                record.credential_type.as_str(),
                record.auth_id
            )));
        }
        out.push(record);
    }
    Ok(out)
}

fn prepare_one(
    mut doc: Map<String, Value>,
    existing: &[CredentialRecord],
    cost: u32,
) -> Result<CredentialRecord, ManageError> {
    let kind = doc
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let credential_type = CredentialType::parse(&kind)
        .ok_or_else(|| bad(format!("unknown credential type {kind:?}")))?;
    check_common(&doc)?;
    check_type(&doc, "auth-id", "a string", Value::is_string)?;
    let mut secrets = match doc.remove("secrets") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(s)) => s,
        Some(_) => return Err(bad("'secrets' must be an array")),
    };
    // x509-cert: the auth-id may come from a write-only certificate.
    if credential_type == CredentialType::X509Cert {
        if secrets.len() > 1 {
            return Err(bad("x509-cert credentials have exactly one secret"));
        }
        if secrets.is_empty() {
            secrets.push(Value::Object(Map::new()));
        }
        let cert = secrets
            .iter_mut()
            .filter_map(Value::as_object_mut)
            .find_map(|s| s.remove("cert"))
            .or_else(|| doc.remove("cert"));
        if let Some(cert) = cert {
            let der = base64(cert.as_str().unwrap_or_default(), "cert")?;
            let dn = subject_dn_rfc2253(&der).map_err(|e| bad(format!("'cert': {e}")))?;
            match doc.get("auth-id").and_then(Value::as_str) {
                Some(given) if normalize_dn(given).unwrap_or_else(|_| given.to_owned()) != dn => {
                    return Err(bad("'auth-id' does not match the certificate's subject DN"));
                }
                _ => doc.insert("auth-id".into(), dn.into()),
            };
        }
    } else if secrets.is_empty() {
        return Err(bad(format!("{kind} credentials need at least one secret")));
    }
    let mut auth_id = doc
        .get("auth-id")
        .and_then(Value::as_str)
        .filter(|a| !a.is_empty())
        .ok_or_else(|| bad("'auth-id' is required"))?
        .to_owned();
    if credential_type == CredentialType::X509Cert {
        // As Hono does: a DN auth-id is kept in RFC 2253 form (templated ids stay as they are).
        if let Ok(dn) = normalize_dn(&auth_id) {
            auth_id = dn;
            doc.insert("auth-id".into(), auth_id.clone().into());
        }
    }
    let stored: HashMap<&str, &Map<String, Value>> = existing
        .iter()
        .filter(|r| r.credential_type == credential_type && r.auth_id == auth_id)
        .flat_map(|r| {
            r.doc
                .get("secrets")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
        })
        .filter_map(|s| Some((s.get("id")?.as_str()?, s.as_object()?)))
        .collect();
    let mut ids = HashSet::new();
    let mut prepared = Vec::with_capacity(secrets.len());
    for secret in secrets {
        let secret = prepare_secret(credential_type, object(secret, "a secret")?, &stored, cost)?;
        let id = secret
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        if !ids.insert(id) {
            return Err(bad("secret ids must be unique"));
        }
        prepared.push(Value::Object(secret));
    }
    doc.insert("secrets".into(), Value::Array(prepared));
    Ok(CredentialRecord {
        credential_type,
        auth_id,
        doc,
    })
}

fn has_value(secret: &Map<String, Value>, keys: &[&str]) -> bool {
    keys.iter()
        .any(|k| secret.get(*k).is_some_and(|v| !v.is_null()))
}

fn prepare_secret(
    kind: CredentialType,
    mut secret: Map<String, Value>,
    stored: &HashMap<&str, &Map<String, Value>>,
    cost: u32,
) -> Result<Map<String, Value>, ManageError> {
    check_type(&secret, "id", "a string", Value::is_string)?;
    check_type(&secret, "enabled", "a boolean", Value::is_boolean)?;
    let value_keys: &[&str] = match kind {
        CredentialType::HashedPassword => &["pwd-plain", "pwd-hash"],
        CredentialType::Psk => &["key"],
        CredentialType::Rpk => &["key", "cert"],
        CredentialType::X509Cert => &[],
    };
    match secret.get("id").and_then(Value::as_str) {
        Some(id) => {
            let old = stored
                .get(id)
                .ok_or_else(|| bad(format!("unknown secret id {id}")))?;
            if !has_value(&secret, value_keys) {
                // Patch: keep the stored confidential members.
                for key in CONFIDENTIAL.iter().chain(&["hash-function", "algorithm"]) {
                    if let Some(v) = old.get(*key) {
                        secret.insert((*key).to_owned(), v.clone());
                    }
                }
            }
        }
        None => {
            secret.insert("id".into(), new_id().into());
        }
    }
    let not_before = time(&mut secret, "not-before")?;
    let not_after = time(&mut secret, "not-after")?;
    if let (Some(b), Some(a)) = (not_before, not_after)
        && a < b
    {
        return Err(bad("'not-after' lies before 'not-before'"));
    }
    match kind {
        CredentialType::HashedPassword => password_secret(&mut secret, cost)?,
        CredentialType::Psk => {
            let key = secret
                .get("key")
                .and_then(Value::as_str)
                .ok_or_else(|| bad("a psk secret needs a 'key'"))?;
            if base64(key, "key")?.is_empty() {
                return Err(bad("'key' must not be empty"));
            }
        }
        CredentialType::Rpk => rpk_secret(&mut secret)?,
        CredentialType::X509Cert => {}
    }
    Ok(secret)
}

fn password_secret(secret: &mut Map<String, Value>, cost: u32) -> Result<(), ManageError> {
    if let Some(plain) = secret.remove("pwd-plain").filter(|v| !v.is_null()) {
        let plain = plain
            .as_str()
            .filter(|p| !p.is_empty())
            .ok_or_else(|| bad("'pwd-plain' must be a non-empty string"))?;
        if has_value(secret, &["pwd-hash", "salt"]) {
            return Err(bad(
                "'pwd-plain' cannot be combined with 'pwd-hash' or 'salt'",
            ));
        }
        let hash = bcrypt_2a(plain, cost).map_err(|e| ManageError::Internal(e.to_string()))?;
        secret.insert("pwd-hash".into(), hash.into());
        secret.insert("hash-function".into(), "bcrypt".into());
        return Ok(());
    }
    let hash = secret
        .get("pwd-hash")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("a password secret needs 'pwd-plain' or 'pwd-hash'"))?
        .to_owned();
    let function = match secret.get("hash-function") {
        None | Some(Value::Null) => "sha-256".to_owned(),
        Some(Value::String(f)) if HASH_FUNCTIONS.contains(&f.as_str()) => f.clone(),
        Some(_) => return Err(bad("'hash-function' must be sha-256, sha-512 or bcrypt")),
    };
    if function == "bcrypt" {
        if !hash.starts_with("$2a$") || hash.len() != 60 || has_value(secret, &["salt"]) {
            return Err(bad(
                "a bcrypt 'pwd-hash' must be a $2a$ hash, without 'salt'",
            ));
        }
        let hash_cost: u32 = hash
            .get(4..6)
            .and_then(|c| c.parse().ok())
            .unwrap_or(u32::MAX);
        if hash_cost > MAX_BCRYPT_COST {
            return Err(bad(format!(
                "the bcrypt cost of 'pwd-hash' exceeds {MAX_BCRYPT_COST}"
            )));
        }
    } else {
        let len = if function == "sha-256" { 32 } else { 64 };
        if base64(&hash, "pwd-hash")?.len() != len {
            return Err(bad(format!("'pwd-hash' is not a Base64 {function} digest")));
        }
        if let Some(salt) = secret.get("salt").filter(|v| !v.is_null()) {
            base64(salt.as_str().unwrap_or("!"), "salt")?;
        }
    }
    secret.insert("hash-function".into(), function.into());
    Ok(())
}

fn rpk_secret(secret: &mut Map<String, Value>) -> Result<(), ManageError> {
    if let Some(cert) = secret.remove("cert").filter(|v| !v.is_null()) {
        let der = base64(cert.as_str().unwrap_or_default(), "cert")?;
        let info = certificate_info(&der).map_err(|e| bad(format!("'cert': {e}")))?;
        let alg = info
            .algorithm
            .hono_name()
            .ok_or_else(|| bad("the key must be RSA or EC"))?;
        secret.insert("key".into(), STANDARD.encode(&info.spki_der).into());
        secret.insert("algorithm".into(), alg.into());
    }
    let key = secret
        .get("key")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("an rpk secret needs 'key' or 'cert'"))?;
    base64(key, "key")?;
    match secret.get("algorithm").and_then(Value::as_str) {
        None => {
            secret.insert("algorithm".into(), "RSA".into());
        }
        Some("RSA" | "EC") => {}
        Some(_) => return Err(bad("'algorithm' must be RSA or EC")),
    }
    Ok(())
}

/// The Management API view of a credential: confidential secret members removed.
pub fn management_view(record: &CredentialRecord) -> Value {
    let mut doc = record.doc.clone();
    if let Some(Value::Array(secrets)) = doc.get_mut("secrets") {
        for s in secrets.iter_mut().filter_map(Value::as_object_mut) {
            for key in STRIPPED {
                s.remove(*key);
            }
        }
    }
    Value::Object(doc)
}

/// The Credentials API object, complete with hashes and keys.
pub fn credentials_object(
    device_id: &DeviceId,
    record: &CredentialRecord,
) -> Result<CredentialsObject, ManageError> {
    let mut doc = record.doc.clone();
    doc.insert("device-id".into(), device_id.as_str().into());
    serde_json::from_value(Value::Object(doc))
        .map_err(|e| ManageError::Internal(format!("stored credentials: {e}")))
}
