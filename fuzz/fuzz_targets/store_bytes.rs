//! What is read back from disk or Redis: value frames (`store::codec::decode`), record keys
//! (`store::keys::split_*`) and permit ids (`permits::id::parse`) from arbitrary bytes.
//! Never a panic; what decodes re-encodes to the same bytes.
#![no_main]

use permitd::store::{codec, keys};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(payload) = codec::decode(data) {
        assert_eq!(codec::encode(payload), data);
    }
    if let Ok((t, k)) = keys::split_idempotency_key(data) {
        assert_eq!(keys::idempotency_key(t, k).ok().as_deref(), Some(data));
    }
    if let Ok((t, n, k)) = keys::split_cache_key(data) {
        assert_eq!(keys::cache_key(t, n, k).ok().as_deref(), Some(data));
    }
    if let Ok((t, r, p)) = keys::split_learned_key(data) {
        assert_eq!(keys::learned_key(t, r, p).ok().as_deref(), Some(data));
    }
    if let Ok(s) = std::str::from_utf8(data)
        && let Some(id) = permitd::permits::id::parse(s)
    {
        assert!(!id.resource.is_empty());
    }
});
