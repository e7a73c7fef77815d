//! The library's module map stays a map (docs/architecture.md): leaves know nothing above
//! them, and no two modules import each other, even through others. Read from the
//! source (every `crate::<module>` outside tests and comments), so a new arrow the wrong
//! way fails here, named, before a reviewer has to spot it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Modules that the rest build on: none of them may reach any module that runs
/// something (a supervisor, a worker, a shell's launcher, a view).
const LEAVES: &[&str] = &[
    "backoff",
    "channel",
    "config",
    "envelope",
    "environment",
    "protocol",
    "secrets",
    "signals",
    "store",
    "token",
];
const RUNNERS: &[&str] = &["launch", "status_page", "supervisor", "worker"];

/// Top-level module → the top-level modules its non-test code names.
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut dirs = vec![src.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            let rel = path.strip_prefix(&src).unwrap();
            let top = rel
                .components()
                .next()
                .unwrap()
                .as_os_str()
                .to_string_lossy();
            let top = top.trim_end_matches(".rs").to_owned();
            if path.extension().is_none_or(|e| e != "rs") || top == "lib" || top == "main" {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let code = text.split("#[cfg(test)]").next().unwrap_or_default();
            let named = graph.entry(top.clone()).or_default();
            for line in code.lines().filter(|l| !l.trim_start().starts_with("//")) {
                for (i, _) in line.match_indices("crate::") {
                    let rest = &line[i + "crate::".len()..];
                    let module: String = rest
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    if !module.is_empty() && module != top {
                        named.insert(module);
                    }
                }
            }
        }
    }
    graph
}

/// Every module `from` reaches, following imports.
fn reach(graph: &BTreeMap<String, BTreeSet<String>>, from: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut todo = vec![from.to_owned()];
    while let Some(m) = todo.pop() {
        for next in graph.get(&m).into_iter().flatten() {
            if seen.insert(next.clone()) {
                todo.push(next.clone());
            }
        }
    }
    seen
}

#[test]
fn the_module_map_has_no_cycle_and_leaves_stay_leaves() {
    let graph = imports();
    for leaf in LEAVES {
        assert!(graph.contains_key(*leaf), "no module {leaf}: update LEAVES");
    }
    let mut wrong = Vec::new();
    for leaf in LEAVES {
        let reached = reach(&graph, leaf);
        for runner in RUNNERS.iter().filter(|r| reached.contains(**r)) {
            wrong.push(format!("the leaf {leaf} reaches {runner}"));
        }
    }
    for (module, named) in &graph {
        for other in named {
            if reach(&graph, other).contains(module) {
                wrong.push(format!("{module} → {other} → … → {module}"));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    // It reads what it should: the supervisor is known to name its leaves.
    assert!(reach(&graph, "supervisor").contains("store"), "{graph:?}");
}
