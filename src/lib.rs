//! Ferry, a multi-protocol IoT device gateway speaking Eclipse Hono's APIs.
//!
//! This library crate holds what the `ferry` binary wires together: configuration loading,
//! the server certificate and the [`Gateway`] that runs every component in one process. The
//! end-to-end tests start a [`Gateway`] on ephemeral ports.

pub mod config;
pub mod consume;
pub mod gateway;
pub mod pki;
pub mod provision;
pub mod tls;

pub use config::Config;
pub use gateway::{Addresses, Gateway};
