//! The config file (`Config::from_toml_str`): any text is a config or an error naming what
//! is wrong, never a panic (principals, limits, resources, TLS paths included).
#![no_main]

libfuzzer_sys::fuzz_target!(|text: &str| {
    // Paths in a fuzzed config must not make the target read real files (or block on a
    // FIFO): only configs that name none are loaded ([rls] config is a path too).
    if text.contains("_file") || text.contains("rls") {
        return;
    }
    match permitd::config::Config::from_toml_str(text, permitd::config::Overrides::default()) {
        Ok(_) => {}
        Err(e) => assert!(!e.to_string().is_empty()),
    }
});
