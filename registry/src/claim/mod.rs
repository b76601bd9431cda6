//! Just-in-time provisioning with claiming (Ferry's extension; docs/provisioning.md).
//!
//! A tenant's trusted CA with `claim-required` auto-provisions devices as usual, but marks them
//! unclaimed: their device document gets `status.claim = {"subject-dn": ...}` (the certificate's
//! subject), and registration assertions for them answer 403 [`DEVICE_NOT_CLAIMED`], so the
//! device authenticates but its uploads are refused. The owner claims the device with
//! `POST /v1/provisioning/{tenant}/claims` and the ownership code that was set for the
//! certificate's subject DN when it was issued (or registered later). Codes are kept only as
//! bcrypt hashes. A correct code sets `status.claim.claimed` and reports the device change, so
//! caches drop the refusal and the next upload goes through. Attempts that do not succeed (wrong
//! code, and unknown device ids, which would otherwise let a caller probe for them) are rate
//! limited per device and per tenant ([`limiter`]); the limits live in memory and restart with
//! the process. Removing `claim-required` from a CA later does not claim its waiting devices.
//!
//! [`DEVICE_NOT_CLAIMED`]: ferry_registry_client::DEVICE_NOT_CLAIMED

mod limiter;

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use chrono::Utc;
use ferry_registry_client::x509::normalize_dn;
use ferry_registry_client::{DeviceId, RegistryChange, TenantId};
use serde_json::{Map, Value, json};

use crate::Registry;
use crate::config::ClaimLimits;
use crate::error::ManageError;
use crate::model::{format_time, object};
use crate::password;
use crate::store::{DeviceRecord, StoreError};
use limiter::Window;

/// The `status` member that holds a device's claim state.
const CLAIM: &str = "claim";
/// Shortest and longest ownership code, in bytes (bcrypt reads at most 72).
const CODE_LENGTH: std::ops::RangeInclusive<usize> = 6..=72;

/// The `status.claim` of a device provisioned unclaimed with a certificate of `subject_dn`.
pub(crate) fn unclaimed_status(subject_dn: &str) -> Value {
    json!({ "subject-dn": subject_dn })
}

/// Whether a device document waits for its owner's claim.
pub(crate) fn unclaimed(doc: &Map<String, Value>) -> bool {
    doc.get("status")
        .and_then(|s| s.get(CLAIM))
        .and_then(Value::as_object)
        .is_some_and(|claim| claim.get("claimed").is_none_or(Value::is_null))
}

/// The rate limits of claim attempts.
pub(crate) struct Limits {
    devices: Mutex<Window<(TenantId, DeviceId)>>,
    tenants: Mutex<Window<TenantId>>,
}

impl Limits {
    pub(crate) fn new(config: &ClaimLimits) -> Self {
        let window = Duration::from_secs(config.window_secs);
        Self {
            devices: Mutex::new(Window::new(config.per_device, window)),
            tenants: Mutex::new(Window::new(config.per_tenant, window)),
        }
    }

    /// Counts an attempt on `device`, or refuses it with the seconds to wait.
    fn begin(&self, tenant: &TenantId, device: &DeviceId) -> Result<Attempt<'_>, ManageError> {
        let now = Instant::now();
        let key = (tenant.clone(), device.clone());
        let mut devices = self.devices.lock().unwrap_or_else(PoisonError::into_inner);
        let mut tenants = self.tenants.lock().unwrap_or_else(PoisonError::into_inner);
        let blocked = [devices.check(&key, now), tenants.check(tenant, now)]
            .into_iter()
            .filter_map(Result::err)
            .max();
        if let Some(wait) = blocked {
            // Round up: a client that waits exactly this long is allowed again.
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            return Err(ManageError::TooManyAttempts(secs));
        }
        devices.count(&key, now);
        tenants.count(tenant, now);
        Ok(Attempt {
            limits: self,
            key,
            tenant: tenant.clone(),
        })
    }
}

/// A counted claim attempt; it stays counted unless it succeeded or was no guess.
struct Attempt<'a> {
    limits: &'a Limits,
    key: (TenantId, DeviceId),
    tenant: TenantId,
}

impl Attempt<'_> {
    /// The device was claimed: its counter is cleared and the tenant's attempt given back.
    fn succeeded(self) {
        self.limits
            .devices
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .reset(&self.key);
        self.not_a_guess();
    }

    /// The attempt could not have guessed anything (the device needs no claim): given back.
    fn not_a_guess(self) {
        self.limits
            .devices
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .give_back(&self.key);
        self.limits
            .tenants
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .give_back(&self.tenant);
    }
}

fn string_member<'a>(body: &'a Map<String, Value>, key: &str) -> Result<&'a str, ManageError> {
    body.get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ManageError::BadRequest(format!("'{key}' must be a non-empty string")))
}

/// Checks an ownership code's length.
pub(crate) fn check_code(code: &str) -> Result<(), ManageError> {
    if CODE_LENGTH.contains(&code.len()) {
        Ok(())
    } else {
        Err(ManageError::BadRequest(format!(
            "'ownership-code' must be {} to {} bytes long",
            CODE_LENGTH.start(),
            CODE_LENGTH.end()
        )))
    }
}

/// The `ownership-code` member of a request body, if any (checked).
pub(crate) fn ownership_code(body: &Map<String, Value>) -> Result<Option<String>, ManageError> {
    match body.get("ownership-code") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(code)) => check_code(code).map(|()| Some(code.clone())),
        Some(_) => Err(ManageError::BadRequest(
            "'ownership-code' must be a string".into(),
        )),
    }
}

impl Registry {
    /// Stores the hash of `code` as the ownership code of device certificates with
    /// `subject_dn` in `tenant`, replacing an earlier one.
    pub(crate) async fn set_ownership_code(
        &self,
        tenant: &TenantId,
        subject_dn: &str,
        code: String,
    ) -> Result<(), ManageError> {
        check_code(&code)?;
        let dn = normalize_dn(subject_dn)
            .map_err(|e| ManageError::BadRequest(format!("'subject-dn': {e}")))?;
        if dn.is_empty() {
            return Err(ManageError::BadRequest(
                "'subject-dn' must not be empty".into(),
            ));
        }
        let cost = self.config().bcrypt_cost;
        let hash = tokio::task::spawn_blocking(move || password::bcrypt_2a(&code, cost))
            .await
            .map_err(|e| ManageError::Internal(e.to_string()))?
            .map_err(|e| ManageError::Internal(e.to_string()))?;
        self.store().set_ownership_code(tenant, &dn, &hash).await?;
        tracing::info!(%tenant, subject_dn = %dn, "ownership code set");
        Ok(())
    }

    /// `PUT /v1/provisioning/{tenant}/ownership-codes`: `{"subject-dn", "ownership-code"}`.
    pub(crate) async fn register_ownership_code(
        &self,
        tenant: &TenantId,
        body: Value,
    ) -> Result<(), ManageError> {
        let body = object(body, "the body")?;
        let dn = string_member(&body, "subject-dn")?;
        let code = string_member(&body, "ownership-code")?;
        self.set_ownership_code(tenant, dn, code.to_owned()).await
    }

    /// `POST /v1/provisioning/{tenant}/claims`: `{"device-id", "ownership-code"}`. 403 for a
    /// wrong code, 404 for an unknown device, 409 if it needs no claim (any more), 429 while
    /// rate limited.
    pub(crate) async fn claim_device(
        &self,
        tenant: &TenantId,
        body: Value,
    ) -> Result<(), ManageError> {
        let body = object(body, "the body")?;
        let device: DeviceId = string_member(&body, "device-id")?.parse().map_err(
            |e: ferry_registry_client::InvalidId| ManageError::BadRequest(e.to_string()),
        )?;
        let code = string_member(&body, "ownership-code")?.to_owned();
        let attempt = self.inner.claims.begin(tenant, &device).inspect_err(|_| {
            tracing::warn!(%tenant, %device, "claim refused: too many unsuccessful attempts");
        })?;
        let current = self
            .store()
            .get_device(tenant, &device)
            .await?
            .ok_or(ManageError::NotFound)?;
        let Some(subject_dn) = claim_subject(&current.value.doc) else {
            attempt.not_a_guess();
            return Err(ManageError::Conflict(format!(
                "device {device} is already claimed or needs no claim"
            )));
        };
        let hash = self
            .store()
            .get_ownership_code(tenant, &subject_dn)
            .await?
            .ok_or_else(|| {
                tracing::warn!(%tenant, %device, subject_dn, "claim refused: no ownership code is registered for the certificate");
                ManageError::Forbidden("wrong ownership code".into())
            })?;
        let matches = tokio::task::spawn_blocking(move || {
            password::verify(&code, &hash, Some("bcrypt"), None)
        })
        .await
        .map_err(|e| ManageError::Internal(e.to_string()))?;
        if !matches {
            tracing::warn!(%tenant, %device, "claim refused: wrong ownership code");
            return Err(ManageError::Forbidden("wrong ownership code".into()));
        }
        match self.mark_claimed(tenant, &device).await {
            Ok(()) => {}
            Err(StoreError::NotFound) => return Err(ManageError::NotFound),
            Err(StoreError::Conflict(m)) => {
                attempt.not_a_guess();
                return Err(ManageError::Conflict(m));
            }
            Err(e) => return Err(e.into()),
        }
        attempt.succeeded();
        tracing::info!(%tenant, %device, "device claimed");
        self.notify(&[RegistryChange::Device {
            tenant_id: tenant.clone(),
            device_id: device,
        }]);
        Ok(())
    }

    /// Sets `status.claim.claimed`; `Conflict` if someone else claimed it first.
    async fn mark_claimed(&self, tenant: &TenantId, device: &DeviceId) -> Result<(), StoreError> {
        for _ in 0..3 {
            let current = self
                .store()
                .get_device(tenant, device)
                .await?
                .ok_or(StoreError::NotFound)?;
            let mut doc = current.value.doc;
            if !unclaimed(&doc) {
                return Err(StoreError::Conflict(format!(
                    "device {device} is already claimed"
                )));
            }
            if let Some(Value::Object(claim)) = doc.get_mut("status").and_then(|s| s.get_mut(CLAIM))
            {
                claim.insert("claimed".into(), format_time(Utc::now()).into());
            }
            let record = DeviceRecord {
                id: device.clone(),
                doc,
            };
            match self
                .store()
                .update_device(tenant, record, Some(current.version))
                .await
            {
                Err(StoreError::PreconditionFailed) => continue,
                other => return other.map(|_| ()),
            }
        }
        Err(StoreError::PreconditionFailed)
    }
}

/// The certificate subject DN of a device that waits for its claim.
fn claim_subject(doc: &Map<String, Value>) -> Option<String> {
    if !unclaimed(doc) {
        return None;
    }
    doc.get("status")?
        .get(CLAIM)?
        .get("subject-dn")?
        .as_str()
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(v: Value) -> Map<String, Value> {
        object(v, "doc").unwrap_or_default()
    }

    #[test]
    fn claim_state_of_device_documents() {
        let waiting = doc(json!({"status": {"claim": unclaimed_status("CN=a")}}));
        assert!(unclaimed(&waiting));
        assert_eq!(claim_subject(&waiting).as_deref(), Some("CN=a"));
        let claimed = doc(json!({"status": {"claim": {"subject-dn": "CN=a", "claimed": "x"}}}));
        assert!(!unclaimed(&claimed));
        assert_eq!(claim_subject(&claimed), None);
        assert!(!unclaimed(&doc(json!({"status": {}}))));
        assert!(!unclaimed(&doc(json!({}))));
    }

    #[test]
    fn ownership_codes_are_checked() {
        assert!(check_code("12345").is_err());
        assert!(check_code("123456").is_ok());
        assert!(check_code(&"x".repeat(73)).is_err());
        assert_eq!(
            ownership_code(&doc(json!({"ownership-code": "abcdefgh"}))),
            Ok(Some("abcdefgh".to_owned()))
        );
        assert_eq!(ownership_code(&doc(json!({}))), Ok(None));
        assert!(ownership_code(&doc(json!({"ownership-code": 7}))).is_err());
    }

    #[test]
    fn attempts_are_limited_per_device_and_per_tenant() -> Result<(), Box<dyn std::error::Error>> {
        let limits = Limits::new(&ClaimLimits {
            per_device: 2,
            per_tenant: 3,
            window_secs: 60,
        });
        let t = TenantId::parse("t")?;
        let (a, b, c) = (
            DeviceId::parse("a")?,
            DeviceId::parse("b")?,
            DeviceId::parse("c")?,
        );
        let _ = limits.begin(&t, &a)?;
        let _ = limits.begin(&t, &a)?;
        assert!(matches!(
            limits.begin(&t, &a),
            Err(ManageError::TooManyAttempts(60))
        ));
        // A success clears the device and gives the tenant's attempt back.
        limits.begin(&t, &b)?.succeeded();
        let _ = limits.begin(&t, &b)?;
        // Now the tenant has used its three attempts (a, a, b): c is refused too.
        assert!(matches!(
            limits.begin(&t, &c),
            Err(ManageError::TooManyAttempts(_))
        ));
        // Another tenant is not affected.
        let _ = limits.begin(&TenantId::parse("u")?, &c)?;
        Ok(())
    }
}
