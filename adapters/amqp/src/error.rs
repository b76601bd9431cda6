//! The AMQP adapter's errors, and the one exhaustive mapping from refusals to AMQP outcomes.
//!
//! `refusal_for` turns the pipeline's protocol-neutral [`ErrorKind`] into what the device sees
//! (hono-api.md §5): a `rejected` outcome with Hono's error condition, a `released` outcome for
//! transient trouble (the device may resend as is), or a closed link for an oversized message.
//! `DeliveryError::kind` classifies the refusals only AMQP knows. Neither match has a
//! catch-all arm, so a new kind cannot be forgotten.

use std::net::SocketAddr;

use fe2o3_amqp::types::definitions::{
    AmqpError as Condition, Error as ErrorBody, ErrorCondition, LinkError,
};
use fe2o3_amqp::types::primitives::Symbol;
use fe2o3_amqp::types::sasl::SaslCode;
use ferry_adapter_core::{ErrorKind, ForwardError};

/// Hono's error condition for a malformed message (400).
pub const BAD_REQUEST: &str = "hono:bad-request";

/// Why the adapter could not start.
#[derive(Debug, thiserror::Error)]
pub enum AmqpError {
    /// The configuration cannot work.
    #[error("invalid AMQP adapter configuration: {0}")]
    InvalidConfig(String),
    /// A port could not be bound.
    #[error("cannot bind the AMQP adapter to {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
}

impl From<ferry_adapter_core::accept::PortsError> for AmqpError {
    fn from(e: ferry_adapter_core::accept::PortsError) -> Self {
        use ferry_adapter_core::accept::PortsError;
        match e {
            PortsError::Bind { addr, source } => Self::Bind { addr, source },
            PortsError::NoPort => Self::InvalidConfig(PortsError::NoPort.to_string()),
        }
    }
}

/// What the device is told about a delivery that was not forwarded.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Refusal {
    /// Settle with `rejected` carrying this condition.
    Rejected(ErrorCondition),
    /// Settle with `released`: a server-side, transient problem; the device may resend as is.
    Released,
    /// Drop the message and close the link with this condition.
    CloseLink(ErrorCondition),
}

/// The AMQP answer to a protocol-neutral error kind.
pub(crate) fn refusal_for(kind: ErrorKind) -> Refusal {
    match kind {
        ErrorKind::BadRequest => {
            Refusal::Rejected(ErrorCondition::Custom(Symbol::from(BAD_REQUEST)))
        }
        ErrorKind::Unauthorized | ErrorKind::Forbidden => {
            Refusal::Rejected(Condition::UnauthorizedAccess.into())
        }
        ErrorKind::NotFound => Refusal::Rejected(Condition::NotFound.into()),
        ErrorKind::TooManyRequests => Refusal::Rejected(Condition::ResourceLimitExceeded.into()),
        ErrorKind::PayloadTooLarge => Refusal::CloseLink(LinkError::MessageSizeExceeded.into()),
        ErrorKind::Unavailable => Refusal::Released,
    }
}

/// The condition a connection is closed with when the device may not connect for `kind`.
pub(crate) fn connection_condition(kind: ErrorKind) -> ErrorCondition {
    match refusal_for(kind) {
        Refusal::Rejected(condition) | Refusal::CloseLink(condition) => condition,
        Refusal::Released => Condition::InternalError.into(),
    }
}

/// The SASL outcome code for a failed authentication: `sys-temp` when the registry could not be
/// asked (the device may retry), `auth` otherwise.
pub(crate) fn sasl_code_for(kind: ErrorKind) -> SaslCode {
    match kind {
        ErrorKind::Unavailable => SaslCode::SysTemp,
        ErrorKind::BadRequest
        | ErrorKind::Unauthorized
        | ErrorKind::Forbidden
        | ErrorKind::NotFound
        | ErrorKind::PayloadTooLarge
        | ErrorKind::TooManyRequests => SaslCode::Auth,
    }
}

/// Why one delivery was not forwarded.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DeliveryError {
    /// The pipeline refused the upload.
    #[error(transparent)]
    Forward(#[from] ForwardError),
    /// The message's `to` is none of the adapter's addresses.
    #[error("bad address: {0}")]
    Address(String),
    /// The body is neither one Data section nor an AmqpValue holding a string or binary.
    #[error("unsupported body: {0}")]
    Body(&'static str),
    /// An event sent pre-settled: events are at least once (Hono ignores them).
    #[error("events must be sent unsettled")]
    PresettledEvent,
    /// The transfer is not an AMQP message (rejected with `amqp:decode-error`).
    #[error("the message cannot be decoded: {0}")]
    Decode(String),
}

impl DeliveryError {
    /// The protocol-neutral class of this failure.
    pub(crate) fn kind(&self) -> ErrorKind {
        match self {
            DeliveryError::Forward(e) => e.kind(),
            DeliveryError::Address(_)
            | DeliveryError::Body(_)
            | DeliveryError::PresettledEvent
            | DeliveryError::Decode(_) => ErrorKind::BadRequest,
        }
    }

    /// What the device is told: [`refusal_for`] the kind, except that an undecodable message
    /// is rejected with `amqp:decode-error`.
    pub(crate) fn refusal(&self) -> Refusal {
        match self {
            DeliveryError::Decode(_) => Refusal::Rejected(Condition::DecodeError.into()),
            other => refusal_for(other.kind()),
        }
    }

    /// The error sent to the device: internal details (storage, registry) stay in the log.
    pub(crate) fn to_amqp(&self, condition: ErrorCondition) -> ErrorBody {
        let description = match self {
            DeliveryError::Forward(ForwardError::NoConsumer(_)) => {
                "no consumer is attached for the tenant".to_owned()
            }
            e if e.kind() == ErrorKind::Unavailable => {
                "temporarily unavailable, retry later".to_owned()
            }
            other => other.to_string(),
        };
        ErrorBody::new(condition, description, None)
    }
}

/// Whether `error` ends the connection (Hono's terminal errors): the tenant is unknown or
/// disabled, the adapter is disabled for it, or the sending device itself is unknown or disabled.
/// A gateway sending for a disabled device only gets the delivery rejected.
pub(crate) fn is_terminal(error: &ForwardError, sent_for_itself: bool) -> bool {
    match error {
        ForwardError::TenantUnknown(_)
        | ForwardError::TenantDisabled(_)
        | ForwardError::AdapterDisabled { .. } => true,
        ForwardError::DeviceUnknownOrDisabled(_) => sent_for_itself,
        ForwardError::PayloadTooLarge { .. }
        | ForwardError::EmptyBodyWithoutContentType
        | ForwardError::EmptyNotificationWithBody
        | ForwardError::OtherTenant { .. }
        | ForwardError::AuthenticationRequired(_)
        | ForwardError::GatewayNotAuthorised { .. }
        | ForwardError::RegistrationForbidden(_)
        // Not terminal: the device stays connected and is heard once its owner claims it.
        | ForwardError::DeviceNotClaimed(_)
        | ForwardError::RegistryBadRequest(_)
        | ForwardError::RegistryUnavailable(_)
        | ForwardError::NoConsumer(_)
        | ForwardError::NorthboundRejected(_)
        | ForwardError::NorthboundUnavailable(_)
        | ForwardError::NorthboundStorage(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use ferry_registry_client::{DeviceId, TenantId};

    use super::*;

    #[test]
    fn kinds_map_to_hono_outcomes() {
        let custom = |s: &str| ErrorCondition::Custom(Symbol::from(s));
        let cases = [
            (
                ErrorKind::BadRequest,
                Refusal::Rejected(custom(BAD_REQUEST)),
            ),
            (
                ErrorKind::Unauthorized,
                Refusal::Rejected(Condition::UnauthorizedAccess.into()),
            ),
            (
                ErrorKind::Forbidden,
                Refusal::Rejected(Condition::UnauthorizedAccess.into()),
            ),
            (
                ErrorKind::NotFound,
                Refusal::Rejected(Condition::NotFound.into()),
            ),
            (
                ErrorKind::TooManyRequests,
                Refusal::Rejected(Condition::ResourceLimitExceeded.into()),
            ),
            (
                ErrorKind::PayloadTooLarge,
                Refusal::CloseLink(LinkError::MessageSizeExceeded.into()),
            ),
            (ErrorKind::Unavailable, Refusal::Released),
        ];
        for (kind, refusal) in cases {
            assert_eq!(refusal_for(kind), refusal, "{kind:?}");
        }
        assert_eq!(DeliveryError::PresettledEvent.kind(), ErrorKind::BadRequest);
    }

    #[test]
    fn terminal_errors_follow_hono() -> Result<(), Box<dyn std::error::Error>> {
        let tenant = TenantId::parse("t")?;
        let device = DeviceId::parse("d")?;
        assert!(is_terminal(
            &ForwardError::TenantDisabled(tenant.clone()),
            false
        ));
        let adapter = ForwardError::AdapterDisabled {
            adapter: "hono-amqp".into(),
            tenant,
        };
        assert!(is_terminal(&adapter, false));
        let gone = ForwardError::DeviceUnknownOrDisabled(device);
        assert!(is_terminal(&gone, true));
        assert!(!is_terminal(&gone, false));
        assert!(!is_terminal(&ForwardError::NoConsumer("x".into()), true));
        Ok(())
    }

    #[test]
    fn devices_learn_no_internals() {
        let storage = DeliveryError::Forward(ForwardError::NorthboundStorage("disk /var/x".into()));
        let body = storage.to_amqp(Condition::InternalError.into());
        assert!(!body.description.unwrap_or_default().contains("/var/x"));
    }
}
