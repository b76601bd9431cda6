//! A request head (request line and header fields), parsed in place from the read buffer.
//!
//! The adapter needs a handful of fields, so they are picked out in one pass over the parsed
//! headers instead of being collected into a map. The framing rules of RFC 9112 §6 apply: a
//! body is delimited by `transfer-encoding: chunked` or by `content-length`; both at once,
//! differing lengths or an encoding other than `chunked` are refused, since a proxy in front
//! could read such a request differently (request smuggling).

use std::mem::MaybeUninit;

use super::Framing;
use super::error::ProtocolError;

/// Most header fields in one request head.
pub(crate) const MAX_HEADERS: usize = 100;

/// Longest request head in bytes.
pub(crate) const MAX_HEAD: usize = 64 * 1024;

/// The header fields the adapter reads (the first of each name counts).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Fields<'b> {
    /// `authorization`.
    pub(crate) authorization: Option<&'b [u8]>,
    /// `content-type`.
    pub(crate) content_type: Option<&'b [u8]>,
    /// `qos-level`.
    pub(crate) qos_level: Option<&'b [u8]>,
    /// `hono-ttl`.
    pub(crate) hono_ttl: Option<&'b [u8]>,
    /// `hono-ttd`.
    pub(crate) hono_ttd: Option<&'b [u8]>,
}

/// A complete request head, borrowing the buffer it was parsed from.
#[derive(Debug)]
pub(crate) struct Head<'b> {
    /// Bytes the head takes in the buffer (the body starts right after).
    pub(crate) len: usize,
    /// The method token.
    pub(crate) method: &'b str,
    /// The path of the request target (origin or absolute form).
    pub(crate) path: &'b str,
    /// The query of the request target, without `?`.
    pub(crate) query: Option<&'b str>,
    /// HTTP/1.0 rather than HTTP/1.1.
    pub(crate) http10: bool,
    /// Whether the client lets the connection stay open after this request.
    pub(crate) keep_alive: bool,
    /// `expect: 100-continue`: the client waits for an interim response before the body.
    pub(crate) expect_continue: bool,
    /// How the body is delimited.
    pub(crate) framing: Framing,
    /// The fields the adapter reads.
    pub(crate) fields: Fields<'b>,
}

/// Parses the head at the start of `buf`: `Ok(None)` while it is incomplete (and within
/// [`MAX_HEAD`]).
pub(crate) fn parse(buf: &[u8]) -> Result<Option<Head<'_>>, ProtocolError> {
    let mut headers = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut []);
    let status = httparse::ParserConfig::default().parse_request_with_uninit_headers(
        &mut request,
        buf,
        &mut headers,
    );
    let len = match status {
        Ok(httparse::Status::Complete(len)) if len <= MAX_HEAD => len,
        Ok(httparse::Status::Complete(_)) => return Err(ProtocolError::HeadTooLarge),
        Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => return Ok(None),
        Ok(httparse::Status::Partial) => return Err(ProtocolError::HeadTooLarge),
        Err(httparse::Error::TooManyHeaders) => return Err(ProtocolError::TooManyHeaders),
        Err(httparse::Error::Version) => return Err(ProtocolError::Version),
        Err(e) => return Err(ProtocolError::Malformed(syntax_error(e))),
    };
    let (Some(method), Some(target), Some(version)) =
        (request.method, request.path, request.version)
    else {
        return Err(ProtocolError::Malformed("incomplete request line"));
    };
    let http10 = version == 0;
    let (path, query) = split_target(target)?;
    let mut head = Head {
        len,
        method,
        path,
        query,
        http10,
        keep_alive: false,
        expect_continue: false,
        framing: Framing::Empty,
        fields: Fields::default(),
    };
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let (mut close, mut keep_alive) = (false, false);
    for header in request.headers.iter() {
        let (name, value) = (header.name, header.value);
        // The length first: most fields are none of these, and are passed over at once.
        let is = |known: &str| name.len() == known.len() && name.eq_ignore_ascii_case(known);
        let fields = &mut head.fields;
        match name.len() {
            13 if is("authorization") => _ = fields.authorization.get_or_insert(value),
            14 if is("content-length") => {
                let n = parse_length(value)?;
                if length.is_some_and(|l| l != n) {
                    return Err(ProtocolError::Framing("differing content-length values"));
                }
                length = Some(n);
            }
            17 if is("transfer-encoding") => {
                if http10 {
                    return Err(ProtocolError::Framing(
                        "transfer-encoding in an HTTP/1.0 request",
                    ));
                }
                // Only `chunked`, once: any other coding would have to be decoded first.
                if chunked || !value.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                    return Err(ProtocolError::UnsupportedEncoding);
                }
                chunked = true;
            }
            12 if is("content-type") => _ = fields.content_type.get_or_insert(value),
            9 if is("qos-level") => _ = fields.qos_level.get_or_insert(value),
            8 if is("hono-ttl") => _ = fields.hono_ttl.get_or_insert(value),
            8 if is("hono-ttd") => _ = fields.hono_ttd.get_or_insert(value),
            10 if is("connection") => {
                for option in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                    close |= option.eq_ignore_ascii_case(b"close");
                    keep_alive |= option.eq_ignore_ascii_case(b"keep-alive");
                }
            }
            6 if is("expect") => {
                if !value.trim_ascii().eq_ignore_ascii_case(b"100-continue") {
                    return Err(ProtocolError::Expectation);
                }
                head.expect_continue = !http10;
            }
            _ => {}
        }
    }
    // HTTP/1.1 keeps the connection unless told to close; HTTP/1.0 closes unless told to keep.
    head.keep_alive = !close && (!http10 || keep_alive);
    head.framing = match (chunked, length) {
        (true, Some(_)) => {
            return Err(ProtocolError::Framing(
                "both transfer-encoding and content-length",
            ));
        }
        (true, None) => Framing::Chunked,
        (false, Some(0) | None) => Framing::Empty,
        (false, Some(n)) => Framing::Length(n),
    };
    Ok(Some(head))
}

/// What httparse found wrong, in words.
fn syntax_error(e: httparse::Error) -> &'static str {
    match e {
        httparse::Error::HeaderName => "invalid header name",
        httparse::Error::HeaderValue => "invalid header value",
        httparse::Error::NewLine | httparse::Error::Status => "invalid line ending",
        httparse::Error::Token => "invalid method",
        httparse::Error::TooManyHeaders | httparse::Error::Version => "invalid request line",
    }
}

/// Splits a request target into path and query; an absolute-form target (`http://host/p`)
/// gives its path.
fn split_target(target: &str) -> Result<(&str, Option<&str>), ProtocolError> {
    let path_and_query = if target.starts_with('/') {
        target
    } else if let Some((scheme, rest)) = target.split_once("://")
        && (scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https"))
    {
        rest.find(['/', '?']).map_or("/", |i| &rest[i..])
    } else {
        return Err(ProtocolError::Malformed("unsupported request target"));
    };
    Ok(match path_and_query.split_once('?') {
        Some((path, query)) => (if path.is_empty() { "/" } else { path }, Some(query)),
        None => (path_and_query, None),
    })
}

/// A `content-length` value: decimal digits only.
fn parse_length(value: &[u8]) -> Result<u64, ProtocolError> {
    let digits = value.trim_ascii();
    let invalid = ProtocolError::Framing("invalid content-length");
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return Err(invalid);
    }
    std::str::from_utf8(digits)
        .ok()
        .and_then(|d| d.parse().ok())
        .ok_or(invalid)
}

#[cfg(test)]
mod tests;
