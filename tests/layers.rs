//! The shape of the house: every top-level module of `src/` may use only
//! the modules below it in `LAYERS`. The order is written here once; a
//! `crate::` path that points up (or sideways into a module of the same
//! rank) fails this test. Comments and test modules are left out, since
//! tests may reach anywhere.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Bottom to top. Modules on one line share a rank and must not use each
/// other.
const LAYERS: &[&[&str]] = &[
    &["secret", "memory", "capped"],
    // Who is calling: principals, scopes, the OAuth token check.
    &["auth"],
    &["extract"],
    &["gemini", "store", "preview"],
    &["inputs", "tasks"],
    &["pipeline"],
    &["metrics"],
    &["app"],
    &["mcp"],
    &["transport"],
    &["config"],
    &["cli"],
    // The fake Gemini: used by `main` (its subcommand) and by tests only.
    &["testkit"],
];

fn rank(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("read src")
        .map(|e| e.expect("entry").path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// The source without comments and without `#[cfg(test)]` items at the
/// top level of a file (test modules sit at the end by habit; a file
/// named `tests.rs` is a test module of its own).
fn code_of(text: &str) -> String {
    let mut out = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        if line.trim_start() == "#[cfg(test)]"
            && lines
                .peek()
                .is_some_and(|n| n.trim_start().starts_with("mod "))
        {
            break;
        }
        let code = match line.find("//") {
            Some(i) => &line[..i],
            None => line,
        };
        out.push_str(code);
        out.push('\n');
    }
    out
}

/// Top-level modules named by `crate::NAME` paths.
fn uses(code: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let name: String = item
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    found.insert(name);
                }
            }
            continue;
        }
        let name: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() {
            found.insert(name);
        }
    }
    found
}

#[test]
fn every_module_uses_only_modules_below_it() {
    // LAYERS_SRC points the check at another tree (to see it fail on one
    // that has a circle).
    let src = std::env::var_os("LAYERS_SRC")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut problems = Vec::new();
    let mut seen = BTreeSet::new();
    for file in &files {
        let rel = file.strip_prefix(&src).expect("under src");
        let first = rel
            .components()
            .next()
            .expect("component")
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_string();
        // The crate root and the binaries (main.rs, bin/) stand above every layer.
        if first == "lib" || first == "main" || first == "bin" || rel.ends_with("tests.rs") {
            continue;
        }
        seen.insert(first.clone());
        let Some(own) = rank(&first) else {
            problems.push(format!(
                "{}: module `{first}` has no place in LAYERS",
                rel.display()
            ));
            continue;
        };
        let text = std::fs::read_to_string(file).expect("read");
        for used in uses(&code_of(&text)) {
            if used == first {
                continue;
            }
            match rank(&used) {
                Some(r) if r < own => {}
                Some(_) => problems.push(format!(
                    "{}: `{first}` uses `crate::{used}`, which is not below it",
                    rel.display()
                )),
                None => problems.push(format!(
                    "{}: uses `crate::{used}`, which has no place in LAYERS",
                    rel.display()
                )),
            }
        }
    }
    for m in LAYERS.iter().flat_map(|l| l.iter()) {
        if !seen.contains(*m) {
            problems.push(format!("LAYERS names `{m}`, which is not in src/"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_checker_sees_what_it_must() {
    let code = code_of(
        "use crate::app::App; // crate::cli in a comment\nuse crate::{mcp, store::Store};\n#[cfg(test)]\nmod tests { use crate::testkit; }\n",
    );
    let found: Vec<String> = uses(&code).into_iter().collect();
    assert_eq!(found, ["app", "mcp", "store"]);
}
