//! The key layout of every store backend, in one place: which tree (sled) or key space
//! (Redis) holds what, and how a domain name becomes key bytes and back.
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

/// Tree holding what a bucket learned about its upstream (learned limits, the adaptive
/// rate, the cooldown), keyed by [`learned_key`], so a restart does not storm.
pub const LEARNED_TREE: &str = "learned";

/// Every tree name the layout defines, used or reserved. Names are unique.
pub const ALL_TREES: [&str; 4] = [RESOURCES_TREE, IDEMPOTENCY_TREE, CACHE_TREE, LEARNED_TREE];

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
    /// [`LEARNED_TREE`], keyed by [`learned_key`].
    Learned,
}

impl RecordTree {
    /// Every record tree.
    pub const ALL: [RecordTree; 3] = [
        RecordTree::Idempotency,
        RecordTree::Cache,
        RecordTree::Learned,
    ];

    /// The tree's name in [`ALL_TREES`].
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Idempotency => IDEMPOTENCY_TREE,
            Self::Cache => CACHE_TREE,
            Self::Learned => LEARNED_TREE,
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

/// The key of what the bucket of `partition` of `resource` of `tenant` learned, in
/// [`LEARNED_TREE`]: `[tenant length u8][tenant][resource length u8][resource][partition]`.
///
/// # Errors
/// [`KeyError::TooLong`] when the tenant or the resource name is over 255 bytes.
pub fn learned_key(tenant: &str, resource: &str, partition: &str) -> Result<Vec<u8>, KeyError> {
    cache_key(tenant, resource, partition)
}

/// `(tenant, resource, partition)` of a key made by [`learned_key`].
///
/// # Errors
/// [`KeyError::Malformed`] when the bytes were not written by [`learned_key`].
pub fn split_learned_key(bytes: &[u8]) -> Result<(&str, &str, &str), KeyError> {
    split_cache_key(bytes)
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

/// The Redis hash holding every resource: `<prefix>resources`, field = [`resource_key`],
/// value = the framed definition.
///
/// `prefix` (e.g. `"pd:"`) namespaces every key of one deployment, so several can share a
/// Redis. One hash keeps an insert-or-replace a single atomic command on one key.
#[must_use]
pub fn redis_resources_key(prefix: &str) -> Vec<u8> {
    format!("{prefix}{RESOURCES_TREE}").into_bytes()
}

/// The shared start of every Redis key of record tree `tree`: `<prefix>{rec:<tree>}:`.
///
/// The braces are a Redis Cluster hash tag: the record keys and the index of one tree hash
/// to one slot, so a Lua script over a record and its index stays legal on a cluster.
fn redis_record_space(prefix: &str, tree: RecordTree) -> String {
    format!("{prefix}{{rec:{}}}:", tree.name())
}

/// The Redis string key holding record `key` of `tree`: `<prefix>{rec:<tree>}:r:<key bytes>`.
///
/// Redis keys are binary-safe, so the record key's bytes go in as they are.
#[must_use]
pub fn redis_record_key(prefix: &str, tree: RecordTree, key: &[u8]) -> Vec<u8> {
    let mut out = redis_record_space(prefix, tree).into_bytes();
    out.extend_from_slice(b"r:");
    out.extend_from_slice(key);
    out
}

/// The Redis sorted set indexing the record keys of `tree`: `<prefix>{rec:<tree>}:index`,
/// every member scored 0 and equal to a record key's bytes, so `ZRANGE .. BYLEX` lists
/// record keys in byte order (Redis compares members with `memcmp`).
#[must_use]
pub fn redis_record_index(prefix: &str, tree: RecordTree) -> Vec<u8> {
    let mut out = redis_record_space(prefix, tree).into_bytes();
    out.extend_from_slice(b"index");
    out
}

/// Whether `prefix` can namespace the Redis keys: it must not contain `{` or `}`, which
/// could form a hash tag (the empty `{}` makes Redis hash the whole key) and split a
/// record from its index across cluster slots.
#[must_use]
pub fn valid_redis_prefix(prefix: &str) -> bool {
    !prefix.contains(['{', '}'])
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

/// The hash tag Redis Cluster hashes for `key` (cluster spec: the bytes between the first
/// `{` and the first `}` after it, if not empty; otherwise the whole key). The store's and
/// the cluster engine's layout tests check their keys with it.
#[cfg(test)]
pub(crate) fn hash_tag(key: &[u8]) -> &[u8] {
    let Some(open) = key.iter().position(|&b| b == b'{') else {
        return key;
    };
    let rest = &key[open + 1..];
    match rest.iter().position(|&b| b == b'}') {
        Some(close) if close > 0 => &rest[..close],
        _ => key,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pins the tree names: renaming one would orphan every value already on disk.
    #[test]
    fn tree_names_are_pinned_and_unique() {
        assert_eq!(ALL_TREES, ["resources", "idempotency", "cache", "learned"]);
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

    /// Pins the Redis key names: renaming one would orphan every key already in Redis.
    #[test]
    fn redis_key_names_are_pinned() {
        assert_eq!(redis_resources_key("pd:"), b"pd:resources");
        assert_eq!(
            redis_record_key("pd:", RecordTree::Idempotency, b"\x07defaultk"),
            b"pd:{rec:idempotency}:r:\x07defaultk"
        );
        assert_eq!(
            redis_record_key("", RecordTree::Cache, &[0xff]),
            b"{rec:cache}:r:\xff"
        );
        assert_eq!(
            redis_record_index("pd:", RecordTree::Cache),
            b"pd:{rec:cache}:index"
        );
    }

    /// Proves a record and its tree's index share one cluster slot, and the two trees do
    /// not collide, whatever the record key holds (braces included).
    #[test]
    fn redis_record_and_index_share_a_hash_tag() {
        for tree in RecordTree::ALL {
            let index = redis_record_index("pd:", tree);
            for key in [&b""[..], b"{x}", b"}{", b"\x07default{k}"] {
                let record = redis_record_key("pd:", tree, key);
                assert_eq!(hash_tag(&record), hash_tag(&index));
                assert_eq!(hash_tag(&record), format!("rec:{}", tree.name()).as_bytes());
            }
        }
        assert_ne!(
            redis_record_index("pd:", RecordTree::Cache),
            redis_record_index("pd:", RecordTree::Idempotency)
        );
    }

    /// Proves prefixes that could form a hash tag of their own are refused.
    #[test]
    fn redis_prefix_must_not_hold_braces() {
        assert!(valid_redis_prefix("pd:"));
        assert!(valid_redis_prefix(""));
        assert!(!valid_redis_prefix("x{}"));
        assert!(!valid_redis_prefix("{a}"));
        assert!(!valid_redis_prefix("a}"));
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
