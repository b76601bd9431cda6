//! Devices with client certificates: reqwest clients over real TLS, and registry set-up for
//! certificate credentials.

use std::net::SocketAddr;

use ferry_registry_client::test_pki::TestCert;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde_json::{Value as Json, json};

use super::{Error, TestGateway};

/// A device that authenticates with `cert` on the TLS port; `host` is sent as SNI (resolved to
/// the gateway), otherwise the client connects to the IP address and sends no SNI.
pub struct CertDevice {
    client: reqwest::Client,
    base: String,
}

impl CertDevice {
    pub fn new(
        ferry: &TestGateway,
        cert: Option<&TestCert>,
        host: Option<&str>,
    ) -> Result<Self, Error> {
        let addr: SocketAddr = ferry.addrs.https.ok_or("no TLS listener")?;
        let mut builder = reqwest::Client::builder()
            .no_proxy()
            .use_rustls_tls()
            // The gateway's server certificate is a self-signed one for localhost.
            .danger_accept_invalid_certs(true);
        if let Some(cert) = cert {
            builder =
                builder.identity(reqwest::Identity::from_pem(cert.identity_pem().as_bytes())?);
        }
        let base = match host {
            Some(host) => {
                builder = builder.resolve(host, addr);
                format!("https://{host}:{}", addr.port())
            }
            None => format!("https://{addr}"),
        };
        Ok(Self {
            client: builder.build()?,
            base,
        })
    }

    /// POSTs telemetry (or an event) without `authorization`; returns the status.
    pub async fn send(&self, endpoint: &str, body: &'static str) -> Result<u16, Error> {
        let r = self
            .client
            .post(format!("{}{endpoint}", self.base))
            .header("content-type", "text/plain")
            .body(body)
            .send()
            .await?;
        Ok(r.status().as_u16())
    }

    /// PUTs telemetry for another device (gateway form); returns the status.
    pub async fn send_for(
        &self,
        tenant: &str,
        device: &str,
        body: &'static str,
    ) -> Result<u16, Error> {
        let r = self
            .client
            .put(format!("{}/telemetry/{tenant}/{device}", self.base))
            .header("content-type", "text/plain")
            .body(body)
            .send()
            .await?;
        Ok(r.status().as_u16())
    }

    /// The underlying client (for requests with Basic auth on the same port).
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// The base URL of the TLS port.
    pub fn base(&self) -> &str {
        &self.base
    }
}

/// The certificate and key of a `/v1/provisioning/.../certificates` answer (generated key).
pub fn issued_cert(issued: &Json) -> Result<TestCert, Error> {
    let pem = issued["cert"].as_str().ok_or("no cert in the answer")?;
    let cert = CertificateDer::from_pem_slice(pem.as_bytes())?;
    Ok(TestCert {
        chain: vec![cert.clone()],
        cert,
        key_pem: issued["key"]
            .as_str()
            .ok_or("no key in the answer")?
            .to_owned(),
    })
}

impl TestGateway {
    /// Gives a device an `x509-cert` credential with the given auth-id.
    pub async fn x509_credential(
        &self,
        tenant: &str,
        device: &str,
        auth_id: &str,
    ) -> Result<(), Error> {
        let r = self
            .client
            .put(self.mgmt(&format!("/credentials/{tenant}/{device}")))
            .json(&json!([{"type": "x509-cert", "auth-id": auth_id, "secrets": [{}]}]))
            .send()
            .await?;
        if r.status() != 204 {
            return Err(format!(
                "set x509 credential of {device}: {} {}",
                r.status(),
                r.text().await?
            )
            .into());
        }
        Ok(())
    }

    /// Replaces a tenant.
    pub async fn update_tenant(&self, tenant: &str, body: Json) -> Result<(), Error> {
        let r = self
            .client
            .put(self.mgmt(&format!("/tenants/{tenant}")))
            .json(&body)
            .send()
            .await?;
        if r.status() != 204 {
            return Err(
                format!("update tenant {tenant}: {} {}", r.status(), r.text().await?).into(),
            );
        }
        Ok(())
    }

    /// Reads a device document (404 gives `None`).
    pub async fn read_device(&self, tenant: &str, device: &str) -> Result<Option<Json>, Error> {
        let r = self
            .client
            .get(self.mgmt(&format!("/devices/{tenant}/{device}")))
            .send()
            .await?;
        if r.status() == 404 {
            return Ok(None);
        }
        Ok(Some(r.json().await?))
    }

    /// Every device of a tenant (search result).
    pub async fn devices(&self, tenant: &str) -> Result<Vec<Json>, Error> {
        let mut all = Vec::new();
        let mut offset = 0;
        loop {
            let r = self
                .client
                .get(self.mgmt(&format!(
                    "/devices/{tenant}?pageSize=200&pageOffset={offset}"
                )))
                .send()
                .await?;
            if r.status() == 404 {
                return Ok(all);
            }
            let page: Json = r.json().await?;
            let result = page["result"].as_array().cloned().unwrap_or_default();
            let total = page["total"].as_u64().unwrap_or(0);
            all.extend(result);
            offset += 200;
            if all.len() as u64 >= total || offset > 100_000 {
                return Ok(all);
            }
        }
    }

    /// Reads a device's credentials.
    pub async fn read_credentials(&self, tenant: &str, device: &str) -> Result<Json, Error> {
        let r = self
            .client
            .get(self.mgmt(&format!("/credentials/{tenant}/{device}")))
            .send()
            .await?;
        Ok(r.json().await?)
    }
}
