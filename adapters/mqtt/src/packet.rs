//! The codec behind one small interface: version detection, then `rmqtt-codec`'s 3.1.1 or 5
//! codec, and version-neutral packets in and out.
//!
//! [`Transport`] owns the stream and two small buffers. The read buffer starts at
//! [`INITIAL_BUFFER`] bytes once bytes arrive and is given back when the connection goes idle,
//! so an idle connection holds no read buffer. The inbound packet size is capped at the payload limit plus
//! [`PACKET_OVERHEAD`], so a peer cannot make us buffer more than that for one packet.

use std::num::NonZeroU16;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use rmqtt_codec::error::DecodeError;
use rmqtt_codec::types::{Publish, QoS};
use rmqtt_codec::version::{ProtocolVersion, VersionCodec};
use rmqtt_codec::{MqttCodec, MqttPacket, v3, v5};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio_util::codec::{Decoder, Encoder};

use crate::error::Refusal;

/// Initial capacity of the read and write buffers.
pub(crate) const INITIAL_BUFFER: usize = 1024;
/// Size of the stack buffer an idle connection waits with.
const IDLE_READ: usize = 64;
/// Buffers that grew beyond this are dropped when empty.
const SHRINK_ABOVE: usize = 8 * 1024;
/// Room for the fixed header, topic and properties of a PUBLISH beyond its payload.
pub(crate) const PACKET_OVERHEAD: usize = 4096;

/// The protocol version of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Version {
    /// MQTT 3.1 or 3.1.1.
    V3,
    /// MQTT 5.
    V5,
}

/// A CONNECT packet's content that the adapter uses. Wills are ignored.
#[derive(Clone, Debug)]
pub(crate) struct ConnectInfo {
    /// The protocol version.
    pub(crate) version: Version,
    /// The client identifier (connection events' `remote-id`).
    pub(crate) client_id: String,
    /// The user name, if any.
    pub(crate) username: Option<String>,
    /// The password, if any.
    pub(crate) password: Option<Bytes>,
    /// Keep-alive in seconds (0: none).
    pub(crate) keep_alive: u16,
}

/// A PUBLISH from the device.
#[derive(Clone, Debug)]
pub(crate) struct PublishIn {
    /// The topic name.
    pub(crate) topic: String,
    /// 0, 1 or 2.
    pub(crate) qos: u8,
    /// The packet id (QoS 1 and 2).
    pub(crate) packet_id: Option<NonZeroU16>,
    /// The retain flag.
    pub(crate) retain: bool,
    /// MQTT 5 content-type property.
    pub(crate) content_type: Option<String>,
    /// MQTT 5 topic alias (refused: the adapter announces a maximum of 0).
    pub(crate) topic_alias: bool,
    /// The payload.
    pub(crate) payload: Bytes,
}

/// A packet from the device, whatever its version.
#[derive(Debug)]
pub(crate) enum Inbound {
    /// CONNECT.
    Connect(Box<ConnectInfo>),
    /// PUBLISH.
    Publish(Box<PublishIn>),
    /// SUBSCRIBE with its topic filters.
    Subscribe {
        /// Packet id.
        packet_id: NonZeroU16,
        /// Filters.
        filters: Vec<String>,
    },
    /// UNSUBSCRIBE with its topic filters.
    Unsubscribe {
        /// Packet id.
        packet_id: NonZeroU16,
        /// Filters.
        filters: Vec<String>,
    },
    /// PINGREQ.
    Ping,
    /// DISCONNECT.
    Disconnect,
    /// An acknowledgement the adapter does not need (PUBACK, PUBREC, PUBCOMP, PUBREL).
    Ack,
    /// A packet a client must not send to a server, or one the adapter does not support.
    Unexpected(&'static str),
}

/// A packet to the device.
#[derive(Debug)]
pub(crate) enum Outbound {
    /// CONNACK: accepted, or refused for a cause.
    ConnAck(Result<(), Refusal>),
    /// PUBACK.
    PubAck(NonZeroU16),
    /// SUBACK: per filter, granted QoS 0 (true) or failure (false).
    SubAck {
        /// Packet id.
        packet_id: NonZeroU16,
        /// Granted or not, per filter.
        granted: Vec<bool>,
    },
    /// UNSUBACK.
    UnsubAck {
        /// Packet id.
        packet_id: NonZeroU16,
        /// Number of filters.
        count: usize,
    },
    /// PINGRESP.
    Pong,
    /// A QoS 0 PUBLISH (error messages).
    Publish {
        /// Topic.
        topic: String,
        /// Payload.
        payload: Bytes,
    },
    /// MQTT 5 DISCONNECT with a reason code (nothing is sent on 3.1.1).
    Disconnect(v5::DisconnectReasonCode),
}

/// Why the transport failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TransportError {
    /// Socket error.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The peer sent bytes that are no valid MQTT.
    #[error("malformed packet: {0}")]
    Decode(#[from] DecodeError),
    /// A packet could not be encoded.
    #[error("cannot encode a packet: {0}")]
    Encode(#[from] rmqtt_codec::error::EncodeError),
}

/// Settings the CONNACK announces.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Announce {
    /// MQTT 5 receive-maximum.
    pub(crate) receive_max: u16,
    /// Largest packet accepted.
    pub(crate) max_packet_size: u32,
}

/// The stream, its codec and its buffers.
pub(crate) struct Transport<S> {
    stream: S,
    codec: MqttCodec,
    version: Option<Version>,
    max_packet_size: u32,
    rbuf: BytesMut,
    wbuf: BytesMut,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Transport<S> {
    /// A transport that detects the version from the first (CONNECT) packet.
    pub(crate) fn new(stream: S, max_packet_size: u32) -> Self {
        Self {
            stream,
            codec: MqttCodec::Version(VersionCodec),
            version: None,
            max_packet_size,
            rbuf: BytesMut::new(),
            wbuf: BytesMut::new(),
        }
    }

    /// The detected protocol version, once the CONNECT's header was read.
    #[cfg(test)]
    pub(crate) fn version(&self) -> Option<Version> {
        self.version
    }

    /// Decodes the next complete packet from the read buffer, if there is one.
    pub(crate) fn decode(&mut self) -> Result<Option<Inbound>, TransportError> {
        loop {
            let Some((packet, _)) = self.codec.decode(&mut self.rbuf)? else {
                if self.rbuf.is_empty() && self.rbuf.capacity() > SHRINK_ABOVE {
                    self.rbuf = BytesMut::new();
                }
                return Ok(None);
            };
            match packet {
                MqttPacket::Version(ProtocolVersion::MQTT3) => {
                    self.version = Some(Version::V3);
                    self.codec = MqttCodec::V3(v3::Codec::new(self.max_packet_size));
                }
                MqttPacket::Version(ProtocolVersion::MQTT5) => {
                    self.version = Some(Version::V5);
                    self.codec = MqttCodec::V5(v5::Codec::new(self.max_packet_size, 0));
                }
                MqttPacket::V3(p) => return Ok(Some(from_v3(p))),
                MqttPacket::V5(p) => return Ok(Some(from_v5(p))),
            }
        }
    }

    /// Reads more bytes; `Ok(0)` at the end of the stream. Cancel-safe.
    pub(crate) async fn fill(&mut self) -> std::io::Result<usize> {
        std::future::poll_fn(|cx| self.poll_fill(cx)).await
    }

    /// Reads more bytes if there are any; `Ok(0)` at the end of the stream.
    ///
    /// A poll, not a future: a connection waiting for bytes keeps no read future in its state.
    /// A connection whose read buffer was released ([`Transport::release_read_buffer`]) reads
    /// into a small buffer on the stack instead of a heap buffer, so an idle connection holds
    /// no read buffer at all.
    pub(crate) fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
        if self.rbuf.capacity() == 0 {
            let mut first = [0u8; IDLE_READ];
            let mut read = ReadBuf::new(&mut first);
            ready!(Pin::new(&mut self.stream).poll_read(cx, &mut read))?;
            let n = read.filled().len();
            self.rbuf.reserve(INITIAL_BUFFER.max(n));
            self.rbuf.extend_from_slice(read.filled());
            return Poll::Ready(Ok(n));
        }
        if self.rbuf.capacity() - self.rbuf.len() < 256 {
            self.rbuf.reserve(INITIAL_BUFFER);
        }
        tokio_util::io::poll_read_buf(Pin::new(&mut self.stream), cx, &mut self.rbuf)
    }

    /// Gives the read buffer back if it holds no partial packet (call when the connection has
    /// nothing in flight: it is probably going idle).
    pub(crate) fn release_read_buffer(&mut self) {
        if self.rbuf.is_empty() && self.rbuf.capacity() > 0 {
            self.rbuf = BytesMut::new();
        }
    }

    /// Encodes a packet into the write buffer (nothing for packets the version lacks).
    pub(crate) fn queue(
        &mut self,
        packet: Outbound,
        announce: Announce,
    ) -> Result<(), TransportError> {
        let packet = match self.version {
            None => return Ok(()),
            Some(Version::V3) => match to_v3(packet) {
                Some(p) => MqttPacket::V3(p),
                None => return Ok(()),
            },
            Some(Version::V5) => MqttPacket::V5(to_v5(packet, announce)),
        };
        self.codec.encode(packet, &mut self.wbuf)?;
        Ok(())
    }

    /// Whether packets wait in the write buffer.
    pub(crate) fn has_pending_writes(&self) -> bool {
        !self.wbuf.is_empty()
    }

    /// Writes the write buffer out.
    pub(crate) async fn flush(&mut self) -> std::io::Result<()> {
        if !self.wbuf.is_empty() {
            self.stream.write_all(&self.wbuf).await?;
            self.stream.flush().await?;
            self.wbuf.clear();
            if self.wbuf.capacity() > SHRINK_ABOVE {
                self.wbuf = BytesMut::new();
            }
        }
        Ok(())
    }

    /// Flushes and shuts the stream down (TLS close_notify, TCP FIN).
    pub(crate) async fn close(mut self) {
        let _ = self.flush().await;
        let _ = self.stream.shutdown().await;
    }
}

fn qos_value(qos: QoS) -> u8 {
    match qos {
        QoS::AtMostOnce => 0,
        QoS::AtLeastOnce => 1,
        QoS::ExactlyOnce => 2,
    }
}

fn from_publish(p: Publish) -> Inbound {
    let (content_type, topic_alias) = match &p.properties {
        Some(props) => (
            props.content_type.as_ref().map(|c| c.to_string()),
            props.topic_alias.is_some(),
        ),
        None => (None, false),
    };
    Inbound::Publish(Box::new(PublishIn {
        topic: p.topic.to_string(),
        qos: qos_value(p.qos),
        packet_id: p.packet_id,
        retain: p.retain,
        content_type,
        topic_alias,
        payload: p.payload,
    }))
}

fn from_v3(packet: v3::Packet) -> Inbound {
    use v3::Packet as P;
    match packet {
        P::Connect(c) => Inbound::Connect(Box::new(ConnectInfo {
            version: Version::V3,
            client_id: c.client_id.to_string(),
            username: c.username.map(|u| u.to_string()),
            password: c.password,
            keep_alive: c.keep_alive,
        })),
        P::Publish(p) => from_publish(*p),
        P::Subscribe {
            packet_id,
            topic_filters,
        } => Inbound::Subscribe {
            packet_id,
            filters: topic_filters
                .into_iter()
                .map(|(f, _)| f.to_string())
                .collect(),
        },
        P::Unsubscribe {
            packet_id,
            topic_filters,
        } => Inbound::Unsubscribe {
            packet_id,
            filters: topic_filters.into_iter().map(|f| f.to_string()).collect(),
        },
        P::PingRequest => Inbound::Ping,
        P::Disconnect => Inbound::Disconnect,
        P::PublishAck { .. }
        | P::PublishReceived { .. }
        | P::PublishRelease { .. }
        | P::PublishComplete { .. } => Inbound::Ack,
        P::ConnectAck(_) => Inbound::Unexpected("CONNACK"),
        P::SubscribeAck { .. } => Inbound::Unexpected("SUBACK"),
        P::UnsubscribeAck { .. } => Inbound::Unexpected("UNSUBACK"),
        P::PingResponse => Inbound::Unexpected("PINGRESP"),
    }
}

fn from_v5(packet: v5::Packet) -> Inbound {
    use v5::Packet as P;
    match packet {
        P::Connect(c) => Inbound::Connect(Box::new(ConnectInfo {
            version: Version::V5,
            client_id: c.client_id.to_string(),
            username: c.username.map(|u| u.to_string()),
            password: c.password,
            keep_alive: c.keep_alive,
        })),
        P::Publish(p) => from_publish(*p),
        P::Subscribe(s) => Inbound::Subscribe {
            packet_id: s.packet_id,
            filters: s
                .topic_filters
                .into_iter()
                .map(|(f, _)| f.to_string())
                .collect(),
        },
        P::Unsubscribe(u) => Inbound::Unsubscribe {
            packet_id: u.packet_id,
            filters: u.topic_filters.into_iter().map(|f| f.to_string()).collect(),
        },
        P::PingRequest => Inbound::Ping,
        P::Disconnect(_) => Inbound::Disconnect,
        P::PublishAck(_) | P::PublishReceived(_) | P::PublishRelease(_) | P::PublishComplete(_) => {
            Inbound::Ack
        }
        P::Auth(_) => Inbound::Unexpected("AUTH"),
        P::ConnectAck(_) => Inbound::Unexpected("CONNACK"),
        P::SubscribeAck(_) => Inbound::Unexpected("SUBACK"),
        P::UnsubscribeAck(_) => Inbound::Unexpected("UNSUBACK"),
        P::PingResponse => Inbound::Unexpected("PINGRESP"),
    }
}

fn publish_out(topic: String, payload: Bytes) -> Publish {
    Publish {
        dup: false,
        retain: false,
        qos: QoS::AtMostOnce,
        topic: topic.into(),
        packet_id: None,
        payload,
        properties: None,
    }
}

fn to_v3(packet: Outbound) -> Option<v3::Packet> {
    use v3::Packet as P;
    Some(match packet {
        Outbound::ConnAck(result) => P::ConnectAck(v3::ConnectAck {
            return_code: match result {
                Ok(()) => v3::ConnectAckReason::ConnectionAccepted,
                Err(refusal) => v3_reason(refusal.v3_code()),
            },
            session_present: false,
        }),
        Outbound::PubAck(packet_id) => P::PublishAck { packet_id },
        Outbound::SubAck { packet_id, granted } => P::SubscribeAck {
            packet_id,
            status: granted
                .into_iter()
                .map(|g| match g {
                    true => v3::SubscribeReturnCode::Success(QoS::AtMostOnce),
                    false => v3::SubscribeReturnCode::Failure,
                })
                .collect(),
        },
        Outbound::UnsubAck { packet_id, .. } => P::UnsubscribeAck { packet_id },
        Outbound::Pong => P::PingResponse,
        Outbound::Publish { topic, payload } => P::Publish(Box::new(publish_out(topic, payload))),
        Outbound::Disconnect(_) => return None,
    })
}

fn v3_reason(code: u8) -> v3::ConnectAckReason {
    v3::ConnectAckReason::try_from(code).unwrap_or(v3::ConnectAckReason::NotAuthorized)
}

fn v5_reason(code: u8) -> v5::ConnectAckReason {
    v5::ConnectAckReason::try_from(code).unwrap_or(v5::ConnectAckReason::UnspecifiedError)
}

fn to_v5(packet: Outbound, announce: Announce) -> v5::Packet {
    use v5::Packet as P;
    match packet {
        Outbound::ConnAck(result) => P::ConnectAck(Box::new(v5::ConnectAck {
            session_present: false,
            reason_code: match result {
                Ok(()) => v5::ConnectAckReason::Success,
                Err(refusal) => v5_reason(refusal.v5_code()),
            },
            receive_max: NonZeroU16::new(announce.receive_max).unwrap_or(NonZeroU16::MIN),
            max_qos: QoS::AtLeastOnce,
            max_packet_size: Some(announce.max_packet_size),
            topic_alias_max: 0,
            retain_available: true,
            wildcard_subscription_available: true,
            subscription_identifiers_available: false,
            shared_subscription_available: false,
            ..v5::ConnectAck::default()
        })),
        Outbound::PubAck(packet_id) => P::PublishAck(v5::PublishAck {
            packet_id,
            reason_code: v5::PublishAckReason::Success,
            properties: Vec::new(),
            reason_string: None,
        }),
        Outbound::SubAck { packet_id, granted } => P::SubscribeAck(v5::SubscribeAck {
            packet_id,
            properties: Vec::new(),
            reason_string: None,
            status: granted
                .into_iter()
                .map(|g| match g {
                    true => v5::SubscribeAckReason::GrantedQos0,
                    false => v5::SubscribeAckReason::UnspecifiedError,
                })
                .collect(),
        }),
        Outbound::UnsubAck { packet_id, count } => P::UnsubscribeAck(v5::UnsubscribeAck {
            packet_id,
            properties: Vec::new(),
            reason_string: None,
            status: vec![v5::UnsubscribeAckReason::Success; count],
        }),
        Outbound::Pong => P::PingResponse,
        Outbound::Publish { topic, payload } => P::Publish(Box::new(publish_out(topic, payload))),
        Outbound::Disconnect(reason_code) => P::Disconnect(v5::Disconnect {
            reason_code,
            ..v5::Disconnect::default()
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type R = Result<(), Box<dyn std::error::Error>>;

    fn transport(bytes: &[u8]) -> Transport<tokio::io::DuplexStream> {
        let (a, _b) = tokio::io::duplex(64);
        let mut t = Transport::new(a, 4096);
        t.rbuf.extend_from_slice(bytes);
        t
    }

    #[test]
    fn detects_the_version_then_decodes_connect() -> R {
        // MQTT 3.1.1 CONNECT, client id "c1", user "u", password "p", keep-alive 60.
        let mut t = transport(b"\x10\x14\x00\x04MQTT\x04\xc2\x00\x3c\x00\x02c1\x00\x01u\x00\x01p");
        let Some(Inbound::Connect(c)) = t.decode()? else {
            return Err("no CONNECT".into());
        };
        assert_eq!(t.version(), Some(Version::V3));
        assert_eq!((c.client_id.as_str(), c.keep_alive), ("c1", 60));
        assert_eq!(c.username.as_deref(), Some("u"));
        assert_eq!(c.password.as_deref(), Some(&b"p"[..]));
        Ok(())
    }

    #[test]
    fn garbage_and_partial_input_never_panic() {
        assert!(transport(b"GET / HTTP/1.1\r\n\r\n").decode().is_err());
        assert!(matches!(transport(b"\x10").decode(), Ok(None)));
        assert!(transport(b"\x10\xff\xff\xff\xff\xff").decode().is_err());
        assert!(transport(b"\x10\x05\x00\x04MQTX\x04").decode().is_err());
        // Every prefix and some bit flips of a valid CONNECT.
        let valid = b"\x10\x15\x00\x04MQTT\x05\xc2\x00\x3c\x00\x02c1\x00\x01u\x00\x01p".to_vec();
        for n in 0..valid.len() {
            let _ = transport(&valid[..n]).decode();
            for bit in 0..8 {
                let mut flipped = valid.clone();
                flipped[n] ^= 1 << bit;
                let _ = transport(&flipped).decode();
            }
        }
    }

    #[test]
    fn oversized_packets_are_refused_before_buffering() {
        let mut t = transport(b"\x10\x14\x00\x04MQTT\x04\xc2\x00\x3c\x00\x02c1\x00\x01u\x00\x01p");
        assert!(matches!(t.decode(), Ok(Some(Inbound::Connect(_)))));
        // PUBLISH announcing 1 MiB of remaining length.
        t.rbuf.extend_from_slice(b"\x30\x80\x80\x40");
        assert!(matches!(
            t.decode(),
            Err(TransportError::Decode(DecodeError::MaxSizeExceeded { .. }))
        ));
    }
}
