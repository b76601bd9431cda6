//! Ferry's embedded northbound: Hono's Telemetry and Event APIs for applications over AMQP 1.0.
//!
//! Applications (consumers) connect to [`EmbeddedNorthbound`]'s AMQP 1.0 listener (default
//! `127.0.0.1:15672`), authenticate with SASL PLAIN (or ANONYMOUS when allowed), and attach
//! receiver links to `telemetry/TENANT` and `event/TENANT`, exactly as they would to Hono's AMQP
//! messaging network. Protocol adapters hand messages to the same object through the
//! [`ferry_adapter_core::Northbound`] trait:
//!
//! * telemetry goes straight to one consumer link of the tenant (round-robin); QoS 0 returns once
//!   the message is queued on the link (it is sent pre-settled, at most once, when the consumer's
//!   settle mode allows), QoS 1 once the consumer accepted it;
//! * events are written to a SQLite store first (durable before `send` returns) and delivered at
//!   least once by a per-tenant task, also after a restart.
//!
//! The AMQP engine is Ferry's own: one task per application connection owns its sessions and
//! links; adapters hand messages to a consumer link through a small bounded queue that wakes the
//! connection, which encodes each message straight into its output buffer as a transfer and
//! completes the waiting sender with the consumer's outcome.
//!
//! Modules: [`config`] (settings), [`server`] (listener and the `Northbound` impl), `connection`
//! (the connection task: I/O, timers, shutdown), `handshake` (SASL and `open`), `sasl` (the
//! users), `engine`, `session` and `link` (the protocol state, without I/O), `consumers` (link
//! registry, queues and round-robin), [`encode`] (the AMQP message format), `transfer` (transfer
//! frames), `event_store`, `delivery`, and [`consumer`], a client (on fe2o3-amqp) for
//! applications, the `ferry consume` command and tests.

pub mod config;
mod connection;
pub mod consumer;
mod consumers;
mod delivery;
pub mod encode;
mod engine;
pub mod error;
pub mod event_store;
mod handshake;
mod link;
mod sasl;
pub mod server;
mod session;
mod transfer;

pub use config::{NorthboundConfig, UserConfig};
pub use consumer::{
    Consumer, ConsumerError, MessageReceiver, ReceivedMessage, Settle, Subscription,
};
pub use error::SetupError;
pub use server::EmbeddedNorthbound;
