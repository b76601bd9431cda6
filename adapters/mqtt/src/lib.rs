//! Ferry's MQTT protocol adapter: Hono's MQTT adapter API (hono-api.md §3) for MQTT 3.1.1 and 5,
//! on our own tokio server with `rmqtt-codec` framing.
//!
//! Devices authenticate with an X.509 client certificate on the TLS port (validated per tenant
//! after the handshake; the CONNECT's username and password are then ignored), otherwise with
//! `auth-id@tenant` and a password in the CONNECT (or without credentials when the adapter's
//! authentication is switched off), and publish:
//!
//! | topic | who |
//! |---|---|
//! | `telemetry`, `t`, `event`, `e` | the authenticated device itself |
//! | `t/TENANT/DEVICE`, `t//DEVICE` (and `e/...`) | a gateway for DEVICE, or an unauthenticated device |
//! | any of these + `/?content-type=..&hono-ttl=..&correlation-id=..&on-error=..` | property bag |
//!
//! Telemetry with QoS 0 or 1, events with QoS 1; a QoS 1 message is acknowledged (PUBACK) only
//! after the northbound accepted it. Failures are handled as the `on-error` bag value says,
//! published to an error subscription `e/[TENANT]/[DEVICE]/#` if there is one; terminal errors
//! (tenant, adapter, device or gateway disabled or unknown) and oversized payloads close the
//! connection. CONNACK codes follow hono-api.md §3 for 3.1.1 and 5 (`error.rs`).
//!
//! Structure: [`MqttAdapter`] binds the ports and accepts (`listener.rs`); each connection is a
//! task (`connection.rs`: TLS handshake under a timeout) running the protocol phases of
//! `session.rs` (`AwaitingConnect`, then `session/connected.rs` and `session/closing.rs`) over
//! the codec wrapper of `packet.rs`. Topics are parsed in `topic.rs`, uploads prepared and error rules decided in
//! `publish.rs` (pure functions), and the tenant connection limit is counted in `limits.rs`.
//! `serving.rs` ends serving connections from outside: one sweeper per adapter enforces the
//! keep-alive and ends them all on shutdown, and `watch.rs` ends those whose tenant or device
//! the registry disables or deletes (register [`MqttAdapter::change_listener`] with the
//! registry).
//!
//! ```no_run
//! # async fn start(ctx: ferry_adapter_core::AdapterContext) -> Result<(), ferry_adapter_mqtt::MqttError> {
//! let adapter = ferry_adapter_mqtt::MqttAdapter::bind(&Default::default(), None, ctx).await?;
//! println!("listening on {:?}", adapter.local_addr());
//! adapter.run().await; // until the context's shutdown token fires
//! # Ok(()) }
//! ```

pub mod config;
mod connection;
pub mod error;
mod limits;
mod listener;
mod packet;
mod publish;
mod serving;
mod session;
mod topic;
mod watch;

pub use config::MqttConfig;
pub use error::MqttError;
pub use listener::MqttAdapter;

/// Hono's adapter type name of this adapter (`orig_adapter`, tenant `adapters[].type`).
pub const ADAPTER_TYPE: &str = "hono-mqtt";
