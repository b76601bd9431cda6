//! Identifiers, parsed once at the edge (Hono's registry id patterns).

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An identifier did not match its pattern.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} {value:?}: {rule}")]
pub struct InvalidId {
    kind: &'static str,
    value: String,
    rule: &'static str,
}

fn check(
    kind: &'static str,
    value: &str,
    allowed: fn(u8) -> bool,
    rule: &'static str,
) -> Result<(), InvalidId> {
    if value.is_empty() || value.len() > 256 || !value.bytes().all(allowed) {
        return Err(InvalidId {
            kind,
            value: value.chars().take(64).collect(),
            rule,
        });
    }
    Ok(())
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $allowed:expr, $rule:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Arc<str>);

        impl $name {
            /// Parses and validates an identifier.
            pub fn parse(value: &str) -> Result<Self, InvalidId> {
                check($kind, value, $allowed, $rule)?;
                Ok(Self(Arc::from(value)))
            }

            /// The identifier as a string.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&*self.0, f)
            }
        }

        impl std::str::FromStr for $name {
            type Err = InvalidId;
            fn from_str(s: &str) -> Result<Self, InvalidId> {
                Self::parse(s)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                Self::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

fn tenant_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')
}

fn device_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'=')
}

id_type!(
    /// A tenant identifier (`^[a-zA-Z0-9-_\.]+$`).
    TenantId,
    "tenant id",
    tenant_char,
    "only letters, digits, '-', '_' and '.' are allowed"
);

id_type!(
    /// A device identifier (`^[a-zA-Z0-9-_\.:=]+$`).
    DeviceId,
    "device id",
    device_char,
    "only letters, digits, '-', '_', '.', ':' and '=' are allowed"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_hono_patterns_and_rejects_others() {
        assert!(TenantId::parse("DEFAULT_TENANT.1-x").is_ok());
        assert!(TenantId::parse("a:b").is_err());
        assert!(TenantId::parse("").is_err());
        assert!(DeviceId::parse("urn:dev=4711").is_ok());
        assert!(DeviceId::parse("dev/1").is_err());
        assert!(DeviceId::parse("dev 1").is_err());
    }

    #[test]
    fn serde_validates() {
        let ok: Result<DeviceId, _> = serde_json::from_str("\"d-1\"");
        assert_eq!(ok.map(|d| d.to_string()).ok().as_deref(), Some("d-1"));
        let bad: Result<DeviceId, _> = serde_json::from_str("\"d/1\"");
        assert!(bad.is_err());
    }
}
