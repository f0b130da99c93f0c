//! The workspace's import structure, checked: no import circle between
//! files of any crate, and, in the controller, no import from a lower
//! folder to a higher one (the order is [`CONTROLLER_LAYERS`], bottom
//! first; docs/architecture.md explains it).
//!
//! An edge is any module path a file names: `crate::a::b`, `super::x`,
//! `self::x`, or `child::x` for a module the file declares, in `use`
//! items and in code alike, resolved to the file that defines the
//! deepest module named. Code after a line that starts with
//! `#[cfg(test)]` (the tests at the end of a file, by this project's
//! convention) is not read: tests may import what they test.
//!
//! Run alone: `cargo test -p ferry-controller --test architecture`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The controller's top-level modules, bottom first: a file may import
/// from its own module or from one listed before it, never after.
const CONTROLLER_LAYERS: &[&str] = &[
    "crd",
    "failure",
    "telemetry",
    "source",
    "cluster",
    "gate",
    "audit",
    "github",
    "reconcile",
    "serve",
    "runtime",
    "cli",
];

/// Every crate of the workspace, by its `src` folder.
const CRATES: &[&str] = &[
    "manifests/src",
    "controller/src",
    "inference/src",
    "pipelines/src",
    "lab/agent/src",
    "lab/testkit/src",
];

/// A file and the module path it defines (`["cluster", "plan"]`).
#[derive(Debug, Clone)]
struct Module {
    file: PathBuf,
    path: Vec<String>,
}

fn modules(src: &Path) -> Vec<Module> {
    let mut out = Vec::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let file = entry.path();
            if file.is_dir() {
                stack.push(file);
                continue;
            }
            if file.extension().and_then(|e| e.to_str()) != Some("rs") {
                continue;
            }
            let relative = file.strip_prefix(src).unwrap_or(&file);
            let mut path: Vec<String> = relative
                .with_extension("")
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if matches!(
                path.last().map(String::as_str),
                Some("mod" | "lib" | "main")
            ) {
                path.pop();
            }
            out.push(Module { file, path });
        }
    }
    out.sort_by(|a, b| a.file.cmp(&b.file));
    out
}

/// The source without comments and without the tests at its end.
fn code_of(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        if line.starts_with("#[cfg(test)]") {
            break;
        }
        let line = match line.find("//") {
            Some(i) => &line[..i],
            None => line,
        };
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// The module paths `code` names after `prefix::`, with `{..}` groups
/// expanded: `crate::{a::b, c}` gives `[a, b]` and `[c]`.
fn paths_after(code: &str, prefix: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let bytes = code.as_bytes();
    let needle = format!("{prefix}::");
    let mut from = 0;
    while let Some(found) = code[from..].find(&needle) {
        let start = from + found;
        from = start + needle.len();
        let before = start.checked_sub(1).map(|i| bytes[i]);
        if before.is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':') {
            continue;
        }
        expand(&code[from..], Vec::new(), &mut out);
    }
    out
}

/// Reads one path (with groups) at the start of `rest`, appending the
/// full paths under `base` to `out`; returns how many bytes it read.
fn expand(rest: &str, base: Vec<String>, out: &mut Vec<Vec<String>>) -> usize {
    let mut path = base;
    let mut i = 0;
    let bytes = rest.as_bytes();
    loop {
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        if i < bytes.len() && bytes[i] == b'{' {
            i += 1;
            loop {
                i += expand(&rest[i..], path.clone(), out);
                while i < bytes.len() && (bytes[i].is_ascii_whitespace() || bytes[i] == b',') {
                    i += 1;
                }
                if i >= bytes.len() || bytes[i] == b'}' {
                    return i + 1;
                }
            }
        }
        let start = i;
        while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
            i += 1;
        }
        if start == i {
            break;
        }
        path.push(rest[start..i].to_owned());
        if rest[i..].starts_with("::") {
            i += 2;
        } else {
            break;
        }
    }
    if !path.is_empty() {
        out.push(path);
    }
    i
}

/// The names of the modules `code` declares (`mod x;`, `pub mod x;`).
fn declared(code: &str) -> Vec<String> {
    code.lines()
        .filter_map(|line| {
            let line = line.trim();
            let rest = line
                .strip_prefix("pub mod ")
                .or_else(|| line.strip_prefix("pub(crate) mod "))
                .or_else(|| line.strip_prefix("mod "))?;
            rest.strip_suffix(';').map(|name| name.trim().to_owned())
        })
        .collect()
}

/// The file `path` names: the one defining its deepest module.
fn resolve<'a>(modules: &'a [Module], path: &[String]) -> Option<&'a Module> {
    (1..=path.len())
        .rev()
        .find_map(|n| modules.iter().find(|m| m.path == path[..n]))
}

/// The file-to-file import edges of one crate.
fn edges(src: &Path) -> BTreeMap<PathBuf, BTreeSet<PathBuf>> {
    let modules = modules(src);
    let mut graph = BTreeMap::new();
    for module in &modules {
        let text = std::fs::read_to_string(&module.file).unwrap_or_default();
        let code = code_of(&text);
        let mut named: Vec<Vec<String>> = paths_after(&code, "crate");
        let is_dir_module = matches!(
            module.file.file_stem().and_then(|s| s.to_str()),
            Some("mod" | "lib" | "main")
        );
        // `self` is the file's module; `super` its parent (for a
        // `mod.rs`, the folder's parent).
        for path in paths_after(&code, "self") {
            named.push(module.path.iter().cloned().chain(path).collect());
        }
        let parent: Vec<String> = module.path[..module.path.len().saturating_sub(1)].to_vec();
        for path in paths_after(&code, "super") {
            named.push(parent.iter().cloned().chain(path).collect());
        }
        if is_dir_module {
            for child in declared(&code) {
                for path in paths_after(&code, &child) {
                    let mut full = module.path.clone();
                    full.push(child.clone());
                    full.extend(path);
                    named.push(full);
                }
            }
        }
        let targets: BTreeSet<PathBuf> = named
            .iter()
            .filter_map(|path| resolve(&modules, path))
            .map(|m| m.file.clone())
            .filter(|f| *f != module.file)
            .collect();
        graph.insert(module.file.clone(), targets);
    }
    graph
}

/// The import circles of `graph`: its strongly connected components of
/// more than one file (Tarjan's algorithm).
fn circles<T: Ord + Clone>(graph: &BTreeMap<T, BTreeSet<T>>) -> Vec<Vec<T>> {
    struct State<T> {
        index: BTreeMap<T, usize>,
        low: BTreeMap<T, usize>,
        stack: Vec<T>,
        on_stack: BTreeSet<T>,
        out: Vec<Vec<T>>,
    }
    fn visit<T: Ord + Clone>(v: &T, graph: &BTreeMap<T, BTreeSet<T>>, s: &mut State<T>) {
        let i = s.index.len();
        s.index.insert(v.clone(), i);
        s.low.insert(v.clone(), i);
        s.stack.push(v.clone());
        s.on_stack.insert(v.clone());
        for w in graph.get(v).into_iter().flatten() {
            if !s.index.contains_key(w) {
                visit(w, graph, s);
                let low = s.low[v].min(s.low[w]);
                s.low.insert(v.clone(), low);
            } else if s.on_stack.contains(w) {
                let low = s.low[v].min(s.index[w]);
                s.low.insert(v.clone(), low);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(&w);
                let done = w == *v;
                component.push(w);
                if done {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                s.out.push(component);
            }
        }
    }
    let mut state = State {
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in graph.keys() {
        if !state.index.contains_key(v) {
            visit(v, graph, &mut state);
        }
    }
    state.out
}

/// The layer of a controller file: the position of its top-level module
/// in `layers`, `None` for the crate roots (`lib.rs`, `main.rs`).
fn layer(src: &Path, file: &Path, layers: &[&str]) -> Option<usize> {
    let relative = file.strip_prefix(src).ok()?;
    let first = relative.components().next()?.as_os_str().to_str()?;
    let top = first.strip_suffix(".rs").unwrap_or(first);
    layers.iter().position(|l| *l == top)
}

/// Imports from a lower layer to a higher one, and files in no layer.
fn upward(
    src: &Path,
    graph: &BTreeMap<PathBuf, BTreeSet<PathBuf>>,
    layers: &[&str],
) -> Vec<String> {
    let mut out = Vec::new();
    for (from, targets) in graph {
        let name = from.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if from.parent() == Some(src) && matches!(name, "lib.rs" | "main.rs") {
            continue;
        }
        let Some(low) = layer(src, from, layers) else {
            out.push(format!(
                "{} is in no layer of CONTROLLER_LAYERS",
                from.display()
            ));
            continue;
        };
        for to in targets {
            if layer(src, to, layers).is_some_and(|high| high > low) {
                out.push(format!("{} imports {}", from.display(), to.display()));
            }
        }
    }
    out
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

#[test]
fn no_import_circle_between_files_of_any_crate() {
    let root = workspace();
    let mut found = Vec::new();
    for src in CRATES {
        let src = root.join(src);
        assert!(src.is_dir(), "{} is missing", src.display());
        for circle in circles(&edges(&src)) {
            let names: Vec<String> = circle
                .iter()
                .map(|f| f.strip_prefix(&root).unwrap_or(f).display().to_string())
                .collect();
            found.push(names.join(" <-> "));
        }
    }
    assert!(
        found.is_empty(),
        "import circles (move what both sides need below both):\n{}",
        found.join("\n")
    );
}

#[test]
fn controller_imports_run_down_its_layers() {
    let src = workspace().join("controller/src");
    let graph = edges(&src);
    // The check reads what it should: the conductor imports its steps.
    let conductor = &graph[&src.join("reconcile/mod.rs")];
    assert!(
        conductor.contains(&src.join("reconcile/step.rs")),
        "{conductor:?}"
    );
    let found = upward(&src, &graph, CONTROLLER_LAYERS);
    assert!(
        found.is_empty(),
        "imports against the layers {CONTROLLER_LAYERS:?}:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_check_sees_a_circle_and_an_upward_import() {
    let dir = std::env::temp_dir().join(format!("ferry-architecture-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("cli")).unwrap();
    std::fs::create_dir_all(dir.join("crd")).unwrap();
    let write = |path: &str, text: &str| std::fs::write(dir.join(path), text).unwrap();
    write("lib.rs", "pub mod cli;\npub mod crd;\n");
    write("cli/mod.rs", "mod run;\npub use run::go;\n");
    write("cli/run.rs", "pub fn go() {}\npub const B: u8 = 1;\n");
    // names -> cli/run (upward), and names -> crd/mod -> names (a circle
    // through a folder's mod.rs and the child it declares).
    write(
        "crd/names.rs",
        "pub const A: u8 = crate::cli::run::B;\nuse super::Spec;\n#[cfg(test)]\nuse crate::cli;\n",
    );
    write(
        "crd/mod.rs",
        "pub mod names;\npub struct Spec;\nuse names::A;\n",
    );
    let graph = edges(&dir);
    let found = circles(&graph);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(
        found[0],
        vec![dir.join("crd/mod.rs"), dir.join("crd/names.rs")]
    );
    let up = upward(&dir, &graph, &["crd", "cli"]);
    assert_eq!(
        up,
        vec![format!(
            "{} imports {}",
            dir.join("crd/names.rs").display(),
            dir.join("cli/run.rs").display()
        )]
    );
    // Everything after #[cfg(test)] is ignored: no edge to cli/mod.rs.
    assert!(!graph[&dir.join("crd/names.rs")].contains(&dir.join("cli/mod.rs")));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn groups_expand_to_every_path() {
    let found = paths_after("use crate::{a::{b, c::D}, e};", "crate");
    let expect: Vec<Vec<String>> = [vec!["a", "b"], vec!["a", "c", "D"], vec!["e"]]
        .iter()
        .map(|p| p.iter().map(|s| s.to_string()).collect())
        .collect();
    assert_eq!(found, expect);
    // Not a path of this crate: another crate's `crate::`-like name.
    assert!(paths_after("use my_crate::x;", "crate").is_empty());
}
