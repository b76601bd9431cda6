//! The MQTT 3.1.1 and 5 packets a device needs, encoded straight into the send buffer and decoded
//! in place from the receive buffer.
//!
//! Sent: CONNECT (clean session, keep-alive, username and password or none; MQTT 5 with an empty
//! property list but for the Maximum Packet Size), PUBLISH at QoS 0 or 1 (MQTT 5: no properties),
//! PINGREQ and DISCONNECT. Received: CONNACK (its return or reason code; MQTT 5: the server's
//! Receive Maximum), PUBACK (MQTT 5: its reason code; properties are skipped), PINGRESP and the
//! MQTT 5 server's DISCONNECT. Anything else comes back as [`Packet::Unexpected`]. A packet is cut
//! off the buffer only when it is complete, so it may arrive split across any number of reads.

use bytes::{Buf, BufMut, BytesMut};

use crate::config::MqttVersion;

/// Packet types (the high nibble of the first byte).
const CONNECT: u8 = 1;
const CONNACK: u8 = 2;
const PUBLISH: u8 = 3;
const PUBACK: u8 = 4;
const PINGREQ: u8 = 12;
const PINGRESP: u8 = 13;
const DISCONNECT: u8 = 14;

/// MQTT 5 property ids read or written here.
const MAXIMUM_PACKET_SIZE: u8 = 0x27;
const RECEIVE_MAXIMUM: u8 = 0x21;

/// The largest Remaining Length the four bytes of its encoding hold.
const MAX_REMAINING: usize = 268_435_455;

/// What the client puts in its CONNECT.
#[derive(Clone, Copy, Debug)]
pub struct Connect<'a> {
    /// 3.1.1 (protocol level 4) or 5.
    pub version: MqttVersion,
    /// The client id.
    pub client_id: &'a str,
    /// Username and password; `None` when the client authenticates with its certificate.
    pub credentials: Option<(&'a str, &'a str)>,
    /// Keep-alive, seconds.
    pub keep_alive: u16,
    /// The largest packet the client accepts (MQTT 5 tells the server).
    pub max_packet: u32,
}

/// A packet from the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Packet {
    /// CONNACK: `code` is the 3.1.1 return code or the MQTT 5 reason code (0: accepted).
    ConnAck {
        /// The return or reason code.
        code: u8,
        /// MQTT 5: how many QoS 1 publishes the server takes at once.
        receive_maximum: Option<u16>,
    },
    /// PUBACK of `packet_id`; `reason` is 0 (success) unless an MQTT 5 server says otherwise.
    PubAck {
        /// The acknowledged packet id.
        packet_id: u16,
        /// The MQTT 5 reason code.
        reason: u8,
    },
    /// PINGRESP.
    PingResp,
    /// An MQTT 5 server's DISCONNECT with its reason code.
    Disconnect {
        /// The reason code.
        reason: u8,
    },
    /// A packet a device does not expect, by its type.
    Unexpected(u8),
}

/// Why the received bytes are not a packet.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The bytes break the packet format.
    #[error("malformed packet: {0}")]
    Malformed(&'static str),
    /// The packet is larger than the client accepts.
    #[error("a packet of {0} bytes is too large")]
    TooLarge(usize),
}

/// Appends a CONNECT.
pub fn connect(out: &mut BytesMut, c: &Connect<'_>) {
    let v5 = c.version == MqttVersion::V5;
    // MQTT 5: property length (1), Maximum Packet Size (1 + 4).
    let properties = if v5 { 6 } else { 0 };
    let mut len = 10 + properties + 2 + c.client_id.len();
    if let Some((username, password)) = c.credentials {
        len += 2 + username.len() + 2 + password.len();
    }
    header(out, CONNECT << 4, len);
    put_str(out, "MQTT");
    out.put_u8(if v5 { 5 } else { 4 });
    // Clean session / clean start; username and password flags.
    let flags = if c.credentials.is_some() { 0xC2 } else { 0x02 };
    out.put_u8(flags);
    out.put_u16(c.keep_alive);
    if v5 {
        out.put_u8(5);
        out.put_u8(MAXIMUM_PACKET_SIZE);
        out.put_u32(c.max_packet);
    }
    put_str(out, c.client_id);
    if let Some((username, password)) = c.credentials {
        put_str(out, username);
        put_str(out, password);
    }
}

/// Appends a PUBLISH of `payload` to `topic` at QoS 0 or 1 (`packet_id` is used only at QoS 1).
pub fn publish(
    out: &mut BytesMut,
    version: MqttVersion,
    topic: &str,
    qos: u8,
    packet_id: u16,
    payload: &[u8],
) {
    let qos = qos.min(1);
    let mut len = 2 + topic.len() + payload.len();
    if qos == 1 {
        len += 2;
    }
    if version == MqttVersion::V5 {
        len += 1; // an empty property list
    }
    header(out, PUBLISH << 4 | qos << 1, len);
    put_str(out, topic);
    if qos == 1 {
        out.put_u16(packet_id);
    }
    if version == MqttVersion::V5 {
        out.put_u8(0);
    }
    out.put_slice(payload);
}

/// Appends a PINGREQ.
pub fn pingreq(out: &mut BytesMut) {
    out.put_slice(&[PINGREQ << 4, 0]);
}

/// Appends a DISCONNECT (MQTT 5: reason "normal disconnection", implied by the empty body).
pub fn disconnect(out: &mut BytesMut) {
    out.put_slice(&[DISCONNECT << 4, 0]);
}

/// The fixed header: first byte and Remaining Length.
fn header(out: &mut BytesMut, first: u8, len: usize) {
    out.reserve(5 + len);
    out.put_u8(first);
    let mut rest = len.min(MAX_REMAINING);
    loop {
        let byte = (rest % 128) as u8;
        rest /= 128;
        if rest == 0 {
            out.put_u8(byte);
            return;
        }
        out.put_u8(byte | 0x80);
    }
}

/// A UTF-8 string with its two-byte length (longer strings are cut at 65,535 bytes).
fn put_str(out: &mut BytesMut, s: &str) {
    let bytes = &s.as_bytes()[..s.len().min(usize::from(u16::MAX))];
    out.put_u16(bytes.len() as u16);
    out.put_slice(bytes);
}

/// Cuts the next complete packet off `received`; `Ok(None)` while more bytes are needed. Packets
/// larger than `max_packet` bytes are an error.
pub fn next_packet(
    received: &mut BytesMut,
    version: MqttVersion,
    max_packet: usize,
) -> Result<Option<Packet>, DecodeError> {
    let Some((first, len, header_len)) = fixed_header(received)? else {
        return Ok(None);
    };
    let total = header_len + len;
    if total > max_packet {
        return Err(DecodeError::TooLarge(total));
    }
    if received.len() < total {
        return Ok(None);
    }
    let packet = decode(first, &received[header_len..total], version);
    received.advance(total);
    packet.map(Some)
}

/// The first byte, the Remaining Length and the size of the fixed header, once all of it is there.
fn fixed_header(buf: &[u8]) -> Result<Option<(u8, usize, usize)>, DecodeError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let mut len = 0usize;
    for (i, &byte) in buf.iter().skip(1).take(4).enumerate() {
        len |= usize::from(byte & 0x7F) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(Some((first, len, i + 2)));
        }
    }
    if buf.len() >= 5 {
        return Err(DecodeError::Malformed(
            "a Remaining Length of more than 4 bytes",
        ));
    }
    Ok(None)
}

/// Decodes one packet's body.
fn decode(first: u8, mut body: &[u8], version: MqttVersion) -> Result<Packet, DecodeError> {
    let kind = first >> 4;
    if first & 0x0F != 0 && kind != PUBLISH {
        return Err(DecodeError::Malformed("reserved flags are set"));
    }
    let v5 = version == MqttVersion::V5;
    match kind {
        CONNACK => {
            if body.len() < 2 || (!v5 && body.len() != 2) {
                return Err(DecodeError::Malformed("a CONNACK of the wrong length"));
            }
            let code = body[1];
            body.advance(2);
            let mut receive_maximum = None;
            if v5 && !body.is_empty() {
                for (id, value) in properties(&mut body)? {
                    if id == RECEIVE_MAXIMUM && value.len() == 2 {
                        receive_maximum = Some(u16::from_be_bytes([value[0], value[1]]));
                    }
                }
            }
            Ok(Packet::ConnAck {
                code,
                receive_maximum,
            })
        }
        PUBACK => {
            if body.len() < 2 || (!v5 && body.len() != 2) {
                return Err(DecodeError::Malformed("a PUBACK of the wrong length"));
            }
            let packet_id = body.get_u16();
            let reason = body.first().copied().unwrap_or(0);
            if body.len() > 1 {
                body.advance(1);
                properties(&mut body)?;
            }
            Ok(Packet::PubAck { packet_id, reason })
        }
        PINGRESP if body.is_empty() => Ok(Packet::PingResp),
        PINGRESP => Err(DecodeError::Malformed("a PINGRESP with a body")),
        DISCONNECT if v5 => Ok(Packet::Disconnect {
            reason: body.first().copied().unwrap_or(0),
        }),
        other => Ok(Packet::Unexpected(other)),
    }
}

/// Reads an MQTT 5 property list (its length, then the properties) off `body`: each property's
/// id and value bytes.
fn properties<'a>(body: &mut &'a [u8]) -> Result<Vec<(u8, &'a [u8])>, DecodeError> {
    let Some((len, used)) = varint(body) else {
        return Err(DecodeError::Malformed("a bad property length"));
    };
    if body.len() < used + len {
        return Err(DecodeError::Malformed("properties beyond the packet"));
    }
    let mut list = &body[used..used + len];
    body.advance(used + len);
    let mut found = Vec::new();
    while let Some((&id, rest)) = list.split_first() {
        let size = match id {
            0x01 | 0x17 | 0x19 | 0x24 | 0x25 | 0x28 | 0x29 | 0x2A => Some(1),
            0x13 | 0x21 | 0x22 | 0x23 => Some(2),
            0x02 | 0x11 | 0x18 | 0x27 => Some(4),
            0x0B => varint(rest).map(|(_, used)| used),
            0x03 | 0x08 | 0x09 | 0x12 | 0x15 | 0x16 | 0x1A | 0x1C | 0x1F => prefixed(rest, 1),
            0x26 => prefixed(rest, 2),
            _ => return Err(DecodeError::Malformed("an unknown property")),
        };
        match size {
            Some(size) if size <= rest.len() => {
                found.push((id, &rest[..size]));
                list = &rest[size..];
            }
            _ => return Err(DecodeError::Malformed("a property beyond its list")),
        }
    }
    Ok(found)
}

/// The size of `count` length-prefixed strings or byte strings at the start of `buf`.
fn prefixed(buf: &[u8], count: usize) -> Option<usize> {
    let mut size = 0;
    for _ in 0..count {
        let len = buf.get(size..size + 2)?;
        size += 2 + usize::from(u16::from_be_bytes([len[0], len[1]]));
    }
    Some(size)
}

/// A Variable Byte Integer at the start of `buf`: its value and the bytes it takes.
fn varint(buf: &[u8]) -> Option<(usize, usize)> {
    let mut value = 0usize;
    for (i, &byte) in buf.iter().take(4).enumerate() {
        value |= usize::from(byte & 0x7F) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const V4: MqttVersion = MqttVersion::V311;
    const V5: MqttVersion = MqttVersion::V5;

    fn connect_bytes(version: MqttVersion, credentials: Option<(&str, &str)>) -> Vec<u8> {
        let mut out = BytesMut::new();
        connect(
            &mut out,
            &Connect {
                version,
                client_id: "dev",
                credentials,
                keep_alive: 30,
                max_packet: 2048,
            },
        );
        out.to_vec()
    }

    #[test]
    fn connect_3_1_1_with_and_without_credentials() {
        let head = b"\0\x04MQTT\x04";
        let mut with = vec![0x10, 22];
        with.extend_from_slice(head);
        with.extend_from_slice(&[0xC2, 0, 30, 0, 3, b'd', b'e', b'v', 0, 1, b'u', 0, 2]);
        with.extend_from_slice(b"pw");
        assert_eq!(connect_bytes(V4, Some(("u", "pw"))), with);
        let mut without = vec![0x10, 15];
        without.extend_from_slice(head);
        without.extend_from_slice(&[0x02, 0, 30, 0, 3, b'd', b'e', b'v']);
        assert_eq!(connect_bytes(V4, None), without);
    }

    #[test]
    fn connect_5_carries_the_maximum_packet_size() {
        let mut expected = vec![0x10, 21];
        expected.extend_from_slice(b"\0\x04MQTT\x05");
        expected.extend_from_slice(&[0x02, 0, 30, 5, 0x27, 0, 0, 8, 0, 0, 3, b'd', b'e', b'v']);
        assert_eq!(connect_bytes(V5, None), expected);
        let with = connect_bytes(V5, Some(("u", "pw")));
        assert_eq!((with[1], with[9]), (28, 0xC2));
        assert!(with.ends_with(b"\0\x01u\0\x02pw"));
    }

    #[test]
    fn publish_at_qos_0_and_1_in_both_versions() {
        let mut out = BytesMut::new();
        publish(&mut out, V4, "t", 0, 9, b"ab");
        assert_eq!(&out[..], &[0x30, 5, 0, 1, b't', b'a', b'b']);
        out.clear();
        publish(&mut out, V4, "t", 1, 0x0102, b"ab");
        assert_eq!(&out[..], &[0x32, 7, 0, 1, b't', 1, 2, b'a', b'b']);
        out.clear();
        publish(&mut out, V5, "t", 1, 7, b"ab");
        assert_eq!(&out[..], &[0x32, 8, 0, 1, b't', 0, 7, 0, b'a', b'b']);
        out.clear();
        // A payload that needs a two-byte Remaining Length.
        publish(&mut out, V4, "t", 0, 0, &[b'x'; 200]);
        assert_eq!(&out[..3], &[0x30, 0xCB, 0x01]);
        assert_eq!(out.len(), 3 + 203);
    }

    fn decode_all(bytes: &[u8], version: MqttVersion) -> Result<Vec<Packet>, DecodeError> {
        let mut received = BytesMut::from(bytes);
        let mut packets = Vec::new();
        while let Some(p) = next_packet(&mut received, version, 1024)? {
            packets.push(p);
        }
        assert!(received.is_empty(), "left over: {received:?}");
        Ok(packets)
    }

    #[test]
    fn connacks_accepted_and_refused_in_both_versions() -> Result<(), DecodeError> {
        let accepted = Packet::ConnAck {
            code: 0,
            receive_maximum: None,
        };
        assert_eq!(decode_all(&[0x20, 2, 0, 0], V4)?, [accepted]);
        assert_eq!(
            decode_all(&[0x20, 2, 0, 4], V4)?,
            [Packet::ConnAck {
                code: 4,
                receive_maximum: None
            }]
        );
        // MQTT 5: Receive Maximum 20 and a reason string among the properties.
        let v5 = [0x20, 11, 0, 0, 8, 0x21, 0, 20, 0x1F, 0, 2, b'o', b'k'];
        assert_eq!(
            decode_all(&v5, V5)?,
            [Packet::ConnAck {
                code: 0,
                receive_maximum: Some(20)
            }]
        );
        assert_eq!(
            decode_all(&[0x20, 3, 0, 0x86, 0], V5)?,
            [Packet::ConnAck {
                code: 0x86,
                receive_maximum: None
            }]
        );
        Ok(())
    }

    #[test]
    fn pubacks_with_mqtt_5_reason_codes_and_properties() -> Result<(), DecodeError> {
        assert_eq!(
            decode_all(&[0x40, 2, 1, 2, 0x40, 2, 0, 3], V4)?,
            [
                Packet::PubAck {
                    packet_id: 0x0102,
                    reason: 0
                },
                Packet::PubAck {
                    packet_id: 3,
                    reason: 0
                }
            ]
        );
        // Reason "quota exceeded" with a reason string; then the short form (success).
        let bytes = [
            0x40, 9, 0, 8, 0x97, 5, 0x1F, 0, 2, b'n', b'o', 0x40, 2, 0, 9,
        ];
        assert_eq!(
            decode_all(&bytes, V5)?,
            [
                Packet::PubAck {
                    packet_id: 8,
                    reason: 0x97
                },
                Packet::PubAck {
                    packet_id: 9,
                    reason: 0
                }
            ]
        );
        Ok(())
    }

    #[test]
    fn a_packet_split_across_reads_is_cut_once_complete() -> Result<(), DecodeError> {
        let bytes = [0x40, 3, 0, 8, 0x10, 0xD0, 0];
        let mut received = BytesMut::new();
        let mut packets = Vec::new();
        for &byte in &bytes {
            received.put_u8(byte);
            while let Some(p) = next_packet(&mut received, V5, 1024)? {
                packets.push(p);
            }
        }
        assert_eq!(
            packets,
            [
                Packet::PubAck {
                    packet_id: 8,
                    reason: 0x10
                },
                Packet::PingResp
            ]
        );
        Ok(())
    }

    #[test]
    fn malformed_and_oversized_packets_are_errors() {
        let malformed = |bytes: &[u8], version| {
            matches!(
                next_packet(&mut BytesMut::from(bytes), version, 1024),
                Err(DecodeError::Malformed(_))
            )
        };
        assert!(
            malformed(&[0x40, 3, 0, 1, 0], V4),
            "3.1.1 PUBACK of 3 bytes"
        );
        assert!(malformed(&[0x20, 1, 0], V5), "CONNACK of 1 byte");
        assert!(malformed(&[0x42, 2, 0, 1], V4), "reserved flags");
        assert!(malformed(&[0xD0, 1, 0], V4), "PINGRESP with a body");
        assert!(malformed(&[0x40, 0xFF, 0xFF, 0xFF, 0xFF, 0x01], V4));
        assert!(
            malformed(&[0x40, 5, 0, 1, 0, 9, 0x26], V5),
            "properties too long"
        );
        assert!(
            malformed(&[0x40, 6, 0, 1, 0, 2, 0x7F, 0], V5),
            "unknown property"
        );
        assert_eq!(
            next_packet(&mut BytesMut::from(&[0x30, 0x80, 0x08][..]), V4, 1024),
            Err(DecodeError::TooLarge(1027))
        );
        assert_eq!(
            next_packet(&mut BytesMut::from(&[0x90, 3, 0, 1, 0][..]), V4, 1024),
            Ok(Some(Packet::Unexpected(9)))
        );
    }
}
