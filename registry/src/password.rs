//! Password hashes in Hono's formats (hono-api.md §8).
//!
//! `pwd-plain` is hashed with bcrypt and written as `$2a$` (Hono only verifies `$2a$`). Given
//! hashes may be `bcrypt`, or `sha-256`/`sha-512` over salt bytes followed by the UTF-8 password,
//! Base64 encoded. [`verify`] checks a password against a stored secret, the way an adapter does.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest, Sha256, Sha512};

/// Hashing failed (bad cost, or a malformed stored hash).
#[derive(Debug, thiserror::Error)]
#[error("password hashing failed: {0}")]
pub struct HashError(String);

/// Hashes a plain password with bcrypt at `cost`, in `$2a$` form. Blocking: run off the runtime.
pub fn bcrypt_2a(password: &str, cost: u32) -> Result<String, HashError> {
    let parts = bcrypt::hash_with_result(password, cost).map_err(|e| HashError(e.to_string()))?;
    Ok(parts.format_for_version(bcrypt::Version::TwoA))
}

/// The hash functions Hono defines.
pub const HASH_FUNCTIONS: &[&str] = &["sha-256", "sha-512", "bcrypt"];

/// Checks `password` against a stored `pwd-hash` with its `hash-function` (default `sha-256`)
/// and Base64 `salt`. Blocking for bcrypt.
pub fn verify(
    password: &str,
    pwd_hash: &str,
    hash_function: Option<&str>,
    salt: Option<&str>,
) -> bool {
    let salt = match salt.map(|s| STANDARD.decode(s)) {
        Some(Ok(s)) => s,
        Some(Err(_)) => return false,
        None => Vec::new(),
    };
    let digest = |d: &[u8]| STANDARD.encode(d) == pwd_hash;
    match hash_function.unwrap_or("sha-256") {
        "bcrypt" => {
            pwd_hash.starts_with("$2a$") && bcrypt::verify(password, pwd_hash).unwrap_or(false)
        }
        "sha-256" => digest(
            &Sha256::new()
                .chain_update(&salt)
                .chain_update(password)
                .finalize(),
        ),
        "sha-512" => digest(
            &Sha512::new()
                .chain_update(&salt)
                .chain_update(password)
                .finalize(),
        ),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bcrypt_is_2a_and_verifies() -> Result<(), HashError> {
        let h = bcrypt_2a("secret", 4)?;
        assert!(h.starts_with("$2a$04$"), "{h}");
        assert!(verify("secret", &h, Some("bcrypt"), None));
        assert!(!verify("other", &h, Some("bcrypt"), None));
        Ok(())
    }

    #[test]
    fn known_2a_vector_verifies() {
        // The classic OpenBSD/John the Ripper `$2a$` test vector.
        let hash = "$2a$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW";
        assert!(verify("U*U", hash, Some("bcrypt"), None));
        assert!(!verify("U*V", hash, Some("bcrypt"), None));
    }

    #[test]
    fn sha_with_salt() {
        let salt = STANDARD.encode(b"salt");
        let h = STANDARD.encode(Sha512::digest(b"saltpwd"));
        assert!(verify("pwd", &h, Some("sha-512"), Some(&salt)));
        assert!(!verify("pwd", &h, Some("sha-256"), Some(&salt)));
        let h = STANDARD.encode(Sha256::digest(b"pwd"));
        assert!(verify("pwd", &h, None, None));
    }
}
