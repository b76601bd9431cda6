//! The SASL layer against the pipeline doubles: outcome codes, and garbage from a peer.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use fe2o3_amqp::Connection;
use fe2o3_amqp::connection::OpenError;
use fe2o3_amqp::sasl_profile::SaslProfile;
use fe2o3_amqp::types::sasl::SaslCode;
use ferry_adapter_amqp::{ADAPTER_TYPE, AmqpAdapter, AmqpConfig};
use ferry_adapter_core::test_util::{FakeNorthbound, FakeRegistry, tenant};
use ferry_adapter_core::{AdapterContext, CoreConfig};
use ferry_registry_client::{DeviceId, TenantId};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

type TestResult = Result<(), Box<dyn std::error::Error>>;

async fn start(
    registry: Arc<FakeRegistry>,
) -> Result<(SocketAddr, CancellationToken), Box<dyn std::error::Error>> {
    let shutdown = CancellationToken::new();
    let ctx = AdapterContext::new(
        &CoreConfig::default(),
        ADAPTER_TYPE,
        registry,
        Arc::new(FakeNorthbound::new()),
        shutdown.clone(),
    );
    let any = "127.0.0.1:0".parse()?;
    let config = AmqpConfig {
        bind: any,
        tls_bind: any,
        handshake_timeout: Duration::from_millis(500),
        ..AmqpConfig::default()
    };
    let adapter = AmqpAdapter::bind(&config, None, ctx).await?;
    let addr = adapter.local_addr().ok_or("no port")?;
    tokio::spawn(adapter.run());
    Ok((addr, shutdown))
}

fn registry() -> Result<Arc<FakeRegistry>, Box<dyn std::error::Error>> {
    let registry = Arc::new(FakeRegistry::new());
    let t1 = TenantId::parse("t1")?;
    registry.add_tenant(tenant(json!({"tenant-id": "t1"}))?);
    registry.add_password_device(&t1, &DeviceId::parse("dev-1")?, "sensor1", "pw1");
    Ok(registry)
}

async fn sasl_code(addr: SocketAddr, password: &str) -> Result<Option<SaslCode>, OpenError> {
    let opened = Connection::builder()
        .container_id("device")
        .sasl_profile(SaslProfile::Plain {
            username: "sensor1@t1".to_owned(),
            password: password.to_owned(),
        })
        .open(format!("amqp://{addr}").as_str())
        .await;
    match opened {
        Ok(mut connection) => {
            let _ = connection.close().await;
            Ok(None)
        }
        Err(OpenError::SaslError { code, .. }) => Ok(Some(code)),
        Err(other) => Err(other),
    }
}

#[tokio::test]
async fn outcome_codes_tell_bad_credentials_from_an_unavailable_registry() -> TestResult {
    let registry = registry()?;
    let (addr, shutdown) = start(Arc::clone(&registry)).await?;
    assert_eq!(sasl_code(addr, "pw1").await?, None);
    assert_eq!(sasl_code(addr, "nope").await?, Some(SaslCode::Auth));
    registry.set_unavailable(true);
    // A fresh password (not in the verification cache) needs the registry.
    assert_eq!(sasl_code(addr, "other").await?, Some(SaslCode::SysTemp));
    shutdown.cancel();
    Ok(())
}

/// Reads until the adapter closes the connection; false if it is still open after `wait`.
async fn closed_within(stream: &mut TcpStream, wait: Duration) -> bool {
    let mut buf = [0u8; 256];
    let read_to_end = async { while let Ok(1..) = stream.read(&mut buf).await {} };
    tokio::time::timeout(wait, read_to_end).await.is_ok()
}

#[tokio::test]
async fn garbage_and_silence_end_the_connection() -> TestResult {
    let (addr, shutdown) = start(registry()?).await?;
    let inputs: [&[u8]; 5] = [
        b"GET / HTTP/1.1\r\n\r\n",
        b"AMQP\x00\x01\x00\x00",
        b"AMQP\x03\x01\x00\x00\xff\xff\xff\xff",
        b"AMQP\x03\x01\x00\x00\x00\x00\x00\x10\x02\x01\x00\x00\x00\x53\x41\xd0\x00\x00\x00\x00",
        b"AMQP\x03\x01",
    ];
    for input in inputs {
        let mut stream = TcpStream::connect(addr).await?;
        stream.write_all(input).await?;
        assert!(
            closed_within(&mut stream, Duration::from_secs(5)).await,
            "{input:?}"
        );
    }
    // The adapter still serves well-behaved devices.
    assert_eq!(sasl_code(addr, "pw1").await?, None);
    shutdown.cancel();
    Ok(())
}
