//! The crate's layers import one way (trip → engine → format → device, crypto) and its
//! modules import each other without loops: read from the `crate::` paths in the sources, so
//! that a new import against the grain fails here rather than in review.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layers, bottom first; `error` is shared by all of them.
const LAYERS: &[(&str, u32)] = &[
    ("device", 0),
    ("crypto", 0),
    ("format", 1),
    ("engine", 2),
    ("trip", 3),
];

fn rank(layer: &str) -> Option<u32> {
    LAYERS.iter().find(|(l, _)| *l == layer).map(|(_, r)| *r)
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// `engine/store/write.rs` → `["engine", "store"]`, `format/journal.rs` → `["format",
/// "journal"]`, `lib.rs` → `[]`: the module a file belongs to, down to the second level.
fn module_of(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .with_extension("")
        .iter()
        .map(|c| c.to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod" || p == "lib") {
        parts.pop();
    }
    parts.truncate(2);
    parts
}

/// The `crate::a::b` paths a source names (in `use` lines and inline), as `[a, b]`.
fn imports(text: &str) -> BTreeSet<Vec<String>> {
    let mut out = BTreeSet::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            rest = &rest[i + "crate::".len()..];
            let path: Vec<String> = rest
                .split("::")
                .take(2)
                .map(|s| {
                    s.chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect::<String>()
                })
                .take_while(|s| !s.is_empty() && s.starts_with(|c: char| c.is_ascii_lowercase()))
                .collect();
            if !path.is_empty() {
                out.insert(path);
            }
        }
    }
    out
}

struct Graph {
    /// Module → the modules it imports (files of one module merged).
    edges: BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
}

fn graph() -> Graph {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let modules: BTreeSet<Vec<String>> = files
        .iter()
        .map(|f| module_of(f.strip_prefix(&src).unwrap()))
        .collect();
    let mut edges: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    for f in &files {
        let from = module_of(f.strip_prefix(&src).unwrap());
        let text = std::fs::read_to_string(f).unwrap();
        for path in imports(&text) {
            // `crate::format::journal` names that module; `crate::error` is a module itself.
            let to = if modules.contains(&path) {
                path
            } else {
                path[..1].to_vec()
            };
            if to != from {
                edges.entry(from.clone()).or_default().insert(to);
            }
        }
    }
    Graph { edges }
}

#[test]
fn layers_import_only_downwards() {
    let g = graph();
    let mut wrong = Vec::new();
    for (from, tos) in &g.edges {
        let Some(from_rank) = from.first().and_then(|l| rank(l)) else {
            continue; // lib.rs and error.rs
        };
        for to in tos {
            let layer = &to[0];
            if layer == "error" || layer == &from[0] {
                continue;
            }
            match rank(layer) {
                Some(r) if r < from_rank => {}
                _ => wrong.push(format!("{} imports {}", from.join("::"), to.join("::"))),
            }
        }
    }
    assert!(wrong.is_empty(), "imports against the layers: {wrong:#?}");
    // The check sees imports at all (a parser that found none would pass anything).
    let trip_seal = g.edges.get(&vec!["trip".to_string(), "seal".to_string()]);
    assert!(trip_seal.is_some_and(|t| t.contains(&vec!["engine".into()])));
}

#[test]
fn modules_import_each_other_without_loops() {
    let g = graph();
    // Depth-first search; a module met again while still on the path closes a loop.
    fn visit(
        g: &Graph,
        m: &Vec<String>,
        path: &mut Vec<Vec<String>>,
        done: &mut BTreeSet<Vec<String>>,
        loops: &mut Vec<String>,
    ) {
        if let Some(i) = path.iter().position(|p| p == m) {
            let cycle: Vec<String> = path[i..].iter().map(|p| p.join("::")).collect();
            loops.push(format!("{} -> {}", cycle.join(" -> "), m.join("::")));
            return;
        }
        if !done.insert(m.clone()) {
            return;
        }
        path.push(m.clone());
        for to in g.edges.get(m).into_iter().flatten() {
            visit(g, to, path, done, loops);
        }
        path.pop();
    }
    let mut loops = Vec::new();
    let mut done = BTreeSet::new();
    for m in g.edges.keys() {
        visit(&g, m, &mut Vec::new(), &mut done, &mut loops);
    }
    assert!(loops.is_empty(), "import loops: {loops:#?}");
}
