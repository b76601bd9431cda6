//! The CoAP message layer (RFC 7252 §4 and §5.2) without I/O: bytes and `now` in, datagrams
//! and requests out, so every rule is tested deterministically.
//!
//! coap-lite only frames messages; this module adds what a server needs on top:
//! - **Deduplication** by (peer, message id) for `EXCHANGE_LIFETIME`: a retransmitted CON is
//!   answered from the stored response and never handed up twice; a duplicate that arrives while
//!   the first copy is still being processed is answered with an empty ACK (the client stops
//!   retransmitting and waits for the separate response); duplicate NONs are ignored.
//! - **Separate responses**: a CON request not answered within `timeout_to_ack` is acknowledged
//!   with an empty ACK; its response then goes out as a CON of its own.
//! - **Retransmission** of such CON responses with exponential backoff (`ACK_TIMEOUT`,
//!   `MAX_RETRANSMIT`) until the client ACKs (or resets) them.
//! - NON requests are answered with NON responses; empty CONs ("pings") with RST.
//!
//! The driver ([`crate::session`]) calls [`Exchanges::handle`] for each datagram,
//! [`Exchanges::respond`] when a request was processed, [`Exchanges::handle_timeout`] at
//! [`Exchanges::poll_timeout`], and sends what [`Exchanges::poll_transmit`] yields.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use coap_lite::{MessageClass, MessageType, Packet, ResponseType};

/// Timing and size parameters of the message layer (RFC 7252 §4.8).
#[derive(Clone, Debug, PartialEq)]
pub struct ExchangeConfig {
    /// Initial retransmission timeout of a CON response (`ACK_TIMEOUT`, 2 s); doubled each time.
    pub ack_timeout: Duration,
    /// Retransmissions of a CON response before giving up (`MAX_RETRANSMIT`, 4).
    pub max_retransmit: u8,
    /// How long a message id is remembered for deduplication (`EXCHANGE_LIFETIME`, 247 s).
    pub exchange_lifetime: Duration,
    /// How long a CON request may be processed before it is acknowledged with an empty ACK.
    pub timeout_to_ack: Duration,
    /// Most remembered message ids; beyond it the oldest are forgotten early, so a flood of
    /// requests from spoofed addresses cannot exhaust memory.
    pub max_exchanges: usize,
}

impl Default for ExchangeConfig {
    fn default() -> Self {
        Self {
            ack_timeout: Duration::from_secs(2),
            max_retransmit: 4,
            exchange_lifetime: Duration::from_secs(247),
            timeout_to_ack: Duration::from_millis(500),
            max_exchanges: 100_000,
        }
    }
}

/// Identifies a request handed up by [`Exchanges::handle`], to [`respond`](Exchanges::respond) to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RequestId(u64);

/// A new (not duplicate) request.
#[derive(Debug)]
pub struct Incoming {
    /// Pass it back to [`Exchanges::respond`].
    pub id: RequestId,
    /// Who sent it.
    pub peer: SocketAddr,
    /// Whether it is confirmable (CON) rather than non-confirmable (NON).
    pub confirmable: bool,
    /// The request.
    pub packet: Packet,
}

/// A datagram to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// Destination.
    pub peer: SocketAddr,
    /// The encoded CoAP message.
    pub datagram: Vec<u8>,
}

/// What is remembered of a (peer, message id).
#[derive(Debug)]
enum Seen {
    /// The request is being processed.
    Processing,
    /// Answer duplicates with these bytes (the piggybacked response, or the empty ACK).
    Answered(Box<[u8]>),
    /// A NON that was handed up: duplicates are ignored.
    Ignored,
}

/// A request being processed.
#[derive(Debug)]
struct Pending {
    peer: SocketAddr,
    message_id: u16,
    token: Vec<u8>,
    confirmable: bool,
    /// When to send the empty ACK; `None` once sent (or for NON).
    ack_at: Option<Instant>,
}

/// A CON response waiting for the client's ACK.
#[derive(Debug)]
struct Outgoing {
    datagram: Box<[u8]>,
    retransmissions: u8,
    timeout: Duration,
    next: Instant,
}

type Key = (SocketAddr, u16);

/// The message layer of one port (plain UDP) or one DTLS session.
#[derive(Debug)]
pub struct Exchanges {
    config: ExchangeConfig,
    next_message_id: u16,
    next_request: u64,
    seen: HashMap<Key, (Seen, u64)>,
    /// (expiry, key, stamp) in insertion order; the stamp tells a reused id from the old one.
    expiry: VecDeque<(Instant, Key, u64)>,
    pending: HashMap<RequestId, Pending>,
    outgoing: HashMap<Key, Outgoing>,
    transmits: VecDeque<Transmit>,
    gave_up: u64,
}

fn encode(packet: &Packet) -> Option<Vec<u8>> {
    match packet.to_bytes() {
        Ok(bytes) => Some(bytes),
        Err(e) => {
            tracing::warn!(error = ?e, "cannot encode a CoAP response");
            None
        }
    }
}

/// An empty message (ACK or RST) for `message_id`.
fn empty(kind: MessageType, message_id: u16) -> Option<Vec<u8>> {
    let mut packet = Packet::new();
    packet.header.set_type(kind);
    packet.header.code = MessageClass::Empty;
    packet.header.message_id = message_id;
    encode(&packet)
}

/// Reads what can be read of a datagram coap-lite refused: `(type, code, message id, token)`.
fn raw_header(datagram: &[u8]) -> Option<(u8, u8, u16, &[u8])> {
    let (&first, &code) = (datagram.first()?, datagram.get(1)?);
    let message_id = u16::from_be_bytes([*datagram.get(2)?, *datagram.get(3)?]);
    let token_length = usize::from(first & 0x0f);
    if first >> 6 != 1 || token_length > 8 {
        return None;
    }
    let token = datagram.get(4..4 + token_length)?;
    Some(((first >> 4) & 0x03, code, message_id, token))
}

impl Exchanges {
    /// A message layer whose own message ids start at `first_message_id` (pick it at random).
    pub fn new(config: ExchangeConfig, first_message_id: u16) -> Self {
        Self {
            config,
            next_message_id: first_message_id,
            next_request: 0,
            seen: HashMap::new(),
            expiry: VecDeque::new(),
            pending: HashMap::new(),
            outgoing: HashMap::new(),
            transmits: VecDeque::new(),
            gave_up: 0,
        }
    }

    fn queue(&mut self, peer: SocketAddr, datagram: Option<Vec<u8>>) {
        if let Some(datagram) = datagram {
            self.transmits.push_back(Transmit { peer, datagram });
        }
    }

    fn message_id(&mut self) -> u16 {
        let id = self.next_message_id;
        self.next_message_id = id.wrapping_add(1);
        id
    }

    /// Takes one datagram from `peer`. Returns the request it carries if it is new; everything
    /// else (duplicates, ACKs, pings, malformed messages) is dealt with here.
    pub fn handle(&mut self, now: Instant, peer: SocketAddr, datagram: &[u8]) -> Option<Incoming> {
        self.expire(now);
        let packet = match Packet::from_bytes(datagram) {
            Ok(packet) => packet,
            Err(e) => {
                self.malformed(peer, datagram, &format!("{e:?}"));
                return None;
            }
        };
        let message_id = packet.header.message_id;
        let kind = packet.header.get_type();
        match (kind, packet.header.code) {
            (MessageType::Acknowledgement | MessageType::Reset, _) => {
                if self.outgoing.remove(&(peer, message_id)).is_some() {
                    tracing::trace!(%peer, message_id, ?kind, "separate response settled");
                }
                None
            }
            (MessageType::Confirmable, MessageClass::Empty) => {
                let rst = empty(MessageType::Reset, message_id);
                self.queue(peer, rst);
                None
            }
            (_, MessageClass::Request(_)) => self.request(now, peer, packet),
            (MessageType::Confirmable, _) => {
                tracing::debug!(%peer, message_id, "CON that is no request: reset");
                let rst = empty(MessageType::Reset, message_id);
                self.queue(peer, rst);
                None
            }
            (MessageType::NonConfirmable, _) => None,
        }
    }

    fn malformed(&mut self, peer: SocketAddr, datagram: &[u8], why: &str) {
        match raw_header(datagram) {
            // A CON request whose id and token can be read gets a 4.00 (RFC 7252 §4.2 allows
            // a reset; a 4.00 tells the client why).
            Some((0, code, message_id, token)) if (1..32).contains(&code) => {
                tracing::debug!(%peer, message_id, why, "malformed CON request: 4.00");
                let mut packet = Packet::new();
                packet.header.set_type(MessageType::Acknowledgement);
                packet.header.code = MessageClass::Response(ResponseType::BadRequest);
                packet.header.message_id = message_id;
                packet.set_token(token.to_vec());
                packet.payload = b"malformed message".to_vec();
                let bytes = encode(&packet);
                self.queue(peer, bytes);
            }
            _ => tracing::debug!(%peer, len = datagram.len(), why, "dropping malformed datagram"),
        }
    }

    fn request(&mut self, now: Instant, peer: SocketAddr, packet: Packet) -> Option<Incoming> {
        let message_id = packet.header.message_id;
        let confirmable = packet.header.get_type() == MessageType::Confirmable;
        let key = (peer, message_id);
        if let Some((seen, _)) = self.seen.get_mut(&key) {
            match seen {
                Seen::Answered(bytes) => {
                    tracing::debug!(%peer, message_id, "duplicate: answered from the stored response");
                    let datagram = bytes.to_vec();
                    self.transmits.push_back(Transmit { peer, datagram });
                }
                Seen::Processing if confirmable => {
                    // The client retransmits: acknowledge now, answer separately later.
                    tracing::debug!(%peer, message_id, "duplicate while processing: empty ACK");
                    if let Some(ack) = empty(MessageType::Acknowledgement, message_id) {
                        *seen = Seen::Answered(ack.clone().into_boxed_slice());
                        self.transmits.push_back(Transmit {
                            peer,
                            datagram: ack,
                        });
                    }
                    if let Some(p) = self
                        .pending
                        .values_mut()
                        .find(|p| p.peer == peer && p.message_id == message_id)
                    {
                        p.ack_at = None;
                    }
                }
                Seen::Processing | Seen::Ignored => {
                    tracing::debug!(%peer, message_id, "duplicate NON ignored");
                }
            }
            return None;
        }
        if self.seen.len() >= self.config.max_exchanges {
            self.forget_oldest();
        }
        let stamp = self.next_request;
        self.next_request += 1;
        let id = RequestId(stamp);
        self.seen.insert(key, (Seen::Processing, stamp));
        self.expiry
            .push_back((now + self.config.exchange_lifetime, key, stamp));
        self.pending.insert(
            id,
            Pending {
                peer,
                message_id,
                token: packet.get_token().to_vec(),
                confirmable,
                ack_at: confirmable.then(|| now + self.config.timeout_to_ack),
            },
        );
        Some(Incoming {
            id,
            peer,
            confirmable,
            packet,
        })
    }

    /// Sends the response to request `id`: piggybacked on the ACK if the request was not
    /// acknowledged yet, as a separate CON (retransmitted until ACKed) if it was, as a NON for
    /// a NON request. `response` carries the code, options and payload; type, message id and
    /// token are set here.
    pub fn respond(&mut self, now: Instant, id: RequestId, mut response: Packet) {
        let Some(pending) = self.pending.remove(&id) else {
            return;
        };
        let key = (pending.peer, pending.message_id);
        response.set_token(pending.token);
        match (pending.confirmable, pending.ack_at.is_some()) {
            (true, true) => {
                response.header.set_type(MessageType::Acknowledgement);
                response.header.message_id = pending.message_id;
                let Some(bytes) = encode(&response) else {
                    return;
                };
                if let Some((seen, _)) = self.seen.get_mut(&key) {
                    *seen = Seen::Answered(bytes.clone().into_boxed_slice());
                }
                self.queue(pending.peer, Some(bytes));
            }
            (true, false) => {
                let message_id = self.message_id();
                response.header.set_type(MessageType::Confirmable);
                response.header.message_id = message_id;
                let Some(bytes) = encode(&response) else {
                    return;
                };
                self.outgoing.insert(
                    (pending.peer, message_id),
                    Outgoing {
                        datagram: bytes.clone().into_boxed_slice(),
                        retransmissions: 0,
                        timeout: self.config.ack_timeout,
                        next: now + self.config.ack_timeout,
                    },
                );
                self.queue(pending.peer, Some(bytes));
            }
            (false, _) => {
                let message_id = self.message_id();
                response.header.set_type(MessageType::NonConfirmable);
                response.header.message_id = message_id;
                if let Some((seen, _)) = self.seen.get_mut(&key) {
                    *seen = Seen::Ignored;
                }
                let bytes = encode(&response);
                self.queue(pending.peer, bytes);
            }
        }
    }

    /// Sends due empty ACKs and retransmissions, gives up on unacknowledged responses and
    /// forgets expired message ids.
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut acks = Vec::new();
        for pending in self.pending.values_mut() {
            if pending.ack_at.is_some_and(|at| at <= now) {
                pending.ack_at = None;
                acks.push((pending.peer, pending.message_id));
            }
        }
        for (peer, message_id) in acks {
            tracing::debug!(%peer, message_id, "still processing: empty ACK, separate response follows");
            if let Some(ack) = empty(MessageType::Acknowledgement, message_id) {
                if let Some((seen, _)) = self.seen.get_mut(&(peer, message_id)) {
                    *seen = Seen::Answered(ack.clone().into_boxed_slice());
                }
                self.transmits.push_back(Transmit {
                    peer,
                    datagram: ack,
                });
            }
        }
        let max = self.config.max_retransmit;
        let mut resend = Vec::new();
        let mut gave_up = 0;
        self.outgoing.retain(|&(peer, message_id), out| {
            if out.next > now {
                return true;
            }
            if out.retransmissions >= max {
                tracing::info!(%peer, message_id, "separate response never acknowledged; giving up");
                gave_up += 1;
                return false;
            }
            out.retransmissions += 1;
            out.timeout = out.timeout.saturating_mul(2);
            out.next = now + out.timeout;
            resend.push(Transmit {
                peer,
                datagram: out.datagram.to_vec(),
            });
            true
        });
        self.gave_up += gave_up;
        self.transmits.extend(resend);
        self.expire(now);
    }

    fn expire(&mut self, now: Instant) {
        while let Some(&(at, key, stamp)) = self.expiry.front() {
            if at > now {
                break;
            }
            self.expiry.pop_front();
            if self.seen.get(&key).is_some_and(|(_, s)| *s == stamp) {
                self.seen.remove(&key);
            }
        }
    }

    fn forget_oldest(&mut self) {
        while let Some((_, key, stamp)) = self.expiry.pop_front() {
            if self.seen.get(&key).is_some_and(|(_, s)| *s == stamp) {
                self.seen.remove(&key);
                return;
            }
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) must be called next, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let acks = self.pending.values().filter_map(|p| p.ack_at);
        let retransmissions = self.outgoing.values().map(|o| o.next);
        let expiry = self.expiry.front().map(|(at, _, _)| *at);
        acks.chain(retransmissions).chain(expiry).min()
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// Separate CON responses still waiting for their ACK.
    pub fn unacknowledged(&self) -> usize {
        self.outgoing.len()
    }

    /// Separate responses given up on because the client never acknowledged them.
    pub fn gave_up(&self) -> u64 {
        self.gave_up
    }

    /// Requests handed up and not yet responded to.
    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }

    /// Whether nothing is in flight or waiting for an acknowledgement (remembered message ids
    /// do not count: they only matter while the client still retransmits).
    pub fn is_idle(&self) -> bool {
        self.pending.is_empty() && self.outgoing.is_empty()
    }

    /// Whether the layer holds nothing at all: no remembered message id, nothing in flight,
    /// nothing to send. A DTLS session frees its message layer then.
    pub fn is_empty(&self) -> bool {
        self.is_idle()
            && self.seen.is_empty()
            && self.expiry.is_empty()
            && self.transmits.is_empty()
    }
}

#[cfg(test)]
mod tests;
