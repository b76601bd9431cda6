//! Why an MQTT connection of the harness failed, the error kinds the reports count, and the
//! names of MQTT's return and reason codes in them.

use super::codec::DecodeError;
use crate::config::MqttVersion;
use crate::net::DialError;

/// Why a connection failed or ended.
#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    /// The TCP connection or the TLS handshake failed.
    #[error(transparent)]
    Dial(#[from] DialError),
    /// Reading or writing failed.
    #[error("I/O error: {0}")]
    Io(std::io::Error),
    /// The server closed the stream.
    #[error("the server closed the stream")]
    Eof,
    /// The server's bytes are not a packet the client accepts.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The server sent a packet a device does not expect (its type).
    #[error("unexpected packet of type {0}")]
    Unexpected(u8),
    /// The server sent a packet the protocol does not allow at this point.
    #[error("protocol violation: {0}")]
    Protocol(&'static str),
    /// The server refused the connection (its CONNACK's return or reason code).
    #[error("connection refused: {}", code_name(*.0, *.1))]
    Refused(MqttVersion, u8),
    /// The MQTT 5 server disconnected the client (its reason code).
    #[error("disconnected: {}", code_name(MqttVersion::V5, *.0))]
    Disconnected(u8),
}

impl From<std::io::Error> for MqttError {
    fn from(error: std::io::Error) -> Self {
        if crate::net::wire::is_eof(&error) {
            MqttError::Eof
        } else {
            MqttError::Io(error)
        }
    }
}

impl MqttError {
    /// The error's kind as the run's error counts show it (`mqtt connack BadUserNamePassword`,
    /// `mqtt disconnect`, …).
    pub fn kind(&self) -> String {
        match self {
            MqttError::Dial(DialError::Connect(_)) => "mqtt connect".to_owned(),
            MqttError::Dial(DialError::Tls(_)) => "mqtt tls".to_owned(),
            MqttError::Io(_) => "mqtt io".to_owned(),
            MqttError::Eof => "mqtt disconnect".to_owned(),
            MqttError::Decode(DecodeError::Malformed(_)) => "mqtt malformed packet".to_owned(),
            MqttError::Decode(DecodeError::TooLarge(_)) => "mqtt packet too large".to_owned(),
            MqttError::Unexpected(kind) => format!("mqtt unexpected packet {kind}"),
            MqttError::Protocol(_) => "mqtt protocol".to_owned(),
            MqttError::Refused(version, code) => {
                format!("mqtt connack {}", code_name(*version, *code))
            }
            MqttError::Disconnected(reason) => {
                format!("mqtt disconnect {}", code_name(MqttVersion::V5, *reason))
            }
        }
    }
}

/// The error kind of an MQTT 5 PUBACK's failure reason.
pub fn puback_kind(reason: u8) -> String {
    format!("mqtt puback {}", code_name(MqttVersion::V5, reason))
}

/// Whether an MQTT 5 PUBACK's reason code says the message was taken.
pub fn puback_accepted(reason: u8) -> bool {
    // Success, and "no matching subscribers" (accepted, just nobody listens).
    reason == 0x00 || reason == 0x10
}

/// The name of a 3.1.1 CONNACK return code or an MQTT 5 reason code (hex if unknown).
pub fn code_name(version: MqttVersion, code: u8) -> String {
    let name = match (version, code) {
        (MqttVersion::V311, 1) => "UnacceptableProtocolVersion",
        (MqttVersion::V311, 2) => "IdentifierRejected",
        (MqttVersion::V311, 3) => "ServerUnavailable",
        (MqttVersion::V311, 4) => "BadUserNamePassword",
        (MqttVersion::V311, 5) => "NotAuthorized",
        (MqttVersion::V5, 0x00) => "Success",
        (MqttVersion::V5, 0x10) => "NoMatchingSubscribers",
        (MqttVersion::V5, 0x80) => "UnspecifiedError",
        (MqttVersion::V5, 0x81) => "MalformedPacket",
        (MqttVersion::V5, 0x82) => "ProtocolError",
        (MqttVersion::V5, 0x83) => "ImplementationSpecificError",
        (MqttVersion::V5, 0x84) => "UnsupportedProtocolVersion",
        (MqttVersion::V5, 0x85) => "ClientIdentifierNotValid",
        (MqttVersion::V5, 0x86) => "BadUserNamePassword",
        (MqttVersion::V5, 0x87) => "NotAuthorized",
        (MqttVersion::V5, 0x88) => "ServerUnavailable",
        (MqttVersion::V5, 0x89) => "ServerBusy",
        (MqttVersion::V5, 0x8A) => "Banned",
        (MqttVersion::V5, 0x8B) => "ServerShuttingDown",
        (MqttVersion::V5, 0x8D) => "KeepAliveTimeout",
        (MqttVersion::V5, 0x8E) => "SessionTakenOver",
        (MqttVersion::V5, 0x90) => "TopicNameInvalid",
        (MqttVersion::V5, 0x91) => "PacketIdentifierInUse",
        (MqttVersion::V5, 0x93) => "ReceiveMaximumExceeded",
        (MqttVersion::V5, 0x95) => "PacketTooLarge",
        (MqttVersion::V5, 0x96) => "MessageRateTooHigh",
        (MqttVersion::V5, 0x97) => "QuotaExceeded",
        (MqttVersion::V5, 0x99) => "PayloadFormatInvalid",
        (MqttVersion::V5, 0x9B) => "QoSNotSupported",
        (MqttVersion::V5, 0x9F) => "ConnectionRateExceeded",
        _ => return format!("0x{code:02X}"),
    };
    name.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_and_reasons_have_their_names_in_the_kind() {
        assert_eq!(
            MqttError::Refused(MqttVersion::V311, 4).kind(),
            "mqtt connack BadUserNamePassword"
        );
        assert_eq!(
            MqttError::Refused(MqttVersion::V5, 0x87).kind(),
            "mqtt connack NotAuthorized"
        );
        assert_eq!(
            MqttError::Refused(MqttVersion::V311, 9).kind(),
            "mqtt connack 0x09"
        );
        assert_eq!(
            MqttError::Disconnected(0x8B).kind(),
            "mqtt disconnect ServerShuttingDown"
        );
        assert_eq!(puback_kind(0x97), "mqtt puback QuotaExceeded");
        assert!(puback_accepted(0x10) && !puback_accepted(0x80));
    }
}
