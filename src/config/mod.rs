//! Configuration: the TOML schema, its validation, and the compiled routing
//! snapshot that requests read.
//!
//! Loading is all-or-nothing: parse, expand `${VAR}`, validate every item and
//! build the routing tables; only a complete [`Snapshot`] is ever swapped in.

mod compile;
mod parse;
pub mod schema;
mod snapshot;
mod source;

use std::path::Path;

pub use compile::{compile_managed_key, sha256_from_hex, FieldError};
pub use parse::ParseCache;
pub use schema::*;
pub use snapshot::*;
pub use source::*;

/// Parses, expands, validates and compiles one config text, which the
/// snapshot keeps (moved, not copied: 1.4 MB of fresh pages on every reload
/// of a 10,000-key file). `parser` holds the items parsed by the previous
/// load; a reload passes the same one.
pub fn load_text(
    file: &str,
    text: String,
    env: &dyn Fn(&str) -> Option<String>,
    health: &crate::health::HealthRegistry,
    generation: u64,
    parser: &mut ParseCache,
) -> Result<Loaded, ConfigError> {
    let source = Source { file, text: &text };
    // Valid TOML, but never meant: an editor that truncated the file and
    // has not written it yet. Loading it would drop every key and channel.
    if text.trim().is_empty() {
        return Err(source.error(None, "the file is empty"));
    }
    let raw = parser.parse(&text).map_err(|e| {
        let line = e.span().map(|s| line_at(&text, s.start));
        source.error(line, e.message().trim().to_string())
    })?;
    let mut loaded = compile::compile(raw, &source, env, health, generation)?;
    loaded.snapshot.source_text = text;
    Ok(loaded)
}

/// The snapshot of a config text that must load (unit tests): no
/// environment, fresh channel health.
#[cfg(test)]
pub fn test_snapshot(text: impl Into<String>, generation: u64) -> Snapshot {
    let loaded = load_text(
        "t.toml",
        text.into(),
        &|_| None,
        &crate::health::HealthRegistry::default(),
        generation,
        &mut Default::default(),
    );
    loaded.unwrap_or_else(|e| panic!("{e}")).snapshot
}

/// Reads and loads a config file.
pub fn load_file(
    path: &Path,
    health: &crate::health::HealthRegistry,
    generation: u64,
    parser: &mut ParseCache,
) -> Result<Loaded, ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: file.clone(),
        line: None,
        message: format!("cannot read: {e}"),
    })?;
    load_text(
        &file,
        text,
        &|name| std::env::var(name).ok(),
        health,
        generation,
        parser,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_errors_point_at_their_own_line() {
        let text = "[server]\nlisten = \"127.0.0.1:1\"\nlistn = 1\n";
        let e = load_text(
            "f.toml",
            text.to_string(),
            &|_| None,
            &crate::health::HealthRegistry::default(),
            1,
            &mut ParseCache::default(),
        )
        .err()
        .expect("unknown field");
        assert_eq!(e.line, Some(3), "{e}");
        assert_eq!(line_at("a\nb", 0), 1);
        assert_eq!(line_at("a\nb", 2), 2);
    }
}
