//! `Retry-After`: delay-seconds and the three HTTP-date forms.
#![no_main]

#[path = "common.rs"]
mod common;

libfuzzer_sys::fuzz_target!(|input: common::Input| {
    common::run(&["retry-after"], &input);
});
