//! HTTP devices on the harness's own client ([`crate::http`]): HTTP/1.1 keep-alive with basic
//! auth or, over TLS (`https://`, ring provider, the CA from `--ca`), with the device's client
//! certificate; one connection per device, one request in flight per connection (as a device
//! does).
//!
//! Each device is one task ([`super::link`]) that paces, encodes its request from a head built
//! once (path, `Host`, `Authorization`, `Content-Type`, `qos-level` for QoS 1 telemetry), writes
//! it and reads the response in place; a 2xx records its latency from the send, another status
//! counts as the error `http <status>`. A connection that fails, or that the server ends
//! (`Connection: close`), is replaced for the next message, as a device would do; the request it
//! carried counts as an error of the failure's kind.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ferry_adapter_core::deadline::LazyDeadline;
use rustls_pki_types::ServerName;

use super::link::{self, Link};
use super::requests::RECONNECT_DELAY;
use super::{ACK_TIMEOUT, BoxFuture, Device, Endpoint, Hold, Load, Transport, warmup_payload};
use crate::PerfError;
use crate::config::{Address, RunConfig, Target, TransportKind};
use crate::http::{Connection, HttpError, RequestHead};
use crate::net::{self, Stream};

/// The HTTP device protocol (Hono's HTTP adapter API, or any server answering 2xx).
pub struct HttpTransport {
    address: Address,
    authority: String,
    endpoint: Endpoint,
    /// For `https://`: the configuration of devices without a certificate, and the server name.
    tls: Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>,
}

impl std::fmt::Debug for HttpTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpTransport")
            .field("address", &self.address)
            .field("endpoint", &self.endpoint)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl HttpTransport {
    /// The transport for `config`'s target; `endpoint` picks the path.
    pub fn new(config: &RunConfig, endpoint: Endpoint) -> Result<Self, PerfError> {
        let address = match &config.target {
            Target::Ferry(f) => f.http.clone(),
            Target::HttpServer(a) => a.clone(),
            Target::MqttBroker(_) => {
                return Err(PerfError::Config(
                    "an MQTT broker target needs --transport mqtt".to_owned(),
                ));
            }
        };
        config.require_tls_for_x509(&address, TransportKind::Http, "https")?;
        let tls = if address.tls {
            let name = ServerName::try_from(address.host.clone())
                .map_err(|e| PerfError::Config(format!("bad TLS server name: {e}")))?;
            Some((
                crate::tls::anonymous_config(config.ca_file.as_deref())?,
                name,
            ))
        } else {
            None
        };
        Ok(Self {
            authority: address.authority(),
            address,
            endpoint,
            tls,
        })
    }

    /// The head of `device`'s requests: basic auth unless it has a certificate, and
    /// `qos-level: 1` for QoS 1 telemetry.
    fn head(&self, device: &Device, qos: u8) -> RequestHead {
        let credentials = device
            .tls
            .is_none()
            .then_some((device.username.as_str(), device.password.as_str()));
        let qos_1: &[(&str, &str)] = match (self.endpoint, qos) {
            (Endpoint::Telemetry, 1) => &[("qos-level", "1")],
            _ => &[],
        };
        let path = match self.endpoint {
            Endpoint::Telemetry => "/telemetry",
            Endpoint::Event => "/event",
        };
        RequestHead::post(path, &self.authority, credentials, qos_1)
    }

    /// Connects (over TLS with the device's certificate, if it has one) within [`ACK_TIMEOUT`];
    /// the error kind if that failed.
    async fn connect(&self, device: &Device) -> Result<Connection<Stream>, &'static str> {
        let tls = self.tls.as_ref().map(|(config, name)| {
            (
                device.tls.clone().unwrap_or_else(|| config.clone()),
                name.clone(),
            )
        });
        let dial = net::dial(&self.address.host, self.address.port, tls);
        match tokio::time::timeout(ACK_TIMEOUT, dial).await {
            Ok(Ok(stream)) => Ok(Connection::new(stream)),
            Ok(Err(error)) => Err(HttpError::from(error).kind()),
            Err(_) => Err("timeout"),
        }
    }

    /// One new connection (a full TLS handshake for `https://`), one request, closed: the outcome
    /// as an error kind.
    pub async fn send_once(&self, device: &Device, qos: u8, body: Bytes) -> Result<(), String> {
        let mut conn = self.connect(device).await?;
        exchange(&mut conn, &self.head(device, qos), &body).await
    }

    /// Connects and sends the warm-up request: whether it was accepted, and the connection if
    /// it stays usable. Failures go to `recorder`, the answer's with `suffix`.
    async fn open(
        &self,
        device: &Device,
        head: &RequestHead,
        payload: Bytes,
        (recorder, suffix): (&crate::stats::Recorder, &str),
    ) -> (bool, Option<Connection<Stream>>) {
        let mut conn = match self.connect(device).await {
            Ok(conn) => conn,
            Err(kind) => {
                recorder.error(kind);
                return (false, None);
            }
        };
        let answer = exchange(&mut conn, head, &payload).await;
        if let Err(kind) = &answer {
            recorder.error(format!("{kind}{suffix}"));
        }
        let usable = conn.can_send().then_some(conn);
        (answer.is_ok(), usable)
    }

    async fn drive_device(self: Arc<Self>, device: Device, mut load: Load) {
        let head = self.head(&device, load.effective_qos());
        let recorder = load.recorder.clone();
        let (ok, conn) = self
            .open(
                &device,
                &head,
                load.warmup_payload(),
                (&recorder, " (warm-up)"),
            )
            .await;
        let _ = load.ready.send(ok).await;
        let mut link = HttpLink {
            transport: &self,
            device: &device,
            head: &head,
            conn,
            queued: None,
            failed: Vec::new(),
            retry_at: Instant::now(),
            deadline: LazyDeadline::new((Instant::now() + ACK_TIMEOUT).into()),
        };
        link::upload(&mut link, &mut load).await;
    }

    async fn hold_connection(self: Arc<Self>, device: Device, hold: Hold) {
        let head = self.head(&device, 0);
        let payload = warmup_payload(&hold.payload, &hold.recorder);
        let (ok, conn) = self
            .open(&device, &head, payload, (&hold.recorder, ""))
            .await;
        let _ = hold.opened.send(ok).await;
        if ok {
            hold.stop.cancelled().await;
        }
        drop(conn);
    }
}

/// Sends one request on `conn` and waits (up to [`ACK_TIMEOUT`]) for a 2xx; the error kind
/// otherwise (`http <status>` for another status).
async fn exchange(
    conn: &mut Connection<Stream>,
    head: &RequestHead,
    payload: &[u8],
) -> Result<(), String> {
    match tokio::time::timeout(ACK_TIMEOUT, conn.exchange(head, payload)).await {
        Ok(Ok(status)) => outcome(status),
        Ok(Err(error)) => Err(error.kind().to_owned()),
        Err(_) => Err("timeout".to_owned()),
    }
}

/// A response's status as an outcome: 2xx is accepted, another status the error `http <status>`.
fn outcome(status: u16) -> Result<(), String> {
    if (200..300).contains(&status) {
        Ok(())
    } else {
        Err(format!("http {status}"))
    }
}

/// A device's connection as the sending loop drives it: failures never end the loop, they
/// become the outcome of the request they hit and the connection is replaced.
struct HttpLink<'a> {
    transport: &'a HttpTransport,
    device: &'a Device,
    head: &'a RequestHead,
    conn: Option<Connection<Stream>>,
    /// A request encoded while no connection was open (payload, send time): the next write
    /// connects first.
    queued: Option<(Vec<u8>, Instant)>,
    /// Failures for the next [`Link::process`]: the send time of the request each hit (or when
    /// it happened) and its kind.
    failed: Vec<(Instant, String)>,
    /// No new connection before this (after a failed attempt).
    retry_at: Instant,
    /// When the current write or the response in flight times out: one timer for the
    /// device's lifetime, not one per request.
    deadline: LazyDeadline,
}

impl HttpLink<'_> {
    /// Drops the connection after `kind` of failure; the request in flight fails with it.
    fn broken(&mut self, kind: &'static str) {
        if let Some(conn) = self.conn.take() {
            let sent = conn.in_flight().unwrap_or_else(Instant::now);
            self.failed.push((sent, kind.to_owned()));
        }
    }

    /// Connects and moves the queued request onto the new connection.
    async fn reconnect(&mut self) {
        let Some((payload, sent)) = self.queued.take() else {
            return;
        };
        match self.transport.connect(self.device).await {
            Ok(mut conn) => {
                conn.send(self.head, &payload, sent);
                self.conn = Some(conn);
            }
            Err(kind) => {
                self.failed.push((sent, kind.to_owned()));
                self.retry_at = Instant::now() + RECONNECT_DELAY;
            }
        }
    }
}

impl Link for HttpLink<'_> {
    type Error = Infallible;

    fn kind(error: &Infallible) -> String {
        match *error {}
    }

    fn has_output(&mut self) -> bool {
        self.queued.is_some() || self.conn.as_ref().is_some_and(Connection::has_output)
    }

    async fn write(&mut self) -> Result<(), Infallible> {
        if self.conn.is_none() {
            self.reconnect().await;
        }
        if let Some(conn) = self.conn.as_mut().filter(|c| c.has_output()) {
            self.deadline.set((Instant::now() + ACK_TIMEOUT).into());
            let kind = match self.deadline.within(conn.write()).await {
                Some(Ok(())) => return Ok(()),
                Some(Err(error)) => error.kind(),
                None => "timeout",
            };
            self.broken(kind);
        }
        Ok(())
    }

    async fn read(&mut self) -> Result<(), Infallible> {
        if !self.failed.is_empty() {
            return Ok(());
        }
        let Some(conn) = self.conn.as_mut() else {
            if Instant::now() < self.retry_at {
                tokio::time::sleep_until(self.retry_at.into()).await;
                return Ok(());
            }
            return std::future::pending().await;
        };
        let read = match conn.in_flight() {
            Some(sent) => {
                self.deadline.set((sent + ACK_TIMEOUT).into());
                self.deadline.within(conn.read()).await
            }
            None => Some(conn.read().await),
        };
        match read {
            Some(Ok(())) => {}
            // An idle connection the server closed is just replaced.
            Some(Err(error)) if error.is_closed() && conn.in_flight().is_none() => {
                self.conn = None;
            }
            Some(Err(error)) => self.broken(error.kind()),
            None => self.broken("timeout"),
        }
        Ok(())
    }

    fn process(
        &mut self,
        mut report: impl FnMut(Instant, Result<(), String>),
    ) -> Result<(), Infallible> {
        // One response is expected; one more is an error, not the answer to the next request.
        while let Some(conn) = self.conn.as_mut() {
            match conn.process() {
                Ok(None) => break,
                Ok(Some((sent, status))) => {
                    report(sent, outcome(status));
                    if conn.ended() {
                        self.conn = None;
                    }
                }
                Err(error) => self.broken(error.kind()),
            }
        }
        for (sent, kind) in self.failed.drain(..) {
            report(sent, Err(kind));
        }
        Ok(())
    }

    fn can_send(&self) -> bool {
        match &self.conn {
            Some(conn) => conn.can_send(),
            None => self.queued.is_none() && Instant::now() >= self.retry_at,
        }
    }

    fn send(&mut self, payload: &[u8], sent: Instant) {
        match self.conn.as_mut() {
            Some(conn) => conn.send(self.head, payload, sent),
            None => self.queued = Some((payload.to_vec(), sent)),
        }
    }

    fn acknowledged_when_written(&self) -> bool {
        false
    }

    fn outstanding(&self) -> usize {
        let in_flight = self.conn.as_ref().and_then(Connection::in_flight);
        usize::from(in_flight.is_some()) + usize::from(self.queued.is_some()) + self.failed.len()
    }

    fn heartbeat_interval(&mut self) -> Option<Duration> {
        None
    }

    fn heartbeat(&mut self) {}
}

impl Transport for HttpTransport {
    fn name(&self) -> &'static str {
        "http"
    }

    fn drive(self: Arc<Self>, device: Device, load: Load) -> BoxFuture {
        Box::pin(self.drive_device(device, load))
    }

    fn hold(self: Arc<Self>, device: Device, hold: Hold) -> BoxFuture {
        Box::pin(self.hold_connection(device, hold))
    }
}
