//! An established DTLS session as plain data, without I/O: the port's read loop hands it
//! datagrams, answers and the time, and sends what it yields.
//!
//! It holds the record layer ([`RecordLayer`]: keys, sequence numbers, replay window), the device
//! the handshake authenticated, the server's final flight while the client may still need it,
//! and the CoAP message layer ([`Exchanges`]), which exists only while it remembers something:
//! an idle session is a few hundred bytes.
//!
//! - **Final flight** (RFC 6347 §4.2.4): the server's ChangeCipherSpec + Finished may be lost.
//!   The client then retransmits its last flight, ending in its Finished (an epoch-1 handshake
//!   record); each authentic one is answered with the stored flight, until the client's first
//!   application data proves the handshake finished on its side.
//! - **Alerts**: close_notify is answered with close_notify and ends the session; a fatal alert
//!   ends it; warnings are ignored.
//! - Records of epoch 0 (the rest of a retransmitted flight) and records that do not
//!   authenticate are dropped silently (RFC 6347 §4.1.2.7).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use coap_lite::Packet;
use ferry_adapter_core::AuthenticatedDevice;

use crate::error::RequestError;
use crate::exchange::{ExchangeConfig, Exchanges, Incoming, RequestId};
use crate::listener::rand_u16;
use crate::protection::{ALERT, APPLICATION_DATA, EPOCH, HANDSHAKE, RecordLayer, records};
use crate::session::refusal;

/// Alert level `fatal` and description `close_notify` (RFC 5246 §7.2).
const FATAL: u8 = 2;
const CLOSE_NOTIFY: u8 = 0;

/// Settings shared by every established session of a port.
#[derive(Debug, Clone)]
pub(crate) struct SessionConfig {
    pub(crate) exchange: ExchangeConfig,
    /// End the session after this long without a record and with nothing in flight.
    pub(crate) idle_timeout: Duration,
    /// Requests processed at once; further ones are answered with 5.03.
    pub(crate) max_in_flight: usize,
}

/// Why a session ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ending {
    /// The client sent close_notify.
    PeerClosed,
    /// The client sent a fatal alert with this description.
    Fatal(u8),
    /// Nothing happened for `idle_timeout`.
    Idle,
    /// The server's record sequence numbers are used up.
    Exhausted,
}

impl Ending {
    /// Whether the server says close_notify as the session ends.
    pub(crate) fn notifies(self) -> bool {
        matches!(self, Ending::PeerClosed | Ending::Idle)
    }
}

/// One established session.
#[derive(Debug)]
pub(crate) struct Established {
    /// Tells this session from a later one of the same address.
    pub(crate) id: u64,
    /// Digest of the ClientHello that started it (a late duplicate must not replace it).
    pub(crate) hello: u64,
    /// Who the handshake authenticated.
    pub(crate) device: Arc<AuthenticatedDevice>,
    /// When the port's timer list has this session due, as the port last scheduled it.
    pub(crate) timer: Option<Instant>,
    records: RecordLayer,
    final_flight: Option<Box<[u8]>>,
    resend_final_flight: bool,
    exchanges: Option<Box<Exchanges>>,
    last_activity: Instant,
    ending: Option<Ending>,
}

impl Established {
    /// A session right after its handshake; `final_flight` is the server's last handshake
    /// datagram.
    pub(crate) fn new(
        id: u64,
        hello: u64,
        device: Arc<AuthenticatedDevice>,
        records: RecordLayer,
        final_flight: Option<Box<[u8]>>,
        now: Instant,
    ) -> Self {
        Self {
            id,
            hello,
            device,
            timer: None,
            records,
            final_flight,
            resend_final_flight: false,
            exchanges: None,
            last_activity: now,
            ending: None,
        }
    }

    /// Takes one datagram from the client (decrypted in place); new requests go to
    /// `on_request`, everything else is dealt with here.
    pub(crate) fn receive(
        &mut self,
        config: &SessionConfig,
        now: Instant,
        peer: SocketAddr,
        datagram: &mut [u8],
        mut on_request: impl FnMut(Incoming),
    ) {
        for record in records(datagram) {
            if self.ending.is_some() {
                return;
            }
            let (content_type, epoch) = (record.content_type, record.epoch);
            if epoch != EPOCH {
                tracing::trace!(%peer, epoch, content_type, "record of another epoch ignored");
                continue;
            }
            let plaintext = match self.records.open(record) {
                Ok(plaintext) => plaintext,
                Err(why) => {
                    tracing::trace!(%peer, content_type, %why, "record discarded");
                    continue;
                }
            };
            self.last_activity = now;
            match content_type {
                APPLICATION_DATA => {
                    // The client has our Finished.
                    self.final_flight = None;
                    let exchanges = self.exchanges.get_or_insert_with(|| {
                        Box::new(Exchanges::new(config.exchange.clone(), rand_u16()))
                    });
                    let Some(incoming) = exchanges.handle(now, peer, plaintext) else {
                        continue;
                    };
                    if exchanges.in_flight() > config.max_in_flight {
                        exchanges.respond(now, incoming.id, refusal(&RequestError::Busy));
                    } else {
                        on_request(incoming);
                    }
                }
                ALERT => match *plaintext {
                    [_, CLOSE_NOTIFY] => self.ending = Some(Ending::PeerClosed),
                    [FATAL, description] => self.ending = Some(Ending::Fatal(description)),
                    _ => tracing::debug!(%peer, alert = ?plaintext, "DTLS warning alert ignored"),
                },
                HANDSHAKE if self.final_flight.is_some() => {
                    tracing::debug!(%peer, "client retransmitted its Finished: final flight resent");
                    self.resend_final_flight = true;
                }
                _ => tracing::debug!(%peer, content_type, "unexpected record ignored"),
            }
        }
    }

    /// Hands the response to request `id` to the message layer.
    pub(crate) fn respond(&mut self, now: Instant, id: RequestId, response: Packet) {
        if let Some(exchanges) = &mut self.exchanges {
            exchanges.respond(now, id, response);
        }
    }

    /// Runs the message layer's timers and ends the session when it was idle for too long.
    pub(crate) fn handle_timeout(&mut self, config: &SessionConfig, now: Instant) {
        if let Some(exchanges) = &mut self.exchanges {
            exchanges.handle_timeout(now);
        }
        if self.idle_deadline(config).is_some_and(|at| at <= now) {
            self.ending.get_or_insert(Ending::Idle);
        }
    }

    fn idle_deadline(&self, config: &SessionConfig) -> Option<Instant> {
        let idle = self.exchanges.as_ref().is_none_or(|e| e.is_idle());
        idle.then(|| self.last_activity + config.idle_timeout)
    }

    /// When [`handle_timeout`](Self::handle_timeout) must be called next.
    pub(crate) fn poll_timeout(&self, config: &SessionConfig) -> Option<Instant> {
        let exchanges = self.exchanges.as_ref().and_then(|e| e.poll_timeout());
        match (exchanges, self.idle_deadline(config)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The next datagram to send to the client. When there is none, the message layer is
    /// freed if it remembers nothing.
    pub(crate) fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        if std::mem::take(&mut self.resend_final_flight)
            && let Some(flight) = &self.final_flight
        {
            return Some(flight.to_vec());
        }
        let Some(transmit) = self.exchanges.as_mut().and_then(|e| e.poll_transmit()) else {
            if self.exchanges.as_ref().is_some_and(|e| e.is_empty()) {
                self.exchanges = None;
            }
            return None;
        };
        match self.records.seal(APPLICATION_DATA, &transmit.datagram) {
            Ok(record) => Some(record),
            Err(e) => {
                tracing::info!(reason = %e, "cannot protect a response: session ends");
                self.ending.get_or_insert(Ending::Exhausted);
                None
            }
        }
    }

    /// Why the session ends, once it does.
    pub(crate) fn ending(&self) -> Option<Ending> {
        self.ending
    }

    /// A close_notify alert to send as the session ends.
    pub(crate) fn close_notify(&mut self) -> Option<Vec<u8>> {
        self.records.seal(ALERT, &[1, CLOSE_NOTIFY]).ok()
    }

    /// Whether the message layer is allocated (it is not while the session is idle and
    /// remembers no message id).
    #[cfg(test)]
    pub(crate) fn holds_exchanges(&self) -> bool {
        self.exchanges.is_some()
    }
}

#[cfg(test)]
mod tests;
