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
//! Modules: [`config`] (settings), [`server`] (listener and the `Northbound` impl), `connection`
//! (handshake, sessions, attaches), `sasl`, `consumers` (link registry and round-robin), `link`
//! (one task per consumer link), `encode` (the AMQP message format), `event_store`, `delivery`,
//! and [`consumer`], a client for applications, the `ferry consume` command and tests.

pub mod config;
mod connection;
pub mod consumer;
mod consumers;
mod delivery;
pub mod encode;
pub mod error;
pub mod event_store;
mod link;
mod sasl;
pub mod server;

pub use config::{NorthboundConfig, UserConfig};
pub use consumer::{
    Consumer, ConsumerError, MessageReceiver, ReceivedMessage, Settle, Subscription,
};
pub use error::SetupError;
pub use server::EmbeddedNorthbound;
