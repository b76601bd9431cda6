//! Ferry's CoAP protocol adapter: Hono's CoAP adapter API over UDP and DTLS.
//!
//! Devices publish telemetry and events (hono-api.md §4):
//!
//! | request | port | who |
//! |---|---|---|
//! | `POST /t` (`/telemetry`), `POST /e` (`/event`) | DTLS | the device authenticated in the handshake |
//! | `PUT /t/TENANT/DEVICE`, `PUT /t//DEVICE` | DTLS | a gateway for DEVICE (or the device itself) |
//! | `PUT /t/TENANT/DEVICE` | plain UDP | an unauthenticated device (only with `authentication_required = false`) |
//!
//! CON requests are forwarded at least once (QoS 1: answered after the northbound accepted them),
//! NON requests at most once; events must be CON. Content-Format gives the content type
//! (required for an empty payload unless the request says `?empty`), `?hono-ttd=N` the time till
//! disconnect. Answers: 2.04 Changed, or the error code of [`error`]'s single mapping with a
//! short diagnostic payload.
//!
//! Structure, bottom up:
//! - [`exchange`]: the CoAP message layer without I/O (deduplication, empty ACK and separate
//!   response after `timeout_to_ack`, retransmission of CON responses);
//! - `request.rs`: URI and option parsing; `session.rs`: the plain port's message layer driven
//!   over its socket, and the processing of one request through the device pipeline;
//! - `listener.rs`: [`CoapAdapter`] binds the ports; the plain UDP port is one session;
//! - `dtls.rs`: the DTLS port: its own peer table, a task per handshake (`handshaking.rs`:
//!   webrtc-dtls under a timeout, PSK identities resolved before the synchronous key callback,
//!   `record.rs` reading the handshake records for that), and established sessions served by
//!   the read loop as plain data (`established.rs`), with their own record layer
//!   (`protection.rs`, keys from `keys.rs`) instead of webrtc-dtls's;
//! - `handshake.rs`: PSK or certificate configuration per peer, chosen from its first ClientHello,
//!   and the device a finished handshake authenticated (X.509 chains through adapter-core);
//! - [`cert`]: the ECDSA server certificate DTLS needs for certificate suites.
//!
//! Per-peer memory: the peer table entry is [`PEER_ENTRY_BYTES`] bytes (plus the hash map's
//! overhead); an established session adds its boxed state (keys, sequence numbers, replay
//! window, the authenticated device) and a timer entry, and its message layer only while it
//! remembers a message. A handshake in progress holds a task with webrtc-dtls's `DTLSConn`
//! until the handover. The `per_peer_sizes` test prints the numbers.
//!
//! ```no_run
//! # async fn start(ctx: ferry_adapter_core::AdapterContext) -> Result<(), ferry_adapter_coap::CoapError> {
//! let adapter = ferry_adapter_coap::CoapAdapter::bind(&Default::default(), None, ctx).await?;
//! println!("DTLS on {}", adapter.dtls_local_addr());
//! adapter.run().await; // until the context's shutdown token fires
//! # Ok(()) }
//! ```

pub mod cert;
pub mod config;
mod dtls;
pub mod error;
mod established;
pub mod exchange;
mod handshake;
mod handshaking;
mod keys;
mod listener;
mod protection;
mod record;
mod request;
mod session;

pub use cert::DtlsCertificate;
pub use config::CoapConfig;
pub use error::CoapError;
pub use listener::CoapAdapter;

/// Hono's adapter type name of this adapter (`orig_adapter`, tenant `adapters[].type`).
pub const ADAPTER_TYPE: &str = "hono-coap";

/// Size in bytes of one entry of the DTLS port's peer table (without the map's own overhead).
pub const PEER_ENTRY_BYTES: usize = std::mem::size_of::<dtls::Peer>();

#[cfg(test)]
mod sizes;
