//! The consumer that measures what arrived: Ferry's northbound (an AMQP 1.0 receiver on the
//! harness's own client, [`crate::amqp`], which reads only the body of each message) or, against
//! a plain broker, an MQTT subscriber on the topic the devices publish to. Every payload goes to
//! [`Recorder::arrived`].
//!
//! [`start`] returns once the consumer is attached (so no message is sent before anyone listens),
//! then receives in its own task until the stop token fires.

use std::sync::Arc;
use std::time::Duration;

use ferry_registry_client::TenantId;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::PerfError;
use crate::amqp::{ConnectOptions, Connection, Mechanism, Receiver};
use crate::config::{AuthKind, RunConfig, ScenarioKind, Target};
use crate::net::Heartbeat;
use crate::payload::now_us;
use crate::scenario::Endpoint;
use crate::setup;
use crate::stats::Recorder;
use crate::subscriber::{self, ClientOptions, Polled};

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
                    Some(crate::tls::anonymous_config(config.ca_file.as_deref())?),
                    Some((username.as_str(), config.password.as_str())),
                ),
                (true, AuthKind::X509) => (Some(subscriber_identity(config)?), None),
            };
            let client_id = format!("ferry-perf-consumer-{}", recorder.run());
            let (client, mut events) = subscriber::new(&ClientOptions {
                version: config.mqtt_version,
                address,
                tls: tls.as_ref(),
                client_id: &client_id,
                credentials,
                max_packet: config.payload_size + 1024,
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

/// Credit the northbound receiver grants, topped up at half: it must cover the messages in flight
/// during one refill round trip at the highest rate measured.
const NORTHBOUND_CREDIT: u32 = 5000;
/// How long connecting, authenticating and attaching to the northbound may take.
const ATTACH_TIMEOUT: Duration = Duration::from_secs(10);
/// How long closing the northbound link and connection may take.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// The subscriber's TLS configuration with its own certificate from the harness's PKI.
fn subscriber_identity(config: &RunConfig) -> Result<Arc<rustls::ClientConfig>, PerfError> {
    let cert = crate::pki::Pki::open(&config.pki_dir.join(&config.tenant))
        .and_then(|pki| pki.device("perf-consumer"))
        .map_err(|e| PerfError::Config(format!("--pki-dir: {e}")))?;
    crate::tls::client_config(&crate::tls::roots(config.ca_file.as_deref())?, Some(&cert))
}

/// An AMQP 1.0 receiver on Ferry's northbound (Hono's application side), on the harness's own
/// client: one task reads, records each message's payload (only the Data section is read), and
/// accepts what arrived in ranges with the credit top-up in the same write.
struct Northbound {
    receiver: Receiver<TcpStream>,
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
        let mechanism = match credentials {
            Some((username, password)) => Mechanism::Plain { username, password },
            None => Mechanism::Anonymous,
        };
        let container_id = format!("ferry-perf-{}", std::process::id());
        let attach = async {
            let stream = TcpStream::connect(addr)
                .await
                .map_err(|e| fail("connect", &e))?;
            let _ = stream.set_nodelay(true);
            let options = ConnectOptions {
                container_id: &container_id,
                hostname: None,
                sasl: Some(&mechanism),
            };
            let connection = Connection::open(stream, &options)
                .await
                .map_err(|e| fail("open", &e))?;
            Receiver::attach(
                connection,
                &format!("ferry-perf-{address}"),
                address,
                NORTHBOUND_CREDIT,
            )
            .await
            .map_err(|e| fail(&format!("attach {address}"), &e))
        };
        let receiver = tokio::time::timeout(ATTACH_TIMEOUT, attach)
            .await
            .map_err(|e| fail("open", &e))??;
        Ok(Self { receiver })
    }

    async fn run(mut self, recorder: Arc<Recorder>, stop: CancellationToken) {
        let mut heartbeat = Heartbeat::new(self.receiver.connection().heartbeat_interval());
        let stopped = stop.cancelled();
        tokio::pin!(stopped);
        loop {
            if self.receiver.connection().has_output()
                && let Err(error) = self.receiver.connection().write().await
            {
                recorder.error(format!("northbound {}", error.kind()));
                break;
            }
            tokio::select! {
                biased;
                () = &mut stopped => break,
                read = self.receiver.connection().read() => {
                    let now = now_us();
                    let processed = read.and_then(|()| {
                        self.receiver.process(|body| match body {
                            Ok(payload) => {
                                recorder.arrived(payload, now);
                            }
                            Err(_) => recorder.error("northbound undecodable message"),
                        })
                    });
                    if let Err(error) = processed {
                        recorder.error(format!("northbound {}", error.kind()));
                        break;
                    }
                }
                () = heartbeat.tick() => self.receiver.connection().heartbeat(),
            }
        }
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, self.receiver.close()).await;
    }
}
