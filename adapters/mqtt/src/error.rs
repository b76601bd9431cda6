//! The MQTT adapter's errors, and the exhaustive mappings to the wire.
//!
//! * [`Refusal`]: why a CONNECT was refused, and its CONNACK code for 3.1.1 and 5
//!   (hono-api.md §3 table). [`Refusal::from_auth`] and [`Refusal::from_tenant_check`] decide
//!   the cause from the pipeline's typed errors.
//! * [`PublishError`]: why an upload failed; its HTTP-like status goes into the error topic, and
//!   [`PublishError::is_terminal`] says whether the connection must close whatever `on-error`
//!   says.
//!
//! No match here has a catch-all arm, so a new error kind cannot be forgotten.

use std::net::SocketAddr;

use ferry_adapter_core::{AuthError, ErrorKind, ForwardError};

/// Why the adapter could not start.
#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    /// The configuration cannot work.
    #[error("invalid MQTT adapter configuration: {0}")]
    InvalidConfig(String),
    /// A port could not be bound.
    #[error("cannot bind the MQTT adapter to {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
}

impl From<ferry_adapter_core::accept::PortsError> for MqttError {
    fn from(e: ferry_adapter_core::accept::PortsError) -> Self {
        use ferry_adapter_core::accept::PortsError;
        match e {
            PortsError::Bind { addr, source } => Self::Bind { addr, source },
            PortsError::NoPort => Self::InvalidConfig(PortsError::NoPort.to_string()),
        }
    }
}

/// Why a CONNECT was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refusal {
    /// The adapter's connection limit is reached.
    #[error("adapter connection limit reached")]
    AdapterConnectionLimit,
    /// The tenant's connection limit is reached.
    #[error("tenant connection limit reached")]
    TenantConnectionLimit,
    /// Unknown, wrong or missing credentials (401/404).
    #[error("bad credentials: {0}")]
    BadCredentials(String),
    /// The registry could not be asked (503).
    #[error("registry unavailable: {0}")]
    RegistryUnavailable(String),
    /// Anything else: tenant or adapter disabled, tenant unknown (403 and others).
    #[error("not authorized: {0}")]
    NotAuthorized(String),
}

impl Refusal {
    /// The CONNACK return code of MQTT 3.1.1.
    pub(crate) fn v3_code(&self) -> u8 {
        match self {
            Refusal::AdapterConnectionLimit | Refusal::RegistryUnavailable(_) => 0x03,
            Refusal::BadCredentials(_) => 0x04,
            Refusal::TenantConnectionLimit | Refusal::NotAuthorized(_) => 0x05,
        }
    }

    /// The CONNACK reason code of MQTT 5.
    pub(crate) fn v5_code(&self) -> u8 {
        match self {
            Refusal::AdapterConnectionLimit => 0x9C,
            Refusal::TenantConnectionLimit => 0x97,
            Refusal::BadCredentials(_) => 0x86,
            Refusal::RegistryUnavailable(_) => 0x88,
            Refusal::NotAuthorized(_) => 0x87,
        }
    }

    /// The refusal for a failed authentication.
    pub(crate) fn from_auth(e: &AuthError) -> Self {
        match e.kind() {
            ErrorKind::Unauthorized | ErrorKind::NotFound => Refusal::BadCredentials(e.to_string()),
            ErrorKind::Unavailable => Refusal::RegistryUnavailable(e.to_string()),
            ErrorKind::TooManyRequests => Refusal::TenantConnectionLimit,
            ErrorKind::BadRequest | ErrorKind::Forbidden | ErrorKind::PayloadTooLarge => {
                Refusal::NotAuthorized(e.to_string())
            }
        }
    }

    /// The refusal for a failed connect-time tenant check (tenant enabled, adapter enabled).
    pub(crate) fn from_tenant_check(e: &ForwardError) -> Self {
        match e.kind() {
            ErrorKind::Unauthorized => Refusal::BadCredentials(e.to_string()),
            ErrorKind::Unavailable => Refusal::RegistryUnavailable(e.to_string()),
            ErrorKind::TooManyRequests => Refusal::TenantConnectionLimit,
            ErrorKind::BadRequest
            | ErrorKind::Forbidden
            | ErrorKind::NotFound
            | ErrorKind::PayloadTooLarge => Refusal::NotAuthorized(e.to_string()),
        }
    }
}

/// The HTTP-like status of a protocol-neutral error kind (used in the error topic).
pub(crate) fn status_for(kind: ErrorKind) -> u16 {
    match kind {
        ErrorKind::BadRequest => 400,
        ErrorKind::Unauthorized => 401,
        ErrorKind::Forbidden => 403,
        ErrorKind::NotFound => 404,
        ErrorKind::PayloadTooLarge => 413,
        ErrorKind::TooManyRequests => 429,
        ErrorKind::Unavailable => 503,
    }
}

/// Why one PUBLISH was not forwarded.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PublishError {
    /// The pipeline refused the upload.
    #[error(transparent)]
    Forward(#[from] ForwardError),
    /// The topic is none of the adapter's upload topics.
    #[error("unsupported topic: {0}")]
    BadTopic(String),
    /// The property bag cannot be read.
    #[error("malformed property bag: {0}")]
    BadPropertyBag(String),
    /// Events need QoS 1.
    #[error("events must be published with QoS 1")]
    EventNeedsQos1,
    /// QoS 2 is not supported.
    #[error("QoS 2 is not supported")]
    Qos2,
}

impl PublishError {
    /// The status published in the error topic.
    pub(crate) fn status(&self) -> u16 {
        match self {
            PublishError::Forward(e) => status_for(e.kind()),
            PublishError::BadTopic(_)
            | PublishError::BadPropertyBag(_)
            | PublishError::EventNeedsQos1
            | PublishError::Qos2 => 400,
        }
    }

    /// Terminal errors always close the connection (hono-api.md §3): the adapter, tenant,
    /// device or gateway is disabled or unknown.
    pub(crate) fn is_terminal(&self) -> bool {
        let PublishError::Forward(e) = self else {
            return false;
        };
        match e {
            ForwardError::TenantUnknown(_)
            | ForwardError::TenantDisabled(_)
            | ForwardError::AdapterDisabled { .. }
            | ForwardError::AuthenticationRequired(_)
            | ForwardError::DeviceUnknownOrDisabled(_)
            | ForwardError::GatewayNotAuthorised { .. } => true,
            ForwardError::PayloadTooLarge { .. }
            | ForwardError::EmptyBodyWithoutContentType
            | ForwardError::EmptyNotificationWithBody
            | ForwardError::OtherTenant { .. }
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

    /// The message told to the device in the error payload: no internals.
    pub(crate) fn client_message(&self) -> String {
        match self {
            PublishError::Forward(ForwardError::NoConsumer(_)) => {
                "no consumer is attached for the tenant".to_owned()
            }
            PublishError::Forward(e) if e.kind() == ErrorKind::Unavailable => {
                "temporarily unavailable, retry later".to_owned()
            }
            other => other.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use ferry_registry_client::TenantId;

    use super::*;

    #[test]
    fn connack_codes_follow_the_hono_table() -> Result<(), Box<dyn std::error::Error>> {
        let cases = [
            (Refusal::AdapterConnectionLimit, 0x03, 0x9C),
            (Refusal::TenantConnectionLimit, 0x05, 0x97),
            (Refusal::from_auth(&AuthError::WrongPassword), 0x04, 0x86),
            (
                Refusal::from_auth(&AuthError::UnknownCredentials),
                0x04,
                0x86,
            ),
            (
                Refusal::from_auth(&AuthError::RegistryUnavailable("x".into())),
                0x03,
                0x88,
            ),
            (
                Refusal::from_tenant_check(&ForwardError::TenantDisabled(TenantId::parse("t")?)),
                0x05,
                0x87,
            ),
            (
                Refusal::from_tenant_check(&ForwardError::AdapterDisabled {
                    adapter: "hono-mqtt".into(),
                    tenant: TenantId::parse("t")?,
                }),
                0x05,
                0x87,
            ),
        ];
        for (refusal, v3, v5) in cases {
            assert_eq!(refusal.v3_code(), v3, "{refusal:?}");
            assert_eq!(refusal.v5_code(), v5, "{refusal:?}");
        }
        Ok(())
    }

    #[test]
    fn terminal_errors_and_statuses() -> Result<(), Box<dyn std::error::Error>> {
        let disabled = PublishError::Forward(ForwardError::TenantDisabled(TenantId::parse("t")?));
        assert!(disabled.is_terminal());
        assert_eq!(disabled.status(), 403);
        let no_consumer = PublishError::Forward(ForwardError::NoConsumer("telemetry/t".into()));
        assert!(!no_consumer.is_terminal());
        assert_eq!(no_consumer.status(), 503);
        assert!(!no_consumer.client_message().contains("telemetry/t"));
        assert_eq!(PublishError::EventNeedsQos1.status(), 400);
        assert!(!PublishError::Qos2.is_terminal());
        Ok(())
    }
}
