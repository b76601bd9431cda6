//! AMQP 1.0 devices on the harness's own client ([`crate::amqp`]): one connection, session and
//! anonymous-relay sender link per device, over plain TCP (`amqp://`) or TLS from the first
//! byte (`amqps://`, ring provider, the CA from `--ca`), as Hono's AMQP adapter expects.
//! Devices authenticate with SASL PLAIN, or with their client certificate and SASL EXTERNAL
//! (`--auth x509`, `amqps://` only).
//!
//! Each device is one task ([`super::link`]) that paces, encodes, writes and reads its outcomes
//! itself. Unsettled telemetry (QoS 1) and events keep up to [`WINDOW`] deliveries outstanding
//! (the adapter's link credit bounds it further); each `accepted` records its latency from the
//! send. When slots are due together (rate `max`, or a device catching up) the transfers go out
//! in one write. Pre-settled telemetry (QoS 0) counts as acknowledged once written. Each
//! message's `to` is `telemetry` or `event`.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls_pki_types::ServerName;

use super::link::{self, Link};
use super::{BoxFuture, Device, Endpoint, Hold, Load, Transport};
use crate::PerfError;
use crate::amqp::message::DeviceMessage;
use crate::amqp::{AmqpError, ConnectOptions, Connection, Mechanism, Outcome, Sender};
use crate::config::{Address, RunConfig, Target, TransportKind};
use crate::net::{self, Stream};
use crate::stats::Recorder;

/// Unsettled deliveries a device may have outstanding.
pub const WINDOW: usize = 100;
/// How long a device may take to connect and authenticate, attempts included.
const OPEN_TIMEOUT: Duration = Duration::from_secs(60);
/// Pause before connecting again after a failed attempt.
const RETRY_DELAY: Duration = Duration::from_millis(500);
/// How long closing a link, session and connection may take.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Room for the sections around a payload, for the session window check.
const MESSAGE_OVERHEAD: usize = 64;

/// The AMQP 1.0 device protocol (Hono's AMQP adapter).
pub struct AmqpTransport {
    address: Address,
    /// The TLS configuration without a client certificate and the server's name (`amqps://`).
    tls: Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>,
    message: DeviceMessage,
}

impl std::fmt::Debug for AmqpTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpTransport")
            .field("address", &self.address)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl AmqpTransport {
    /// The transport for `config`'s target (a Ferry's AMQP adapter); `endpoint` picks the `to`.
    pub fn new(config: &RunConfig, endpoint: Endpoint) -> Result<Self, PerfError> {
        let Target::Ferry(ferry) = &config.target else {
            return Err(PerfError::Config(
                "--transport amqp needs --target ferry (Hono's AMQP adapter)".to_owned(),
            ));
        };
        let address = ferry.amqp.clone();
        config.require_tls_for_x509(&address, TransportKind::Amqp, "amqps")?;
        let tls = if address.tls {
            let config = crate::tls::anonymous_config(config.ca_file.as_deref())?;
            let name = ServerName::try_from(address.host.clone())
                .map_err(|e| PerfError::Config(format!("{}: {e}", address.host)))?;
            Some((config, name))
        } else {
            None
        };
        let message = DeviceMessage::new(endpoint.as_str())
            .map_err(|e| PerfError::Config(format!("AMQP message: {e}")))?;
        Ok(Self {
            address,
            tls,
            message,
        })
    }

    /// Connects, authenticates (EXTERNAL with the device's certificate, else PLAIN) and
    /// attaches the upload link.
    async fn connect(
        &self,
        device: &Device,
        presettled: bool,
    ) -> Result<Sender<Stream>, AmqpError> {
        let (tls, mechanism) = match (&self.tls, &device.tls) {
            (Some((_, name)), Some(own)) => {
                (Some((own.clone(), name.clone())), Mechanism::External)
            }
            (tls, _) => (
                tls.clone(),
                Mechanism::Plain {
                    username: device.username.clone(),
                    password: device.password.clone(),
                },
            ),
        };
        let stream = net::dial(&self.address.host, self.address.port, tls).await?;
        let options = ConnectOptions {
            container_id: &device.client_id,
            hostname: Some(&self.address.host),
            sasl: Some(&mechanism),
        };
        let connection = Connection::open(stream, &options).await?;
        Sender::attach(connection, "upload", presettled, WINDOW).await
    }

    /// Opens the device's link within [`OPEN_TIMEOUT`], trying again after a failure (when 100
    /// devices connect at once, the gateway's first password checks can outlast its handshake
    /// timeout). Every failed attempt is recorded.
    async fn open(
        &self,
        device: &Device,
        presettled: bool,
        recorder: &Recorder,
    ) -> Result<Sender<Stream>, String> {
        let deadline = tokio::time::Instant::now() + OPEN_TIMEOUT;
        loop {
            let error =
                match tokio::time::timeout_at(deadline, self.connect(device, presettled)).await {
                    Ok(Ok(sender)) => return Ok(sender),
                    Ok(Err(error)) => error,
                    Err(_) => return Err("timeout".to_owned()),
                };
            if error.is_refusal() {
                return Err(error.kind()); // refused credentials do not get better
            }
            recorder.error(format!("{} (retried)", error.kind()));
            tokio::time::sleep_until(deadline.min(tokio::time::Instant::now() + RETRY_DELAY)).await;
        }
    }

    /// The sending loop's view of `sender`; `presettled`: QoS 0 telemetry.
    fn link(&self, sender: Sender<Stream>, presettled: bool, payload: usize) -> AmqpLink<'_> {
        AmqpLink {
            sender,
            message: &self.message,
            buffer: Vec::new(),
            len: payload + MESSAGE_OVERHEAD,
            presettled,
        }
    }

    async fn drive_device(self: Arc<Self>, device: Device, mut load: Load) {
        let recorder = load.recorder.clone();
        let presettled = load.effective_qos() == 0;
        let sender = self.open(&device, presettled, &recorder).await;
        if let Err(kind) = &sender {
            recorder.error(kind.clone());
        }
        let _ = load.ready.send(sender.is_ok()).await;
        let Ok(sender) = sender else { return };
        let mut link = self.link(sender, presettled, load.payload.size());
        link::upload(&mut link, &mut load).await;
        close(link.sender).await;
    }

    async fn hold_connection(self: Arc<Self>, device: Device, hold: Hold) {
        let sender = self.open(&device, false, &hold.recorder).await;
        if let Err(kind) = &sender {
            hold.recorder.error(kind.clone());
        }
        let _ = hold.opened.send(sender.is_ok()).await;
        let Ok(sender) = sender else { return };
        let mut link = self.link(sender, false, 0);
        link::idle(&mut link, &hold.recorder, &hold.stop).await;
        close(link.sender).await;
    }
}

/// A device's upload link as the sending loop drives it.
struct AmqpLink<'a> {
    sender: Sender<Stream>,
    message: &'a DeviceMessage,
    /// The message being encoded.
    buffer: Vec<u8>,
    /// Room one message takes, for the session window check.
    len: usize,
    presettled: bool,
}

impl Link for AmqpLink<'_> {
    type Error = AmqpError;

    fn kind(error: &AmqpError) -> String {
        error.kind()
    }

    fn has_output(&mut self) -> bool {
        self.sender.connection().has_output()
    }

    fn write(&mut self) -> impl Future<Output = Result<(), AmqpError>> + Send {
        self.sender.connection().write()
    }

    fn read(&mut self) -> impl Future<Output = Result<(), AmqpError>> + Send {
        self.sender.connection().read()
    }

    fn process(
        &mut self,
        mut outcome: impl FnMut(Instant, Result<(), String>),
    ) -> Result<(), AmqpError> {
        self.sender.process(|sent, settled| {
            outcome(
                sent,
                match settled {
                    Outcome::Accepted => Ok(()),
                    Outcome::Released => Err("amqp released".to_owned()),
                    Outcome::Rejected(error) => Err(format!(
                        "amqp rejected {}",
                        error.map_or_else(|| "-".to_owned(), |e| format!("{:?}", e.condition))
                    )),
                    Outcome::Modified | Outcome::Other => Err("amqp other outcome".to_owned()),
                },
            );
        })
    }

    fn can_send(&self) -> bool {
        self.sender.can_send(self.len)
    }

    fn send(&mut self, payload: &[u8], sent: Instant) {
        self.message.write(payload, &mut self.buffer);
        self.sender.send(&self.buffer, sent);
    }

    fn acknowledged_when_written(&self) -> bool {
        self.presettled
    }

    fn outstanding(&self) -> usize {
        self.sender.unsettled()
    }

    fn heartbeat_interval(&mut self) -> Option<Duration> {
        self.sender.connection().heartbeat_interval()
    }

    fn heartbeat(&mut self) {
        self.sender.connection().heartbeat();
    }
}

async fn close(sender: Sender<Stream>) {
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, sender.close()).await;
}

impl Transport for AmqpTransport {
    fn name(&self) -> &'static str {
        "amqp"
    }

    fn drive(self: Arc<Self>, device: Device, load: Load) -> BoxFuture {
        Box::pin(self.drive_device(device, load))
    }

    fn hold(self: Arc<Self>, device: Device, hold: Hold) -> BoxFuture {
        Box::pin(self.hold_connection(device, hold))
    }
}
