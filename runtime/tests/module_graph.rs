//! The runtime's module structure, checked from its source (no broker needed):
//! no import circles between modules, and no file in `src/kafka` over 500 lines
//! unless its header says why. A module may use its parent's items (that is Rust's
//! module tree, not a circle); unit-test modules at the bottom of a file are left out.
//!
//! `cargo test -p switchboard-runtime --test module_graph -- --nocapture` prints the
//! graph (each module and what it uses).

#![allow(clippy::unwrap_used, clippy::print_stdout)] // a test fails loudly

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
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

/// `src/kafka/mod.rs` -> `kafka`, `src/kafka/inbox.rs` -> `kafka::inbox`, `lib.rs` -> ``.
fn module_of(path: &Path) -> String {
    let rel = path.strip_prefix(src()).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts.join("::")
}

/// The code of a file before its unit tests, without comments.
fn code(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        if line.trim_start().starts_with("#[cfg(test)]") {
            break;
        }
        let line = line.split("//").next().unwrap_or_default();
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Every path a `crate::` or `super::` reference in `code` names, with `use` groups
/// (`use crate::a::{b, c::d}`) expanded; `super` is resolved against `module`.
fn referenced_paths(module: &str, code: &str) -> Vec<String> {
    let mut paths = Vec::new();
    let bytes: Vec<char> = code.chars().collect();
    let mut i = 0;
    while i < bytes.len() {
        let rest: String = bytes[i..bytes.len().min(i + 7)].iter().collect();
        let starts_word = i == 0 || !(bytes[i - 1].is_alphanumeric() || bytes[i - 1] == '_');
        if starts_word && (rest.starts_with("crate::") || rest.starts_with("super::")) {
            // Read the path, with brace groups, up to its end.
            let mut depth = 0;
            let mut j = i;
            while j < bytes.len() {
                let c = bytes[j];
                if c == '{' {
                    depth += 1;
                } else if c == '}' {
                    if depth == 0 {
                        break;
                    }
                    depth -= 1;
                } else if depth == 0 && !(c.is_alphanumeric() || c == '_' || c == ':') {
                    break;
                }
                j += 1;
            }
            let text: String = bytes[i..j].iter().filter(|c| !c.is_whitespace()).collect();
            for p in expand(&text) {
                paths.push(resolve(module, &p));
            }
            i = j;
        } else {
            i += 1;
        }
    }
    paths
}

/// `a::{b, c::{d, e}}` -> `a::b`, `a::c::d`, `a::c::e`.
fn expand(path: &str) -> Vec<String> {
    let Some(open) = path.find('{') else {
        return vec![path.trim_end_matches("::").to_owned()];
    };
    let (head, group) = (&path[..open], &path[open + 1..path.len() - 1]);
    let mut items = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (k, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&group[start..k]);
                start = k + 1;
            }
            _ => {}
        }
    }
    items.push(&group[start..]);
    items
        .into_iter()
        .filter(|s| !s.is_empty())
        .flat_map(|item| expand(&format!("{head}{item}")))
        .collect()
}

fn resolve(module: &str, path: &str) -> String {
    let mut parts: Vec<&str> = path.split("::").collect();
    let mut base: Vec<&str> = if module.is_empty() {
        Vec::new()
    } else {
        module.split("::").collect()
    };
    match parts.first() {
        Some(&"crate") => {
            base.clear();
            parts.remove(0);
        }
        _ => {
            while parts.first() == Some(&"super") {
                base.pop();
                parts.remove(0);
            }
        }
    }
    base.extend(parts);
    base.join("::")
}

/// The longest prefix of `path` that is a module of the crate.
fn owning_module(path: &str, modules: &BTreeSet<String>) -> Option<String> {
    let parts: Vec<&str> = path.split("::").collect();
    (1..=parts.len())
        .rev()
        .map(|n| parts[..n].join("::"))
        .find(|m| modules.contains(m))
}

fn is_ancestor(ancestor: &str, module: &str) -> bool {
    ancestor.is_empty() || module.starts_with(&format!("{ancestor}::"))
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let modules: BTreeSet<String> = files.iter().map(|f| module_of(f)).collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in &files {
        let module = module_of(f);
        if f.ends_with("main.rs") {
            continue;
        }
        let text = std::fs::read_to_string(f).unwrap();
        let uses = graph.entry(module.clone()).or_default();
        for path in referenced_paths(&module, &code(&text)) {
            if let Some(target) = owning_module(&path, &modules)
                && target != module
                && !is_ancestor(&target, &module)
            {
                uses.insert(target);
            }
        }
    }
    graph
}

/// A circle through `start`, if any (depth-first search).
fn circle_from(
    graph: &BTreeMap<String, BTreeSet<String>>,
    start: &str,
    at: &str,
    path: &mut Vec<String>,
    seen: &mut BTreeSet<String>,
) -> Option<Vec<String>> {
    for next in graph.get(at).into_iter().flatten() {
        if next == start {
            let mut circle = path.clone();
            circle.push(start.to_owned());
            return Some(circle);
        }
        if seen.insert(next.clone()) {
            path.push(next.clone());
            if let Some(c) = circle_from(graph, start, next, path, seen) {
                return Some(c);
            }
            path.pop();
        }
    }
    None
}

#[test]
fn no_module_imports_a_module_that_imports_it_back() {
    let graph = graph();
    for (module, uses) in &graph {
        let uses: Vec<&str> = uses.iter().map(String::as_str).collect();
        println!("{:<28} -> {}", module_or_root(module), uses.join(", "));
    }
    let circles: Vec<String> = graph
        .keys()
        .filter_map(|m| {
            circle_from(&graph, m, m, &mut vec![m.clone()], &mut BTreeSet::new())
                .map(|c| c.join(" -> "))
        })
        .collect();
    assert!(
        circles.is_empty(),
        "import circles:\n{}",
        circles.join("\n")
    );
}

fn module_or_root(m: &str) -> &str {
    if m.is_empty() { "(lib)" } else { m }
}

#[test]
fn the_graph_sees_imports_and_circles() {
    // The checker itself: a circle made of these two files would be found.
    let mut g = BTreeMap::new();
    let code_a =
        code("use crate::b::{X, c::Y};\nfn f() { super::d::g(); }\n#[cfg(test)]\nuse crate::e;");
    let paths = referenced_paths("a", &code_a);
    assert_eq!(paths, vec!["b::X", "b::c::Y", "d::g"]);
    g.insert("a".to_owned(), BTreeSet::from(["b".to_owned()]));
    g.insert("b".to_owned(), BTreeSet::from(["a".to_owned()]));
    assert!(circle_from(&g, "a", "a", &mut vec!["a".into()], &mut BTreeSet::new()).is_some());
}

#[test]
fn kafka_files_stay_under_500_lines_unless_their_header_says_why() {
    let mut files = Vec::new();
    rust_files(&src().join("kafka"), &mut files);
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let lines = text.lines().count();
        let header: String = text.lines().take_while(|l| l.starts_with("//!")).collect();
        assert!(
            lines <= 500 || header.contains("over 500 lines"),
            "{} has {lines} lines and no reason in its header",
            f.display()
        );
    }
}
