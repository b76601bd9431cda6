//! What a keep-alive connection remembers between its requests.
//!
//! A device on a keep-alive connection sends the same `authorization` header with every request,
//! for the same tenant and device. Checking it again means decoding Base64, two cache lookups and
//! hashing the password for the verified-password cache (a client certificate: parsing and
//! verifying the chain, a credentials lookup); forwarding needs the tenant and the registration
//! assertion, two more cache lookups. Together that is a good share of a small request. The
//! connection therefore remembers its last successful password authentication (keyed by the exact
//! header bytes), its client certificate's authentication (the chain is the connection's own)
//! and the registry answers of its last upload ([`ForwardMemo`]), in `ferry_adapter_core::memo`'s [`Memo`]s: they are forgotten on the next
//! committed registry change and after [`ferry_adapter_core::memo::MEMO_LIFETIME`], so a changed
//! password, disabled credentials, a disabled tenant or a deleted device are seen by the very
//! next request, as without the memos (an expiring certificate or secret at most a second late). Only successes are remembered; a refused header is
//! checked anew every time.

use std::sync::Arc;

use ferry_adapter_core::memo::{Memo, RegistryGeneration};
use ferry_adapter_core::{AuthenticatedDevice, ForwardMemo};

/// One connection's memos (requests on one connection are handled one after the other).
#[derive(Debug)]
pub(crate) struct ConnectionMemo {
    /// The device the last successful `authorization` header (its bytes) authenticated.
    pub(crate) auth: Memo<Box<[u8]>, AuthenticatedDevice>,
    /// The device the connection's client certificate (fixed for the connection) authenticated.
    pub(crate) certificate: Memo<(), AuthenticatedDevice>,
    /// The tenant and registration answers of the last upload.
    pub(crate) forward: ForwardMemo,
}

impl ConnectionMemo {
    /// Empty memos following `generation`.
    pub(crate) fn new(generation: &Arc<RegistryGeneration>) -> Self {
        Self {
            auth: Memo::new(Arc::clone(generation)),
            certificate: Memo::new(Arc::clone(generation)),
            forward: ForwardMemo::new(Arc::clone(generation)),
        }
    }
}
