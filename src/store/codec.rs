//! The frame around every stored value: `[format version u8][crc32 of payload u32 LE][payload]`.
//!
//! sled has reports of values corrupted on reopen after abrupt stops (spacejam/sled#1527,
//! #1533), so no backend trusts bytes it reads back: each value carries a CRC-32 of its
//! payload and is checked on every read. The version byte lets a later format be read next
//! to this one instead of being mistaken for damage. The codec owns framing only: what the
//! payload means is the caller's business, and what a backend does with a bad frame
//! (skip it, count it) is the backend's.

/// The frame format this build writes; the only one it reads.
pub const FORMAT_VERSION: u8 = 1;

/// Bytes before the payload: version (1) + checksum (4).
pub const HEADER_LEN: usize = 5;

/// Why a stored value could not be unframed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// Fewer bytes than the header needs.
    #[error("value is {len} bytes, shorter than the {HEADER_LEN}-byte header")]
    TooShort {
        /// Length of the stored value.
        len: usize,
    },
    /// A version byte this build does not know (damage, or written by a newer permitd).
    #[error("unknown value format version {version}")]
    UnknownVersion {
        /// The version byte found.
        version: u8,
    },
    /// The payload does not match its stored checksum.
    #[error("checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    ChecksumMismatch {
        /// Checksum in the header.
        stored: u32,
        /// Checksum of the payload as read.
        computed: u32,
    },
}

/// Frames `payload` for storage.
#[must_use]
pub fn encode(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN.saturating_add(payload.len()));
    out.push(FORMAT_VERSION);
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// The payload inside a stored frame, after checking its version and checksum.
///
/// # Errors
/// [`CodecError`] when the frame is too short, of an unknown version, or its payload does
/// not match its checksum.
pub fn decode(bytes: &[u8]) -> Result<&[u8], CodecError> {
    let Some((header, payload)) = bytes.split_first_chunk::<HEADER_LEN>() else {
        return Err(CodecError::TooShort { len: bytes.len() });
    };
    let [version, c0, c1, c2, c3] = *header;
    if version != FORMAT_VERSION {
        return Err(CodecError::UnknownVersion { version });
    }
    let stored = u32::from_le_bytes([c0, c1, c2, c3]);
    let computed = crc32fast::hash(payload);
    if stored != computed {
        return Err(CodecError::ChecksumMismatch { stored, computed });
    }
    Ok(payload)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Pins the frame layout byte for byte (CRC-32/ISO-HDLC of "123456789" is 0xCBF43926).
    #[test]
    fn frame_layout_is_pinned() {
        assert_eq!(
            encode(b"123456789"),
            [&[1, 0x26, 0x39, 0xF4, 0xCB][..], b"123456789"].concat()
        );
        assert_eq!(encode(b""), [1, 0, 0, 0, 0]);
    }

    /// Proves an empty payload is a valid frame, not mistaken for a short one.
    #[test]
    fn empty_payload_round_trips() {
        assert_eq!(decode(&encode(b"")), Ok(&b""[..]));
    }

    /// Proves anything shorter than the header is rejected as too short.
    #[test]
    fn short_input_is_too_short() {
        for len in 0..HEADER_LEN {
            let bytes = vec![FORMAT_VERSION; len];
            assert_eq!(decode(&bytes), Err(CodecError::TooShort { len }));
        }
    }

    /// Proves a frame of another version is refused rather than read as this format.
    #[test]
    fn unknown_version_is_rejected() {
        let mut framed = encode(b"payload");
        framed[0] = 2;
        assert_eq!(
            decode(&framed),
            Err(CodecError::UnknownVersion { version: 2 })
        );
    }

    /// Proves a changed payload byte is caught by the checksum.
    #[test]
    fn changed_payload_is_a_checksum_mismatch() {
        let mut framed = encode(b"payload");
        framed[HEADER_LEN] ^= 0x01;
        assert!(matches!(
            decode(&framed),
            Err(CodecError::ChecksumMismatch { .. })
        ));
    }

    /// Proves error messages are lowercase and carry the figures an operator needs.
    #[test]
    fn error_messages_are_lowercase() {
        let msg = CodecError::ChecksumMismatch {
            stored: 1,
            computed: 2,
        }
        .to_string();
        assert_eq!(
            msg,
            "checksum mismatch: stored 0x00000001, computed 0x00000002"
        );
        assert_eq!(
            CodecError::TooShort { len: 3 }.to_string(),
            "value is 3 bytes, shorter than the 5-byte header"
        );
    }

    proptest! {
        /// Proves any payload round-trips through encode and decode unchanged.
        #[test]
        fn any_payload_round_trips(payload in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let framed = encode(&payload);
            prop_assert_eq!(framed.len(), payload.len() + HEADER_LEN);
            prop_assert_eq!(decode(&framed), Ok(&payload[..]));
        }

        /// Proves any single changed byte, anywhere in the frame, is rejected.
        #[test]
        fn any_single_byte_change_is_detected(
            payload in proptest::collection::vec(any::<u8>(), 0..512),
            index in any::<prop::sample::Index>(),
            flip in 1u8..=255,
        ) {
            let mut framed = encode(&payload);
            let at = index.index(framed.len());
            framed[at] ^= flip;
            prop_assert!(decode(&framed).is_err());
        }

        /// Proves arbitrary bytes never panic the decoder, and whatever it accepts
        /// re-encodes to exactly the input.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(payload) = decode(&bytes) {
                prop_assert_eq!(encode(payload), bytes.clone());
            }
        }
    }
}
