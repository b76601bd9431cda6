//! The consumer that measures what arrived: Ferry's northbound (an AMQP 1.0 receiver on
//! fe2o3-amqp, as `ferry_northbound::Consumer` but with a larger credit window) or, against a plain
//! broker, an MQTT subscriber on the topic the devices publish to. Every payload goes to [`Recorder::arrived`].
//!
//! [`start`] returns once the consumer is attached (so no message is sent before anyone listens),
//! then receives in its own task until the stop token fires.

use std::sync::Arc;
use std::time::Duration;

use fe2o3_amqp::connection::ConnectionHandle;
use fe2o3_amqp::link::{CreditMode, Receiver};
use fe2o3_amqp::sasl_profile::SaslProfile;
use fe2o3_amqp::session::SessionHandle;
use fe2o3_amqp::types::messaging::Body;
use fe2o3_amqp::types::primitives::Value;
use fe2o3_amqp::{Connection, Delivery, Session};
use ferry_registry_client::TenantId;
use futures_util::FutureExt;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::PerfError;
use crate::config::{AuthKind, RunConfig, ScenarioKind, Target};
use crate::payload::now_us;
use crate::scenario::Endpoint;
use crate::scenario::mqtt::client::{self as mqtt_client, ClientOptions, Polled};
use crate::scenario::mqtt::tls_config;
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
            TenantId::parse(&config.tenant)
                .map_err(|e| PerfError::Config(format!("--tenant: {e}")))?;
            let address = format!("{}/{}", endpoint.as_str(), config.tenant);
            let receiver = Northbound::attach(
                &ferry.northbound,
                ferry.northbound_credentials.clone(),
                &address,
            )
            .await?;
            Ok(Some(tokio::spawn(receiver.run(recorder, stop))))
        }
        Target::MqttBroker(address) => {
            let username = setup::username(0, &config.tenant);
            // With client certificates the subscriber presents one too (`perf-consumer`).
            let (tls, credentials) = match (address.tls, config.auth) {
                (false, _) => (None, Some((username.as_str(), config.password.as_str()))),
                (true, AuthKind::Password) => (
                    Some(tls_config(config.ca_file.as_deref())?),
                    Some((username.as_str(), config.password.as_str())),
                ),
                (true, AuthKind::X509) => (Some(subscriber_identity(config)?), None),
            };
            let client_id = format!("ferry-perf-consumer-{}", recorder.run());
            let (client, mut events) = mqtt_client::new(&ClientOptions {
                version: config.mqtt_version,
                address,
                tls: tls.as_ref(),
                client_id: &client_id,
                credentials,
                max_packet: config.payload_size + 1024,
                inflight: 100,
                channel: 16,
                connect_timeout: Duration::from_secs(10),
            });
            events
                .connected(Duration::from_secs(10))
                .await
                .map_err(|e| PerfError::Consumer(format!("subscriber: {e}")))?;
            let qos = u8::from(config.qos == 1 || endpoint == Endpoint::Event);
            if !client.subscribe(endpoint.as_str(), qos).await {
                return Err(PerfError::Consumer("subscribe: client closed".to_owned()));
            }
            events
                .until(Duration::from_secs(10), |p| matches!(p, Polled::Subscribed))
                .await
                .map_err(|e| PerfError::Consumer(format!("subscribe: {e}")))?;
            Ok(Some(tokio::spawn(async move {
                // One wait for the stop for the whole run. Not `biased`: a broker with a backlog
                // keeps the event loop ready, and the stop must still win.
                let stopped = stop.cancelled_owned();
                tokio::pin!(stopped);
                loop {
                    let event = tokio::select! {
                        e = events.poll() => e,
                        () = &mut stopped => break,
                    };
                    match event {
                        Ok(Polled::Message(payload)) => {
                            recorder.arrived(&payload, now_us());
                        }
                        Ok(_) => {}
                        Err(kind) => {
                            recorder.error(format!("subscriber {kind}"));
                            tokio::time::sleep(Duration::from_millis(500)).await;
                        }
                    }
                }
                client.disconnect();
            })))
        }
    }
}

/// Most deliveries the northbound receiver settles with one `accept_all`.
const ACCEPT_BATCH: usize = 256;

/// Records the payload of `delivery`, received at `now` (µs since the epoch).
fn arrived(recorder: &Recorder, delivery: &Delivery<Body<Value>>, now: u64) {
    match delivery.body() {
        Body::Data(sections) if sections.len() == 1 => {
            recorder.arrived(&sections[0].0, now);
        }
        Body::Data(sections) => {
            let bytes: Vec<u8> = sections.iter().flat_map(|d| d.0.iter().copied()).collect();
            recorder.arrived(&bytes, now);
        }
        _ => {
            recorder.arrived(&[], now);
        }
    }
}

/// Credit the northbound receiver grants. The client library refills it at half, so it must cover
/// the messages in flight during one refill round trip at the highest rate measured.
const NORTHBOUND_CREDIT: u32 = 5000;

/// The subscriber's TLS configuration with its own certificate from the harness's PKI.
fn subscriber_identity(config: &RunConfig) -> Result<Arc<rustls::ClientConfig>, PerfError> {
    let cert = crate::pki::Pki::open(&config.pki_dir.join(&config.tenant))
        .and_then(|pki| pki.device("perf-consumer"))
        .map_err(|e| PerfError::Config(format!("--pki-dir: {e}")))?;
    crate::tls::client_config(&crate::tls::roots(config.ca_file.as_deref())?, Some(&cert))
}

/// An AMQP 1.0 receiver on Ferry's northbound (Hono's application side).
///
/// This is what `ferry_northbound::Consumer` does, with a larger credit window: that client
/// grants 100 and refills at half, one flow round trip per 50 messages, which must not be what
/// limits a measurement. (At the rates measured so far, 100 and 5,000 gave the same throughput.)
struct Northbound {
    connection: ConnectionHandle<()>,
    session: SessionHandle<()>,
    receiver: Receiver,
}

impl Northbound {
    async fn attach(
        addr: &str,
        credentials: Option<(String, String)>,
        address: &str,
    ) -> Result<Self, PerfError> {
        let fail = |what: &str, e: &dyn std::fmt::Display| {
            PerfError::Consumer(format!("northbound {addr}: {what}: {e}"))
        };
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| fail("connect", &e))?;
        let _ = stream.set_nodelay(true);
        let profile = match credentials {
            Some((username, password)) => SaslProfile::Plain { username, password },
            None => SaslProfile::Anonymous,
        };
        let open = Connection::builder()
            .container_id(format!("ferry-perf-{}", std::process::id()))
            .sasl_profile(profile)
            // fe2o3 flushes every frame: let the dispositions of a busy link share syscalls.
            .open_with_stream(ferry_adapter_core::coalesce::Coalescing::tcp(stream));
        let mut connection = tokio::time::timeout(Duration::from_secs(10), open)
            .await
            .map_err(|e| fail("open", &e))?
            .map_err(|e| fail("open", &e))?;
        let mut session = Session::begin(&mut connection)
            .await
            .map_err(|e| fail("begin", &e))?;
        let receiver = Receiver::builder()
            .name(format!("ferry-perf-{address}"))
            .source(address.to_owned())
            .credit_mode(CreditMode::Auto(NORTHBOUND_CREDIT))
            .auto_accept(false)
            .attach(&mut session)
            .await
            .map_err(|e| fail(&format!("attach {address}"), &e))?;
        Ok(Self {
            connection,
            session,
            receiver,
        })
    }

    async fn run(mut self, recorder: Arc<Recorder>, stop: CancellationToken) {
        let mut batch = Vec::with_capacity(ACCEPT_BATCH);
        loop {
            let first: Delivery<Body<Value>> = tokio::select! {
                d = self.receiver.recv() => match d {
                    Ok(d) => d,
                    Err(_) => {
                        recorder.error("northbound closed");
                        break;
                    }
                },
                () = stop.cancelled() => break,
            };
            batch.push(first);
            // Whatever else has already arrived is settled with the first: one disposition per
            // run of consecutive deliveries, as an application that keeps up would send.
            while batch.len() < ACCEPT_BATCH {
                match self.receiver.recv().now_or_never() {
                    Some(Ok(d)) => batch.push(d),
                    _ => break,
                }
            }
            let now = now_us();
            for delivery in &batch {
                arrived(&recorder, delivery, now);
            }
            // Pre-settled deliveries (QoS 0 telemetry) need no disposition; fe2o3 skips them.
            if self.receiver.accept_all(batch.drain(..)).await.is_err() {
                recorder.error("northbound settle");
                break;
            }
        }
        let _ = self.receiver.close().await;
        let _ = self.session.end().await;
        let _ = self.connection.close().await;
    }
}
