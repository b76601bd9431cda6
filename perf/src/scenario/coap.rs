//! CoAP devices: one DTLS-PSK session per device (webrtc-dtls as the client, identity
//! `auth-id@tenant`, the device's password as the key; setup gives every device a `psk`
//! credential next to its password), one request in flight per device, as a constrained device
//! does.
//!
//! Telemetry at `--qos 1` and events are CON requests (at least once: the 2.04 comes after the
//! northbound accepted the message), telemetry at `--qos 0` NON requests (at most once). A CON
//! that is not acknowledged is retransmitted with RFC 7252's exponential backoff (2 s, 4 s, each
//! counted as `coap retransmission`) within the harness's 10 s answer timeout; an empty ACK
//! followed by a separate response is handled (the separate CON response is acknowledged).
//! Acknowledgement latency is send to 2.04.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use coap_lite::{
    CoapOption, MessageClass, MessageType, Packet, RequestType, ResponseType, error::MessageError,
};
use tokio::net::UdpSocket;
use webrtc_dtls::cipher_suite::CipherSuiteId;
use webrtc_dtls::config::{Config, ExtendedMasterSecretType};
use webrtc_dtls::conn::DTLSConn;

use super::requests::{self, Answer, RequestResponse};
use super::{ACK_TIMEOUT, BoxFuture, Device, Endpoint, Hold, Load, Transport};
use crate::PerfError;
use crate::config::{Address, RunConfig, Target};
use crate::stats::Recorder;

/// How long a DTLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// RFC 7252's ACK_TIMEOUT: the first retransmission of an unanswered CON.
const FIRST_RETRANSMISSION: Duration = Duration::from_secs(2);
/// RFC 7252's MAX_RETRANSMIT.
const MAX_RETRANSMIT: u32 = 4;
/// CoAP's Content-Format `application/octet-stream`.
const OCTET_STREAM: u8 = 42;

/// The CoAP device protocol against Ferry's DTLS port.
#[derive(Debug)]
pub struct CoapTransport {
    address: Address,
    path: &'static str,
    buffer: usize,
}

/// The outcome of one request.
enum Outcome {
    /// 2.04 Changed (or another 2.xx).
    Accepted,
    /// Another response code.
    Code(ResponseType),
    /// The session failed or nothing answered (the session must be replaced).
    Broken(&'static str),
}

/// One device's DTLS session and its message-id counter.
struct Session {
    conn: DTLSConn,
    next_id: u16,
    buf: Vec<u8>,
}

impl CoapTransport {
    /// The transport for `config`'s target; `endpoint` picks the resource.
    pub fn new(config: &RunConfig, endpoint: Endpoint) -> Result<Self, PerfError> {
        let address = match &config.target {
            Target::Ferry(f) => f.coap.clone(),
            Target::MqttBroker(_) | Target::HttpServer(_) => {
                return Err(PerfError::Config(
                    "--transport coap needs --target ferry".to_owned(),
                ));
            }
        };
        if !address.tls {
            return Err(PerfError::Config(
                "coap:// (plain UDP) has no device authentication; use coaps://".to_owned(),
            ));
        }
        Ok(Self {
            address,
            path: match endpoint {
                Endpoint::Telemetry => "telemetry",
                Endpoint::Event => "event",
            },
            buffer: config.payload_size + 1024,
        })
    }

    /// A DTLS-PSK session for `device`.
    async fn connect(&self, device: &Device) -> Result<Session, &'static str> {
        let socket = UdpSocket::bind(if self.address.host.contains(':') {
            "[::]:0"
        } else {
            "0.0.0.0:0"
        })
        .await
        .map_err(|_| "coap socket")?;
        socket
            .connect((self.address.host.as_str(), self.address.port))
            .await
            .map_err(|_| "coap socket")?;
        let key = device.password.as_bytes().to_vec();
        let config = Config {
            psk: Some(Arc::new(move |_hint: &[u8]| Ok(key.clone()))),
            psk_identity_hint: Some(device.username.as_bytes().to_vec()),
            cipher_suites: vec![CipherSuiteId::Tls_Psk_With_Aes_128_Ccm_8],
            extended_master_secret: ExtendedMasterSecretType::Request,
            // Only used to check a server certificate, which PSK suites have none of; set so
            // that webrtc-dtls does not warn about a missing name for every session.
            server_name: self.address.host.clone(),
            ..Config::default()
        };
        let handshake = DTLSConn::new(Arc::new(socket), config, true, None);
        let conn = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake)
            .await
            .map_err(|_| "timeout")?
            .map_err(|_| "dtls handshake")?;
        Ok(Session {
            conn,
            next_id: rand::random(),
            buf: vec![0; self.buffer],
        })
    }

    fn request(&self, kind: MessageType, id: u16, body: &[u8]) -> Result<Vec<u8>, MessageError> {
        let mut p = Packet::new();
        p.header.set_type(kind);
        p.header.code = MessageClass::Request(RequestType::Post);
        p.header.message_id = id;
        p.set_token(id.to_be_bytes().to_vec());
        p.add_option(CoapOption::UriPath, self.path.as_bytes().to_vec());
        p.add_option(CoapOption::ContentFormat, vec![OCTET_STREAM]);
        p.payload = body.to_vec();
        p.to_bytes()
    }

    /// Sends one request and waits up to [`ACK_TIMEOUT`] for its response, retransmitting a CON
    /// until it is acknowledged (each retransmission counted in `recorder`).
    async fn send(
        &self,
        session: &mut Session,
        confirmable: bool,
        body: &Bytes,
        recorder: &Recorder,
    ) -> Outcome {
        session.next_id = session.next_id.wrapping_add(1);
        let id = session.next_id;
        let kind = match confirmable {
            true => MessageType::Confirmable,
            false => MessageType::NonConfirmable,
        };
        let Ok(datagram) = self.request(kind, id, body) else {
            return Outcome::Broken("coap encode");
        };
        if session.conn.write(&datagram, None).await.is_err() {
            return Outcome::Broken("dtls write");
        }
        let give_up = tokio::time::Instant::now() + ACK_TIMEOUT;
        // A NON is never retransmitted; a CON until its ACK (empty or with the response) arrives.
        let mut acknowledged = !confirmable;
        let mut wait = FIRST_RETRANSMISSION;
        let mut retransmit_at = tokio::time::Instant::now() + wait;
        let mut attempts = 0;
        loop {
            let until = match acknowledged {
                true => give_up,
                false => retransmit_at.min(give_up),
            };
            let packet = match tokio::time::timeout_at(until, next_packet(session)).await {
                Ok(Ok(packet)) => packet,
                Ok(Err(kind)) => return Outcome::Broken(kind),
                Err(_) if !acknowledged && until < give_up && attempts < MAX_RETRANSMIT => {
                    recorder.error("coap retransmission");
                    if session.conn.write(&datagram, None).await.is_err() {
                        return Outcome::Broken("dtls write");
                    }
                    attempts += 1;
                    wait *= 2;
                    retransmit_at = tokio::time::Instant::now() + wait;
                    continue;
                }
                Err(_) => return Outcome::Broken("timeout"),
            };
            let header = &packet.header;
            if header.get_type() == MessageType::Acknowledgement && header.message_id == id {
                acknowledged = true;
            }
            if header.code == MessageClass::Empty || packet.get_token() != id.to_be_bytes() {
                // The empty ACK of a slow request, or a late answer to an earlier one.
                continue;
            }
            if header.get_type() == MessageType::Confirmable {
                // A separate response: acknowledge it.
                let mut ack = Packet::new();
                ack.header.set_type(MessageType::Acknowledgement);
                ack.header.message_id = header.message_id;
                if let Ok(bytes) = ack.to_bytes() {
                    let _ = session.conn.write(&bytes, None).await;
                }
            }
            return match header.code {
                MessageClass::Response(code) if is_success(code) => Outcome::Accepted,
                MessageClass::Response(code) => Outcome::Code(code),
                _ => Outcome::Broken("coap unexpected message"),
            };
        }
    }
}

/// The next CoAP message of the session (datagrams that do not parse are skipped).
async fn next_packet(session: &mut Session) -> Result<Packet, &'static str> {
    loop {
        let n = session
            .conn
            .read(&mut session.buf, None)
            .await
            .map_err(|_| "dtls read")?;
        if let Some(Ok(packet)) = session.buf.get(..n).map(Packet::from_bytes) {
            return Ok(packet);
        }
    }
}

fn is_success(code: ResponseType) -> bool {
    matches!(
        code,
        ResponseType::Created
            | ResponseType::Deleted
            | ResponseType::Valid
            | ResponseType::Changed
            | ResponseType::Content
    )
}

/// The report's name of a refusal (`coap 5.03`).
fn code_name(code: ResponseType) -> String {
    let raw = u8::from(MessageClass::Response(code));
    format!("coap {}.{:02}", raw >> 5, raw & 0x1f)
}

impl Outcome {
    /// The error kind of a failure, `None` for success.
    fn error(&self, context: &str) -> Option<String> {
        match self {
            Outcome::Accepted => None,
            Outcome::Code(code) => Some(format!("{}{context}", code_name(*code))),
            Outcome::Broken(kind) => Some(format!("{kind}{context}")),
        }
    }
}

impl CoapTransport {
    async fn drive_device(self: Arc<Self>, device: Device, load: Load) {
        let coap = CoapDevice {
            transport: &self,
            device: &device,
            confirmable: load.effective_qos() == 1,
            recorder: load.recorder.clone(),
        };
        requests::drive(&coap, load).await;
    }

    async fn hold_session(self: Arc<Self>, device: Device, hold: Hold) {
        let mut session = match self.connect(&device).await {
            Ok(s) => s,
            Err(kind) => {
                hold.recorder.error(kind);
                let _ = hold.opened.send(false).await;
                return;
            }
        };
        let payload = super::warmup_payload(&hold.payload, &hold.recorder);
        let outcome = self
            .send(&mut session, true, &payload, &hold.recorder)
            .await;
        let ok = match outcome.error("") {
            None => true,
            Some(kind) => {
                hold.recorder.error(kind);
                false
            }
        };
        let _ = hold.opened.send(ok).await;
        if ok {
            hold.stop.cancelled().await;
        }
        close(Some(session)).await;
    }
}

/// Ends a session with close_notify, so the gateway frees its peer at once.
async fn close(session: Option<Session>) {
    if let Some(s) = session {
        let _ = tokio::time::timeout(Duration::from_secs(1), s.conn.close()).await;
    }
}

/// One device on its DTLS session.
struct CoapDevice<'a> {
    transport: &'a CoapTransport,
    device: &'a Device,
    /// CON (at least once) or NON (at most once) for the measured messages.
    confirmable: bool,
    recorder: Arc<Recorder>,
}

impl CoapDevice<'_> {
    async fn exchange(&self, session: &mut Session, confirmable: bool, body: Bytes) -> Answer {
        let outcome = self
            .transport
            .send(session, confirmable, &body, &self.recorder)
            .await;
        match (outcome.error(""), &outcome) {
            (None, _) => Answer::Ack,
            (Some(kind), Outcome::Broken(_)) => Answer::Broken(kind),
            (Some(kind), _) => Answer::Refused(kind),
        }
    }
}

impl RequestResponse for CoapDevice<'_> {
    type Conn = Session;

    async fn connect(&self) -> Result<Session, String> {
        self.transport
            .connect(self.device)
            .await
            .map_err(str::to_owned)
    }

    async fn request(&self, session: &mut Session, payload: Bytes) -> Answer {
        self.exchange(session, self.confirmable, payload).await
    }

    /// Always confirmable: a NON warm-up would prove nothing.
    async fn warm_up(&self, session: &mut Session, payload: Bytes) -> Answer {
        self.exchange(session, true, payload).await
    }

    async fn close(&self, session: Session) {
        close(Some(session)).await;
    }
}

impl Transport for CoapTransport {
    fn name(&self) -> &'static str {
        "coap"
    }

    fn drive(self: Arc<Self>, device: Device, load: Load) -> BoxFuture {
        Box::pin(self.drive_device(device, load))
    }

    fn hold(self: Arc<Self>, device: Device, hold: Hold) -> BoxFuture {
        Box::pin(self.hold_session(device, hold))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_named_like_coap_codes() {
        assert_eq!(code_name(ResponseType::ServiceUnavailable), "coap 5.03");
        assert_eq!(code_name(ResponseType::Unauthorized), "coap 4.01");
        assert!(is_success(ResponseType::Changed));
        assert!(!is_success(ResponseType::TooManyRequests));
    }
}
