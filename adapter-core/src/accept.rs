//! Accepting connections the same way in every TCP adapter: the plain and the TLS port
//! ([`Ports`]), stop when shutdown starts, back off on accept errors, and take a connection slot
//! only after accepting (so an idle port never holds a slot that another port needs).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::ServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A bound port: plain, or TLS from the first byte.
pub struct Port {
    /// The listening socket.
    pub listener: TcpListener,
    /// Its bound address (the real port when 0 was asked for).
    pub addr: SocketAddr,
    /// The TLS acceptor of a TLS port.
    pub tls: Option<TlsAcceptor>,
}

/// Why an adapter's ports could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum PortsError {
    /// A port could not be bound.
    #[error("cannot bind {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// Neither port was asked for.
    #[error("the insecure port is disabled and no TLS configuration was given")]
    NoPort,
}

/// The plain and the TLS port of an adapter; at least one is open.
pub struct Ports {
    insecure: Option<Port>,
    secure: Option<Port>,
}

impl Ports {
    /// Binds the plain port at `insecure` and the TLS port at `secure`, each if given.
    pub async fn bind(
        insecure: Option<SocketAddr>,
        secure: Option<(SocketAddr, Arc<ServerConfig>)>,
    ) -> Result<Self, PortsError> {
        let insecure = match insecure {
            Some(addr) => Some(bind_port(addr, None).await?),
            None => None,
        };
        let secure = match secure {
            Some((addr, tls)) => Some(bind_port(addr, Some(TlsAcceptor::from(tls))).await?),
            None => None,
        };
        if insecure.is_none() && secure.is_none() {
            return Err(PortsError::NoPort);
        }
        Ok(Self { insecure, secure })
    }

    /// The bound address of the plain port, if it is open.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.insecure.as_ref().map(|p| p.addr)
    }

    /// The bound address of the TLS port, if it is open.
    pub fn tls_local_addr(&self) -> Option<SocketAddr> {
        self.secure.as_ref().map(|p| p.addr)
    }

    /// Runs `accept_loop` on every open port, concurrently, with a tracker for the connection
    /// tasks it spawns; returns once every loop returned and every tracked task ended.
    pub async fn serve<F>(self, mut accept_loop: impl FnMut(Port, TaskTracker) -> F)
    where
        F: Future<Output = ()>,
    {
        let tracker = TaskTracker::new();
        let mut start = |port: Port| accept_loop(port, tracker.clone());
        let insecure = self.insecure.map(&mut start);
        let secure = self.secure.map(&mut start);
        tokio::join!(
            async {
                if let Some(f) = insecure {
                    f.await;
                }
            },
            async {
                if let Some(f) = secure {
                    f.await;
                }
            }
        );
        tracker.close();
        tracker.wait().await;
    }
}

async fn bind_port(addr: SocketAddr, tls: Option<TlsAcceptor>) -> Result<Port, PortsError> {
    let bind_error = |source| PortsError::Bind { addr, source };
    let listener = TcpListener::bind(addr).await.map_err(bind_error)?;
    let addr = listener.local_addr().map_err(bind_error)?;
    Ok(Port {
        listener,
        addr,
        tls,
    })
}

/// How long to wait after a failed `accept` (out of file descriptors and the like).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The next accepted connection, or `None` once `shutdown` is cancelled.
pub async fn next_connection(
    listener: &TcpListener,
    shutdown: &CancellationToken,
) -> Option<(TcpStream, SocketAddr)> {
    loop {
        let accepted = tokio::select! {
            biased;
            () = shutdown.cancelled() => return None,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok(accepted) => return Some(accepted),
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::select! {
                    () = shutdown.cancelled() => return None,
                    () = tokio::time::sleep(ACCEPT_BACKOFF) => {}
                }
            }
        }
    }
}

/// Waits for a free connection slot, or `None` once `shutdown` is cancelled (or the limit closed).
pub async fn connection_slot(
    slots: &Arc<Semaphore>,
    shutdown: &CancellationToken,
) -> Option<OwnedSemaphorePermit> {
    tokio::select! {
        biased;
        () = shutdown.cancelled() => None,
        permit = Arc::clone(slots).acquire_owned() => permit.ok(),
    }
}
