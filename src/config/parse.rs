//! TOML parsing that reuses the items of the previous load.
//!
//! Parsing dominates a reload of a big config: `toml` takes tens of
//! milliseconds for a 10,000-key file, most of it building a document tree
//! for text that has not changed since the last reload. So the text is cut
//! into its `[[groups]]`, `[[models]]`, `[[channels]]`, `[[users]]` and
//! `[[keys]]` items (each with its `[keys.x]` sub-tables) and everything
//! else; an item whose exact text was parsed by the previous load is taken
//! from [`ParseCache`], and only new or edited items and the rest are parsed.
//! A new item in the plainest TOML (`key = value` lines of simple strings,
//! integers, booleans and one-line arrays) is read by [`plain`] without
//! building a `toml` document; any other goes to `toml`.
//!
//! The result is what `toml::from_str` gives for the whole text: the cut
//! follows TOML's own rules for strings, comments and multi-line values,
//! and whenever the text is not laid out plainly (content before the first
//! table, quoted keys in a header, a sub-table away from its item) or any
//! part fails to parse, the whole text is parsed instead, which also gives
//! errors their usual message and line.

use std::ops::Range;
use std::sync::Arc;

use foldhash::{HashMap, HashMapExt};
use serde::Deserialize;

use super::{ChannelDef, GroupDef, KeyDef, ModelDef, RawConfig, UserDef};

mod plain;

/// The items parsed by the last load, by their exact text.
#[derive(Default)]
pub struct ParseCache {
    items: Items,
    /// The items the last parse replaced, until [`ParseCache::free_replaced`].
    replaced: Items,
}

/// Keys are whole items' text, hashed with foldhash: SipHash over the
/// ~1.4 MB of a 10,000-key file took a few milliseconds per reload.
type Items = HashMap<Box<str>, Item>;

/// Shared with the configs built from it: a reload hands out the items it
/// keeps by reference count instead of copying each one.
#[derive(Clone)]
enum Item {
    Group(Arc<GroupDef>),
    Model(Arc<ModelDef>),
    Channel(Arc<ChannelDef>),
    User(Arc<UserDef>),
    Key(Arc<KeyDef>),
}

impl ParseCache {
    /// Parses a config text, with the result and errors of
    /// `toml::from_str::<RawConfig>(text)`. Afterwards the cache holds the
    /// items of this text (after an error, those it held before too).
    pub fn parse(&mut self, text: &str) -> Result<RawConfig, toml::de::Error> {
        let layout = layout(text);
        let mut parsed = Items::with_capacity(layout.as_ref().map_or(0, |l| l.items.len()));
        match layout.and_then(|layout| self.parse_by_items(text, &layout, &mut parsed)) {
            Some(raw) => {
                self.replaced = std::mem::replace(&mut self.items, parsed);
                Ok(raw)
            }
            None => {
                self.items.extend(parsed);
                toml::from_str(text)
            }
        }
    }

    /// Frees the items that the last parse replaced: when every item of a
    /// big file was edited, ~10,000 of them, which a reload frees after it
    /// has answered instead of before.
    pub fn free_replaced(&mut self) {
        self.replaced = Items::default();
    }

    /// Assembles the config from cached and freshly parsed items, moving
    /// every item it uses into `parsed`; `None` when some part does not
    /// parse, so that the whole text is parsed again for the error.
    fn parse_by_items(
        &mut self,
        text: &str,
        layout: &Layout,
        parsed: &mut Items,
    ) -> Option<RawConfig> {
        let mut raw: RawConfig = toml::from_str(&layout.rest(text)).ok()?;
        for range in &layout.items {
            let piece = &text[range.clone()];
            let item = match parsed.get(piece) {
                Some(item) => item.clone(),
                None => {
                    let (piece, item) = match self.items.remove_entry(piece) {
                        Some(entry) => entry,
                        None => {
                            let item = plain::item(piece)
                                .or_else(|| single_item(toml::from_str(piece).ok()?))?;
                            (piece.into(), item)
                        }
                    };
                    parsed.insert(piece, item.clone());
                    item
                }
            };
            match item {
                Item::Group(g) => raw.groups.push(g),
                Item::Model(m) => raw.models.push(m),
                Item::Channel(c) => raw.channels.push(c),
                Item::User(u) => raw.users.push(u),
                Item::Key(k) => raw.keys.push(k),
            }
        }
        Some(raw)
    }
}

/// What one item's text may hold: one `[[table]]` header of an item table,
/// with its sub-tables. Anything else (a `[server]` the cut missed) is an
/// unknown field, so the whole text is parsed instead.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Piece {
    #[serde(default)]
    groups: Vec<GroupDef>,
    #[serde(default)]
    models: Vec<ModelDef>,
    #[serde(default)]
    channels: Vec<ChannelDef>,
    #[serde(default)]
    users: Vec<UserDef>,
    #[serde(default)]
    keys: Vec<KeyDef>,
}

/// The one item a piece of text defines.
fn single_item(mut piece: Piece) -> Option<Item> {
    let count = piece.groups.len() + piece.models.len() + piece.channels.len();
    if count + piece.users.len() + piece.keys.len() != 1 {
        return None;
    }
    Some(if let Some(g) = piece.groups.pop() {
        Item::Group(Arc::new(g))
    } else if let Some(m) = piece.models.pop() {
        Item::Model(Arc::new(m))
    } else if let Some(c) = piece.channels.pop() {
        Item::Channel(Arc::new(c))
    } else if let Some(u) = piece.users.pop() {
        Item::User(Arc::new(u))
    } else {
        Item::Key(Arc::new(piece.keys.pop()?))
    })
}

/// The tables whose `[[name]]` items are parsed one by one.
const ITEM_TABLES: [&str; 5] = ["groups", "models", "channels", "users", "keys"];

/// Where a config text's items are, and the ranges of everything else.
#[derive(Debug, PartialEq)]
struct Layout {
    items: Vec<Range<usize>>,
    rest: Vec<Range<usize>>,
}

impl Layout {
    fn rest(&self, text: &str) -> String {
        let mut rest = String::new();
        for range in &self.rest {
            rest.push_str(&text[range.clone()]);
        }
        rest
    }
}

/// Cuts a config text into items and the rest; `None` when the text is not
/// laid out plainly enough to be sure of the cut.
fn layout(text: &str) -> Option<Layout> {
    let sections = sections(text)?;
    // What comes before the first table (blank lines and comments) goes
    // with the rest, whose parse checks it like the whole text's would
    // (a lone `\r`, a control character in a comment).
    let first_table = sections.first().map_or(text.len(), |(start, _)| *start);
    let mut layout = Layout {
        items: Vec::new(),
        rest: Vec::new(),
    };
    layout.rest.push(0..first_table);
    // The item table that sub-table headers may still extend.
    let mut open_item: Option<&str> = None;
    let mut sections = sections.into_iter().peekable();
    while let Some((start, header)) = sections.next() {
        let end = sections.peek().map_or(text.len(), |(next, _)| *next);
        let first = header.first;
        if !ITEM_TABLES.contains(&first) {
            layout.rest.push(start..end);
            open_item = None;
        } else if header.array && !header.nested {
            layout.items.push(start..end);
            open_item = Some(first);
        } else if header.nested && open_item == Some(first) {
            layout.items.last_mut()?.end = end;
        } else {
            return None;
        }
    }
    Some(layout)
}

/// A table header, `[a.b]` or `[[a.b]]`, with bare keys only.
#[derive(Debug, PartialEq)]
struct Header<'a> {
    array: bool,
    /// `a`, the top-level table.
    first: &'a str,
    /// Whether there is more than `first` (`a.b`).
    nested: bool,
}

/// The start of every table header line and the header, in order; `None`
/// if anything but blank lines and comments comes before the first one, or
/// a string or bracket is left open.
fn sections(text: &str) -> Option<Vec<(usize, Header<'_>)>> {
    let bytes = text.as_bytes();
    let mut found = Vec::new();
    // Open `[` and `{` of the value being read.
    let mut depth = 0usize;
    let mut line_start = Some(0);
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if let Some(start) = line_start {
            match b {
                b' ' | b'\t' => {
                    i += 1;
                    continue;
                }
                b'[' if depth == 0 => {
                    let (header, next_line) = header(text, i)?;
                    found.push((start, header));
                    i = next_line;
                    line_start = Some(i);
                    continue;
                }
                b'#' | b'\n' | b'\r' => {}
                _ if found.is_empty() => return None,
                _ => {}
            }
            line_start = None;
        }
        match b {
            b'\n' => {
                i += 1;
                line_start = Some(i);
            }
            b'#' => i = memchr::memchr(b'\n', &bytes[i..]).map_or(bytes.len(), |n| i + n),
            b'"' | b'\'' => i = string_end(bytes, i)?,
            b'[' | b'{' => {
                depth += 1;
                i += 1;
            }
            b']' | b'}' => {
                depth = depth.checked_sub(1)?;
                i += 1;
            }
            _ => i += 1,
        }
    }
    (depth == 0).then_some(found)
}

/// Reads the header line starting at `at` (a `[`): the header and the
/// offset of the next line.
fn header(text: &str, at: usize) -> Option<(Header<'_>, usize)> {
    let line_end = memchr::memchr(b'\n', &text.as_bytes()[at..]).map_or(text.len(), |n| at + n);
    let line = &text[at..line_end];
    let (array, inner) = match line.strip_prefix("[[") {
        Some(inner) => (true, inner),
        None => (false, &line[1..]),
    };
    let close = if array { "]]" } else { "]" };
    let (name, after) = inner.split_once(close)?;
    let after = after.trim_start_matches([' ', '\t']);
    if !(after.is_empty() || after == "\r" || after.starts_with('#')) {
        return None;
    }
    let mut keys = name.split('.');
    let first = bare_key(keys.next()?)?;
    let mut nested = false;
    for key in keys {
        bare_key(key)?;
        nested = true;
    }
    Some((
        Header {
            array,
            first,
            nested,
        },
        (line_end + 1).min(text.len()),
    ))
}

/// The offset just past the string starting at `at`, by TOML's lexing:
/// basic (`"`) strings end at an unescaped quote, literal (`'`) ones at the
/// next quote, both before the line ends; multi-line ones at the first
/// closing triple quote, which may be followed by up to two more quotes
/// that belong to the string. `None` for a string left open.
fn string_end(bytes: &[u8], at: usize) -> Option<usize> {
    let quote = bytes[at];
    let basic = quote == b'"';
    let triple = [quote; 3];
    let multi_line = bytes[at..].starts_with(&triple);
    let mut i = at + if multi_line { 3 } else { 1 };
    loop {
        let rest = &bytes[i..];
        i += match (basic, multi_line) {
            (true, true) => memchr::memchr2(quote, b'\\', rest),
            (true, false) => memchr::memchr3(quote, b'\\', b'\n', rest),
            (false, true) => memchr::memchr(quote, rest),
            (false, false) => memchr::memchr2(quote, b'\n', rest),
        }?;
        match bytes[i] {
            b'\\' if matches!(bytes.get(i + 1), Some(b'\\' | b'"')) => i += 2,
            b'\\' => i += 1,
            b'\n' => return None,
            _ if !multi_line => return Some(i + 1),
            _ if bytes[i..].starts_with(&triple) => {
                i += 3;
                for _ in 0..2 {
                    if bytes.get(i) == Some(&quote) {
                        i += 1;
                    }
                }
                return Some(i);
            }
            _ => i += 1,
        }
    }
}

/// A header's key without the spaces around it, if it is bare.
fn bare_key(key: &str) -> Option<&str> {
    let key = key.trim_matches([' ', '\t']);
    let valid = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    valid.then_some(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A config with everything the cut has to get right: strings of every
    /// kind holding header-like lines and quotes, comments, multi-line
    /// arrays and inline tables, sub-tables of items, items between
    /// ordinary tables.
    const TRICKY: &str = r#"# leading comment with "quote" and 'apostrophe'

[server]
listen = "127.0.0.1:1"   # [[keys]] in a comment
admin_token = """
[[keys]]
name = "not a key"
"""

[[groups]]
name = "g"
ratio = 1.5
description = '''
[server]
it's '' here'''

[[models]]
name = "m"
input = 1
output = "2.5"

[[channels]]
name = "c1"
type = "openai"
base_url = "http://127.0.0.1:9"
api_key = "k\"[[keys]]\\"
groups = [
  "g",
  # ]
]
models = [
"m", ]
[channels.model_map]
"m" = "upstream-m"

[routing]
auto_groups = ["g"]

[[keys]]
name = "k1"
key = 'sk-[x]'
groups = ["g"]
allow_ips = ["127.0.0.1/32",
  "10.0.0.0/8"]

[[keys]]
name = "k2"
key_sha256 = "00"

[[users]]
name = "u"
budget_usd = 5
"#;

    /// Numbers below a bound, the same for the same seed (xorshift).
    pub(super) fn random(mut seed: u64) -> impl FnMut(usize) -> usize {
        move |below| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % below as u64) as usize
        }
    }

    /// One or two random edits of `text`: a mark inserted, or up to four
    /// bytes removed.
    pub(super) fn edit(text: &mut String, marks: &[&str], next: &mut impl FnMut(usize) -> usize) {
        for _ in 0..1 + next(2) {
            let mut at = next(text.len());
            while !text.is_char_boundary(at) {
                at -= 1;
            }
            if next(4) == 0 {
                let end = (at + 1 + next(4)).min(text.len());
                if text.is_char_boundary(end) {
                    text.replace_range(at..end, "");
                }
            } else {
                text.insert_str(at, marks[next(marks.len())]);
            }
        }
    }

    fn full(text: &str) -> String {
        match toml::from_str::<RawConfig>(text) {
            Ok(raw) => format!("{raw:?}"),
            Err(e) => format!("error: {e}"),
        }
    }

    fn cached(cache: &mut ParseCache, text: &str) -> String {
        match cache.parse(text) {
            Ok(raw) => format!("{raw:?}"),
            Err(e) => format!("error: {e}"),
        }
    }

    fn pieces<'t>(text: &'t str, ranges: &[Range<usize>]) -> Vec<&'t str> {
        ranges.iter().map(|r| text[r.clone()].trim_end()).collect()
    }

    #[test]
    fn cuts_items_with_their_sub_tables_and_keeps_the_rest_in_order() {
        let text = "[server]\nlisten = \"a\"\n\n[[keys]]\nname = \"k\"\n[keys.x]\na = 1\n\
                    [[channels]]\nname = \"c\"\n[store]\n[[keys]]\nname = \"j\"\n";
        let layout = layout(text).expect("plain layout");
        assert_eq!(
            pieces(text, &layout.items),
            [
                "[[keys]]\nname = \"k\"\n[keys.x]\na = 1",
                "[[channels]]\nname = \"c\"",
                "[[keys]]\nname = \"j\"",
            ]
        );
        assert_eq!(layout.rest(text), "[server]\nlisten = \"a\"\n\n[store]\n");

        let nested = "[[keys]]\nx = [\n  [1, 2],\n[3]]\n[[keys]]\n";
        let layout = super::layout(nested).expect("plain layout");
        assert_eq!(
            pieces(nested, &layout.items),
            ["[[keys]]\nx = [\n  [1, 2],\n[3]]", "[[keys]]"]
        );
    }

    #[test]
    fn an_item_piece_holds_nothing_but_item_tables() {
        let piece = |text| toml::from_str::<Piece>(text).ok().and_then(single_item);
        assert!(matches!(piece("[[keys]]\nname = 'k'\n"), Some(Item::Key(k)) if k.name == "k"));
        assert!(piece("[[keys]]\nname = 'k'\n[server]\n").is_none());
        assert!(piece("[[keys]]\nname = 'k'\n[[keys]]\nname = 'j'\n").is_none());
        assert!(piece("").is_none());
    }

    #[test]
    fn strings_comments_and_multi_line_values_do_not_cut() {
        let layout = layout(TRICKY).expect("plain layout");
        let items = pieces(TRICKY, &layout.items);
        assert_eq!(items.len(), 6, "{items:#?}");
        assert!(items[0].starts_with("[[groups]]") && items[0].ends_with("here'''"));
        assert!(items[2].ends_with("\"m\" = \"upstream-m\""), "{}", items[2]);
        assert!(items[3].ends_with("\"10.0.0.0/8\"]"), "{}", items[3]);
        let rest = layout.rest(TRICKY);
        assert!(rest.starts_with("# leading comment"), "{rest}");
        assert!(rest.contains("name = \"not a key\"\n\"\"\"\n\n"));
        assert!(
            rest.ends_with("[routing]\nauto_groups = [\"g\"]\n\n"),
            "{rest}"
        );
    }

    /// Found by review: the text before the first table was dropped
    /// unchecked, and the check for content there skipped lines that start
    /// with a lone `\r`.
    #[test]
    fn the_text_before_the_first_table_is_checked_too() {
        for text in [
            "\r",
            "\rx = 1\n",
            "\r[server]\n",
            " \r garbage = = [ ] \n[[keys]]\nname = \"k\"\n",
            "# a\rb = 1\n[server]\n",
            "#\u{1}\n[server]\n",
            "#\u{7f}\n",
            "#\u{1}",
        ] {
            let expected = full(text);
            assert!(expected.starts_with("error"), "{text:?}: {expected}");
            assert_eq!(
                cached(&mut ParseCache::default(), text),
                expected,
                "{text:?}"
            );
        }
        let commented = "# comment\n\n[[keys]]\nname = \"k\"\n";
        assert_eq!(
            cached(&mut ParseCache::default(), commented),
            full(commented)
        );
    }

    #[test]
    fn gives_up_on_anything_but_a_plain_layout() {
        for text in [
            "keys = []\n[[keys]]\nname = \"k\"\n",
            "[\"keys\"]\n",
            "[[ \"keys\" ]]\nname = \"k\"\n",
            "[keys]\n",
            "[keys.x]\na = 1\n",
            "[[keys]]\nname = \"k\"\n[server]\n[keys.x]\na = 1\n",
            "[[keys]]\n[channels.x]\n",
            "[[keys]]\nname = \"open\n",
            "[[keys]]\nname = \"\"\"open\n",
            "[[keys]]\nname = '''open''\n",
            "[[keys]]\ngroups = [\n",
            "[[keys]]\ngroups = ]\n",
            "[[keys]] x\n",
            "[[keys]\n",
        ] {
            assert_eq!(layout(text), None, "{text:?}");
        }
    }

    #[test]
    fn multi_line_strings_end_like_toml_ends_them() {
        for (text, end) in [
            ("\"\"\"a\"\"\"\"", 8),
            ("\"\"\"a\"\"\"\"\"", 9),
            (r##""""a\"""" x"##, 9),
            (r##""""a\\""" x"##, 9),
            (r##""a\\" x"##, 5),
            (r##""a\" x"##, 0),
            ("'''a'''''", 9),
            (r"'a\' x", 4),
        ] {
            let found = string_end(text.as_bytes(), 0).unwrap_or(0);
            assert_eq!(found, end, "{text}");
        }
    }

    #[test]
    fn parses_as_the_whole_text_parses() {
        let mut cache = ParseCache::default();
        assert_eq!(cached(&mut cache, TRICKY), full(TRICKY));
        assert!(!full(TRICKY).starts_with("error"), "{}", full(TRICKY));
        assert_eq!(cache.items.len(), 6, "every item is kept for the next load");
        // The same text again comes from the cache, and an edited item is
        // parsed again.
        assert_eq!(cached(&mut cache, TRICKY), full(TRICKY));
        let edited = TRICKY.replace("name = \"k1\"", "name = \"k1-renamed\"");
        assert_eq!(cached(&mut cache, &edited), full(&edited));
        assert_eq!(cache.items.len(), 6, "the replaced item is not kept");
        assert_eq!(cache.replaced.len(), 1, "until it is freed");
        cache.free_replaced();
        assert!(cache.replaced.is_empty());
        assert!(cached(&mut cache, &edited).contains("k1-renamed"));

        let twice = format!("{TRICKY}[[users]]\nname = \"u\"\nbudget_usd = 5\n");
        assert_eq!(cached(&mut cache, &twice), full(&twice));
        assert_eq!(cached(&mut ParseCache::default(), &twice), full(&twice));
    }

    #[test]
    fn errors_are_the_whole_texts_errors_and_keep_the_cache() {
        let mut cache = ParseCache::default();
        cached(&mut cache, TRICKY);
        let broken = TRICKY.replace("name = \"k2\"", "name = \"k2\"\nrpm = \"many\"");
        let error = cached(&mut cache, &broken);
        assert!(
            error.starts_with("error: TOML parse error at line 48"),
            "{error}"
        );
        assert_eq!(error, full(&broken));
        assert_eq!(
            cache.items.len(),
            6,
            "a refused text leaves the cache as it was"
        );
    }

    /// Random edits of the tricky config with the characters that steer the
    /// cut: the result, or the error, is always the whole text's.
    #[test]
    fn edited_texts_parse_as_the_whole_text_parses() {
        let mut next = random(0x9E37_79B9_7F4A_7C15);
        let marks = [
            "\"",
            "'",
            "[",
            "]",
            "{",
            "}",
            "\n",
            "\\",
            "#",
            "\"\"\"",
            "'''",
            "\\\"",
            "\n[[keys]]\n",
            "\n[keys.x]\n",
            "\n[server]\n",
            " # \"[x]\n",
            "\"[[keys]]\"",
            "\r",
            "\u{1}",
        ];
        let mut warm = ParseCache::default();
        let (mut cut, mut cut_and_parsed) = (0, 0);
        for _ in 0..3000 {
            let mut text = TRICKY.to_string();
            edit(&mut text, &marks, &mut next);
            let expected = full(&text);
            assert_eq!(cached(&mut warm, &text), expected, "{text}");
            assert_eq!(
                cached(&mut ParseCache::default(), &text),
                expected,
                "{text}"
            );
            if layout(&text).is_some() {
                cut += 1;
                cut_and_parsed += !expected.starts_with("error") as usize;
            }
            cached(&mut warm, TRICKY);
        }
        // So that the comparison is not only of errors.
        assert!(cut > 1000 && cut_and_parsed > 300, "{cut} {cut_and_parsed}");
    }
}
