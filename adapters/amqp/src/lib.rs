//! Ferry's AMQP 1.0 protocol adapter: Hono's AMQP adapter API on its own connection engine.
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
//! Structure: [`AmqpAdapter`] binds the ports (`listener.rs`); each accepted connection is one
//! task (`connection.rs`) and nothing more: TLS under a timeout; then `handshake.rs`: the SASL
//! exchange of `sasl.rs` with asynchronous authentication, the connect-time tenant checks of
//! `admission.rs`, the protocol header and `open`; then `serve.rs` drives the connection engine
//! (`engine.rs` with `session.rs`, `link.rs`, `transfer.rs`, `disposition.rs`, framing in
//! `frame.rs`, buffers in `io.rs`), a plain state machine without tasks or channels per session
//! or link. Complete deliveries are forwarded concurrently inside the connection's task
//! (`upload.rs`, with `address.rs`) through the [`ferry_adapter_core::AdapterContext`] and settled
//! with batched `disposition` frames; link credit refills as deliveries settle. fe2o3-amqp provides
//! the frame and message types and their codec. All refusals become AMQP outcomes in `error.rs`.
//! `watch.rs` closes open connections whose tenant or device the registry disables or deletes
//! (register [`AmqpAdapter::change_listener`] with the registry). Optional connection events
//! go to `event/TENANT`.
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
mod disposition;
mod engine;
pub mod error;
mod handshake;
mod io;
mod link;
mod listener;
mod sasl;
mod serve;
mod session;
mod transfer;
mod upload;
mod watch;

pub use config::AmqpConfig;
pub use error::AmqpError;
pub use listener::AmqpAdapter;

/// Hono's adapter type name of this adapter (`orig_adapter`, tenant `adapters[].type`).
pub const ADAPTER_TYPE: &str = "hono-amqp";
