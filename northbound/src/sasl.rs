//! SASL for application connections: PLAIN against the configured users, ANONYMOUS when allowed.
//!
//! The connection's handshake ([`crate::handshake`]) offers [`Authenticator::mechanisms`] and
//! decides the outcome of the client's `sasl-init` with [`Authenticator::on_init`]; the check is
//! synchronous (a constant-time comparison with the configured passwords). One authenticator is
//! cloned per connection; it logs failures with the peer address and never logs passwords.

use std::net::SocketAddr;
use std::sync::Arc;

use fe2o3_amqp::types::primitives::{Array, Symbol};
use fe2o3_amqp::types::sasl::{SaslCode, SaslInit};

use crate::config::UserConfig;

const PLAIN: &str = "PLAIN";
const ANONYMOUS: &str = "ANONYMOUS";

/// Server side of the SASL exchange for one connection.
#[derive(Clone, Debug)]
pub(crate) struct Authenticator {
    users: Arc<[UserConfig]>,
    allow_anonymous: bool,
    peer: Option<SocketAddr>,
}

impl Authenticator {
    /// An authenticator for the configured users.
    pub(crate) fn new(users: &[UserConfig], allow_anonymous: bool) -> Self {
        Self {
            users: users.into(),
            allow_anonymous,
            peer: None,
        }
    }

    /// A copy that names `peer` in its log lines.
    pub(crate) fn for_peer(&self, peer: SocketAddr) -> Self {
        Self {
            peer: Some(peer),
            ..self.clone()
        }
    }

    fn check_plain(&self, response: &[u8]) -> Result<String, &'static str> {
        let mut parts = response.split(|b| *b == 0);
        let (Some(_authzid), Some(authcid), Some(password), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err("malformed PLAIN response");
        };
        let name = std::str::from_utf8(authcid).map_err(|_| "user name is not UTF-8")?;
        let mut found = false;
        for user in self.users.iter() {
            // Compare every configured user to keep the timing independent of the match.
            let ok = user.name.as_bytes() == authcid
                && constant_time_eq(user.password.as_bytes(), password);
            found |= ok;
        }
        if found {
            Ok(name.to_owned())
        } else {
            Err("unknown user or wrong password")
        }
    }

    /// The mechanisms offered: PLAIN when users are configured, ANONYMOUS when allowed.
    pub(crate) fn mechanisms(&self) -> Array<Symbol> {
        let mut mechanisms = Vec::new();
        if !self.users.is_empty() {
            mechanisms.push(Symbol::from(PLAIN));
        }
        if self.allow_anonymous {
            mechanisms.push(Symbol::from(ANONYMOUS));
        }
        Array::from(mechanisms)
    }

    /// The outcome of the client's `sasl-init`.
    pub(crate) fn on_init(&self, init: SaslInit) -> SaslCode {
        let peer = self.peer;
        match init.mechanism.as_str() {
            PLAIN if !self.users.is_empty() => {
                let response = init.initial_response.map(|r| r.into_vec());
                match self.check_plain(response.as_deref().unwrap_or_default()) {
                    Ok(user) => {
                        tracing::debug!(?peer, %user, "application authenticated (PLAIN)");
                        SaslCode::Ok
                    }
                    Err(reason) => {
                        tracing::warn!(?peer, reason, "application authentication failed");
                        SaslCode::Auth
                    }
                }
            }
            ANONYMOUS if self.allow_anonymous => {
                tracing::debug!(?peer, "application connected anonymously");
                SaslCode::Ok
            }
            other => {
                tracing::warn!(?peer, mechanism = other, "SASL mechanism not allowed");
                SaslCode::Auth
            }
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str, password: &str) -> UserConfig {
        UserConfig {
            name: name.into(),
            password: password.into(),
        }
    }

    #[test]
    fn plain_checks_user_and_password() {
        let auth = Authenticator::new(&[user("app", "secret"), user("b", "x")], false);
        assert_eq!(auth.check_plain(b"\0app\0secret"), Ok("app".to_owned()));
        assert_eq!(auth.check_plain(b"\0b\0x"), Ok("b".to_owned()));
        assert!(auth.check_plain(b"\0app\0secreT").is_err());
        assert!(auth.check_plain(b"\0app\0secret\0").is_err());
        assert!(auth.check_plain(b"app").is_err());
        assert!(auth.check_plain(b"\0nobody\0secret").is_err());
    }

    #[test]
    fn mechanisms_follow_config() {
        let auth = Authenticator::new(&[], true);
        assert_eq!(auth.mechanisms().0, vec![Symbol::from(ANONYMOUS)]);
        let auth = Authenticator::new(&[user("a", "b")], false);
        assert_eq!(auth.mechanisms().0, vec![Symbol::from(PLAIN)]);
    }
}
