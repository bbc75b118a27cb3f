//! Where a config text came from, to point errors at a file and line, and
//! the `${VAR}` expansion of its values.

use std::fmt;

/// A load failure, pointing at the file, line and item where it can.
#[derive(Debug, Clone)]
pub struct ConfigError {
    pub file: String,
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: {}", self.file, line, self.message),
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

/// The text of a config file and where it came from, for error locations.
pub struct Source<'a> {
    pub file: &'a str,
    pub text: &'a str,
}

impl Source<'_> {
    pub fn error(&self, line: Option<usize>, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.to_string(),
            line,
            message: message.into(),
        }
    }

    /// Line (1-based) of the `index`-th `[[table]]` header, e.g. the third
    /// `[[channels]]`; for index `None`, the `[table]` header.
    pub fn line_of(&self, table: &str, index: Option<usize>) -> Option<usize> {
        let header = match index {
            Some(_) => format!("[[{table}]]"),
            None => format!("[{table}]"),
        };
        self.text
            .lines()
            .enumerate()
            .filter(|(_, l)| l.trim_start().starts_with(&header))
            .nth(index.unwrap_or(0))
            .map(|(n, _)| n + 1)
    }

    /// Line of `field = ...` inside the item that `line_of(table, index)`
    /// finds, so an error points at the offending value; the item's header
    /// line when the field is not written there.
    pub fn line_of_field(&self, table: &str, index: Option<usize>, field: &str) -> Option<usize> {
        let header = self.line_of(table, index)?;
        let found = self
            .text
            .lines()
            .enumerate()
            // `header` is 1-based, so this starts on the line after it.
            .skip(header)
            .take_while(|(_, l)| !l.trim_start().starts_with('['))
            .find(|(_, l)| {
                l.trim_start()
                    .strip_prefix(field)
                    .is_some_and(|rest| rest.trim_start().starts_with('='))
            });
        Some(found.map_or(header, |(n, _)| n + 1))
    }
}

/// 1-based line of a byte offset.
pub(super) fn line_at(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// Expands `${VAR}` references. `Err(name)` names the first unset variable.
pub fn expand_vars(value: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        let Some(len) = rest[start + 2..].find('}') else {
            break;
        };
        let name = &rest[start + 2..start + 2 + len];
        out.push_str(&rest[..start]);
        match env(name) {
            Some(v) if !v.is_empty() => out.push_str(&v),
            _ => return Err(name.to_string()),
        }
        rest = &rest[start + 3 + len..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "A" => Some("alpha".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn expands_set_variables_and_names_unset_ones() {
        assert_eq!(expand_vars("x-${A}-y", &env).unwrap(), "x-alpha-y");
        assert_eq!(expand_vars("plain", &env).unwrap(), "plain");
        assert_eq!(expand_vars("${B}", &env).unwrap_err(), "B");
        assert_eq!(expand_vars("${EMPTY}", &env).unwrap_err(), "EMPTY");
    }

    #[test]
    fn locates_array_table_headers() {
        let text = "[server]\n\n[[channels]]\nname='a'\n  [[channels]]\nname='b'\n";
        let s = Source { file: "f", text };
        assert_eq!(s.line_of("channels", Some(0)), Some(3));
        assert_eq!(s.line_of("channels", Some(1)), Some(5));
        assert_eq!(s.line_of("channels", Some(2)), None);
        assert_eq!(s.line_of("server", None), Some(1));
    }

    #[test]
    fn locates_fields_inside_an_item() {
        let text = "[[groups]]\nname = 'a'\n\n[[groups]]\nname='b'\n  ratio = 0\nratios = 1\n[[keys]]\nratio = 2\n";
        let s = Source { file: "f", text };
        assert_eq!(s.line_of_field("groups", Some(1), "ratio"), Some(6));
        assert_eq!(s.line_of_field("groups", Some(1), "name"), Some(5));
        assert_eq!(
            s.line_of_field("groups", Some(0), "ratio"),
            Some(1),
            "not written: the header, never the next item's field"
        );
        assert_eq!(s.line_of_field("groups", Some(2), "ratio"), None);
    }
}
