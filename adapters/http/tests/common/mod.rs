//! Test harness: the HTTP adapter on 127.0.0.1:0 with the registry and northbound doubles.
//!
//! The registry holds:
//! * tenant `t1` (every adapter enabled): `dev-1` (`sensor1`/`pw1`), gateway `gw-1` (`gw1`/`gwpw`),
//!   `dev-2` (via `gw-1`, with defaults), `dev-3` (no via);
//! * tenant `t2` with only `hono-mqtt` enabled: `dev-x` (`x`/`pwx`);
//! * tenant `open` allowing unauthenticated HTTP devices: `dev-o`;
//! * tenant `off`, disabled: `dev-off` (`off`/`pwoff`).

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;

use ferry_adapter_core::test_util::{FakeNorthbound, FakeRegistry, tenant};
use ferry_adapter_core::{AdapterContext, CoreConfig};
use ferry_adapter_http::{ADAPTER_TYPE, HttpAdapter, HttpConfig};
use ferry_registry_client::{DeviceId, RegistrationAssertion, TenantId};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub type TestResult = Result<(), Box<dyn std::error::Error>>;
pub type Error = Box<dyn std::error::Error>;

/// A running adapter and its doubles.
pub struct Harness {
    pub registry: Arc<FakeRegistry>,
    pub northbound: Arc<FakeNorthbound>,
    pub addr: Option<SocketAddr>,
    pub tls_addr: Option<SocketAddr>,
    pub shutdown: CancellationToken,
    pub task: JoinHandle<()>,
}

pub fn id(s: &str) -> Result<DeviceId, Error> {
    Ok(DeviceId::parse(s)?)
}

pub fn tid(s: &str) -> Result<TenantId, Error> {
    Ok(TenantId::parse(s)?)
}

/// A config bound to ephemeral ports.
pub fn config() -> HttpConfig {
    HttpConfig {
        bind: "127.0.0.1:0".parse().unwrap_or(HttpConfig::default().bind),
        tls_bind: "127.0.0.1:0"
            .parse()
            .unwrap_or(HttpConfig::default().tls_bind),
        ..HttpConfig::default()
    }
}

fn populate(registry: &FakeRegistry) -> TestResult {
    let t1 = tid("t1")?;
    registry.add_tenant(tenant(json!({"tenant-id": "t1"}))?);
    registry.add_password_device(&t1, &id("dev-1")?, "sensor1", "pw1");
    registry.add_password_device(&t1, &id("gw-1")?, "gw1", "gwpw");
    registry.add_device(
        &t1,
        RegistrationAssertion {
            device_id: id("dev-2")?,
            via: vec![id("gw-1")?],
            defaults: json!({"content-type": "text/dev2", "site": "hall"})
                .as_object()
                .cloned()
                .unwrap_or_default(),
            extra: serde_json::Map::new(),
        },
    );
    registry.add_plain_device(&t1, &id("dev-3")?);

    let t2 = tid("t2")?;
    registry.add_tenant(tenant(json!({
        "tenant-id": "t2", "adapters": [{"type": "hono-mqtt", "enabled": true}]
    }))?);
    registry.add_password_device(&t2, &id("dev-x")?, "x", "pwx");

    let open = tid("open")?;
    registry.add_tenant(tenant(json!({
        "tenant-id": "open",
        "adapters": [{"type": ADAPTER_TYPE, "enabled": true, "device-authentication-required": false}]
    }))?);
    registry.add_plain_device(&open, &id("dev-o")?);

    let off = tid("off")?;
    registry.add_tenant(tenant(json!({"tenant-id": "off", "enabled": false}))?);
    registry.add_password_device(&off, &id("dev-off")?, "off", "pwoff");
    Ok(())
}

/// Starts the adapter with `config` and, optionally, a TLS server configuration.
pub async fn start_with(
    config: HttpConfig,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> Result<Harness, Error> {
    let registry = Arc::new(FakeRegistry::new());
    populate(&registry)?;
    let northbound = Arc::new(FakeNorthbound::new());
    let shutdown = CancellationToken::new();
    let ctx = AdapterContext::new(
        &CoreConfig::default(),
        ADAPTER_TYPE,
        registry.clone(),
        northbound.clone(),
        shutdown.clone(),
    );
    let adapter = HttpAdapter::bind(&config, tls, ctx).await?;
    let (addr, tls_addr) = (adapter.local_addr(), adapter.tls_local_addr());
    let task = tokio::spawn(adapter.run());
    Ok(Harness {
        registry,
        northbound,
        addr,
        tls_addr,
        shutdown,
        task,
    })
}

/// Starts the adapter with the default test configuration and `idle_timeout`, without TLS.
pub async fn start_idle(idle_timeout: std::time::Duration) -> Result<Harness, Error> {
    start_with(
        HttpConfig {
            idle_timeout,
            ..config()
        },
        None,
    )
    .await
}

/// Starts the adapter with the default test configuration, without TLS.
pub async fn start() -> Result<Harness, Error> {
    start_with(config(), None).await
}

impl Harness {
    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> Result<String, Error> {
        let addr = self.addr.ok_or("no insecure port")?;
        Ok(format!("http://{addr}{path}"))
    }

    /// Stops the adapter and waits for it.
    pub async fn stop(self) -> TestResult {
        self.shutdown.cancel();
        tokio::time::timeout(std::time::Duration::from_secs(10), self.task).await??;
        Ok(())
    }
}

/// A plain reqwest client.
pub fn client() -> Result<reqwest::Client, Error> {
    Ok(reqwest::Client::builder().no_proxy().build()?)
}

/// A response read off a raw connection.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Reads one HTTP/1.1 response with a `content-length` from `reader`.
pub async fn read_response(reader: &mut BufReader<&mut TcpStream>) -> Result<RawResponse, Error> {
    let mut line = String::new();
    reader.read_line(&mut line).await?;
    let status = line
        .split(' ')
        .nth(1)
        .ok_or_else(|| format!("no status line: {line:?}"))?
        .parse()?;
    let mut headers = Vec::new();
    loop {
        line.clear();
        reader.read_line(&mut line).await?;
        let trimmed = line.trim_end();
        if trimmed.is_empty() {
            break;
        }
        let (name, value) = trimmed.split_once(':').ok_or("bad header")?;
        headers.push((name.to_ascii_lowercase(), value.trim().to_owned()));
    }
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .map(|(_, v)| v.parse())
        .transpose()?
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body).await?;
    Ok(RawResponse {
        status,
        headers,
        body,
    })
}

/// Sends raw request bytes and reads one response.
pub async fn raw_exchange(stream: &mut TcpStream, request: &[u8]) -> Result<RawResponse, Error> {
    stream.write_all(request).await?;
    let mut reader = BufReader::new(stream);
    read_response(&mut reader).await
}

/// `Basic` header value for `user:password`.
pub fn basic(user: &str, password: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}
