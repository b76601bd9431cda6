//! Ferry's HTTP protocol adapter: Hono's HTTP adapter API on its own HTTP/1.1 server side.
//!
//! Devices publish telemetry and events (hono-api.md §2):
//!
//! | request | who |
//! |---|---|
//! | `POST /telemetry`, `POST /event` | the device authenticated by Basic `auth-id@tenant:password`, or (TLS port, no `authorization`) by its client certificate |
//! | `PUT /telemetry/TENANT/DEVICE` (and `/event`) | a gateway for DEVICE, the device itself, or (if allowed) an unauthenticated device |
//! | `PUT /telemetry//DEVICE` | a gateway for DEVICE of its own tenant |
//!
//! Headers `content-type`, `qos-level` (telemetry 0 or 1), `hono-ttl` (events) and `hono-ttd`
//! (also as query parameters). Answers: 202 once the northbound took the message; errors as
//! plain text with the status of [`error`]'s single mapping.
//!
//! Structure: [`HttpAdapter`] binds the ports (`listener.rs`), each accepted connection runs as a
//! task (`connection.rs`: TLS handshake under a timeout, then HTTP/1.1 with keep-alive through
//! `h1/`: heads parsed in place, bodies, responses, timeouts), and each request is handled by
//! `service.rs`, which parses with `request.rs` and calls the device pipeline of
//! `ferry-adapter-core` through the [`ferry_adapter_core::AdapterContext`].
//!
//! ```no_run
//! # async fn start(ctx: ferry_adapter_core::AdapterContext) -> Result<(), ferry_adapter_http::HttpError> {
//! let adapter = ferry_adapter_http::HttpAdapter::bind(&Default::default(), None, ctx).await?;
//! println!("listening on {:?}", adapter.local_addr());
//! adapter.run().await; // until the context's shutdown token fires
//! # Ok(()) }
//! ```

pub mod config;
mod connection;
pub mod error;
mod h1;
mod listener;
mod memo;
mod request;
mod service;

pub use config::HttpConfig;
pub use error::HttpError;
pub use listener::HttpAdapter;

/// Hono's adapter type name of this adapter (`orig_adapter`, tenant `adapters[].type`).
pub const ADAPTER_TYPE: &str = "hono-http";
