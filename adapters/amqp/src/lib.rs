//! Ferry's AMQP 1.0 protocol adapter: Hono's AMQP adapter API on fe2o3-amqp.
//!
//! Devices connect on port 5672 (plain) or 5671 (TLS from the first byte, `amqps://`),
//! authenticate with SASL PLAIN (`auth-id@tenant`) or, when the adapter does not require
//! authentication, ANONYMOUS, and send on one sender link with a null target (the server offers
//! `ANONYMOUS-RELAY`). Each message's `to` names what it is (hono-api.md §5):
//!
//! | `to` | who |
//! |---|---|
//! | `t`, `telemetry`, `e`, `event` | the authenticated device itself |
//! | `t/TENANT/DEVICE` (and `e/…`) | a gateway for DEVICE, the device itself, or an unauthenticated device |
//! | `t//DEVICE` (and `e//…`) | a gateway for DEVICE of its own tenant |
//!
//! Unsettled deliveries are settled with the northbound's outcome (`accepted`, `rejected` with
//! Hono's conditions, `released`); pre-settled telemetry is at most once; events must be
//! unsettled. Oversized messages close the link; terminal errors (tenant or adapter disabled,
//! the device itself unknown or disabled) close the connection.
//!
//! Structure: [`AmqpAdapter`] binds the ports (`listener.rs`); each accepted connection runs as a
//! task (`connection.rs`: TLS under a timeout; then `handshake.rs`: the SASL exchange of
//! `sasl.rs` with asynchronous authentication, the connect-time tenant checks of `admission.rs`,
//! fe2o3's connection acceptor, reading the device's container id in passing with `peek.rs`;
//! then optional connection events on `event/TENANT`, and `session.rs` takes the link
//! attaches); each upload link is
//! a task (`link.rs`) that parses messages with `address.rs` and forwards them through the
//! [`ferry_adapter_core::AdapterContext`]. All refusals become AMQP outcomes in `error.rs`.
//! `watch.rs` closes open connections whose tenant or device the registry disables or deletes
//! (register [`AmqpAdapter::change_listener`] with the registry).
//!
//! ```no_run
//! # async fn start(ctx: ferry_adapter_core::AdapterContext) -> Result<(), ferry_adapter_amqp::AmqpError> {
//! let adapter = ferry_adapter_amqp::AmqpAdapter::bind(&Default::default(), None, ctx).await?;
//! println!("listening on {:?}", adapter.local_addr());
//! adapter.run().await; // until the context's shutdown token fires
//! # Ok(()) }
//! ```

mod address;
mod admission;
pub mod config;
mod connection;
pub mod error;
mod handshake;
mod link;
mod listener;
mod peek;
mod sasl;
mod session;
mod watch;

pub use config::AmqpConfig;
pub use error::AmqpError;
pub use listener::AmqpAdapter;

/// Hono's adapter type name of this adapter (`orig_adapter`, tenant `adapters[].type`).
pub const ADAPTER_TYPE: &str = "hono-amqp";
