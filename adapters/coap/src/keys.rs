//! The keys of an established DTLS 1.2 session, taken over from webrtc-dtls after its handshake.
//!
//! webrtc-dtls runs the handshake only. Its `State::marshal_binary` serialises (bincode) the
//! negotiated cipher suite, both randoms, the master secret and the server's next sequence number;
//! [`Negotiated::from_state`] reads that and expands the key block itself (RFC 5246 §6.3, with
//! the TLS 1.2 PRF over HMAC-SHA256 of §5). All suites the port offers are AEAD suites with no
//! MAC keys, 16-byte AES keys and 4-byte implicit IVs (RFC 5288 §3, RFC 6655 §3).

use ring::hmac;
use serde::Deserialize;

/// The record protection of a negotiated cipher suite.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Aead {
    /// AES-128-GCM, 16-byte tag (`TLS_*_WITH_AES_128_GCM_SHA256`).
    Aes128Gcm,
    /// AES-128-CCM, 16-byte tag (`TLS_*_WITH_AES_128_CCM`).
    Aes128Ccm,
    /// AES-128-CCM, 8-byte tag (`TLS_*_WITH_AES_128_CCM_8`).
    Aes128Ccm8,
}

impl Aead {
    /// The protection of cipher suite `id`, if it is one the port implements.
    pub(crate) fn of_suite(id: u16) -> Option<Self> {
        match id {
            0x00a8 | 0xc02b => Some(Self::Aes128Gcm),
            0xc0a4 | 0xc0ac => Some(Self::Aes128Ccm),
            0xc0a8 | 0xc0ae => Some(Self::Aes128Ccm8),
            _ => None,
        }
    }

    /// Length of the authentication tag at the end of each record.
    pub(crate) fn tag_len(self) -> usize {
        match self {
            Self::Aes128Gcm | Self::Aes128Ccm => 16,
            Self::Aes128Ccm8 => 8,
        }
    }
}

/// Write keys and implicit IVs of both sides.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SessionKeys {
    pub(crate) aead: Aead,
    pub(crate) client_key: [u8; 16],
    pub(crate) server_key: [u8; 16],
    pub(crate) client_iv: [u8; 4],
    pub(crate) server_iv: [u8; 4],
}

/// What the server side of a finished handshake hands over.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Negotiated {
    pub(crate) keys: SessionKeys,
    /// The server's next record sequence number in epoch 1 (its Finished used the first ones).
    pub(crate) next_sequence: u64,
}

/// Why a handshake's state cannot be taken over.
#[derive(Debug, thiserror::Error)]
pub(crate) enum KeysError {
    #[error("unreadable session state: {0}")]
    Decode(#[from] bincode::Error),
    #[error("cipher suite {0:#06x} is not implemented by the record layer")]
    Suite(u16),
    #[error("session state is not a server's in epoch 1 (epochs {local}/{remote})")]
    NotEstablished { local: u16, remote: u16 },
}

/// webrtc-dtls 0.12's `SerializedState`, field by field in its order (bincode has no names).
#[derive(Deserialize)]
struct SerializedState {
    local_epoch: u16,
    remote_epoch: u16,
    local_random: [u8; 32],
    remote_random: [u8; 32],
    cipher_suite_id: u16,
    master_secret: Vec<u8>,
    sequence_number: u64,
    _srtp_protection_profile: u16,
    _peer_certificates: Vec<Vec<u8>>,
    _identity_hint: Vec<u8>,
    is_client: bool,
}

impl Negotiated {
    /// Reads the server's `State::marshal_binary()` of a finished handshake.
    pub(crate) fn from_state(marshalled: &[u8]) -> Result<Self, KeysError> {
        let state: SerializedState = bincode::deserialize(marshalled)?;
        if state.local_epoch != 1 || state.remote_epoch != 1 || state.is_client {
            return Err(KeysError::NotEstablished {
                local: state.local_epoch,
                remote: state.remote_epoch,
            });
        }
        let aead =
            Aead::of_suite(state.cipher_suite_id).ok_or(KeysError::Suite(state.cipher_suite_id))?;
        // The server is the local side: its random is the server random.
        let keys = expand(
            aead,
            &state.master_secret,
            &state.remote_random,
            &state.local_random,
        );
        Ok(Self {
            keys,
            next_sequence: state.sequence_number,
        })
    }
}

/// The key block for an AEAD suite: client key, server key, client IV, server IV (RFC 5246
/// §6.3, the MAC keys being empty).
pub(crate) fn expand(
    aead: Aead,
    master_secret: &[u8],
    client_random: &[u8],
    server_random: &[u8],
) -> SessionKeys {
    let mut block = [0u8; 40];
    prf_sha256(
        master_secret,
        &[b"key expansion", server_random, client_random],
        &mut block,
    );
    let mut keys = SessionKeys {
        aead,
        client_key: [0; 16],
        server_key: [0; 16],
        client_iv: [0; 4],
        server_iv: [0; 4],
    };
    let (client_key, rest) = block.split_at(16);
    let (server_key, rest) = rest.split_at(16);
    let (client_iv, server_iv) = rest.split_at(4);
    keys.client_key.copy_from_slice(client_key);
    keys.server_key.copy_from_slice(server_key);
    keys.client_iv.copy_from_slice(client_iv);
    keys.server_iv.copy_from_slice(server_iv);
    keys
}

/// The TLS 1.2 PRF with SHA-256 (RFC 5246 §5): `P_SHA256(secret, label + seed)` into `out`,
/// the label and seed given as the parts of one seed.
fn prf_sha256(secret: &[u8], seed: &[&[u8]], out: &mut [u8]) {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let sign = |first: &[u8], with_seed: bool| {
        let mut ctx = hmac::Context::with_key(&key);
        ctx.update(first);
        if with_seed {
            seed.iter().for_each(|part| ctx.update(part));
        }
        ctx.sign()
    };
    // A(1) = HMAC(secret, seed); A(i) = HMAC(secret, A(i-1)).
    let mut a = sign(&[], true);
    for chunk in out.chunks_mut(32) {
        let block = sign(a.as_ref(), true);
        chunk.copy_from_slice(block.as_ref().get(..chunk.len()).unwrap_or_default());
        a = sign(a.as_ref(), false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Serialize;

    /// A published TLS 1.2 PRF (SHA-256) test vector (IETF TLS WG, "TLS 1.2 PRF test vectors").
    #[test]
    fn the_prf_matches_the_published_vector() {
        let secret = hex("9bbe436ba940f017b17652849a71db35");
        let seed = hex("a0ba9f936cda311827a6f796ffd5198c");
        let mut out = [0u8; 100];
        prf_sha256(&secret, &[b"test label", &seed], &mut out);
        let expected = hex(concat!(
            "e3f229ba727be17b8d122620557cd453c2aab21d07c3d495329b52d4e61edb5a",
            "6b301791e90d35c9c9a46b4e14baf9af0fa022f7077def17abfd3797c0564bab",
            "4fbc91666e9def9b97fce34f796789baa48082d122ee42c5a72e5a5110fff701",
            "87347b66"
        ));
        assert_eq!(out.to_vec(), expected);
    }

    pub(crate) fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .filter_map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
            .collect()
    }

    /// The same layout webrtc-dtls serialises (checked against its real output in
    /// `state_of_a_real_handshake_is_read` of the session tests).
    #[derive(Serialize)]
    struct Mirror {
        local_epoch: u16,
        remote_epoch: u16,
        local_random: [u8; 32],
        remote_random: [u8; 32],
        cipher_suite_id: u16,
        master_secret: Vec<u8>,
        sequence_number: u64,
        srtp: u16,
        peer_certificates: Vec<Vec<u8>>,
        identity_hint: Vec<u8>,
        is_client: bool,
    }

    fn state(suite: u16, epochs: (u16, u16), is_client: bool) -> Vec<u8> {
        bincode::serialize(&Mirror {
            local_epoch: epochs.0,
            remote_epoch: epochs.1,
            local_random: [2; 32],
            remote_random: [1; 32],
            cipher_suite_id: suite,
            master_secret: vec![7; 48],
            sequence_number: 1,
            srtp: 0,
            peer_certificates: vec![vec![1, 2, 3]],
            identity_hint: vec![],
            is_client,
        })
        .unwrap_or_default()
    }

    #[test]
    fn a_server_state_gives_the_suite_keys_and_sequence() -> Result<(), KeysError> {
        let negotiated = Negotiated::from_state(&state(0xc0a8, (1, 1), false))?;
        assert_eq!(negotiated.next_sequence, 1);
        assert_eq!(negotiated.keys.aead, Aead::Aes128Ccm8);
        assert_eq!(
            negotiated.keys,
            expand(Aead::Aes128Ccm8, &[7; 48], &[1; 32], &[2; 32])
        );
        assert_ne!(negotiated.keys.client_key, negotiated.keys.server_key);
        assert!(matches!(
            Negotiated::from_state(&state(0xc00a, (1, 1), false)),
            Err(KeysError::Suite(0xc00a))
        ));
        assert!(Negotiated::from_state(&state(0xc0a8, (0, 0), false)).is_err());
        assert!(Negotiated::from_state(&state(0xc0a8, (1, 1), true)).is_err());
        assert!(Negotiated::from_state(&[1, 2, 3]).is_err());
        Ok(())
    }
}
