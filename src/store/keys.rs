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

/// Tree holding idempotency records, keyed by [`idempotency_key`].
pub const IDEMPOTENCY_TREE: &str = "idempotency";

/// Tree holding cached results, keyed by [`cache_key`].
pub const CACHE_TREE: &str = "cache";

/// Every tree name the layout defines, used or reserved. Names are unique.
pub const ALL_TREES: [&str; 3] = [RESOURCES_TREE, IDEMPOTENCY_TREE, CACHE_TREE];

/// A stored key that does not decode under the current layout.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// A resource key that is not UTF-8 (names are always written as UTF-8).
    #[error("resource key is not utf-8")]
    NotUtf8(#[source] Utf8Error),
    /// A part too long for its one-byte length prefix (tenant or namespace over 255 bytes).
    #[error("{part} is {len} bytes, more than the layout's 255")]
    TooLong {
        /// Which part: `"tenant"` or `"namespace"`.
        part: &'static str,
        /// Its length in bytes.
        len: usize,
    },
    /// A record key whose length prefixes run past its end, or with a non-UTF-8 part.
    #[error("record key is truncated or not utf-8")]
    Malformed,
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

/// The tenant every key belongs to until authentication assigns callers their own.
pub const DEFAULT_TENANT: &str = "default";

/// The trees of [`crate::store::RecordStore`]: records that expire, each key scoped by a
/// tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecordTree {
    /// [`IDEMPOTENCY_TREE`], keyed by [`idempotency_key`].
    Idempotency,
    /// [`CACHE_TREE`], keyed by [`cache_key`].
    Cache,
}

impl RecordTree {
    /// Every record tree.
    pub const ALL: [RecordTree; 2] = [RecordTree::Idempotency, RecordTree::Cache];

    /// The tree's name in [`ALL_TREES`].
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Idempotency => IDEMPOTENCY_TREE,
            Self::Cache => CACHE_TREE,
        }
    }
}

/// Appends `part` behind a one-byte length prefix.
fn push_prefixed(out: &mut Vec<u8>, part: &'static str, value: &str) -> Result<(), KeyError> {
    let len = u8::try_from(value.len()).map_err(|_| KeyError::TooLong {
        part,
        len: value.len(),
    })?;
    out.push(len);
    out.extend_from_slice(value.as_bytes());
    Ok(())
}

/// Splits a length-prefixed UTF-8 part off the front of `bytes`.
fn pop_prefixed(bytes: &[u8]) -> Result<(&str, &[u8]), KeyError> {
    let (&len, rest) = bytes.split_first().ok_or(KeyError::Malformed)?;
    if rest.len() < usize::from(len) {
        return Err(KeyError::Malformed);
    }
    let (part, rest) = rest.split_at(usize::from(len));
    let part = std::str::from_utf8(part).map_err(|_| KeyError::Malformed)?;
    Ok((part, rest))
}

/// The key of idempotency key `key` of `tenant` in [`IDEMPOTENCY_TREE`]:
/// `[tenant length u8][tenant][key]`.
///
/// The length prefix makes the encoding unambiguous whatever bytes the parts hold, and keeps
/// each tenant's keys contiguous (a prefix scan lists one tenant).
///
/// # Errors
/// [`KeyError::TooLong`] when the tenant is over 255 bytes.
pub fn idempotency_key(tenant: &str, key: &str) -> Result<Vec<u8>, KeyError> {
    let mut out = Vec::with_capacity(1 + tenant.len() + key.len());
    push_prefixed(&mut out, "tenant", tenant)?;
    out.extend_from_slice(key.as_bytes());
    Ok(out)
}

/// `(tenant, key)` of a key made by [`idempotency_key`].
///
/// # Errors
/// [`KeyError::Malformed`] when the bytes were not written by [`idempotency_key`].
pub fn split_idempotency_key(bytes: &[u8]) -> Result<(&str, &str), KeyError> {
    let (tenant, rest) = pop_prefixed(bytes)?;
    let key = std::str::from_utf8(rest).map_err(|_| KeyError::Malformed)?;
    Ok((tenant, key))
}

/// The key of entry `key` in `namespace` of `tenant` in [`CACHE_TREE`]:
/// `[tenant length u8][tenant][namespace length u8][namespace][key]`.
///
/// # Errors
/// [`KeyError::TooLong`] when the tenant or the namespace is over 255 bytes.
pub fn cache_key(tenant: &str, namespace: &str, key: &str) -> Result<Vec<u8>, KeyError> {
    let mut out = Vec::with_capacity(2 + tenant.len() + namespace.len() + key.len());
    push_prefixed(&mut out, "tenant", tenant)?;
    push_prefixed(&mut out, "namespace", namespace)?;
    out.extend_from_slice(key.as_bytes());
    Ok(out)
}

/// `(tenant, namespace, key)` of a key made by [`cache_key`].
///
/// # Errors
/// [`KeyError::Malformed`] when the bytes were not written by [`cache_key`].
pub fn split_cache_key(bytes: &[u8]) -> Result<(&str, &str, &str), KeyError> {
    let (tenant, rest) = pop_prefixed(bytes)?;
    let (namespace, rest) = pop_prefixed(rest)?;
    let key = std::str::from_utf8(rest).map_err(|_| KeyError::Malformed)?;
    Ok((tenant, namespace, key))
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

    /// Pins the record tree names to the layout's constants.
    #[test]
    fn record_trees_name_the_reserved_trees() {
        assert_eq!(RecordTree::Idempotency.name(), "idempotency");
        assert_eq!(RecordTree::Cache.name(), "cache");
        for t in RecordTree::ALL {
            assert!(ALL_TREES.contains(&t.name()));
        }
    }

    /// Pins the idempotency key layout: tenant length byte, tenant, key.
    #[test]
    fn idempotency_key_layout_is_pinned() {
        assert_eq!(
            idempotency_key("default", "k-1"),
            Ok(b"\x07defaultk-1".to_vec())
        );
        assert_eq!(idempotency_key("", ""), Ok(vec![0]));
    }

    /// Pins the cache key layout: tenant and namespace each behind a length byte, then key.
    #[test]
    fn cache_key_layout_is_pinned() {
        assert_eq!(
            cache_key("default", "ns", "h"),
            Ok(b"\x07default\x02nsh".to_vec())
        );
    }

    /// Proves parts over 255 bytes are refused rather than wrapped into a wrong prefix.
    #[test]
    fn over_long_parts_are_refused() {
        let long = "t".repeat(256);
        assert_eq!(
            idempotency_key(&long, "k"),
            Err(KeyError::TooLong {
                part: "tenant",
                len: 256
            })
        );
        assert_eq!(
            cache_key("t", &long, "k"),
            Err(KeyError::TooLong {
                part: "namespace",
                len: 256
            })
        );
        assert!(cache_key(&"t".repeat(255), &"n".repeat(255), "k").is_ok());
    }

    /// Proves tenants cannot see each other's keys: no key of one tenant is a prefix of,
    /// or equal to, a key of another, even when the parts' bytes line up.
    #[test]
    fn tenants_do_not_collide() {
        let a = idempotency_key("ab", "c").unwrap();
        let b = idempotency_key("a", "bc").unwrap();
        assert_ne!(a, b);
        let a = cache_key("t", "ab", "c").unwrap();
        let b = cache_key("t", "a", "bc").unwrap();
        assert_ne!(a, b);
    }

    /// Proves a truncated or damaged record key is reported, not decoded into garbage.
    #[test]
    fn malformed_record_keys_are_errors() {
        assert_eq!(split_idempotency_key(b""), Err(KeyError::Malformed));
        assert_eq!(split_idempotency_key(b"\x05ab"), Err(KeyError::Malformed));
        assert_eq!(split_cache_key(b"\x01a"), Err(KeyError::Malformed));
        assert_eq!(split_cache_key(b"\x01a\x01\xff"), Err(KeyError::Malformed));
    }

    proptest::proptest! {
        /// Proves record keys decode back to the parts they were made from.
        #[test]
        fn record_keys_round_trip(t in ".{0,40}", n in ".{0,40}", k in ".{0,60}") {
            let ik = idempotency_key(&t, &k).unwrap();
            proptest::prop_assert_eq!(split_idempotency_key(&ik), Ok((t.as_str(), k.as_str())));
            let ck = cache_key(&t, &n, &k).unwrap();
            proptest::prop_assert_eq!(
                split_cache_key(&ck),
                Ok((t.as_str(), n.as_str(), k.as_str()))
            );
        }
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
