//! What an idempotency record holds and how its payload is encoded (protobuf, through
//! prost's derive: fields carry explicit tags, so a later build can add fields and still
//! read old records). The store frames the payload with a version and a checksum; this
//! encoding is inside that frame.

use std::collections::BTreeMap;

use prost::Message as _;

/// The stored result of an upstream call, replayed byte for byte to every later `Begin`.
///
/// Headers and metadata are ordered maps, so a record encodes the same way every time.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct StoredResult {
    /// HTTP status of the upstream answer.
    #[prost(uint32, tag = "1")]
    pub status_code: u32,
    /// Response headers.
    #[prost(btree_map = "string, string", tag = "2")]
    pub headers: BTreeMap<String, String>,
    /// Response body.
    #[prost(bytes = "vec", tag = "3")]
    pub body: Vec<u8>,
    /// The caller's own metadata.
    #[prost(btree_map = "string, string", tag = "4")]
    pub metadata: BTreeMap<String, String>,
}

/// One key's record. In progress while `result` is `None`, completed once it is set.
///
/// Times are Unix milliseconds: records outlive the process.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub(crate) struct Record {
    /// The digest of the request the key was first used for.
    #[prost(string, tag = "1")]
    pub(crate) fingerprint: String,
    /// When the key was first acquired.
    #[prost(uint64, tag = "2")]
    pub(crate) created_at_ms: u64,
    /// When the whole record expires (reads treat it as absent from then on).
    #[prost(uint64, tag = "3")]
    pub(crate) expires_at_ms: u64,
    /// While in progress: when the holder's lock ends and another caller may acquire.
    #[prost(uint64, tag = "4")]
    pub(crate) lock_expires_at_ms: u64,
    /// The current (or last) holder's token, returned by `Begin` as `lock_token`.
    #[prost(string, tag = "5")]
    pub(crate) lock_token: String,
    /// The result, once completed.
    #[prost(message, optional, tag = "6")]
    pub(crate) result: Option<StoredResult>,
    /// When it was completed (0 while in progress).
    #[prost(uint64, tag = "7")]
    pub(crate) completed_at_ms: u64,
}

impl Record {
    /// Whether the record still exists at `now` (not past its TTL).
    pub(crate) fn live(&self, now_ms: u64) -> bool {
        now_ms < self.expires_at_ms
    }

    /// The payload to store.
    pub(crate) fn encode(&self) -> Vec<u8> {
        self.encode_to_vec()
    }

    /// A stored payload back to a record.
    ///
    /// # Errors
    /// The payload is not a record (it passed the frame's checksum, so this is a format
    /// bug or a foreign writer, not disk damage).
    pub(crate) fn decode(bytes: &[u8]) -> Result<Record, prost::DecodeError> {
        <Record as prost::Message>::decode(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Record {
        Record {
            fingerprint: "fp".into(),
            created_at_ms: 1,
            expires_at_ms: 2,
            lock_expires_at_ms: 3,
            lock_token: "t".into(),
            result: Some(StoredResult {
                status_code: 201,
                headers: [("b".into(), "2".into()), ("a".into(), "1".into())].into(),
                body: vec![0, 255, 10],
                metadata: [("m".into(), String::new())].into(),
            }),
            completed_at_ms: 4,
        }
    }

    /// Proves a record round-trips through its payload unchanged, result included.
    #[test]
    fn record_round_trips() {
        let r = sample();
        assert_eq!(Record::decode(&r.encode()).unwrap(), r);
    }

    /// Proves the encoding is deterministic (ordered maps): the same record, the same bytes.
    #[test]
    fn encoding_is_deterministic() {
        let mut other = sample();
        if let Some(res) = other.result.as_mut() {
            res.headers = [("a".into(), "1".into()), ("b".into(), "2".into())].into();
        }
        assert_eq!(sample().encode(), other.encode());
    }

    /// Pins field tags: a record encoded by this build starts with the fingerprint, tag 1.
    #[test]
    fn field_tags_are_pinned() {
        let r = Record {
            fingerprint: "x".into(),
            ..Record::default()
        };
        assert_eq!(r.encode(), [0x0a, 0x01, b'x']);
    }

    /// Proves bytes that are not a record fail to decode instead of reading as one.
    #[test]
    fn garbage_is_an_error() {
        assert!(Record::decode(&[0xff, 0xff, 0xff]).is_err());
    }

    /// Proves liveness ends exactly at `expires_at_ms`.
    #[test]
    fn live_until_expiry() {
        let r = Record {
            expires_at_ms: 10,
            ..Record::default()
        };
        assert!(r.live(9));
        assert!(!r.live(10));
    }
}
