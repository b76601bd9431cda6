//! Rows of a bulk provisioning file: CSV (RFC 4180, header line first) or JSON lines, with the
//! members `device-id` (required), `certificate` (PEM), `password` and `psk` (Base64 key).
//!
//! Parsing never fails as a whole on a bad row: every row comes back with its number (1 = the
//! first data row) and either its fields or why it cannot be read.

use serde_json::Value;

/// The columns Ferry understands.
pub const COLUMNS: &[&str] = &["device-id", "certificate", "password", "psk"];

/// One data row.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Row {
    /// The device id.
    pub device_id: String,
    /// A PEM certificate: an `x509-cert` credential.
    pub certificate: Option<String>,
    /// A password: a `hashed-password` credential with auth-id = device id.
    pub password: Option<String>,
    /// A Base64 key: a `psk` credential with auth-id = device id.
    pub psk: Option<String>,
}

/// A row by number, or why it could not be read.
pub type Numbered = (usize, Result<Row, String>);

/// The whole file could not be read (no header, unknown column).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct FormatError(pub String);

/// Splits CSV text into records of fields (quotes may hold commas, quotes and newlines).
fn csv_records(text: &str) -> Result<Vec<Vec<String>>, FormatError> {
    let mut records = Vec::new();
    let mut record = Vec::new();
    let mut field = String::new();
    let mut chars = text.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') if field.is_empty() => quoted = true,
            (false, ',') => record.push(std::mem::take(&mut field)),
            (false, '\r') if chars.peek() == Some(&'\n') => {}
            (false, '\n') => {
                record.push(std::mem::take(&mut field));
                records.push(std::mem::take(&mut record));
            }
            (false, c) => field.push(c),
        }
    }
    if quoted {
        return Err(FormatError("unterminated quoted field".to_owned()));
    }
    if !field.is_empty() || !record.is_empty() {
        record.push(field);
        records.push(record);
    }
    // Blank lines carry no row.
    records.retain(|r| !(r.len() == 1 && r[0].trim().is_empty()));
    Ok(records)
}

fn optional(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.trim().is_empty())
}

/// Reads a CSV file with a header line.
pub fn parse_csv(text: &str) -> Result<Vec<Numbered>, FormatError> {
    let mut records = csv_records(text)?.into_iter();
    let header = records
        .next()
        .ok_or_else(|| FormatError("the file is empty".to_owned()))?;
    let header: Vec<String> = header
        .iter()
        .map(|h| h.trim().to_ascii_lowercase())
        .collect();
    if let Some(unknown) = header.iter().find(|h| !COLUMNS.contains(&h.as_str())) {
        return Err(FormatError(format!(
            "unknown column {unknown:?}; known: {}",
            COLUMNS.join(", ")
        )));
    }
    let column = |name: &str| header.iter().position(|h| h == name);
    let id_column = column("device-id")
        .ok_or_else(|| FormatError("the header has no device-id column".to_owned()))?;
    let (cert, password, psk) = (column("certificate"), column("password"), column("psk"));
    Ok(records
        .enumerate()
        .map(|(i, fields)| {
            if fields.len() != header.len() {
                return (
                    i + 1,
                    Err(format!(
                        "{} fields, the header has {}",
                        fields.len(),
                        header.len()
                    )),
                );
            }
            let get = |c: Option<usize>| optional(c.and_then(|c| fields.get(c).cloned()));
            let row = Row {
                device_id: fields[id_column].trim().to_owned(),
                certificate: get(cert),
                password: get(password),
                psk: get(psk),
            };
            (i + 1, Ok(row))
        })
        .collect())
}

/// Reads JSON lines: one object per line.
pub fn parse_json_lines(text: &str) -> Vec<Numbered> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, line)| (i + 1, json_row(line)))
        .collect()
}

fn json_row(line: &str) -> Result<Row, String> {
    let Value::Object(map) =
        serde_json::from_str::<Value>(line).map_err(|e| format!("malformed JSON: {e}"))?
    else {
        return Err("a row must be a JSON object".to_owned());
    };
    if let Some(unknown) = map.keys().find(|k| !COLUMNS.contains(&k.as_str())) {
        return Err(format!("unknown member {unknown:?}"));
    }
    let get = |key: &str| -> Result<Option<String>, String> {
        match map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(optional(Some(s.clone()))),
            Some(_) => Err(format!("'{key}' must be a string")),
        }
    };
    Ok(Row {
        device_id: get("device-id")?.ok_or("'device-id' is missing")?,
        certificate: get("certificate")?,
        password: get("password")?,
        psk: get("psk")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_with_quoted_pem_and_bad_rows() -> Result<(), FormatError> {
        let text = "device-id,certificate,password\r\n\
                    d1,\"-----BEGIN CERTIFICATE-----\nAB,\"\"C\n-----END CERTIFICATE-----\",\n\
                    d2,,secret\n\
                    \n\
                    d3,too,many,fields\n";
        let rows = parse_csv(text)?;
        assert_eq!(rows.len(), 3);
        let (n, first) = &rows[0];
        assert_eq!(*n, 1);
        let first = first.as_ref().map_err(|e| FormatError(e.clone()))?;
        assert_eq!(first.device_id, "d1");
        assert_eq!(
            first.certificate.as_deref(),
            Some("-----BEGIN CERTIFICATE-----\nAB,\"C\n-----END CERTIFICATE-----")
        );
        assert_eq!(first.password, None);
        assert!(matches!(&rows[1], (2, Ok(r)) if r.password.as_deref() == Some("secret")));
        assert!(matches!(&rows[2], (3, Err(_))));
        assert!(parse_csv("id,certificate\n").is_err());
        assert!(parse_csv("device-id,\"x\n").is_err());
        Ok(())
    }

    #[test]
    fn json_lines() {
        let rows = parse_json_lines(
            "{\"device-id\":\"d1\",\"psk\":\"c2VjcmV0\"}\n\n[1]\n{\"device-id\":\"d2\",\"x\":1}\n",
        );
        assert_eq!(rows.len(), 3);
        assert!(matches!(&rows[0], (1, Ok(r)) if r.psk.as_deref() == Some("c2VjcmV0")));
        assert!(matches!(&rows[1], (2, Err(_))));
        assert!(matches!(&rows[2], (3, Err(_))));
    }
}
