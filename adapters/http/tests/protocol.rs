//! The adapter's HTTP/1.1 layer on the wire: pipelining, persistence rules, body framing,
//! `expect: 100-continue`, timeouts, and the statuses of requests that cannot be read.

mod common;

use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

fn auth() -> String {
    basic("sensor1@t1", "pw1")
}

fn telemetry(body: &str, extra: &str) -> String {
    format!(
        "POST /telemetry HTTP/1.1\r\nhost: x\r\nauthorization: {}\r\n{extra}content-length: {}\r\n\r\n{body}",
        auth(),
        body.len()
    )
}

fn header<'r>(response: &'r RawResponse, name: &str) -> Option<&'r str> {
    response
        .headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// Reads until the server closes; what it sent meanwhile.
async fn rest_until_closed(stream: &mut TcpStream) -> Result<Vec<u8>, Error> {
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest)).await??;
    Ok(rest)
}

fn payloads(h: &Harness) -> Vec<Vec<u8>> {
    h.northbound
        .sent()
        .iter()
        .map(|m| m.payload.to_vec())
        .collect()
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() -> TestResult {
    let h = start().await?;
    let mut stream = TcpStream::connect(h.addr.ok_or("no port")?).await?;
    let nowhere = "POST /nowhere HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\n\r\nabc";
    let requests = [
        telemetry("one", ""),
        nowhere.to_owned(),
        telemetry("two", ""),
    ]
    .concat();
    stream.write_all(requests.as_bytes()).await?;
    let mut reader = BufReader::new(&mut stream);
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(read_response(&mut reader).await?.status);
    }
    assert_eq!(statuses, [202, 404, 202]);
    assert_eq!(payloads(&h), [b"one".to_vec(), b"two".to_vec()]);
    h.stop().await
}

#[tokio::test]
async fn persistence_follows_the_version_and_connection_header() -> TestResult {
    let h = start().await?;
    let addr = h.addr.ok_or("no port")?;
    // HTTP/1.0 keeps the connection only when asked to, and says so.
    let mut stream = TcpStream::connect(addr).await?;
    let keep = telemetry("a", "connection: keep-alive\r\n").replace("HTTP/1.1", "HTTP/1.0");
    let response = raw_exchange(&mut stream, keep.as_bytes()).await?;
    assert_eq!(
        (response.status, header(&response, "connection")),
        (202, Some("keep-alive"))
    );
    let once = telemetry("b", "").replace("HTTP/1.1", "HTTP/1.0");
    let response = raw_exchange(&mut stream, once.as_bytes()).await?;
    assert_eq!(
        (response.status, header(&response, "connection")),
        (202, Some("close"))
    );
    assert!(rest_until_closed(&mut stream).await?.is_empty());
    // HTTP/1.1 keeps it unless told to close.
    let mut stream = TcpStream::connect(addr).await?;
    let response = raw_exchange(&mut stream, telemetry("c", "").as_bytes()).await?;
    assert_eq!(
        (response.status, header(&response, "connection")),
        (202, None)
    );
    assert!(header(&response, "date").is_some_and(|d| d.ends_with(" GMT")));
    let close = telemetry("d", "connection: close\r\n");
    let response = raw_exchange(&mut stream, close.as_bytes()).await?;
    assert_eq!(
        (response.status, header(&response, "connection")),
        (202, Some("close"))
    );
    assert!(rest_until_closed(&mut stream).await?.is_empty());
    assert_eq!(h.northbound.sent().len(), 4);
    h.stop().await
}

#[tokio::test]
async fn unreadable_requests_get_their_status_and_the_connection_closes() -> TestResult {
    let h = start().await?;
    let addr = h.addr.ok_or("no port")?;
    let many: String = (0..101).map(|i| format!("x-{i}: 1\r\n")).collect();
    let long = format!("x-long: {}\r\n", "a".repeat(70_000));
    let cases = [
        (telemetry("abc", "transfer-encoding: chunked\r\n"), 400),
        (telemetry("abc", "content-length: 4\r\n"), 400),
        (telemetry("abc", "transfer-encoding: gzip\r\n"), 501),
        (telemetry("abc", "expect: something\r\n"), 417),
        (telemetry("abc", &many), 431),
        (telemetry("abc", &long), 431),
        (telemetry("abc", "").replace("HTTP/1.1", "HTTP/2.0"), 505),
        ("GARBAGE\u{1}\r\n\r\n".to_owned(), 400),
    ];
    for (request, status) in cases {
        let mut stream = TcpStream::connect(addr).await?;
        let response = raw_exchange(&mut stream, request.as_bytes()).await?;
        let what = &request[..request.len().min(60)];
        assert_eq!(response.status, status, "{what:?}");
        assert_eq!(header(&response, "connection"), Some("close"), "{what:?}");
        assert!(String::from_utf8(response.body)?.ends_with('\n'));
        rest_until_closed(&mut stream).await?;
    }
    assert!(h.northbound.sent().is_empty());
    h.stop().await
}

#[tokio::test]
async fn chunked_bodies_with_extensions_and_trailers() -> TestResult {
    let h = start().await?;
    let mut stream = TcpStream::connect(h.addr.ok_or("no port")?).await?;
    let request = format!(
        "POST /telemetry HTTP/1.1\r\nhost: x\r\nauthorization: {}\r\ntransfer-encoding: chunked\r\n\r\n\
         3;note=x\r\nabc\r\n2\r\nde\r\n0\r\nx-checksum: 1\r\n\r\n",
        auth()
    );
    // Sent in small pieces: the body is put together across reads.
    for piece in request.as_bytes().chunks(7) {
        stream.write_all(piece).await?;
        stream.flush().await?;
        tokio::task::yield_now().await;
    }
    let mut reader = BufReader::new(&mut stream);
    assert_eq!(read_response(&mut reader).await?.status, 202);
    let broken = format!(
        "POST /telemetry HTTP/1.1\r\nhost: x\r\nauthorization: {}\r\ntransfer-encoding: chunked\r\n\r\n\
         zz\r\nabc\r\n0\r\n\r\n",
        auth()
    );
    let response = raw_exchange(&mut stream, broken.as_bytes()).await?;
    assert_eq!(
        (response.status, header(&response, "connection")),
        (400, Some("close"))
    );
    assert_eq!(payloads(&h), [b"abcde".to_vec()]);
    h.stop().await
}

#[tokio::test]
async fn expect_continue_asks_for_the_body_only_when_it_will_be_taken() -> TestResult {
    let h = start().await?;
    let addr = h.addr.ok_or("no port")?;
    let mut stream = TcpStream::connect(addr).await?;
    let request =
        telemetry("", "expect: 100-continue\r\n").replace("content-length: 0", "content-length: 5");
    stream.write_all(request.as_bytes()).await?;
    let mut reader = BufReader::new(&mut stream);
    assert_eq!(read_response(&mut reader).await?.status, 100);
    reader.get_mut().write_all(b"hello").await?;
    assert_eq!(read_response(&mut reader).await?.status, 202);
    assert_eq!(payloads(&h), [b"hello".to_vec()]);
    // Refused before the body: the final status comes at once and the connection closes, since
    // the client may or may not send the body it was not asked for.
    let mut stream = TcpStream::connect(addr).await?;
    let wrong = request.replace(&auth(), &basic("sensor1@t1", "wrong"));
    let response = raw_exchange(&mut stream, wrong.as_bytes()).await?;
    assert_eq!(
        (response.status, header(&response, "connection")),
        (401, Some("close"))
    );
    let too_large = format!(
        "POST /telemetry HTTP/1.1\r\nauthorization: {}\r\nexpect: 100-continue\r\ncontent-length: 100000\r\n\r\n",
        auth()
    );
    let mut stream = TcpStream::connect(addr).await?;
    let response = raw_exchange(&mut stream, too_large.as_bytes()).await?;
    assert_eq!(
        (response.status, header(&response, "connection")),
        (413, Some("close"))
    );
    assert_eq!(h.northbound.sent().len(), 1);
    h.stop().await
}

#[tokio::test]
async fn a_refused_request_body_is_read_past() -> TestResult {
    let h = start().await?;
    let mut stream = TcpStream::connect(h.addr.ok_or("no port")?).await?;
    let wrong = telemetry("secret", "").replace(&auth(), &basic("sensor1@t1", "wrong"));
    let response = raw_exchange(&mut stream, wrong.as_bytes()).await?;
    assert_eq!(
        (response.status, header(&response, "connection")),
        (401, None)
    );
    let response = raw_exchange(&mut stream, telemetry("next", "").as_bytes()).await?;
    assert_eq!(response.status, 202);
    assert_eq!(payloads(&h), [b"next".to_vec()]);
    h.stop().await
}

#[tokio::test]
async fn slow_heads_and_bodies_time_out_with_408() -> TestResult {
    let h = start_idle(Duration::from_millis(300)).await?;
    let addr = h.addr.ok_or("no port")?;
    let request = telemetry("hello", "");
    let (head, body) = request.split_at(request.len() - 5);
    for partial in [&head[..20], &request[..request.len() - 2]] {
        let mut stream = TcpStream::connect(addr).await?;
        stream.write_all(partial.as_bytes()).await?;
        let mut reader = BufReader::new(&mut stream);
        let response = read_response(&mut reader).await?;
        assert_eq!(
            (response.status, header(&response, "connection")),
            (408, Some("close"))
        );
        rest_until_closed(&mut stream).await?;
    }
    // A complete head with its body in time is served.
    let mut stream = TcpStream::connect(addr).await?;
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    let mut reader = BufReader::new(&mut stream);
    assert_eq!(read_response(&mut reader).await?.status, 202);
    assert_eq!(h.northbound.sent().len(), 1);
    h.stop().await
}

#[tokio::test]
async fn absolute_form_targets_are_routed_by_their_path() -> TestResult {
    let h = start().await?;
    let mut stream = TcpStream::connect(h.addr.ok_or("no port")?).await?;
    let request =
        telemetry("abs", "").replace("POST /telemetry", "POST http://gateway:8080/telemetry");
    let response = raw_exchange(&mut stream, request.as_bytes()).await?;
    assert_eq!(response.status, 202);
    let sent = h.northbound.sent();
    assert_eq!(
        sent.iter()
            .map(|m| m.orig_address.as_str())
            .collect::<Vec<_>>(),
        ["/telemetry"]
    );
    h.stop().await
}

#[tokio::test]
async fn head_requests_are_answered_without_a_body() -> TestResult {
    let h = start().await?;
    let mut stream = TcpStream::connect(h.addr.ok_or("no port")?).await?;
    let head = "HEAD /telemetry HTTP/1.1\r\nhost: x\r\n\r\n";
    let response = raw_exchange(&mut stream, head.as_bytes()).await?;
    assert_eq!(
        (response.status, header(&response, "allow")),
        (405, Some("POST"))
    );
    assert!(response.body.is_empty());
    // Had a body followed, it would be read as the next response's status line.
    let response = raw_exchange(&mut stream, telemetry("after", "").as_bytes()).await?;
    assert_eq!(response.status, 202);
    h.stop().await
}
