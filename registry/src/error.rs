//! Errors of the registry's entry points and of its management operations.

use crate::store::StoreError;

/// [`crate::Registry::open`] failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryOpenError {
    /// The configuration is invalid.
    #[error("invalid registry configuration: {0}")]
    Config(String),
    /// The database could not be created, opened or migrated.
    #[error("cannot open registry database: {0}")]
    Store(#[from] StoreError),
}

/// Why a management operation failed; mapped to HTTP in `management::error`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ManageError {
    /// 400: the request is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// 403: e.g. a registration limit of the tenant is reached.
    #[error("{0}")]
    Forbidden(String),
    /// 404: no such tenant, device or credentials.
    #[error("not found")]
    NotFound,
    /// 409: the id, alias, auth-id or CA subject DN is already used.
    #[error("{0}")]
    Conflict(String),
    /// 412: `If-Match` does not match the resource version.
    #[error("resource version does not match If-Match")]
    PreconditionFailed,
    /// 429: too many unsuccessful attempts (claims); retry after this many seconds.
    #[error("too many unsuccessful attempts; retry in {0} s")]
    TooManyAttempts(u64),
    /// 503: the operation needs configuration that is missing (e.g. the CA encryption key).
    #[error("{0}")]
    NotConfigured(String),
    /// 500: storage failure.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<StoreError> for ManageError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => ManageError::NotFound,
            StoreError::Conflict(what) => ManageError::Conflict(what),
            StoreError::PreconditionFailed => ManageError::PreconditionFailed,
            StoreError::LimitExceeded(what) => ManageError::Forbidden(what),
            StoreError::Backend(what) => ManageError::Internal(what),
        }
    }
}
