//! HTTP devices: HTTP/1.1 keep-alive with basic auth, one connection per device, one request in
//! flight per connection (as a device does), on hyper's low-level client to keep the load
//! generator's own cost small.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use http::{HeaderValue, Request};
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use std::pin::Pin;
use tokio::net::TcpStream;

use super::{ACK_TIMEOUT, BoxFuture, Device, Endpoint, Hold, Load, Transport, warmup_payload};
use crate::PerfError;
use crate::config::{Address, RunConfig, Target};
use crate::stats::histogram;

/// How long to wait before reconnecting after a connection failed.
const RECONNECT_DELAY: Duration = Duration::from_millis(200);

/// The HTTP device protocol (Hono's HTTP adapter API, or any server answering 2xx).
#[derive(Debug)]
pub struct HttpTransport {
    address: Address,
    host: HeaderValue,
    path: &'static str,
}

/// One keep-alive connection. Its driver is polled by the device task itself, only while a request
/// is in flight: one task per device instead of two saves a wake-up per request.
struct Conn {
    sender: SendRequest<Full<Bytes>>,
    driver: Pin<Box<http1::Connection<TokioIo<TcpStream>, Full<Bytes>>>>,
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
        if address.tls {
            return Err(PerfError::Config(
                "https:// is not supported yet; use the plain HTTP port".to_owned(),
            ));
        }
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
        })
    }

    async fn connect(&self) -> Result<Conn, &'static str> {
        let stream = tokio::time::timeout(
            ACK_TIMEOUT,
            TcpStream::connect((self.address.host.as_str(), self.address.port)),
        )
        .await
        .map_err(|_| "timeout")?
        .map_err(|_| "http connect")?;
        let _ = stream.set_nodelay(true);
        let (sender, driver) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|_| "http connect")?;
        Ok(Conn {
            sender,
            driver: Box::pin(driver),
        })
    }

    async fn send(&self, conn: &mut Conn, auth: &HeaderValue, qos: u8, body: Bytes) -> Outcome {
        let mut request = Request::post(self.path)
            .header(HOST, self.host.clone())
            .header(AUTHORIZATION, auth.clone())
            .header(CONTENT_TYPE, "application/octet-stream");
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

fn basic_auth(device: &Device) -> Option<HeaderValue> {
    let token = base64::engine::general_purpose::STANDARD
        .encode(format!("{}:{}", device.username, device.password));
    HeaderValue::from_str(&format!("Basic {token}")).ok()
}

impl HttpTransport {
    async fn drive_device(self: Arc<Self>, device: Device, mut load: Load) {
        let recorder = load.recorder.clone();
        let Some(auth) = basic_auth(&device) else {
            recorder.error("http bad credentials");
            let _ = load.ready.send(false).await;
            return;
        };
        let qos = load.effective_qos();
        // Connect and authenticate once (the first password check is the slow one).
        let mut sender = match self.connect().await {
            Ok(s) => Some(s),
            Err(kind) => {
                recorder.error(kind);
                None
            }
        };
        let mut ok = false;
        if let Some(s) = sender.as_mut() {
            match self.send(s, &auth, qos, load.warmup_payload()).await {
                Outcome::Accepted => ok = true,
                Outcome::Status(code) => recorder.error(format!("http {code} (warm-up)")),
                Outcome::Broken(kind) => recorder.error(format!("{kind} (warm-up)")),
            }
        }
        let _ = load.ready.send(ok).await;
        let Some(start) = load.wait_start().await else {
            return;
        };
        let mut schedule = load.schedule(start);
        let mut acks = histogram();
        while load.pace(&mut schedule).await {
            let s = match sender.as_mut() {
                Some(s) => s,
                None => match self.connect().await {
                    Ok(s) => sender.insert(s),
                    Err(kind) => {
                        recorder.error(kind);
                        tokio::time::sleep(RECONNECT_DELAY).await;
                        continue;
                    }
                },
            };
            let body = load.next_payload();
            recorder.sent();
            let t0 = Instant::now();
            match self.send(s, &auth, qos, body).await {
                Outcome::Accepted => {
                    recorder.acked();
                    acks.saturating_record(t0.elapsed().as_micros().max(1) as u64);
                }
                Outcome::Status(code) => recorder.error(format!("http {code}")),
                Outcome::Broken(kind) => {
                    recorder.error(kind);
                    sender = None;
                }
            }
        }
        recorder.merge_ack_latency(&acks);
    }

    async fn hold_connection(self: Arc<Self>, device: Device, hold: Hold) {
        let Some(auth) = basic_auth(&device) else {
            let _ = hold.opened.send(false).await;
            return;
        };
        let mut sender = match self.connect().await {
            Ok(s) => s,
            Err(kind) => {
                hold.recorder.error(kind);
                let _ = hold.opened.send(false).await;
                return;
            }
        };
        let payload = warmup_payload(&hold.payload, &hold.recorder);
        let ok = match self.send(&mut sender, &auth, 0, payload).await {
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
