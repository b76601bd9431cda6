//! Tests of the chunked decoder, whole and byte by byte.

use super::*;

type TestResult = Result<(), Box<dyn std::error::Error>>;

const BODY: &[u8] =
    b"4;ext=1\r\nWiki\r\n5 \r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nx-trailer: 1\r\n\r\nNEXT";

/// Decodes `input` fed in pieces of `step` bytes; the body and what is left.
fn decode_in_steps(
    input: &[u8],
    step: usize,
    max: usize,
) -> Result<(Vec<u8>, Vec<u8>), ChunkedError> {
    let mut decoder = ChunkedDecoder::new(max);
    let (mut buffer, mut out) = (BytesMut::new(), BytesMut::new());
    let mut fed = 0;
    for piece in input.chunks(step) {
        buffer.extend_from_slice(piece);
        fed += piece.len();
        if decoder.decode(&mut buffer, &mut out)? {
            let mut left = buffer.to_vec();
            left.extend_from_slice(&input[fed..]);
            return Ok((out.to_vec(), left));
        }
    }
    Err(ChunkedError::Malformed("incomplete"))
}

#[test]
fn whole_and_piecewise_input_decode_alike() -> TestResult {
    for step in [BODY.len(), 1, 2, 3, 7] {
        let (body, rest) = decode_in_steps(BODY, step, 1024)?;
        assert_eq!(body, b"Wikipedia in\r\n\r\nchunks.", "step {step}");
        assert_eq!(rest, b"NEXT", "step {step}");
    }
    let (body, rest) = decode_in_steps(b"0\r\n\r\n", 1, 10)?;
    assert!(body.is_empty() && rest.is_empty());
    Ok(())
}

#[test]
fn limits_and_broken_codings() {
    assert_eq!(
        decode_in_steps(BODY, 1, 8).err(),
        Some(ChunkedError::TooLarge)
    );
    assert_eq!(
        decode_in_steps(b"10000000000000000\r\n", 64, 8).err(),
        Some(ChunkedError::Malformed("invalid chunk size"))
    );
    for bad in [
        &b"x\r\n"[..],
        b"4 4\r\nWiki\r\n0\r\n\r\n",
        b"4\r\nWikiXX0\r\n\r\n",
        b"4\nWiki\r\n0\r\n\r\n",
        b"\r\n",
    ] {
        assert!(
            matches!(decode_in_steps(bad, 1, 64), Err(ChunkedError::Malformed(_))),
            "{bad:?}"
        );
    }
    let long_line = [&b"4;"[..], &[b'e'; MAX_SIZE_LINE]].concat();
    assert_eq!(
        decode_in_steps(&long_line, 512, 64).err(),
        Some(ChunkedError::Malformed("chunk-size line too long"))
    );
    let long_trailers = [
        &b"0\r\n"[..],
        &b"x: 1\r\n".repeat(MAX_HEAD / 6 + 2),
        b"\r\n",
    ]
    .concat();
    assert_eq!(
        decode_in_steps(&long_trailers, 4096, 64).err(),
        Some(ChunkedError::Malformed("trailer fields too long"))
    );
}
