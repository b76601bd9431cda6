//! Per-peer memory, measured: `cargo test -p ferry-adapter-coap per_peer_sizes -- --nocapture`.

use std::mem::size_of;

use crate::dtls::{Handshaking, Peer};
use crate::established::Established;
use crate::exchange::Exchanges;
use crate::handshaking::{PeerConn, PskSlot};

#[test]
fn per_peer_sizes() {
    let sizes = [
        ("peer table entry (Peer)", size_of::<Peer>()),
        ("established session (boxed)", size_of::<Established>()),
        (
            "timer entry (Instant, SocketAddr)",
            size_of::<(std::time::Instant, std::net::SocketAddr)>(),
        ),
        (
            "message layer (Exchanges), boxed while used",
            size_of::<Exchanges>(),
        ),
        ("handshake: table entry (boxed)", size_of::<Handshaking>()),
        (
            "handshake: peer transport (PeerConn)",
            size_of::<PeerConn>(),
        ),
        ("handshake: PSK slot", size_of::<PskSlot>()),
        (
            "handshake: webrtc-dtls DTLSConn",
            size_of::<webrtc_dtls::conn::DTLSConn>(),
        ),
    ];
    for (what, bytes) in sizes {
        println!("{what:<45} {bytes:>6} bytes");
    }
    // The read loop's entry stays a few words; an idle session's own state a few hundred bytes.
    assert!(size_of::<Peer>() <= 16);
    assert!(size_of::<Established>() <= 256);
    assert!(size_of::<Exchanges>() <= 512);
}
