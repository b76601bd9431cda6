//! The consumer that measures what arrived: Ferry's northbound (AMQP 1.0 through
//! [`ferry_northbound::Consumer`]) or, against a plain broker, an MQTT subscriber on the topic the
//! devices publish to. Every payload goes to [`Recorder::arrived`].
//!
//! [`start`] returns once the consumer is attached (so no message is sent before anyone listens),
//! then receives in its own task until the stop token fires.

use std::sync::Arc;
use std::time::Duration;

use ferry_northbound::{Consumer, ConsumerError};
use ferry_registry_client::TenantId;
use rumqttc::{AsyncClient, Event, Packet, QoS};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::PerfError;
use crate::config::{RunConfig, ScenarioKind, Target};
use crate::payload::now_us;
use crate::scenario::Endpoint;
use crate::scenario::mqtt::{error_kind, options, tls_config, wait_connack};
use crate::setup;
use crate::stats::Recorder;

/// Starts the consumer for `config`'s target; `None` when the target has none (a plain HTTP
/// server, or the `connections` scenario against a broker).
pub async fn start(
    config: &RunConfig,
    endpoint: Endpoint,
    recorder: Arc<Recorder>,
    stop: CancellationToken,
) -> Result<Option<JoinHandle<()>>, PerfError> {
    match &config.target {
        Target::HttpServer(_) => Ok(None),
        Target::MqttBroker(_) if config.scenario == ScenarioKind::Connections => Ok(None),
        Target::Ferry(ferry) => {
            let tenant = TenantId::parse(&config.tenant)
                .map_err(|e| PerfError::Config(format!("--tenant: {e}")))?;
            let mut consumer = Consumer::connect(
                ferry.northbound.as_str(),
                ferry.northbound_credentials.clone(),
            )
            .await
            .map_err(|e| PerfError::Consumer(e.to_string()))?;
            let northbound_endpoint = match endpoint {
                Endpoint::Telemetry => ferry_adapter_core::Endpoint::Telemetry,
                Endpoint::Event => ferry_adapter_core::Endpoint::Event,
            };
            let mut receiver = consumer
                .receiver(northbound_endpoint, &tenant)
                .await
                .map_err(|e| PerfError::Consumer(e.to_string()))?;
            Ok(Some(tokio::spawn(async move {
                loop {
                    let message = tokio::select! {
                        m = receiver.recv() => m,
                        () = stop.cancelled() => break,
                    };
                    match message {
                        Ok(m) => {
                            recorder.arrived(&m.payload, now_us());
                        }
                        Err(ConsumerError::Malformed(_)) => recorder.error("northbound malformed"),
                        Err(_) => {
                            recorder.error("northbound closed");
                            break;
                        }
                    }
                }
                let _ = receiver.close().await;
                let _ = consumer.close().await;
            })))
        }
        Target::MqttBroker(address) => {
            let tls = if address.tls {
                Some(tls_config(config.ca_file.as_deref())?)
            } else {
                None
            };
            let o = options(
                address,
                tls.as_ref(),
                &format!("ferry-perf-consumer-{}", recorder.run()),
                &setup::username(0, &config.tenant),
                &config.password,
                config.payload_size + 1024,
            );
            let (client, mut events) = AsyncClient::new(o, 16);
            wait_connack(&mut events, Duration::from_secs(10))
                .await
                .map_err(|e| PerfError::Consumer(format!("subscriber: {e}")))?;
            let qos = if config.qos == 1 || endpoint == Endpoint::Event {
                QoS::AtLeastOnce
            } else {
                QoS::AtMostOnce
            };
            client
                .subscribe(endpoint.as_str(), qos)
                .await
                .map_err(|e| PerfError::Consumer(format!("subscribe: {e}")))?;
            let subscribed = async {
                loop {
                    match events.poll().await {
                        Ok(Event::Incoming(Packet::SubAck(_))) => return Ok(()),
                        Ok(_) => {}
                        Err(e) => return Err(error_kind(&e)),
                    }
                }
            };
            tokio::time::timeout(Duration::from_secs(10), subscribed)
                .await
                .map_err(|_| PerfError::Consumer("no SUBACK within 10 s".to_owned()))?
                .map_err(|e| PerfError::Consumer(format!("subscribe: {e}")))?;
            Ok(Some(tokio::spawn(async move {
                loop {
                    let event = tokio::select! {
                        e = events.poll() => e,
                        () = stop.cancelled() => break,
                    };
                    match event {
                        Ok(Event::Incoming(Packet::Publish(p))) => {
                            recorder.arrived(&p.payload, now_us());
                        }
                        Ok(_) => {}
                        Err(e) => {
                            recorder.error(format!("subscriber {}", error_kind(&e)));
                            tokio::time::sleep(Duration::from_millis(500)).await;
                        }
                    }
                }
                let _ = client.try_disconnect();
            })))
        }
    }
}
