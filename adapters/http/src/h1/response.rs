//! Responses, encoded straight into the connection's write buffer.

use std::time::{SystemTime, UNIX_EPOCH};

use http::StatusCode;

/// The interim response that asks a client waiting on `expect: 100-continue` for the body.
pub(crate) const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// The `content-type` of every refusal's plain-text reason.
pub(crate) const PLAIN_TEXT: (&str, &str) = ("content-type", "text/plain; charset=utf-8");

/// What to tell the client about the connection after a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Persistence {
    /// Stays open; HTTP/1.1 needs no header for that.
    Implied,
    /// Stays open for an HTTP/1.0 client that asked for it (`connection: keep-alive`).
    KeepAlive,
    /// Closes after this response (`connection: close`).
    Close,
}

/// The `date` header's value, formatted once a second.
#[derive(Debug)]
pub(crate) struct DateCache {
    second: u64,
    text: String,
}

impl DateCache {
    /// An empty cache.
    pub(crate) fn new() -> Self {
        Self {
            second: u64::MAX,
            text: String::new(),
        }
    }

    /// The current date in the IMF-fixdate format.
    fn now(&mut self) -> &str {
        let now = SystemTime::now();
        let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        if second != self.second {
            self.second = second;
            self.text = httpdate::fmt_http_date(now);
        }
        &self.text
    }
}

/// A response to encode: status, extra header fields and a plain-text body.
#[derive(Debug)]
pub(crate) struct Response<'a> {
    /// The status.
    pub(crate) status: StatusCode,
    /// Header fields besides `date`, `content-length` and `connection`.
    pub(crate) headers: &'a [(&'static str, &'static str)],
    /// The body.
    pub(crate) body: &'a [u8],
}

impl Response<'_> {
    /// Appends the response to `out`.
    pub(crate) fn encode(&self, out: &mut Vec<u8>, date: &mut DateCache, persistence: Persistence) {
        out.extend_from_slice(b"HTTP/1.1 ");
        out.extend_from_slice(self.status.as_str().as_bytes());
        out.push(b' ');
        out.extend_from_slice(
            self.status
                .canonical_reason()
                .unwrap_or("Unknown")
                .as_bytes(),
        );
        out.extend_from_slice(b"\r\ndate: ");
        out.extend_from_slice(date.now().as_bytes());
        out.extend_from_slice(b"\r\ncontent-length: ");
        out.extend_from_slice(itoa::Buffer::new().format(self.body.len()).as_bytes());
        out.extend_from_slice(b"\r\n");
        for (name, value) in self.headers {
            for part in [name.as_bytes(), b": ", value.as_bytes(), b"\r\n"] {
                out.extend_from_slice(part);
            }
        }
        match persistence {
            Persistence::Implied => {}
            Persistence::KeepAlive => out.extend_from_slice(b"connection: keep-alive\r\n"),
            Persistence::Close => out.extend_from_slice(b"connection: close\r\n"),
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(self.body);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(response: &Response<'_>, persistence: Persistence) -> String {
        let mut out = Vec::new();
        response.encode(&mut out, &mut DateCache::new(), persistence);
        String::from_utf8_lossy(&out).into_owned()
    }

    #[test]
    fn status_line_headers_and_body() {
        let accepted = Response {
            status: StatusCode::ACCEPTED,
            headers: &[],
            body: b"",
        };
        let text = encoded(&accepted, Persistence::Implied);
        assert!(
            text.starts_with("HTTP/1.1 202 Accepted\r\ndate: "),
            "{text}"
        );
        assert!(
            text.ends_with(" GMT\r\ncontent-length: 0\r\n\r\n"),
            "{text}"
        );
        let refusal = Response {
            status: StatusCode::UNAUTHORIZED,
            headers: &[("www-authenticate", "Basic realm=\"Hono\"")],
            body: b"bad credentials\n",
        };
        let text = encoded(&refusal, Persistence::Close);
        assert!(text.starts_with("HTTP/1.1 401 Unauthorized\r\n"), "{text}");
        assert!(text.ends_with(
            "content-length: 16\r\nwww-authenticate: Basic realm=\"Hono\"\r\n\
             connection: close\r\n\r\nbad credentials\n"
        ));
        let text = encoded(&accepted, Persistence::KeepAlive);
        assert!(
            text.contains("\r\nconnection: keep-alive\r\n\r\n"),
            "{text}"
        );
    }

    #[test]
    fn date_is_an_http_date() -> Result<(), Box<dyn std::error::Error>> {
        let mut cache = DateCache::new();
        let date = httpdate::parse_http_date(cache.now())?;
        let skew = SystemTime::now().duration_since(date)?;
        assert!(skew.as_secs() < 5, "{skew:?}");
        Ok(())
    }
}
