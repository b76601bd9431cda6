//! The failures of the device pipeline, and the one place they become protocol-neutral kinds.
//!
//! Every cause a device can be refused for is its own variant with a message that says why (the
//! adapters log it and send it back where the protocol has room). [`AuthError::kind`] and
//! [`ForwardError::kind`] are exhaustive matches without a catch-all arm, so a new cause cannot be
//! added without deciding its [`ErrorKind`]; each adapter then maps [`ErrorKind`] to its wire codes
//! in one exhaustive function of its own.

use ferry_registry_client::{DeviceId, TenantId};

/// Protocol-neutral classes of refusal (HTTP status, MQTT reason code, CoAP code, AMQP condition).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The request itself is malformed (HTTP 400).
    BadRequest,
    /// The device could not be authenticated (HTTP 401).
    Unauthorized,
    /// The device is known but not allowed to do this (HTTP 403).
    Forbidden,
    /// The device or tenant does not exist or is disabled (HTTP 404).
    NotFound,
    /// The payload is larger than the adapter accepts (HTTP 413).
    PayloadTooLarge,
    /// A resource limit of the tenant was reached (HTTP 429).
    TooManyRequests,
    /// A service Ferry depends on cannot take the message now; the device may retry (HTTP 503).
    Unavailable,
}

/// Why a device could not be authenticated.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The username is not of the form `auth-id@tenant`, or the tenant id is invalid.
    #[error("malformed username: expected auth-id@tenant")]
    MalformedUsername,
    /// The registry has no credentials of this type for the auth-id in the tenant.
    #[error("unknown credentials")]
    UnknownCredentials,
    /// The credentials exist but are disabled.
    #[error("credentials are disabled")]
    CredentialsDisabled,
    /// No secret of the credentials is enabled and within its validity window.
    #[error("no valid secret")]
    NoValidSecret,
    /// The password matches none of the valid secrets.
    #[error("wrong password")]
    WrongPassword,
    /// The registry could not be asked.
    #[error("registry unavailable: {0}")]
    RegistryUnavailable(String),
    /// X.509 was asked for, but the client sent no certificate.
    #[error("no client certificate")]
    NoClientCertificate,
    /// A certificate of the client's chain cannot be parsed.
    #[error("malformed client certificate: {0}")]
    MalformedCertificate(String),
    /// No single tenant trusts the issuer of the chain (it is unknown, or shared by the tenants
    /// of a trust anchor group), and the SNI names no tenant that does.
    #[error(
        "unknown issuer (no single tenant trusts it; with a CA shared by a trust anchor group the \
         device must send its tenant as the first label of the SNI host name): {0}"
    )]
    UnknownIssuer(String),
    /// The chain does not lead to the tenant's trusted CA: bad signature, missing intermediate,
    /// or no client-auth usage.
    #[error("untrusted certificate chain: {0}")]
    UntrustedChain(String),
    /// A certificate of the chain has expired.
    #[error("client certificate expired")]
    CertificateExpired,
    /// A certificate of the chain is not valid yet.
    #[error("client certificate not yet valid")]
    CertificateNotYetValid,
    /// The tenant's CA that issued the chain is outside its configured validity window.
    #[error("trusted CA {0} is outside its validity period")]
    CaOutsideValidity(String),
    /// The CA's `auth-id-template` cannot be applied to the certificate.
    #[error("auth-id template: {0}")]
    AuthIdTemplate(String),
    /// The certificate is trusted, but no device is registered for it and its CA does not
    /// auto-provision.
    #[error("no device is registered for the certificate and its CA does not auto-provision")]
    UnregisteredCertificate,
}

impl AuthError {
    /// The protocol-neutral class of this failure.
    pub fn kind(&self) -> ErrorKind {
        match self {
            AuthError::MalformedUsername
            | AuthError::UnknownCredentials
            | AuthError::CredentialsDisabled
            | AuthError::NoValidSecret
            | AuthError::WrongPassword
            | AuthError::NoClientCertificate
            | AuthError::MalformedCertificate(_)
            | AuthError::UnknownIssuer(_)
            | AuthError::UntrustedChain(_)
            | AuthError::CertificateExpired
            | AuthError::CertificateNotYetValid
            | AuthError::CaOutsideValidity(_)
            | AuthError::AuthIdTemplate(_)
            | AuthError::UnregisteredCertificate => ErrorKind::Unauthorized,
            AuthError::RegistryUnavailable(_) => ErrorKind::Unavailable,
        }
    }
}

/// Why an upload was not forwarded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ForwardError {
    /// The payload is larger than the adapter accepts.
    #[error("payload of {size} bytes exceeds the maximum of {max} bytes")]
    PayloadTooLarge {
        /// Size of the payload in bytes (at least this many when the adapter stopped reading).
        size: usize,
        /// The limit.
        max: usize,
    },
    /// An empty body needs a content type (e.g. the empty notification).
    #[error("an empty payload requires a content type")]
    EmptyBodyWithoutContentType,
    /// The empty notification content type was sent with a payload.
    #[error("the empty notification content type requires an empty payload")]
    EmptyNotificationWithBody,
    /// An authenticated device sent for a device of another tenant.
    #[error("device of tenant {sender} cannot send for tenant {tenant}")]
    OtherTenant {
        /// The sender's tenant.
        sender: TenantId,
        /// The tenant the message was addressed to.
        tenant: TenantId,
    },
    /// The tenant does not exist.
    #[error("tenant {0} is unknown")]
    TenantUnknown(TenantId),
    /// The tenant is disabled.
    #[error("tenant {0} is disabled")]
    TenantDisabled(TenantId),
    /// The tenant does not allow this adapter type.
    #[error("adapter {adapter} is disabled for tenant {tenant}")]
    AdapterDisabled {
        /// The adapter type name.
        adapter: String,
        /// The tenant.
        tenant: TenantId,
    },
    /// An unauthenticated upload for a tenant that requires devices of this adapter to authenticate.
    #[error("tenant {0} requires devices to authenticate")]
    AuthenticationRequired(TenantId),
    /// The device does not exist or is disabled.
    #[error("device {0} is unknown or disabled")]
    DeviceUnknownOrDisabled(DeviceId),
    /// The device was provisioned by a CA with `claim-required` and waits for its owner's claim.
    #[error("device {0} is not claimed: its owner must claim it with its ownership code first")]
    DeviceNotClaimed(DeviceId),
    /// The gateway may not act for the device (not in `via`, unknown or disabled).
    #[error("gateway {gateway} is not authorised to act for device {device}")]
    GatewayNotAuthorised {
        /// The sending gateway.
        gateway: DeviceId,
        /// The device it sent for.
        device: DeviceId,
    },
    /// The registry refused to assert the registration for another reason.
    #[error("registration refused: {0}")]
    RegistrationForbidden(String),
    /// The registry answered that the request was malformed.
    #[error("registry refused the request as malformed: {0}")]
    RegistryBadRequest(String),
    /// The registry could not be asked.
    #[error("registry unavailable: {0}")]
    RegistryUnavailable(String),
    /// Nobody consumes the tenant's messages.
    #[error("no consumer: {0}")]
    NoConsumer(String),
    /// A consumer or broker refused the message.
    #[error("northbound rejected the message: {0}")]
    NorthboundRejected(String),
    /// The northbound could not take the message in time.
    #[error("northbound unavailable: {0}")]
    NorthboundUnavailable(String),
    /// The event could not be stored durably.
    #[error("event storage failed: {0}")]
    NorthboundStorage(String),
}

impl ForwardError {
    /// The protocol-neutral class of this failure.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ForwardError::PayloadTooLarge { .. } => ErrorKind::PayloadTooLarge,
            ForwardError::EmptyBodyWithoutContentType
            | ForwardError::EmptyNotificationWithBody
            | ForwardError::RegistryBadRequest(_) => ErrorKind::BadRequest,
            ForwardError::AuthenticationRequired(_) => ErrorKind::Unauthorized,
            ForwardError::OtherTenant { .. }
            | ForwardError::TenantDisabled(_)
            | ForwardError::AdapterDisabled { .. }
            | ForwardError::GatewayNotAuthorised { .. }
            | ForwardError::DeviceNotClaimed(_)
            | ForwardError::RegistrationForbidden(_) => ErrorKind::Forbidden,
            ForwardError::TenantUnknown(_) | ForwardError::DeviceUnknownOrDisabled(_) => {
                ErrorKind::NotFound
            }
            ForwardError::RegistryUnavailable(_)
            | ForwardError::NoConsumer(_)
            | ForwardError::NorthboundRejected(_)
            | ForwardError::NorthboundUnavailable(_)
            | ForwardError::NorthboundStorage(_) => ErrorKind::Unavailable,
        }
    }
}

impl From<crate::NorthboundError> for ForwardError {
    fn from(e: crate::NorthboundError) -> Self {
        use crate::NorthboundError as N;
        match e {
            N::NoConsumer(m) => ForwardError::NoConsumer(m),
            N::Rejected(m) => ForwardError::NorthboundRejected(m),
            N::Unavailable(m) => ForwardError::NorthboundUnavailable(m),
            N::Storage(m) => ForwardError::NorthboundStorage(m),
        }
    }
}
