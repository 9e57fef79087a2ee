//! The `mlmatvamp run` command end to end: the shipped worked example, teacher mode, the files
//! and `history.json` fields it writes, and clean failures (non-zero exit, a message, no panic)
//! on bad input.

use mlmatvamp::io::{read_npy, write_npy};
use serde_json::Value;
use std::path::Path;

mod common;
use common::cli::*;

fn shape(path: &Path) -> (usize, usize) {
    let m = read_npy(path).unwrap().data;
    (m.nrows(), m.ncols())
}

fn history(dir: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("history.json")).unwrap()).unwrap()
}

/// The documented fields of history.json.
fn check_history(h: &Value, depth: usize, d: usize) {
    assert_eq!(h["program"], "mlmatvamp");
    assert_eq!(h["version"], env!("CARGO_PKG_VERSION"));
    assert!(
        h["config"]["d"].as_u64() == Some(d as u64),
        "config: {}",
        h["config"]
    );
    assert!(h["seed"].is_u64());
    assert!(h["network"]["description"]
        .as_str()
        .unwrap()
        .contains("Z_0"));
    assert_eq!(h["network"]["depth"], depth);
    assert_eq!(h["network"]["rows"].as_array().unwrap().len(), depth);
    assert!(h["total_seconds"].as_f64().unwrap() > 0.0);
    assert!(h["converged"].is_boolean());
    for s in h["svd_seconds"].as_array().unwrap() {
        assert!(s["layer"].as_u64().unwrap() % 2 == 1 && s["seconds"].as_f64().unwrap() >= 0.0);
    }
    let iters = h["iterations"].as_array().unwrap();
    assert_eq!(iters.len() as u64, h["iterations_run"].as_u64().unwrap());
    for (k, it) in iters.iter().enumerate() {
        assert_eq!(it["iteration"], k);
        assert!(it["seconds"].as_f64().unwrap() >= 0.0);
        let vars = it["variables"].as_array().unwrap();
        assert_eq!(vars.len(), depth);
        for v in vars {
            let cov = v["cov"].as_array().unwrap();
            let trace: f64 = (0..d).map(|i| cov[i][i].as_f64().unwrap()).sum();
            let pred = v["predicted_mse"].as_f64().unwrap();
            assert!((trace - pred).abs() <= 1e-12 * pred.abs().max(1.0));
            assert_eq!(v["gamma_plus"].as_array().unwrap().len(), d);
            assert_eq!(v["gamma_minus"].as_array().unwrap().len(), d);
            assert!(v["mse"].as_f64().is_some());
            assert_eq!(v["error_cov"].as_array().unwrap().len(), d);
        }
    }
}

#[test]
fn shipped_example_runs_and_recovers_the_truth() {
    let out_dir = temp("example");
    let config = manifest().join("examples/run/config.toml");
    let out = ok(&[
        "run",
        config.to_str().unwrap(),
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    let summary = text(&out.stdout);
    assert!(
        summary.contains("(converged)") && summary.contains("empirical"),
        "{summary}"
    );
    assert_eq!(shape(&out_dir.join("z_0.npy")), (100, 3));
    assert_eq!(shape(&out_dir.join("z_1.npy")), (150, 3));
    assert_eq!(shape(&out_dir.join("cov_0.npy")), (3, 3));
    assert_eq!(shape(&out_dir.join("cov_1.npy")), (3, 3));
    assert!(
        !out_dir.join("truth_0.npy").exists(),
        "truth files only in teacher mode"
    );
    let h = history(&out_dir);
    check_history(&h, 2, 3);
    assert_eq!(h["teacher"], false);
    assert_eq!(h["converged"], true);
    assert_eq!(h["config"]["output"]["mask"], "M.npy");
    let last = h["iterations"].as_array().unwrap().last().unwrap();
    let z0 = &last["variables"][0];
    let (mse, pred) = (
        z0["mse"].as_f64().unwrap(),
        z0["predicted_mse"].as_f64().unwrap(),
    );
    // Prior MSE is tr Σ_0 = 3; the estimate is far better, and predicted ≈ empirical.
    assert!(mse < 0.25, "final MSE of Z_0 is {mse}");
    assert!(
        (mse - pred).abs() < 0.2 * pred,
        "empirical {mse} vs predicted {pred}"
    );
    // z_0.npy holds the estimate whose MSE was recorded.
    let z = read_npy(&out_dir.join("z_0.npy")).unwrap().data;
    let truth = read_npy(&manifest().join("examples/run/Z0.npy"))
        .unwrap()
        .data;
    let file_mse = (&z - &truth).squared_norm_l2() / 100.0;
    assert!((file_mse - mse).abs() < 1e-12, "{file_mse} vs {mse}");
}

#[test]
fn shipped_teacher_config_runs_without_data_files() {
    let out_dir = temp("teacher-shipped");
    let config = manifest().join("examples/run/teacher.toml");
    ok(&[
        "run",
        config.to_str().unwrap(),
        "--out",
        out_dir.to_str().unwrap(),
        "--quiet",
    ]);
    let h = history(&out_dir);
    check_history(&h, 2, 2);
    assert_eq!(h["teacher"], true);
    for (l, n) in [(0, 500), (1, 400)] {
        assert_eq!(shape(&out_dir.join(format!("z_{l}.npy"))), (n, 2));
        assert_eq!(shape(&out_dir.join(format!("truth_{l}.npy"))), (n, 2));
    }
    assert_eq!(shape(&out_dir.join("y.npy")), (400, 2));
    let last = h["iterations"].as_array().unwrap().last().unwrap();
    let mse = last["variables"][0]["mse"].as_f64().unwrap();
    // Prior MSE is 0.2 · tr Σ = 0.4.
    assert!(mse < 0.01, "teacher MSE of Z_0 is {mse}");
}

#[test]
fn deep_teacher_network_is_seeded_and_writes_all_variables() {
    let dir = temp("teacher-deep");
    let config = dir.join("deep.toml");
    std::fs::write(
        &config,
        r#"
d = 2
iterations = 15
seed = 7
[policy]
lam_min = 1e-9
[prior]
kind = "gaussian"
rows = 120
mean = [0.5, -0.5]
[[layer]]
kind = "linear"
weight = { law = "gaussian", rows = 150, cols = 120 }
bias = [0.1, 0.2]
noise_precision = [[200.0, 0.0], [0.0, 200.0]]
[[layer]]
kind = "identity"
noise_precision = [[100.0, 10.0], [10.0, 100.0]]
estimator = "mmse"
[[layer]]
kind = "linear"
weight = { law = "gaussian", rows = 130, cols = 150, variance = 0.01 }
[output]
kind = "awgn"
noise_precision = [[400.0, 0.0], [0.0, 400.0]]
"#,
    )
    .unwrap();
    let (a, b) = (dir.join("a"), dir.join("b"));
    for out in [&a, &b] {
        ok(&[
            "--threads",
            "1",
            "run",
            config.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "-q",
        ]);
    }
    let h = history(&a);
    check_history(&h, 4, 2);
    let svd: Vec<u64> = h["svd_seconds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["layer"].as_u64().unwrap())
        .collect();
    assert_eq!(svd, [1, 3]);
    assert_eq!(h["network"]["layers"][1]["kind"], "identity");
    for (l, n) in [(0, 120), (1, 150), (2, 150), (3, 130)] {
        assert_eq!(shape(&a.join(format!("z_{l}.npy"))), (n, 2));
        assert_eq!(shape(&a.join(format!("truth_{l}.npy"))), (n, 2));
        assert_eq!(shape(&a.join(format!("cov_{l}.npy"))), (2, 2));
        // Same seed, same results.
        let name = format!("z_{l}.npy");
        assert_eq!(
            std::fs::read(a.join(&name)).unwrap(),
            std::fs::read(b.join(&name)).unwrap()
        );
    }
    let last = h["iterations"].as_array().unwrap().last().unwrap();
    for v in last["variables"].as_array().unwrap() {
        let (mse, pred) = (
            v["mse"].as_f64().unwrap(),
            v["predicted_mse"].as_f64().unwrap(),
        );
        assert!(mse.is_finite() && mse < 2.0 && pred > 0.0, "{v}");
    }
}

#[test]
fn quiet_prints_nothing_and_summary_goes_to_stdout() {
    let dir = temp("quiet");
    let config = manifest().join("examples/run/config.toml");
    let out = ok(&[
        "run",
        config.to_str().unwrap(),
        "--out",
        dir.to_str().unwrap(),
        "--quiet",
    ]);
    assert!(out.stdout.is_empty(), "{}", text(&out.stdout));
    let out = ok(&[
        "--threads",
        "2",
        "run",
        config.to_str().unwrap(),
        "--out",
        dir.to_str().unwrap(),
    ]);
    let s = text(&out.stdout);
    assert_eq!(s.lines().count(), 1, "{s}");
    assert!(
        s.contains("Z_0: predicted MSE") && s.contains(dir.to_str().unwrap()),
        "{s}"
    );
}

#[test]
fn a_closed_or_full_standard_output_is_not_a_panic() {
    let dir = temp("closed-stdout");
    let config = manifest().join("examples/run/config.toml");
    let args = [
        "run",
        config.to_str().unwrap(),
        "--out",
        dir.to_str().unwrap(),
    ];
    // The reader closes the pipe before the summary line is written (`… | head -0`): the
    // command still writes its files and exits 0, as a shell pipeline expects.
    let mut child = std::process::Command::new(BIN)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(dir.join("history.json").is_file());
    // A full device behind standard output is a real failure, named, not a panic.
    if let Ok(full) = std::fs::OpenOptions::new().write(true).open("/dev/full") {
        let out = std::process::Command::new(BIN)
            .args(args)
            .stdout(full)
            .output()
            .unwrap();
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(
            err.starts_with("error: writing to standard output"),
            "{err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn bad_input_fails_cleanly() {
    let dir = temp("bad");
    let out = dir.join("out");
    let out = out.to_str().unwrap();
    // A missing configuration.
    let missing = dir.join("nope.toml");
    fails(
        &["run", missing.to_str().unwrap(), "--out", out],
        "nope.toml",
    );
    // An unknown key.
    let cfg = dir.join("unknown.toml");
    std::fs::write(&cfg, "d = 2\niteration = 3\n").unwrap();
    fails(
        &["run", cfg.to_str().unwrap(), "--out", out],
        "unknown field `iteration`",
    );
    // Corrupt and truncated .npy data, and a non-numeric CSV.
    let base = "d = 2\n[prior]\nkind = \"gaussian\"\nrows = 4\n[[layer]]\nkind = \"linear\"\nweight = \"W.npy\"\n[output]\nkind = \"awgn\"\nnoise_precision = [[1.0, 0.0], [0.0, 1.0]]\n";
    let cfg = dir.join("data.toml");
    std::fs::write(&cfg, base).unwrap();
    std::fs::write(dir.join("W.npy"), b"\x93NUMPY\x01\x00\xff\xff{'descr'").unwrap();
    fails(
        &["run", cfg.to_str().unwrap(), "--out", out],
        "truncated .npy header",
    );
    write_npy(&dir.join("W.npy"), faer::Mat::<f64>::ones(5, 4).as_ref()).unwrap();
    let full = std::fs::read(dir.join("W.npy")).unwrap();
    std::fs::write(dir.join("W.npy"), &full[..full.len() - 8]).unwrap();
    fails(
        &["run", cfg.to_str().unwrap(), "--out", out],
        "truncated data",
    );
    std::fs::write(&cfg, base.replace("W.npy", "W.csv")).unwrap();
    std::fs::write(dir.join("W.csv"), "a,b,c,d\n1,2,3,4\n1,2,x,4\n").unwrap();
    fails(
        &["run", cfg.to_str().unwrap(), "--out", out],
        "line 3, column 3: `x` is not a number",
    );
    // A shape mismatch.
    std::fs::write(dir.join("W.csv"), "1,2,3\n4,5,6\n").unwrap();
    fails(
        &["run", cfg.to_str().unwrap(), "--out", out],
        "expected n_1 x 4 (n_0 = 4 rows of Z_0), got 2 x 3",
    );
    // The output directory is a file.
    let config = manifest().join("examples/run/config.toml");
    let file = dir.join("a-file");
    std::fs::write(&file, "x").unwrap();
    fails(
        &[
            "run",
            config.to_str().unwrap(),
            "--out",
            file.to_str().unwrap(),
        ],
        "creating the output directory",
    );
    // Bad options.
    fails(
        &[
            "--threads",
            "0",
            "run",
            config.to_str().unwrap(),
            "--out",
            out,
        ],
        "--threads must be at least 1",
    );
    let usage = run(&["run", config.to_str().unwrap()]);
    assert_eq!(usage.status.code(), Some(2));
    assert!(text(&usage.stderr).contains("--out <DIR>"));
}
