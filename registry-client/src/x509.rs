//! X.509 helpers: Hono's RFC 2253 subject/issuer DN strings and the facts the registry derives
//! from a certificate.
//!
//! Hono uses Java's `X500Principal.getName(RFC2253)` as auth-id and as trusted-CA key. No Rust
//! crate prints exactly that, so the formatter walks the DER `Name` itself:
//! RDNs in reverse order joined by `,`, multi-valued RDNs joined by `+` (in encoded order),
//! keywords only for `CN L ST O OU C STREET DC UID`, every other attribute as
//! `dotted.oid=#hex-of-DER`, special characters `, = + < > # ; " \` and leading/trailing spaces
//! escaped with `\`, everything else (UTF-8) kept as is.

use chrono::{DateTime, Utc};
use x509_parser::prelude::{FromDer, X509Certificate};

/// A certificate or name could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum X509Error {
    /// The bytes are not a DER X.509 certificate.
    #[error("not a DER X.509 certificate: {0}")]
    Certificate(String),
    /// The distinguished name is not valid DER.
    #[error("malformed distinguished name")]
    Name,
    /// A validity time is outside what can be represented.
    #[error("certificate validity out of range")]
    Validity,
    /// A DN string could not be parsed.
    #[error("malformed distinguished name string: {0}")]
    DnString(&'static str),
}

/// The algorithm of a certificate's public key, as Hono names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyAlgorithm {
    /// `RSA`.
    Rsa,
    /// `EC`.
    Ec,
    /// Anything else (Ed25519, DSA, ...), named by the dotted OID.
    Other,
}

impl KeyAlgorithm {
    /// Hono's name (`RSA`, `EC`), or `None` for other algorithms.
    pub fn hono_name(self) -> Option<&'static str> {
        match self {
            KeyAlgorithm::Rsa => Some("RSA"),
            KeyAlgorithm::Ec => Some("EC"),
            KeyAlgorithm::Other => None,
        }
    }
}

/// What the registry needs from a certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateInfo {
    /// Subject DN, RFC 2253.
    pub subject_dn: String,
    /// Issuer DN, RFC 2253.
    pub issuer_dn: String,
    /// DER SubjectPublicKeyInfo.
    pub spki_der: Vec<u8>,
    /// Key algorithm.
    pub algorithm: KeyAlgorithm,
    /// Start of validity.
    pub not_before: DateTime<Utc>,
    /// End of validity.
    pub not_after: DateTime<Utc>,
}

fn parse(der: &[u8]) -> Result<X509Certificate<'_>, X509Error> {
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|e| X509Error::Certificate(e.to_string()))?;
    Ok(cert)
}

/// The subject DN of a DER certificate in Java's RFC 2253 form.
pub fn subject_dn_rfc2253(der: &[u8]) -> Result<String, X509Error> {
    name_rfc2253(parse(der)?.subject().as_raw())
}

/// The issuer DN of a DER certificate in Java's RFC 2253 form.
pub fn issuer_dn_rfc2253(der: &[u8]) -> Result<String, X509Error> {
    name_rfc2253(parse(der)?.issuer().as_raw())
}

/// Subject and issuer DN, SPKI, key algorithm and validity of a DER certificate.
pub fn certificate_info(der: &[u8]) -> Result<CertificateInfo, X509Error> {
    let cert = parse(der)?;
    let spki = cert.public_key();
    let oid = spki.algorithm.algorithm.to_id_string();
    let algorithm = match oid.as_str() {
        "1.2.840.113549.1.1.1" => KeyAlgorithm::Rsa,
        "1.2.840.10045.2.1" => KeyAlgorithm::Ec,
        _ => KeyAlgorithm::Other,
    };
    let time = |t: i64| DateTime::<Utc>::from_timestamp(t, 0).ok_or(X509Error::Validity);
    Ok(CertificateInfo {
        subject_dn: name_rfc2253(cert.subject().as_raw())?,
        issuer_dn: name_rfc2253(cert.issuer().as_raw())?,
        spki_der: spki.raw.to_vec(),
        algorithm,
        not_before: time(cert.validity().not_before.timestamp())?,
        not_after: time(cert.validity().not_after.timestamp())?,
    })
}

/// One DER element: tag byte, content, and the whole encoding.
struct Tlv<'a> {
    tag: u8,
    content: &'a [u8],
    whole: &'a [u8],
}

/// Reads one DER element (single-byte tags only, as in names) and returns it with the rest.
fn read_tlv(input: &[u8]) -> Result<(Tlv<'_>, &[u8]), X509Error> {
    let (&tag, rest) = input.split_first().ok_or(X509Error::Name)?;
    if tag & 0x1f == 0x1f {
        return Err(X509Error::Name);
    }
    let (&first, mut rest) = rest.split_first().ok_or(X509Error::Name)?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return Err(X509Error::Name);
        }
        let (bytes, after) = rest.split_at(n);
        rest = after;
        bytes
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b))
    };
    if rest.len() < len {
        return Err(X509Error::Name);
    }
    let (content, rest) = rest.split_at(len);
    let whole = &input[..input.len() - rest.len()];
    Ok((
        Tlv {
            tag,
            content,
            whole,
        },
        rest,
    ))
}

fn read_all(mut input: &[u8], expected_tag: u8) -> Result<Vec<&[u8]>, X509Error> {
    let mut items = Vec::new();
    while !input.is_empty() {
        let (tlv, rest) = read_tlv(input)?;
        if tlv.tag != expected_tag {
            return Err(X509Error::Name);
        }
        items.push(tlv.content);
        input = rest;
    }
    Ok(items)
}

fn oid_string(content: &[u8]) -> Result<String, X509Error> {
    let (&first, rest) = content.split_first().ok_or(X509Error::Name)?;
    let mut arcs: Vec<u64> = Vec::new();
    let mut value: u64 = 0;
    let mut pending = false;
    for (i, b) in std::iter::once(first)
        .chain(rest.iter().copied())
        .enumerate()
    {
        value = value.checked_mul(128).ok_or(X509Error::Name)? | u64::from(b & 0x7f);
        pending = true;
        if b & 0x80 == 0 {
            if i == 0 || arcs.is_empty() {
                let (a, b) = match value {
                    0..40 => (0, value),
                    40..80 => (1, value - 40),
                    _ => (2, value - 80),
                };
                arcs.extend([a, b]);
            } else {
                arcs.push(value);
            }
            value = 0;
            pending = false;
        }
    }
    if pending {
        return Err(X509Error::Name);
    }
    Ok(arcs
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join("."))
}

fn keyword(oid: &str) -> Option<&'static str> {
    Some(match oid {
        "2.5.4.3" => "CN",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "2.5.4.6" => "C",
        "2.5.4.9" => "STREET",
        "0.9.2342.19200300.100.1.25" => "DC",
        "0.9.2342.19200300.100.1.1" => "UID",
        _ => return None,
    })
}

/// Decodes the string types Java prints as text (non-canonical RFC 2253).
fn decode_string(tag: u8, content: &[u8]) -> Option<String> {
    match tag {
        // UTF8String, PrintableString, IA5String, GeneralString
        0x0c | 0x13 | 0x16 | 0x1b => String::from_utf8(content.to_vec()).ok(),
        // TeletexString: Java reads it as ISO-8859-1.
        0x14 => Some(content.iter().map(|&b| char::from(b)).collect()),
        // BMPString: UTF-16BE.
        0x1e => {
            if !content.len().is_multiple_of(2) {
                return None;
            }
            let units: Vec<u16> = content
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect();
            String::from_utf16(&units).ok()
        }
        _ => None,
    }
}

fn escape(value: &str, out: &mut String) {
    let chars: Vec<char> = value.chars().collect();
    let blank = |c: &char| matches!(c, ' ' | '\r');
    let last_non_space = chars.iter().rposition(|c| !blank(c));
    let first_non_space = chars.iter().position(|c| !blank(c));
    for (i, c) in chars.iter().enumerate() {
        let edge_space = blank(c)
            && (first_non_space.is_none_or(|f| i < f) || last_non_space.is_none_or(|l| i > l));
        if edge_space || ",=+<>#;\"\\".contains(*c) {
            out.push('\\');
        }
        out.push(*c);
    }
}

fn hex(bytes: &[u8], out: &mut String) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
}

/// Formats a DER-encoded `Name` (the whole SEQUENCE) in Java's RFC 2253 form.
pub fn name_rfc2253(name_der: &[u8]) -> Result<String, X509Error> {
    let (name, rest) = read_tlv(name_der)?;
    if name.tag != 0x30 || !rest.is_empty() {
        return Err(X509Error::Name);
    }
    let mut rdns = Vec::new();
    for set in read_all(name.content, 0x31)? {
        let mut avas = Vec::new();
        for ava in read_all(set, 0x30)? {
            let (oid, rest) = read_tlv(ava)?;
            let (value, rest) = read_tlv(rest)?;
            if oid.tag != 0x06 || !rest.is_empty() {
                return Err(X509Error::Name);
            }
            let oid = oid_string(oid.content)?;
            let mut text = String::new();
            match (keyword(&oid), decode_string(value.tag, value.content)) {
                (Some(kw), Some(s)) => {
                    text.push_str(kw);
                    text.push('=');
                    escape(&s, &mut text);
                }
                (kw, _) => {
                    text.push_str(kw.unwrap_or(&oid));
                    text.push_str("=#");
                    hex(value.whole, &mut text);
                }
            }
            avas.push(text);
        }
        if avas.is_empty() {
            return Err(X509Error::Name);
        }
        rdns.push(avas.join("+"));
    }
    rdns.reverse();
    Ok(rdns.join(","))
}

/// Normalizes a DN string (RFC 2253/4514, as a user may type it) to the form
/// [`name_rfc2253`] produces for the same name: no spaces around separators, keywords in upper
/// case (`S` becomes `ST`, `OID.2.5.4.3` and `2.5.4.3` become `CN`), values re-escaped, hex
/// values in lower case. Attribute types without a keyword stay dotted OIDs.
pub fn normalize_dn(dn: &str) -> Result<String, X509Error> {
    let mut rdns = Vec::new();
    for rdn in split_unescaped(dn, &[',', ';'])? {
        let mut avas = Vec::new();
        for ava in split_unescaped(&rdn, &['+'])? {
            let (kind, value) = ava
                .split_once('=')
                .ok_or(X509Error::DnString("missing '='"))?;
            let kind = kind.trim();
            let upper = kind.to_ascii_uppercase();
            let oid = upper.strip_prefix("OID.").unwrap_or(&upper);
            let keyword = match oid {
                "S" => Some("ST"),
                o if o.starts_with(|c: char| c.is_ascii_digit()) => keyword(o),
                o => Some(
                    ["CN", "L", "ST", "O", "OU", "C", "STREET", "DC", "UID"]
                        .into_iter()
                        .find(|k| *k == o)
                        .ok_or(X509Error::DnString("unsupported attribute type"))?,
                ),
            };
            let mut text = String::from(keyword.unwrap_or(oid));
            text.push('=');
            let value = value.trim_start();
            if let Some(hex_value) = value.strip_prefix('#') {
                let hex_value = hex_value.trim_end();
                if hex_value.is_empty() || !hex_value.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(X509Error::DnString("bad hex value"));
                }
                text.push('#');
                text.push_str(&hex_value.to_ascii_lowercase());
            } else {
                escape(&unescape(value)?, &mut text);
            }
            avas.push(text);
        }
        rdns.push(avas.join("+"));
    }
    Ok(rdns.join(","))
}

/// Splits at unescaped separators outside quotes; an empty input gives no parts.
fn split_unescaped(s: &str, separators: &[char]) -> Result<Vec<String>, X509Error> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let (mut escaped, mut quoted) = (false, false);
    for c in s.chars() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == '"' {
            quoted = !quoted;
        } else if !quoted && separators.contains(&c) {
            parts.push(std::mem::take(&mut current));
            continue;
        }
        current.push(c);
    }
    if escaped || quoted {
        return Err(X509Error::DnString("dangling escape or quote"));
    }
    if !current.trim().is_empty() || !parts.is_empty() {
        parts.push(current);
    }
    if parts.iter().any(|p| p.trim().is_empty()) {
        return Err(X509Error::DnString("empty component"));
    }
    Ok(parts)
}

/// Removes quotes and escapes (`\,` and `\hh` UTF-8 hex pairs); unescaped outer spaces go.
fn unescape(value: &str) -> Result<String, X509Error> {
    let mut bytes = Vec::new();
    let mut keep_until = 0;
    let mut chars = value.char_indices().peekable();
    while let Some((_, c)) = chars.next() {
        match c {
            '\\' => {
                let (_, next) = chars.next().ok_or(X509Error::DnString("dangling escape"))?;
                if next.is_ascii_hexdigit() {
                    let (_, low) = chars.next().ok_or(X509Error::DnString("bad hex escape"))?;
                    let pair: String = [next, low].iter().collect();
                    bytes.push(
                        u8::from_str_radix(&pair, 16)
                            .map_err(|_| X509Error::DnString("bad hex escape"))?,
                    );
                } else {
                    let mut buf = [0u8; 4];
                    bytes.extend_from_slice(next.encode_utf8(&mut buf).as_bytes());
                }
                keep_until = bytes.len();
            }
            '"' => {}
            c => {
                let mut buf = [0u8; 4];
                bytes.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                if c != ' ' {
                    keep_until = bytes.len();
                }
            }
        }
    }
    bytes.truncate(keep_until);
    String::from_utf8(bytes).map_err(|_| X509Error::DnString("value is not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DistinguishedName, DnType, DnValue, KeyPair};

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn cert_with(dn: DistinguishedName) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = dn;
        let key = KeyPair::generate()?;
        Ok(params.self_signed(&key)?.der().to_vec())
    }

    #[test]
    fn reverses_rdns_and_uses_keywords() -> TestResult {
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CountryName, "DE");
        dn.push(DnType::OrganizationName, "ACME Corporation");
        dn.push(DnType::CommonName, "device-1");
        let der = cert_with(dn)?;
        assert_eq!(
            subject_dn_rfc2253(&der)?,
            "CN=device-1,O=ACME Corporation,C=DE"
        );
        assert_eq!(
            issuer_dn_rfc2253(&der)?,
            "CN=device-1,O=ACME Corporation,C=DE"
        );
        Ok(())
    }

    #[test]
    fn escapes_special_characters_and_edge_spaces() -> TestResult {
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, " a,b=c+d<e>f#g;h\"i\\j ");
        dn.push(DnType::CommonName, "#ünï cödé");
        let der = cert_with(dn)?;
        assert_eq!(
            subject_dn_rfc2253(&der)?,
            "CN=\\#ünï cödé,O=\\ a\\,b\\=c\\+d\\<e\\>f\\#g\\;h\\\"i\\\\j\\ "
        );
        Ok(())
    }

    #[test]
    fn unknown_types_as_hex_and_printable_strings() -> TestResult {
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CustomDnType(vec![1, 2, 840, 113549, 1, 9, 1]),
            DnValue::Ia5String("a@b.c".try_into()?),
        );
        dn.push(
            DnType::CommonName,
            DnValue::PrintableString("x y".try_into()?),
        );
        let der = cert_with(dn)?;
        assert_eq!(
            subject_dn_rfc2253(&der)?,
            "CN=x y,1.2.840.113549.1.9.1=#16056140622e63"
        );
        Ok(())
    }

    #[test]
    fn dc_and_uid_keywords() -> TestResult {
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CustomDnType(vec![0, 9, 2342, 19200300, 100, 1, 25]),
            DnValue::Ia5String("example".try_into()?),
        );
        dn.push(
            DnType::CustomDnType(vec![0, 9, 2342, 19200300, 100, 1, 1]),
            DnValue::Utf8String("jdoe".into()),
        );
        dn.push(
            DnType::CustomDnType(vec![2, 5, 4, 5]),
            DnValue::PrintableString("42".try_into()?),
        );
        assert_eq!(
            subject_dn_rfc2253(&cert_with(dn)?)?,
            "2.5.4.5=#13023432,UID=jdoe,DC=example"
        );
        Ok(())
    }

    #[test]
    fn multi_valued_rdn_joined_with_plus() -> TestResult {
        // SEQUENCE { SET { CN=a, O=b } , SET { C=DE } }
        let cn = [0x30, 0x08, 0x06, 0x03, 0x55, 0x04, 0x03, 0x0c, 0x01, b'a'];
        let o = [0x30, 0x08, 0x06, 0x03, 0x55, 0x04, 0x0a, 0x0c, 0x01, b'b'];
        let c = [
            0x30, 0x09, 0x06, 0x03, 0x55, 0x04, 0x06, 0x13, 0x02, b'D', b'E',
        ];
        let mut set1 = vec![0x31, 20];
        set1.extend(cn);
        set1.extend(o);
        let mut set2 = vec![0x31, 11];
        set2.extend(c);
        let mut name = vec![0x30, (set1.len() + set2.len()) as u8];
        name.extend(set2);
        name.extend(set1);
        assert_eq!(name_rfc2253(&name)?, "CN=a+O=b,C=DE");
        assert_eq!(name_rfc2253(&name[..name.len() - 1]), Err(X509Error::Name));
        Ok(())
    }

    #[test]
    fn normalizes_typed_dns_to_the_formatter_output() -> TestResult {
        assert_eq!(
            normalize_dn("cn = Device 1 , o=ACME\\, Inc.;C=DE")?,
            "CN=Device 1,O=ACME\\, Inc.,C=DE"
        );
        assert_eq!(normalize_dn("OID.2.5.4.3=a+S=b")?, "CN=a+ST=b");
        assert_eq!(
            normalize_dn("CN=\"x,y\",2.5.4.5=#1303414243")?,
            "CN=x\\,y,2.5.4.5=#1303414243"
        );
        assert_eq!(
            normalize_dn("CN=\\ lead\\ ,O=caf\\c3\\a9")?,
            "CN=\\ lead\\ ,O=café"
        );
        assert_eq!(normalize_dn("")?, "");
        assert!(normalize_dn("CN").is_err());
        assert!(normalize_dn("FOO=x").is_err());
        assert!(normalize_dn("CN=a,,O=b").is_err());
        assert!(normalize_dn("CN=a\\").is_err());
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, " spaced, \"odd\" ");
        dn.push(DnType::CommonName, "ü+#");
        let formatted = subject_dn_rfc2253(&cert_with(dn)?)?;
        assert_eq!(normalize_dn(&formatted)?, formatted);
        Ok(())
    }

    #[test]
    fn certificate_info_derives_key_and_validity() -> TestResult {
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "ca");
        let der = cert_with(dn)?;
        let info = certificate_info(&der)?;
        assert_eq!(info.subject_dn, "CN=ca");
        assert_eq!(info.algorithm, KeyAlgorithm::Ec);
        assert!(info.not_before < info.not_after);
        assert_eq!(info.spki_der.first(), Some(&0x30));
        assert!(certificate_info(b"garbage").is_err());
        Ok(())
    }
}
