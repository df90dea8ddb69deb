//! The protobuf wire format, read as prost reads it: the same varint and key
//! rules, unknown fields (groups included) skipped, and every error prost
//! would raise raised here too. Loops with explicit stacks, so no input can
//! overflow the thread stack.

/// Deepest nesting a walk follows: prost's own recursion limit.
pub(crate) const MAX_NESTING: usize = 100;

/// A protobuf wire-format error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum WireError {
    #[error("truncated message")]
    Truncated,
    #[error("invalid varint")]
    Varint,
    #[error("invalid wire type {0}")]
    WireType(u64),
    #[error("invalid field number 0")]
    FieldZero,
    #[error("field {0} has the wrong wire type")]
    FieldType(u32),
    #[error("a group ends that did not start")]
    GroupEnd,
    #[error("messages nest more than {MAX_NESTING} levels deep")]
    TooDeep,
    #[error("field {0} is not valid UTF-8")]
    Utf8(u32),
    #[error(transparent)]
    Prost(#[from] prost::DecodeError),
}

/// A varint, as prost reads it: at most 10 bytes, and the tenth at most 1.
#[inline]
pub(crate) fn varint(buf: &[u8], pos: &mut usize) -> Result<u64, WireError> {
    match buf.get(*pos) {
        Some(&byte) if byte < 0x80 => {
            *pos += 1;
            Ok(u64::from(byte))
        }
        _ => varint_long(buf, pos),
    }
}

#[cold]
fn varint_long(buf: &[u8], pos: &mut usize) -> Result<u64, WireError> {
    let mut value = 0u64;
    for count in 0..10 {
        let byte = *buf.get(*pos).ok_or(WireError::Truncated)?;
        *pos += 1;
        value |= u64::from(byte & 0x7f) << (count * 7);
        if byte < 0x80 {
            return if count == 9 && byte >= 2 { Err(WireError::Varint) } else { Ok(value) };
        }
    }
    Err(WireError::Varint)
}

/// One field's value, by wire type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wire<'a> {
    Varint(u64),
    Fixed64(u64),
    Fixed32(u32),
    Bytes(&'a [u8]),
    /// A group, skipped whole (no OTLP field is one).
    Group,
}

impl<'a> Wire<'a> {
    pub(crate) fn bytes(self) -> Option<&'a [u8]> {
        match self {
            Wire::Bytes(bytes) => Some(bytes),
            _ => None,
        }
    }
}

/// The fields of one message, in order, checked against the wire format.
pub(crate) struct Fields<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Fields<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    /// The next field, `None` at the end of the message.
    #[inline]
    pub(crate) fn next_field(&mut self) -> Result<Option<(u32, Wire<'a>)>, WireError> {
        if self.pos >= self.buf.len() {
            return Ok(None);
        }
        let (field, wire_type) = self.key()?;
        let value = match wire_type {
            0 => Wire::Varint(varint(self.buf, &mut self.pos)?),
            1 => Wire::Fixed64(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes"))),
            2 => {
                let len = varint(self.buf, &mut self.pos)?;
                Wire::Bytes(self.take(usize::try_from(len).map_err(|_| WireError::Truncated)?)?)
            }
            3 => {
                self.skip_group(field)?;
                Wire::Group
            }
            4 => return Err(WireError::GroupEnd),
            5 => Wire::Fixed32(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes"))),
            other => return Err(WireError::WireType(u64::from(other))),
        };
        Ok(Some((field, value)))
    }

    /// A key: field number and wire type (prost refuses keys past `u32`).
    #[inline]
    fn key(&mut self) -> Result<(u32, u8), WireError> {
        let key = varint(self.buf, &mut self.pos)?;
        let key = u32::try_from(key).map_err(|_| WireError::Varint)?;
        if key >> 3 == 0 {
            return Err(WireError::FieldZero);
        }
        Ok((key >> 3, (key & 7) as u8))
    }

    #[inline]
    fn take(&mut self, len: usize) -> Result<&'a [u8], WireError> {
        let start = self.pos;
        let end = start.checked_add(len).filter(|&e| e <= self.buf.len()).ok_or(WireError::Truncated)?;
        self.pos = end;
        Ok(&self.buf[start..end])
    }

    /// Skips a group that started with field `field`, through its end.
    #[cold]
    fn skip_group(&mut self, field: u32) -> Result<(), WireError> {
        let mut open = vec![field];
        while let Some(&innermost) = open.last() {
            if self.pos >= self.buf.len() {
                return Err(WireError::Truncated);
            }
            let (field, wire_type) = self.key()?;
            match wire_type {
                0 => drop(varint(self.buf, &mut self.pos)?),
                1 => drop(self.take(8)?),
                2 => {
                    let len = varint(self.buf, &mut self.pos)?;
                    self.take(usize::try_from(len).map_err(|_| WireError::Truncated)?)?;
                }
                3 if open.len() >= MAX_NESTING => return Err(WireError::TooDeep),
                3 => open.push(field),
                4 if field == innermost => drop(open.pop()),
                4 => return Err(WireError::GroupEnd),
                5 => drop(self.take(4)?),
                other => return Err(WireError::WireType(u64::from(other))),
            }
        }
        Ok(())
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u32, Wire<'a>), WireError>;

    fn next(&mut self) -> Option<Self::Item> {
        let field = self.next_field().transpose();
        if matches!(field, Some(Err(_))) {
            self.pos = self.buf.len();
        }
        field
    }
}

/// The length-delimited occurrences of field `number` in `message`.
pub(crate) fn embedded(message: &[u8], number: u32) -> impl Iterator<Item = Result<&[u8], WireError>> {
    Fields::new(message).filter_map(move |field| match field {
        Ok((n, Wire::Bytes(bytes))) if n == number => Some(Ok(bytes)),
        Ok(_) => None,
        Err(e) => Some(Err(e)),
    })
}

/// The last occurrence of a singular length-delimited field (protobuf's rule).
pub(crate) fn last_embedded(message: &[u8], number: u32) -> Result<Option<&[u8]>, WireError> {
    embedded(message, number).try_fold(None, |_, field| field.map(Some))
}

/// `bytes` of field `number` as a string.
#[inline]
pub(crate) fn utf8(bytes: &[u8], number: u32) -> Result<&str, WireError> {
    std::str::from_utf8(bytes).map_err(|_| WireError::Utf8(number))
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::trace::v1::Status;
    use prost::Message as _;

    use super::*;

    #[test]
    fn varints_are_read_as_prost_reads_them() {
        let cases: [&[u8]; 6] = [
            &[0x00],
            &[0x7f],
            &[0x80, 0x01],
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02],
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
        ];
        for bytes in cases {
            let ours = varint(bytes, &mut 0).ok();
            let theirs = prost::encoding::decode_varint(&mut &bytes[..]).ok();
            assert_eq!(ours, theirs, "{bytes:?}");
        }
    }

    #[test]
    fn groups_are_skipped_whole_and_unmatched_ends_refused() {
        // field 5: start group, field 6 varint, nested group 7, end 7, end 5; then field 1 varint.
        let body = [0x2b, 0x30, 0x01, 0x3b, 0x3c, 0x2c, 0x08, 0x05];
        let fields: Vec<_> = Fields::new(&body).collect::<Result<_, _>>().unwrap();
        assert_eq!(fields, vec![(5, Wire::Group), (1, Wire::Varint(5))]);
        assert!(Status::decode(&body[..]).is_ok());
        for bad in [&[0x2b, 0x34][..], &[0x2c], &[0x2b]] {
            assert!(Fields::new(bad).any(|f| f.is_err()), "{bad:?}");
            assert!(Status::decode(bad).is_err(), "{bad:?}");
        }
    }
}
