//! AMQP 1.0 devices: fe2o3-amqp clients with SASL PLAIN, one connection, session and
//! anonymous-relay sender link per device, over plain TCP (`amqp://`) or TLS from the first
//! byte (`amqps://`, ring provider, the CA from `--ca`), as Hono's AMQP adapter expects.
//!
//! Unsettled telemetry (QoS 1) and events are sent with `send_batchable`, which returns once the
//! transfer is queued; up to [`WINDOW`] deliveries of a device are outstanding at once (the
//! adapter's link credit bounds it further). A second task per device awaits the outcomes and
//! records acknowledgement latency (send to `accepted`). Pre-settled telemetry (QoS 0) counts as
//! acknowledged once fe2o3 wrote the transfer. Each message's `to` is `telemetry` or `event`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fe2o3_amqp::connection::ConnectionHandle;
use fe2o3_amqp::link::SendError;
use fe2o3_amqp::link::delivery::DeliveryFut;
use fe2o3_amqp::sasl_profile::SaslProfile;
use fe2o3_amqp::session::SessionHandle;
use fe2o3_amqp::types::definitions::SenderSettleMode;
use fe2o3_amqp::types::messaging::{Message, Outcome, Properties, Target as LinkTarget};
use fe2o3_amqp::types::primitives::{Binary, Symbol};
use fe2o3_amqp::{Connection, Sender, Session};
use futures_util::StreamExt as _;
use futures_util::stream::FuturesUnordered;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_rustls::TlsConnector;

use super::{ACK_TIMEOUT, BoxFuture, DRAIN, Device, Endpoint, Hold, Load, Transport};
use crate::PerfError;
use crate::config::{Address, AuthKind, RunConfig, Target};
use crate::stats::{Recorder, histogram};

/// Unsettled deliveries a device may have outstanding.
pub const WINDOW: usize = 100;
/// How long a device may take to connect and authenticate, attempts included.
const OPEN_TIMEOUT: Duration = Duration::from_secs(60);
/// Pause before connecting again after a failed attempt.
const RETRY_DELAY: Duration = Duration::from_millis(500);
/// How long closing a link, session and connection may take.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// The AMQP 1.0 device protocol (Hono's AMQP adapter).
pub struct AmqpTransport {
    address: Address,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    to: &'static str,
}

impl std::fmt::Debug for AmqpTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpTransport")
            .field("address", &self.address)
            .field("tls", &self.tls.is_some())
            .field("to", &self.to)
            .finish()
    }
}

/// One device's connection with its upload link.
struct Link {
    connection: ConnectionHandle<()>,
    session: SessionHandle<()>,
    sender: Sender,
}

impl Link {
    async fn close(mut self) {
        let closing = async {
            let _ = self.sender.close().await;
            let _ = self.session.end().await;
            let _ = self.connection.close().await;
        };
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, closing).await;
    }
}

/// An unsettled delivery on its way, with its send time and its place in the window.
struct Pending {
    sent: Instant,
    outcome: DeliveryFut<Result<Outcome, SendError>>,
    /// Returned to the window once the outcome is known.
    permit: OwnedSemaphorePermit,
}

impl AmqpTransport {
    /// The transport for `config`'s target (a Ferry's AMQP adapter); `endpoint` picks the `to`.
    pub fn new(config: &RunConfig, endpoint: Endpoint) -> Result<Self, PerfError> {
        let Target::Ferry(ferry) = &config.target else {
            return Err(PerfError::Config(
                "--transport amqp needs --target ferry (Hono's AMQP adapter)".to_owned(),
            ));
        };
        if config.auth == AuthKind::X509 {
            return Err(PerfError::Config(
                "--transport amqp authenticates with passwords (SASL PLAIN); --auth x509 is not \
                 supported yet"
                    .to_owned(),
            ));
        }
        let address = ferry.amqp.clone();
        let tls = if address.tls {
            let config = super::mqtt::tls_config(config.ca_file.as_deref())?;
            let name = ServerName::try_from(address.host.clone())
                .map_err(|e| PerfError::Config(format!("{}: {e}", address.host)))?;
            Some((TlsConnector::from(config), name))
        } else {
            None
        };
        Ok(Self {
            address,
            tls,
            to: endpoint.as_str(),
        })
    }

    /// Connects, authenticates with SASL PLAIN and attaches the upload link.
    async fn connect(&self, device: &Device, settle: SenderSettleMode) -> Result<Link, String> {
        let tcp = TcpStream::connect((self.address.host.as_str(), self.address.port))
            .await
            .map_err(|_| "amqp connect")?;
        let _ = tcp.set_nodelay(true);
        let builder = Connection::builder()
            .container_id(device.client_id.clone())
            .sasl_profile(SaslProfile::Plain {
                username: device.username.clone(),
                password: device.password.clone(),
            });
        let opened = match &self.tls {
            None => builder.open_with_stream(tcp).await,
            Some((connector, name)) => {
                let stream = connector
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(|_| "amqp tls")?;
                builder.open_with_stream(stream).await
            }
        };
        let mut connection = opened.map_err(|e| match e {
            fe2o3_amqp::connection::OpenError::SaslError { code, .. } => {
                format!("amqp sasl {code:?}")
            }
            _ => "amqp open".to_owned(),
        })?;
        let mut session = Session::begin(&mut connection)
            .await
            .map_err(|_| "amqp begin")?;
        let sender = Sender::builder()
            .name("upload")
            .target(LinkTarget::builder().build())
            .sender_settle_mode(settle)
            .attach(&mut session)
            .await
            .map_err(|_| "amqp attach")?;
        Ok(Link {
            connection,
            session,
            sender,
        })
    }

    /// Opens the device's link within [`OPEN_TIMEOUT`], trying again after a failure (when 100
    /// devices connect at once, the gateway's first password checks can outlast its handshake
    /// timeout). Every failed attempt is recorded.
    async fn open(
        &self,
        device: &Device,
        settle: SenderSettleMode,
        recorder: &Recorder,
    ) -> Result<Link, String> {
        let deadline = tokio::time::Instant::now() + OPEN_TIMEOUT;
        loop {
            let error =
                match tokio::time::timeout_at(deadline, self.connect(device, settle.clone())).await
                {
                    Ok(Ok(link)) => return Ok(link),
                    Ok(Err(kind)) => kind,
                    Err(_) => return Err("timeout".to_owned()),
                };
            if error.starts_with("amqp sasl") {
                return Err(error); // refused credentials do not get better
            }
            recorder.error(format!("{error} (retried)"));
            tokio::time::sleep_until(deadline.min(tokio::time::Instant::now() + RETRY_DELAY)).await;
        }
    }

    fn message(&self, payload: Bytes) -> Message<fe2o3_amqp::types::messaging::Data> {
        let properties = Properties {
            to: Some(self.to.to_owned()),
            content_type: Some(Symbol::from("application/octet-stream")),
            ..Properties::default()
        };
        Message::builder()
            .properties(properties)
            .data(Binary::from(payload.to_vec()))
            .build()
    }

    async fn drive_device(self: Arc<Self>, device: Device, mut load: Load) {
        let recorder = load.recorder.clone();
        let unsettled = load.effective_qos() == 1;
        let settle = if unsettled {
            SenderSettleMode::Unsettled
        } else {
            SenderSettleMode::Settled
        };
        let link = match self.open(&device, settle, &recorder).await {
            Ok(link) => Some(link),
            Err(kind) => {
                recorder.error(kind);
                None
            }
        };
        let _ = load.ready.send(link.is_some()).await;
        let Some(mut link) = link else { return };
        let Some(start) = load.wait_start().await else {
            link.close().await;
            return;
        };
        let mut pacer = load.pacer(start);
        let window = Arc::new(Semaphore::new(WINDOW));
        let (pending_tx, pending_rx) = mpsc::unbounded_channel();
        let mut outcomes = tokio::spawn(await_outcomes(pending_rx, recorder.clone()));
        let mut acks = histogram();
        while pacer.next().await {
            let Some(Ok(permit)) = pacer
                .unless_stopped(Arc::clone(&window).acquire_owned())
                .await
            else {
                break;
            };
            let message = self.message(load.next_payload());
            let sent = Instant::now();
            if unsettled {
                match link.sender.send_batchable(message).await {
                    Ok(outcome) => {
                        recorder.sent();
                        let _ = pending_tx.send(Pending {
                            sent,
                            outcome,
                            permit,
                        });
                    }
                    Err(_) => {
                        recorder.error("amqp send");
                        break;
                    }
                }
            } else {
                match link.sender.send(message).await {
                    Ok(_) => {
                        recorder.sent();
                        recorder.acked();
                        acks.saturating_record(sent.elapsed().as_micros().max(1) as u64);
                    }
                    Err(_) => {
                        recorder.error("amqp send");
                        break;
                    }
                }
            }
        }
        recorder.merge_ack_latency(&acks);
        drop(pending_tx);
        if tokio::time::timeout(DRAIN, &mut outcomes).await.is_err() {
            outcomes.abort();
            recorder.error("timeout");
        }
        link.close().await;
    }

    async fn hold_connection(self: Arc<Self>, device: Device, hold: Hold) {
        let link = self
            .open(&device, SenderSettleMode::Unsettled, &hold.recorder)
            .await;
        if let Err(kind) = &link {
            hold.recorder.error(kind.clone());
        }
        let _ = hold.opened.send(link.is_ok()).await;
        let Ok(mut link) = link else { return };
        tokio::select! {
            () = hold.stop.cancelled() => {}
            closed = link.connection.on_close() => {
                if closed.is_err() {
                    hold.recorder.error("amqp closed");
                }
                return;
            }
        }
        link.close().await;
    }
}

/// Awaits the outcomes of a device's unsettled deliveries, in whatever order they settle, and
/// records them.
async fn await_outcomes(mut pending: mpsc::UnboundedReceiver<Pending>, recorder: Arc<Recorder>) {
    let mut outstanding = FuturesUnordered::new();
    let mut acks = histogram();
    let mut open = true;
    loop {
        tokio::select! {
            next = pending.recv(), if open => match next {
                Some(Pending { sent, outcome, permit }) => outstanding.push(async move {
                    let outcome = tokio::time::timeout(ACK_TIMEOUT, outcome).await;
                    drop(permit);
                    (sent, outcome)
                }),
                None => open = false,
            },
            Some((sent, outcome)) = outstanding.next(), if !outstanding.is_empty() => {
                match outcome {
                    Ok(Ok(Outcome::Accepted(_))) => {
                        recorder.acked();
                        acks.saturating_record(sent.elapsed().as_micros().max(1) as u64);
                    }
                    Ok(Ok(Outcome::Released(_))) => recorder.error("amqp released"),
                    Ok(Ok(Outcome::Rejected(r))) => recorder.error(format!(
                        "amqp rejected {}",
                        r.error.map_or_else(|| "-".to_owned(), |e| format!("{:?}", e.condition))
                    )),
                    Ok(Ok(_)) => recorder.error("amqp other outcome"),
                    Ok(Err(_)) => recorder.error("amqp send"),
                    Err(_) => recorder.error("timeout"),
                }
            }
            else => break,
        }
    }
    recorder.merge_ack_latency(&acks);
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
