//! Reading AMQP 1.0 encoded values in place (part 1 of the specification): whole values by their
//! encoded size, list fields one at a time, and the primitive types Ferry reads. Every length is
//! checked against the bytes there are.

use std::str;

use crate::message::MessageError;

/// The deepest nesting of described and compound values accepted from a peer (Ferry's own
/// performatives and messages nest a few levels; unbounded nesting would exhaust the stack).
pub(crate) const MAX_DEPTH: u32 = 32;

/// An encoded value as a string (`None` for null).
pub(crate) fn string(value: &[u8]) -> Result<Option<&str>, MessageError> {
    variable(value, 0xa1, 0xb1, "not a string").and_then(|s| {
        s.map(|s| str::from_utf8(s).map_err(|_| MessageError::Utf8))
            .transpose()
    })
}

/// An encoded value as a symbol (ASCII; `None` for null).
pub(crate) fn symbol(value: &[u8]) -> Result<Option<&str>, MessageError> {
    variable(value, 0xa3, 0xb3, "not a symbol").and_then(|s| {
        s.map(|s| str::from_utf8(s).map_err(|_| MessageError::Utf8))
            .transpose()
    })
}

/// An encoded value as binary (`None` for null).
pub(crate) fn binary(value: &[u8]) -> Result<Option<&[u8]>, MessageError> {
    variable(value, 0xa0, 0xb0, "not binary")
}

/// The bytes of a variable-width value with the one-byte (`short`) or four-byte (`long`) length
/// constructor; `None` for null.
fn variable<'a>(
    value: &'a [u8],
    short: u8,
    long: u8,
    what: &'static str,
) -> Result<Option<&'a [u8]>, MessageError> {
    let mut reader = Reader(value);
    let constructor = reader.byte()?;
    let len = match constructor {
        0x40 => return Ok(None),
        c if c == short => usize::from(reader.byte()?),
        c if c == long => reader.u32()? as usize,
        _ => return Err(MessageError::Unexpected(what)),
    };
    reader.take(len).map(Some)
}

/// The encoded fields of a list, one value at a time.
pub(crate) struct Fields<'a> {
    reader: Reader<'a>,
    left: u32,
}

impl<'a> Fields<'a> {
    /// The fields of the encoded list `list` (constructor included).
    pub(crate) fn of(list: &'a [u8]) -> Result<Self, MessageError> {
        let mut reader = Reader(list);
        let (count, body) = match reader.byte()? {
            0x45 => (0, Reader(&[])),
            0xc0 => {
                let size = usize::from(reader.byte()?);
                let mut body = Reader(reader.take(size)?);
                (u32::from(body.byte()?), body)
            }
            0xd0 => {
                let size = reader.u32()? as usize;
                let mut body = Reader(reader.take(size)?);
                (body.u32()?, body)
            }
            _ => return Err(MessageError::Unexpected("section is not a list")),
        };
        Ok(Self {
            reader: body,
            left: count,
        })
    }

    /// Skips `n` fields and returns the next, or `None` when the list is shorter.
    pub(crate) fn nth(&mut self, n: u32) -> Result<Option<&'a [u8]>, MessageError> {
        for _ in 0..n {
            if self.left == 0 {
                return Ok(None);
            }
            self.left -= 1;
            self.reader.value()?;
        }
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        self.reader.value().map(Some)
    }
}

/// A cursor over encoded bytes.
pub(crate) struct Reader<'a>(pub(crate) &'a [u8]);

impl<'a> Reader<'a> {
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], MessageError> {
        if n > self.0.len() {
            return Err(MessageError::Truncated);
        }
        let (taken, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(taken)
    }

    pub(crate) fn byte(&mut self) -> Result<u8, MessageError> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn u32(&mut self) -> Result<u32, MessageError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// One whole encoded value, constructor included (a described value with its descriptor);
    /// nested values are skipped by their outer size, not looked into.
    pub(crate) fn value(&mut self) -> Result<&'a [u8], MessageError> {
        self.whole(false)
    }

    /// Like [`Reader::value`], but every value nested inside is checked too: each length fits in
    /// the bytes around it and nothing nests deeper than [`MAX_DEPTH`]. What passes can go to a
    /// decoder that allocates what a length says.
    pub(crate) fn checked_value(&mut self) -> Result<&'a [u8], MessageError> {
        self.whole(true)
    }

    fn whole(&mut self, deep: bool) -> Result<&'a [u8], MessageError> {
        let start = self.0;
        self.skip_value(0, deep)?;
        Ok(&start[..start.len() - self.0.len()])
    }

    fn skip_value(&mut self, depth: u32, deep: bool) -> Result<(), MessageError> {
        let constructor = self.byte()?;
        self.skip_body(constructor, depth, deep)
    }

    /// Skips what follows `constructor`.
    fn skip_body(&mut self, constructor: u8, depth: u32, deep: bool) -> Result<(), MessageError> {
        if depth > MAX_DEPTH {
            return Err(MessageError::Unexpected("values nested too deep"));
        }
        let size = match constructor {
            0x00 => {
                self.skip_value(depth + 1, deep)?;
                return self.skip_value(depth + 1, deep);
            }
            0x40..=0x45 => 0,
            0x50..=0x56 => 1,
            0x60 | 0x61 => 2,
            0x70..=0x74 => 4,
            0x80..=0x84 => 8,
            0x94 | 0x98 => 16,
            0xa0 | 0xa1 | 0xa3 | 0xc0 | 0xc1 | 0xe0 => usize::from(self.byte()?),
            0xb0 | 0xb1 | 0xb3 | 0xd0 | 0xd1 | 0xf0 => self.u32()? as usize,
            c => return Err(MessageError::FormatCode(c)),
        };
        let body = self.take(size)?;
        if deep && constructor >= 0xc0 {
            Reader(body).check_compound(constructor, depth + 1)?;
        }
        Ok(())
    }

    /// Checks the elements of a list, map or array, `self` being its body after the size.
    fn check_compound(&mut self, constructor: u8, depth: u32) -> Result<(), MessageError> {
        let count = if matches!(constructor, 0xd0 | 0xd1 | 0xf0) {
            self.u32()?
        } else {
            u32::from(self.byte()?)
        };
        // Every element takes at least one byte, so the loops end with the body.
        if matches!(constructor, 0xc0 | 0xc1 | 0xd0 | 0xd1) {
            for _ in 0..count {
                self.skip_value(depth, true)?;
            }
            return Ok(());
        }
        // An array: one element constructor (described or not), then the elements' bodies.
        if self.0.is_empty() {
            return Ok(());
        }
        let mut element = self.byte()?;
        if element == 0x00 {
            self.skip_value(depth, true)?;
            element = self.byte()?;
        }
        if matches!(element, 0x40..=0x45) {
            return Ok(());
        }
        for _ in 0..count {
            self.skip_body(element, depth, true)?;
        }
        Ok(())
    }
}

/// An encoded value as a uint (`None` for null).
pub(crate) fn uint(value: &[u8]) -> Result<Option<u32>, MessageError> {
    match value {
        [0x40] => Ok(None),
        [0x43] => Ok(Some(0)),
        [0x52, n] => Ok(Some(u32::from(*n))),
        [0x70, a, b, c, d] => Ok(Some(u32::from_be_bytes([*a, *b, *c, *d]))),
        _ => Err(MessageError::Unexpected("not a uint")),
    }
}

/// An encoded value as a boolean (`None` for null).
pub(crate) fn boolean(value: &[u8]) -> Result<Option<bool>, MessageError> {
    match value {
        [0x40] => Ok(None),
        [0x41] | [0x56, 1] => Ok(Some(true)),
        [0x42] | [0x56, 0] => Ok(Some(false)),
        _ => Err(MessageError::Unexpected("not a boolean")),
    }
}
