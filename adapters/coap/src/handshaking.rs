//! One peer's handshake, in a task of its own: webrtc-dtls's `DTLSConn` over the peer's queue of
//! datagrams ([`PeerConn`]) under the port's handshake timeout, then the device it
//! authenticated, then the handover: the session's keys and sequence numbers leave webrtc-dtls,
//! which is dropped without sending anything, for the port's read loop ([`Handover`]).
//!
//! **PSK.** The key of the identity `auth-id@tenant` comes from the device's `psk` credentials.
//! webrtc-dtls asks for it in a synchronous callback while it processes the ClientKeyExchange.
//! [`PeerConn`] sees every datagram before webrtc-dtls does: when one carries a
//! ClientKeyExchange ([`record::psk_identity`]), it resolves the identity through the cached
//! registry (`Authenticator::psk_key`, awaited in this task only) and stores the answer in the
//! peer's [`PskSlot`], then hands the datagram on. The callback reads the slot. (In DTLS 1.2 the
//! identity is first sent in the ClientKeyExchange, not in the ClientHello.)
//!
//! **Handover.** [`PeerConn`] also prepares the session's start:
//! - it keeps the last datagram webrtc-dtls sent that starts with a ChangeCipherSpec: the
//!   server's final flight, which the session resends when the client retransmits its Finished
//!   (webrtc-dtls itself no longer answers retransmissions once its handshake returned);
//! - it never passes application data to webrtc-dtls: a client may send its first request right
//!   after its Finished, before the handover; such datagrams are kept and handed over;
//! - once the handover starts, it sends nothing more (the sequence numbers are the session's
//!   now) and keeps every datagram.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use ferry_adapter_core::{AuthenticatedDevice, Authenticator, PskKey};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use webrtc_dtls::conn::DTLSConn;
use webrtc_util::conn::Conn;

use crate::cert::DtlsCertificate;
use crate::handshake::{Method, SessionRefused, authenticate, certificate_config, psk_config};
use crate::keys::{KeysError, Negotiated};
use crate::protection::{APPLICATION_DATA, CHANGE_CIPHER_SPEC, RecordLayer};
use crate::record;

/// What a finished handshake hands to the port's read loop.
pub(crate) struct Handover {
    pub(crate) device: AuthenticatedDevice,
    pub(crate) records: RecordLayer,
    /// The server's last handshake datagram (ChangeCipherSpec + Finished).
    pub(crate) final_flight: Option<Box<[u8]>>,
    /// Datagrams for the session that arrived before the handover, in order.
    pub(crate) early: Vec<Bytes>,
    /// The rest of the peer's queue: the port drains it once it serves the session.
    pub(crate) queue: Option<mpsc::Receiver<Bytes>>,
}

/// Why a handshake did not give a session.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HandshakeError {
    #[error("certificate handshake refused: the port has no server certificate")]
    NoCertificate,
    #[error("handshake timed out")]
    Timeout,
    #[error("handshake failed: {0}")]
    Dtls(#[from] webrtc_dtls::Error),
    #[error("peer not authenticated: {0}")]
    Refused(#[from] SessionRefused),
    #[error("cannot take the session over: {0}")]
    Keys(#[from] KeysError),
}

/// What every handshake of a port shares.
pub(crate) struct HandshakeSettings {
    pub(crate) socket: Arc<UdpSocket>,
    pub(crate) authenticator: Authenticator,
    /// For the certificate cipher suites; without it, certificate handshakes are refused.
    pub(crate) certificate: Option<DtlsCertificate>,
    pub(crate) timeout: Duration,
}

/// Runs the handshake of `peer` over its queue `rx` and hands the session over.
pub(crate) async fn handshake(
    settings: &HandshakeSettings,
    peer: SocketAddr,
    method: Method,
    rx: mpsc::Receiver<Bytes>,
) -> Result<Handover, HandshakeError> {
    let psk = Arc::new(PskSlot::default());
    let config = match (method, &settings.certificate) {
        (Method::Psk, _) => psk_config(Arc::clone(&psk)),
        (Method::Certificate, Some(certificate)) => certificate_config(certificate),
        (Method::Certificate, None) => return Err(HandshakeError::NoCertificate),
    };
    let conn = Arc::new(PeerConn {
        socket: Arc::clone(&settings.socket),
        peer,
        rx: tokio::sync::Mutex::new(Some(rx)),
        psk: Arc::clone(&psk),
        authenticator: settings.authenticator.clone(),
        kept: Mutex::default(),
        handing_over: AtomicBool::new(false),
    });
    let work = async {
        // Boxed: a future awaited inline would make this task as large as webrtc-dtls's.
        let dtls = Box::pin(DTLSConn::new(
            Arc::clone(&conn) as Arc<dyn Conn + Send + Sync>,
            config,
            false,
            None,
        ))
        .await?;
        let authenticated =
            Box::pin(authenticate(method, &dtls, &psk, &settings.authenticator)).await;
        let device = match authenticated {
            Ok(device) => device,
            Err(refused) => {
                let _ = dtls.close().await;
                return Err(refused.into());
            }
        };
        conn.handing_over.store(true, Ordering::SeqCst);
        let state = dtls.connection_state().await.marshal_binary().await?;
        drop(dtls);
        let negotiated = Negotiated::from_state(&state)?;
        // Waits for webrtc-dtls's reader task to let go of the queue (it ends with the conn).
        let queue = conn.rx.lock().await.take();
        let kept = std::mem::take(&mut *conn.kept.lock().unwrap_or_else(PoisonError::into_inner));
        Ok(Handover {
            device,
            records: RecordLayer::new(negotiated.keys, negotiated.next_sequence),
            final_flight: kept.final_flight,
            early: kept.early,
            queue,
        })
    };
    tokio::time::timeout(settings.timeout, work)
        .await
        .map_err(|_| HandshakeError::Timeout)?
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

/// What [`PeerConn`] keeps for the handover.
#[derive(Default)]
struct Kept {
    final_flight: Option<Box<[u8]>>,
    early: Vec<Bytes>,
}

/// One peer's datagrams as a webrtc-util `Conn` during its handshake: reads from the peer's
/// queue (resolving a PSK identity on the way), writes to the shared socket.
pub(crate) struct PeerConn {
    socket: Arc<UdpSocket>,
    peer: SocketAddr,
    rx: tokio::sync::Mutex<Option<mpsc::Receiver<Bytes>>>,
    psk: Arc<PskSlot>,
    authenticator: Authenticator,
    kept: Mutex<Kept>,
    handing_over: AtomicBool,
}

impl PeerConn {
    /// The next datagram for webrtc-dtls; application data (and, during the handover,
    /// everything) is kept for the session instead.
    async fn next_datagram(&self) -> Bytes {
        let mut rx = self.rx.lock().await;
        loop {
            // The port stopped (or the queue was handed over): wait until the connection is
            // dropped (an error here would make webrtc-dtls's reader loop spin).
            let Some(datagram) = rx.as_mut() else {
                return std::future::pending().await;
            };
            let Some(datagram) = datagram.recv().await else {
                return std::future::pending().await;
            };
            if self.handing_over.load(Ordering::SeqCst)
                || datagram.first() == Some(&APPLICATION_DATA)
            {
                let mut kept = self.kept.lock().unwrap_or_else(PoisonError::into_inner);
                kept.early.push(datagram);
                continue;
            }
            return datagram;
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

    async fn send_datagram(&self, datagram: &[u8]) -> std::io::Result<usize> {
        if self.handing_over.load(Ordering::SeqCst) {
            return Ok(datagram.len());
        }
        if datagram.first() == Some(&CHANGE_CIPHER_SPEC) {
            let mut kept = self.kept.lock().unwrap_or_else(PoisonError::into_inner);
            kept.final_flight = Some(datagram.into());
        }
        self.socket.send_to(datagram, self.peer).await
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
        Ok(self.send_datagram(buf).await?)
    }

    async fn send_to(&self, buf: &[u8], _target: SocketAddr) -> UtilResult<usize> {
        Ok(self.send_datagram(buf).await?)
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
