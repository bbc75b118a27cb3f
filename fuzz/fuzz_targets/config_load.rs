//! The config loader on arbitrary text: it returns a snapshot or an error
//! naming the file, never panics, and any line it names exists (or is
//! the end of the text).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tollgate::config::load_text;
use tollgate::routing::HealthRegistry;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let env = |name: &str| (name == "SET").then(|| "value".to_string());
    let health = HealthRegistry::default();
    if let Err(e) = load_text("fuzz.toml", text, &env, &health, 1) {
        assert_eq!(e.file, "fuzz.toml");
        if let Some(line) = e.line {
            // One past the last newline is where an unexpected end is.
            let last = text.matches('\n').count() + 1;
            assert!(line >= 1 && line <= last, "line {line} out of range");
        }
    }
});
