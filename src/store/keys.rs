//! The key layout of every store backend, in one place: which tree (sled) or key space
//! (Redis, later) holds what, and how a domain name becomes key bytes and back.
//!
//! Backends must not invent key encodings of their own: a layout change made here is made
//! for every backend at once, and the unit tests below pin the current layout so an
//! accidental change breaks a test instead of silently orphaning data on disk.
//!
//! Values are not encoded here; their framing (version + checksum) lives in
//! [`super::codec`].

use std::str::Utf8Error;

/// Tree holding resource definitions, keyed by [`resource_key`].
pub const RESOURCES_TREE: &str = "resources";

/// Reserved for idempotency records (a later issue); nothing may use this name for
/// anything else.
pub const IDEMPOTENCY_TREE: &str = "idempotency";

/// Reserved for cached results (a later issue); nothing may use this name for anything
/// else.
pub const CACHE_TREE: &str = "cache";

/// Every tree name the layout defines, used or reserved. Names are unique.
pub const ALL_TREES: [&str; 3] = [RESOURCES_TREE, IDEMPOTENCY_TREE, CACHE_TREE];

/// A stored key that does not decode under the current layout.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// A resource key that is not UTF-8 (names are always written as UTF-8).
    #[error("resource key is not utf-8")]
    NotUtf8(#[source] Utf8Error),
}

/// The key of resource `name` in [`RESOURCES_TREE`]: the name's UTF-8 bytes, nothing else.
///
/// Byte order of UTF-8 equals `str` order, so a backend that iterates keys in byte order
/// (sled, a `BTreeMap<Vec<u8>, _>`) yields resources in name order without sorting.
#[must_use]
pub fn resource_key(name: &str) -> &[u8] {
    name.as_bytes()
}

/// The resource name stored under `key` in [`RESOURCES_TREE`]; the inverse of
/// [`resource_key`].
///
/// # Errors
/// [`KeyError::NotUtf8`] when the key was not written by [`resource_key`] (damage, or a
/// foreign writer).
pub fn resource_name(key: &[u8]) -> Result<&str, KeyError> {
    std::str::from_utf8(key).map_err(KeyError::NotUtf8)
}

/// A key made safe for logs and error messages: UTF-8 keys with control characters and
/// quotes escaped, other bytes as `\xNN`. A key from a damaged store can hold anything, and
/// must not be able to forge log lines.
#[must_use]
pub fn display_key(key: &[u8]) -> String {
    match std::str::from_utf8(key) {
        Ok(s) => s.escape_debug().to_string(),
        Err(_) => key.escape_ascii().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pins the tree names: renaming one would orphan every value already on disk.
    #[test]
    fn tree_names_are_pinned_and_unique() {
        assert_eq!(ALL_TREES, ["resources", "idempotency", "cache"]);
        let mut names = ALL_TREES.to_vec();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ALL_TREES.len());
    }

    /// Pins the resource key encoding: the name's UTF-8 bytes, no prefix or terminator.
    #[test]
    fn resource_key_is_the_utf8_name() {
        assert_eq!(resource_key("api.github"), b"api.github");
        assert_eq!(resource_key(""), b"");
        assert_eq!(resource_key("ä/1"), "ä/1".as_bytes());
    }

    /// Proves keys decode back to the name they were made from.
    #[test]
    fn resource_name_inverts_resource_key() {
        for name in ["", "a", "api.github", "ä/ß/日本", "with space", "tab\there"] {
            assert_eq!(resource_name(resource_key(name)), Ok(name));
        }
    }

    /// Proves a key that is not UTF-8 is reported as such, not decoded lossily.
    #[test]
    fn non_utf8_key_is_an_error() {
        assert!(matches!(
            resource_name(&[0x61, 0xff, 0x62]),
            Err(KeyError::NotUtf8(_))
        ));
    }

    /// Proves byte order of keys is name order, which list operations rely on.
    #[test]
    fn key_byte_order_is_name_order() {
        let mut names = vec!["b", "a", "ä", "A", "a/b", "ab", "", "日本", "z"];
        let mut by_key = names.clone();
        names.sort_unstable();
        by_key.sort_unstable_by(|x, y| resource_key(x).cmp(resource_key(y)));
        assert_eq!(names, by_key);
    }

    /// Proves displayed keys cannot carry raw control characters or invalid UTF-8.
    #[test]
    fn display_key_escapes_control_and_invalid_bytes() {
        assert_eq!(display_key(b"api.github"), "api.github");
        assert_eq!(display_key("ä".as_bytes()), "ä");
        assert_eq!(display_key(b"a\nb"), "a\\nb");
        assert_eq!(display_key(&[0x61, 0xff]), "a\\xff");
    }
}
