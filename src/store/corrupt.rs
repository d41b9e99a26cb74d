//! What every backend does with an entry that fails its checks: treat it as absent, log it
//! once with `tracing::warn`, and count it once.
//!
//! Shared so the backends cannot drift apart on this policy. An entry counts again only if
//! it is overwritten or deleted and later found damaged again; reading the same damaged
//! entry on every list would otherwise inflate the counter and flood the log. The set of
//! damaged keys is behind a std `Mutex`: it is touched briefly, never across an await.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use super::{Corruption, StoreError, codec, keys};

/// Counts and remembers damaged entries for one open store.
#[derive(Debug, Default)]
pub(crate) struct CorruptTracker {
    /// Damaged entries seen since open (monotonic, saturating).
    count: AtomicU64,
    /// Entries currently known damaged, by (tree, key).
    seen: Mutex<HashSet<(&'static str, Vec<u8>)>>,
}

impl CorruptTracker {
    /// Damaged entries seen since open.
    pub(crate) fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Records a damaged entry: counted and warned about the first time it is seen.
    pub(crate) fn record(&self, tree: &'static str, key: &[u8], cause: Corruption) {
        let first = self
            .seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert((tree, key.to_vec()));
        let error = StoreError::Corrupt {
            tree,
            key: keys::display_key(key),
            source: cause,
        };
        let chain = error_chain(&error);
        if first {
            // Saturating: the closure always returns Some, so the update cannot fail.
            let _ = self
                .count
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                    Some(n.saturating_add(1))
                });
            tracing::warn!(error = %chain, "skipping corrupt entry: it reads as absent");
        } else {
            tracing::debug!(error = %chain, "skipping corrupt entry seen before");
        }
    }

    /// Whether an entry is known damaged now (seen damaged, not rewritten since).
    pub(crate) fn is_known(&self, tree: &'static str, key: &[u8]) -> bool {
        let seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        !seen.is_empty() && seen.contains(&(tree, key.to_vec()))
    }

    /// Forgets an entry that was overwritten or deleted, so new damage to it counts again.
    pub(crate) fn forget(&self, tree: &'static str, key: &[u8]) {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        if !seen.is_empty() {
            seen.remove(&(tree, key.to_vec()));
        }
    }

    /// Whether a previous framed value (from an insert or remove) was a live entry; a
    /// damaged one was absent, and is forgotten either way since it is now gone.
    pub(crate) fn was_live(&self, tree: &'static str, key: &[u8], old: Option<&[u8]>) -> bool {
        self.forget(tree, key);
        old.is_some_and(|raw| codec::decode(raw).is_ok())
    }

    /// The payload of one raw record entry (any tree), or `None` after recording it as
    /// damaged.
    pub(crate) fn decode_value<'a>(
        &self,
        tree: &'static str,
        key: &[u8],
        raw: &'a [u8],
    ) -> Option<&'a [u8]> {
        match codec::decode(raw) {
            Ok(payload) => Some(payload),
            Err(e) => {
                self.record(tree, key, Corruption::Value(e));
                None
            }
        }
    }

    /// Decodes one raw resource entry, or records it as damaged and returns `None`.
    pub(crate) fn decode_resource(&self, key: &[u8], raw: &[u8]) -> Option<(String, Vec<u8>)> {
        let tree = keys::RESOURCES_TREE;
        let name = match keys::resource_name(key) {
            Ok(name) => name,
            Err(e) => {
                self.record(tree, key, Corruption::Key(e));
                return None;
            }
        };
        match codec::decode(raw) {
            Ok(payload) => Some((name.to_owned(), payload.to_vec())),
            Err(e) => {
                self.record(tree, key, Corruption::Value(e));
                None
            }
        }
    }
}

/// An error and its sources as one line, `outer: inner: innermost`.
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut next = error.source();
    while let Some(e) = next {
        out.push_str(": ");
        out.push_str(&e.to_string());
        next = e.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::keys::RESOURCES_TREE;

    /// Proves a damaged entry counts once however often it is read, and again after it
    /// was overwritten and damaged anew.
    #[test]
    fn damaged_entry_counts_once_until_forgotten() {
        let t = CorruptTracker::default();
        assert_eq!(t.decode_resource(b"a", b"junk"), None);
        assert_eq!(t.decode_resource(b"a", b"junk"), None);
        assert_eq!(t.count(), 1);
        assert_eq!(t.decode_resource(b"b", b"junk"), None);
        assert_eq!(t.count(), 2);
        t.forget(RESOURCES_TREE, b"a");
        assert_eq!(t.decode_resource(b"a", b"junk"), None);
        assert_eq!(t.count(), 3);
    }

    /// Proves the logged line carries the whole cause, down to the checksum figures.
    #[test]
    fn logged_chain_reaches_the_codec_error() {
        let error = StoreError::Corrupt {
            tree: RESOURCES_TREE,
            key: "a".into(),
            source: Corruption::Value(codec::CodecError::TooShort { len: 2 }),
        };
        assert_eq!(
            error_chain(&error),
            "corrupt entry \"a\" in resources: invalid value frame: \
             value is 2 bytes, shorter than the 5-byte header"
        );
    }

    /// Proves a good entry decodes to its name and payload and counts nothing.
    #[test]
    fn good_entry_decodes() {
        let t = CorruptTracker::default();
        let raw = codec::encode(b"v");
        assert_eq!(
            t.decode_resource(b"a", &raw),
            Some(("a".into(), b"v".to_vec()))
        );
        assert_eq!(t.count(), 0);
    }

    /// Proves a key that is not UTF-8 is treated like a damaged value.
    #[test]
    fn non_utf8_key_is_damage() {
        let t = CorruptTracker::default();
        assert_eq!(t.decode_resource(&[0xff], &codec::encode(b"v")), None);
        assert_eq!(t.count(), 1);
    }

    /// Proves a damaged previous value is reported as not live, and a good one as live.
    #[test]
    fn was_live_ignores_damaged_values() {
        let t = CorruptTracker::default();
        assert!(t.was_live(RESOURCES_TREE, b"a", Some(&codec::encode(b"v"))));
        assert!(!t.was_live(RESOURCES_TREE, b"a", Some(b"junk")));
        assert!(!t.was_live(RESOURCES_TREE, b"a", None));
    }
}
