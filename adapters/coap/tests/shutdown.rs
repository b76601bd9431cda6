//! Shutdown runs one way: stop reading, let the request in flight finish, answer it, return.
//! Driven with the adapter-core test doubles (a northbound that takes its time).

use std::sync::Arc;
use std::time::Duration;

use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType, ResponseType};
use ferry_adapter_coap::{CoapAdapter, CoapConfig};
use ferry_adapter_core::test_util::{FakeNorthbound, FakeRegistry, tenant};
use ferry_adapter_core::{AdapterContext, CoreConfig};
use ferry_registry_client::{DeviceId, TenantId};
use serde_json::json;
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

#[tokio::test]
async fn a_request_in_flight_is_answered_after_shutdown_was_requested() -> TestResult {
    let registry = Arc::new(FakeRegistry::new());
    registry.add_tenant(tenant(json!({"tenant-id": "t", "adapters": [
        {"type": "hono-coap", "enabled": true, "device-authentication-required": false}
    ]}))?);
    registry.add_plain_device(&TenantId::parse("t")?, &DeviceId::parse("d")?);
    let northbound = Arc::new(FakeNorthbound::new());
    northbound.set_delay(Some(Duration::from_millis(500)));
    let shutdown = CancellationToken::new();
    let ctx = AdapterContext::new(
        &CoreConfig::default(),
        ferry_adapter_coap::ADAPTER_TYPE,
        registry,
        northbound.clone(),
        shutdown.clone(),
    );
    let any = "127.0.0.1:0".parse()?;
    let config = CoapConfig {
        bind: any,
        dtls_bind: any,
        authentication_required: false,
        timeout_to_ack: Duration::from_secs(5),
        ..CoapConfig::default()
    };
    let adapter = CoapAdapter::bind(&config, None, ctx).await?;
    let addr = adapter.local_addr().ok_or("plain port closed")?;
    let running = tokio::spawn(adapter.run());

    let client = UdpSocket::bind("127.0.0.1:0").await?;
    let mut request = Packet::new();
    request.header.set_type(MessageType::Confirmable);
    request.header.code = MessageClass::Request(RequestType::Put);
    request.header.message_id = 42;
    for segment in ["t", "t", "d"] {
        request.add_option(CoapOption::UriPath, segment.as_bytes().to_vec());
    }
    request.add_option(CoapOption::ContentFormat, vec![0]);
    request.payload = b"in flight".to_vec();
    let bytes = request.to_bytes().map_err(|e| format!("{e:?}"))?;
    client.send_to(&bytes, addr).await?;
    tokio::time::sleep(Duration::from_millis(100)).await;
    shutdown.cancel();

    let mut buf = [0u8; 512];
    let (n, _) = tokio::time::timeout(Duration::from_secs(5), client.recv_from(&mut buf)).await??;
    let response =
        Packet::from_bytes(buf.get(..n).unwrap_or_default()).map_err(|e| format!("{e:?}"))?;
    assert_eq!(response.header.get_type(), MessageType::Acknowledgement);
    assert_eq!(response.header.message_id, 42);
    assert_eq!(
        response.header.code,
        MessageClass::Response(ResponseType::Changed)
    );
    tokio::time::timeout(Duration::from_secs(5), running).await??;
    assert_eq!(northbound.sent().len(), 1);

    // The port is closed for new requests.
    client.send_to(&bytes, addr).await?;
    assert!(
        tokio::time::timeout(Duration::from_millis(300), client.recv_from(&mut buf))
            .await
            .is_err()
    );
    Ok(())
}
