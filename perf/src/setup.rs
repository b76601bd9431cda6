//! Provisioning through Hono's Device Registry Management API: one tenant, N devices, each with a
//! password credential and a `psk` credential (the password is the key, for CoAP over DTLS), both
//! with the device id as auth-id, or with an `x509-cert` credential whose auth-id is the subject
//! DN of its certificate from the harness's CA ([`crate::pki`]). With certificates the tenant
//! trusts that CA, with auto-provisioning enabled (for `provision-storm`).
//!
//! Everything is idempotent: an existing tenant or device (409) is fine, and credentials are
//! replaced on every run (the password is not stored anywhere by the harness, so it cannot know
//! whether the stored hash still matches).

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use tokio::task::JoinSet;

/// How many Management API requests run at once (password hashing is the slow part).
const CONCURRENCY: usize = 8;

/// Provisioning failed.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The Management API could not be reached.
    #[error("Management API request {what} failed: {source}")]
    Request {
        /// What was being done.
        what: String,
        /// The client's error.
        source: reqwest::Error,
    },
    /// The Management API answered with an unexpected status.
    #[error("Management API refused {what}: {status} {body}")]
    Refused {
        /// What was being done.
        what: String,
        /// The status code.
        status: u16,
        /// The response body.
        body: String,
    },
    /// A provisioning task panicked or was cancelled.
    #[error("a provisioning task failed: {0}")]
    Task(String),
    /// A device certificate could not be made or read.
    #[error(transparent)]
    Pki(#[from] crate::pki::PkiError),
    /// The Management API answered with something that is not what Hono specifies.
    #[error("Management API {what}: unexpected answer {body}")]
    Unexpected {
        /// What was being done.
        what: String,
        /// The response body.
        body: String,
    },
}

/// How the devices authenticate, and so which credential each gets.
#[derive(Clone, Debug)]
pub enum Credential {
    /// A `hashed-password` credential with this password (auth-id = device id).
    Password(String),
    /// An `x509-cert` credential for the device's certificate from this PKI; the tenant trusts
    /// the PKI's CA (with auto-provisioning).
    X509(Arc<crate::pki::Pki>),
}

/// What to provision, and where.
#[derive(Clone, Debug)]
pub struct Provisioning {
    /// Base URL of the Management API (`http://127.0.0.1:28080`; a trailing `/v1` is accepted).
    pub management: String,
    /// Basic-auth user of the Management API, if it requires one.
    pub credentials: Option<(String, String)>,
    /// The tenant of the run.
    pub tenant: String,
    /// Number of devices (`perf-00000` ...).
    pub devices: usize,
    /// What every device gets.
    pub credential: Credential,
}

/// The id of device number `index`.
pub fn device_id(index: usize) -> String {
    format!("perf-{index:05}")
}

/// Hono's username of a device: `auth-id@tenant`.
pub fn username(index: usize, tenant: &str) -> String {
    format!("{}@{tenant}", device_id(index))
}

/// A client of the Management API.
#[derive(Debug)]
pub struct Api {
    client: reqwest::Client,
    base: String,
    credentials: Option<(String, String)>,
}

impl Api {
    /// A client for the Management API at `management` (a trailing `/v1` is accepted).
    pub fn new(management: &str, credentials: Option<(String, String)>) -> Self {
        let base = management.trim_end_matches('/');
        let base = base.strip_suffix("/v1").unwrap_or(base).to_owned();
        Self {
            client: reqwest::Client::new(),
            base,
            credentials,
        }
    }

    /// A request to `/v1{path}`.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let r = self
            .client
            .request(method, format!("{}/v1{path}", self.base));
        match &self.credentials {
            Some((user, password)) => r.basic_auth(user, Some(password)),
            None => r,
        }
    }

    async fn call(
        &self,
        what: String,
        request: reqwest::RequestBuilder,
        ok: &[u16],
    ) -> Result<(), SetupError> {
        self.call_response(what, request, ok).await.map(drop)
    }

    /// Sends `request`; the response if its status is one of `ok`.
    pub async fn call_response(
        &self,
        what: String,
        request: reqwest::RequestBuilder,
        ok: &[u16],
    ) -> Result<reqwest::Response, SetupError> {
        let response = request.send().await.map_err(|source| SetupError::Request {
            what: what.clone(),
            source,
        })?;
        let status = response.status().as_u16();
        if ok.contains(&status) {
            return Ok(response);
        }
        let body = response.text().await.unwrap_or_default();
        Err(SetupError::Refused { what, status, body })
    }

    /// Sends `request` and reads a JSON answer (status one of `ok`).
    pub async fn call_json(
        &self,
        what: String,
        request: reqwest::RequestBuilder,
        ok: &[u16],
    ) -> Result<Value, SetupError> {
        let response = self.call_response(what.clone(), request, ok).await?;
        let body = response
            .text()
            .await
            .map_err(|source| SetupError::Request {
                what: what.clone(),
                source,
            })?;
        serde_json::from_str(&body).map_err(|_| SetupError::Unexpected { what, body })
    }

    /// How many devices `tenant` has (the `total` of a device search; none is a 404).
    pub async fn device_count(&self, tenant: &str) -> Result<u64, SetupError> {
        let what = format!("count the devices of {tenant}");
        let request = self.request(
            reqwest::Method::GET,
            &format!("/devices/{tenant}?pageSize=1"),
        );
        let response = self
            .call_response(what.clone(), request, &[200, 404])
            .await?;
        if response.status().as_u16() == 404 {
            return Ok(0);
        }
        let body = response.text().await.unwrap_or_default();
        serde_json::from_str::<Value>(&body)
            .ok()
            .and_then(|v| v.get("total").and_then(Value::as_u64))
            .ok_or(SetupError::Unexpected { what, body })
    }
}

/// The credentials of device `device` for `credential`.
fn credentials_body(device: &str, credential: &Credential) -> Result<Value, SetupError> {
    Ok(match credential {
        Credential::Password(password) => json!([{
            "type": "hashed-password",
            "auth-id": device,
            "secrets": [{"pwd-plain": password}],
        }, {
            "type": "psk",
            "auth-id": device,
            "secrets": [{"key": STANDARD.encode(password)}],
        }]),
        Credential::X509(pki) => json!([{
            "type": "x509-cert",
            "auth-id": pki.device(device)?.subject_dn,
            "secrets": [{}],
        }]),
    })
}

/// Creates the tenant and the devices (when missing) and sets every device's credentials; with
/// certificates, the tenant trusts the harness's CA (auto-provisioning on).
pub async fn provision(p: &Provisioning) -> Result<(), SetupError> {
    let api = Arc::new(Api::new(&p.management, p.credentials.clone()));
    let tenant = p.tenant.clone();
    api.call(
        format!("create tenant {tenant}"),
        api.request(reqwest::Method::POST, &format!("/tenants/{tenant}"))
            .json(&json!({})),
        &[201, 409],
    )
    .await?;
    if let Credential::X509(pki) = &p.credential {
        api.call(
            format!("trust the harness's CA for tenant {tenant}"),
            api.request(reqwest::Method::PUT, &format!("/tenants/{tenant}"))
                .json(&json!({"trusted-ca": [{
                    "cert": pki.ca_base64(),
                    "auto-provisioning-enabled": true,
                }]})),
            &[204],
        )
        .await?;
    }

    let mut tasks = JoinSet::new();
    for index in 0..p.devices {
        if tasks.len() >= CONCURRENCY
            && let Some(done) = tasks.join_next().await
        {
            done.map_err(|e| SetupError::Task(e.to_string()))??;
        }
        let api = api.clone();
        let tenant = tenant.clone();
        let credential = p.credential.clone();
        tasks.spawn(async move {
            let device = device_id(index);
            let body = credentials_body(&device, &credential)?;
            api.call(
                format!("create device {device}"),
                api.request(
                    reqwest::Method::POST,
                    &format!("/devices/{tenant}/{device}"),
                )
                .json(&json!({})),
                &[201, 409],
            )
            .await?;
            api.call(
                format!("set the credentials of {device}"),
                api.request(
                    reqwest::Method::PUT,
                    &format!("/credentials/{tenant}/{device}"),
                )
                .json(&body),
                &[204],
            )
            .await
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.map_err(|e| SetupError::Task(e.to_string()))??;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_names_sort_and_follow_hono_username_form() {
        assert_eq!(device_id(7), "perf-00007");
        assert_eq!(username(12, "perf"), "perf-00012@perf");
    }
}
