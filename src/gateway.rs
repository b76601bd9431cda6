//! Wiring: starts the embedded registry and its Management API, the northbound endpoint and the
//! protocol adapters in one process, and stops them in one way (cancel, stop accepting, drain).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use async_trait::async_trait;
use bytes::Bytes;
use ferry_adapter_amqp::AmqpAdapter;
use ferry_adapter_coap::{CoapAdapter, DtlsCertificate};
use ferry_adapter_core::{AdapterContext, DownstreamMessage, Endpoint, Northbound, Qos};
use ferry_adapter_http::HttpAdapter;
use ferry_adapter_mqtt::MqttAdapter;
use ferry_northbound::{EmbeddedNorthbound, NorthboundConfig};
use ferry_registry::{
    NotifyError, PROVISIONING_NOTIFICATION, ProvisioningNotice, ProvisioningNotifier, Registry,
};
use ferry_registry_client::{Cached, ChangeListener, DeviceRegistry};

use crate::config::Config;
use crate::tls;

/// How long in-flight work may take to finish after shutdown was requested.
const DRAIN_DEADLINE: Duration = Duration::from_secs(10);

/// The addresses a running gateway listens on.
#[derive(Debug, Clone, Copy)]
pub struct Addresses {
    /// Management API (HTTP, `/v1`).
    pub management: SocketAddr,
    /// Northbound AMQP 1.0 endpoint.
    pub northbound: SocketAddr,
    /// HTTP adapter, plain (absent when the insecure port is disabled).
    pub http: Option<SocketAddr>,
    /// HTTP adapter, TLS.
    pub https: Option<SocketAddr>,
    /// MQTT adapter, plain (absent when the insecure port is disabled).
    pub mqtt: Option<SocketAddr>,
    /// MQTT adapter, TLS.
    pub mqtts: Option<SocketAddr>,
    /// AMQP adapter, plain (absent when the insecure port is disabled).
    pub amqp: Option<SocketAddr>,
    /// AMQP adapter, TLS (`amqps`).
    pub amqps: Option<SocketAddr>,
    /// CoAP adapter, plain UDP (only when authentication is switched off).
    pub coap: Option<SocketAddr>,
    /// CoAP adapter, DTLS over UDP.
    pub coaps: Option<SocketAddr>,
}

impl Addresses {
    /// Every listener with what it serves, in start-up order.
    pub fn listeners(&self) -> Vec<(&'static str, SocketAddr)> {
        let mut all = vec![
            (
                "Management API (Hono device registry, http /v1)",
                self.management,
            ),
            ("northbound AMQP 1.0 endpoint", self.northbound),
        ];
        let optional = [
            ("HTTP adapter", self.http),
            ("HTTP adapter (TLS)", self.https),
            ("MQTT adapter", self.mqtt),
            ("MQTT adapter (TLS)", self.mqtts),
            ("AMQP adapter", self.amqp),
            ("AMQP adapter (TLS)", self.amqps),
            ("CoAP adapter (UDP)", self.coap),
            ("CoAP adapter (DTLS, UDP)", self.coaps),
        ];
        all.extend(
            optional
                .into_iter()
                .filter_map(|(name, a)| Some((name, a?))),
        );
        all
    }

    /// Logs one line per listener with its address.
    fn log(&self) {
        for (name, address) in self.listeners() {
            tracing::info!(%address, "{name} listening");
        }
    }
}

/// A running Ferry: every component started from one [`Config`].
pub struct Gateway {
    addresses: Addresses,
    shutdown: CancellationToken,
    tasks: JoinSet<anyhow::Result<()>>,
}

impl Gateway {
    /// Opens the registry, binds every listener and starts serving.
    pub async fn start(config: Config) -> anyhow::Result<Gateway> {
        check_protected_mode(&config)?;
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("cannot create data dir {}", config.data_dir.display()))?;
        let shutdown = CancellationToken::new();
        let mut tasks = JoinSet::new();

        let registry = Registry::open(
            &config.data_dir.join("registry.sqlite"),
            config.registry.clone(),
        )
        .context("cannot open the device registry")?;
        let cached = Arc::new(Cached::new(
            registry.clone(),
            config.cache.to_cache_config(),
        ));
        registry.add_change_listener(cached.clone() as Arc<dyn ChangeListener>);
        let device_registry: Arc<dyn DeviceRegistry> = cached;

        let management = tokio::net::TcpListener::bind(config.management.bind)
            .await
            .with_context(|| {
                format!(
                    "cannot bind the Management API to {}",
                    config.management.bind
                )
            })?;
        let management_addr = management.local_addr()?;
        let router = registry.management_api();
        let token = shutdown.clone();
        tasks.spawn(async move {
            axum::serve(management, router)
                .with_graceful_shutdown(token.cancelled_owned())
                .await
                .context("Management API failed")
        });

        let mut northbound_config = config.northbound.clone();
        // Protected mode (checked above) guarantees that anonymous access stays on loopback.
        northbound_config.allow_anonymous = northbound_config.users.is_empty();
        if northbound_config.data_dir == NorthboundConfig::default().data_dir {
            northbound_config.data_dir = config.data_dir.clone();
        }
        let northbound = EmbeddedNorthbound::bind(northbound_config)
            .await
            .context("cannot start the northbound endpoint")?;
        let northbound_addr = northbound.local_addr();
        let sender: Arc<dyn Northbound> = northbound.clone();
        registry.set_provisioning_notifier(Arc::new(NorthboundNotifier(sender.clone())));
        let token = shutdown.clone();
        tasks.spawn(async move {
            northbound.run(token).await;
            Ok(())
        });

        let tls = tls::server_config(&config.tls, &config.data_dir)?;
        // One context per adapter type; all share one authenticator (bcrypt bound and cache).
        let http_context = AdapterContext::new(
            &config.adapter,
            "hono-http",
            device_registry.clone(),
            sender.clone(),
            shutdown.clone(),
        );
        let context = |adapter_type: &str| http_context.for_adapter(adapter_type);
        let http = HttpAdapter::bind(&config.http, Some(tls.clone()), context("hono-http"))
            .await
            .context("cannot start the HTTP adapter")?;
        // Same certificate and provider; MQTT clients negotiate no ALPN (or `mqtt`), so the
        // HTTP listener's `http/1.1` must not be required of them.
        let mut mqtt_tls = (*tls).clone();
        mqtt_tls.alpn_protocols = Vec::new();
        let mqtt = MqttAdapter::bind(
            &config.mqtt,
            Some(Arc::new(mqtt_tls)),
            context(ferry_adapter_mqtt::ADAPTER_TYPE),
        )
        .await
        .context("cannot start the MQTT adapter")?;
        // `AmqpAdapter::bind`, like `MqttAdapter::bind`, clears ALPN on its own copy and enables
        // secret extraction (TLS 1.3 connections move to adapter-core's record layer).
        let amqp = AmqpAdapter::bind(
            &config.amqp,
            Some(tls),
            context(ferry_adapter_amqp::ADAPTER_TYPE),
        )
        .await
        .context("cannot start the AMQP adapter")?;
        // After the cache's listener: the adapter's re-checks then see the change.
        registry.add_change_listener(http.change_listener());
        registry.add_change_listener(amqp.change_listener());
        registry.add_change_listener(mqtt.change_listener());
        let configured_tls = config.tls.cert.as_deref().zip(config.tls.key.as_deref());
        let certificate = DtlsCertificate::load_or_create(configured_tls, &config.data_dir)
            .context("cannot prepare the DTLS server certificate")?;
        let coap = CoapAdapter::bind(
            &config.coap,
            Some(certificate),
            context(ferry_adapter_coap::ADAPTER_TYPE),
        )
        .await
        .context("cannot start the CoAP adapter")?;

        let addresses = Addresses {
            management: management_addr,
            northbound: northbound_addr,
            http: http.local_addr(),
            https: http.tls_local_addr(),
            mqtt: mqtt.local_addr(),
            mqtts: mqtt.tls_local_addr(),
            amqp: amqp.local_addr(),
            amqps: amqp.tls_local_addr(),
            coap: coap.local_addr(),
            coaps: Some(coap.dtls_local_addr()),
        };
        tasks.spawn(async move {
            http.run().await;
            Ok(())
        });
        tasks.spawn(async move {
            mqtt.run().await;
            Ok(())
        });
        tasks.spawn(async move {
            amqp.run().await;
            Ok(())
        });
        tasks.spawn(async move {
            coap.run().await;
            Ok(())
        });
        addresses.log();
        Ok(Gateway {
            addresses,
            shutdown,
            tasks,
        })
    }

    /// Where everything listens.
    pub fn addresses(&self) -> Addresses {
        self.addresses
    }

    /// Waits until a component fails or `stop` fires, then shuts everything down.
    pub async fn run_until(mut self, stop: impl Future<Output = ()>) -> anyhow::Result<()> {
        let outcome = tokio::select! {
            () = stop => Ok(()),
            Some(done) = self.tasks.join_next() => match done {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(e),
                Err(e) => Err(anyhow::anyhow!("a component panicked: {e}")),
            },
        };
        self.shutdown().await;
        outcome
    }

    /// Stops accepting, lets in-flight work finish (within a deadline) and returns.
    pub async fn shutdown(mut self) {
        self.shutdown.cancel();
        let drain = async {
            while let Some(done) = self.tasks.join_next().await {
                if let Ok(Err(e)) = done {
                    tracing::warn!(error = %e, "component stopped with an error");
                }
            }
        };
        if tokio::time::timeout(DRAIN_DEADLINE, drain).await.is_err() {
            tracing::warn!("shutdown deadline passed; aborting the remaining tasks");
            self.tasks.abort_all();
        }
    }
}

/// Sends the registry's provisioning notifications northbound as Hono's well-known event
/// (hono-api.md §11): `event/TENANT`, empty body, `hono_registration_status=NEW`.
struct NorthboundNotifier(Arc<dyn Northbound>);

/// `orig_adapter` of the registry's own events.
const REGISTRY_ADAPTER: &str = "hono-device-registry";

#[async_trait]
impl ProvisioningNotifier for NorthboundNotifier {
    async fn device_provisioned(&self, notice: &ProvisioningNotice) -> Result<(), NotifyError> {
        let mut properties = std::collections::BTreeMap::new();
        properties.insert("hono_registration_status".to_owned(), "NEW".into());
        if let Some(gateway) = &notice.gateway_id {
            properties.insert("gateway_id".to_owned(), gateway.as_str().into());
        }
        if notice.unclaimed {
            // Ferry's addition: the device waits for its owner's claim.
            properties.insert("ferry_unclaimed".to_owned(), true.into());
        }
        let message = DownstreamMessage {
            tenant_id: notice.tenant_id.clone(),
            device_id: notice.device_id.clone(),
            endpoint: Endpoint::Event,
            qos: Qos::AtLeastOnce,
            content_type: PROVISIONING_NOTIFICATION.to_owned(),
            creation_time: ferry_adapter_core::message::now_millis(),
            ttl_ms: None,
            ttd: None,
            orig_adapter: REGISTRY_ADAPTER.into(),
            orig_address: String::new(),
            properties,
            retain: false,
            payload: Bytes::new(),
        };
        // Events are stored durably before `send` returns.
        self.0
            .send(message)
            .await
            .map_err(|e| NotifyError(e.to_string()))
    }
}

/// Anonymous application access is only allowed while nobody but local users can connect.
fn check_protected_mode(config: &Config) -> anyhow::Result<()> {
    if config.northbound.users.is_empty() && !config.northbound.bind.ip().is_loopback() {
        bail!(
            "protected mode: the northbound endpoint would listen on {} without any application \
             user; configure [[northbound.users]] or bind it to a loopback address",
            config.northbound.bind
        );
    }
    if config.registry.users.is_empty() && !config.management.bind.ip().is_loopback() {
        bail!(
            "protected mode: the Management API would listen on {} without any user; configure \
             [[registry.users]] or bind it to a loopback address",
            config.management.bind
        );
    }
    Ok(())
}
