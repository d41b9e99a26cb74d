//! The DER walk that finds a client certificate's CN (`auth::principals::common_name`):
//! hand-written over untrusted bytes, so it must never panic or read out of bounds, and a
//! CN it returns must be text that appears in the input.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Some(cn) = permitd::auth::principals::common_name(data) {
        let needle = cn.as_bytes();
        assert!(needle.is_empty() || data.windows(needle.len()).any(|w| w == needle));
    }
});
