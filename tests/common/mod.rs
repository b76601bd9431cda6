//! Test helpers: start a whole Ferry on ephemeral loopback ports with a temporary data dir,
//! provision through the real Management API, and consume northbound with fe2o3-amqp.

#![allow(dead_code, missing_docs)]

pub mod x509;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use fe2o3_amqp::types::messaging::Body;
use fe2o3_amqp::types::primitives::{SimpleValue, Value};
use fe2o3_amqp::{
    Connection, Receiver, Session, connection::ConnectionHandle, session::SessionHandle,
};
use ferry::{Addresses, Config, Gateway};
use serde_json::{Value as Json, json};

pub type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// A Ferry started for one test.
pub struct TestGateway {
    pub gateway: Gateway,
    pub addrs: Addresses,
    pub client: reqwest::Client,
}

pub fn config(data_dir: &Path) -> Config {
    let mut config = Config::ephemeral(data_dir);
    config.registry.bcrypt_cost = 4;
    config
}

pub trait ExpectOrPanicOpt<T> {
    fn expect_or_panic_opt(self, what: &str) -> T;
}

impl<T> ExpectOrPanicOpt<T> for Option<T> {
    fn expect_or_panic_opt(self, what: &str) -> T {
        match self {
            Some(v) => v,
            None => panic!("{what} is missing"),
        }
    }
}

/// Panics with a message in test setup code (the workspace lints forbid bare `expect`).
pub trait ExpectOrPanic<T> {
    fn expect_or_panic(self, what: &str) -> T;
}

impl<T, E: std::fmt::Debug> ExpectOrPanic<T> for Result<T, E> {
    fn expect_or_panic(self, what: &str) -> T {
        match self {
            Ok(v) => v,
            Err(e) => panic!("{what}: {e:?}"),
        }
    }
}

impl TestGateway {
    pub async fn start(data_dir: &Path) -> Result<Self, Error> {
        Self::start_with(config(data_dir)).await
    }

    pub async fn start_with(config: Config) -> Result<Self, Error> {
        let gateway = Gateway::start(config).await.map_err(|e| format!("{e:#}"))?;
        let addrs = gateway.addresses();
        Ok(Self {
            gateway,
            addrs,
            client: reqwest::Client::new(),
        })
    }

    pub fn mgmt(&self, path: &str) -> String {
        format!("http://{}/v1{}", self.addrs.management, path)
    }

    pub fn http(&self, path: &str) -> String {
        let addr = self
            .addrs
            .http
            .expect_or_panic_opt("the plain HTTP listener");
        format!("http://{addr}{path}")
    }

    /// Creates a tenant with the given body (`{}` for defaults).
    pub async fn tenant(&self, tenant: &str, body: Json) -> Result<(), Error> {
        let r = self
            .client
            .post(self.mgmt(&format!("/tenants/{tenant}")))
            .json(&body)
            .send()
            .await?;
        if r.status() != 201 {
            return Err(
                format!("create tenant {tenant}: {} {}", r.status(), r.text().await?).into(),
            );
        }
        Ok(())
    }

    /// Creates a device with the given body.
    pub async fn device(&self, tenant: &str, device: &str, body: Json) -> Result<(), Error> {
        let r = self
            .client
            .post(self.mgmt(&format!("/devices/{tenant}/{device}")))
            .json(&body)
            .send()
            .await?;
        if r.status() != 201 {
            return Err(
                format!("create device {device}: {} {}", r.status(), r.text().await?).into(),
            );
        }
        Ok(())
    }

    /// Gives a device a password credential with auth-id = device id.
    pub async fn password(&self, tenant: &str, device: &str, password: &str) -> Result<(), Error> {
        let r = self
            .client
            .put(self.mgmt(&format!("/credentials/{tenant}/{device}")))
            .json(&json!([{
                "type": "hashed-password",
                "auth-id": device,
                "secrets": [{"pwd-plain": password}]
            }]))
            .send()
            .await?;
        if r.status() != 204 {
            return Err(format!(
                "set password of {device}: {} {}",
                r.status(),
                r.text().await?
            )
            .into());
        }
        Ok(())
    }

    /// Tenant + device + password in one go.
    pub async fn provision(&self, tenant: &str, device: &str, password: &str) -> Result<(), Error> {
        self.tenant(tenant, json!({})).await?;
        self.device(tenant, device, json!({})).await?;
        self.password(tenant, device, password).await
    }

    /// Sends telemetry (or an event) as an authenticated device; returns the status code.
    pub async fn upload(
        &self,
        endpoint: &str,
        user: &str,
        password: &str,
        body: &'static str,
    ) -> Result<u16, Error> {
        let r = self
            .client
            .post(self.http(endpoint))
            .basic_auth(user, Some(password))
            .header("content-type", "text/plain")
            .body(body)
            .send()
            .await?;
        Ok(r.status().as_u16())
    }

    /// Gives a device `psk` credentials: `auth_id` with the pre-shared `key`.
    pub async fn psk(
        &self,
        tenant: &str,
        device: &str,
        auth_id: &str,
        key: &[u8],
    ) -> Result<(), Error> {
        use base64::Engine;
        let key = base64::engine::general_purpose::STANDARD.encode(key);
        let r = self
            .client
            .put(self.mgmt(&format!("/credentials/{tenant}/{device}")))
            .json(&json!([{"type": "psk", "auth-id": auth_id, "secrets": [{"key": key}]}]))
            .send()
            .await?;
        if r.status() != 204 {
            return Err(format!("set psk of {device}: {} {}", r.status(), r.text().await?).into());
        }
        Ok(())
    }

    pub async fn stop(self) {
        self.gateway.shutdown().await;
    }
}

/// A message as an application sees it.
#[derive(Debug)]
pub struct Received {
    pub to: Option<String>,
    pub content_type: Option<String>,
    pub durable: bool,
    pub properties: BTreeMap<String, SimpleValue>,
    pub payload: Vec<u8>,
}

impl Received {
    pub fn prop(&self, name: &str) -> Option<String> {
        self.properties.get(name).map(|v| match v {
            SimpleValue::String(s) => s.clone(),
            SimpleValue::Symbol(s) => s.0.clone(),
            SimpleValue::Int(i) => i.to_string(),
            SimpleValue::Long(i) => i.to_string(),
            SimpleValue::Uint(i) => i.to_string(),
            SimpleValue::Ulong(i) => i.to_string(),
            SimpleValue::Ubyte(i) => i.to_string(),
            SimpleValue::Byte(i) => i.to_string(),
            SimpleValue::Short(i) => i.to_string(),
            SimpleValue::Ushort(i) => i.to_string(),
            SimpleValue::Bool(b) => b.to_string(),
            other => format!("{other:?}"),
        })
    }
}

/// An application consuming one northbound address with fe2o3-amqp.
pub struct AmqpConsumer {
    connection: ConnectionHandle<()>,
    session: SessionHandle<()>,
    receiver: Receiver,
}

impl AmqpConsumer {
    pub async fn attach(addrs: &Addresses, address: &str) -> Result<Self, Error> {
        let mut connection = Connection::builder()
            .container_id(format!("test-consumer-{}", uuid_like()))
            .sasl_profile(fe2o3_amqp::sasl_profile::SaslProfile::Anonymous)
            .open(format!("amqp://{}", addrs.northbound).as_str())
            .await?;
        let mut session = Session::begin(&mut connection).await?;
        let receiver =
            Receiver::attach(&mut session, format!("rx-{}", uuid_like()), address).await?;
        Ok(Self {
            connection,
            session,
            receiver,
        })
    }

    /// The next message within `wait`, accepted; `None` if none arrived.
    pub async fn next(&mut self, wait: Duration) -> Result<Option<Received>, Error> {
        self.next_accepted_after(wait, Duration::ZERO).await
    }

    /// The next message within `wait`, accepted only `delay` after it arrived (a slow
    /// application); `None` if none arrived.
    pub async fn next_accepted_after(
        &mut self,
        wait: Duration,
        delay: Duration,
    ) -> Result<Option<Received>, Error> {
        let delivery = match tokio::time::timeout(wait, self.receiver.recv::<Body<Value>>()).await {
            Err(_) => return Ok(None),
            Ok(d) => d?,
        };
        let message = delivery.message();
        let payload = match &message.body {
            Body::Data(batch) => batch.iter().flat_map(|d| d.0.iter().copied()).collect(),
            Body::Empty => Vec::new(),
            other => return Err(format!("unexpected body {other:?}").into()),
        };
        let received = Received {
            to: message.properties.as_ref().and_then(|p| p.to.clone()),
            content_type: message
                .properties
                .as_ref()
                .and_then(|p| p.content_type.as_ref().map(|c| c.0.clone())),
            durable: message.header.as_ref().is_some_and(|h| h.durable),
            properties: message
                .application_properties
                .as_ref()
                .map(|a| a.0.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                .unwrap_or_default(),
            payload,
        };
        tokio::time::sleep(delay).await;
        self.receiver.accept(&delivery).await?;
        Ok(Some(received))
    }

    /// The next delivery within `wait`, left unsettled (settle it with
    /// [`Self::settle`]); `None` if none arrived.
    pub async fn next_unsettled(
        &mut self,
        wait: Duration,
    ) -> Result<Option<fe2o3_amqp::link::delivery::Delivery<Body<Value>>>, Error> {
        match tokio::time::timeout(wait, self.receiver.recv::<Body<Value>>()).await {
            Err(_) => Ok(None),
            Ok(d) => Ok(Some(d?)),
        }
    }

    /// Settles a delivery of [`Self::next_unsettled`]: accepted, or rejected without a reason.
    pub async fn settle(
        &mut self,
        delivery: &fe2o3_amqp::link::delivery::Delivery<Body<Value>>,
        accept: bool,
    ) -> Result<(), Error> {
        if accept {
            self.receiver.accept(delivery).await?;
        } else {
            self.receiver.reject(delivery, None).await?;
        }
        Ok(())
    }

    /// Keeps receiving and accepting in a task (an application that settles at once, which QoS 1
    /// uploads wait for); the messages are read from the returned [`Inbox`].
    pub fn accept_in_background(mut self) -> Inbox {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                match self.next(Duration::from_millis(100)).await {
                    Ok(Some(m)) => {
                        if tx.send(m).is_err() {
                            break;
                        }
                    }
                    Ok(None) if !tx.is_closed() => {}
                    _ => break,
                }
            }
            self.close().await;
        });
        Inbox { rx, task }
    }

    pub async fn close(mut self) {
        let _ = self.receiver.close().await;
        let _ = self.session.end().await;
        let _ = self.connection.close().await;
    }
}

/// Messages accepted by a background consumer.
pub struct Inbox {
    rx: tokio::sync::mpsc::UnboundedReceiver<Received>,
    task: tokio::task::JoinHandle<()>,
}

impl Inbox {
    /// The next message within `wait`; `None` if none arrived.
    pub async fn next(&mut self, wait: Duration) -> Option<Received> {
        tokio::time::timeout(wait, self.rx.recv())
            .await
            .ok()
            .flatten()
    }

    /// Stops the consumer.
    pub async fn close(self) {
        drop(self.rx);
        let _ = self.task.await;
    }
}

fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A delivery received by [`AmqpConsumer::next_unaccepted`], not yet accepted.
pub type PendingDelivery = fe2o3_amqp::link::delivery::Delivery<Body<Value>>;

impl AmqpConsumer {
    /// The next message within `wait`, left unaccepted: the sender keeps waiting for the outcome
    /// until [`AmqpConsumer::accept`].
    pub async fn next_unaccepted(
        &mut self,
        wait: Duration,
    ) -> Result<Option<(Vec<u8>, PendingDelivery)>, Error> {
        let delivery = match tokio::time::timeout(wait, self.receiver.recv::<Body<Value>>()).await {
            Err(_) => return Ok(None),
            Ok(d) => d?,
        };
        let payload = match &delivery.message().body {
            Body::Data(batch) => batch.iter().flat_map(|d| d.0.iter().copied()).collect(),
            _ => Vec::new(),
        };
        Ok(Some((payload, delivery)))
    }

    /// Accepts a delivery taken with [`AmqpConsumer::next_unaccepted`].
    pub async fn accept(&mut self, delivery: &PendingDelivery) -> Result<(), Error> {
        self.receiver.accept(delivery).await?;
        Ok(())
    }
}
