//! HTTP devices: HTTP/1.1 keep-alive with basic auth or, over TLS (`https://`), with the device's
//! client certificate; one connection per device, one request in flight per connection (as a
//! device does), on hyper's low-level client to keep the load generator's own cost small.

use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use http::{HeaderValue, Request};
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use std::pin::Pin;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_util::either::Either;

use super::requests::{self, Answer, RequestResponse};
use super::{ACK_TIMEOUT, BoxFuture, Device, Endpoint, Hold, Load, Transport, warmup_payload};
use crate::PerfError;
use crate::config::{Address, RunConfig, Target, TransportKind};

/// The HTTP device protocol (Hono's HTTP adapter API, or any server answering 2xx).
#[derive(Debug)]
pub struct HttpTransport {
    address: Address,
    host: HeaderValue,
    path: &'static str,
    /// For `https://`: the configuration of devices without a certificate, and the server name.
    tls: Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>,
}

/// A plain or a TLS connection.
type Stream = Either<TcpStream, TlsStream<TcpStream>>;

/// One keep-alive connection. Its driver is polled by the device task itself, only while a request
/// is in flight: one task per device instead of two saves a wake-up per request.
struct Conn {
    sender: SendRequest<Full<Bytes>>,
    driver: Pin<Box<http1::Connection<TokioIo<Stream>, Full<Bytes>>>>,
}

/// The outcome of one request.
enum Outcome {
    /// 2xx.
    Accepted,
    /// Another status.
    Status(u16),
    /// The connection failed (it must be replaced).
    Broken(&'static str),
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
            let roots = crate::tls::roots(config.ca_file.as_deref())?;
            Some((crate::tls::client_config(&roots, None)?, name))
        } else {
            None
        };
        let host = HeaderValue::from_str(&address.authority())
            .map_err(|e| PerfError::Config(format!("bad HTTP host: {e}")))?;
        let path = match endpoint {
            Endpoint::Telemetry => "/telemetry",
            Endpoint::Event => "/event",
        };
        Ok(Self {
            address,
            host,
            path,
            tls,
        })
    }

    /// Connects (over TLS with the device's certificate, if it has one).
    async fn connect(&self, device: &Device) -> Result<Conn, &'static str> {
        let stream = tokio::time::timeout(
            ACK_TIMEOUT,
            TcpStream::connect((self.address.host.as_str(), self.address.port)),
        )
        .await
        .map_err(|_| "timeout")?
        .map_err(|_| "http connect")?;
        let _ = stream.set_nodelay(true);
        let stream = match &self.tls {
            None => Either::Left(stream),
            Some((config, name)) => {
                let config = device.tls.clone().unwrap_or_else(|| config.clone());
                let tls = TlsConnector::from(config).connect(name.clone(), stream);
                Either::Right(
                    tokio::time::timeout(ACK_TIMEOUT, tls)
                        .await
                        .map_err(|_| "timeout")?
                        .map_err(|_| "tls handshake")?,
                )
            }
        };
        let (sender, driver) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|_| "http connect")?;
        Ok(Conn {
            sender,
            driver: Box::pin(driver),
        })
    }

    async fn send(
        &self,
        conn: &mut Conn,
        auth: Option<&HeaderValue>,
        qos: u8,
        body: Bytes,
    ) -> Outcome {
        let mut request = Request::post(self.path)
            .header(HOST, self.host.clone())
            .header(CONTENT_TYPE, "application/octet-stream");
        if let Some(auth) = auth {
            request = request.header(AUTHORIZATION, auth.clone());
        }
        if qos == 1 && self.path == "/telemetry" {
            request = request.header("qos-level", "1");
        }
        let Ok(request) = request.body(Full::new(body)) else {
            return Outcome::Broken("http request");
        };
        let Conn { sender, driver } = conn;
        let exchange = async {
            sender.ready().await.map_err(|_| "http connection")?;
            let response = sender
                .send_request(request)
                .await
                .map_err(|_| "http connection")?;
            let status = response.status();
            response
                .into_body()
                .collect()
                .await
                .map_err(|_| "http connection")?;
            Ok::<_, &'static str>(status)
        };
        let driven = async {
            tokio::select! {
                biased;
                status = exchange => status,
                _ = driver.as_mut() => Err("http connection"),
            }
        };
        match tokio::time::timeout(ACK_TIMEOUT, driven).await {
            Err(_) => Outcome::Broken("timeout"),
            Ok(Err(kind)) => Outcome::Broken(kind),
            Ok(Ok(status)) if status.is_success() => Outcome::Accepted,
            Ok(Ok(status)) => Outcome::Status(status.as_u16()),
        }
    }
}

/// The `authorization` header of a password device (`Ok(None)` for a certificate device).
fn basic_auth(device: &Device) -> Result<Option<HeaderValue>, &'static str> {
    if device.tls.is_some() {
        return Ok(None);
    }
    let token = base64::engine::general_purpose::STANDARD
        .encode(format!("{}:{}", device.username, device.password));
    HeaderValue::from_str(&format!("Basic {token}"))
        .map(Some)
        .map_err(|_| "http bad credentials")
}

impl HttpTransport {
    /// One new connection (a full TLS handshake for `https://`), one request, closed: the outcome
    /// as an error kind.
    pub async fn send_once(&self, device: &Device, qos: u8, body: Bytes) -> Result<(), String> {
        let auth = basic_auth(device)?;
        let mut conn = self.connect(device).await?;
        match self.send(&mut conn, auth.as_ref(), qos, body).await {
            Outcome::Accepted => Ok(()),
            Outcome::Status(code) => Err(format!("http {code}")),
            Outcome::Broken(kind) => Err(kind.to_owned()),
        }
    }

    async fn drive_device(self: Arc<Self>, device: Device, load: Load) {
        let auth = match basic_auth(&device) {
            Ok(auth) => auth,
            Err(kind) => {
                load.recorder.error(kind);
                let _ = load.ready.send(false).await;
                return;
            }
        };
        let qos = load.effective_qos();
        let http = HttpDevice {
            transport: &self,
            device: &device,
            auth,
            qos,
        };
        requests::drive(&http, load).await;
    }

    async fn hold_connection(self: Arc<Self>, device: Device, hold: Hold) {
        let Ok(auth) = basic_auth(&device) else {
            let _ = hold.opened.send(false).await;
            return;
        };
        let mut sender = match self.connect(&device).await {
            Ok(s) => s,
            Err(kind) => {
                hold.recorder.error(kind);
                let _ = hold.opened.send(false).await;
                return;
            }
        };
        let payload = warmup_payload(&hold.payload, &hold.recorder);
        let ok = match self.send(&mut sender, auth.as_ref(), 0, payload).await {
            Outcome::Accepted => true,
            Outcome::Status(code) => {
                hold.recorder.error(format!("http {code}"));
                false
            }
            Outcome::Broken(kind) => {
                hold.recorder.error(kind);
                false
            }
        };
        let _ = hold.opened.send(ok).await;
        if ok {
            hold.stop.cancelled().await;
        }
        drop(sender);
    }
}

/// One device on its keep-alive connection.
struct HttpDevice<'a> {
    transport: &'a HttpTransport,
    device: &'a Device,
    auth: Option<HeaderValue>,
    qos: u8,
}

impl RequestResponse for HttpDevice<'_> {
    type Conn = Conn;

    async fn connect(&self) -> Result<Conn, String> {
        self.transport
            .connect(self.device)
            .await
            .map_err(str::to_owned)
    }

    async fn request(&self, conn: &mut Conn, payload: Bytes) -> Answer {
        match self
            .transport
            .send(conn, self.auth.as_ref(), self.qos, payload)
            .await
        {
            Outcome::Accepted => Answer::Ack,
            Outcome::Status(code) => Answer::Refused(format!("http {code}")),
            Outcome::Broken(kind) => Answer::Broken(kind.to_owned()),
        }
    }

    async fn close(&self, conn: Conn) {
        drop(conn);
    }
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
