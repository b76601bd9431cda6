//! One keep-alive HTTP/1.1 connection of a simulated device, run by the task that uses it: one
//! request in flight at a time (as a device sends), encoded into the send buffer and written at
//! once, its response cut in place from the receive buffer and matched to the request's send
//! time. A response that says `Connection: close` ends the connection ([`Connection::ended`]).

use std::time::Instant;

use tokio::io::{AsyncRead, AsyncWrite};

use super::codec::{self, RequestHead};
use super::error::HttpError;
use crate::net::wire::Wire;

/// A connected client.
#[derive(Debug)]
pub struct Connection<S> {
    wire: Wire<S>,
    /// Send time of the request waiting for its response.
    in_flight: Option<Instant>,
    /// The server said it closes the connection after its last response.
    ended: bool,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    /// Wraps a connected stream.
    pub fn new(stream: S) -> Self {
        Self {
            wire: Wire::new(stream),
            in_flight: None,
            ended: false,
        }
    }

    /// Whether a request may be encoded now: none is in flight and the server keeps the
    /// connection.
    pub fn can_send(&self) -> bool {
        self.in_flight.is_none() && !self.ended
    }

    /// The send time of the request in flight.
    pub fn in_flight(&self) -> Option<Instant> {
        self.in_flight
    }

    /// Whether the server ended the connection with its last response.
    pub fn ended(&self) -> bool {
        self.ended
    }

    /// Encodes a request (`head`, `payload` as its body) for the next write; its response will
    /// be matched to `sent`. The caller asks [`Connection::can_send`] first.
    pub fn send(&mut self, head: &RequestHead, payload: &[u8], sent: Instant) {
        head.encode(&mut self.wire.out, payload);
        self.in_flight = Some(sent);
    }

    /// Whether a request waits to be written.
    pub fn has_output(&self) -> bool {
        !self.wire.out.is_empty()
    }

    /// Writes (and flushes) the encoded request.
    pub async fn write(&mut self) -> Result<(), HttpError> {
        Ok(self.wire.write().await?)
    }

    /// Reads what the server sent next (cancel safe); the end of the stream is an error.
    pub async fn read(&mut self) -> Result<(), HttpError> {
        Ok(self.wire.read().await?)
    }

    /// Handles the response received so far, if it is complete: its status with its request's
    /// send time. A response without a request, or after the server ended the connection, is
    /// an error.
    pub fn process(&mut self) -> Result<Option<(Instant, u16)>, HttpError> {
        if self.ended && !self.wire.received.is_empty() {
            return Err(HttpError::Unexpected);
        }
        let Some(response) = codec::next_response(&mut self.wire.received)? else {
            return Ok(None);
        };
        let sent = self.in_flight.take().ok_or(HttpError::Unexpected)?;
        self.ended = response.close;
        Ok(Some((sent, response.status)))
    }

    /// Sends one request and waits for its response's status (the caller bounds how long).
    /// Anything after the response is an error.
    pub async fn exchange(&mut self, head: &RequestHead, payload: &[u8]) -> Result<u16, HttpError> {
        self.send(head, payload, Instant::now());
        self.write().await?;
        loop {
            if let Some((_, status)) = self.process()? {
                if !self.wire.received.is_empty() {
                    return Err(HttpError::Unexpected);
                }
                return Ok(status);
            }
            self.read().await?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    #[tokio::test]
    async fn a_request_gets_its_status_and_connection_close_ends_the_connection()
    -> Result<(), HttpError> {
        let (client, mut server) = tokio::io::duplex(64 * 1024);
        let mut connection = Connection::new(client);
        let head = RequestHead::post("/telemetry", "h", Some(("u", "p")), &[]);
        let t0 = Instant::now();
        connection.send(&head, b"x", t0);
        assert!(!connection.can_send());
        connection.write().await?;
        let mut request = [0u8; 256];
        let n = server.read(&mut request).await?;
        assert!(request[..n].ends_with(b"Content-Length: 1\r\n\r\nx"));
        server
            .write_all(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
            .await?;
        connection.read().await?;
        assert_eq!(connection.process()?, Some((t0, 503)));
        assert!(connection.can_send());
        let exchanged = async {
            let mut request = [0u8; 256];
            let _ = server.read(&mut request).await?;
            server
                .write_all(
                    b"HTTP/1.1 202 Accepted\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
                )
                .await?;
            Ok::<_, std::io::Error>(server)
        };
        let (status, server) = tokio::join!(connection.exchange(&head, b"y"), exchanged);
        assert_eq!(status?, 202);
        assert!(connection.ended() && !connection.can_send());
        // Nothing may follow; the end of the stream is an error.
        drop(server?);
        let closed = connection.read().await;
        assert_eq!(closed.map_err(|e| e.kind()), Err("http connection closed"));
        Ok(())
    }

    #[tokio::test]
    async fn a_response_nobody_asked_for_is_an_error() -> Result<(), HttpError> {
        let (client, mut server) = tokio::io::duplex(1024);
        let mut connection = Connection::new(client);
        server
            .write_all(b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n")
            .await?;
        connection.read().await?;
        assert_eq!(
            connection.process().map_err(|e| e.kind()),
            Err("http unexpected response")
        );
        Ok(())
    }
}
