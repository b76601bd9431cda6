//! The DTLS port: one UDP socket, a table of peers, a task per handshake, and established
//! sessions served by the read loop itself.
//!
//! webrtc-dtls's own `listen()` runs every handshake inside `accept()`, one after the other, and
//! never forgets a peer; so the port demultiplexes datagrams itself. A datagram from an unknown
//! address creates a peer only if it is a ClientHello ([`record::is_client_hello`]) offering a
//! suite the port serves, and the table has room (`max_peers`); anything else is dropped without
//! a reply. The handshake runs in a task of its own ([`crate::handshaking`]) under
//! `handshake_timeout`, fed through a small queue (a full queue drops datagrams, as the network
//! could), so junk and half-open handshakes only ever cost their own slot.
//!
//! webrtc-dtls is used for the handshake only: an established session costs two tasks, channels
//! and buffers there. After the handshake the session's keys and sequence numbers are handed
//! over and the peer becomes an [`Established`] entry of the table, plain data: the read loop
//! decrypts its records, runs its CoAP message layer, spawns a task per request in flight (the
//! device pipeline is asynchronous) and encrypts the answers. A timer list (one entry per session:
//! its message layer's next timeout, or its idle deadline) ends sessions that are silent for
//! `idle_timeout`, with a close_notify.
//!
//! A ClientHello with a new client random from the address of an established session means the
//! device restarted behind the same address and lost its session: the session is dropped and a
//! new handshake starts.
//!
//! Memory per idle session (measured in docs/perf.md): the table entry, the boxed
//! [`Established`] (keys, sequence numbers, replay window, the device's ids), and its timer entry;
//! no task, buffer or message layer. `per_peer_sizes` prints the sizes.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use coap_lite::Packet;
use ferry_adapter_core::AuthenticatedDevice;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::cert::DtlsCertificate;
use crate::config::CoapConfig;
use crate::established::{Established, SessionConfig};
use crate::exchange::{ExchangeConfig, Incoming, RequestId};
use crate::handshake::Method;
use crate::handshaking::{Handover, HandshakeError, HandshakeSettings, handshake};
use crate::listener::RECEIVE_ERROR_PAUSE;
use crate::record;
use crate::session::{Shared, answer};

/// Datagrams queued per handshaking peer before further ones are dropped.
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

/// The read loop's entry for a peer in its handshake.
pub(crate) struct Handshaking {
    id: u64,
    tx: mpsc::Sender<Bytes>,
    /// Digest of the client random of the ClientHello that started the peer.
    hello: u64,
    /// Ends the handshake task (a child of the shutdown token).
    stop: CancellationToken,
}

/// One entry of the peer table.
pub(crate) enum Peer {
    Handshaking(Box<Handshaking>),
    Established(Box<Established>),
}

/// A handshake task's result.
struct Outcome {
    peer: SocketAddr,
    id: u64,
    result: Result<Handover, HandshakeError>,
}

/// A request task's result.
struct Answered {
    peer: SocketAddr,
    session: u64,
    request: RequestId,
    response: Packet,
}

/// Everything the read loop owns.
struct Port {
    socket: Arc<UdpSocket>,
    shared: Arc<Shared>,
    handshakes: Arc<HandshakeSettings>,
    sessions: SessionConfig,
    max_peers: usize,
    peers: HashMap<SocketAddr, Peer>,
    /// `(due, peer)` of every established session that has a timeout.
    timers: BTreeSet<(Instant, SocketAddr)>,
    requests: JoinSet<Answered>,
    tracker: TaskTracker,
    outcomes: mpsc::UnboundedSender<Outcome>,
    next_id: u64,
}

impl DtlsPort {
    /// Reads datagrams and serves peers until shutdown, then answers the requests in flight,
    /// closes the sessions and waits for the handshakes.
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
        let (outcomes, mut outcomes_rx) = mpsc::unbounded_channel();
        let mut port = Port {
            socket: Arc::clone(&socket),
            handshakes: Arc::new(HandshakeSettings {
                socket: Arc::clone(&socket),
                authenticator: shared.ctx.authenticator.clone(),
                certificate: self.certificate,
                timeout: config.handshake_timeout,
            }),
            sessions: SessionConfig {
                exchange: ExchangeConfig {
                    max_exchanges: PEER_EXCHANGES,
                    ..exchange
                },
                idle_timeout: config.idle_timeout,
                max_in_flight: PEER_IN_FLIGHT,
            },
            shared: Arc::clone(&shared),
            max_peers: config.max_peers,
            peers: HashMap::new(),
            timers: BTreeSet::new(),
            requests: JoinSet::new(),
            tracker: TaskTracker::new(),
            outcomes,
            next_id: 0,
        };
        let shutdown = shared.ctx.shutdown.clone();
        let mut buf = vec![0u8; 65_536];
        let timer = tokio::time::sleep(std::time::Duration::ZERO);
        tokio::pin!(timer);
        loop {
            let due = port.timers.first().map(|(at, _)| *at);
            if let Some(at) = due.map(tokio::time::Instant::from_std)
                && timer.deadline() != at
            {
                timer.as_mut().reset(at);
            }
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                Some(outcome) = outcomes_rx.recv() => port.handshake_done(outcome).await,
                Some(answered) = port.requests.join_next() => match answered {
                    Ok(a) => port.answered(a).await,
                    Err(e) => tracing::error!(error = %e, "CoAP request task failed"),
                },
                () = &mut timer, if due.is_some() => port.timeouts(Instant::now()).await,
                received = socket.recv_from(&mut buf) => match received {
                    Ok((n, peer)) => {
                        let datagram = buf.get_mut(..n).unwrap_or_default();
                        port.datagram(peer, datagram).await;
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "DTLS port receive error");
                        tokio::time::sleep(RECEIVE_ERROR_PAUSE).await;
                    }
                },
            }
        }
        tracing::info!(%addr, peers = port.peers.len(), "CoAP DTLS port stopped reading; draining");
        port.drain().await;
    }
}

impl Port {
    /// Routes one datagram: to an established session, to a handshake, or to a new handshake.
    async fn datagram(&mut self, peer: SocketAddr, datagram: &mut [u8]) {
        let hello = record::is_client_hello(datagram).then(|| hello_digest(datagram));
        match self.peers.get_mut(&peer) {
            Some(Peer::Established(session)) => match hello {
                // The device restarted on the same address (e.g. behind the same NAT mapping)
                // and lost its session. Without this it could not handshake again until the
                // old session went idle.
                Some(digest) if digest != session.hello => {
                    tracing::info!(%peer, "new handshake on an established DTLS session: replacing it");
                    self.remove(peer);
                }
                // A late copy of the ClientHello that started the session.
                Some(_) => return,
                None => {
                    let now = Instant::now();
                    let (requests, shared) = (&mut self.requests, &self.shared);
                    let id = session.id;
                    let device = Arc::clone(&session.device);
                    session.receive(&self.sessions, now, peer, datagram, |incoming| {
                        spawn_request(requests, shared, peer, id, &device, incoming);
                    });
                    self.flush(peer).await;
                    return;
                }
            },
            Some(Peer::Handshaking(handshaking)) => {
                match handshaking.tx.try_send(Bytes::copy_from_slice(datagram)) {
                    Ok(()) => return,
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        tracing::trace!(%peer, "peer queue full: datagram dropped");
                        return;
                    }
                    // The handshake task ended; a new ClientHello may start over.
                    Err(mpsc::error::TrySendError::Closed(_)) => {
                        self.peers.remove(&peer);
                    }
                }
            }
            None => {}
        }
        let Some(hello) = hello else {
            tracing::trace!(%peer, n = datagram.len(), "not a ClientHello from an unknown peer: dropped");
            return;
        };
        self.start_handshake(peer, datagram, hello);
    }

    fn start_handshake(&mut self, peer: SocketAddr, datagram: &[u8], hello: u64) {
        let Some(method) = Method::of(datagram) else {
            tracing::debug!(%peer, "ClientHello offering neither a PSK nor an ECDHE_ECDSA cipher suite: dropped");
            return;
        };
        if self.peers.len() >= self.max_peers {
            tracing::debug!(%peer, max = self.max_peers, "peer table full: ClientHello dropped");
            return;
        }
        let (tx, rx) = mpsc::channel(PEER_QUEUE);
        if tx.try_send(Bytes::copy_from_slice(datagram)).is_err() {
            return;
        }
        self.next_id += 1;
        let (id, stop) = (self.next_id, self.shared.ctx.shutdown.child_token());
        let handshaking = Handshaking {
            id,
            tx,
            hello,
            stop: stop.clone(),
        };
        self.peers
            .insert(peer, Peer::Handshaking(Box::new(handshaking)));
        let settings = Arc::clone(&self.handshakes);
        let outcomes = self.outcomes.clone();
        let span = tracing::info_span!("coaps", %peer);
        self.tracker.spawn(
            async move {
                let result = tokio::select! {
                    () = stop.cancelled() => return,
                    result = handshake(&settings, peer, method, rx) => result,
                };
                let _ = outcomes.send(Outcome { peer, id, result });
            }
            .instrument(span),
        );
    }

    /// A handshake ended: its peer becomes an established session, or leaves the table.
    async fn handshake_done(&mut self, outcome: Outcome) {
        let Outcome { peer, id, result } = outcome;
        let hello = match self.peers.get(&peer) {
            Some(Peer::Handshaking(h)) if h.id == id => h.hello,
            // Replaced or stopped meanwhile.
            _ => return,
        };
        let handover = match result {
            Ok(handover) => handover,
            Err(e @ (HandshakeError::Timeout | HandshakeError::NoCertificate)) => {
                tracing::debug!(%peer, reason = %e, "DTLS handshake ended");
                self.peers.remove(&peer);
                return;
            }
            Err(e) => {
                tracing::info!(%peer, reason = %e, "DTLS handshake ended");
                self.peers.remove(&peer);
                return;
            }
        };
        let Handover {
            device,
            records,
            final_flight,
            early,
            mut queue,
        } = handover;
        tracing::debug!(%peer, tenant = %device.tenant_id.as_str(), device = %device.device_id.as_str(), auth_id = device.auth_id, "DTLS session established");
        let session = Established::new(
            id,
            hello,
            Arc::new(device),
            records,
            final_flight,
            Instant::now(),
        );
        self.peers
            .insert(peer, Peer::Established(Box::new(session)));
        let mut pending: Vec<Bytes> = early;
        if let Some(queue) = &mut queue {
            while let Ok(datagram) = queue.try_recv() {
                pending.push(datagram);
            }
        }
        for datagram in pending {
            self.datagram(peer, &mut datagram.to_vec()).await;
        }
        self.flush(peer).await;
    }

    /// A request was processed: its response goes to the session that asked, if it still exists.
    async fn answered(&mut self, answered: Answered) {
        let Answered {
            peer,
            session,
            request,
            response,
        } = answered;
        if let Some(Peer::Established(s)) = self.peers.get_mut(&peer)
            && s.id == session
        {
            s.respond(Instant::now(), request, response);
            self.flush(peer).await;
        }
    }

    /// Runs the timeouts that are due.
    async fn timeouts(&mut self, now: Instant) {
        while let Some(&(at, peer)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.pop_first();
            if let Some(Peer::Established(session)) = self.peers.get_mut(&peer) {
                session.timer = None;
                session.handle_timeout(&self.sessions, now);
                self.flush(peer).await;
            }
        }
    }

    /// Sends what the session has to send, ends it if it is over, and schedules its timeout.
    async fn flush(&mut self, peer: SocketAddr) {
        let Some(Peer::Established(session)) = self.peers.get_mut(&peer) else {
            return;
        };
        while let Some(datagram) = session.poll_transmit() {
            if let Err(e) = self.socket.send_to(&datagram, peer).await {
                tracing::debug!(%peer, error = %e, "cannot send a datagram");
            }
        }
        if let Some(ending) = session.ending() {
            tracing::debug!(%peer, ?ending, "DTLS session ended");
            if ending.notifies()
                && let Some(alert) = session.close_notify()
            {
                let _ = self.socket.send_to(&alert, peer).await;
            }
            self.remove(peer);
            return;
        }
        let next = session.poll_timeout(&self.sessions);
        if next != session.timer {
            if let Some(old) = session.timer {
                self.timers.remove(&(old, peer));
            }
            if let Some(at) = next {
                self.timers.insert((at, peer));
            }
            session.timer = next;
        }
    }

    /// Forgets a peer: its timer, or its handshake task.
    fn remove(&mut self, peer: SocketAddr) {
        match self.peers.remove(&peer) {
            Some(Peer::Established(session)) => {
                if let Some(at) = session.timer {
                    self.timers.remove(&(at, peer));
                }
            }
            Some(Peer::Handshaking(handshaking)) => handshaking.stop.cancel(),
            None => {}
        }
    }

    /// After shutdown: the requests in flight are answered, every session is told
    /// (close_notify), and the handshakes (cancelled by the shutdown token) end.
    async fn drain(mut self) {
        while let Some(done) = self.requests.join_next().await {
            if let Ok(answered) = done {
                self.answered(answered).await;
            }
        }
        for (peer, entry) in std::mem::take(&mut self.peers) {
            if let Peer::Established(mut session) = entry
                && let Some(alert) = session.close_notify()
            {
                let _ = self.socket.send_to(&alert, peer).await;
            }
        }
        self.tracker.close();
        self.tracker.wait().await;
    }
}

/// Processes one request of a session in a task of its own.
fn spawn_request(
    requests: &mut JoinSet<Answered>,
    shared: &Arc<Shared>,
    peer: SocketAddr,
    session: u64,
    device: &Arc<AuthenticatedDevice>,
    incoming: Incoming,
) {
    let span = tracing::info_span!("coaps", %peer, tenant = device.tenant_id.as_str(), device = device.device_id.as_str());
    let (shared, device) = (Arc::clone(shared), Arc::clone(device));
    requests.spawn(
        async move {
            let (request, response) = answer(shared, Some(device), incoming).await;
            Answered {
                peer,
                session,
                request,
                response,
            }
        }
        .instrument(span),
    );
}

/// A digest of a ClientHello's client random (0 if there is none).
fn hello_digest(datagram: &[u8]) -> u64 {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut hasher = DefaultHasher::new();
    record::client_hello_random(datagram).hash(&mut hasher);
    hasher.finish()
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
