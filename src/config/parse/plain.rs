//! Items in the plainest TOML, read without the `toml` parser.
//!
//! Most items of a big config are a header and a few `key = value` lines: a
//! `[[keys]]` item is a name, a hash and a list of groups. `toml` builds a
//! document tree for each such item (~2.5 µs); reading the lines directly
//! and deserializing the fields from them takes a fraction of that, which is
//! what a reload costs when every item of a 10,000-key file changed (and
//! every start).
//!
//! Only a strict subset is read here: one `[[table]]` header, then lines of
//! `bare_key = value` (spaces or tabs around the `=`), blank lines and
//! comments. A value is a basic string without escapes, a decimal integer,
//! `true` or `false`, or a one-line array of those. Anything else (escapes,
//! literal or multi-line strings, floats, dates, dotted or quoted keys,
//! inline tables, sub-tables, a repeated key, a control character) gives
//! `None`, and the item is parsed by `toml` as before. So what is accepted
//! here means the same as it means to `toml`.

use std::sync::Arc;

use serde::de::value::{BorrowedStrDeserializer, Error, MapDeserializer, SeqDeserializer};
use serde::de::{Deserialize, Deserializer, IntoDeserializer, Visitor};

use super::Item;

/// The item `text` defines, or `None` if it is not in the plain subset or
/// its fields do not deserialize (then `toml` parses it, for the error).
pub(super) fn item(text: &str) -> Option<Item> {
    let (table, body) = header(text)?;
    let map: MapDeserializer<'_, _, Error> = MapDeserializer::new(fields(body)?.into_iter());
    Some(match table {
        "groups" => Item::Group(Arc::new(Deserialize::deserialize(map).ok()?)),
        "models" => Item::Model(Arc::new(Deserialize::deserialize(map).ok()?)),
        "channels" => Item::Channel(Arc::new(Deserialize::deserialize(map).ok()?)),
        "users" => Item::User(Arc::new(Deserialize::deserialize(map).ok()?)),
        "keys" => Item::Key(Arc::new(Deserialize::deserialize(map).ok()?)),
        _ => return None,
    })
}

/// `[[table]]` alone on the first line: the table and the lines after it.
fn header(text: &str) -> Option<(&str, &str)> {
    let (line, body) = match text.split_once('\n') {
        Some((line, body)) => (line.strip_suffix('\r').unwrap_or(line), body),
        None => (text, ""),
    };
    let table = line.strip_prefix("[[")?.strip_suffix("]]")?;
    Some((table, body))
}

/// The `key = value` lines of an item's body, in order.
fn fields(body: &str) -> Option<Vec<(&str, Value<'_>)>> {
    let mut fields: Vec<(&str, Value<'_>)> = Vec::new();
    let mut lines = body.split('\n').peekable();
    while let Some(mut line) = lines.next() {
        // Only a `\r` that ends a line with its `\n` is a line break.
        if lines.peek().is_some() {
            line = line.strip_suffix('\r').unwrap_or(line);
        }
        let mut at = Cursor::new(line);
        at.skip_blanks();
        if at.line_ends() {
            continue;
        }
        let key = at.take_while(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        at.skip_blanks();
        if key.is_empty() || !at.eat(b'=') || fields.iter().any(|(k, _)| *k == key) {
            return None;
        }
        at.skip_blanks();
        let value = if at.eat(b'[') {
            let mut items = Vec::new();
            loop {
                at.skip_blanks();
                if at.eat(b']') {
                    break;
                }
                items.push(at.scalar()?);
                at.skip_blanks();
                if !at.eat(b',') {
                    at.eat(b']').then_some(())?;
                    break;
                }
            }
            Value::Array(items)
        } else {
            at.scalar()?
        };
        at.skip_blanks();
        if !at.line_ends() {
            return None;
        }
        fields.push((key, value));
    }
    Some(fields)
}

/// A position in one line (without its line break).
struct Cursor<'a> {
    line: &'a str,
    at: usize,
}

impl<'a> Cursor<'a> {
    fn new(line: &'a str) -> Self {
        Cursor { line, at: 0 }
    }

    fn peek(&self) -> Option<u8> {
        self.line.as_bytes().get(self.at).copied()
    }

    fn eat(&mut self, byte: u8) -> bool {
        let found = self.peek() == Some(byte);
        self.at += found as usize;
        found
    }

    fn take_while(&mut self, keep: impl Fn(u8) -> bool) -> &'a str {
        let start = self.at;
        while self.peek().is_some_and(&keep) {
            self.at += 1;
        }
        &self.line[start..self.at]
    }

    fn skip_blanks(&mut self) {
        self.take_while(|b| b == b' ' || b == b'\t');
    }

    /// At the end of the line, or at a comment that runs to it; a comment
    /// may hold tabs but no other control character.
    fn line_ends(&self) -> bool {
        match self.peek() {
            None => true,
            Some(b'#') => self.line[self.at..].bytes().all(|b| !is_control(b)),
            Some(_) => false,
        }
    }

    /// A string, integer or boolean. What follows it is checked by the
    /// caller: a `,` or `]` in an array, else the end of the line.
    fn scalar(&mut self) -> Option<Value<'a>> {
        Some(match self.peek()? {
            b'"' => {
                self.at += 1;
                let text = self.take_while(|b| b != b'"' && b != b'\\' && !is_control(b));
                self.eat(b'"').then_some(Value::Str(text))?
            }
            b'-' | b'0'..=b'9' => {
                let digits = self.take_while(|b| b == b'-' || b.is_ascii_digit());
                let unsigned = digits.strip_prefix('-').unwrap_or(digits);
                let canonical = unsigned == "0" || !unsigned.starts_with(['0', '-']);
                canonical.then_some(())?;
                Value::Int(digits.parse().ok()?)
            }
            _ => match self.take_while(|b| b.is_ascii_lowercase()) {
                "true" => Value::Bool(true),
                "false" => Value::Bool(false),
                _ => return None,
            },
        })
    }
}

/// Control characters other than tab, which TOML allows in no string or
/// comment (a lone `\r` among them).
fn is_control(b: u8) -> bool {
    (b < 0x20 && b != b'\t') || b == 0x7f
}

/// A value of the plain subset. Arrays hold no arrays.
enum Value<'a> {
    Str(&'a str),
    Int(i64),
    Bool(bool),
    Array(Vec<Value<'a>>),
}

impl<'de> IntoDeserializer<'de, Error> for Value<'de> {
    type Deserializer = Self;

    fn into_deserializer(self) -> Self {
        self
    }
}

/// Hands the value to the field's type as `toml`'s deserializer does: a
/// present value is `Some`, and a string may name an enum variant.
impl<'de> Deserializer<'de> for Value<'de> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self {
            Value::Str(s) => visitor.visit_borrowed_str(s),
            Value::Int(i) => visitor.visit_i64(i),
            Value::Bool(b) => visitor.visit_bool(b),
            Value::Array(items) => visitor.visit_seq(SeqDeserializer::new(items.into_iter())),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_some(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        match self {
            Value::Str(s) => visitor.visit_enum(BorrowedStrDeserializer::new(s)),
            other => other.deserialize_any(visitor),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct seq tuple tuple_struct map struct
        identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{edit, random};
    use super::super::{single_item, Piece};
    use super::*;

    fn shown(item: Option<Item>) -> Option<String> {
        item.map(|item| match item {
            Item::Group(g) => format!("{g:?}"),
            Item::Model(m) => format!("{m:?}"),
            Item::Channel(c) => format!("{c:?}"),
            Item::User(u) => format!("{u:?}"),
            Item::Key(k) => format!("{k:?}"),
        })
    }

    fn by_toml(text: &str) -> Option<String> {
        shown(toml::from_str::<Piece>(text).ok().and_then(single_item))
    }

    /// What `item` gives must be what `toml` gives; `None` is always safe.
    fn check(text: &str) -> bool {
        let plain = shown(item(text));
        if plain.is_some() {
            assert_eq!(plain, by_toml(text), "{text:?}");
        }
        plain.is_some()
    }

    const ITEMS: [&str; 5] = [
        "[[keys]]\nname = \"key-1\"\nkey_sha256 = \"a2d0867382dc4966ca1222e5bacb16973d01938be7642436d8fd36fff505256c\"\n\
         groups = [\"g1\", \"default\"]\nrpm = 60\nbudget_usd = 12\nexpires = \"2027-01-01T00:00:00Z\"\n\
         allow_ips = [\"127.0.0.1/32\"]\n\n",
        "[[channels]]\nname = \"ch-0\"\ntype = \"openai\"\nbase_url = \"http://127.0.0.1:1\"\n\
         api_key = \"sk-upstream-0\"\ngroups = [\"g0\"]\nmodels = [\"gpt-4o-mini\", \"model-0\"]\n\
         priority = -2\nweight = 1\nenabled = false\n# a comment\n",
        "[[users]]\nname = \"u\"\ngroup = \"g\"\nbudget_usd = 5\n",
        "[[groups]]\nname = \"g\"\nratio = 2\nall_channels = true\n",
        "[[models]]\nname = \"m\"\ninput = 3\noutput = 15\n",
    ];

    #[test]
    fn reads_plain_items_as_toml_reads_them() {
        for text in ITEMS {
            assert!(check(text), "{text}");
            assert!(check(&text.replace('\n', "\r\n")), "{text}");
            assert!(check(&text.replace(" = ", "\t=  ")), "{text}");
        }
    }

    #[test]
    fn a_key_is_set_once() {
        assert_eq!(fields("a = 1\nb = 2\n").map(|f| f.len()), Some(2));
        assert!(fields("a = 1\na = 2\n").is_none());
    }

    #[test]
    fn takes_the_plain_lines_and_declines_the_rest() {
        let key = |line: &str| format!("[[keys]]\nname = \"k\"\n{line}\n");
        let channel = |line: &str| format!("[[channels]]\nname = \"c\"\ntype = \"openai\"\n{line}");
        for text in [
            key("rpm = 0"),
            key("budget_usd = -0"),
            key("tpm = 9223372036854775807"),
            channel("priority = -9223372036854775808"),
            key("user = \"tab\there\""),
            key("user = \"é ü\""),
            key("user = \"\""),
            key("groups = []"),
            key("groups = [ \"a\" ,\t\"b\", ]"),
            key("user=\"u\""),
            key("  user = \"u\"  # a comment \"with\" [brackets]"),
            key("# only a comment\n\n"),
            channel("enabled = true"),
            "[[keys]]\nname = \"k\"".to_string(),
        ] {
            assert!(check(&text), "declined: {text:?}");
        }
        for text in [
            // Valid TOML beyond the plain subset: `toml` reads these.
            key("rpm = +1"),
            key("rpm = 1_000"),
            key("rpm = 0x10"),
            key("budget_usd = 1.5"),
            key("budget_usd = 1e3"),
            key("user = 'literal'"),
            key("user = \"esc\\u0041\""),
            key("user = \"\"\"multi\"\"\""),
            key("groups = [\n\"a\"]"),
            key("groups = [[\"a\"]]"),
            key("a.b = 1"),
            key("\"user\" = \"u\""),
            key("expires = 2027-01-01T00:00:00Z"),
            channel("model_map = { a = \"b\" }"),
            channel("[channels.model_map]\na = \"b\""),
            "[[ keys ]]\nname = \"k\"\n".to_string(),
            "[[keys]] # c\nname = \"k\"\n".to_string(),
            // Invalid TOML.
            key("rpm = 01"),
            key("rpm = 9223372036854775808"),
            key("rpm = -"),
            key("rpm = 1-2"),
            key("rpm = 1 2"),
            key("user = \"open"),
            key("name = \"twice\""),
            key("user = \"\u{1}\""),
            key("user = \"\u{7f}\""),
            key("# \u{7f}"),
            key("user = \"u\" # \u{1}"),
            key("user = \"u\"\rrpm = 1"),
            key("groups = [\"a\" \"b\"]"),
            key("groups = [,]"),
            key("groups = [\"a\",,]"),
            key("groups = [\"a\"] x"),
            key("enabled = truex"),
            key("rpm ="),
            key("= 1"),
            "[[keys]]\r".to_string(),
            "[[keys]]\nname = \"k\"\r".to_string(),
            // Fields that do not deserialize.
            key("rpm = -1"),
            key("unknown = 1"),
            key("groups = \"g\""),
            "[[keys]]\nuser = \"u\"\n".to_string(),
            "[[server]]\nname = \"k\"\n".to_string(),
        ] {
            assert!(!check(&text), "accepted: {text:?}");
        }
    }

    /// Random edits of plain items with the characters that decide what a
    /// line is: whatever is read here is what `toml` reads.
    #[test]
    fn edited_items_read_as_toml_reads_them_or_not_at_all() {
        let mut next = random(0x2545_F491_4F6C_DD1D);
        let marks = [
            "\"",
            "\\",
            "#",
            "[",
            "]",
            ",",
            " ",
            "\t",
            "=",
            ".",
            "-",
            "+",
            "_",
            "0",
            "1",
            "e",
            "x",
            "'",
            "\r",
            "\n",
            "\r\n",
            "\u{1}",
            "\u{7f}",
            "{",
            "}",
            ":",
            "T",
            "true",
            "é",
            "\"\"\"",
            "9223372036854775807",
            "inf",
            "\nrpm = 1\n",
            "\n[keys.x]\n",
        ];
        let mut accepted = 0;
        let mut by_toml_count = 0;
        for round in 0..30_000 {
            let mut text = ITEMS[round % ITEMS.len()].to_string();
            edit(&mut text, &marks, &mut next);
            accepted += check(&text) as usize;
            by_toml_count += by_toml(&text).is_some() as usize;
        }
        // So that the comparison is not only of declined texts.
        assert!(
            accepted > 3_000,
            "{accepted} of {by_toml_count} read by toml"
        );
    }
}
