//! The layers, read from the sources: the framework crate (`framework/`) at the bottom names no
//! application, and within each crate the top-level modules depend on each other one way (in the
//! shop: domain at the bottom; configuration, the event judgement and the view above it; the
//! services, the shop and the web app on top). A `crate::module` path outside a file's
//! `#[cfg(test)]` part is a dependency.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Graph = BTreeMap<String, BTreeSet<String>>;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("source directory") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file belongs to (`services/src/web/api.rs` -> `web`); `None` for the
/// crate root and the binary.
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).expect("under src");
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = first.trim_end_matches(".rs");
    (!matches!(name, "lib" | "main")).then(|| name.to_owned())
}

/// The modules `text` names as `crate::name`, including inside `use crate::{a, b::c}`.
fn dependencies(text: &str) -> BTreeSet<String> {
    let mut deps = BTreeSet::new();
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    for (at, _) in text.match_indices("crate::") {
        let rest = &text[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let group = &group[..group.find('}').unwrap_or(group.len())];
            for item in group.split(',') {
                let name = ident(item.trim());
                if !name.is_empty() {
                    deps.insert(name);
                }
            }
        } else {
            deps.insert(ident(rest));
        }
    }
    deps
}

fn graph(src: &Path) -> Graph {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut g = Graph::new();
    for file in files {
        let Some(module) = module_of(src, &file) else {
            continue;
        };
        let text = std::fs::read_to_string(&file).expect("readable source");
        let text = &text[..text.find("#[cfg(test)]").unwrap_or(text.len())];
        let deps = g.entry(module.clone()).or_default();
        deps.extend(dependencies(text).into_iter().filter(|d| *d != module));
    }
    g
}

/// A cycle through `from`, as the path of modules, if there is one.
fn cycle_through(g: &Graph, from: &str) -> Option<Vec<String>> {
    let mut stack = vec![vec![from.to_owned()]];
    let mut seen = BTreeSet::new();
    while let Some(path) = stack.pop() {
        let last = path.last().expect("non-empty");
        for next in g.get(last).into_iter().flatten() {
            if next == from {
                let mut cycle = path.clone();
                cycle.push(from.to_owned());
                return Some(cycle);
            }
            if seen.insert(next.clone()) {
                let mut longer = path.clone();
                longer.push(next.clone());
                stack.push(longer);
            }
        }
    }
    None
}

fn cycles(g: &Graph) -> Vec<Vec<String>> {
    g.keys().filter_map(|m| cycle_through(g, m)).collect()
}

fn crate_src(dir: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(dir).join("src")
}

#[test]
fn the_library_modules_depend_on_each_other_one_way() {
    let g = graph(&crate_src("."));
    assert!(g.len() >= 12, "read too few modules: {g:?}");
    assert!(
        g["services"].contains("worker"),
        "the reader misses dependencies: {g:?}"
    );
    let found = cycles(&g);
    assert!(
        found.is_empty(),
        "import cycles among services/src's modules: {found:?}"
    );
    // The domain sits on the leaves alone (a mutant switch in its rank table, the worker's
    // `Malformed`).
    let domain = g.get("domain").cloned().unwrap_or_default();
    let leaves = BTreeSet::from(["mutants".to_owned(), "error".to_owned()]);
    assert!(domain.is_subset(&leaves), "domain depends on {domain:?}");
}

#[test]
fn the_framework_modules_depend_on_each_other_one_way() {
    let g = graph(&crate_src("../framework"));
    for m in FRAMEWORK {
        assert!(g.contains_key(m), "no module {m} in {:?}", g.keys());
    }
    assert!(
        g["worker"].contains("transport"),
        "the reader misses dependencies: {g:?}"
    );
    let found = cycles(&g);
    assert!(found.is_empty(), "import cycles in framework/src: {found:?}");
    for leaf in ["error", "mutants", "partitioner"] {
        assert!(
            g.get(leaf).is_none_or(BTreeSet::is_empty),
            "{leaf} depends on {:?}",
            g[leaf]
        );
    }
}

/// The framework crate's modules: what any set of Kafka services is written against (the
/// transport seam and its Kafka implementation, the worker, state that follows partitions, the
/// application trait and its host and supervisor, health by consumer lag, the stores' base, the
/// consumer groups' operation, the blocking
/// and clock helpers, shutdown, probes and the mutant switch, Kafka's partitioner).
const FRAMEWORK: [&str; 18] = [
    "app",
    "blocking",
    "changelog",
    "clock",
    "error",
    "follow",
    "groups",
    "health",
    "host",
    "mutants",
    "partitioner",
    "probes",
    "shutdown",
    "store",
    "supervised",
    "throttle",
    "transport",
    "worker",
];

/// The workspace's application crates (by package name and as a path in Rust).
const APPLICATIONS: [(&str, &str); 2] = [("pizza", "pizza"), ("pizza-sim", "pizza_sim")];

/// Which of `framework`'s modules name a module outside it, and which.
fn upward(g: &Graph, framework: &[&str]) -> Vec<(String, Vec<String>)> {
    framework
        .iter()
        .filter_map(|m| {
            let out: Vec<String> = g
                .get(*m)?
                .iter()
                .filter(|d| !framework.contains(&d.as_str()))
                .cloned()
                .collect();
            (!out.is_empty()).then(|| (m.to_string(), out))
        })
        .collect()
}

/// The crates a manifest's `[dependencies]` (any kind) name.
fn manifest_dependencies(toml: &str) -> BTreeSet<String> {
    let mut deps = BTreeSet::new();
    let mut in_deps = false;
    for line in toml.lines().map(str::trim) {
        if line.starts_with('[') {
            in_deps = line.contains("dependencies");
        } else if in_deps {
            if let Some((name, _)) = line.split_once('=') {
                let name = name.trim().split('.').next().unwrap_or("");
                deps.insert(name.trim_matches('"').to_owned());
            }
        }
    }
    deps
}

/// The framework's files that name an application crate, and which.
fn naming_applications(src: &Path) -> Vec<(PathBuf, &'static str)> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    files
        .into_iter()
        .filter_map(|f| {
            let text = std::fs::read_to_string(&f).expect("readable source");
            APPLICATIONS
                .iter()
                .find(|(_, path)| text.contains(&format!("{path}::")))
                .map(|(_, path)| (f, *path))
        })
        .collect()
}

/// The direction rule: the framework names nothing of any application (the shop's domain,
/// topology, services, view, web app); the application builds on the framework. The framework
/// crate depends on no application crate, no source of it names one, and none of its modules
/// reaches outside the framework's own.
#[test]
fn the_framework_names_nothing_of_the_application() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../framework");
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).expect("framework manifest");
    let deps = manifest_dependencies(&manifest);
    assert!(deps.contains("tokio"), "the reader misses dependencies: {deps:?}");
    let apps: Vec<_> = APPLICATIONS
        .iter()
        .filter(|(name, _)| deps.contains(*name))
        .collect();
    assert!(apps.is_empty(), "the framework depends on {apps:?}");
    let named = naming_applications(&root.join("src"));
    assert!(
        named.is_empty(),
        "framework files that name an application: {named:?}"
    );
    let found = upward(&graph(&root.join("src")), &FRAMEWORK);
    assert!(
        found.is_empty(),
        "framework modules that name modules outside the framework: {found:?}"
    );
}

#[test]
fn the_reader_sees_a_framework_manifest_or_file_that_names_the_application() {
    let toml = "[package]\nname = \"framework\"\n[dependencies]\ntokio.workspace = true\n\
                pizza = { path = \"../services\" }\n[features]\nkafka = []\n";
    let deps = manifest_dependencies(toml);
    assert_eq!(deps, BTreeSet::from(["tokio".to_owned(), "pizza".to_owned()]));
    let dir = std::env::temp_dir().join(format!("layers-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    std::fs::write(dir.join("a.rs"), "use std::fmt;").expect("write");
    std::fs::write(dir.join("b.rs"), "fn f() { pizza::domain::x() }").expect("write");
    let named = naming_applications(&dir);
    std::fs::remove_dir_all(&dir).expect("clean up");
    assert_eq!(named, [(dir.join("b.rs"), "pizza")]);
}

#[test]
fn the_reader_sees_a_framework_module_that_names_the_application() {
    let g: Graph = [
        ("worker", "use crate::{transport::Record, domain::Malformed};"),
        ("transport", "crate::error::Report"),
    ]
    .into_iter()
    .map(|(m, t)| (m.to_owned(), dependencies(t)))
    .collect();
    assert_eq!(
        upward(&g, &["worker", "transport", "error"]),
        [("worker".to_owned(), vec!["domain".to_owned()])]
    );
}

#[test]
fn the_reader_sees_a_cycle() {
    let g: Graph = [
        ("a", "use crate::{b, c::D};"),
        ("b", "crate::clock::now(); crate::a::x()"),
    ]
    .into_iter()
    .map(|(m, t)| (m.to_owned(), dependencies(t)))
    .collect();
    assert_eq!(g["a"], BTreeSet::from(["b".to_owned(), "c".to_owned()]));
    assert_eq!(cycles(&g)[0], ["a", "b", "a"]);
}
