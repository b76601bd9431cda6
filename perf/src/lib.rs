//! `ferry-perf`: Ferry's load generator and benchmark harness.
//!
//! It simulates many devices on tokio (HTTP, MQTT and CoAP today; AMQP slots in as a further
//! [`scenario::Transport`]) that authenticate with passwords, pre-shared keys or client
//! certificates from the harness's own CA ([`pki`], [`tls`]), provisions them through the
//! Management API ([`setup`]), consumes
//! what arrives northbound ([`consumer`]) and measures end to end from a timestamp in every
//! payload ([`payload`], [`stats`]): throughput, latency percentiles from HDR histograms, errors by
//! kind, and sent vs acknowledged vs received, so loss is visible. Senders follow absolute
//! schedules that do not drift ([`rate`]). Results come as a table, JSON ([`report`]) and an SVG
//! plot ([`plot`]).
//!
//! ```no_run
//! # async fn demo() -> Result<(), ferry_perf::PerfError> {
//! use ferry_perf::config::*;
//! let target = Target::HttpServer(Address::http("http://127.0.0.1:8080").map_err(ferry_perf::PerfError::Config)?);
//! let config = RunConfig::new(ScenarioKind::Telemetry, TransportKind::Http, target);
//! let result = ferry_perf::run(&config).await?;
//! println!("{}", ferry_perf::report::table(&result));
//! # Ok(()) }
//! ```

pub mod amqp;
pub mod config;
pub mod consumer;
pub mod http;
pub mod issuance;
pub mod mqtt;
pub mod net;
pub mod payload;
pub mod pki;
pub mod plot;
pub mod procfs;
pub mod rate;
pub mod report;
pub mod scenario;
pub mod setup;
pub mod stats;
pub mod subscriber;
pub mod tls;

pub use scenario::run;

/// A run could not be done.
#[derive(Debug, thiserror::Error)]
pub enum PerfError {
    /// The settings do not work together.
    #[error("{0}")]
    Config(String),
    /// Provisioning through the Management API failed.
    #[error(transparent)]
    Setup(#[from] setup::SetupError),
    /// The consumer could not connect or attach.
    #[error("consumer: {0}")]
    Consumer(String),
    /// Not a single device could connect and authenticate.
    #[error("no device could connect and authenticate; errors: {0}")]
    NoDevice(String),
}
