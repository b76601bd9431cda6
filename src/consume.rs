//! `ferry consume`: prints every telemetry message and event of a tenant as it arrives.

use std::fmt::Write as _;
use std::net::SocketAddr;

use anyhow::Context;
use ferry_northbound::{Consumer, ReceivedMessage};
use ferry_registry_client::TenantId;

/// Attaches to `telemetry/TENANT` and `event/TENANT` and prints each message until interrupted.
pub async fn run(
    northbound: SocketAddr,
    tenant: &str,
    credentials: Option<(String, String)>,
) -> anyhow::Result<()> {
    let tenant = TenantId::parse(tenant).context("--tenant")?;
    let mut consumer = Consumer::connect(northbound, credentials)
        .await
        .with_context(|| format!("cannot connect to the northbound at {northbound}"))?;
    let mut subscription = consumer
        .subscribe(&tenant)
        .await
        .with_context(|| format!("cannot attach to telemetry/{tenant} and event/{tenant}"))?;
    eprintln!("consuming telemetry/{tenant} and event/{tenant} from {northbound} (Ctrl-C to stop)");
    loop {
        let message = tokio::select! {
            m = subscription.recv() => m.context("the northbound connection failed")?,
            _ = tokio::signal::ctrl_c() => break,
        };
        println!("{}", render(&message));
    }
    let _ = consumer.close().await;
    Ok(())
}

/// One line per message: endpoint, device, content type, properties and payload.
pub fn render(message: &ReceivedMessage) -> String {
    let mut line = format!(
        "{} device={} content-type={}",
        message.endpoint.as_str(),
        message.device_id,
        message.content_type.as_deref().unwrap_or("-"),
    );
    for (name, value) in &message.properties {
        if name == "device_id" {
            continue;
        }
        let _ = match value {
            serde_json::Value::String(s) => write!(line, " {name}={s}"),
            other => write!(line, " {name}={other}"),
        };
    }
    match std::str::from_utf8(&message.payload) {
        Ok(text) => {
            let _ = write!(line, " payload={text:?}");
        }
        Err(_) => {
            let _ = write!(line, " payload=0x");
            for b in message.payload.iter() {
                let _ = write!(line, "{b:02x}");
            }
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use ferry_adapter_core::Endpoint;
    use ferry_registry_client::DeviceId;

    #[test]
    fn renders_text_and_binary_payloads() -> anyhow::Result<()> {
        let mut message = ReceivedMessage {
            endpoint: Endpoint::Telemetry,
            tenant_id: TenantId::parse("t")?,
            device_id: DeviceId::parse("d1")?,
            content_type: Some("text/plain".into()),
            creation_time: Some(1),
            message_id: None,
            ttl_ms: None,
            durable: false,
            retain: false,
            properties: [("qos".to_owned(), serde_json::json!(0))].into(),
            payload: Bytes::from_static(b"hello"),
        };
        assert_eq!(
            render(&message),
            "telemetry device=d1 content-type=text/plain qos=0 payload=\"hello\""
        );
        message.payload = Bytes::from_static(&[0xff, 0x00]);
        assert!(render(&message).ends_with("payload=0xff00"));
        Ok(())
    }
}
