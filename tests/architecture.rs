//! The house rules of `src/`, checked on the source text (docs/architecture.md states them):
//!
//! - the top level holds only `main.rs`, `lib.rs`, `rng.rs`, `fsutil.rs` and folders;
//! - every library module imports only from the modules below it in the layer order
//!   ([`ALLOWED`]); the binary (`main.rs`, `cli/`) may import anything;
//! - no import cycle between files: `use`, `crate::…` and `super::…` paths are edges to the file
//!   that defines the item, looking through `pub use` re-exports, and a `pub use` is itself an
//!   edge from the re-exporting file (so a child importing from its `mod.rs` while that `mod.rs`
//!   re-exports the child is a cycle);
//! - no function over [`MAX_FN_LINES`] lines, no `Result<_, String>` in library code, no
//!   `clippy::too_many_arguments` allowance, and a `//!` header on every file.
//!
//! The checker is a small lexer over the files (comments and string contents removed), not a
//! Rust parser: it understands `use` trees, `self`/`super`/`crate` paths, re-exports (explicit
//! and glob) and `#[cfg(test)] mod … { … }` blocks, which it leaves out of the import rules.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The longest function allowed in `src/`, in lines from `fn` to its closing brace.
const MAX_FN_LINES: usize = 150;

/// The most arguments a function takes; past this it takes a struct.
const MAX_ARGS: usize = 6;

/// The layer order: each library module and the modules it may import from.
const ALLOWED: &[(&str, &[&str])] = &[
    ("rng", &[]),
    ("fsutil", &[]),
    ("strided", &[]),
    ("slurm", &["fsutil"]),
    ("dist", &["fsutil", "slurm"]),
    ("data", &["rng", "fsutil"]),
    ("surrogate", &["rng"]),
    ("model", &["data", "strided", "fsutil", "rng"]),
    ("train", &["data", "dist", "model", "fsutil", "rng"]),
    ("bench", &["data", "fsutil", "rng"]),
    ("embed", &["strided", "fsutil", "rng"]),
    ("acquisition", &["data", "surrogate", "rng"]),
    ("baselines", &["acquisition", "surrogate", "data", "rng"]),
    (
        "gpu",
        &["data", "dist", "train", "model", "bench", "fsutil", "rng"],
    ),
    (
        "transfer",
        &["train", "bench", "model", "data", "dist", "fsutil", "rng"],
    ),
    (
        "search",
        &[
            "acquisition",
            "baselines",
            "surrogate",
            "data",
            "dist",
            "model",
            "train",
            "slurm",
            "fsutil",
            "rng",
        ],
    ),
    (
        "config",
        &["search", "train", "model", "data", "dist", "fsutil", "rng"],
    ),
    (
        "report",
        &[
            "search",
            "transfer",
            "bench",
            "acquisition",
            "surrogate",
            "data",
            "model",
            "fsutil",
            "rng",
        ],
    ),
];

/// Files allowed at the top of `src/` besides folders.
const TOP_FILES: &[&str] = &["main.rs", "lib.rs", "rng.rs", "fsutil.rs", "strided.rs"];

/// One source file: where it is, its module path, and its text with comments and string
/// contents removed (line breaks kept).
struct Source {
    path: PathBuf,
    module: Vec<String>,
    code: String,
    /// The code without `#[cfg(test)] mod … { … }` blocks (line breaks kept).
    code_no_tests: String,
    /// In the binary (`main.rs`, `cli/`) rather than the library.
    binary: bool,
}

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Removes comments and the contents of string and char literals, keeping line breaks so that
/// line numbers stay those of the file.
fn strip(text: &str) -> String {
    let b: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let keep_newlines = |s: &[char], out: &mut String| {
        for &c in s {
            if c == '\n' {
                out.push('\n');
            }
        }
    };
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied().unwrap_or('\0');
        if c == '/' && next == '/' {
            while i < b.len() && b[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == '*' {
            let (start, mut depth) = (i, 0usize);
            while i < b.len() {
                if b[i] == '/' && b.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if b[i] == '*' && b.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            keep_newlines(&b[start..i.min(b.len())], &mut out);
        } else if c == 'r'
            && (next == '"' || next == '#')
            && !(i > 0 && (b[i - 1].is_alphanumeric() || b[i - 1] == '_'))
            && raw_string_hashes(&b, i + 1).is_some()
        {
            let hashes = raw_string_hashes(&b, i + 1).expect("checked");
            let start = i;
            i += 2 + hashes;
            loop {
                if i >= b.len() {
                    break;
                }
                if b[i] == '"' && (0..hashes).all(|k| b.get(i + 1 + k) == Some(&'#')) {
                    i += 1 + hashes;
                    break;
                }
                i += 1;
            }
            out.push_str("\"\"");
            keep_newlines(&b[start..i.min(b.len())], &mut out);
        } else if c == '"' {
            let start = i;
            i += 1;
            while i < b.len() && b[i] != '"' {
                if b[i] == '\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            out.push_str("\"\"");
            keep_newlines(&b[start..i.min(b.len())], &mut out);
        } else if c == '\'' && is_char_literal(&b, i) {
            i += 1;
            while i < b.len() && b[i] != '\'' {
                if b[i] == '\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            out.push_str("' '");
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// `Some(number of #)` when a raw string literal's quote follows the hashes at `i`.
fn raw_string_hashes(b: &[char], mut i: usize) -> Option<usize> {
    let mut n = 0;
    while b.get(i) == Some(&'#') {
        n += 1;
        i += 1;
    }
    (b.get(i) == Some(&'"')).then_some(n)
}

/// A quote at `i` opens a char literal (`'a'`, `'\n'`, `'\u{..}'`), not a lifetime.
fn is_char_literal(b: &[char], i: usize) -> bool {
    match b.get(i + 1) {
        Some('\\') => true,
        Some(_) => b.get(i + 2) == Some(&'\''),
        None => false,
    }
}

/// Index of the brace closing the one opening at `open`.
fn matching_brace(code: &[u8], open: usize) -> usize {
    let mut depth = 0usize;
    for (k, &c) in code.iter().enumerate().skip(open) {
        match c {
            b'{' => depth += 1,
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    return k;
                }
            }
            _ => {}
        }
    }
    code.len() - 1
}

/// `code` with every `#[cfg(test)] mod name { … }` block blanked (line breaks kept).
fn without_test_modules(code: &str) -> String {
    let bytes = code.as_bytes();
    let mut out = code.as_bytes().to_vec();
    let mut from = 0;
    while let Some(pos) = code[from..].find("#[cfg(test)]") {
        let at = from + pos;
        let rest = code[at + "#[cfg(test)]".len()..].trim_start();
        let rest_at = code.len() - rest.len();
        let is_mod = rest.starts_with("mod ") || rest.starts_with("pub mod ");
        match (is_mod, code[rest_at..].find(['{', ';'])) {
            (true, Some(k)) if bytes[rest_at + k] == b'{' => {
                let end = matching_brace(bytes, rest_at + k);
                for c in &mut out[at..=end] {
                    if *c != b'\n' {
                        *c = b' ';
                    }
                }
                from = end + 1;
            }
            _ => from = at + 1,
        }
    }
    String::from_utf8(out).expect("ascii blanks keep utf-8")
}

fn load() -> Vec<Source> {
    let src = src_dir();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files
        .into_iter()
        .map(|path| {
            let rel = path.strip_prefix(&src).expect("under src").to_path_buf();
            let mut module: Vec<String> = rel
                .with_extension("")
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if module.last().is_some_and(|l| l == "mod") {
                module.pop();
            }
            if module == ["lib"] || module == ["main"] {
                module.clear();
            }
            let binary = rel.starts_with("cli") || rel == Path::new("main.rs");
            let text = std::fs::read_to_string(&path).expect("read source");
            let code = strip(&text);
            let code_no_tests = without_test_modules(&code);
            Source {
                path: rel,
                module,
                code,
                code_no_tests,
                binary,
            }
        })
        .collect()
}

/// Splits a `use` tree (`a::{b, c::{d, e as f}}`) into paths, each with the name it binds.
fn expand_use(tree: &str) -> Vec<(Vec<String>, String)> {
    let tree: String = tree.chars().filter(|c| !c.is_whitespace()).collect();
    let mut out = Vec::new();
    expand_into(&[], &tree, &mut out);
    out
}

fn split_top(s: &str) -> Vec<&str> {
    let (mut depth, mut start, mut parts) = (0i32, 0, Vec::new());
    for (i, c) in s.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts.into_iter().filter(|p| !p.is_empty()).collect()
}

fn expand_into(prefix: &[String], tree: &str, out: &mut Vec<(Vec<String>, String)>) {
    for part in split_top(tree) {
        if let Some(open) = part.find('{') {
            let head: Vec<String> = part[..open]
                .split("::")
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect();
            let mut p = prefix.to_vec();
            p.extend(head);
            expand_into(&p, &part[open + 1..part.len() - 1], out);
        } else {
            // `a::b as c` loses its spaces above: "a::basc" cannot be told apart, so read the
            // alias from the original spacing-free form `a::b` + `as` + `c` by the last `::`.
            let mut segs: Vec<String> = part.split("::").map(String::from).collect();
            let last = segs.pop().expect("non-empty");
            let (name, bound) = split_alias(&last);
            let mut p = prefix.to_vec();
            p.extend(segs);
            if name != "self" {
                p.push(name.clone());
            }
            let bound = if name == "self" {
                p.last().cloned().unwrap_or_default()
            } else {
                bound
            };
            out.push((p, bound));
        }
    }
}

/// `name` or `nameasalias` (whitespace removed) → (name, bound name). Aliases are rare; the
/// caller's text keeps an `as` only between two identifiers, which is ambiguous once spaces are
/// gone, so aliases are recognised from [`ALIAS_MARK`] inserted before whitespace removal.
fn split_alias(seg: &str) -> (String, String) {
    match seg.split_once(ALIAS_MARK) {
        Some((n, a)) => (n.to_string(), a.to_string()),
        None => (seg.to_string(), seg.to_string()),
    }
}

/// Replaces ` as ` in `use` trees before whitespace is removed.
const ALIAS_MARK: &str = "@as@";

/// The `use` declarations of a file: (is `pub`, tree text).
fn use_decls(code: &str) -> Vec<(bool, String)> {
    let mut out = Vec::new();
    let b = code.as_bytes();
    let mut from = 0;
    while let Some(pos) = code[from..].find("use ") {
        let at = from + pos;
        from = at + 4;
        let prev_ok = at == 0 || !(b[at - 1].is_ascii_alphanumeric() || b[at - 1] == b'_');
        if !prev_ok {
            continue;
        }
        // Statement start: the previous non-space text ends a statement or item, or is `pub`.
        let before = code[..at].trim_end();
        let public = before.ends_with("pub")
            || before.ends_with(')') && {
                let open = before.rfind("pub(");
                open.is_some_and(|o| !before[o..].contains(';'))
            };
        let starts_statement = public
            || before.is_empty()
            || before.ends_with(';')
            || before.ends_with('{')
            || before.ends_with('}')
            || before.ends_with(']');
        if !starts_statement {
            continue;
        }
        let Some(end) = code[at..].find(';') else {
            continue;
        };
        let tree = code[at + 4..at + end].replace(" as ", ALIAS_MARK);
        out.push((public, tree));
        from = at + end;
    }
    out
}

/// The library's module index: module path → file, re-exports and public item names.
struct Index {
    files: BTreeMap<Vec<String>, usize>,
    /// (module, bound name) → absolute path re-exported.
    reexports: BTreeMap<(Vec<String>, String), Vec<String>>,
    /// module → modules glob-re-exported from it.
    globs: BTreeMap<Vec<String>, Vec<Vec<String>>>,
    /// module → names of items it defines.
    items: BTreeMap<Vec<String>, BTreeSet<String>>,
}

/// Turns a path as written in `module` into an absolute one, or `None` for other crates.
fn absolute(index: &Index, module: &[String], segs: &[String]) -> Option<Vec<String>> {
    let first = segs.first()?;
    match first.as_str() {
        "crate" => Some(segs[1..].to_vec()),
        "self" => Some([module, &segs[1..]].concat()),
        "super" => {
            let n = segs.iter().take_while(|s| *s == "super").count();
            let base = module.get(..module.len().checked_sub(n)?)?;
            Some([base, &segs[n..]].concat())
        }
        _ => {
            let child = [module, &segs[..1]].concat();
            index
                .files
                .contains_key(&child)
                .then(|| [module, segs].concat())
        }
    }
}

/// The file defining what `path` names, looking through re-exports.
fn resolve(index: &Index, path: &[String], depth: usize) -> Option<usize> {
    let split = (0..=path.len())
        .rev()
        .find(|&k| index.files.contains_key(&path[..k]))?;
    let (module, rest) = (&path[..split], &path[split..]);
    if let (Some(name), true) = (rest.first(), depth < 8) {
        if let Some(target) = index.reexports.get(&(module.to_vec(), name.clone())) {
            if target.as_slice() != path {
                let next = [target.as_slice(), &rest[1..]].concat();
                return resolve(index, &next, depth + 1);
            }
        }
        let defined_here = index.items.get(module).is_some_and(|s| s.contains(name));
        if !defined_here {
            for glob in index.globs.get(module).into_iter().flatten() {
                let next = [glob.as_slice(), rest].concat();
                if let Some(f) = resolve(index, &next, depth + 1) {
                    if f != index.files[glob] {
                        return Some(f);
                    }
                    if index.items.get(glob).is_some_and(|s| s.contains(name)) {
                        return Some(f);
                    }
                }
            }
        }
    }
    Some(index.files[module])
}

/// Every path a file names: its `use` declarations and `crate::`/`super::` paths in the code.
fn named_paths(index: &Index, s: &Source) -> Vec<Vec<String>> {
    let code = &s.code_no_tests;
    let mut out = Vec::new();
    for (_, tree) in use_decls(code) {
        for (segs, _) in expand_use(&tree) {
            if let Some(abs) = absolute(index, &s.module, &segs) {
                out.push(abs);
            }
        }
    }
    let b = code.as_bytes();
    for start in ["crate::", "super::"] {
        let mut from = 0;
        while let Some(pos) = code[from..].find(start) {
            let at = from + pos;
            from = at + start.len();
            if at > 0
                && (b[at - 1].is_ascii_alphanumeric() || b[at - 1] == b'_' || b[at - 1] == b':')
            {
                continue;
            }
            let end = code[at..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
                .map_or(code.len(), |e| at + e);
            let segs: Vec<String> = code[at..end]
                .split("::")
                .filter(|x| !x.is_empty())
                .map(String::from)
                .collect();
            if let Some(abs) = absolute(index, &s.module, &segs) {
                out.push(abs);
            }
        }
    }
    out
}

fn build_index(sources: &[Source]) -> Index {
    let mut index = Index {
        files: BTreeMap::new(),
        reexports: BTreeMap::new(),
        globs: BTreeMap::new(),
        items: BTreeMap::new(),
    };
    for (i, s) in sources.iter().enumerate() {
        if !s.binary {
            index.files.insert(s.module.clone(), i);
        }
    }
    let item_kw = [
        "fn ", "struct ", "enum ", "trait ", "type ", "const ", "static ", "mod ", "union ",
    ];
    for s in sources.iter().filter(|s| !s.binary) {
        let mut names = BTreeSet::new();
        for line in s.code_no_tests.lines() {
            let t = line.trim_start();
            let Some(rest) = t.strip_prefix("pub") else {
                continue;
            };
            let rest = match rest.strip_prefix('(') {
                Some(r) => r.split_once(')').map_or("", |x| x.1),
                None => rest,
            }
            .trim_start();
            let rest = rest
                .trim_start_matches("unsafe ")
                .trim_start_matches("async ");
            for kw in item_kw {
                if let Some(r) = rest.strip_prefix(kw) {
                    let name: String = r
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    names.insert(name);
                }
            }
        }
        index.items.insert(s.module.clone(), names);
    }
    for s in sources.iter().filter(|s| !s.binary) {
        for (public, tree) in use_decls(&s.code_no_tests) {
            if !public {
                continue;
            }
            for (segs, bound) in expand_use(&tree) {
                let Some(abs) = absolute(&index, &s.module, &segs) else {
                    continue;
                };
                if bound == "*" {
                    let target = abs[..abs.len() - 1].to_vec();
                    index
                        .globs
                        .entry(s.module.clone())
                        .or_default()
                        .push(target);
                } else {
                    index.reexports.insert((s.module.clone(), bound), abs);
                }
            }
        }
    }
    index
}

/// File-level import edges of the library (from → to, by index into `sources`).
fn edges(sources: &[Source], index: &Index) -> BTreeMap<usize, BTreeSet<usize>> {
    let mut out: BTreeMap<usize, BTreeSet<usize>> = BTreeMap::new();
    for (i, s) in sources.iter().enumerate() {
        if s.binary || s.module.is_empty() {
            continue;
        }
        for path in named_paths(index, s) {
            // `pub use` lines are edges to the file that defines the item, like any other path.
            if let Some(t) = resolve(index, &path, 0) {
                if t != i && !sources[t].module.is_empty() {
                    out.entry(i).or_default().insert(t);
                }
            }
        }
    }
    out
}

/// Strongly connected components with more than one file (Tarjan, iterative).
fn cycles(n: usize, g: &BTreeMap<usize, BTreeSet<usize>>) -> Vec<Vec<usize>> {
    struct T<'a> {
        g: &'a BTreeMap<usize, BTreeSet<usize>>,
        index: Vec<Option<usize>>,
        low: Vec<usize>,
        on: Vec<bool>,
        stack: Vec<usize>,
        next: usize,
        out: Vec<Vec<usize>>,
    }
    fn visit(t: &mut T, v: usize) {
        t.index[v] = Some(t.next);
        t.low[v] = t.next;
        t.next += 1;
        t.stack.push(v);
        t.on[v] = true;
        let succ: Vec<usize> = t.g.get(&v).into_iter().flatten().copied().collect();
        for w in succ {
            match t.index[w] {
                None => {
                    visit(t, w);
                    t.low[v] = t.low[v].min(t.low[w]);
                }
                Some(iw) if t.on[w] => t.low[v] = t.low[v].min(iw),
                _ => {}
            }
        }
        if Some(t.low[v]) == t.index[v] {
            let mut comp = Vec::new();
            loop {
                let w = t.stack.pop().expect("on stack");
                t.on[w] = false;
                comp.push(w);
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                t.out.push(comp);
            }
        }
    }
    let mut t = T {
        g,
        index: vec![None; n],
        low: vec![0; n],
        on: vec![false; n],
        stack: Vec::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in 0..n {
        if t.index[v].is_none() {
            visit(&mut t, v);
        }
    }
    t.out
}

fn top(s: &Source) -> String {
    s.module.first().cloned().unwrap_or_default()
}

#[test]
fn src_top_level_holds_only_entry_points_shared_files_and_folders() {
    let mut stray = Vec::new();
    for e in std::fs::read_dir(src_dir()).expect("src") {
        let p = e.expect("entry").path();
        let name = p.file_name().expect("name").to_string_lossy().into_owned();
        if p.is_file() && !TOP_FILES.contains(&name.as_str()) {
            stray.push(name);
        }
    }
    assert!(stray.is_empty(), "files at the top of src/: {stray:?}");
}

#[test]
fn library_modules_import_only_from_lower_layers() {
    let sources = load();
    let index = build_index(&sources);
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let mut bad = Vec::new();
    for (from, tos) in edges(&sources, &index) {
        let f = top(&sources[from]);
        let Some(ok) = allowed.get(f.as_str()) else {
            bad.push(format!(
                "{}: module `{f}` is not in the layer order",
                sources[from].path.display()
            ));
            continue;
        };
        for to in tos {
            let t = top(&sources[to]);
            if t != f && !ok.contains(&t.as_str()) {
                bad.push(format!(
                    "{} imports {} (`{f}` may import only {ok:?})",
                    sources[from].path.display(),
                    sources[to].path.display()
                ));
            }
        }
    }
    assert!(bad.is_empty(), "layer violations:\n{}", bad.join("\n"));
}

#[test]
fn no_import_cycle_between_files() {
    let sources = load();
    let index = build_index(&sources);
    let g = edges(&sources, &index);
    let found: Vec<String> = cycles(sources.len(), &g)
        .into_iter()
        .map(|c| {
            let mut names: Vec<String> = c
                .iter()
                .map(|&i| sources[i].path.display().to_string())
                .collect();
            names.sort();
            names.join(" <-> ")
        })
        .collect();
    assert!(found.is_empty(), "import cycles:\n{}", found.join("\n"));
}

/// Functions as (file, first line, name, length in lines).
fn functions(s: &Source) -> Vec<(usize, String, usize)> {
    let code = s.code.as_bytes();
    let line_of = |pos: usize| s.code[..pos].matches('\n').count() + 1;
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(pos) = s.code[from..].find("fn ") {
        let at = from + pos;
        from = at + 3;
        if at > 0 && (code[at - 1].is_ascii_alphanumeric() || code[at - 1] == b'_') {
            continue;
        }
        let name: String = s.code[at + 3..]
            .trim_start()
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if name.is_empty() {
            continue;
        }
        let Some(k) = s.code[at..].find(['{', ';']) else {
            continue;
        };
        if code[at + k] == b';' {
            continue;
        }
        let end = matching_brace(code, at + k);
        out.push((line_of(at), name, line_of(end) - line_of(at) + 1));
    }
    out
}

/// The parameters of the function whose `fn` keyword is at `at` (`self` counts), split at
/// top-level commas of its parameter list.
fn parameter_count(code: &str, at: usize) -> usize {
    let Some(open) = code[at..].find('(').map(|k| at + k) else {
        return 0;
    };
    let (mut depth, mut count, mut any) = (0i32, 0, false);
    let mut prev = ' ';
    for c in code[open..].chars() {
        match c {
            '(' | '[' | '<' | '{' => depth += 1,
            '>' if prev != '-' => depth -= 1,
            ')' | ']' | '}' => depth -= 1,
            ',' if depth == 1 => count += 1,
            _ => {}
        }
        if depth == 0 {
            break;
        }
        if depth >= 1 && !c.is_whitespace() && !(depth == 1 && (c == '(' || c == ',')) {
            any = true;
        }
        if c == ',' && depth == 1 {
            any = false;
        }
        prev = c;
    }
    count + usize::from(any)
}

/// Byte ranges of the bodies of trait impls (`impl … for … { … }`): their methods' signatures
/// are the trait's, not the file's to choose (clippy exempts them too).
fn trait_impl_bodies(code: &str) -> Vec<(usize, usize)> {
    let b = code.as_bytes();
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(pos) = code[from..].find("impl") {
        let at = from + pos;
        from = at + 4;
        let word = |k: usize| {
            b.get(k)
                .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_')
        };
        if (at > 0 && word(at - 1)) || word(at + 4) {
            continue;
        }
        let Some(open) = code[at..].find(['{', ';']).map(|k| at + k) else {
            continue;
        };
        if b[open] == b'{' && code[at..open].contains(" for ") {
            out.push((open, matching_brace(b, open)));
        }
    }
    out
}

#[test]
fn no_function_takes_more_than_six_arguments() {
    let mut bad = Vec::new();
    for s in load() {
        let b = s.code.as_bytes();
        let impls = trait_impl_bodies(&s.code);
        let mut from = 0;
        while let Some(pos) = s.code[from..].find("fn ") {
            let at = from + pos;
            from = at + 3;
            if at > 0 && (b[at - 1].is_ascii_alphanumeric() || b[at - 1] == b'_') {
                continue;
            }
            if impls.iter().any(|&(o, c)| o < at && at < c) {
                continue;
            }
            let n = parameter_count(&s.code, at);
            if n > MAX_ARGS {
                let line = s.code[..at].matches('\n').count() + 1;
                bad.push(format!("{}:{line}: {n} arguments", s.path.display()));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "functions over {MAX_ARGS} arguments (take a struct):\n{}",
        bad.join("\n")
    );
}

#[test]
fn no_function_over_the_line_limit() {
    let mut long = Vec::new();
    for s in load() {
        for (line, name, n) in functions(&s) {
            if n > MAX_FN_LINES {
                long.push(format!("{}:{line} {name}: {n} lines", s.path.display()));
            }
        }
    }
    assert!(
        long.is_empty(),
        "functions over {MAX_FN_LINES} lines:\n{}",
        long.join("\n")
    );
}

/// The generic arguments of every `Result<…>` in `code`, split at top-level commas.
fn result_args(code: &str) -> Vec<(usize, Vec<String>)> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(pos) = code[from..].find("Result<") {
        let at = from + pos;
        from = at + 7;
        let prev = code[..at].chars().last().unwrap_or(' ');
        if prev.is_alphanumeric() || prev == '_' {
            continue;
        }
        let (mut depth, mut args, mut cur) = (1i32, Vec::new(), String::new());
        let mut prev_c = ' ';
        for c in code[at + 7..].chars() {
            match c {
                '<' | '(' | '[' => depth += 1,
                '>' if prev_c != '-' => depth -= 1,
                ')' | ']' => depth -= 1,
                _ => {}
            }
            if depth == 0 {
                args.push(cur.trim().to_string());
                break;
            }
            if c == ',' && depth == 1 {
                args.push(cur.trim().to_string());
                cur.clear();
            } else {
                cur.push(c);
            }
            prev_c = c;
        }
        out.push((code[..at].matches('\n').count() + 1, args));
    }
    out
}

#[test]
fn library_code_has_no_string_errors() {
    let mut bad = Vec::new();
    for s in load().iter().filter(|s| !s.binary) {
        for (line, args) in result_args(&s.code) {
            if args
                .get(1)
                .is_some_and(|e| e == "String" || e == "std::string::String")
            {
                bad.push(format!(
                    "{}:{line} Result<{}>",
                    s.path.display(),
                    args.join(", ")
                ));
            }
        }
        for (k, l) in s.code.lines().enumerate() {
            if l.replace(' ', "").contains("typeErr=String;") {
                bad.push(format!("{}:{} {}", s.path.display(), k + 1, l.trim()));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "String errors in the library:\n{}",
        bad.join("\n")
    );
}

#[test]
fn no_too_many_arguments_allowance_and_every_file_has_a_header() {
    let mut bad = Vec::new();
    for s in load() {
        if s.code.contains("too_many_arguments") {
            bad.push(format!(
                "{}: allows clippy::too_many_arguments",
                s.path.display()
            ));
        }
        let text = std::fs::read_to_string(src_dir().join(&s.path)).expect("read");
        if !text.trim_start().starts_with("//!") {
            bad.push(format!("{}: no `//!` header", s.path.display()));
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

/// The checker itself, on small known inputs.
#[test]
fn the_checker_reads_use_trees_comments_and_results() {
    let trees = expand_use("crate::a::{b, c::{d, self}, e @as@ f}");
    let paths: Vec<String> = trees
        .iter()
        .map(|(p, n)| format!("{}={n}", p.join("::")))
        .collect();
    assert_eq!(
        paths,
        [
            "crate::a::b=b",
            "crate::a::c::d=d",
            "crate::a::c=c",
            "crate::a::e=f"
        ]
    );
    let code = strip("let s = \"use crate::x;\"; // use crate::y;\n/* crate::z */ let c = '{';");
    assert!(!code.contains("crate::"), "{code}");
    assert!(!code.contains('{'), "{code}");
    assert_eq!(code.matches('\n').count(), 1);
    let r = result_args("fn f() -> Result<Vec<(u8, u8)>, String> {}");
    assert_eq!(r[0].1, ["Vec<(u8, u8)>", "String"]);
    let r = result_args("fn f() -> Result<fn(u8) -> u8, E> {}");
    assert_eq!(r[0].1, ["fn(u8) -> u8", "E"]);
    let code = "fn f(a: u8, b: Vec<(u8, u8)>, c: impl Fn(u8) -> u8,) {}";
    assert_eq!(parameter_count(code, 0), 3);
    assert_eq!(parameter_count("fn g() {}", 0), 0);
    assert_eq!(parameter_count("fn h(&self, x: [u8; 2]) {}", 0), 2);
    let t = without_test_modules("a\n#[cfg(test)]\nmod tests {\n use super::*;\n}\nb");
    assert!(!t.contains("super") && t.contains('a') && t.contains('b'));
    assert_eq!(t.matches('\n').count(), 5);
}
