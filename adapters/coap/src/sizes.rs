//! Per-peer memory, measured: `cargo test -p ferry-adapter-coap per_peer_sizes -- --nocapture`.

use std::mem::size_of;

use crate::dtls::{PeerConn, PeerHandle, PskSlot};
use crate::exchange::Exchanges;

#[test]
fn per_peer_sizes() {
    let sizes = [
        ("peer table entry (PeerHandle)", size_of::<PeerHandle>()),
        ("peer transport (PeerConn)", size_of::<PeerConn>()),
        ("PSK slot", size_of::<PskSlot>()),
        ("message layer (Exchanges), empty", size_of::<Exchanges>()),
        (
            "webrtc-dtls DTLSConn",
            size_of::<webrtc_dtls::conn::DTLSConn>(),
        ),
        ("webrtc-dtls receive buffer (heap)", 8192),
    ];
    for (what, bytes) in sizes {
        println!("{what:<40} {bytes:>6} bytes");
    }
    // The read loop's entry stays a few words; the message layer allocates nothing until used.
    assert!(size_of::<PeerHandle>() <= 48);
    assert!(size_of::<Exchanges>() <= 512);
}
