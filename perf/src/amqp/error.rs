//! Why an AMQP connection of the harness failed, and the error kinds the reports count.

use fe2o3_amqp::types::definitions::Error as ErrorBody;
use fe2o3_amqp::types::sasl::SaslCode;
use ferry_amqp_wire::FramingError;

use crate::net::DialError;

/// Why a connection, its session or its link failed.
#[derive(Debug, thiserror::Error)]
pub enum AmqpError {
    /// The TCP connection or the TLS handshake failed.
    #[error(transparent)]
    Dial(#[from] DialError),
    /// Reading or writing failed.
    #[error("I/O error: {0}")]
    Io(std::io::Error),
    /// The peer closed the stream.
    #[error("the peer closed the stream")]
    Eof,
    /// The peer broke the framing.
    #[error(transparent)]
    Framing(#[from] FramingError),
    /// The peer's SASL outcome was not `ok`.
    #[error("SASL outcome {0:?}")]
    Sasl(SaslCode),
    /// The peer does not offer the mechanism the client is configured for.
    #[error("SASL mechanism {0} is not offered")]
    Mechanism(&'static str),
    /// The peer sent something the protocol does not allow here.
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// The peer closed the connection.
    #[error("the peer closed the connection ({})", describe(.0))]
    Closed(Option<ErrorBody>),
    /// The peer ended the session.
    #[error("the peer ended the session ({})", describe(.0))]
    Ended(Option<ErrorBody>),
    /// The peer detached (or refused) the link.
    #[error("the peer detached the link ({})", describe(.0))]
    Detached(Option<ErrorBody>),
}

impl From<std::io::Error> for AmqpError {
    fn from(error: std::io::Error) -> Self {
        if crate::net::wire::is_eof(&error) {
            AmqpError::Eof
        } else {
            AmqpError::Io(error)
        }
    }
}

fn describe(error: &Option<ErrorBody>) -> String {
    match error {
        None => "no error".to_owned(),
        Some(e) => format!(
            "{:?}: {}",
            e.condition,
            e.description.as_deref().unwrap_or("-")
        ),
    }
}

impl AmqpError {
    /// The error's kind as the run's error counts show it (`amqp sasl Auth`, `amqp closed`, …).
    pub fn kind(&self) -> String {
        let condition = |e: &Option<ErrorBody>| {
            e.as_ref()
                .map_or_else(String::new, |e| format!(" {:?}", e.condition))
        };
        match self {
            AmqpError::Dial(DialError::Connect(_)) => "amqp connect".to_owned(),
            AmqpError::Dial(DialError::Tls(_)) => "amqp tls".to_owned(),
            AmqpError::Io(_) | AmqpError::Eof => "amqp connection lost".to_owned(),
            AmqpError::Framing(_) | AmqpError::Protocol(_) => "amqp protocol".to_owned(),
            AmqpError::Sasl(code) => format!("amqp sasl {code:?}"),
            AmqpError::Mechanism(_) => "amqp sasl mechanism".to_owned(),
            AmqpError::Closed(e) => format!("amqp closed{}", condition(e)),
            AmqpError::Ended(e) => format!("amqp ended{}", condition(e)),
            AmqpError::Detached(e) => format!("amqp detached{}", condition(e)),
        }
    }

    /// Whether connecting again cannot help (refused credentials).
    pub fn is_refusal(&self) -> bool {
        matches!(self, AmqpError::Sasl(_) | AmqpError::Mechanism(_))
    }
}
