//! Test helpers: start an embedded northbound on 127.0.0.1:0 and build messages.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ferry_adapter_core::{DownstreamMessage, Endpoint, Qos};
use ferry_northbound::{EmbeddedNorthbound, NorthboundConfig, UserConfig};
use ferry_registry_client::{DeviceId, TenantId};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub type TestResult = Result<(), Box<dyn std::error::Error>>;

pub const USER: &str = "app";
pub const PASSWORD: &str = "app-secret";

/// A running northbound.
pub struct Running {
    pub northbound: Arc<EmbeddedNorthbound>,
    pub shutdown: CancellationToken,
    pub task: JoinHandle<()>,
}

impl Running {
    pub fn addr(&self) -> String {
        self.northbound.local_addr().to_string()
    }

    /// Stops the server and waits for it.
    pub async fn stop(self) -> Result<(), Box<dyn std::error::Error>> {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.task).await??;
        Ok(())
    }

    /// Waits until `n` consumer links of `ENDPOINT/TENANT` are registered.
    pub async fn wait_for_consumers(
        &self,
        endpoint: Endpoint,
        tenant: &str,
        n: usize,
    ) -> TestResult {
        let tenant = TenantId::parse(tenant)?;
        for _ in 0..200 {
            if self.northbound.consumer_count(endpoint, &tenant) == n {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Err(format!("{n} consumers of {tenant} did not attach").into())
    }
}

/// A config with one PLAIN user, data in `dir`, bound to an ephemeral port.
pub fn config(dir: &Path) -> NorthboundConfig {
    NorthboundConfig {
        bind: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        users: vec![UserConfig {
            name: USER.into(),
            password: PASSWORD.into(),
        }],
        data_dir: dir.to_path_buf(),
        send_timeout: Duration::from_millis(500),
        redelivery_delay: Duration::from_millis(50),
        ..NorthboundConfig::default()
    }
}

pub async fn start(config: NorthboundConfig) -> Result<Running, Box<dyn std::error::Error>> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
    let northbound = EmbeddedNorthbound::bind(config).await?;
    let shutdown = CancellationToken::new();
    let task = tokio::spawn({
        let northbound = northbound.clone();
        let shutdown = shutdown.clone();
        async move { northbound.run(shutdown).await }
    });
    Ok(Running {
        northbound,
        shutdown,
        task,
    })
}

pub fn credentials() -> Option<(String, String)> {
    Some((USER.to_owned(), PASSWORD.to_owned()))
}

pub fn message(
    endpoint: Endpoint,
    qos: Qos,
    tenant: &str,
    device: &str,
    payload: &[u8],
) -> Result<DownstreamMessage, Box<dyn std::error::Error>> {
    Ok(DownstreamMessage {
        tenant_id: TenantId::parse(tenant)?,
        device_id: DeviceId::parse(device)?,
        endpoint,
        qos,
        content_type: "text/plain".into(),
        creation_time: 1_764_000_000_000,
        ttl_ms: None,
        ttd: None,
        orig_adapter: "hono-http".into(),
        orig_address: format!("/{}", endpoint.as_str()),
        properties: BTreeMap::new(),
        retain: false,
        payload: Bytes::copy_from_slice(payload),
    })
}

/// Awaits `fut` for at most 5 s.
pub async fn within<F: std::future::Future>(
    fut: F,
) -> Result<F::Output, Box<dyn std::error::Error>> {
    Ok(tokio::time::timeout(Duration::from_secs(5), fut).await?)
}

/// Sends `message` in a task, so the test can act as the consumer meanwhile.
pub fn spawn_send(
    running: &Running,
    message: DownstreamMessage,
) -> JoinHandle<Result<(), ferry_adapter_core::NorthboundError>> {
    use ferry_adapter_core::Northbound;
    let northbound = running.northbound.clone();
    tokio::spawn(async move { northbound.send(message).await })
}
