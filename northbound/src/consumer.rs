//! A northbound consumer client (Hono's application side) on fe2o3-amqp.
//!
//! [`Consumer::connect`] opens an AMQP 1.0 connection (SASL PLAIN with credentials, ANONYMOUS
//! without) and one session; [`Consumer::receiver`] attaches a receiver link to
//! `telemetry/TENANT` or `event/TENANT`, and [`Consumer::subscribe`] attaches both. Messages are
//! accepted only after they were decoded and handed to the caller; [`MessageReceiver::recv_unsettled`]
//! lets the caller choose the outcome itself.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use ferry_northbound::consumer::Consumer;
//! let tenant = ferry_registry_client::TenantId::parse("DEFAULT_TENANT")?;
//! let mut consumer = Consumer::connect("127.0.0.1:15672", None).await?;
//! let mut subscription = consumer.subscribe(&tenant).await?;
//! loop {
//!     let message = subscription.recv().await?;
//!     println!("{} from {}: {} bytes", message.endpoint.as_str(), message.device_id, message.payload.len());
//! }
//! # }
//! ```

use std::collections::BTreeMap;

use bytes::Bytes;
use fe2o3_amqp::Delivery;
use fe2o3_amqp::connection::ConnectionHandle;
use fe2o3_amqp::link::{CreditMode, Receiver};
use fe2o3_amqp::sasl_profile::SaslProfile;
use fe2o3_amqp::session::SessionHandle;
use fe2o3_amqp::types::definitions::{AmqpError, Error as AmqpErrorBody};
use fe2o3_amqp::types::messaging::{Body, Message, Modified};
use fe2o3_amqp::types::primitives::{SimpleValue, Value};
use fe2o3_amqp::{Connection, Session};
use ferry_adapter_core::Endpoint;
use ferry_adapter_core::coalesce::Coalescing;
use ferry_registry_client::{DeviceId, TenantId};
use tokio::net::{TcpStream, ToSocketAddrs};

use crate::encode::RETAIN_ANNOTATION;

/// Credit a receiver grants (refilled automatically).
const CREDIT: u32 = 100;
/// How long [`Consumer::connect`] waits for the AMQP and SASL handshake.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The consumer could not connect, attach, or receive.
#[derive(Debug, thiserror::Error)]
pub enum ConsumerError {
    /// The TCP connection failed.
    #[error("cannot connect to the northbound: {0}")]
    Connect(#[from] std::io::Error),
    /// The AMQP or SASL handshake failed (e.g. wrong password).
    #[error("the northbound refused the connection: {0}")]
    Open(String),
    /// The session could not be begun.
    #[error("cannot begin a session: {0}")]
    Session(String),
    /// The server refused the receiver link (e.g. unknown address).
    #[error("the northbound refused the link to {address}: {reason}")]
    Attach {
        /// The source address asked for.
        address: String,
        /// What the server or the client library said.
        reason: String,
    },
    /// The server closed the link or the connection, or went away.
    #[error("the northbound closed the link: {0}")]
    Closed(String),
    /// A message lacked Hono's mandatory fields; it was rejected and receiving can go on.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// Settling a delivery failed (the link is gone).
    #[error("cannot settle the delivery: {0}")]
    Settle(String),
}

/// A telemetry message or event as an application receives it.
#[derive(Clone, Debug, PartialEq)]
pub struct ReceivedMessage {
    /// Telemetry or event.
    pub endpoint: Endpoint,
    /// The tenant consumed.
    pub tenant_id: TenantId,
    /// The device the message came from (`device_id` application property).
    pub device_id: DeviceId,
    /// `content-type` property.
    pub content_type: Option<String>,
    /// `creation-time` property, milliseconds since the epoch.
    pub creation_time: Option<i64>,
    /// `message-id` property, as text.
    pub message_id: Option<String>,
    /// Header `ttl` in milliseconds.
    pub ttl_ms: Option<u32>,
    /// Header `durable`.
    pub durable: bool,
    /// The `x-opt-retain` annotation.
    pub retain: bool,
    /// Every application property: strings as JSON strings, numbers and booleans as JSON values.
    pub properties: BTreeMap<String, serde_json::Value>,
    /// The body (the Data sections, concatenated).
    pub payload: Bytes,
}

/// How to settle a delivery received with [`MessageReceiver::recv_unsettled`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Settle {
    /// Processed: the server forgets the message.
    Accept,
    /// Unprocessable: the server drops it (and logs).
    Reject,
    /// Not processed: the server may deliver it again.
    Release,
    /// Not processed, delivery failed: the server may deliver it again.
    Modify,
}

/// An unsettled delivery, to be passed to [`MessageReceiver::settle`].
#[derive(Debug)]
pub struct Unsettled(Delivery<Body<Value>>);

/// A connection to the northbound with one session.
#[derive(Debug)]
pub struct Consumer {
    connection: ConnectionHandle<()>,
    session: SessionHandle<()>,
    links: u32,
}

impl Consumer {
    /// Connects to `addr`; with `credentials` (user, password) by SASL PLAIN, else ANONYMOUS.
    pub async fn connect(
        addr: impl ToSocketAddrs,
        credentials: Option<(String, String)>,
    ) -> Result<Self, ConsumerError> {
        let stream = TcpStream::connect(addr).await?;
        let _ = stream.set_nodelay(true);
        let profile = match credentials {
            Some((username, password)) => SaslProfile::Plain { username, password },
            None => SaslProfile::Anonymous,
        };
        let open = Connection::builder()
            .container_id(format!("ferry-consumer-{}", uuid::Uuid::new_v4()))
            .sasl_profile(profile)
            // fe2o3 flushes every frame: let dispositions of a busy link share syscalls.
            .open_with_stream(Coalescing::tcp(stream));
        let mut connection = tokio::time::timeout(HANDSHAKE_TIMEOUT, open)
            .await
            .map_err(|_| {
                ConsumerError::Open(format!(
                    "no answer to the AMQP handshake within {HANDSHAKE_TIMEOUT:?}"
                ))
            })?
            .map_err(|e| ConsumerError::Open(e.to_string()))?;
        let session = Session::begin(&mut connection)
            .await
            .map_err(|e| ConsumerError::Session(e.to_string()))?;
        Ok(Self {
            connection,
            session,
            links: 0,
        })
    }

    /// Attaches a receiver to `ENDPOINT/TENANT`.
    pub async fn receiver(
        &mut self,
        endpoint: Endpoint,
        tenant: &TenantId,
    ) -> Result<MessageReceiver, ConsumerError> {
        let address = format!("{}/{}", endpoint.as_str(), tenant);
        self.links += 1;
        let receiver = Receiver::builder()
            .name(format!("{address}-{}", self.links))
            .source(address.clone())
            .credit_mode(CreditMode::Auto(CREDIT))
            .auto_accept(false)
            .attach(&mut self.session)
            .await
            .map_err(|e| ConsumerError::Attach {
                address: address.clone(),
                reason: e.to_string(),
            })?;
        Ok(MessageReceiver {
            receiver,
            endpoint,
            tenant: tenant.clone(),
        })
    }

    /// Attaches receivers to both `telemetry/TENANT` and `event/TENANT`.
    pub async fn subscribe(&mut self, tenant: &TenantId) -> Result<Subscription, ConsumerError> {
        Ok(Subscription {
            telemetry: self.receiver(Endpoint::Telemetry, tenant).await?,
            event: self.receiver(Endpoint::Event, tenant).await?,
        })
    }

    /// Ends the session and closes the connection.
    pub async fn close(mut self) -> Result<(), ConsumerError> {
        let _ = self.session.end().await;
        self.connection
            .close()
            .await
            .map_err(|e| ConsumerError::Closed(e.to_string()))
    }
}

/// A receiver link of one endpoint and tenant.
#[derive(Debug)]
pub struct MessageReceiver {
    receiver: Receiver,
    endpoint: Endpoint,
    tenant: TenantId,
}

impl MessageReceiver {
    /// Receives the next message and accepts it.
    ///
    /// A message without a valid `device_id` is rejected and reported as
    /// [`ConsumerError::Malformed`]; the receiver stays usable.
    pub async fn recv(&mut self) -> Result<ReceivedMessage, ConsumerError> {
        let (message, delivery) = self.recv_unsettled().await?;
        self.settle(delivery, Settle::Accept).await?;
        Ok(message)
    }

    /// Receives the next message without settling it; call [`Self::settle`] afterwards.
    pub async fn recv_unsettled(&mut self) -> Result<(ReceivedMessage, Unsettled), ConsumerError> {
        let delivery: Delivery<Body<Value>> = self
            .receiver
            .recv()
            .await
            .map_err(|e| ConsumerError::Closed(e.to_string()))?;
        match decode(self.endpoint, &self.tenant, delivery.message()) {
            Ok(message) => Ok((message, Unsettled(delivery))),
            Err(reason) => {
                let error = AmqpErrorBody::new(AmqpError::DecodeError, reason.clone(), None);
                self.receiver
                    .reject(&delivery, error)
                    .await
                    .map_err(|e| ConsumerError::Settle(e.to_string()))?;
                Err(ConsumerError::Malformed(reason))
            }
        }
    }

    /// Settles a delivery received with [`Self::recv_unsettled`].
    pub async fn settle(&mut self, delivery: Unsettled, how: Settle) -> Result<(), ConsumerError> {
        let delivery = delivery.0;
        let result = match how {
            Settle::Accept => self.receiver.accept(&delivery).await,
            Settle::Reject => {
                let error = AmqpErrorBody::new(
                    AmqpError::InternalError,
                    "rejected by the application".to_owned(),
                    None,
                );
                self.receiver.reject(&delivery, error).await
            }
            Settle::Release => self.receiver.release(&delivery).await,
            Settle::Modify => {
                let modified = Modified {
                    delivery_failed: Some(true),
                    undeliverable_here: None,
                    message_annotations: None,
                };
                self.receiver.modify(&delivery, modified).await
            }
        };
        result.map_err(|e| ConsumerError::Settle(e.to_string()))
    }

    /// Detaches the link.
    pub async fn close(self) -> Result<(), ConsumerError> {
        self.receiver
            .close()
            .await
            .map_err(|e| ConsumerError::Closed(e.to_string()))
    }
}

/// Receivers of both endpoints of one tenant (what `ferry consume` prints).
#[derive(Debug)]
pub struct Subscription {
    /// The `telemetry/TENANT` receiver.
    pub telemetry: MessageReceiver,
    /// The `event/TENANT` receiver.
    pub event: MessageReceiver,
}

impl Subscription {
    /// Receives and accepts the next telemetry message or event, whichever comes first.
    pub async fn recv(&mut self) -> Result<ReceivedMessage, ConsumerError> {
        // Only the (cancel-safe) receiving races; the winner is settled afterwards, so a message
        // is never lost because the other link won.
        tokio::select! {
            received = self.telemetry.recv_unsettled() => {
                let (message, delivery) = received?;
                self.telemetry.settle(delivery, Settle::Accept).await?;
                Ok(message)
            }
            received = self.event.recv_unsettled() => {
                let (message, delivery) = received?;
                self.event.settle(delivery, Settle::Accept).await?;
                Ok(message)
            }
        }
    }
}

fn decode(
    endpoint: Endpoint,
    tenant: &TenantId,
    message: &Message<Body<Value>>,
) -> Result<ReceivedMessage, String> {
    let properties: BTreeMap<String, serde_json::Value> = message
        .application_properties
        .as_ref()
        .map(|app| {
            app.0
                .iter()
                .map(|(k, v)| (k.clone(), simple_to_json(v)))
                .collect()
        })
        .unwrap_or_default();
    let device_id = properties
        .get("device_id")
        .and_then(serde_json::Value::as_str)
        .ok_or("the device_id application property is missing")?;
    let device_id = DeviceId::parse(device_id).map_err(|e| e.to_string())?;
    let props = message.properties.as_ref();
    let payload = match &message.body {
        Body::Data(sections) => {
            let mut bytes = Vec::new();
            for section in sections.iter() {
                bytes.extend_from_slice(&section.0);
            }
            Bytes::from(bytes)
        }
        Body::Value(value) => match &value.0 {
            Value::Binary(b) => Bytes::from(b.to_vec()),
            Value::String(s) => Bytes::from(s.clone().into_bytes()),
            other => return Err(format!("unsupported amqp-value body {other:?}")),
        },
        Body::Empty => Bytes::new(),
        Body::Sequence(_) => return Err("amqp-sequence bodies are not supported".to_owned()),
    };
    let retain = message.message_annotations.as_ref().is_some_and(|a| {
        a.0.iter().any(|(k, v)| {
            matches!(k, fe2o3_amqp::types::messaging::annotations::OwnedKey::Symbol(s) if s.as_str() == RETAIN_ANNOTATION)
                && *v == Value::Bool(true)
        })
    });
    Ok(ReceivedMessage {
        endpoint,
        tenant_id: tenant.clone(),
        device_id,
        content_type: props
            .and_then(|p| p.content_type.as_ref())
            .map(|s| s.as_str().to_owned()),
        creation_time: props
            .and_then(|p| p.creation_time.clone())
            .map(|t| t.into_inner()),
        message_id: props
            .and_then(|p| p.message_id.as_ref())
            .map(message_id_text),
        ttl_ms: message.header.as_ref().and_then(|h| h.ttl),
        durable: message.header.as_ref().is_some_and(|h| h.durable),
        retain,
        properties,
        payload,
    })
}

fn message_id_text(id: &fe2o3_amqp::types::messaging::MessageId) -> String {
    use fe2o3_amqp::types::messaging::MessageId;
    match id {
        MessageId::String(s) => s.clone(),
        MessageId::Ulong(n) => n.to_string(),
        MessageId::Uuid(u) => format!("{u:?}"),
        MessageId::Binary(b) => format!("{b:?}"),
    }
}

/// Converts an application property value to JSON (binary and other exotic types as text).
pub fn simple_to_json(value: &SimpleValue) -> serde_json::Value {
    use serde_json::Value as J;
    match value {
        SimpleValue::Null => J::Null,
        SimpleValue::Bool(b) => J::Bool(*b),
        SimpleValue::Ubyte(n) => J::from(*n),
        SimpleValue::Ushort(n) => J::from(*n),
        SimpleValue::Uint(n) => J::from(*n),
        SimpleValue::Ulong(n) => J::from(*n),
        SimpleValue::Byte(n) => J::from(*n),
        SimpleValue::Short(n) => J::from(*n),
        SimpleValue::Int(n) => J::from(*n),
        SimpleValue::Long(n) => J::from(*n),
        SimpleValue::Float(f) => J::from(f.into_inner()),
        SimpleValue::Double(f) => J::from(f.into_inner()),
        SimpleValue::Timestamp(t) => J::from(t.clone().into_inner()),
        SimpleValue::String(s) => J::String(s.clone()),
        SimpleValue::Symbol(s) => J::String(s.as_str().to_owned()),
        other => J::String(format!("{other:?}")),
    }
}
