//! The `chunked` transfer coding (RFC 9112 §7.1), decoded incrementally: whatever part of the
//! body the read buffer holds is consumed, so a body sent in small pieces costs no re-scanning
//! and no more buffer than one chunk-size line.

use bytes::{Buf, BytesMut};

use super::head::MAX_HEAD;

/// Longest chunk-size line (size and extensions).
const MAX_SIZE_LINE: usize = 4096;

/// Why a chunked body could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ChunkedError {
    /// The data exceed the payload limit.
    #[error("body too large")]
    TooLarge,
    /// The coding's syntax is broken.
    #[error("{0}")]
    Malformed(&'static str),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Expecting a chunk-size line.
    Size,
    /// Inside a chunk's data, with this many bytes to go.
    Data(u64),
    /// Expecting the CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: trailer fields until an empty line (this many bytes so far).
    Trailers(usize),
    /// The body is complete.
    Done,
}

/// Decodes one chunked body of at most `max` data bytes.
#[derive(Debug)]
pub(crate) struct ChunkedDecoder {
    state: State,
    max: usize,
}

impl ChunkedDecoder {
    /// A decoder at the start of a body.
    pub(crate) fn new(max: usize) -> Self {
        Self {
            state: State::Size,
            max,
        }
    }

    /// Consumes the body's bytes from the front of `input`, appending its data to `out`; true
    /// once the body is complete (what follows it stays in `input`).
    pub(crate) fn decode(
        &mut self,
        input: &mut BytesMut,
        out: &mut BytesMut,
    ) -> Result<bool, ChunkedError> {
        loop {
            match self.state {
                State::Done => return Ok(true),
                State::Size => {
                    let Some(len) = line_len(input, MAX_SIZE_LINE, "chunk-size line too long")?
                    else {
                        return Ok(false);
                    };
                    let size = chunk_size(&input[..len])?;
                    input.advance(len + 2);
                    if size > (self.max - out.len()) as u64 {
                        return Err(ChunkedError::TooLarge);
                    }
                    self.state = if size == 0 {
                        State::Trailers(0)
                    } else {
                        State::Data(size)
                    };
                }
                State::Data(left) => {
                    if input.is_empty() {
                        return Ok(false);
                    }
                    let n = usize::try_from(left).unwrap_or(usize::MAX).min(input.len());
                    out.extend_from_slice(&input[..n]);
                    input.advance(n);
                    let left = left - n as u64;
                    self.state = if left == 0 {
                        State::DataEnd
                    } else {
                        State::Data(left)
                    };
                }
                State::DataEnd => match input.get(..2) {
                    None if input.first().is_none_or(|&b| b == b'\r') => return Ok(false),
                    Some(b"\r\n") => {
                        input.advance(2);
                        self.state = State::Size;
                    }
                    _ => return Err(ChunkedError::Malformed("chunk data not followed by CRLF")),
                },
                State::Trailers(seen) => {
                    let room = MAX_HEAD.saturating_sub(seen);
                    let Some(len) = line_len(input, room, "trailer fields too long")? else {
                        return Ok(false);
                    };
                    input.advance(len + 2);
                    self.state = if len == 0 {
                        State::Done
                    } else {
                        State::Trailers(seen + len + 2)
                    };
                }
            }
        }
    }
}

/// The length (without its CRLF) of the line at the front of `input`; `None` while it is
/// incomplete and shorter than `max`.
fn line_len(
    input: &[u8],
    max: usize,
    too_long: &'static str,
) -> Result<Option<usize>, ChunkedError> {
    let Some(lf) = input.iter().take(max + 2).position(|&b| b == b'\n') else {
        if input.len() >= max + 2 {
            return Err(ChunkedError::Malformed(too_long));
        }
        return Ok(None);
    };
    if lf == 0 || input[lf - 1] != b'\r' {
        return Err(ChunkedError::Malformed("line not terminated by CRLF"));
    }
    Ok(Some(lf - 1))
}

/// The size of a chunk-size line (hexadecimal, then optional `;` extensions).
fn chunk_size(line: &[u8]) -> Result<u64, ChunkedError> {
    let digits = line
        .iter()
        .position(|b| !b.is_ascii_hexdigit())
        .unwrap_or(line.len());
    let invalid = ChunkedError::Malformed("invalid chunk size");
    if digits == 0 || digits > 15 {
        return Err(invalid);
    }
    match line[digits..].iter().find(|b| !matches!(b, b' ' | b'\t')) {
        None | Some(b';') => {}
        Some(_) => return Err(invalid),
    }
    let hex = std::str::from_utf8(&line[..digits]).map_err(|_| invalid)?;
    u64::from_str_radix(hex, 16).map_err(|_| invalid)
}

#[cfg(test)]
mod tests;
