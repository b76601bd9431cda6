//! Test harness: the AMQP adapter on 127.0.0.1:0 with the registry and northbound doubles, and
//! an fe2o3-amqp device.
//!
//! [`registry`] holds tenant `t1` with `dev-1` (`sensor1`/`pw1`).

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;

use fe2o3_amqp::connection::{ConnectionHandle, OpenError};
use fe2o3_amqp::link::SendError;
use fe2o3_amqp::sasl_profile::SaslProfile;
use fe2o3_amqp::session::SessionHandle;
use fe2o3_amqp::types::messaging::{Message, Outcome, Properties, Target};
use fe2o3_amqp::types::primitives::Binary;
use fe2o3_amqp::{Connection, Sender, Session};
use ferry_adapter_amqp::{ADAPTER_TYPE, AmqpAdapter, AmqpConfig};
use ferry_adapter_core::test_util::{FakeNorthbound, FakeRegistry, tenant};
use ferry_adapter_core::{AdapterContext, CoreConfig};
use ferry_registry_client::{DeviceId, TenantId};
use serde_json::json;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub type Error = Box<dyn std::error::Error>;
pub type TestResult = Result<(), Error>;

/// A running adapter and its doubles.
pub struct Harness {
    pub registry: Arc<FakeRegistry>,
    pub northbound: Arc<FakeNorthbound>,
    pub addr: SocketAddr,
    pub shutdown: CancellationToken,
    pub task: JoinHandle<()>,
}

/// Tenant `t1` with `dev-1` (`sensor1`/`pw1`).
pub fn registry() -> Result<Arc<FakeRegistry>, Error> {
    let registry = Arc::new(FakeRegistry::new());
    let t1 = TenantId::parse("t1")?;
    registry.add_tenant(tenant(json!({"tenant-id": "t1"}))?);
    registry.add_password_device(&t1, &DeviceId::parse("dev-1")?, "sensor1", "pw1");
    Ok(registry)
}

/// Starts the adapter with [`registry`] on an ephemeral plain port; `tweak` adjusts the config.
pub async fn start(tweak: impl FnOnce(&mut AmqpConfig)) -> Result<Harness, Error> {
    let registry = registry()?;
    let northbound = Arc::new(FakeNorthbound::new());
    let shutdown = CancellationToken::new();
    let ctx = AdapterContext::new(
        &CoreConfig::default(),
        ADAPTER_TYPE,
        Arc::clone(&registry) as _,
        Arc::clone(&northbound) as _,
        shutdown.clone(),
    );
    let any = "127.0.0.1:0".parse()?;
    let mut config = AmqpConfig {
        bind: any,
        tls_bind: any,
        ..AmqpConfig::default()
    };
    tweak(&mut config);
    let adapter = AmqpAdapter::bind(&config, None, ctx).await?;
    let addr = adapter.local_addr().ok_or("no port")?;
    let task = tokio::spawn(adapter.run());
    Ok(Harness {
        registry,
        northbound,
        addr,
        shutdown,
        task,
    })
}

/// Opens a connection with SASL PLAIN.
pub async fn open(
    addr: SocketAddr,
    username: &str,
    password: &str,
) -> Result<ConnectionHandle<()>, OpenError> {
    Connection::builder()
        .container_id("device")
        .sasl_profile(SaslProfile::Plain {
            username: username.to_owned(),
            password: password.to_owned(),
        })
        .open(format!("amqp://{addr}").as_str())
        .await
}

/// A connected device with one anonymous-relay sender link.
pub struct Device {
    pub connection: ConnectionHandle<()>,
    pub session: SessionHandle<()>,
    pub sender: Sender,
}

impl Device {
    pub async fn connect(addr: SocketAddr, username: &str, password: &str) -> Result<Self, Error> {
        let mut connection = open(addr, username, password).await?;
        let mut session = Session::begin(&mut connection).await?;
        let sender = Sender::builder()
            .name("upload")
            .target(Target::builder().build())
            .attach(&mut session)
            .await?;
        Ok(Self {
            connection,
            session,
            sender,
        })
    }

    /// Sends unsettled telemetry or an event with a text payload and waits for the outcome.
    pub async fn send(&mut self, to: &str, payload: &str) -> Result<Outcome, SendError> {
        self.sender.send(message(to, payload)).await
    }
}

/// A text/plain message to `to`.
pub fn message(to: &str, payload: &str) -> Message<fe2o3_amqp::types::messaging::Data> {
    Message::builder()
        .properties(Properties {
            to: Some(to.to_owned()),
            content_type: Some("text/plain".into()),
            ..Properties::default()
        })
        .data(Binary::from(payload.as_bytes().to_vec()))
        .build()
}
