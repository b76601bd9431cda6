//! Test helpers: a registry on a temporary SQLite file served on 127.0.0.1:0, an HTTP client,
//! a recording change listener and rcgen-made certificates.
#![allow(dead_code)]

use std::error::Error;
use std::sync::{Arc, Mutex};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ferry_registry::{Registry, RegistryConfig};
use ferry_registry_client::{ChangeListener, RegistryChange};
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, PublicKeyData};
use reqwest::{Method, StatusCode};
use serde_json::Value;

/// Test result.
pub type TestResult = Result<(), Box<dyn Error>>;

/// A running registry.
pub struct Server {
    /// `http://127.0.0.1:PORT/v1`.
    pub base: String,
    /// Client.
    pub client: reqwest::Client,
    /// The registry handle.
    pub registry: Registry,
    /// Changes seen.
    pub changes: Arc<Recorder>,
    /// The SQLite database file.
    pub db: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

/// Records every change.
#[derive(Default)]
pub struct Recorder(Mutex<Vec<RegistryChange>>);

impl ChangeListener for Recorder {
    fn registry_changed(&self, change: &RegistryChange) {
        if let Ok(mut v) = self.0.lock() {
            v.push(change.clone());
        }
    }
}

impl Recorder {
    /// Takes the changes recorded so far.
    pub fn take(&self) -> Vec<RegistryChange> {
        self.0
            .lock()
            .map(|mut v| std::mem::take(&mut *v))
            .unwrap_or_default()
    }
}

/// A config with a cheap bcrypt cost.
pub fn config() -> RegistryConfig {
    RegistryConfig {
        bcrypt_cost: 4,
        ..RegistryConfig::default()
    }
}

/// Starts a registry with `config`.
pub async fn start(config: RegistryConfig) -> Result<Server, Box<dyn Error>> {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("sub/registry.db");
    let registry = Registry::open(&db, config)?;
    let changes = Arc::new(Recorder::default());
    registry.add_change_listener(changes.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = registry.management_api();
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(Server {
        base: format!("http://{addr}/v1"),
        client: reqwest::Client::new(),
        registry,
        changes,
        db,
        _dir: dir,
    })
}

/// A response reduced to what tests look at.
pub struct Reply {
    /// Status.
    pub status: StatusCode,
    /// `ETag`.
    pub etag: Option<String>,
    /// `Location`.
    pub location: Option<String>,
    /// Body as JSON (`Null` if empty or not JSON).
    pub body: Value,
}

impl Server {
    /// Sends a request with an optional JSON body and headers.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Result<Reply, Box<dyn Error>> {
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            req = req.json(&body);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await?;
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let (status, etag, location) = (resp.status(), header("etag"), header("location"));
        let bytes = resp.bytes().await?;
        Ok(Reply {
            status,
            etag,
            location,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        })
    }

    /// POST.
    pub async fn post(&self, path: &str, body: Value) -> Result<Reply, Box<dyn Error>> {
        self.call(Method::POST, path, Some(body), &[]).await
    }
    /// PUT.
    pub async fn put(&self, path: &str, body: Value) -> Result<Reply, Box<dyn Error>> {
        self.call(Method::PUT, path, Some(body), &[]).await
    }
    /// GET.
    pub async fn get(&self, path: &str) -> Result<Reply, Box<dyn Error>> {
        self.call(Method::GET, path, None, &[]).await
    }
    /// DELETE.
    pub async fn delete(&self, path: &str) -> Result<Reply, Box<dyn Error>> {
        self.call(Method::DELETE, path, None, &[]).await
    }

    /// Creates a tenant and fails the test if that does not give 201.
    pub async fn tenant(&self, id: &str, body: Value) -> TestResult {
        let r = self.post(&format!("/tenants/{id}"), body).await?;
        expect(r.status, StatusCode::CREATED, &r.body)
    }

    /// Creates a device and fails the test if that does not give 201.
    pub async fn device(&self, tenant: &str, id: &str, body: Value) -> TestResult {
        let r = self.post(&format!("/devices/{tenant}/{id}"), body).await?;
        expect(r.status, StatusCode::CREATED, &r.body)
    }

    /// Sets credentials and fails the test if that does not give 204.
    pub async fn credentials(&self, tenant: &str, id: &str, body: Value) -> TestResult {
        let r = self
            .put(&format!("/credentials/{tenant}/{id}"), body)
            .await?;
        expect(r.status, StatusCode::NO_CONTENT, &r.body)
    }
}

/// An error unless `got == want`.
pub fn expect(got: StatusCode, want: StatusCode, body: &Value) -> TestResult {
    if got == want {
        Ok(())
    } else {
        Err(format!("expected {want}, got {got}: {body}").into())
    }
}

/// A self-signed certificate with the given subject; returns (DER, SPKI DER).
pub fn cert(dn: &[(DnType, &str)]) -> Result<(Vec<u8>, Vec<u8>), Box<dyn Error>> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut name = DistinguishedName::new();
    for (t, v) in dn {
        name.push(t.clone(), *v);
    }
    params.distinguished_name = name;
    let key = KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    Ok((cert.der().to_vec(), key.subject_public_key_info()))
}

/// Standard Base64.
pub fn b64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}
