//! Provisioning through Hono's Device Registry Management API: one tenant, N devices, each with a
//! password credential and a `psk` credential (the password is the key, for CoAP over DTLS), both
//! with the device id as auth-id.
//!
//! Everything is idempotent: an existing tenant or device (409) is fine, and credentials are
//! replaced on every run (the password is not stored anywhere by the harness, so it cannot know
//! whether the stored hash still matches).

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::json;
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
    /// The password every device gets.
    pub password: String,
}

/// The id of device number `index`.
pub fn device_id(index: usize) -> String {
    format!("perf-{index:05}")
}

/// Hono's username of a device: `auth-id@tenant`.
pub fn username(index: usize, tenant: &str) -> String {
    format!("{}@{tenant}", device_id(index))
}

struct Api {
    client: reqwest::Client,
    base: String,
    credentials: Option<(String, String)>,
}

impl Api {
    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
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
        let response = request.send().await.map_err(|source| SetupError::Request {
            what: what.clone(),
            source,
        })?;
        let status = response.status().as_u16();
        if ok.contains(&status) {
            return Ok(());
        }
        let body = response.text().await.unwrap_or_default();
        Err(SetupError::Refused { what, status, body })
    }
}

/// Creates the tenant and the devices (when missing) and sets every device's password.
pub async fn provision(p: &Provisioning) -> Result<(), SetupError> {
    let base = p.management.trim_end_matches('/');
    let base = base.strip_suffix("/v1").unwrap_or(base).to_owned();
    let api = Arc::new(Api {
        client: reqwest::Client::new(),
        base,
        credentials: p.credentials.clone(),
    });
    let tenant = p.tenant.clone();
    api.call(
        format!("create tenant {tenant}"),
        api.request(reqwest::Method::POST, &format!("/tenants/{tenant}"))
            .json(&json!({})),
        &[201, 409],
    )
    .await?;

    let mut tasks = JoinSet::new();
    for index in 0..p.devices {
        if tasks.len() >= CONCURRENCY
            && let Some(done) = tasks.join_next().await
        {
            done.map_err(|e| SetupError::Task(e.to_string()))??;
        }
        let api = api.clone();
        let tenant = tenant.clone();
        let password = p.password.clone();
        tasks.spawn(async move {
            let device = device_id(index);
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
                format!("set the password of {device}"),
                api.request(
                    reqwest::Method::PUT,
                    &format!("/credentials/{tenant}/{device}"),
                )
                .json(&json!([{
                    "type": "hashed-password",
                    "auth-id": device,
                    "secrets": [{"pwd-plain": password}],
                }, {
                    "type": "psk",
                    "auth-id": device,
                    "secrets": [{"key": STANDARD.encode(&password)}],
                }])),
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
