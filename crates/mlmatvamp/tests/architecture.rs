//! The core library's architecture, checked on its sources (design: "the paper's order is the
//! dependency order"): every module may use only the modules before it in [`LAYERS`], so there
//! is no import cycle, and the core depends on no command-line, plotting, progress-bar or
//! terminal crate.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The core's top-level modules in dependency order: foundations, messages, factors, the
/// network, Algorithm 1, the state evolution, applications, then the `io`-feature drivers.
const LAYERS: &[&str] = &[
    "error",
    "cpu",
    "pages",
    "limits",
    "figure",
    "observe",
    "spd",
    "rows",
    "rng",
    "operator",
    "message",
    "factor",
    "denoise",
    "network",
    "schedule",
    "solver",
    "se",
    "apps",
    "io",
    "config",
    "experiments",
    "predict",
    "run",
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// `crate::name` references of every top-level module (unit-test modules and comments excluded).
fn dependencies() -> BTreeMap<String, BTreeSet<String>> {
    let root = src();
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    let mut deps: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in files {
        let rel = f.strip_prefix(&root).unwrap();
        let top = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_string();
        if top == "lib" {
            continue;
        }
        let text = std::fs::read_to_string(&f).unwrap();
        let code = text.split("#[cfg(test)]").next().unwrap();
        let entry = deps.entry(top.clone()).or_default();
        for line in code.lines() {
            let line = line.split("//").next().unwrap();
            for (i, _) in line.match_indices("crate::") {
                let name: String = line[i + 7..]
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() && name != top && LAYERS.contains(&name.as_str()) {
                    entry.insert(name);
                }
            }
        }
    }
    deps
}

#[test]
fn modules_depend_only_on_earlier_layers() {
    let deps = dependencies();
    let rank = |m: &str| LAYERS.iter().position(|x| *x == m);
    let mut violations = Vec::new();
    for (m, ds) in &deps {
        let r = rank(m).unwrap_or_else(|| panic!("module `{m}` is missing from LAYERS"));
        for d in ds {
            if rank(d).unwrap() > r {
                violations.push(format!("`{m}` uses the later module `{d}`"));
            }
        }
    }
    assert!(violations.is_empty(), "{}", violations.join("\n"));
    // Not vacuous: the solver does use the network, and the network does not use the solver.
    assert!(deps["solver"].contains("network") && !deps["network"].contains("solver"));
}

#[test]
fn the_core_depends_on_no_front_door_crate() {
    let manifest =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml")).unwrap();
    let normal = manifest
        .split("[dependencies]")
        .nth(1)
        .unwrap()
        .split("\n[")
        .next()
        .unwrap();
    for banned in [
        "clap",
        "plotters",
        "indicatif",
        "anyhow",
        "pyo3",
        "console",
        "termcolor",
    ] {
        assert!(
            !normal.lines().any(|l| l.trim_start().starts_with(banned)),
            "the core library depends on `{banned}`"
        );
    }
    assert!(normal.contains("faer"), "parsed the wrong table");
}
