//! Layout check: no import cycle between *files* of a crate. A file depends on another when it
//! names a path (in a `use` or in code) whose deepest file module is that file; `mod b;` alone
//! is not a dependency. Each crate root is its own module tree; edges never cross crates.
//!
//! A module and the modules it contains are one unit: a child naming its parent's items
//! (`super::Deps`) and a parent re-exporting its children (`pub use client::ScimClient`) are how
//! a Rust module tree is built, so edges between a file and its ancestors are not counted. A
//! cycle is between files none of which contains another (siblings, cousins).
//!
//! It also checks that the service library never names the emulator crate: the emulator judges
//! rolesync's SCIM client and must share no code with it.
//!
//! The scan is lexical: comments and literals are blanked, then tokens are read. Known limits:
//! `#[path]` is not followed, and a path that starts at a name brought in by `use` (`use
//! crate::scim;` then `scim::model::X`) counts only through the `use` itself.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fs;
use std::path::{Path, PathBuf};

/// A module path from the crate root; `[]` is the root.
type ModPath = Vec<String>;
/// from file -> to file -> the first reference seen, as `file:line: text`.
type Edges = BTreeMap<String, BTreeMap<String, String>>;

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Ident(String),
    /// `::`
    Sep,
    /// Any other character; a number literal becomes `Punct('0')`.
    Punct(char),
}

/// What one file declares and names. Paths of inline modules are relative to the file's module.
#[derive(Debug, Default)]
struct FileScan {
    /// Each `mod` as (inline path including its name, whether it is `mod name;`).
    mods: Vec<(ModPath, bool)>,
    /// Each path named, as (inline module it occurs in, segments, line).
    refs: Vec<(ModPath, Vec<String>, usize)>,
}

#[derive(Default)]
pub(crate) struct Report {
    pub(crate) files: usize,
    pub(crate) edges: usize,
    /// One block per cycle: `a.rs -> b.rs -> a.rs` then one example line per edge.
    pub(crate) cycles: Vec<String>,
}

fn is_ident_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// If a string or char literal (optionally `b`, `c`, `r`, `br`, `cr` prefixed, with `#`s)
/// starts at `i`, the index just past it; `None` otherwise, including for lifetimes (`'a`).
fn literal_end(c: &[char], i: usize) -> Option<usize> {
    let at = |k: usize| c.get(k).copied().unwrap_or('\0');
    let mut j = i + usize::from(matches!(at(i), 'b' | 'c'));
    if at(j) == 'r' {
        let hashes = (j + 1..).take_while(|&k| at(k) == '#').count();
        j += 1 + hashes;
        if at(j) != '"' {
            return None; // an identifier or a raw identifier `r#x`
        }
        // No escapes in raw strings: they end at the first `"` followed by `hashes` `#`s.
        let close =
            (j + 1..c.len()).find(|&k| at(k) == '"' && (1..=hashes).all(|h| at(k + h) == '#'));
        return Some(close.map_or(c.len(), |k| k + 1 + hashes));
    }
    match at(j) {
        '"' => {
            let mut k = j + 1;
            while k < c.len() && c[k] != '"' {
                k += if c[k] == '\\' { 2 } else { 1 };
            }
            Some(c.len().min(k + 1))
        }
        // `'\n'`, `'\''`, `'\u{7FFF}'`: skip the escaped char, then up to the closing quote.
        '\'' if at(j + 1) == '\\' => (j + 3..c.len()).find(|&k| c[k] == '\'').map(|k| k + 1),
        // `'x'` is a char; a quote not closed two chars on starts a lifetime or a label.
        '\'' if at(j + 2) == '\'' => Some(j + 3),
        _ => None,
    }
}

/// Blanks comments (`//`, nested `/* */`) and string, byte-string, raw-string and char
/// literals with spaces. Invariant: every newline is kept, so line numbers do not move.
fn strip_comments_and_literals(src: &str) -> String {
    let c: Vec<char> = src.chars().collect();
    let (mut out, mut i) = (String::with_capacity(src.len()), 0);
    while i < c.len() {
        let end = match (c[i], c.get(i + 1)) {
            ('/', Some('/')) => (i..c.len()).find(|&k| c[k] == '\n').unwrap_or(c.len()),
            ('/', Some('*')) => {
                let (mut k, mut depth) = (i + 2, 1);
                while k < c.len() && depth > 0 {
                    match (c[k], c.get(k + 1)) {
                        ('/', Some('*')) => (depth, k) = (depth + 1, k + 2),
                        ('*', Some('/')) => (depth, k) = (depth - 1, k + 2),
                        _ => k += 1,
                    }
                }
                c.len().min(k)
            }
            // A literal prefix letter only counts at the start of a word (not in `bar"`).
            _ if i > 0 && is_ident_char(c[i - 1]) => i,
            _ => literal_end(&c, i).unwrap_or(i),
        };
        if end == i {
            out.push(c[i]);
            i += 1;
        } else {
            out.extend(
                c[i..end]
                    .iter()
                    .map(|&ch| if ch == '\n' { '\n' } else { ' ' }),
            );
            i = end;
        }
    }
    out
}

/// Tokens of stripped source, each with its 1-based line.
fn tokenize(stripped: &str) -> Vec<(Tok, usize)> {
    let c: Vec<char> = stripped.chars().collect();
    let (mut toks, mut i, mut line) = (Vec::new(), 0, 1);
    while i < c.len() {
        let len = c[i..].iter().take_while(|&&ch| is_ident_char(ch)).count();
        if len > 0 {
            let tok = if c[i].is_ascii_digit() {
                Tok::Punct('0')
            } else {
                Tok::Ident(c[i..i + len].iter().collect())
            };
            toks.push((tok, line));
            i += len;
        } else if c[i] == ':' && c.get(i + 1) == Some(&':') {
            toks.push((Tok::Sep, line));
            i += 2;
        } else {
            line += usize::from(c[i] == '\n');
            if !c[i].is_whitespace() {
                toks.push((Tok::Punct(c[i]), line));
            }
            i += 1;
        }
    }
    toks
}

fn ident_at(t: &[(Tok, usize)], i: usize) -> Option<&str> {
    match t.get(i) {
        Some((Tok::Ident(s), _)) => Some(s),
        _ => None,
    }
}

fn is_tok(t: &[(Tok, usize)], i: usize, want: &Tok) -> bool {
    t.get(i).is_some_and(|(tok, _)| tok == want)
}

/// Expands the use tree at `t[*i]` into flat paths, each starting with `path`:
/// `a::{b, c::{d}, self}` gives `a::b`, `a::c::d`, `a`; the glob `a::*` gives `a`.
/// Leaves `*i` after the tree; `None` when the tokens are not a use tree (`use<'a>`).
fn use_tree(
    t: &[(Tok, usize)],
    i: &mut usize,
    mut path: ModPath,
    out: &mut Vec<ModPath>,
) -> Option<()> {
    loop {
        match &t.get(*i)?.0 {
            Tok::Sep => *i += 1, // a leading `::`
            Tok::Punct('*') => break,
            Tok::Punct('{') => {
                *i += 1;
                while !is_tok(t, *i, &Tok::Punct('}')) {
                    use_tree(t, i, path.clone(), out)?;
                    if is_tok(t, *i, &Tok::Punct(',')) {
                        *i += 1;
                    } else if !is_tok(t, *i, &Tok::Punct('}')) {
                        return None;
                    }
                }
                *i += 1;
                return Some(());
            }
            Tok::Ident(s) => {
                // `{self}` names the prefix itself; a leading `self::` is kept for resolution.
                if s != "self" || path.is_empty() {
                    path.push(s.clone());
                }
                if !is_tok(t, *i + 1, &Tok::Sep) {
                    if ident_at(t, *i + 1) == Some("as") {
                        *i += 2; // `x as y`: end on the alias
                    }
                    break;
                }
                *i += 2;
            }
            Tok::Punct(_) => return None,
        }
    }
    *i += 1;
    out.push(path);
    Some(())
}

/// Module declarations and path references of one file. Invariant: `inline` holds each open
/// `mod name {` with the brace depth just inside it, so `super::` in `mod tests {}` is right.
fn scan_source(src: &str) -> FileScan {
    let t = tokenize(&strip_comments_and_literals(src));
    let (mut scan, mut inline, mut depth, mut i) = (FileScan::default(), Vec::new(), 0_usize, 0);
    let ctx =
        |inline: &[(String, usize)]| inline.iter().map(|(n, _)| n.clone()).collect::<ModPath>();
    while i < t.len() {
        let (tok, line) = (&t[i].0, t[i].1);
        match tok {
            Tok::Punct('{') => depth += 1,
            Tok::Punct('}') => {
                if inline.last().is_some_and(|&(_, d)| d == depth) {
                    inline.pop();
                }
                depth = depth.saturating_sub(1);
            }
            Tok::Ident(kw) if kw == "mod" => {
                let is_file = is_tok(&t, i + 2, &Tok::Punct(';'));
                if let Some(name) =
                    ident_at(&t, i + 1).filter(|_| is_file || is_tok(&t, i + 2, &Tok::Punct('{')))
                {
                    let path = [ctx(&inline), vec![name.to_owned()]].concat();
                    if !is_file {
                        depth += 1;
                        inline.push((name.to_owned(), depth));
                    }
                    scan.mods.push((path, is_file));
                    i += 3;
                    continue;
                }
            }
            Tok::Ident(kw) if kw == "use" => {
                let (mut j, mut paths) = (i + 1, Vec::new());
                // Not a use tree (`use<'a>`, `use $crate::x;` in a macro): scan it as code.
                if use_tree(&t, &mut j, Vec::new(), &mut paths).is_some()
                    && is_tok(&t, j, &Tok::Punct(';'))
                {
                    scan.refs
                        .extend(paths.into_iter().map(|segs| (ctx(&inline), segs, line)));
                    i = j + 1;
                    continue;
                }
            }
            // A path starts here unless it continues one (`a::b`), is a method or field
            // (`x.parse::<T>()`) or a visibility (`pub(in crate::a)`).
            Tok::Ident(first) if is_tok(&t, i + 1, &Tok::Sep) => {
                let prev = |k: usize| i.checked_sub(k).map(|p| &t[p].0);
                let continues = matches!(prev(1), Some(Tok::Sep | Tok::Punct('.')));
                let in_vis = matches!(prev(1), Some(Tok::Ident(s)) if s == "in")
                    && matches!(prev(2), Some(Tok::Punct('(')));
                if !continues && !in_vis {
                    let (mut segs, mut j) = (vec![first.clone()], i + 1);
                    while let (true, Some(s)) = (is_tok(&t, j, &Tok::Sep), ident_at(&t, j + 1)) {
                        segs.push(s.to_owned());
                        j += 2;
                    }
                    scan.refs.push((ctx(&inline), segs, line));
                    i = j;
                    continue;
                }
            }
            _ => {}
        }
        i += 1;
    }
    scan
}

/// The absolute module path named by `segs` written inside module `cur`, or `None` for paths
/// that do not start at a module of this crate (std, other crates, `Self::`, local items).
fn absolute(
    segs: &[String],
    cur: &[String],
    is_module: impl Fn(&[String]) -> bool,
) -> Option<ModPath> {
    let ups = segs.iter().take_while(|s| *s == "super").count();
    let (base, rest) = match segs.first()?.as_str() {
        "crate" => (&cur[..0], &segs[1..]),
        "self" => (cur, &segs[1..]),
        "super" => (&cur[..cur.len().checked_sub(ups)?], &segs[ups..]),
        _ if is_module(&[cur, &segs[..1]].concat()) => (cur, segs), // a child module
        _ => return None,
    };
    Some([base, rest].concat())
}

/// Adds the file edges of the crate rooted at `root_file`; returns how many files it has.
fn crate_edges(ws: &Path, root_file: &Path, edges: &mut Edges) -> Result<usize, String> {
    let rel = |p: &Path| {
        p.strip_prefix(ws)
            .unwrap_or(p)
            .to_string_lossy()
            .replace('\\', "/")
    };
    // Invariant: every module found so far (file or inline) -> the file that holds it.
    let mut modules: BTreeMap<ModPath, String> = BTreeMap::new();
    let mut files = Vec::new();
    let mut queue = VecDeque::from([(root_file.to_path_buf(), ModPath::new())]);
    while let Some((path, modpath)) = queue.pop_front() {
        let src = fs::read_to_string(&path).map_err(|e| format!("read {}: {e}", path.display()))?;
        let scan = scan_source(&src);
        // Children of the crate root and of mod.rs live beside it; those of foo.rs in foo/.
        let parent = path.parent().unwrap_or(ws);
        let dir = match path.file_stem().and_then(|s| s.to_str()) {
            Some(stem) if stem != "mod" && !modpath.is_empty() => parent.join(stem),
            _ => parent.to_path_buf(),
        };
        modules.insert(modpath.clone(), rel(&path));
        for (inner, is_file) in &scan.mods {
            let abs = [&modpath[..], inner].concat();
            if !is_file {
                modules.insert(abs, rel(&path));
                continue;
            }
            // `inner` = [inline modules.., name]: the file is base.rs or base/mod.rs. A missing
            // one (cfg'd out, generated) is rustc's business, not ours.
            let base = inner.iter().fold(dir.clone(), |d, s| d.join(s));
            let file = [base.with_extension("rs"), base.join("mod.rs")]
                .into_iter()
                .find(|p| p.is_file());
            queue.extend(file.map(|f| (f, abs)));
        }
        files.push((rel(&path), modpath, scan, src));
    }
    let file_mod: BTreeMap<&str, &ModPath> =
        files.iter().map(|(f, m, _, _)| (f.as_str(), m)).collect();
    for (from, modpath, scan, src) in &files {
        for (ctx, segs, line) in &scan.refs {
            let cur = [&modpath[..], ctx].concat();
            let Some(abs) = absolute(segs, &cur, |m| modules.contains_key(m)) else {
                continue;
            };
            // The deepest existing module prefix of `abs`; the root `[]` always exists.
            let to = (0..=abs.len())
                .rev()
                .find_map(|k| modules.get(&abs[..k]))
                .unwrap_or(&files[0].0);
            // A file and its ancestors are one unit (see the module comment).
            let nested = file_mod
                .get(to.as_str())
                .is_some_and(|m| m.starts_with(modpath) || modpath.starts_with(m));
            if to != from && !nested {
                let text = src.lines().nth(line - 1).unwrap_or_default().trim();
                let to_map = edges.entry(from.clone()).or_default();
                to_map
                    .entry(to.clone())
                    .or_insert_with(|| format!("{from}:{line}: {text}"));
            }
        }
    }
    Ok(files.len())
}

/// Kosaraju: strongly connected components, each sorted. Pass 1 orders nodes by DFS finish
/// time; pass 2 walks the reversed graph in reverse finish order, one component per tree.
fn strongly_connected(adj: &[Vec<usize>]) -> Vec<Vec<usize>> {
    fn dfs(adj: &[Vec<usize>], v: usize, seen: &mut [bool], out: &mut Vec<usize>) {
        seen[v] = true;
        for &w in &adj[v] {
            if !seen[w] {
                dfs(adj, w, seen, out);
            }
        }
        out.push(v);
    }
    let n = adj.len();
    let mut rev = vec![Vec::new(); n];
    for (v, ws) in adj.iter().enumerate() {
        ws.iter().for_each(|&w| rev[w].push(v));
    }
    let (mut seen, mut order) = (vec![false; n], Vec::new());
    for v in 0..n {
        if !seen[v] {
            dfs(adj, v, &mut seen, &mut order);
        }
    }
    let (mut seen, mut comps) = (vec![false; n], Vec::new());
    for &v in order.iter().rev() {
        if !seen[v] {
            let mut comp = Vec::new();
            dfs(&rev, v, &mut seen, &mut comp);
            comp.sort_unstable();
            comps.push(comp);
        }
    }
    comps
}

/// Shortest cycle `[start, .., last]` through `start`, by BFS over nodes in `comp` only.
fn shortest_cycle(adj: &[Vec<usize>], comp: &[usize], start: usize) -> Option<Vec<usize>> {
    let mut prev: Vec<Option<usize>> = vec![None; adj.len()];
    let mut queue = VecDeque::from([start]);
    while let Some(v) = queue.pop_front() {
        for &w in adj[v].iter().filter(|w| comp.binary_search(w).is_ok()) {
            if w == start {
                // Walk the BFS tree back; every reached node but `start` has a `prev`.
                let (mut path, mut x) = (vec![v], v);
                while x != start {
                    x = prev[x]?;
                    path.push(x);
                }
                path.reverse();
                return Some(path);
            }
            if prev[w].is_none() {
                prev[w] = Some(v);
                queue.push_back(w);
            }
        }
    }
    None
}

/// For every file in a component of 2+ files, the shortest cycle through it (deduplicated),
/// so each tangled file appears at least once; formatted with one example per edge.
fn cycles(edges: &Edges) -> Vec<String> {
    let names: BTreeSet<&String> = edges
        .keys()
        .chain(edges.values().flat_map(|m| m.keys()))
        .collect();
    let names: Vec<&String> = names.into_iter().collect();
    let id = |n: &String| names.binary_search(&n).unwrap_or_default();
    let adj: Vec<Vec<usize>> = names
        .iter()
        .map(|n| edges.get(*n).map_or(vec![], |m| m.keys().map(id).collect()))
        .collect();
    let mut found = BTreeSet::new();
    for comp in strongly_connected(&adj).into_iter().filter(|c| c.len() > 1) {
        for &v in &comp {
            let Some(mut cyc) = shortest_cycle(&adj, &comp, v) else {
                continue;
            };
            let min = (0..cyc.len()).min_by_key(|&k| cyc[k]).unwrap_or(0);
            cyc.rotate_left(min); // one rotation per cycle, so `found` dedups
            found.insert(cyc);
        }
    }
    let block = |cyc: &Vec<usize>| {
        let file = |k: usize| names[cyc[k % cyc.len()]];
        let mut s = (0..=cyc.len())
            .map(file)
            .cloned()
            .collect::<Vec<_>>()
            .join(" -> ");
        (0..cyc.len()).for_each(|k| s += &format!("\n    {}", edges[file(k)][file(k + 1)]));
        s
    };
    found.iter().map(block).collect()
}

/// `src/lib.rs`, `src/bin/rolesync/main.rs` and the `crates/*/src/{lib,main}.rs` that exist.
pub(crate) fn crate_roots(ws: &Path) -> Vec<PathBuf> {
    let mut members: Vec<PathBuf> = fs::read_dir(ws.join("crates"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .collect();
    members.sort();
    let mut roots = vec![ws.join("src/lib.rs"), ws.join("src/bin/rolesync/main.rs")];
    roots.extend(
        members
            .iter()
            .flat_map(|m| [m.join("src/lib.rs"), m.join("src/main.rs")]),
    );
    roots.retain(|p| p.is_file());
    roots
}

/// Scans each crate root's module tree separately and finds the file cycles in each.
pub(crate) fn check(ws: &Path, roots: &[PathBuf]) -> Result<Report, String> {
    let mut report = Report::default();
    for root in roots {
        let mut edges = Edges::new();
        report.files += crate_edges(ws, root, &mut edges)?;
        report.edges += edges.values().map(BTreeMap::len).sum::<usize>();
        report.cycles.extend(cycles(&edges));
    }
    Ok(report)
}

pub(crate) fn format_cycles(cycles: &[String]) -> String {
    let n = cycles.len();
    let head = format!("{n} import cycle(s) between files; move shared items or drop an import:");
    format!("{head}\n  {}", cycles.join("\n  "))
}

#[test]
fn no_import_cycle_between_files() {
    let ws = Path::new(env!("CARGO_MANIFEST_DIR"));
    let roots = crate_roots(ws);
    let report = check(ws, &roots).expect("read the workspace sources");
    // A checker that sees no files or no references could never fail.
    let (files, edges) = (report.files, report.edges);
    assert!(
        files > roots.len() && edges > 0,
        "{files} files, {edges} edges from {roots:?}: checker broken?"
    );
    assert!(
        report.cycles.is_empty(),
        "{}",
        format_cycles(&report.cycles)
    );
}

#[test]
fn the_service_library_never_names_the_emulator() {
    let ws = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut stack = vec![ws.join("src")];
    let mut offenders = Vec::new();
    let mut seen = 0;
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).expect("read src").flatten() {
            let path = entry.path();
            // The binary (src/bin) may use it: `rolesync emulator` and `rolesync demo`.
            if path.is_dir() && path.file_name().is_some_and(|n| n != "bin") {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                seen += 1;
                let src = fs::read_to_string(&path).expect("read a source file");
                let stripped = strip_comments_and_literals(&src);
                if stripped.contains("genesys_cloud_emulator") {
                    offenders.push(path.display().to_string());
                }
            }
        }
    }
    assert!(
        seen > 10,
        "only {seen} library files found: checker broken?"
    );
    assert!(
        offenders.is_empty(),
        "the library names the emulator in {offenders:?}"
    );
}

fn use_paths(src: &str) -> Vec<String> {
    scan_source(src)
        .refs
        .iter()
        .map(|(_, segs, _)| segs.join("::"))
        .collect()
}

#[test]
fn strips_comments_and_literals_but_keeps_lines_and_lifetimes() {
    let src = r##"a /* x /* y */ z
 */ b // c::d
s("e \" //", r#"g"h"#, b"i", '{', '\'', b'j');
fn k<'a>(x: &'a T) {}"##;
    let out = strip_comments_and_literals(src);
    assert_eq!(out.lines().count(), src.lines().count());
    let words: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(
        words,
        [
            "a", "b", "s(", ",", ",", ",", ",", ",", ");", "fn", "k<'a>(x:", "&'a", "T)", "{}"
        ]
    );
}

#[test]
fn expands_nested_use_groups_and_finds_code_paths() {
    let src = r#"use crate::a::{b, c::{d, e as f}, self};
use super::*;
fn g() { h::i(); x.j::<T>(); "crate::z"; }"#;
    assert_eq!(
        use_paths(src),
        [
            "crate::a::b",
            "crate::a::c::d",
            "crate::a::c::e",
            "crate::a",
            "super",
            "h::i"
        ]
    );
}

#[test]
fn super_inside_inline_module_resolves_to_the_file_module() {
    let scan = scan_source("mod tests {\n    use super::x;\n}\nuse self::y;");
    assert_eq!(scan.mods, [(vec!["tests".to_owned()], false)]);
    // The file is module `p`; refs are written in `p::tests` and `p`.
    let file_mod = ["p".to_owned()];
    let resolve = |(ctx, segs, _): &(ModPath, Vec<String>, usize)| {
        absolute(segs, &[&file_mod[..], ctx].concat(), |_| false)
    };
    let p = |s: &str| vec!["p".to_owned(), s.to_owned()];
    assert_eq!(
        scan.refs.iter().map(resolve).collect::<Vec<_>>(),
        [Some(p("x")), Some(p("y"))]
    );
}

#[test]
fn kosaraju_finds_components_of_a_toy_graph() {
    let mut comps = strongly_connected(&[vec![1], vec![2], vec![0, 3], vec![4], vec![3], vec![]]);
    comps.sort();
    assert_eq!(comps, [vec![0, 1, 2], vec![3, 4], vec![5]]);
}

#[test]
fn checker_reports_a_toy_two_file_cycle_but_not_mod_declarations() {
    let ws = std::env::temp_dir().join(format!("rolesync-layout-check-{}", std::process::id()));
    let write = |p: &str, s: &str| fs::write(ws.join(p), s).expect("write toy crate file");
    fs::create_dir_all(ws.join("src")).expect("create toy crate dir");
    // a.rs names the root, but the root only declares `mod a;` and names itself: no cycle.
    write(
        "src/lib.rs",
        "mod a;\nmod b;\npub struct Z;\n#[cfg(test)]\nmod tests { use super::Z; }\n",
    );
    write(
        "src/a.rs",
        "use crate::b::X; // a -> b\npub struct Y(crate::Z);\n",
    );
    write("src/b.rs", "pub struct X;\nfn f() -> super::a::Y { g() }\n");
    let before = check(&ws, &[ws.join("src/lib.rs")]).expect("scan toy crate");
    write("src/b.rs", "pub struct X;\n");
    let after = check(&ws, &[ws.join("src/lib.rs")]).expect("scan toy crate");
    let _ = fs::remove_dir_all(&ws);
    let want = [
        "src/a.rs -> src/b.rs -> src/a.rs",
        "    src/a.rs:1: use crate::b::X; // a -> b",
        "    src/b.rs:2: fn f() -> super::a::Y { g() }",
    ];
    assert_eq!(before.cycles, [want.join("\n")]);
    assert!(after.cycles.is_empty(), "{}", format_cycles(&after.cycles));
}
