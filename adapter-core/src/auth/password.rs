//! Hono's password hash formats (hono-api.md §8), checked in constant time.
//!
//! * `sha-256` (the default when `hash-function` is absent) and `sha-512`:
//!   `pwd-hash` = Base64(H(salt bytes ‖ UTF-8 password)), with an optional Base64 `salt`.
//! * `bcrypt`: the salt and cost are inside `pwd-hash`; Hono writes `$2a$`, and `$2b$`/`$2y$`
//!   (the same algorithm) are accepted too. Computing bcrypt is expensive, so this module only
//!   decides *what* to compute; [`super::Authenticator`] runs it on the blocking pool.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ferry_registry_client::Secret;
use sha2::{Digest, Sha256, Sha512};
use subtle::ConstantTimeEq;

/// How one stored secret is to be checked.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Scheme<'a> {
    /// SHA-256 or SHA-512 with an optional salt: cheap, checked inline.
    Sha(bool),
    /// A bcrypt hash of the given cost: run on the blocking pool.
    Bcrypt {
        /// The full `$2a$NN$...` hash.
        hash: &'a str,
        /// Its cost factor.
        cost: u32,
    },
    /// The secret cannot be checked; the reason is logged by the caller.
    Unusable(&'static str),
}

/// Decides how to check `secret`. `Sha(true)` means SHA-512.
pub(crate) fn scheme(secret: &Secret) -> Scheme<'_> {
    let Some(hash) = secret.pwd_hash.as_deref() else {
        return Scheme::Unusable("secret has no pwd-hash");
    };
    match secret.hash_function.as_deref().unwrap_or("sha-256") {
        "sha-256" => Scheme::Sha(false),
        "sha-512" => Scheme::Sha(true),
        "bcrypt" => bcrypt_cost(hash).map_or(
            Scheme::Unusable("bcrypt hash is not of the form $2a$NN$..."),
            |cost| Scheme::Bcrypt { hash, cost },
        ),
        _ => Scheme::Unusable("unsupported hash-function"),
    }
}

/// The cost of a `$2a$`/`$2b$`/`$2y$` hash, or `None` if it is not one.
fn bcrypt_cost(hash: &str) -> Option<u32> {
    let rest = ["$2a$", "$2b$", "$2y$"]
        .iter()
        .find_map(|prefix| hash.strip_prefix(prefix))?;
    let (cost, rest) = rest.split_once('$')?;
    if cost.len() != 2 || rest.len() != 53 {
        return None;
    }
    cost.parse().ok()
}

/// Checks a password against a SHA secret. Malformed Base64 never matches.
pub(crate) fn sha_matches(secret: &Secret, sha512: bool, password: &str) -> bool {
    let Some(expected) = secret
        .pwd_hash
        .as_deref()
        .and_then(|h| STANDARD.decode(h.trim()).ok())
    else {
        tracing::warn!("stored pwd-hash is not valid Base64");
        return false;
    };
    let salt = match secret.salt.as_deref().map(|s| STANDARD.decode(s.trim())) {
        None => Vec::new(),
        Some(Ok(salt)) => salt,
        Some(Err(_)) => {
            tracing::warn!("stored salt is not valid Base64");
            return false;
        }
    };
    if sha512 {
        let digest = Sha512::new()
            .chain_update(&salt)
            .chain_update(password)
            .finalize();
        digest.as_slice().ct_eq(&expected).into()
    } else {
        let digest = Sha256::new()
            .chain_update(&salt)
            .chain_update(password)
            .finalize();
        digest.as_slice().ct_eq(&expected).into()
    }
}

/// Key of the verification cache: a SHA-256 over the stored hash, salt and the offered password,
/// so the password itself is never kept and a changed credential cannot hit an old entry.
pub(crate) fn cache_key(secret: &Secret, password: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    for part in [
        secret.pwd_hash.as_deref().unwrap_or_default(),
        secret.salt.as_deref().unwrap_or_default(),
        password,
    ] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    h.finalize().into()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A `hashed-password` secret as Hono stores it, for tests.
    pub(crate) fn sha_secret(
        function: Option<&str>,
        salt: Option<&[u8]>,
        password: &str,
    ) -> Secret {
        let salt_bytes = salt.unwrap_or_default();
        let hash = match function {
            Some("sha-512") => STANDARD.encode(
                Sha512::new()
                    .chain_update(salt_bytes)
                    .chain_update(password)
                    .finalize(),
            ),
            _ => STANDARD.encode(
                Sha256::new()
                    .chain_update(salt_bytes)
                    .chain_update(password)
                    .finalize(),
            ),
        };
        Secret {
            pwd_hash: Some(hash),
            hash_function: function.map(str::to_owned),
            salt: salt.map(|s| STANDARD.encode(s)),
            enabled: true,
            ..Secret::default()
        }
    }

    #[test]
    fn sha_formats_with_and_without_salt() -> Result<(), Box<dyn std::error::Error>> {
        for function in [None, Some("sha-256"), Some("sha-512")] {
            for salt in [None, Some(&b"TheSalt"[..])] {
                let secret = sha_secret(function, salt, "password");
                let Scheme::Sha(sha512) = scheme(&secret) else {
                    return Err(format!("not a SHA scheme: {function:?}").into());
                };
                assert_eq!(sha512, function == Some("sha-512"));
                assert!(sha_matches(&secret, sha512, "password"));
                assert!(!sha_matches(&secret, sha512, "wrongpassword"));
            }
        }
        Ok(())
    }

    #[test]
    fn hono_sha512_vector_from_its_own_test() {
        // Hono's SpringBasedHonoPasswordEncoderTest: sha-512, salt "TheSalt", password "password".
        let secret = sha_secret(Some("sha-512"), Some(b"TheSalt"), "password");
        let unsalted = sha_secret(Some("sha-512"), None, "password");
        assert_ne!(secret.pwd_hash, unsalted.pwd_hash);
        assert!(sha_matches(&secret, true, "password"));
        assert!(!sha_matches(&unsalted, true, "wrongpassword"));
    }

    #[test]
    fn malformed_base64_never_matches() {
        let mut secret = sha_secret(None, None, "password");
        secret.salt = Some("!NOT_BASE64!".to_owned());
        assert!(!sha_matches(&secret, false, "password"));
        secret.salt = None;
        secret.pwd_hash = Some("!NOT_BASE64!".to_owned());
        assert!(!sha_matches(&secret, false, "password"));
    }

    #[test]
    fn recognises_bcrypt_hashes() {
        let hash = "$2a$12$rcrgLZrGHkEMAMfP5atLGe4HOvI0ZdclQdWDt/6DfUcgNEphwK27i";
        let secret = Secret {
            pwd_hash: Some(hash.to_owned()),
            hash_function: Some("bcrypt".to_owned()),
            enabled: true,
            ..Secret::default()
        };
        assert_eq!(scheme(&secret), Scheme::Bcrypt { hash, cost: 12 });
        for bad in [
            "$2x$12$abc",
            "$2a$1$",
            "plain",
            "$2a$xx$rcrgLZrGHkEMAMfP5atLGe4HOvI0ZdclQdWDt/6DfUcgNEphwK27i",
        ] {
            let secret = Secret {
                pwd_hash: Some(bad.to_owned()),
                hash_function: Some("bcrypt".to_owned()),
                enabled: true,
                ..Secret::default()
            };
            assert!(matches!(scheme(&secret), Scheme::Unusable(_)), "{bad}");
        }
        let md5 = Secret {
            pwd_hash: Some("x".to_owned()),
            hash_function: Some("md5".to_owned()),
            enabled: true,
            ..Secret::default()
        };
        assert!(matches!(scheme(&md5), Scheme::Unusable(_)));
    }

    #[test]
    fn cache_key_depends_on_hash_salt_and_password() {
        let a = sha_secret(None, Some(b"s"), "p");
        let mut b = a.clone();
        b.salt = Some(STANDARD.encode(b"t"));
        assert_ne!(cache_key(&a, "p"), cache_key(&b, "p"));
        assert_ne!(cache_key(&a, "p"), cache_key(&a, "q"));
        assert_eq!(cache_key(&a, "p"), cache_key(&a.clone(), "p"));
    }
}
