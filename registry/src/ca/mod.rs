//! Tenant-managed CAs and device certificates (`/v1/provisioning`, issue 3 part 3).
//!
//! A tenant can have Ferry create a CA (ECDSA P-256) or import one (certificate and key in PEM).
//! The CA becomes one of the tenant's `trusted-ca` entries (with its auto-provisioning settings),
//! so its devices authenticate and can be auto-provisioned; its private key is stored only sealed
//! with the configured `ca_encryption_key`. Device certificates are issued from a CSR, or with a
//! generated key that is returned once and never stored, optionally with an ownership code for
//! claiming (module `claim`).

pub mod pki;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ferry_registry_client::TenantId;
use ferry_registry_client::x509::certificate_info;
use serde_json::{Map, Value, json};

use crate::Registry;
use crate::error::ManageError;
use crate::model::{format_time, new_id};
use crate::store::TenantCaRecord;
use pki::PkiError;

/// Default validity of a created CA, in days.
const CA_DAYS: u32 = 3650;
/// Default validity of a device certificate, in days.
const DEVICE_DAYS: u32 = 365;
/// Members of a create-CA request copied into the `trusted-ca` entry.
const CA_SETTINGS: &[&str] = &[
    "auto-provisioning-enabled",
    "auto-provision-as-gateway",
    "auto-provisioning-device-id-template",
    "auth-id-template",
    crate::model::tenant::CLAIM_REQUIRED,
];

impl From<PkiError> for ManageError {
    fn from(e: PkiError) -> Self {
        match e {
            PkiError::Input(m) => ManageError::BadRequest(m),
            PkiError::Crypto(m) => ManageError::Internal(m),
        }
    }
}

fn pem(der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for chunk in body.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

fn string<'a>(body: &'a Map<String, Value>, key: &str) -> Result<Option<&'a str>, ManageError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(ManageError::BadRequest(format!("'{key}' must be a string"))),
    }
}

fn days(body: &Map<String, Value>, default: u32, max: u32) -> Result<u32, ManageError> {
    match body.get("validity-days") {
        None | Some(Value::Null) => Ok(default.min(max)),
        Some(v) => v
            .as_u64()
            .and_then(|d| u32::try_from(d).ok())
            .filter(|d| (1..=max).contains(d))
            .ok_or_else(|| {
                ManageError::BadRequest(format!("'validity-days' must be between 1 and {max}"))
            }),
    }
}

/// What a certificate answer says about it.
fn describe(der: &[u8]) -> Result<Map<String, Value>, ManageError> {
    let info = certificate_info(der).map_err(|e| ManageError::Internal(e.to_string()))?;
    let mut out = Map::new();
    out.insert("subject-dn".into(), info.subject_dn.into());
    out.insert("not-before".into(), format_time(info.not_before).into());
    out.insert("not-after".into(), format_time(info.not_after).into());
    out.insert("cert".into(), pem(der).into());
    Ok(out)
}

impl Registry {
    fn sealing_key(&self) -> Result<[u8; 32], ManageError> {
        let key = self.config().ca_encryption_key.as_ref().ok_or_else(|| {
            ManageError::NotConfigured(
                "tenant CAs need registry.ca_encryption_key in the configuration".to_owned(),
            )
        })?;
        key.bytes().map_err(ManageError::NotConfigured)
    }

    /// Creates (or, with `cert` and `key`, imports) a CA for `tenant` and adds it to the tenant's
    /// trusted CAs. Answers the CA's id, subject DN, validity and certificate.
    pub(crate) async fn create_tenant_ca(
        &self,
        tenant: &TenantId,
        body: Value,
    ) -> Result<Map<String, Value>, ManageError> {
        let sealing_key = self.sealing_key()?;
        let Value::Object(body) = body else {
            return Err(ManageError::BadRequest(
                "the body must be a JSON object".into(),
            ));
        };
        let current = self.read_tenant(tenant).await?;
        let (cert, key) = match (string(&body, "cert")?, string(&body, "key")?) {
            (Some(cert), Some(key)) => pki::import_ca(cert, key)?,
            (None, None) => {
                let name = string(&body, "common-name")?
                    .map_or_else(|| format!("{tenant} device CA"), str::to_owned);
                let days = days(&body, CA_DAYS, 36_500)?;
                tokio::task::spawn_blocking(move || pki::generate_ca(&name, days))
                    .await
                    .map_err(|e| ManageError::Internal(e.to_string()))??
            }
            _ => {
                return Err(ManageError::BadRequest(
                    "import needs both 'cert' and 'key'".into(),
                ));
            }
        };
        let id = new_id();
        let mut entry = Map::new();
        entry.insert("id".into(), id.clone().into());
        entry.insert("cert".into(), STANDARD.encode(&cert).into());
        for key in CA_SETTINGS {
            if let Some(v) = body.get(*key) {
                entry.insert((*key).to_owned(), v.clone());
            }
        }
        let mut doc = current.value;
        match doc
            .entry("trusted-ca")
            .or_insert_with(|| Value::Array(Vec::new()))
        {
            Value::Array(cas) => cas.push(Value::Object(entry)),
            _ => {
                return Err(ManageError::Internal(
                    "stored 'trusted-ca' is not an array".into(),
                ));
            }
        }
        // Checks (subject DN unique across tenants, settings) before the key is stored.
        self.update_tenant(tenant, Value::Object(doc), Some(current.version))
            .await?;
        let sealed = pki::seal(&sealing_key, &format!("{tenant}/{id}"), &key)?;
        self.store()
            .put_tenant_ca(
                tenant,
                TenantCaRecord {
                    id: id.clone(),
                    cert: cert.clone(),
                    sealed_key: sealed,
                },
            )
            .await?;
        tracing::info!(%tenant, ca = %id, "tenant CA stored");
        let mut out = describe(&cert)?;
        out.insert("id".into(), id.into());
        Ok(out)
    }

    /// A tenant CA's certificate (never its key).
    pub(crate) async fn read_tenant_ca(
        &self,
        tenant: &TenantId,
        ca_id: &str,
    ) -> Result<Map<String, Value>, ManageError> {
        let ca = self
            .store()
            .get_tenant_ca(tenant, ca_id)
            .await?
            .ok_or(ManageError::NotFound)?;
        let mut out = describe(&ca.cert)?;
        out.insert("id".into(), ca.id.into());
        Ok(out)
    }

    /// Issues a device certificate from `csr`, or with a generated key for `common-name`; an
    /// `ownership-code` is stored (hashed) for claiming the device (module `claim`).
    pub(crate) async fn issue_device_certificate(
        &self,
        tenant: &TenantId,
        ca_id: &str,
        body: Value,
    ) -> Result<Map<String, Value>, ManageError> {
        let sealing_key = self.sealing_key()?;
        let Value::Object(body) = body else {
            return Err(ManageError::BadRequest(
                "the body must be a JSON object".into(),
            ));
        };
        let max = self.config().max_device_certificate_days;
        let days = days(&body, DEVICE_DAYS, max)?;
        let code = crate::claim::ownership_code(&body)?;
        let ca = self
            .store()
            .get_tenant_ca(tenant, ca_id)
            .await?
            .ok_or(ManageError::NotFound)?;
        let ca_key = pki::unseal(&sealing_key, &format!("{tenant}/{ca_id}"), &ca.sealed_key)?;
        let csr = string(&body, "csr")?.map(str::to_owned);
        let name = string(&body, "common-name")?.map(str::to_owned);
        let (cert, key) = tokio::task::spawn_blocking(move || match (csr, name) {
            (Some(csr), None) => {
                pki::issue_from_csr(&ca.cert, &ca_key, &csr, days).map(|c| (c, None))
            }
            (None, Some(name)) if !name.is_empty() => {
                pki::issue_generated(&ca.cert, &ca_key, &name, days).map(|(c, k)| (c, Some(k)))
            }
            _ => Err(PkiError::Input(
                "give either 'csr' (PEM) or 'common-name'".to_owned(),
            )),
        })
        .await
        .map_err(|e| ManageError::Internal(e.to_string()))??;
        let mut out = describe(&cert)?;
        if let (Some(code), Some(Value::String(dn))) = (code, out.get("subject-dn")) {
            self.set_ownership_code(tenant, dn, code).await?;
        }
        if let Some(key) = key {
            out.insert("key".into(), key.into());
        }
        out.insert("ca".into(), json!(ca_id));
        Ok(out)
    }
}
