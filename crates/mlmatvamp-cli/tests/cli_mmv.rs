//! `mlmatvamp mmv` end to end on a small sweep (a configuration file shrinks the SE and the
//! sizes so that it runs in seconds): the files it writes, the metadata, the agreement of
//! ML-Mat-VAMP's group-lasso estimate with FISTA's, and clean failures on bad options.

use serde_json::Value;
use std::process::Command;

mod common;
use common::cli::{temp, BIN};

const SMALL: &str = r#"
ratios = [0.5, 0.8]
trials = 2
seed = 5
tuning_evaluations = 3
tuning_iterations = 6
tuning_n_mc = 500
se_iterations = 20
se_n_mc = 2000
se_average = 5
timing_repeats = 1
[problem]
n0 = 150
"#;

#[test]
fn mmv_small_sweep_writes_results() {
    let dir = temp("ok");
    let cfg = dir.join("small.toml");
    std::fs::write(&cfg, SMALL).unwrap();
    let out = dir.join("out");
    let o = Command::new(BIN)
        .args([
            "mmv",
            "--out",
            out.to_str().unwrap(),
            "--config",
            cfg.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{}\n{}",
        stdout,
        String::from_utf8_lossy(&o.stderr)
    );
    println!("{stdout}");
    assert!(stdout.contains("ratio") && stdout.contains("0.50") && stdout.contains("0.80"));
    for f in ["mmv.json", "mmv.csv", "mmv.png", "mmv.svg"] {
        assert!(out.join(f).metadata().unwrap().len() > 100, "{f}");
    }
    let json: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("mmv.json")).unwrap()).unwrap();
    assert_eq!(json["meta"]["command"], "mmv");
    assert_eq!(json["meta"]["seed"], 5);
    assert_eq!(json["meta"]["config"]["problem"]["n0"], 150);
    let points = json["points"].as_array().unwrap();
    assert_eq!(points.len(), 2);
    for p in points {
        // λ tuned by the SE inside its search interval; 2 trials; same minimiser as FISTA.
        assert!(p["lambda"].as_f64().unwrap() > 0.0);
        assert_eq!(p["lambda_search"].as_array().unwrap().len(), 3);
        assert_eq!(p["trials"].as_array().unwrap().len(), 2);
        for v in p["lasso_agreement"]["values"].as_array().unwrap() {
            assert!(v.as_f64().unwrap() < 1e-6, "{v}");
        }
        for key in ["vamp_mmse", "vamp_lasso", "fista"] {
            let m = p[key]["median"].as_f64().unwrap();
            assert!(m > 0.0 && m < 1.0, "{key}: {m}");
        }
        let se = p["se_lasso"].as_f64().unwrap();
        assert!(se > 0.0 && se < 1.0);
        let t = &p["timing"];
        assert!(t["vamp_lasso_to_accuracy"][0].as_f64().unwrap() > 0.0);
        assert!(t["fista_to_accuracy"][0].as_f64().unwrap() > 0.0);
    }
    let csv = std::fs::read_to_string(out.join("mmv.csv")).unwrap();
    assert_eq!(csv.lines().count(), 3);
    assert!(csv.starts_with("ratio,n1,lambda,se_mmse"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn mmv_rejects_bad_options() {
    let dir = temp("bad");
    for (args, want) in [
        (vec!["--ratios", "0.0"], "ratio"),
        (vec!["--lambda=-1"], "lambda"),
        (vec!["--trials", "0"], "trials"),
        (
            vec!["--config", "/nonexistent/mmv.toml"],
            "/nonexistent/mmv.toml",
        ),
    ] {
        let mut all = vec!["mmv", "--out", dir.to_str().unwrap(), "--quiet"];
        all.extend(args.iter());
        let o = Command::new(BIN).args(&all).output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{all:?}: {err}");
        assert!(
            err.starts_with("error: ") && err.contains(want),
            "{all:?}: {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
    let cfg = dir.join("unknown.toml");
    std::fs::write(&cfg, "trails = 3\n").unwrap();
    let o = Command::new(BIN)
        .args([
            "mmv",
            "--out",
            dir.to_str().unwrap(),
            "--config",
            cfg.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1));
    assert!(err.contains("trails"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
