//! Starts an embedded northbound and feeds it demo messages, for trying consumers by hand.
//!
//! `cargo run -p ferry-northbound --example demo_server -- 127.0.0.1:15672 DATA_DIR` listens with
//! user `app` / password `secret` (and ANONYMOUS), stores one event for tenant `demo`, and sends a
//! QoS 1 telemetry message for `demo` every second, printing each outcome.

use std::time::Duration;

use bytes::Bytes;
use ferry_adapter_core::{DownstreamMessage, Endpoint, Northbound, Qos};
use ferry_northbound::{EmbeddedNorthbound, NorthboundConfig, UserConfig};
use ferry_registry_client::{DeviceId, TenantId};
use tokio_util::sync::CancellationToken;

fn demo(endpoint: Endpoint, n: u32) -> Result<DownstreamMessage, Box<dyn std::error::Error>> {
    Ok(DownstreamMessage {
        tenant_id: TenantId::parse("demo")?,
        device_id: DeviceId::parse("device-1")?,
        endpoint,
        qos: Qos::AtLeastOnce,
        content_type: "application/json".into(),
        creation_time: chrono::Utc::now().timestamp_millis(),
        ttl_ms: None,
        ttd: None,
        orig_adapter: "hono-http".into(),
        orig_address: format!("/{}", endpoint.as_str()),
        properties: Default::default(),
        retain: false,
        payload: Bytes::from(format!("{{\"n\":{n}}}")),
    })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt().with_env_filter("info").init();
    let mut args = std::env::args().skip(1);
    let bind = args
        .next()
        .unwrap_or_else(|| "127.0.0.1:15672".into())
        .parse()?;
    let data_dir = args.next().unwrap_or_else(|| "data".into()).into();
    let config = NorthboundConfig {
        bind,
        users: vec![UserConfig {
            name: "app".into(),
            password: "secret".into(),
        }],
        allow_anonymous: true,
        data_dir,
        ..NorthboundConfig::default()
    };
    let northbound = EmbeddedNorthbound::bind(config).await?;
    println!("listening on {}", northbound.local_addr());
    let shutdown = CancellationToken::new();
    let server = tokio::spawn({
        let northbound = northbound.clone();
        let shutdown = shutdown.clone();
        async move { northbound.run(shutdown).await }
    });
    northbound.send(demo(Endpoint::Event, 0)?).await?;
    println!("event stored");
    for n in 1.. {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        let result = northbound.send(demo(Endpoint::Telemetry, n)?).await;
        println!("telemetry {n}: {result:?}");
    }
    shutdown.cancel();
    server.await?;
    Ok(())
}
