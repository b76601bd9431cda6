//! HTTP devices against a plain HTTP server (`--target http://…`) written here on a real socket:
//! bodies in chunked coding, `Connection: close` after some responses (the device reconnects and
//! loses nothing), and refusals counted by status.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ferry_perf::config::{Address, RunConfig, ScenarioKind, Target, TransportKind};
use ferry_perf::rate::Rate;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// The length of the first complete request in `buf` (head and body), if there is one.
fn request_len(buf: &[u8]) -> Option<usize> {
    let head = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let text = std::str::from_utf8(&buf[..head]).ok()?;
    let length = text
        .lines()
        .find_map(|line| line.strip_prefix("Content-Length: "))?
        .trim()
        .parse::<usize>()
        .ok()?;
    (buf.len() >= head + length).then_some(head + length)
}

/// How the server answers.
#[derive(Clone, Copy)]
struct Answers {
    /// The statuses of the responses, in turn.
    statuses: &'static [&'static str],
    /// Every so many responses on a connection say `Connection: close`, and it ends.
    close_every: usize,
    /// Each response but a connection's first is sent this often.
    repeat: usize,
}

/// Answers the requests as `answers` says, with chunked bodies.
async fn serve(mut stream: TcpStream, answers: Answers) {
    let Answers {
        statuses,
        close_every,
        repeat,
    } = answers;
    let mut buf = Vec::new();
    let mut answered = 0;
    loop {
        while let Some(len) = request_len(&buf) {
            buf.drain(..len);
            let status = statuses[answered % statuses.len()];
            answered += 1;
            let close = answered % close_every == 0;
            let response = format!(
                "HTTP/1.1 {status}\r\nTransfer-Encoding: chunked\r\n{}\r\n2\r\nok\r\n0\r\n\r\n",
                if close { "Connection: close\r\n" } else { "" }
            );
            let times = if answered == 1 { 1 } else { repeat };
            if stream
                .write_all(response.repeat(times).as_bytes())
                .await
                .is_err()
                || close
            {
                return;
            }
        }
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Starts a server answering as `answers` says; returns its address and the count of connections it accepted.
async fn start(answers: Answers) -> std::io::Result<(String, Arc<AtomicUsize>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let address = format!("http://{}", listener.local_addr()?);
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(serve(stream, answers));
        }
    });
    Ok((address, accepted))
}

fn config(address: &str) -> Result<RunConfig, String> {
    let target = Target::HttpServer(Address::http(address)?);
    let mut config = RunConfig::new(ScenarioKind::Telemetry, TransportKind::Http, target);
    config.devices = 3;
    config.rate = Rate::PerSecond(300.0);
    config.duration = Duration::from_secs(1);
    config.payload_size = 64;
    Ok(config)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_answers_and_connection_close_lose_nothing() -> TestResult {
    let (address, accepted) = start(Answers {
        statuses: &["202 Accepted"],
        close_every: 7,
        repeat: 1,
    })
    .await?;
    let r = ferry_perf::run(&config(&address)?).await?;
    assert!(r.sent >= 100, "{r:?}");
    assert_eq!(r.acked, r.sent, "{r:?}");
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    // Each device's first connection ended after 7 responses, and later ones too.
    assert!(
        accepted.load(Ordering::Relaxed) > 3 * 2,
        "{} connections",
        accepted.load(Ordering::Relaxed)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_counted_by_status() -> TestResult {
    // The warm-up is accepted, then every other request refused.
    let (address, _) = start(Answers {
        statuses: &["202 Accepted", "503 Service Unavailable"],
        close_every: usize::MAX,
        repeat: 1,
    })
    .await?;
    let r = ferry_perf::run(&config(&address)?).await?;
    assert!(r.sent >= 100, "{r:?}");
    let refused = r.errors.get("http 503").copied().unwrap_or(0);
    assert_eq!(r.acked + refused, r.sent, "{r:?}");
    assert!(r.acked.abs_diff(refused) <= 3, "{r:?}");
    assert_eq!(r.errors.len(), 1, "{:?}", r.errors);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_nobody_asked_for_breaks_the_connection() -> TestResult {
    // Every response but a connection's first comes twice: the second is not taken as the next
    // request's answer, the connection is replaced instead.
    let (address, accepted) = start(Answers {
        statuses: &["202 Accepted"],
        close_every: usize::MAX,
        repeat: 2,
    })
    .await?;
    let r = ferry_perf::run(&config(&address)?).await?;
    assert!(r.sent >= 100, "{r:?}");
    assert_eq!(r.acked, r.sent, "{r:?}");
    let unexpected = r
        .errors
        .get("http unexpected response")
        .copied()
        .unwrap_or(0);
    assert!(unexpected * 2 + 6 >= r.sent, "{r:?}");
    assert!(
        accepted.load(Ordering::Relaxed) as u64 >= unexpected,
        "{r:?}"
    );
    assert_eq!(r.errors.len(), 1, "{:?}", r.errors);
    Ok(())
}
