//! What an HTTP device sends and receives: requests encoded from a head built once per device
//! ([`RequestHead`]) plus the payload, and responses cut in place from the receive buffer
//! ([`next_response`]): the status line and headers (parsed with `httparse`), then the body
//! skipped as `Content-Length` or chunked coding says, or up to the end of the stream.

use std::fmt::Write as _;
use std::mem::MaybeUninit;

use base64::Engine as _;
use bytes::BytesMut;

/// The most a response head may take.
pub const MAX_HEAD: usize = 64 * 1024;
/// The most a whole response (head and body) may take; the body is buffered before it is
/// skipped.
pub const MAX_RESPONSE: usize = 1024 * 1024;
/// Headers a response may have.
const MAX_HEADERS: usize = 64;

/// Why the server's bytes are not a response the client accepts.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ResponseError {
    /// Not HTTP/1.x, or its framing is broken.
    #[error("malformed response: {0}")]
    Malformed(&'static str),
    /// The head is over [`MAX_HEAD`] (or has too many headers), or the response is over
    /// [`MAX_RESPONSE`].
    #[error("response too large")]
    TooLarge,
}

/// A request's bytes up to the value of `Content-Length`, built once per device.
#[derive(Clone, Debug)]
pub struct RequestHead(Vec<u8>);

impl RequestHead {
    /// `POST path` to `host`, with basic authentication when `credentials` (user, password) are
    /// given, an octet-stream body, and `extra` headers (name, value).
    pub fn post(
        path: &str,
        host: &str,
        credentials: Option<(&str, &str)>,
        extra: &[(&str, &str)],
    ) -> Self {
        let mut head = format!("POST {path} HTTP/1.1\r\nHost: {host}\r\n");
        if let Some((user, password)) = credentials {
            let token =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            let _ = write!(head, "Authorization: Basic {token}\r\n");
        }
        head.push_str("Content-Type: application/octet-stream\r\n");
        for (name, value) in extra {
            let _ = write!(head, "{name}: {value}\r\n");
        }
        head.push_str("Content-Length: ");
        Self(head.into_bytes())
    }

    /// Encodes the request with `payload` as its body into `out`.
    pub fn encode(&self, out: &mut BytesMut, payload: &[u8]) {
        out.reserve(self.0.len() + 24 + payload.len());
        out.extend_from_slice(&self.0);
        out.extend_from_slice(itoa::Buffer::new().format(payload.len()).as_bytes());
        out.extend_from_slice(b"\r\n\r\n");
        out.extend_from_slice(payload);
    }
}

/// A response, its body skipped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// Whether the server ends the connection after it (`Connection: close`, HTTP/1.0 without
    /// keep-alive, or a body that lasts until the end of the stream).
    pub close: bool,
}

/// How a response's body is delimited.
enum Body {
    Length(usize),
    Chunked,
    UntilClose,
}

/// Cuts the next complete response off the front of `buf`; `None` if more bytes are needed.
/// Interim (1xx) responses are skipped. A body that lasts until the end of the stream is not
/// waited for: the response comes with `close` and the rest of the buffer is dropped.
pub fn next_response(buf: &mut BytesMut) -> Result<Option<Response>, ResponseError> {
    loop {
        let mut headers = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut parsed = httparse::Response::new(&mut []);
        let config = httparse::ParserConfig::default();
        let head_len =
            match config.parse_response_with_uninit_headers(&mut parsed, buf, &mut headers) {
                Ok(httparse::Status::Complete(n)) if n <= MAX_HEAD => n,
                Ok(httparse::Status::Complete(_)) | Err(httparse::Error::TooManyHeaders) => {
                    return Err(ResponseError::TooLarge);
                }
                Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
                    return Err(ResponseError::TooLarge);
                }
                Ok(httparse::Status::Partial) => return Ok(None),
                Err(_) => return Err(ResponseError::Malformed("head")),
            };
        let status = parsed.code.ok_or(ResponseError::Malformed("status"))?;
        if (100..200).contains(&status) && status != 101 {
            let _ = buf.split_to(head_len);
            continue;
        }
        let mut close = parsed.version == Some(0);
        let mut length = None;
        let mut chunked = false;
        for header in parsed.headers.iter() {
            if header.name.eq_ignore_ascii_case("content-length") {
                let value = std::str::from_utf8(header.value)
                    .ok()
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .ok_or(ResponseError::Malformed("content-length"))?;
                if length.is_some_and(|l| l != value) {
                    return Err(ResponseError::Malformed("content-length"));
                }
                length = Some(value);
            } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = last_token(header.value).eq_ignore_ascii_case(b"chunked");
                if !chunked {
                    return Err(ResponseError::Malformed("transfer-encoding"));
                }
            } else if header.name.eq_ignore_ascii_case("connection") {
                for token in header.value.split(|&b| b == b',') {
                    let token = token.trim_ascii();
                    if token.eq_ignore_ascii_case(b"close") {
                        close = true;
                    } else if token.eq_ignore_ascii_case(b"keep-alive") {
                        close = false;
                    }
                }
            }
        }
        let body = if status == 204 || status == 304 {
            Body::Length(0)
        } else if chunked {
            Body::Chunked
        } else {
            length.map_or(Body::UntilClose, Body::Length)
        };
        let end = match body {
            Body::Length(len) => head_len
                .checked_add(len)
                .filter(|&end| end <= MAX_RESPONSE)
                .ok_or(ResponseError::TooLarge)?,
            Body::Chunked => match chunked_end(buf, head_len)? {
                Some(end) => end,
                None if buf.len() > MAX_RESPONSE => return Err(ResponseError::TooLarge),
                None => return Ok(None),
            },
            Body::UntilClose => {
                buf.clear();
                return Ok(Some(Response {
                    status,
                    close: true,
                }));
            }
        };
        if buf.len() < end {
            return Ok(None);
        }
        let _ = buf.split_to(end);
        return Ok(Some(Response { status, close }));
    }
}

/// The last of a header's comma-separated tokens.
fn last_token(value: &[u8]) -> &[u8] {
    value
        .rsplit(|&b| b == b',')
        .next()
        .unwrap_or_default()
        .trim_ascii()
}

/// Where a chunked body starting at `start` ends (after its trailers), if it is all in `buf`.
fn chunked_end(buf: &[u8], start: usize) -> Result<Option<usize>, ResponseError> {
    let mut pos = start;
    loop {
        let Some(rest) = buf.get(pos..) else {
            return Ok(None);
        };
        let (line, size) = match httparse::parse_chunk_size(rest) {
            Ok(httparse::Status::Complete(found)) => found,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(_) => return Err(ResponseError::Malformed("chunk size")),
        };
        pos += line;
        if size == 0 {
            return Ok(trailers_end(buf, pos));
        }
        let size = usize::try_from(size)
            .ok()
            .filter(|&s| s <= MAX_RESPONSE)
            .ok_or(ResponseError::TooLarge)?;
        let data_end = pos + size;
        match buf.get(data_end..data_end + 2) {
            None => return Ok(None),
            Some(b"\r\n") => pos = data_end + 2,
            Some(_) => return Err(ResponseError::Malformed("chunk")),
        }
    }
}

/// Where the trailer section starting at `pos` ends (after its empty line), if it is all there.
fn trailers_end(buf: &[u8], mut pos: usize) -> Option<usize> {
    loop {
        let rest = buf.get(pos..)?;
        let line = rest.windows(2).position(|w| w == b"\r\n")?;
        pos += line + 2;
        if line == 0 {
            return Some(pos);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8]) -> (Result<Option<Response>, ResponseError>, usize) {
        let mut buf = BytesMut::from(bytes);
        let parsed = next_response(&mut buf);
        (parsed, buf.len())
    }

    fn ok(status: u16, close: bool) -> Result<Option<Response>, ResponseError> {
        Ok(Some(Response { status, close }))
    }

    #[test]
    fn the_request_head_has_basic_auth_and_the_payload_its_length() {
        let head = RequestHead::post(
            "/telemetry",
            "127.0.0.1:8080",
            Some(("dev@tenant", "pw")),
            &[("qos-level", "1")],
        );
        let mut out = BytesMut::new();
        head.encode(&mut out, b"hello");
        assert_eq!(
            &out[..],
            b"POST /telemetry HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\
              Authorization: Basic ZGV2QHRlbmFudDpwdw==\r\n\
              Content-Type: application/octet-stream\r\nqos-level: 1\r\n\
              Content-Length: 5\r\n\r\nhello"
        );
        let head = RequestHead::post("/event", "h:1", None, &[]);
        out.clear();
        head.encode(&mut out, b"");
        assert_eq!(
            &out[..],
            b"POST /event HTTP/1.1\r\nHost: h:1\r\nContent-Type: application/octet-stream\r\n\
              Content-Length: 0\r\n\r\n"
        );
    }

    #[test]
    fn bodies_are_skipped_by_length_or_chunks() {
        assert_eq!(
            parse(b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n"),
            (ok(202, false), 0)
        );
        assert_eq!(
            parse(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello"),
            (ok(200, false), 0)
        );
        let chunked = b"HTTP/1.1 202 Accepted\r\nTransfer-Encoding: chunked\r\n\r\n\
                        5;ext=1\r\nhello\r\n10\r\n0123456789abcdef\r\n0\r\nX-Trailer: 1\r\n\r\n";
        assert_eq!(parse(chunked), (ok(202, false), 0));
        // The body of a response without framing lasts until the end of the stream.
        assert_eq!(
            parse(b"HTTP/1.1 202 OK\r\n\r\nwhatever"),
            (ok(202, true), 0)
        );
        // An interim response is skipped; 204 has no body whatever it says.
        assert_eq!(
            parse(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\nContent-Length: 3\r\n\r\n"),
            (ok(204, false), 0)
        );
    }

    #[test]
    fn connection_close_and_http_1_0_end_the_connection() {
        assert_eq!(
            parse(b"HTTP/1.1 202 Accepted\r\nConnection: Close\r\nContent-Length: 0\r\n\r\n"),
            (ok(202, true), 0)
        );
        assert_eq!(
            parse(b"HTTP/1.0 202 Accepted\r\nContent-Length: 0\r\n\r\n"),
            (ok(202, true), 0)
        );
        assert_eq!(
            parse(b"HTTP/1.0 202 Accepted\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n"),
            (ok(202, false), 0)
        );
    }

    #[test]
    fn a_response_split_anywhere_waits_for_the_rest() -> Result<(), ResponseError> {
        let whole: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy\
                             HTTP/1.1 202 Accepted\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
        for split in 0..whole.len() {
            let mut buf = BytesMut::from(&whole[..split]);
            let mut responses = Vec::new();
            while let Some(r) = next_response(&mut buf)? {
                responses.push(r.status);
            }
            buf.extend_from_slice(&whole[split..]);
            while let Some(r) = next_response(&mut buf)? {
                responses.push(r.status);
            }
            assert_eq!(responses, [503, 202], "split at {split}");
            assert!(buf.is_empty(), "split at {split}");
        }
        Ok(())
    }

    #[test]
    fn two_responses_in_one_read_come_one_by_one() {
        let mut buf = BytesMut::from(
            &b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\nHTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n"[..],
        );
        assert_eq!(next_response(&mut buf), ok(202, false));
        assert_eq!(next_response(&mut buf), ok(401, false));
        assert_eq!(next_response(&mut buf), Ok(None));
    }

    #[test]
    fn broken_or_oversized_responses_are_errors() {
        for garbage in [
            &b"HTTP/1.1 2x2 Accepted\r\n\r\n"[..],
            b"SSH-2.0-OpenSSH\r\n\r\n",
            b"HTTP/1.1 202 Accepted\r\nContent-Length: -1\r\n\r\n",
            b"HTTP/1.1 202 Accepted\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"HTTP/1.1 202 Accepted\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"HTTP/1.1 202 Accepted\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"HTTP/1.1 202 Accepted\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nabc",
        ] {
            assert!(
                matches!(parse(garbage).0, Err(ResponseError::Malformed(_))),
                "{:?}",
                String::from_utf8_lossy(garbage)
            );
        }
        let mut long = b"HTTP/1.1 202 Accepted\r\nX-Filler: ".to_vec();
        long.resize(MAX_HEAD + 1, b'a');
        assert_eq!(parse(&long).0, Err(ResponseError::TooLarge));
        let huge = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
            MAX_RESPONSE
        );
        assert_eq!(parse(huge.as_bytes()).0, Err(ResponseError::TooLarge));
    }
}
