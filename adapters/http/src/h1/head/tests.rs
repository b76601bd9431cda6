//! Tests of request head parsing and the framing rules.

use super::*;

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn parsed(text: &str) -> Result<Option<Head<'_>>, ProtocolError> {
    parse(text.as_bytes())
}

fn complete(text: &str) -> Result<Head<'_>, Box<dyn std::error::Error>> {
    Ok(parsed(text)?.ok_or("incomplete head")?)
}

#[test]
fn fields_target_and_length() -> TestResult {
    let text = "POST /telemetry?hono-ttd=5 HTTP/1.1\r\nHost: x\r\nAuthorization: Basic YTpi\r\n\
                authorization: Basic other\r\nCONTENT-LENGTH: 4\r\ncontent-type: a/b\r\n\
                QoS-Level: 1\r\nhono-ttl: 30\r\nhono-ttd:  7 \r\n\r\nbody";
    let head = complete(text)?;
    assert_eq!(head.len, text.len() - 4);
    assert_eq!(
        (head.method, head.path, head.query),
        ("POST", "/telemetry", Some("hono-ttd=5"))
    );
    assert!(head.keep_alive && !head.http10 && !head.expect_continue);
    assert_eq!(head.framing, Framing::Length(4));
    let f = head.fields;
    assert_eq!(
        f.authorization,
        Some(&b"Basic YTpi"[..]),
        "the first one counts"
    );
    assert_eq!(f.content_type, Some(&b"a/b"[..]));
    assert_eq!(f.qos_level, Some(&b"1"[..]));
    assert_eq!(f.hono_ttl, Some(&b"30"[..]));
    assert_eq!(f.hono_ttd.map(<[u8]>::trim_ascii), Some(&b"7"[..]));
    assert_eq!(
        complete("PUT /event HTTP/1.1\r\ncontent-length: 0\r\n\r\n")?.framing,
        Framing::Empty
    );
    assert_eq!(
        complete("PUT /event HTTP/1.1\r\n\r\n")?.framing,
        Framing::Empty
    );
    Ok(())
}

#[test]
fn incomplete_heads_wait_within_the_limit() {
    assert!(matches!(
        parsed("POST /telemetry HTTP/1.1\r\nhost: x\r\n"),
        Ok(None)
    ));
    assert!(matches!(parsed(""), Ok(None)));
    let huge = format!("POST /telemetry HTTP/1.1\r\nx: {}", "a".repeat(MAX_HEAD));
    assert_eq!(parsed(&huge).err(), Some(ProtocolError::HeadTooLarge));
    let many: String = (0..=MAX_HEADERS).map(|i| format!("x{i}: 1\r\n")).collect();
    let many = format!("POST /telemetry HTTP/1.1\r\n{many}\r\n");
    assert_eq!(parsed(&many).err(), Some(ProtocolError::TooManyHeaders));
}

#[test]
fn persistence_follows_version_and_connection() -> TestResult {
    assert!(!complete("POST / HTTP/1.0\r\n\r\n")?.keep_alive);
    let head = complete("POST / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n")?;
    assert!(head.keep_alive && head.http10);
    assert!(!complete("POST / HTTP/1.1\r\nconnection: keep-alive, close\r\n\r\n")?.keep_alive);
    assert!(
        !complete("POST / HTTP/1.1\r\nconnection: close\r\nconnection: keep-alive\r\n\r\n")?
            .keep_alive
    );
    assert!(complete("POST / HTTP/1.1\r\nconnection: upgrade\r\n\r\n")?.keep_alive);
    Ok(())
}

#[test]
fn ambiguous_framing_is_refused() -> TestResult {
    let chunked = complete("POST / HTTP/1.1\r\ntransfer-encoding: Chunked\r\n\r\n")?;
    assert_eq!(chunked.framing, Framing::Chunked);
    let same = complete("POST / HTTP/1.1\r\ncontent-length: 3\r\ncontent-length: 3\r\n\r\n")?;
    assert_eq!(same.framing, Framing::Length(3));
    let framing = |text: &str| parsed(text).err();
    for bad in [
        "POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\ncontent-length: 3\r\n\r\n",
        "POST / HTTP/1.1\r\ncontent-length: 3\r\ncontent-length: 4\r\n\r\n",
        "POST / HTTP/1.1\r\ncontent-length: 3a\r\n\r\n",
        "POST / HTTP/1.1\r\ncontent-length: -1\r\n\r\n",
        "POST / HTTP/1.1\r\ncontent-length: 3, 3\r\n\r\n",
        "POST / HTTP/1.1\r\ncontent-length: 99999999999999999999\r\n\r\n",
        "POST / HTTP/1.0\r\ntransfer-encoding: chunked\r\n\r\n",
    ] {
        assert!(
            matches!(framing(bad), Some(ProtocolError::Framing(_))),
            "{bad}"
        );
    }
    for unsupported in [
        "POST / HTTP/1.1\r\ntransfer-encoding: gzip, chunked\r\n\r\n",
        "POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\ntransfer-encoding: chunked\r\n\r\n",
    ] {
        assert_eq!(
            framing(unsupported),
            Some(ProtocolError::UnsupportedEncoding)
        );
    }
    Ok(())
}

#[test]
fn expectations() -> TestResult {
    assert!(complete("POST / HTTP/1.1\r\nexpect: 100-Continue\r\n\r\n")?.expect_continue);
    assert!(!complete("POST / HTTP/1.0\r\nexpect: 100-continue\r\n\r\n")?.expect_continue);
    let other = parsed("POST / HTTP/1.1\r\nexpect: 200-ok\r\n\r\n").err();
    assert_eq!(other, Some(ProtocolError::Expectation));
    Ok(())
}

#[test]
fn request_targets() -> TestResult {
    let absolute = complete("PUT http://gw:8080/telemetry/t/d?a=b HTTP/1.1\r\n\r\n")?;
    assert_eq!(
        (absolute.path, absolute.query),
        ("/telemetry/t/d", Some("a=b"))
    );
    assert_eq!(complete("PUT HTTP://gw HTTP/1.1\r\n\r\n")?.path, "/");
    assert_eq!(complete("PUT /?x HTTP/1.1\r\n\r\n")?.query, Some("x"));
    for bad in [
        "OPTIONS * HTTP/1.1\r\n\r\n",
        "CONNECT gw:443 HTTP/1.1\r\n\r\n",
    ] {
        assert!(
            matches!(parsed(bad).err(), Some(ProtocolError::Malformed(_))),
            "{bad}"
        );
    }
    Ok(())
}

#[test]
fn broken_syntax() {
    assert_eq!(
        parsed("POST / HTTP/2.0\r\n\r\n").err(),
        Some(ProtocolError::Version)
    );
    for bad in [
        "POST / HTTP/1.1\r\nbad header\r\n\r\n",
        "\u{1}\u{2} / HTTP/1.1\r\n\r\n",
        "POST /\r\n\r\n",
    ] {
        assert!(parsed(bad).is_err(), "{bad:?}");
    }
}
