//! The drive loop of devices that send one message at a time and wait for its answer (CoAP;
//! HTTP devices use [`super::link`] with the same reconnect delay): connect and warm up, report readiness, then one message per slot of the schedule,
//! reconnecting after a broken connection, with acknowledgements, their latency and errors
//! recorded. Each protocol only says how to connect, send and close ([`RequestResponse`]).

use std::future::Future;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::Load;
use crate::stats::histogram;

/// How long to wait before reconnecting after a connection failed.
pub(super) const RECONNECT_DELAY: Duration = Duration::from_millis(200);

/// What one message came to.
pub(crate) enum Answer {
    /// Acknowledged (CoAP 2.xx, or sent at most once).
    Ack,
    /// Refused with this error kind; the connection stays usable.
    Refused(String),
    /// The connection failed with this error kind and must be replaced.
    Broken(String),
}

/// One device of a request/response protocol.
pub(crate) trait RequestResponse: Sync {
    /// An open connection (or DTLS session).
    type Conn: Send;

    /// Opens a connection; the error kind if that failed.
    fn connect(&self) -> impl Future<Output = Result<Self::Conn, String>> + Send;

    /// Sends one message and waits for its answer.
    fn request(&self, conn: &mut Self::Conn, payload: Bytes)
    -> impl Future<Output = Answer> + Send;

    /// Sends the warm-up message, which must be acknowledged; the same as [`Self::request`]
    /// unless the protocol's messages can go unanswered.
    fn warm_up(
        &self,
        conn: &mut Self::Conn,
        payload: Bytes,
    ) -> impl Future<Output = Answer> + Send {
        self.request(conn, payload)
    }

    /// Closes a connection that is no longer used.
    fn close(&self, conn: Self::Conn) -> impl Future<Output = ()> + Send;
}

/// Drives `device` through `load` (see the module documentation).
pub(crate) async fn drive<D: RequestResponse>(device: &D, mut load: Load) {
    let recorder = load.recorder.clone();
    let mut conn = match device.connect().await {
        Ok(c) => Some(c),
        Err(kind) => {
            recorder.error(kind);
            None
        }
    };
    let mut ok = false;
    if let Some(c) = conn.as_mut() {
        match device.warm_up(c, load.warmup_payload()).await {
            Answer::Ack => ok = true,
            Answer::Refused(kind) | Answer::Broken(kind) => {
                recorder.error(format!("{kind} (warm-up)"));
            }
        }
    }
    let _ = load.ready.send(ok).await;
    if let Some(start) = load.wait_start().await {
        let mut pacer = load.pacer(start);
        let mut acks = histogram();
        while pacer.next().await {
            let c = match conn.as_mut() {
                Some(c) => c,
                None => match device.connect().await {
                    Ok(c) => conn.insert(c),
                    Err(kind) => {
                        recorder.error(kind);
                        tokio::time::sleep(RECONNECT_DELAY).await;
                        continue;
                    }
                },
            };
            let body = load.next_payload();
            recorder.sent();
            let t0 = Instant::now();
            match device.request(c, body).await {
                Answer::Ack => {
                    recorder.acked();
                    crate::stats::record_since(&mut acks, t0);
                }
                Answer::Refused(kind) => recorder.error(kind),
                Answer::Broken(kind) => {
                    recorder.error(kind);
                    if let Some(c) = conn.take() {
                        device.close(c).await;
                    }
                }
            }
        }
        recorder.merge_ack_latency(&acks);
    }
    if let Some(c) = conn {
        device.close(c).await;
    }
}
