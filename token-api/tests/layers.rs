//! token-api's module graph, read from its source: every `mod child;` declaration and every
//! `crate::`, `super::` and `self::` path (in `use` lines and inline) is an edge from the file
//! that names it to the module file it reaches. The graph must have no cycle at all, file by file; the bottom layer must import
//! nothing above it; a feature may use another feature's model, never its handlers (`mod.rs`);
//! nothing but `startup` imports `routes`, nothing imports `startup`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

const BOTTOM: &[&str] = &[
    "configuration",
    "api_scope",
    "auth",
    "problem",
    "params",
    "signer",
    "json",
    "metrics",
];
const FEATURES: &[&str] = &[
    "tokens",
    "history",
    "entitlements",
    "playback",
    "export",
    "console",
];

type Graph = BTreeMap<String, BTreeSet<String>>;

/// Module path of a source file: `playback/wire.rs` -> `playback::wire`, `playback/mod.rs` ->
/// `playback`, `lib.rs` -> `` (the crate root).
fn module_of(rel: &Path) -> String {
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_owned())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts.join("::")
}

fn files(dir: &Path, root: &Path, out: &mut Vec<(String, String)>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files(&path, root, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let rel = path.strip_prefix(root).unwrap();
            out.push((module_of(rel), std::fs::read_to_string(&path).unwrap()));
        }
    }
}

/// Source without comments (doc comments name modules in prose) and without `#[cfg(test)]`
/// modules (tests may reach anywhere).
fn code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => text,
    };
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every path that starts at `crate`, `super` or `self`, with `{a, b::c}` groups expanded one
/// level, resolved against `module` into absolute segment lists.
fn paths(module: &str, text: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let bytes: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < bytes.len() {
        let rest: String = bytes[i..bytes.len().min(i + 6)].iter().collect();
        let start = ["crate::", "super::", "self::"]
            .iter()
            .find(|p| {
                rest.starts_with(&p[..p.len().min(rest.len())])
                    && bytes[i..].iter().collect::<String>().starts_with(*p)
            })
            .filter(|_| i == 0 || !ident(bytes[i - 1]));
        let Some(prefix) = start else {
            i += 1;
            continue;
        };
        let mut j = i;
        while j < bytes.len() && (ident(bytes[j]) || bytes[j] == ':') {
            j += 1;
        }
        let head: String = bytes[i..j].iter().collect();
        let head = head.trim_end_matches(':').to_owned();
        let mut tails = vec![String::new()];
        if j < bytes.len() && bytes[j] == '{' {
            let close = (j..bytes.len()).find(|k| bytes[*k] == '}').unwrap();
            let group: String = bytes[j + 1..close].iter().collect();
            tails = group
                .split(',')
                .map(|s| s.trim().split(" as ").next().unwrap().to_owned())
                .filter(|s| !s.is_empty())
                .collect();
            j = close;
        }
        let base: Vec<String> = match *prefix {
            "crate::" => vec![],
            "super::" => {
                let mut m: Vec<String> = module.split("::").map(str::to_owned).collect();
                m.pop();
                m
            }
            _ => module
                .split("::")
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
        };
        for tail in tails {
            let mut segs = base.clone();
            let full = format!("{head}::{tail}");
            segs.extend(
                full.split("::")
                    .skip(1)
                    .filter(|s| !s.is_empty() && *s != "self")
                    .map(str::to_owned),
            );
            out.push(segs);
        }
        i = j.max(i + 1);
    }
    out
}

fn graph() -> Graph {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut sources = Vec::new();
    files(&root, &root, &mut sources);
    let modules: BTreeSet<String> = sources.iter().map(|(m, _)| m.clone()).collect();
    let mut g = Graph::new();
    for (module, text) in &sources {
        let edges = g.entry(module.clone()).or_default();
        let code = code(text);
        // `mod child;` is an edge down to the child (its relative paths, `child::f`, too).
        for line in code.lines() {
            let line = line.trim().trim_start_matches("pub ");
            if let Some(child) = line.strip_prefix("mod ").and_then(|l| l.strip_suffix(';')) {
                let child = match module.as_str() {
                    "" => child.to_owned(),
                    m => format!("{m}::{child}"),
                };
                if modules.contains(&child) {
                    edges.insert(child);
                }
            }
        }
        for segs in paths(module, &code) {
            // The longest prefix that is a module file.
            let target = (1..=segs.len())
                .rev()
                .map(|n| segs[..n].join("::"))
                .find(|m| modules.contains(m));
            if let Some(t) = target.filter(|t| t != module && !t.is_empty()) {
                edges.insert(t);
            }
        }
    }
    g
}

/// A cycle in `g`, if any, as the modules along it.
fn find_cycle(g: &Graph) -> Option<Vec<String>> {
    fn visit(
        g: &Graph,
        n: &str,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = stack.iter().position(|s| s == n) {
            let mut cycle = stack[i..].to_vec();
            cycle.push(n.to_owned());
            return Some(cycle);
        }
        if done.contains(n) {
            return None;
        }
        stack.push(n.to_owned());
        for next in g.get(n).into_iter().flatten() {
            if let Some(c) = visit(g, next, stack, done) {
                return Some(c);
            }
        }
        stack.pop();
        done.insert(n.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    g.keys()
        .find_map(|n| visit(g, n, &mut Vec::new(), &mut done))
}

fn top(module: &str) -> &str {
    module.split("::").next().unwrap()
}

#[test]
fn the_reader_finds_edges_and_the_checker_finds_cycles() {
    let found = paths(
        "playback::store",
        "use super::policy::{Decision, Facts};\nuse crate::{a, b::c};\nlet x = crate::d::e(1);",
    );
    assert_eq!(
        found,
        [
            vec!["playback", "policy", "Decision"],
            vec!["playback", "policy", "Facts"],
            vec!["a"],
            vec!["b", "c"],
            vec!["d", "e"],
        ]
    );
    let mut g = Graph::new();
    g.entry("a".into()).or_default().insert("b".into());
    g.entry("b".into()).or_default().insert("c".into());
    assert_eq!(find_cycle(&g), None);
    g.entry("c".into()).or_default().insert("a".into());
    assert_eq!(find_cycle(&g).unwrap(), ["a", "b", "c", "a"]);
}

#[test]
fn the_import_graph_has_no_cycle_and_runs_one_way() {
    let g = graph();
    assert!(g.len() > 25, "read every file: {:?}", g.keys());
    assert!(
        g["playback"].contains("playback::wire")
            && g["playback::store"].contains("entitlements::model"),
        "edges are read: {g:#?}"
    );
    if let Some(cycle) = find_cycle(&g) {
        panic!("import cycle: {}", cycle.join(" -> "));
    }
    for (from, tos) in &g {
        for to in tos {
            let (f, t) = (top(from), top(to));
            if BOTTOM.contains(&f) {
                assert!(
                    BOTTOM.contains(&t),
                    "bottom layer {from} imports {to}, above it"
                );
            }
            if FEATURES.contains(&f) {
                assert!(
                    !["routes", "startup"].contains(&t),
                    "feature {from} imports the top ({to})"
                );
                if FEATURES.contains(&t) && f != t {
                    assert_ne!(
                        to.as_str(),
                        t,
                        "feature {from} imports another feature's handlers ({to}); use its model"
                    );
                }
            }
            if t == "startup" {
                assert!(f.is_empty(), "{from} imports startup");
            }
            if t == "routes" {
                assert!(["startup", ""].contains(&f), "{from} imports routes");
            }
        }
    }
}
