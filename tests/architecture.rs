//! The shape of the code, checked: imports between the files of `src/`
//! form no circle of more than two files, the shared leaves import nothing
//! from the crate, and no function or file outgrows what a reader can hold
//! (docs/architecture.md). Test modules are left out of every check.
//!
//! Imports are read from the source text: `use` trees (`crate::`, `super::`,
//! `self::` and child modules) and inline `crate::`/`super::` paths. A path
//! to an item re-exported by a `mod.rs` (`pub use snapshot::*`) leads to the
//! file that defines it, so a re-export adds no false circle.
//!
//! Run alone: `cargo test --test architecture -- --nocapture` prints the
//! import graph's largest circles and the longest functions.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Leaves that everything may use and that use nothing of the crate.
const LEAVES: &[&str] = &[
    "src/affinity.rs",
    "src/clock.rs",
    "src/health.rs",
    "src/usage.rs",
    "src/tokenizer.rs",
];

const MAX_FUNCTION_LINES: usize = 150;
const MAX_FILE_LINES: usize = 700;
/// Written in a file (with the reason after it) to exempt it from the file
/// length limit.
const WHOLE_FILE_MARK: &str = "architecture: kept whole";

struct SourceFile {
    /// Relative to the crate root, e.g. `src/config/mod.rs`.
    path: String,
    /// Module path below `crate`, e.g. `["config"]`.
    module: Vec<String>,
    /// The text without its test module and comments.
    code: String,
    /// Lines before the test module.
    lines: usize,
    /// The text before the test module, comments kept.
    text: String,
}

fn crate_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn module_of(relative: &str) -> Vec<String> {
    let inner = relative
        .strip_prefix("src/")
        .unwrap()
        .strip_suffix(".rs")
        .unwrap();
    let mut parts: Vec<String> = inner.split('/').map(str::to_string).collect();
    let last = parts.last().map(String::as_str);
    if matches!(last, Some("mod" | "lib" | "main")) {
        parts.pop();
    }
    parts
}

/// The file's text up to its `#[cfg(test)] mod tests`.
fn without_tests(text: &str) -> &str {
    let mut from = 0;
    while let Some(at) = text[from..].find("#[cfg(test)]") {
        let at = from + at;
        let rest = text[at + "#[cfg(test)]".len()..].trim_start();
        let rest = rest
            .trim_start_matches("pub(crate) ")
            .trim_start_matches("pub(super) ");
        if rest.starts_with("mod ") {
            return &text[..at];
        }
        from = at + 1;
    }
    text
}

/// Code with comments, string and char literals blanked (newlines kept), so
/// that braces and paths are only those of the code.
fn code_only(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'/' && b.get(i + 1) == Some(&b'/') {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if c == b'/' && b.get(i + 1) == Some(&b'*') {
            let mut depth = 0;
            while i < b.len() {
                if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
                    depth += 1;
                    i += 2;
                } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    if b[i] == b'\n' {
                        out.push('\n');
                    }
                    i += 1;
                }
            }
        } else if c == b'r' && matches!(b.get(i + 1), Some(b'#' | b'"')) && !ident_before(b, i) {
            // Raw string r#"..."#.
            let mut j = i + 1;
            let mut hashes = 0;
            while b.get(j) == Some(&b'#') {
                hashes += 1;
                j += 1;
            }
            if b.get(j) != Some(&b'"') {
                out.push(c as char);
                i += 1;
                continue;
            }
            j += 1;
            let end: Vec<u8> = std::iter::once(b'"')
                .chain(std::iter::repeat_n(b'#', hashes))
                .collect();
            while j < b.len() && !b[j..].starts_with(&end) {
                if b[j] == b'\n' {
                    out.push('\n');
                }
                j += 1;
            }
            out.push_str("\"\"");
            i = j + end.len();
        } else if c == b'"' {
            let mut j = i + 1;
            while j < b.len() && b[j] != b'"' {
                if b[j] == b'\\' {
                    j += 1;
                }
                if b.get(j) == Some(&b'\n') {
                    out.push('\n');
                }
                j += 1;
            }
            out.push_str("\"\"");
            i = j + 1;
        } else if c == b'\'' {
            // A char literal ('x', '\n', '\u{1F600}', '{'), not a lifetime.
            let close = if b.get(i + 1) == Some(&b'\\') {
                b[i + 2..]
                    .iter()
                    .position(|&x| x == b'\'')
                    .map(|p| i + 2 + p)
            } else {
                let ch_len = text[i + 1..].chars().next().map_or(1, char::len_utf8);
                (b.get(i + 1 + ch_len) == Some(&b'\'')).then_some(i + 1 + ch_len)
            };
            match close {
                Some(end) => {
                    out.push_str("' '");
                    i = end + 1;
                }
                None => {
                    out.push('\'');
                    i += 1;
                }
            }
        } else {
            let ch = text[i..].chars().next().unwrap();
            out.push(ch);
            i += ch.len_utf8();
        }
    }
    out
}

fn ident_before(b: &[u8], i: usize) -> bool {
    i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_')
}

fn load_sources() -> Vec<SourceFile> {
    let root = crate_root();
    let mut paths = Vec::new();
    rust_files(&root.join("src"), &mut paths);
    // A module's tests in a file of their own (`#[cfg(test)] mod tests;`).
    paths.retain(|p| p.file_name().is_none_or(|n| n != "tests.rs"));
    paths.sort();
    paths
        .into_iter()
        .map(|p| {
            let full = std::fs::read_to_string(&p).unwrap();
            let relative = p
                .strip_prefix(&root)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            let text = without_tests(&full).to_string();
            SourceFile {
                module: module_of(&relative),
                path: relative,
                code: code_only(&text),
                lines: text.lines().count(),
                text,
            }
        })
        .collect()
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The identifiers of a text, in order.
fn idents(code: &str) -> Vec<&str> {
    code.split(|c: char| !is_ident(c))
        .filter(|w| !w.is_empty())
        .collect()
}

/// The paths of a `use` tree, e.g. `a::{b, c::{d, e as f}}` gives `a::b`,
/// `a::c::d`, `a::c::e`; `self` in braces names the prefix itself.
fn expand_use_tree(tree: &str, prefix: &str, out: &mut Vec<String>) {
    let tree = tree.trim();
    if let Some(open) = tree.find('{') {
        let head = tree[..open].trim().trim_end_matches("::");
        let inner = &tree[open + 1..tree.rfind('}').unwrap()];
        let base = join(prefix, head);
        let mut depth = 0;
        let mut start = 0;
        for (i, c) in inner.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    expand_use_tree(&inner[start..i], &base, out);
                    start = i + 1;
                }
                _ => {}
            }
        }
        expand_use_tree(&inner[start..], &base, out);
    } else if !tree.is_empty() {
        let path = tree.split(" as ").next().unwrap().trim();
        if path == "self" {
            out.push(prefix.to_string());
        } else {
            out.push(join(prefix, path));
        }
    }
}

fn join(prefix: &str, path: &str) -> String {
    match (prefix.is_empty(), path.is_empty()) {
        (true, _) => path.to_string(),
        (_, true) => prefix.to_string(),
        _ => format!("{prefix}::{path}"),
    }
}

/// Every `use` path and inline `crate::`/`super::` path of a file.
fn paths_in(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("use ") {
        let before = rest[..at].chars().next_back();
        let after = &rest[at + 4..];
        rest = after;
        if before.is_some_and(is_ident) {
            continue;
        }
        if let Some(end) = after.find(';') {
            let tree: String = after[..end]
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ");
            expand_use_tree(&tree, "", &mut out);
        }
    }
    for anchor in ["crate::", "super::"] {
        let mut from = 0;
        while let Some(at) = code[from..].find(anchor) {
            let start = from + at;
            from = start + anchor.len();
            if code[..start].chars().next_back().is_some_and(is_ident) {
                continue;
            }
            let end = code[start..]
                .find(|c: char| !(is_ident(c) || c == ':'))
                .map_or(code.len(), |e| start + e);
            // `crate::{a, b}` is a use tree, read above.
            if !code[start..end].ends_with("::") {
                out.push(code[start..end].to_string());
            }
        }
    }
    out
}

struct Crate {
    files: Vec<SourceFile>,
    by_module: BTreeMap<Vec<String>, usize>,
}

impl Crate {
    /// `mod x;` declared in a file: its child modules.
    fn children(&self, file: usize) -> BTreeSet<String> {
        let words = idents(&self.files[file].code);
        words
            .windows(2)
            .filter(|w| w[0] == "mod")
            .map(|w| w[1].to_string())
            .collect()
    }

    /// The file a path written in `file` leads to, if it is in the crate.
    fn resolve(&self, file: usize, path: &str) -> Option<usize> {
        let here = &self.files[file].module;
        let mut segments: Vec<&str> = path.split("::").filter(|s| !s.is_empty()).collect();
        let mut module: Vec<String> = match segments.first().copied() {
            Some("crate") => {
                segments.remove(0);
                Vec::new()
            }
            Some("self") => {
                segments.remove(0);
                here.clone()
            }
            Some("super") => {
                let mut m = here.clone();
                while segments.first() == Some(&"super") {
                    segments.remove(0);
                    m.pop();
                }
                m
            }
            Some(first) if self.children(file).contains(first) => here.clone(),
            _ => return None,
        };
        // The longest module prefix, then the item in it.
        let mut i = 0;
        while i < segments.len() {
            let mut next = module.clone();
            next.push(segments[i].to_string());
            if !self.by_module.contains_key(&next) {
                break;
            }
            module = next;
            i += 1;
        }
        let at = *self.by_module.get(&module)?;
        match segments.get(i) {
            Some(item) => Some(self.defining_file(at, item)),
            None => Some(at),
        }
    }

    /// The file that defines `item`, following `pub use` re-exports; the
    /// module's own file when the item is not found (a macro, a variant).
    fn defining_file(&self, file: usize, item: &str) -> usize {
        self.find_definition(file, item, 0).unwrap_or(file)
    }

    fn find_definition(&self, file: usize, item: &str, depth: usize) -> Option<usize> {
        const KINDS: &[&str] = &[
            "struct", "enum", "fn", "trait", "type", "const", "static", "mod", "union",
        ];
        let words = idents(&self.files[file].code);
        if words
            .windows(2)
            .any(|w| KINDS.contains(&w[0]) && w[1] == item)
        {
            return Some(file);
        }
        if depth > 8 {
            return None;
        }
        self.reexports(file).iter().find_map(|path| {
            let (module, last) = path.rsplit_once("::").unwrap_or(("", path));
            if last != "*" && last != item {
                return None;
            }
            let module_file = self.resolve(file, module)?;
            if module_file == file {
                return None;
            }
            self.find_definition(module_file, item, depth + 1)
        })
    }

    fn reexports(&self, file: usize) -> Vec<String> {
        let code = &self.files[file].code;
        let mut out = Vec::new();
        let mut rest = code.as_str();
        while let Some(at) = rest.find("pub use ") {
            let after = &rest[at + 8..];
            if let Some(end) = after.find(';') {
                let tree = after[..end]
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ");
                let mut paths = Vec::new();
                expand_use_tree(&tree, "", &mut paths);
                out.extend(paths);
            }
            rest = after;
        }
        out
    }

    fn edges(&self) -> Vec<BTreeSet<usize>> {
        (0..self.files.len())
            .map(|f| {
                paths_in(&self.files[f].code)
                    .iter()
                    .filter_map(|p| self.resolve(f, p))
                    .filter(|&to| to != f)
                    .collect()
            })
            .collect()
    }
}

fn load_crate() -> Crate {
    let files = load_sources();
    let by_module = files
        .iter()
        .enumerate()
        .filter(|(_, f)| f.path != "src/main.rs")
        .map(|(i, f)| (f.module.clone(), i))
        .collect();
    Crate { files, by_module }
}

/// Strongly connected components (Tarjan), each a set of file indexes.
fn circles(edges: &[BTreeSet<usize>]) -> Vec<Vec<usize>> {
    struct State<'a> {
        edges: &'a [BTreeSet<usize>],
        index: Vec<Option<usize>>,
        low: Vec<usize>,
        on_stack: Vec<bool>,
        stack: Vec<usize>,
        next: usize,
        out: Vec<Vec<usize>>,
    }
    fn visit(s: &mut State<'_>, v: usize) {
        s.index[v] = Some(s.next);
        s.low[v] = s.next;
        s.next += 1;
        s.stack.push(v);
        s.on_stack[v] = true;
        for &w in s.edges[v].iter() {
            match s.index[w] {
                None => {
                    visit(s, w);
                    s.low[v] = s.low[v].min(s.low[w]);
                }
                Some(iw) if s.on_stack[w] => s.low[v] = s.low[v].min(iw),
                _ => {}
            }
        }
        if Some(s.low[v]) == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack[w] = false;
                component.push(w);
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                s.out.push(component);
            }
        }
    }
    let n = edges.len();
    let mut s = State {
        edges,
        index: vec![None; n],
        low: vec![0; n],
        on_stack: vec![false; n],
        stack: Vec::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in 0..n {
        if s.index[v].is_none() {
            visit(&mut s, v);
        }
    }
    s.out
}

#[test]
fn no_import_circle_spans_more_than_two_files() {
    let krate = load_crate();
    let edges = krate.edges();
    let mut found = circles(&edges);
    found.sort_by_key(|c| std::cmp::Reverse(c.len()));
    let names = |c: &[usize]| -> Vec<&str> {
        let mut v: Vec<&str> = c.iter().map(|&f| krate.files[f].path.as_str()).collect();
        v.sort_unstable();
        v
    };
    for c in &found {
        println!("circle of {}: {:?}", c.len(), names(c));
        for &f in c {
            let inside: Vec<&str> = edges[f]
                .iter()
                .filter(|t| c.contains(t))
                .map(|&t| krate.files[t].path.as_str())
                .collect();
            println!("  {} -> {inside:?}", krate.files[f].path);
        }
    }
    // ARCH_PATHS=src/x.rs prints how that file's paths resolve.
    if let Ok(path) = std::env::var("ARCH_PATHS") {
        let f = krate.files.iter().position(|f| f.path == path).unwrap();
        for p in paths_in(&krate.files[f].code) {
            let to = krate.resolve(f, &p).map(|t| &krate.files[t].path);
            println!("{p} -> {to:?}");
        }
    }
    let too_large: Vec<Vec<&str>> = found
        .iter()
        .filter(|c| c.len() > 2)
        .map(|c| names(c))
        .collect();
    assert!(
        too_large.is_empty(),
        "import circles over two files: {too_large:#?}"
    );
}

#[test]
fn the_leaves_import_nothing_from_the_crate() {
    let krate = load_crate();
    let edges = krate.edges();
    for leaf in LEAVES {
        let f = krate
            .files
            .iter()
            .position(|s| s.path == *leaf)
            .unwrap_or_else(|| panic!("{leaf} is missing"));
        let imports: Vec<&str> = edges[f]
            .iter()
            .map(|&t| krate.files[t].path.as_str())
            .collect();
        assert!(imports.is_empty(), "{leaf} imports {imports:?}");
    }
}

#[test]
fn the_checker_sees_imports_through_use_trees_and_reexports() {
    let krate = load_crate();
    let relay = krate
        .files
        .iter()
        .position(|f| f.path == "src/relay/mod.rs")
        .unwrap();
    let find = |p: &str| krate.files.iter().position(|f| f.path == p).unwrap();
    // `crate::config::Snapshot` is defined in config/snapshot.rs and
    // re-exported by config/mod.rs.
    assert_eq!(
        krate.resolve(relay, "crate::config::Snapshot"),
        Some(find("src/config/snapshot.rs"))
    );
    assert_eq!(
        krate.resolve(relay, "crate::clock::now_ms"),
        Some(find("src/clock.rs"))
    );
    assert_eq!(krate.resolve(relay, "std::sync::Arc"), None);
    let mut paths = Vec::new();
    expand_use_tree("crate::{a::{b, c as d}, e, self}", "", &mut paths);
    assert_eq!(paths, ["crate::a::b", "crate::a::c", "crate::e", "crate"]);
    let code = code_only("let s = \"crate::x {\"; // crate::y\nlet c = '{'; crate::z::w()");
    assert_eq!(paths_in(&code), ["crate::z::w"]);
    assert_eq!(
        circles(&[
            BTreeSet::from([1]),
            BTreeSet::from([2]),
            BTreeSet::from([0]),
            BTreeSet::new()
        ])
        .iter()
        .map(Vec::len)
        .collect::<Vec<_>>(),
        [3]
    );
}

/// `(name, first line, lines)` of every function with a body.
fn functions(code: &str) -> Vec<(String, usize, usize)> {
    let mut out = Vec::new();
    let lines: Vec<&str> = code.lines().collect();
    for (n, line) in lines.iter().enumerate() {
        let words = idents(line);
        let Some(at) = words.iter().position(|w| *w == "fn") else {
            continue;
        };
        let Some(name) = words.get(at + 1) else {
            continue;
        };
        // From the line of `fn`, find the body's `{` (before any `;`, which
        // would make it a declaration) and its matching `}`.
        let mut depth = 0i64;
        let mut opened = false;
        let mut paren = 0i64;
        'scan: for (m, l) in lines.iter().enumerate().skip(n) {
            for c in l.chars() {
                match c {
                    '(' | '[' => paren += 1,
                    ')' | ']' => paren -= 1,
                    ';' if !opened && paren == 0 => break 'scan,
                    '{' => {
                        depth += 1;
                        opened = true;
                    }
                    '}' => {
                        depth -= 1;
                        if opened && depth == 0 {
                            out.push((name.to_string(), n + 1, m - n + 1));
                            break 'scan;
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    out
}

#[test]
fn functions_and_files_stay_readable() {
    let krate = load_crate();
    let mut long_functions = Vec::new();
    let mut longest = Vec::new();
    for f in &krate.files {
        for (name, line, len) in functions(&f.code) {
            longest.push((len, format!("{}:{line} {name}", f.path)));
            if len > MAX_FUNCTION_LINES {
                long_functions.push(format!("{}:{line} fn {name}: {len} lines", f.path));
            }
        }
    }
    longest.sort_unstable_by(|a, b| b.cmp(a));
    for (len, at) in longest.iter().take(10) {
        println!("{len:4} lines  {at}");
    }
    let long_files: Vec<String> = krate
        .files
        .iter()
        .filter(|f| f.lines > MAX_FILE_LINES && !f.text.contains(WHOLE_FILE_MARK))
        .map(|f| format!("{}: {} lines before its tests", f.path, f.lines))
        .collect();
    assert!(
        long_functions.is_empty(),
        "functions over {MAX_FUNCTION_LINES} lines: {long_functions:#?}"
    );
    assert!(
        long_files.is_empty(),
        "files over {MAX_FILE_LINES} lines (or say `{WHOLE_FILE_MARK}` and why): {long_files:#?}"
    );
    let sample = "fn a() {\n    let x = \"}\";\n}\nfn b();\nfn c(x: [u8; 2]) {\n}\n";
    assert_eq!(
        functions(&code_only(sample)),
        [("a".to_string(), 1, 3), ("c".to_string(), 5, 2)]
    );
}
