//! Hono's identity templates (`auth-id-template`, `auto-provisioning-device-id-template`).
//!
//! Placeholders `{{subject-dn}}` (RFC 2253), `{{subject-cn}}`, `{{subject-ou}}` and
//! `{{subject-o}}` are replaced by the certificate subject's values (the first matching RDN).
//! At least one placeholder is required; an unknown placeholder or a missing attribute is an
//! error (hono-api.md §13).

use x509_parser::prelude::{FromDer, X509Certificate};

use crate::x509::name_rfc2253;

/// A template cannot be applied.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// The template has no placeholder.
    #[error("the template {0:?} contains no placeholder")]
    NoPlaceholder(String),
    /// An unknown or unterminated placeholder.
    #[error("unknown placeholder {0:?}")]
    UnknownPlaceholder(String),
    /// The subject lacks the attribute a placeholder names.
    #[error("the certificate subject has no {0}")]
    MissingAttribute(&'static str),
    /// The certificate cannot be parsed.
    #[error("malformed certificate: {0}")]
    Certificate(String),
}

/// Applies `template` to the subject of the DER certificate `cert`.
pub fn apply(template: &str, cert: &[u8]) -> Result<String, TemplateError> {
    let (_, cert) =
        X509Certificate::from_der(cert).map_err(|e| TemplateError::Certificate(e.to_string()))?;
    let subject = cert.subject();
    let first = |attr: Option<&x509_parser::x509::AttributeTypeAndValue<'_>>, name| {
        attr.and_then(|a| a.as_str().ok())
            .map(str::to_owned)
            .ok_or(TemplateError::MissingAttribute(name))
    };
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    let mut placeholders = 0;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| TemplateError::UnknownPlaceholder(rest[start..].to_owned()))?;
        let value = match &after[..end] {
            "subject-dn" => name_rfc2253(subject.as_raw())
                .map_err(|e| TemplateError::Certificate(e.to_string()))?,
            "subject-cn" => first(subject.iter_common_name().next(), "CN")?,
            "subject-ou" => first(subject.iter_organizational_unit().next(), "OU")?,
            "subject-o" => first(subject.iter_organization().next(), "O")?,
            other => return Err(TemplateError::UnknownPlaceholder(other.to_owned())),
        };
        out.push_str(&value);
        placeholders += 1;
        rest = &after[end + 2..];
    }
    if placeholders == 0 {
        return Err(TemplateError::NoPlaceholder(template.to_owned()));
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};

    fn cert() -> Result<Vec<u8>, rcgen::Error> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "ACME");
        dn.push(DnType::OrganizationalUnitName, "Sensors");
        dn.push(DnType::CommonName, "dev-1");
        params.distinguished_name = dn;
        Ok(params.self_signed(&KeyPair::generate()?)?.der().to_vec())
    }

    #[test]
    fn replaces_every_placeholder() -> Result<(), Box<dyn std::error::Error>> {
        let der = cert()?;
        assert_eq!(apply("{{subject-cn}}", &der)?, "dev-1");
        assert_eq!(
            apply("x-{{subject-o}}.{{subject-ou}}-{{subject-cn}}", &der)?,
            "x-ACME.Sensors-dev-1"
        );
        assert_eq!(apply("{{subject-dn}}", &der)?, "CN=dev-1,OU=Sensors,O=ACME");
        Ok(())
    }

    #[test]
    fn refuses_bad_templates() -> Result<(), Box<dyn std::error::Error>> {
        let der = cert()?;
        assert!(matches!(
            apply("fixed", &der),
            Err(TemplateError::NoPlaceholder(_))
        ));
        assert!(matches!(
            apply("{{subject-l}}", &der),
            Err(TemplateError::UnknownPlaceholder(_))
        ));
        assert!(matches!(
            apply("{{subject-cn", &der),
            Err(TemplateError::UnknownPlaceholder(_))
        ));
        Ok(())
    }
}
