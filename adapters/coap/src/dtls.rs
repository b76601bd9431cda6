//! The DTLS port: one UDP socket, a table of peers, and one task per peer.
//!
//! webrtc-dtls's own `listen()` runs every handshake inside `accept()`, one after the other, and
//! never forgets a peer; so the port demultiplexes datagrams itself. The read loop looks the
//! sender up in the peer table and queues the datagram to that peer's task (a full queue drops
//! it, as the network could). A datagram from an unknown address creates a peer only if it is a
//! ClientHello ([`record::is_client_hello`]) and the table has room (`max_peers`); anything else
//! is dropped without a reply. Each peer task runs `DTLSConn::new` under `handshake_timeout`,
//! so junk and half-open handshakes only ever cost their own slot, then serves CoAP over the
//! session ([`Session`]) until it is idle for `idle_timeout`, and removes itself from the table.
//!
//! Which DTLS configuration a peer gets (PSK or certificate) is chosen from its first ClientHello,
//! and the device its finished handshake proved is found in [`crate::handshake`].
//!
//! **PSK.** The key of the identity `auth-id@tenant` comes from the device's `psk` credentials.
//! webrtc-dtls asks for it in a synchronous callback while it processes the ClientKeyExchange.
//! The peer's transport ([`PeerConn`]) sees every datagram before webrtc-dtls does: when one
//! carries a ClientKeyExchange ([`record::psk_identity`]), it resolves the identity through the
//! cached registry (`Authenticator::psk_key`, awaited in this peer's task only) and stores the
//! answer in the peer's [`PskSlot`], then hands the datagram on. The callback reads the slot.
//! (In DTLS 1.2 the identity is first sent in the ClientKeyExchange, not in the ClientHello.)

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use ferry_adapter_core::{AuthenticatedDevice, Authenticator, PskKey};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;
use webrtc_dtls::conn::DTLSConn;
use webrtc_util::conn::Conn;

use crate::cert::DtlsCertificate;
use crate::config::CoapConfig;
use crate::exchange::{ExchangeConfig, Exchanges};
use crate::handshake::{Method, authenticate, certificate_config, psk_config};
use crate::listener::{HEADER_ROOM, RECEIVE_ERROR_PAUSE, rand_u16};
use crate::record;
use crate::session::{Session, Shared, Transport};

/// Datagrams queued per peer before further ones are dropped.
const PEER_QUEUE: usize = 16;
/// Requests one DTLS peer may have in flight at once.
const PEER_IN_FLIGHT: usize = 16;
/// Message ids remembered per DTLS session: a device flooding its own session with fresh ids
/// only makes its oldest ones forgettable early, and costs a bounded amount of memory.
const PEER_EXCHANGES: usize = 256;

/// The bound DTLS port.
pub(crate) struct DtlsPort {
    pub(crate) socket: Arc<UdpSocket>,
    pub(crate) addr: SocketAddr,
    /// For the certificate cipher suites (X.509 device authentication); without it, certificate
    /// handshakes are refused.
    pub(crate) certificate: Option<DtlsCertificate>,
}

/// The read loop's entry for one peer.
pub(crate) struct PeerHandle {
    id: u64,
    tx: mpsc::Sender<Bytes>,
    /// Set once the handshake completed.
    established: Arc<AtomicBool>,
    /// Digest of the client random of the ClientHello that started the peer: a late duplicate
    /// of that ClientHello must not replace the session it created.
    hello: u64,
    /// Ends this peer's task (a child of the shutdown token).
    stop: CancellationToken,
}

/// What one peer task needs besides its queue.
struct PeerSettings {
    shared: Arc<Shared>,
    socket: Arc<UdpSocket>,
    handshake_timeout: Duration,
    idle_timeout: Duration,
    exchange: ExchangeConfig,
    certificate: Option<DtlsCertificate>,
}

impl DtlsPort {
    /// Reads datagrams and routes them to peers until shutdown, then waits for the peers.
    pub(crate) async fn run(
        self,
        shared: Arc<Shared>,
        config: &CoapConfig,
        exchange: ExchangeConfig,
    ) {
        let (socket, addr) = (self.socket, self.addr);
        match &self.certificate {
            Some(c) => {
                tracing::debug!(%addr, cert = %c.source, "CoAP DTLS port serving")
            }
            None => tracing::debug!(%addr, "CoAP DTLS port serving"),
        }
        let settings = Arc::new(PeerSettings {
            shared: Arc::clone(&shared),
            socket: Arc::clone(&socket),
            handshake_timeout: config.handshake_timeout,
            idle_timeout: config.idle_timeout,
            exchange,
            certificate: self.certificate,
        });
        let shutdown = shared.ctx.shutdown.clone();
        let tracker = TaskTracker::new();
        let (closed_tx, mut closed_rx) = mpsc::unbounded_channel::<(SocketAddr, u64)>();
        let mut peers: HashMap<SocketAddr, PeerHandle> = HashMap::new();
        let mut buf = vec![0u8; 65_536];
        let mut next_id = 0u64;
        loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                Some((peer, id)) = closed_rx.recv() => {
                    if peers.get(&peer).is_some_and(|p| p.id == id) {
                        peers.remove(&peer);
                    }
                }
                received = socket.recv_from(&mut buf) => {
                    let (n, peer) = match received {
                        Ok(r) => r,
                        Err(e) => {
                            tracing::debug!(error = %e, "DTLS port receive error");
                            tokio::time::sleep(RECEIVE_ERROR_PAUSE).await;
                            continue;
                        }
                    };
                    let datagram = buf.get(..n).unwrap_or_default();
                    // A ClientHello on an established session: the device restarted on the same
                    // address (e.g. behind the same NAT mapping) and lost its session. Without
                    // this it could not handshake again until the old session went idle.
                    if let Some(handle) = peers.get(&peer)
                        && handle.established.load(Ordering::Relaxed)
                        && record::is_client_hello(datagram)
                        && hello_digest(datagram) != handle.hello
                    {
                        tracing::info!(%peer, "new handshake on an established DTLS session: replacing it");
                        handle.stop.cancel();
                        peers.remove(&peer);
                    }
                    if let Some(handle) = peers.get(&peer) {
                        match handle.tx.try_send(Bytes::copy_from_slice(datagram)) {
                            Ok(()) => continue,
                            Err(mpsc::error::TrySendError::Full(_)) => {
                                tracing::trace!(%peer, "peer queue full: datagram dropped");
                                continue;
                            }
                            // The peer task ended; a new ClientHello may start over.
                            Err(mpsc::error::TrySendError::Closed(_)) => {
                                peers.remove(&peer);
                            }
                        }
                    }
                    if !record::is_client_hello(datagram) {
                        tracing::trace!(%peer, n, "not a ClientHello from an unknown peer: dropped");
                        continue;
                    }
                    let Some(method) = Method::of(datagram) else {
                        tracing::debug!(%peer, "ClientHello offering neither a PSK nor an ECDHE_ECDSA cipher suite: dropped");
                        continue;
                    };
                    if peers.len() >= config.max_peers {
                        tracing::debug!(%peer, max = config.max_peers, "peer table full: ClientHello dropped");
                        continue;
                    }
                    let (tx, rx) = mpsc::channel(PEER_QUEUE);
                    if tx.try_send(Bytes::copy_from_slice(datagram)).is_err() {
                        continue;
                    }
                    next_id += 1;
                    let (established, stop) = (Arc::new(AtomicBool::new(false)), shutdown.child_token());
                    peers.insert(
                        peer,
                        PeerHandle {
                            id: next_id,
                            tx,
                            established: Arc::clone(&established),
                            hello: hello_digest(datagram),
                            stop: stop.clone(),
                        },
                    );
                    let control = PeerControl { id: next_id, method, established, stop };
                    let span = tracing::info_span!(
                        "coaps",
                        %peer,
                        tenant = tracing::field::Empty,
                        device = tracing::field::Empty
                    );
                    tracker.spawn(
                        run_peer(Arc::clone(&settings), peer, rx, closed_tx.clone(), control)
                            .instrument(span),
                    );
                }
            }
        }
        tracing::info!(%addr, peers = peers.len(), "CoAP DTLS port stopped reading; draining peers");
        tracker.close();
        tracker.wait().await;
        drop(peers);
    }
}

/// The answer to a PSK identity, once resolved.
struct Resolved {
    identity: Vec<u8>,
    key: Option<PskKey>,
}

/// What the peer learned about its PSK identity, shared with webrtc-dtls's callback.
#[derive(Default)]
pub(crate) struct PskSlot(Mutex<Option<Resolved>>);

impl PskSlot {
    fn set(&self, resolved: Resolved) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(resolved);
    }

    fn is_resolved_for(&self, identity: &[u8]) -> bool {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .is_some_and(|r| r.identity == identity)
    }

    /// The key for `identity`, if it was resolved and accepted.
    pub(crate) fn key(&self, identity: &[u8]) -> Option<Vec<u8>> {
        let guard = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let resolved = guard.as_ref().filter(|r| r.identity == identity)?;
        resolved.key.as_ref().map(|k| k.key.clone())
    }

    /// The device that proved the key, after the handshake.
    pub(crate) fn device(&self) -> Option<AuthenticatedDevice> {
        let guard = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        guard.as_ref()?.key.as_ref().map(|k| k.device.clone())
    }
}

/// One peer's datagrams as a webrtc-util `Conn`: reads from the peer's queue (resolving a PSK
/// identity on the way), writes to the shared socket.
pub(crate) struct PeerConn {
    socket: Arc<UdpSocket>,
    peer: SocketAddr,
    rx: tokio::sync::Mutex<mpsc::Receiver<Bytes>>,
    psk: Arc<PskSlot>,
    authenticator: Authenticator,
}

impl PeerConn {
    async fn next_datagram(&self) -> Bytes {
        let next = self.rx.lock().await.recv().await;
        match next {
            Some(datagram) => datagram,
            // The port stopped: wait until the connection is dropped (an error here would
            // make webrtc-dtls's reader loop spin).
            None => std::future::pending().await,
        }
    }

    async fn resolve(&self, identity: &[u8]) {
        if self.psk.is_resolved_for(identity) {
            return;
        }
        let key = match std::str::from_utf8(identity) {
            Ok(name) => match self.authenticator.psk_key(name).await {
                Ok(key) => {
                    tracing::debug!(identity = name, "PSK identity resolved");
                    Some(key)
                }
                Err(e) => {
                    tracing::info!(identity = name, reason = %e, "PSK identity refused");
                    None
                }
            },
            Err(_) => {
                tracing::info!("PSK identity is not UTF-8: refused");
                None
            }
        };
        self.psk.set(Resolved {
            identity: identity.to_vec(),
            key,
        });
    }
}

type UtilResult<T> = Result<T, webrtc_util::Error>;

#[async_trait::async_trait]
impl Conn for PeerConn {
    async fn connect(&self, _addr: SocketAddr) -> UtilResult<()> {
        Err(webrtc_util::Error::Other("not applicable".to_owned()))
    }

    async fn recv(&self, buf: &mut [u8]) -> UtilResult<usize> {
        let datagram = self.next_datagram().await;
        if let Some(identity) = record::psk_identity(&datagram) {
            self.resolve(identity).await;
        }
        let target = buf.get_mut(..datagram.len()).ok_or_else(|| {
            webrtc_util::Error::Other("datagram larger than the buffer".to_owned())
        })?;
        target.copy_from_slice(&datagram);
        Ok(datagram.len())
    }

    async fn recv_from(&self, buf: &mut [u8]) -> UtilResult<(usize, SocketAddr)> {
        Ok((self.recv(buf).await?, self.peer))
    }

    async fn send(&self, buf: &[u8]) -> UtilResult<usize> {
        Ok(self.socket.send_to(buf, self.peer).await?)
    }

    async fn send_to(&self, buf: &[u8], target: SocketAddr) -> UtilResult<usize> {
        Ok(self.socket.send_to(buf, target).await?)
    }

    fn local_addr(&self) -> UtilResult<SocketAddr> {
        Ok(self.socket.local_addr()?)
    }

    fn remote_addr(&self) -> Option<SocketAddr> {
        Some(self.peer)
    }

    async fn close(&self) -> UtilResult<()> {
        Ok(())
    }

    fn as_any(&self) -> &(dyn std::any::Any + Send + Sync) {
        self
    }
}

/// A digest of a ClientHello's client random (0 if there is none).
fn hello_digest(datagram: &[u8]) -> u64 {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut hasher = DefaultHasher::new();
    record::client_hello_random(datagram).hash(&mut hasher);
    hasher.finish()
}

/// An established DTLS session as the CoAP session's transport.
struct DtlsTransport {
    conn: DTLSConn,
    peer: SocketAddr,
}

impl Transport for DtlsTransport {
    async fn recv(&self, buf: &mut [u8]) -> std::io::Result<(usize, SocketAddr)> {
        let n = self
            .conn
            .read(buf, None)
            .await
            .map_err(std::io::Error::other)?;
        Ok((n, self.peer))
    }

    async fn send(&self, _peer: SocketAddr, datagram: &[u8]) -> std::io::Result<()> {
        self.conn
            .write(datagram, None)
            .await
            .map(|_| ())
            .map_err(std::io::Error::other)
    }
}

/// The peer task's side of its [`PeerHandle`].
struct PeerControl {
    id: u64,
    /// How the peer authenticates (from its first ClientHello).
    method: Method,
    established: Arc<AtomicBool>,
    stop: CancellationToken,
}

/// One peer: handshake under a timeout, then CoAP until idle, shutdown or replacement.
async fn run_peer(
    settings: Arc<PeerSettings>,
    peer: SocketAddr,
    rx: mpsc::Receiver<Bytes>,
    closed: mpsc::UnboundedSender<(SocketAddr, u64)>,
    control: PeerControl,
) {
    let psk = Arc::new(PskSlot::default());
    let conn = Arc::new(PeerConn {
        socket: Arc::clone(&settings.socket),
        peer,
        rx: tokio::sync::Mutex::new(rx),
        psk: Arc::clone(&psk),
        authenticator: settings.shared.ctx.authenticator.clone(),
    });
    let config = match (control.method, &settings.certificate) {
        (Method::Psk, _) => psk_config(Arc::clone(&psk)),
        (Method::Certificate, Some(certificate)) => certificate_config(certificate),
        (Method::Certificate, None) => {
            tracing::debug!("certificate handshake refused: the port has no server certificate");
            let _ = closed.send((peer, control.id));
            return;
        }
    };
    // Boxed, like the authentication below: a future awaited inline would keep its size in this
    // task for the whole session, long after the handshake.
    let handshake = Box::pin(DTLSConn::new(conn, config, false, None));
    let stop = control.stop.clone();
    let outcome = tokio::select! {
        () = stop.cancelled() => None,
        outcome = tokio::time::timeout(settings.handshake_timeout, handshake) => Some(outcome),
    };
    match outcome {
        None => {}
        Some(Err(_)) => tracing::debug!("DTLS handshake timed out"),
        Some(Ok(Err(e))) => tracing::info!(reason = %e, "DTLS handshake failed"),
        Some(Ok(Ok(conn))) => match Box::pin(authenticate(
            control.method,
            &conn,
            &psk,
            &settings.shared.ctx.authenticator,
        ))
        .await
        {
            Err(reason) => {
                tracing::info!(method = ?control.method, %reason, "DTLS peer not authenticated: session closed");
                let _ = conn.close().await;
            }
            Ok(device) => {
                control.established.store(true, Ordering::Relaxed);
                let span = tracing::Span::current();
                span.record("tenant", device.tenant_id.as_str());
                span.record("device", device.device_id.as_str());
                tracing::debug!(method = ?control.method, auth_id = device.auth_id, "DTLS session established");
                let transport = DtlsTransport { conn, peer };
                let shared = Arc::clone(&settings.shared);
                let buffer_size = shared.max_payload_size + HEADER_ROOM;
                let transport = Session {
                    transport,
                    shared,
                    sender: Some(Arc::new(device)),
                    exchanges: Exchanges::new(
                        ExchangeConfig {
                            max_exchanges: PEER_EXCHANGES,
                            ..settings.exchange.clone()
                        },
                        rand_u16(),
                    ),
                    max_in_flight: PEER_IN_FLIGHT,
                    idle_timeout: Some(settings.idle_timeout),
                    buffer_size,
                    stop: stop.clone(),
                }
                .run()
                .await;
                // Tell the peer (close_notify), so it handshakes anew next time; not when the
                // session was replaced: the device is already in a new handshake.
                let replaced = stop.is_cancelled() && !settings.shared.ctx.shutdown.is_cancelled();
                if !replaced {
                    let _ = transport.conn.close().await;
                }
            }
        },
    }
    let _ = closed.send((peer, control.id));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::tests::client_hello;

    #[test]
    fn a_duplicate_client_hello_is_told_from_a_new_handshake() {
        let hello = client_hello(&[0xc0a8]);
        let mut other = hello.clone();
        // The first byte of the client random: record header 13 + handshake header 12 + version 2.
        other[27] ^= 0xff;
        assert_eq!(hello_digest(&hello), hello_digest(&hello.clone()));
        assert_ne!(hello_digest(&hello), hello_digest(&other));
        assert_eq!(Method::of(&other), Some(Method::Psk));
    }
}
