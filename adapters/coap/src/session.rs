//! The plain UDP port at work: the message layer ([`Exchanges`]) driven over a [`Transport`],
//! each new request processed in its own task ([`answer`], which the DTLS port uses as well),
//! and its response handed back to the message layer.
//!
//! The loop owns all state, so nothing here needs a lock: it waits for a datagram, a finished
//! request, the message layer's next timeout or shutdown, and after each step sends what the
//! message layer queued. On shutdown it stops reading, lets the requests in flight finish and
//! sends their responses.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use coap_lite::{CoapOption, MessageClass, Packet, ResponseType};
use ferry_adapter_core::{AdapterContext, AuthenticatedDevice, Upload};
use ferry_registry_client::{DeviceId, TenantId};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::error::RequestError;
use crate::exchange::{Exchanges, Incoming, RequestId};
use crate::request::{Target, UploadRequest};

/// What every request handler of the adapter shares.
#[derive(Debug)]
pub(crate) struct Shared {
    /// The device pipeline.
    pub(crate) ctx: AdapterContext,
    /// Largest accepted payload.
    pub(crate) max_payload_size: usize,
}

/// Where a session reads and writes datagrams.
pub(crate) trait Transport: Send + Sync + 'static {
    /// Reads the next datagram into `buf`.
    fn recv(&self, buf: &mut [u8]) -> impl Future<Output = io::Result<(usize, SocketAddr)>> + Send;
    /// Sends one datagram to `peer`.
    fn send(
        &self,
        peer: SocketAddr,
        datagram: &[u8],
    ) -> impl Future<Output = io::Result<()>> + Send;
}

/// A message layer and its transport, serving unauthenticated devices.
pub(crate) struct Session<T> {
    pub(crate) transport: T,
    pub(crate) shared: Arc<Shared>,
    pub(crate) exchanges: Exchanges,
    /// Requests processed at once; further requests get 5.03.
    pub(crate) max_in_flight: usize,
    /// Size of the receive buffer (larger datagrams are truncated and refused).
    pub(crate) buffer_size: usize,
    /// Stop reading and finish (the shutdown token).
    pub(crate) stop: CancellationToken,
}

impl<T: Transport> Session<T> {
    /// Serves until shutdown or a transport failure.
    pub(crate) async fn run(self) {
        let Session {
            transport,
            shared,
            mut exchanges,
            max_in_flight,
            buffer_size,
            stop,
        } = self;
        let mut buf = vec![0u8; buffer_size];
        let mut tasks: JoinSet<(RequestId, Packet)> = JoinSet::new();
        let mut stopping = false;
        loop {
            while let Some(t) = exchanges.poll_transmit() {
                if let Err(e) = transport.send(t.peer, &t.datagram).await {
                    tracing::debug!(peer = %t.peer, error = %e, "cannot send a datagram");
                }
            }
            if stopping && tasks.is_empty() {
                break;
            }
            let timeout = exchanges.poll_timeout().map(Instant::from_std);
            tokio::select! {
                () = stop.cancelled(), if !stopping => stopping = true,
                Some(done) = tasks.join_next() => match done {
                    Ok((id, response)) => exchanges.respond(Instant::now().into_std(), id, response),
                    Err(e) => tracing::error!(error = %e, "CoAP request task failed"),
                },
                () = sleep_until(timeout), if timeout.is_some() => {
                    exchanges.handle_timeout(Instant::now().into_std());
                }
                received = transport.recv(&mut buf), if !stopping => {
                    let (n, peer) = match received {
                        Ok(r) => r,
                        Err(e) => {
                            // Finish what is in flight, then end.
                            tracing::debug!(error = %e, "transport closed");
                            stopping = true;
                            continue;
                        }
                    };
                    let now = Instant::now().into_std();
                    let datagram = buf.get(..n).unwrap_or_default();
                    let Some(incoming) = exchanges.handle(now, peer, datagram) else {
                        continue;
                    };
                    if tasks.len() >= max_in_flight {
                        exchanges.respond(now, incoming.id, refusal(&RequestError::Busy));
                        continue;
                    }
                    tasks.spawn(answer(Arc::clone(&shared), None, incoming));
                }
            }
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Processes one request and builds its response.
pub(crate) async fn answer(
    shared: Arc<Shared>,
    sender: Option<Arc<AuthenticatedDevice>>,
    mut incoming: Incoming,
) -> (RequestId, Packet) {
    let mut who = Who::default();
    let response = match upload(&shared, sender.as_deref(), &mut incoming, &mut who).await {
        Ok(()) => {
            let mut p = Packet::new();
            p.header.code = MessageClass::Response(ResponseType::Changed);
            p
        }
        Err(e) => {
            tracing::info!(
                peer = %incoming.peer,
                tenant = who.tenant.as_ref().map_or("-", TenantId::as_str),
                device = who.device.as_ref().map_or("-", DeviceId::as_str),
                path = who.path,
                code = ?e.code(),
                reason = %e,
                "request refused"
            );
            refusal(&e)
        }
    };
    (incoming.id, response)
}

/// Tenant, device and path of a request as far as they are known, for the log line of a refusal.
#[derive(Default)]
struct Who {
    tenant: Option<TenantId>,
    device: Option<DeviceId>,
    path: String,
}

/// The error response: its code, a diagnostic payload, and Size1 for 4.13.
pub(crate) fn refusal(error: &RequestError) -> Packet {
    let mut p = Packet::new();
    p.header.code = MessageClass::Response(error.code());
    p.payload = error.client_message().into_owned().into_bytes();
    p.add_option(CoapOption::ContentFormat, Vec::new());
    if let RequestError::PayloadTooLarge { max } = error {
        let max = u32::try_from(*max).unwrap_or(u32::MAX);
        let bytes = max.to_be_bytes();
        let first = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
        p.add_option(
            CoapOption::Size1,
            bytes.get(first..).unwrap_or_default().to_vec(),
        );
    }
    p
}

async fn upload(
    shared: &Shared,
    sender: Option<&AuthenticatedDevice>,
    incoming: &mut Incoming,
    who: &mut Who,
) -> Result<(), RequestError> {
    let max = shared.max_payload_size;
    if incoming.packet.payload.len() > max {
        return Err(RequestError::PayloadTooLarge { max });
    }
    if let Some(sender) = sender {
        who.tenant = Some(sender.tenant_id.clone());
        who.device = Some(sender.device_id.clone());
    }
    let request = UploadRequest::parse(&incoming.packet, incoming.confirmable)?;
    who.path.clone_from(&request.path);
    let (tenant, device) = match (request.target, sender) {
        (Target::Own, None) => return Err(RequestError::CredentialsRequired),
        (Target::Own, Some(s)) => (s.tenant_id.clone(), s.device_id.clone()),
        (Target::Device { tenant, device }, Some(s)) => {
            (tenant.unwrap_or_else(|| s.tenant_id.clone()), device)
        }
        (Target::Device { tenant: None, .. }, None) => return Err(RequestError::TenantRequired),
        (
            Target::Device {
                tenant: Some(t),
                device,
            },
            None,
        ) => (t, device),
    };
    who.tenant = Some(tenant.clone());
    who.device = Some(device.clone());
    let upload = Upload {
        endpoint: request.endpoint,
        qos: request.qos,
        content_type: request.content_type,
        ttl: None,
        ttd: request.ttd,
        orig_address: request.path,
        retain: false,
        payload: std::mem::take(&mut incoming.packet.payload).into(),
    };
    shared
        .ctx
        .forwarder
        .forward(sender, &tenant, &device, upload)
        .await?;
    Ok(())
}
