//! The consumer's MQTT subscriber against a plain broker (`--target mqtt://…`), over rumqttc's
//! two APIs: 3.1.1 (`rumqttc`) and 5 (`rumqttc::v5`). (The devices use the harness's own client,
//! [`crate::mqtt`]; one subscriber costs little.)
//!
//! The two APIs have their own option, client, event-loop, packet and error types. The
//! subscriber needs only a few things from them (connect, subscribe, disconnect, and the events
//! that carry the CONNACK, the SUBACK and received payloads), so [`Client`] and [`Events`] wrap
//! either API and [`Polled`] is what both event loops report, in one vocabulary.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rumqttc::v5::mqttbytes::QoS as QoS5;
use rumqttc::v5::mqttbytes::v5::Packet as Packet5;
use rumqttc::{Packet as Packet4, QoS as QoS4, TlsConfiguration};

use crate::config::{Address, MqttVersion};

/// Keep-alive interval of the subscriber's connection.
const KEEP_ALIVE: Duration = Duration::from_secs(30);

/// How one client connects.
#[derive(Clone, Copy, Debug)]
pub struct ClientOptions<'a> {
    /// MQTT 3.1.1 or 5.
    pub version: MqttVersion,
    /// The broker or adapter.
    pub address: &'a Address,
    /// TLS configuration (with the client's certificate, if it has one), for `mqtts://`.
    pub tls: Option<&'a Arc<rustls::ClientConfig>>,
    /// Client id.
    pub client_id: &'a str,
    /// Username and password; `None` when the client authenticates with its certificate.
    pub credentials: Option<(&'a str, &'a str)>,
    /// Largest packet sent or accepted, bytes.
    pub max_packet: usize,
    /// Requests queued between the client handle and its event loop.
    pub channel: usize,
    /// How long connecting (TCP, TLS, CONNACK) may take.
    pub connect_timeout: Duration,
}

/// What an event loop reported, for either protocol version.
#[derive(Debug)]
pub enum Polled {
    /// The CONNACK of a successful connect.
    Connected,
    /// A SUBACK.
    Subscribed,
    /// An incoming PUBLISH's payload.
    Message(Bytes),
    /// Anything else (pings, outgoing packets).
    Other,
}

/// The client handle: subscribes through its event loop.
#[derive(Clone, Debug)]
pub enum Client {
    /// MQTT 3.1.1.
    V311(rumqttc::AsyncClient),
    /// MQTT 5.
    V5(rumqttc::v5::AsyncClient),
}

/// The event loop of a [`Client`]: must be polled for anything to happen.
pub enum Events {
    /// MQTT 3.1.1.
    V311(Box<rumqttc::EventLoop>),
    /// MQTT 5.
    V5(Box<rumqttc::v5::EventLoop>),
}

/// A client and its event loop for `o` (nothing is connected before the first poll).
pub fn new(o: &ClientOptions<'_>) -> (Client, Events) {
    let transport = o
        .tls
        .map(|tls| rumqttc::Transport::tls_with_config(TlsConfiguration::Rustls(tls.clone())));
    let host = o.address.host.clone();
    match o.version {
        MqttVersion::V311 => {
            let mut m = rumqttc::MqttOptions::new(o.client_id, host, o.address.port);
            if let Some((username, password)) = o.credentials {
                m.set_credentials(username, password);
            }
            m.set_keep_alive(KEEP_ALIVE)
                .set_clean_session(true)
                .set_max_packet_size(o.max_packet, o.max_packet);
            if let Some(t) = transport {
                m.set_transport(t);
            }
            let (client, mut events) = rumqttc::AsyncClient::new(m, o.channel);
            events
                .network_options
                .set_connection_timeout(o.connect_timeout.as_secs());
            (Client::V311(client), Events::V311(Box::new(events)))
        }
        MqttVersion::V5 => {
            let mut m = rumqttc::v5::MqttOptions::new(o.client_id, host, o.address.port);
            if let Some((username, password)) = o.credentials {
                m.set_credentials(username, password);
            }
            m.set_keep_alive(KEEP_ALIVE)
                .set_clean_start(true)
                .set_max_packet_size(u32::try_from(o.max_packet).ok())
                .set_connection_timeout(o.connect_timeout.as_secs());
            if let Some(t) = transport {
                m.set_transport(t);
            }
            let (client, events) = rumqttc::v5::AsyncClient::new(m, o.channel);
            (Client::V5(client), Events::V5(Box::new(events)))
        }
    }
}

impl Client {
    /// Hands a SUBSCRIBE to the event loop; `false` if the event loop is gone.
    pub async fn subscribe(&self, topic: &str, qos: u8) -> bool {
        match self {
            Client::V311(c) => c.subscribe(topic, qos4(qos)).await.is_ok(),
            Client::V5(c) => c.subscribe(topic, qos5(qos)).await.is_ok(),
        }
    }

    /// Queues a DISCONNECT without waiting.
    pub fn disconnect(&self) {
        let _ = match self {
            Client::V311(c) => c.try_disconnect().is_ok(),
            Client::V5(c) => c.try_disconnect().is_ok(),
        };
    }
}

fn qos4(qos: u8) -> QoS4 {
    if qos == 0 {
        QoS4::AtMostOnce
    } else {
        QoS4::AtLeastOnce
    }
}

fn qos5(qos: u8) -> QoS5 {
    if qos == 0 {
        QoS5::AtMostOnce
    } else {
        QoS5::AtLeastOnce
    }
}

impl Events {
    /// The next event (connecting first, and again after an error); the error kind on failure.
    pub async fn poll(&mut self) -> Result<Polled, String> {
        match self {
            Events::V311(e) => match e.poll().await {
                Ok(rumqttc::Event::Incoming(p)) => Ok(incoming4(p)),
                Ok(rumqttc::Event::Outgoing(_)) => Ok(Polled::Other),
                Err(e) => Err(error_kind4(&e)),
            },
            Events::V5(e) => match e.poll().await {
                Ok(rumqttc::v5::Event::Incoming(p)) => Ok(incoming5(p)),
                Ok(rumqttc::v5::Event::Outgoing(_)) => Ok(Polled::Other),
                Err(e) => Err(error_kind5(&e)),
            },
        }
    }

    /// Polls until the CONNACK (or an error) within `timeout`.
    pub async fn connected(&mut self, timeout: Duration) -> Result<(), String> {
        self.until(timeout, |p| matches!(p, Polled::Connected))
            .await
    }

    /// Polls until an event `done` accepts (or an error) within `timeout`.
    pub async fn until(
        &mut self,
        timeout: Duration,
        done: impl Fn(&Polled) -> bool,
    ) -> Result<(), String> {
        let wait = async {
            loop {
                match self.poll().await {
                    Ok(p) if done(&p) => return Ok(()),
                    Ok(_) => {}
                    Err(kind) => return Err(kind),
                }
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| "timeout".to_owned())?
    }
}

fn incoming4(p: Packet4) -> Polled {
    match p {
        Packet4::ConnAck(_) => Polled::Connected,
        Packet4::SubAck(_) => Polled::Subscribed,
        Packet4::Publish(p) => Polled::Message(p.payload),
        _ => Polled::Other,
    }
}

fn incoming5(p: Packet5) -> Polled {
    match p {
        Packet5::ConnAck(_) => Polled::Connected,
        Packet5::SubAck(_) => Polled::Subscribed,
        Packet5::Publish(p) => Polled::Message(p.payload),
        _ => Polled::Other,
    }
}

/// The error kind of a failed MQTT 3.1.1 connection, for the report.
fn error_kind4(e: &rumqttc::ConnectionError) -> String {
    use rumqttc::ConnectionError as E;
    match e {
        E::ConnectionRefused(code) => format!("mqtt connack {code:?}"),
        E::NetworkTimeout | E::FlushTimeout => "timeout".to_owned(),
        E::Io(_) => "mqtt io".to_owned(),
        E::Tls(_) => "mqtt tls".to_owned(),
        _ => "mqtt disconnect".to_owned(),
    }
}

/// The error kind of a failed MQTT 5 connection, for the report.
fn error_kind5(e: &rumqttc::v5::ConnectionError) -> String {
    use rumqttc::v5::ConnectionError as E;
    match e {
        E::ConnectionRefused(code) => format!("mqtt connack {code:?}"),
        E::Timeout(_) => "timeout".to_owned(),
        E::Io(_) => "mqtt io".to_owned(),
        E::Tls(_) => "mqtt tls".to_owned(),
        _ => "mqtt disconnect".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt as _;

    /// The protocol level byte of the CONNECT a client of `version` sends (4: 3.1.1, 5: 5).
    async fn connect_level(version: MqttVersion) -> std::io::Result<u8> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = Address::mqtt(&format!("mqtt://{}", listener.local_addr()?))
            .map_err(std::io::Error::other)?;
        let (_client, mut events) = new(&ClientOptions {
            version,
            address: &address,
            tls: None,
            client_id: "level",
            credentials: Some(("user", "secret")),
            max_packet: 1024,
            channel: 4,
            connect_timeout: Duration::from_secs(5),
        });
        let polling = tokio::spawn(async move { events.poll().await.is_ok() });
        let (mut socket, _) = listener.accept().await?;
        // Fixed header (type, one length byte for this small packet), then "MQTT" and the level.
        let mut head = [0u8; 9];
        socket.read_exact(&mut head).await?;
        polling.abort();
        assert_eq!((head[0], &head[2..8]), (0x10, &b"\0\x04MQTT"[..]));
        Ok(head[8])
    }

    #[tokio::test]
    async fn connect_sends_the_requested_protocol_level() -> std::io::Result<()> {
        assert_eq!(connect_level(MqttVersion::V311).await?, 4);
        assert_eq!(connect_level(MqttVersion::V5).await?, 5);
        Ok(())
    }

    #[test]
    fn both_versions_report_payloads_alike() {
        let p4 = rumqttc::Publish::new("telemetry", QoS4::AtLeastOnce, "a");
        let p5 =
            rumqttc::v5::mqttbytes::v5::Publish::new("telemetry", QoS5::AtLeastOnce, "a", None);
        for polled in [
            incoming4(Packet4::Publish(p4)),
            incoming5(Packet5::Publish(p5)),
        ] {
            assert!(
                matches!(&polled, Polled::Message(b) if b.as_ref() == b"a"),
                "{polled:?}"
            );
        }
    }
}
