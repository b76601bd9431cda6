//! One MQTT connection of a simulated device, run by the task that uses it: CONNECT and its
//! CONNACK, then publishes encoded into one buffer that the task writes at once (one write and
//! one TLS flush for every publish that was due), PUBACKs decoded in place from the read buffer
//! and matched to their send times, keep-alive PINGREQs, and DISCONNECT.
//!
//! QoS 1 publishes take packet ids from a window of free ones (at most the window, or the MQTT
//! 5 server's Receive Maximum if lower, are unacknowledged); a PUBACK frees its id at once, so
//! acknowledgements may come in any order.

use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite};

use super::codec::{self, Connect, Packet};
use super::error::{MqttError, puback_accepted};
use crate::config::MqttVersion;
use crate::net::wire::Wire;

/// Encoded bytes beyond which no further publish is taken before the next write, so a QoS 0
/// publisher at rate `max` waits for the socket instead of filling memory.
const MAX_UNWRITTEN: usize = 64 * 1024;

/// The outcome of a QoS 1 publish.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ack {
    /// PUBACK with success (or MQTT 5 "no matching subscribers").
    Accepted,
    /// MQTT 5 PUBACK with this failure reason code.
    Refused(u8),
}

/// A connected client (after an accepted CONNACK).
#[derive(Debug)]
pub struct Connection<S> {
    wire: Wire<S>,
    version: MqttVersion,
    max_packet: usize,
    keep_alive: Duration,
    /// Something was written since the last [`Connection::keep_alive`].
    written: bool,
    /// Send time of the publish in flight under each packet id (index 0 is never used).
    in_flight: Vec<Option<Instant>>,
    /// Packet ids free for the next QoS 1 publishes.
    free: Vec<u16>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    /// Sends `connect` on a fresh stream and waits for the CONNACK (the caller bounds how long):
    /// a refusal is [`MqttError::Refused`] with its code. At most `window` QoS 1 publishes (or
    /// the MQTT 5 server's Receive Maximum, if lower) will be unacknowledged at once.
    pub async fn connect(stream: S, connect: &Connect<'_>, window: u16) -> Result<Self, MqttError> {
        let mut wire = Wire::new(stream);
        codec::connect(&mut wire.out, connect);
        wire.write().await?;
        let max_packet = connect.max_packet as usize;
        loop {
            let packet = codec::next_packet(&mut wire.received, connect.version, max_packet)?;
            match packet {
                None => wire.read().await?,
                Some(Packet::ConnAck {
                    code: 0,
                    receive_maximum,
                }) => {
                    let window = receive_maximum.map_or(window, |r| r.min(window));
                    return Ok(Self::connected(wire, connect, window));
                }
                Some(Packet::ConnAck { code, .. }) => {
                    return Err(MqttError::Refused(connect.version, code));
                }
                Some(Packet::Disconnect { reason }) => return Err(MqttError::Disconnected(reason)),
                Some(Packet::Unexpected(kind)) => return Err(MqttError::Unexpected(kind)),
                Some(Packet::PubAck { .. } | Packet::PingResp) => {
                    return Err(MqttError::Protocol("a packet before the CONNACK"));
                }
            }
        }
    }

    fn connected(wire: Wire<S>, connect: &Connect<'_>, window: u16) -> Self {
        let window = window.max(1);
        Self {
            wire,
            version: connect.version,
            max_packet: connect.max_packet as usize,
            keep_alive: Duration::from_secs(u64::from(connect.keep_alive)),
            written: true,
            in_flight: vec![None; usize::from(window) + 1],
            free: (1..=window).rev().collect(),
        }
    }

    /// Whether a publish at `qos` may be encoded now: QoS 1 needs a free packet id, and no more
    /// than 64 KiB may wait for the next write.
    pub fn can_publish(&self, qos: u8) -> bool {
        self.wire.out.len() < MAX_UNWRITTEN && (qos == 0 || !self.free.is_empty())
    }

    /// QoS 1 publishes not yet acknowledged.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len() - 1 - self.free.len()
    }

    /// Encodes a PUBLISH of `payload` to `topic` for the next write; at QoS 1 its PUBACK will be
    /// matched to `sent`. False (nothing encoded) if QoS 1 has no free packet id.
    pub fn publish(&mut self, topic: &str, qos: u8, payload: &[u8], sent: Instant) -> bool {
        let packet_id = if qos == 0 {
            0
        } else {
            let Some(id) = self.free.pop() else {
                return false;
            };
            self.in_flight[usize::from(id)] = Some(sent);
            id
        };
        codec::publish(
            &mut self.wire.out,
            self.version,
            topic,
            qos,
            packet_id,
            payload,
        );
        true
    }

    /// Handles the packets received so far: each PUBACK of a publish in flight goes to `acked`
    /// with its send time. A DISCONNECT, a malformed or unexpected packet ends the connection.
    pub fn process(&mut self, mut acked: impl FnMut(Instant, Ack)) -> Result<(), MqttError> {
        while let Some(packet) =
            codec::next_packet(&mut self.wire.received, self.version, self.max_packet)?
        {
            match packet {
                Packet::PubAck { packet_id, reason } => {
                    // A PUBACK of an id not in flight (a duplicate) has nothing to settle.
                    let slot = self.in_flight.get_mut(usize::from(packet_id));
                    if packet_id != 0
                        && let Some(sent) = slot.and_then(Option::take)
                    {
                        self.free.push(packet_id);
                        let ack = if puback_accepted(reason) {
                            Ack::Accepted
                        } else {
                            Ack::Refused(reason)
                        };
                        acked(sent, ack);
                    }
                }
                Packet::PingResp => {}
                Packet::Disconnect { reason } => return Err(MqttError::Disconnected(reason)),
                Packet::ConnAck { .. } => return Err(MqttError::Protocol("a second CONNACK")),
                Packet::Unexpected(kind) => return Err(MqttError::Unexpected(kind)),
            }
        }
        Ok(())
    }

    /// Whether packets wait to be written.
    pub fn has_output(&self) -> bool {
        !self.wire.out.is_empty()
    }

    /// Writes (and flushes) everything encoded so far, in one write.
    pub async fn write(&mut self) -> Result<(), MqttError> {
        self.written = true;
        Ok(self.wire.write().await?)
    }

    /// Reads what the server sent next (cancel safe); the end of the stream is an error.
    pub async fn read(&mut self) -> Result<(), MqttError> {
        Ok(self.wire.read().await?)
    }

    /// How often [`Connection::keep_alive`] should be called: half the keep-alive, so that no
    /// keep-alive passes without a packet.
    pub fn keep_alive_interval(&self) -> Duration {
        self.keep_alive / 2
    }

    /// Encodes a PINGREQ if nothing was written since the last call (the caller writes it).
    pub fn keep_alive(&mut self) {
        if !std::mem::replace(&mut self.written, false) && self.wire.out.is_empty() {
            codec::pingreq(&mut self.wire.out);
        }
    }

    /// Sends DISCONNECT and shuts the stream down (TLS `close_notify`, TCP FIN); the caller
    /// bounds how long it may take.
    pub async fn disconnect(mut self) {
        codec::disconnect(&mut self.wire.out);
        if self.wire.write().await.is_ok() {
            self.wire.shutdown().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _, DuplexStream};

    fn options(version: MqttVersion) -> Connect<'static> {
        Connect {
            version,
            client_id: "dev",
            credentials: Some(("u", "pw")),
            keep_alive: 30,
            max_packet: 1024,
        }
    }

    /// Connects over an in-memory stream whose server answers the CONNECT with `connack`.
    async fn connect(
        version: MqttVersion,
        connack: &[u8],
    ) -> (Result<Connection<DuplexStream>, MqttError>, DuplexStream) {
        let (client, mut server) = tokio::io::duplex(64 * 1024);
        let mut connect = [0u8; 64];
        let answer = async {
            let n = server.read(&mut connect).await.unwrap_or(0);
            assert!(
                n > 2 && connect[0] == 0x10,
                "no CONNECT: {:?}",
                &connect[..n]
            );
            let _ = server.write_all(connack).await;
        };
        let options = options(version);
        let (connection, ()) = tokio::join!(Connection::connect(client, &options, 100), answer);
        (connection, server)
    }

    #[tokio::test]
    async fn a_refused_connack_is_an_error_with_its_code() {
        let (refused, _) = connect(MqttVersion::V311, &[0x20, 2, 0, 5]).await;
        assert_eq!(
            refused.map(|_| ()).map_err(|e| e.kind()),
            Err("mqtt connack NotAuthorized".to_owned())
        );
        let (refused, _) = connect(MqttVersion::V5, &[0x20, 3, 0, 0x86, 0]).await;
        assert_eq!(
            refused.map(|_| ()).map_err(|e| e.kind()),
            Err("mqtt connack BadUserNamePassword".to_owned())
        );
        let (garbage, _) = connect(MqttVersion::V311, &[0x20, 3, 0, 0, 0]).await;
        assert_eq!(
            garbage.map(|_| ()).map_err(|e| e.kind()),
            Err("mqtt malformed packet".to_owned())
        );
    }

    #[tokio::test]
    async fn publishes_due_together_go_out_in_one_write_and_pubacks_find_their_send_times()
    -> Result<(), MqttError> {
        // The server allows 2 unacknowledged publishes (Receive Maximum).
        let (connection, mut server) =
            connect(MqttVersion::V5, &[0x20, 6, 0, 0, 3, 0x21, 0, 2]).await;
        let mut connection = connection?;
        let (t1, t2) = (Instant::now(), Instant::now() + Duration::from_millis(1));
        assert!(connection.publish("telemetry", 1, b"a", t1));
        assert!(connection.publish("telemetry", 1, b"b", t2));
        assert!(!connection.can_publish(1) && connection.can_publish(0));
        assert!(!connection.publish("telemetry", 1, b"c", t2));
        connection.write().await?;
        let mut written = [0u8; 64];
        let n = server.read(&mut written).await?;
        // Two PUBLISH packets of 17 bytes each (packet ids 1 and 2) in the one write.
        assert_eq!((n, written[0], written[17]), (34, 0x32, 0x32));
        assert_eq!((written[14], written[17 + 14]), (1, 2));
        // Acknowledged out of order; the second one refused (quota exceeded).
        server
            .write_all(&[0x40, 3, 0, 2, 0x97, 0x40, 2, 0, 1])
            .await?;
        let mut acks = Vec::new();
        while acks.len() < 2 {
            connection.read().await?;
            connection.process(|sent, ack| acks.push((sent, ack)))?;
        }
        assert_eq!(acks, [(t2, Ack::Refused(0x97)), (t1, Ack::Accepted)]);
        assert_eq!(connection.in_flight(), 0);
        // A server's DISCONNECT ends the connection with its reason.
        server.write_all(&[0xE0, 1, 0x8B]).await?;
        connection.read().await?;
        let ended = connection.process(|_, _| {});
        assert_eq!(
            ended.map_err(|e| e.kind()),
            Err("mqtt disconnect ServerShuttingDown".to_owned())
        );
        Ok(())
    }

    #[tokio::test]
    async fn qos_0_publishes_wait_for_the_write_once_64_kib_are_encoded() -> Result<(), MqttError> {
        let (connection, mut server) = connect(MqttVersion::V311, &[0x20, 2, 0, 0]).await;
        let mut connection = connection?;
        let mut encoded = 0;
        while connection.can_publish(0) {
            assert!(connection.publish("telemetry", 0, &[0; 1000], Instant::now()));
            encoded += 1;
        }
        // Each PUBLISH: 1 + 2 (Remaining Length 1,011) + 2 + 9 (topic) + 1,000 bytes.
        const PACKET: usize = 1014;
        assert_eq!(encoded, 64 * 1024 / PACKET + 1);
        let writing = tokio::spawn(async move {
            connection.write().await?;
            Ok::<_, MqttError>(connection.can_publish(0))
        });
        let mut written = vec![0; encoded * PACKET];
        server.read_exact(&mut written).await?;
        assert!(writing.await.map_err(std::io::Error::other)??);
        assert_eq!(
            &written[(encoded - 1) * PACKET..][..5],
            &[0x30, 0xF3, 0x07, 0, 9]
        );
        Ok(())
    }

    #[tokio::test]
    async fn keep_alive_pings_only_a_silent_connection_and_disconnect_says_goodbye()
    -> Result<(), MqttError> {
        let (connection, mut server) = connect(MqttVersion::V311, &[0x20, 2, 0, 0]).await;
        let mut connection = connection?;
        assert_eq!(connection.keep_alive_interval(), Duration::from_secs(15));
        // The CONNECT was written just now: no ping at the first tick, one at the second.
        connection.keep_alive();
        assert!(!connection.has_output());
        connection.keep_alive();
        connection.write().await?;
        connection.disconnect().await;
        let mut rest = Vec::new();
        server.read_to_end(&mut rest).await?;
        assert_eq!(rest, [0xC0, 0, 0xE0, 0]);
        Ok(())
    }
}
