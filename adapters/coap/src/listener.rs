//! The adapter's ports: binding, and serving them until shutdown.
//!
//! The plain UDP port (only when authentication is not required) is one [`Session`] over the
//! socket: one message layer for all peers, requests processed in their own tasks. The DTLS port
//! is served by [`crate::dtls`]: a task per handshake, established sessions served by its read
//! loop.

use std::net::SocketAddr;
use std::sync::Arc;

use ferry_adapter_core::AdapterContext;
use tokio::net::UdpSocket;

use crate::cert::DtlsCertificate;
use crate::config::CoapConfig;
use crate::dtls::DtlsPort;
use crate::error::CoapError;
use crate::exchange::{ExchangeConfig, Exchanges};
use crate::session::{Session, Shared, Transport};

/// Room for a request's header and options next to its payload in the receive buffer.
pub(crate) const HEADER_ROOM: usize = 1024;

/// Pause after a failed receive on a shared socket, so a persistent error cannot spin a core.
pub(crate) const RECEIVE_ERROR_PAUSE: std::time::Duration = std::time::Duration::from_millis(10);

impl Transport for Arc<UdpSocket> {
    /// Never fails: one socket serves every peer, so receive errors (ICMP errors of earlier
    /// sends, buffer shortages) are logged and the port keeps serving.
    async fn recv(&self, buf: &mut [u8]) -> std::io::Result<(usize, SocketAddr)> {
        loop {
            match self.recv_from(buf).await {
                Ok(r) => return Ok(r),
                Err(e) => {
                    tracing::debug!(error = %e, "CoAP UDP receive error");
                    tokio::time::sleep(RECEIVE_ERROR_PAUSE).await;
                }
            }
        }
    }

    async fn send(&self, peer: SocketAddr, datagram: &[u8]) -> std::io::Result<()> {
        self.send_to(datagram, peer).await.map(|_| ())
    }
}

/// The CoAP adapter, bound and ready to [`run`](CoapAdapter::run).
pub struct CoapAdapter {
    plain: Option<(Arc<UdpSocket>, SocketAddr)>,
    dtls: DtlsPort,
    shared: Arc<Shared>,
    config: CoapConfig,
}

impl std::fmt::Debug for CoapAdapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoapAdapter")
            .field("local_addr", &self.local_addr())
            .field("dtls_local_addr", &self.dtls_local_addr())
            .finish_non_exhaustive()
    }
}

/// Binds a UDP port and asks for a kernel receive buffer of `receive_buffer` bytes (0: the
/// system default). One socket takes every device's datagrams; when the read loop is not
/// scheduled for a moment, a default buffer (about 200 KiB on Linux) overflows at a few
/// thousand requests per second and devices must retransmit.
fn bind_udp(
    addr: SocketAddr,
    receive_buffer: usize,
) -> Result<(Arc<UdpSocket>, SocketAddr), CoapError> {
    use socket2::{Domain, Protocol, Socket, Type};
    let bind = |source| CoapError::Bind { addr, source };
    let socket =
        Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP)).map_err(bind)?;
    socket.set_nonblocking(true).map_err(bind)?;
    if receive_buffer > 0 {
        match socket.set_recv_buffer_size(receive_buffer) {
            // Linux caps the request at net.core.rmem_max (and reports twice the size it keeps).
            Ok(()) => {
                tracing::debug!(%addr, requested = receive_buffer, granted = ?socket.recv_buffer_size().ok(), "UDP receive buffer")
            }
            Err(e) => {
                tracing::warn!(%addr, requested = receive_buffer, error = %e, "cannot set the UDP receive buffer; the system default stays")
            }
        }
    }
    socket.bind(&addr.into()).map_err(bind)?;
    let socket = UdpSocket::from_std(socket.into()).map_err(bind)?;
    let local = socket.local_addr().map_err(bind)?;
    Ok((Arc::new(socket), local))
}

impl CoapAdapter {
    /// Validates `config` and binds the DTLS port and, when authentication is not required,
    /// the plain UDP port.
    ///
    /// `certificate` is the server's ECDSA certificate for the certificate cipher suites; PSK
    /// handshakes do not use it.
    pub async fn bind(
        config: &CoapConfig,
        certificate: Option<DtlsCertificate>,
        ctx: AdapterContext,
    ) -> Result<Self, CoapError> {
        config.validate()?;
        let plain = match config.authentication_required {
            true => None,
            false => Some(bind_udp(config.bind, config.receive_buffer)?),
        };
        let (socket, addr) = bind_udp(config.dtls_bind, config.receive_buffer)?;
        let max_payload_size = config
            .max_payload_size
            .min(ctx.forwarder.max_payload_size());
        Ok(Self {
            plain,
            dtls: DtlsPort {
                socket,
                addr,
                certificate,
            },
            shared: Arc::new(Shared {
                ctx,
                max_payload_size,
            }),
            config: config.clone(),
        })
    }

    /// The bound address of the plain UDP port, if it is open.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.plain.as_ref().map(|(_, addr)| *addr)
    }

    /// The bound address of the DTLS port.
    pub fn dtls_local_addr(&self) -> SocketAddr {
        self.dtls.addr
    }

    /// Serves until the context's shutdown token fires, then stops reading and returns once
    /// every request in flight was answered.
    pub async fn run(self) {
        let exchange = ExchangeConfig {
            timeout_to_ack: self.config.timeout_to_ack,
            ..ExchangeConfig::default()
        };
        let buffer_size = self.shared.max_payload_size + HEADER_ROOM;
        let plain = async {
            if let Some((socket, addr)) = self.plain {
                tracing::debug!(%addr, "CoAP plain UDP port serving");
                Session {
                    transport: socket,
                    shared: Arc::clone(&self.shared),
                    exchanges: Exchanges::new(exchange.clone(), rand_u16()),
                    max_in_flight: self.config.max_peers,
                    buffer_size,
                    stop: self.shared.ctx.shutdown.clone(),
                }
                .run()
                .await;
                tracing::info!(%addr, "CoAP plain UDP port stopped");
            }
        };
        let dtls = self
            .dtls
            .run(Arc::clone(&self.shared), &self.config, exchange.clone());
        tokio::join!(plain, dtls);
        tracing::info!("CoAP adapter stopped");
    }
}

/// A message id to start from, different per session (RFC 7252 §4.4 asks for a random start).
pub(crate) fn rand_u16() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(0);
    (hasher.finish() & 0xffff) as u16
}
