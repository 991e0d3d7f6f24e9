//! The core's independence, checked from the source: the modules in `src/core/` use no
//! I/O, no clock and no allocation, and import nothing of the crate but the core itself
//! and `crate::limits`. A shell module imported into the core, a `std::` path, a
//! dependency other than `heapless`, or an allocating type or macro fails this test.
//! Test modules (from `#[cfg(test)]` on) are not part of the core and are not read.

use std::fs;
use std::path::Path;

/// What the core may name at the root of a path: the language's `core`, `heapless` (fixed
/// capacity, no allocation), and paths within the module or the crate's core.
const ALLOWED_ROOTS: &[&str] = &["core", "heapless", "self", "super", "crate"];
/// What the core may name below `crate::`.
const ALLOWED_IN_CRATE: &[&str] = &["core", "limits"];
/// Names that allocate or do I/O without a crate root in front of them (std's prelude).
const FORBIDDEN_WORDS: &[&str] = &[
    "Box::",
    "Box<",
    "Rc<",
    "Arc<",
    "format!",
    "vec!",
    "print!",
    "println!",
    "eprint!",
    "eprintln!",
    "dbg!",
    ".to_string()",
    ".to_owned()",
    ".to_vec()",
];

/// The crates the project depends on, read from Cargo.toml, plus the standard ones.
fn crate_names() -> Vec<String> {
    let manifest = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
        .expect("Cargo.toml");
    let mut names: Vec<String> = ["std", "alloc", "proc_macro"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    let mut in_deps = false;
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_deps = line.ends_with("dependencies]");
            continue;
        }
        if in_deps && let Some((name, _)) = line.split_once('=') {
            names.push(name.trim().replace('-', "_"));
        }
    }
    names
}

/// Every fault of one core source file, as "line: what".
fn faults(source: &str, crates: &[String]) -> Vec<String> {
    let mut found = Vec::new();
    for (index, line) in source.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        if code.trim_start().starts_with("#[cfg(test)]") {
            break;
        }
        let number = index + 1;
        for word in FORBIDDEN_WORDS {
            if code.contains(word) {
                found.push(format!("{number}: `{word}` allocates or does I/O"));
            }
        }
        // A bare `Vec` or `String` is std's; heapless's are spelled with their crate.
        for ty in ["Vec", "String"] {
            for (at, _) in code.match_indices(ty) {
                let before = &code[..at];
                let after = &code[at + ty.len()..];
                let word_start = !before.ends_with(|c: char| c.is_alphanumeric() || c == '_');
                let word_end = !after.starts_with(|c: char| c.is_alphanumeric() || c == '_');
                if word_start && word_end && !before.ends_with("heapless::") {
                    found.push(format!("{number}: std's `{ty}` allocates"));
                }
            }
        }
        for (root, rest) in path_roots(code) {
            if root == "crate" {
                let next = rest
                    .split(|c: char| !c.is_alphanumeric() && c != '_')
                    .next();
                let next = next.unwrap_or("");
                if !ALLOWED_IN_CRATE.contains(&next) && !rest.starts_with('{') {
                    found.push(format!("{number}: imports the shell: `crate::{next}`"));
                }
                if rest.starts_with('{') {
                    found.push(format!(
                        "{number}: a grouped `crate::{{..}}` import (split it)"
                    ));
                }
            } else if crates.iter().any(|c| c == root) && !ALLOWED_ROOTS.contains(&root) {
                found.push(format!("{number}: uses the crate `{root}`"));
            }
        }
    }
    found
}

/// The root identifiers of the paths on a line (`a` of `a::b::c`), with the text after
/// their `::`.
fn path_roots(code: &str) -> Vec<(&str, &str)> {
    let mut roots = Vec::new();
    for (at, _) in code.match_indices("::") {
        let before = &code[..at];
        let start = before
            .rfind(|c: char| !c.is_alphanumeric() && c != '_')
            .map_or(0, |i| i + 1);
        let ident = &before[start..];
        let prefixed = before[..start].ends_with("::");
        if !ident.is_empty() && !prefixed {
            roots.push((ident, &code[at + 2..]));
        }
    }
    roots
}

#[test]
fn the_core_imports_nothing_of_the_shell_and_neither_allocates_nor_does_io() {
    let crates = crate_names();
    assert!(crates.iter().any(|c| c == "nix"), "{crates:?}");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/core");
    let mut read = 0;
    let mut all = Vec::new();
    for entry in fs::read_dir(&dir).expect("src/core") {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "rs") {
            read += 1;
            let source = fs::read_to_string(&path).unwrap();
            for fault in faults(&source, &crates) {
                all.push(format!("{}:{fault}", path.display()));
            }
        }
    }
    assert!(read >= 5, "read only {read} files in {}", dir.display());
    assert!(
        all.is_empty(),
        "the core must stay pure:\n{}",
        all.join("\n")
    );
}

#[test]
fn the_check_finds_each_kind_of_fault() {
    let crates = crate_names();
    let bad = "use crate::os::watchdog::Device;\n\
               use std::fs;\n\
               use nix::unistd;\n\
               let v: Vec<u8> = Vec::new();\n\
               let s = format!(\"{x}\");\n\
               use crate::{limits, agent};\n";
    let found = faults(bad, &crates);
    for expected in [
        "1: imports the shell: `crate::os`",
        "2: uses the crate `std`",
        "3: uses the crate `nix`",
        "4: std's `Vec` allocates",
        "5: `format!` allocates or does I/O",
        "6: a grouped `crate::{..}` import (split it)",
    ] {
        assert!(
            found.iter().any(|f| f == expected),
            "{expected} in {found:?}"
        );
    }
    let good = "use crate::core::time::Instant;\n\
                use crate::limits::MAX_COMPONENTS;\n\
                use core::fmt;\n\
                let v: heapless::Vec<u8, 4> = heapless::Vec::new();\n\
                // use std::fs; in a comment\n\
                #[cfg(test)]\n\
                use std::vec::Vec;\n";
    assert_eq!(faults(good, &crates), Vec::<String>::new());
}
