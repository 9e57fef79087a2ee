//! The `mlmatvamp se` and `mlmatvamp compare` commands end to end: the files and fields they
//! write (docs/state-evolution.md), law-described arrays (a Gaussian weight law becomes
//! the Marchenko–Pastur spectrum, a Bernoulli mask law), data configurations, and clean failures.

use serde_json::Value;
use std::path::Path;

mod common;
use common::cli::*;

/// A small MMV problem in teacher mode, with a weight law and a mask law.
const SMALL: &str = r#"
d = 2
iterations = 5
seed = 3

[se]
n_mc = 2000

[prior]
kind = "row-sparse"
rows = 200
sparsity = 0.3
covariance = [[1.0, 0.4], [0.4, 1.0]]

[[layer]]
kind = "linear"
weight = { law = "gaussian", rows = 120, cols = 200 }

[output]
kind = "awgn"
noise_precision = [[100.0, 0.0], [0.0, 100.0]]
mask = { law = "bernoulli", observed = 0.8 }
"#;

fn write_config(dir: &Path, text: &str) -> String {
    let p = dir.join("config.toml");
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

fn m(v: &Value) -> Vec<Vec<f64>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect()
        })
        .collect()
}

#[test]
fn se_writes_the_documented_predictions() {
    let dir = temp("se");
    let cfg = write_config(&dir, SMALL);
    let out_dir = dir.join("out");
    let out = ok(&["se", &cfg, "--out", out_dir.to_str().unwrap()]);
    assert!(
        text(&out.stdout).contains("Z_0 mse/entry"),
        "{}",
        text(&out.stdout)
    );
    let r = json(&out_dir.join("se.json"));
    assert_eq!(r["program"], "mlmatvamp");
    assert_eq!(r["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(r["command"], "se");
    assert_eq!(r["config"]["d"], 2);
    assert_eq!(r["seed"], 3);
    assert_eq!(r["se"]["n_mc"], 2000, "[se] n_mc is used");
    assert_eq!(
        r["se"]["seed"], 3,
        "the MC seed defaults to the configuration's"
    );
    assert_eq!(r["se"]["psi_mode"], "general");
    assert_eq!(r["se"]["iterations"], 5);
    assert_eq!(r["network"]["rows"], serde_json::json!([200, 120]));
    let layer = &r["network"]["layers"][0];
    assert!(
        layer["spectrum"]
            .as_str()
            .unwrap()
            .contains("Marchenko-Pastur"),
        "{layer}"
    );
    assert_eq!(layer["spectrum_points"], 120);
    assert!(r["network"]["output"]
        .as_str()
        .unwrap()
        .contains("probability 0.8"));
    for key in ["setup_seconds", "se_seconds", "total_seconds"] {
        assert!(r[key].as_f64().unwrap() >= 0.0, "{key}");
    }
    let iters = r["iterations"].as_array().unwrap();
    assert_eq!(iters.len(), 5);
    for (k, it) in iters.iter().enumerate() {
        assert_eq!(it["iteration"], k);
        let vars = it["variables"].as_array().unwrap();
        assert_eq!(vars.len(), 2);
        for v in vars {
            let e = m(&v["se_error_cov"]);
            assert_eq!((e.len(), e[0].len()), (2, 2));
            let per_entry = v["se_mse_per_entry"].as_f64().unwrap();
            assert!((per_entry - (e[0][0] + e[1][1]) / 2.0).abs() < 1e-12 * per_entry.max(1e-300));
            assert!(per_entry > 0.0 && v["se_nmse"].as_f64().unwrap() > 0.0);
            for key in ["cov", "k_plus", "psi_minus", "t_minus", "gamma_plus"] {
                assert!(v[key].is_array(), "{key}");
            }
        }
    }
    // The prior MSE per entry at iteration 0 is E|z|²/d = ρ tr Σ_0 / d = 0.3 (up to MC error and
    // the 1e-6 initial precision), and the estimate improves.
    let first = iters[0]["variables"][0]["se_mse_per_entry"]
        .as_f64()
        .unwrap();
    let last = iters[4]["variables"][0]["se_mse_per_entry"]
        .as_f64()
        .unwrap();
    assert!((first - 0.3).abs() < 0.05, "{first}");
    assert!(last < 0.5 * first, "{first} -> {last}");

    // Same seed: same predictions (everything random is seeded).
    let again = dir.join("again");
    ok(&["se", &cfg, "--out", again.to_str().unwrap(), "--quiet"]);
    assert_eq!(
        r["iterations"][4]["variables"],
        json(&again.join("se.json"))["iterations"][4]["variables"]
    );

    // Command-line overrides; psi_mode = identity gives Ψ⁻ = I at every iteration.
    let ov = dir.join("ov");
    ok(&[
        "se",
        &cfg,
        "--out",
        ov.to_str().unwrap(),
        "--n-mc",
        "3000",
        "--psi-mode",
        "identity",
        "--seed",
        "9",
        "--quiet",
    ]);
    let r = json(&ov.join("se.json"));
    assert_eq!(r["se"]["n_mc"], 3000);
    assert_eq!(r["se"]["seed"], 9);
    assert_eq!(r["se"]["psi_mode"], "identity");
    for it in r["iterations"].as_array().unwrap() {
        for v in it["variables"].as_array().unwrap() {
            assert_eq!(m(&v["psi_minus"]), vec![vec![1.0, 0.0], vec![0.0, 1.0]]);
        }
    }
}

#[test]
fn se_on_data_uses_the_actual_singular_values() {
    // The worked `run` example: W1.npy (150 x 100), a bias, y, a data mask and truth.
    let cfg = manifest().join("examples/run/config.toml");
    let out_dir = temp("se-data");
    ok(&[
        "se",
        cfg.to_str().unwrap(),
        "--out",
        out_dir.to_str().unwrap(),
        "--quiet",
    ]);
    let r = json(&out_dir.join("se.json"));
    let layer = &r["network"]["layers"][0];
    assert!(
        layer["spectrum"]
            .as_str()
            .unwrap()
            .contains("singular values of the given weight"),
        "{layer}"
    );
    assert_eq!(layer["spectrum_points"], 100);
    assert_eq!(r["iterations"].as_array().unwrap().len(), 50);
}

const COMPARE_KEYS: [&str; 14] = [
    "iteration",
    "variable",
    "sim_mse_per_entry_mean",
    "sim_mse_per_entry_min",
    "sim_mse_per_entry_max",
    "sim_mse_per_entry_std_err",
    "se_mse_per_entry",
    "mse_rel_gap",
    "sim_nmse_mean",
    "sim_nmse_min",
    "sim_nmse_max",
    "sim_nmse_std_err",
    "se_nmse",
    "nmse_rel_gap",
];

#[test]
fn compare_in_teacher_mode_writes_table_json_csv_and_plot() {
    let dir = temp("compare");
    let cfg = write_config(&dir, SMALL);
    let out_dir = dir.join("out");
    let out = ok(&[
        "compare",
        &cfg,
        "--out",
        out_dir.to_str().unwrap(),
        "--seeds",
        "2",
        "--empirical-se",
    ]);
    let table = text(&out.stdout);
    assert!(
        table.contains("mean of 2 teacher draws") && table.contains("gap"),
        "{table}"
    );
    assert!(table.contains("emp-SE"), "{table}");

    let r = json(&out_dir.join("compare.json"));
    assert_eq!(r["meta"]["command"], "compare");
    assert_eq!(r["meta"]["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(r["meta"]["seed"], 3);
    assert_eq!(r["meta"]["config"]["d"], 2);
    assert_eq!(r["teacher"], true);
    assert_eq!(
        (r["seeds"].as_u64(), r["failed"].as_u64()),
        (Some(2), Some(0))
    );
    assert_eq!(r["empirical_se"], true);
    let trials = r["trials"].as_array().unwrap();
    assert_eq!(trials.len(), 2);
    for (i, t) in trials.iter().enumerate() {
        assert_eq!(t["seed"], 3 + i as u64, "trial i uses seed + i");
        assert!(t["solve_seconds"].as_f64().unwrap() > 0.0);
        assert!(t["error"].is_null());
    }
    assert!(r["se_seconds"].as_f64().unwrap() > 0.0);
    let rows = r["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 5 * 2);
    for row in rows {
        let sim = &row["sim_mse_per_entry"];
        let vals: Vec<f64> = sim["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert_eq!(vals.len(), 2);
        let mean = sim["mean"].as_f64().unwrap();
        assert!((mean - (vals[0] + vals[1]) / 2.0).abs() < 1e-12 * mean);
        assert!(sim["min"].as_f64().unwrap() <= mean && mean <= sim["max"].as_f64().unwrap());
        let se = row["se_mse_per_entry"].as_f64().unwrap();
        let gap = row["mse_rel_gap"].as_f64().unwrap();
        assert!((gap - (se - mean) / mean).abs() < 1e-12);
        assert!(row["empirical_se_mse_per_entry"]["mean"].as_f64().unwrap() > 0.0);
        assert!(row["se_nmse"].as_f64().unwrap() > 0.0);
    }
    assert_eq!(r["se_iterations"].as_array().unwrap().len(), 5);

    let csv = std::fs::read_to_string(out_dir.join("compare.csv")).unwrap();
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    assert_eq!(&header[..14], &COMPARE_KEYS[..]);
    assert_eq!(header[14], "empirical_se_mse_per_entry_mean");
    assert_eq!(lines.count(), 10);
    assert!(
        std::fs::metadata(out_dir.join("compare.png"))
            .unwrap()
            .len()
            > 1000
    );
    let svg = std::fs::read_to_string(out_dir.join("compare.svg")).unwrap();
    assert!(svg.contains("state evolution") && svg.contains("empirical SE (reference diagnostic)"));

    // Trial 0 is exactly `mlmatvamp run` on the same configuration.
    let run_dir = dir.join("run");
    ok(&["run", &cfg, "--out", run_dir.to_str().unwrap(), "--quiet"]);
    let h = json(&run_dir.join("history.json"));
    for k in 0..5 {
        let run_mse = h["iterations"][k]["variables"][0]["mse"].as_f64().unwrap() / 2.0;
        let trial0 = rows[2 * k]["sim_mse_per_entry"]["values"][0]
            .as_f64()
            .unwrap();
        assert!(
            (run_mse - trial0).abs() < 1e-9 * run_mse,
            "iteration {k}: {run_mse} vs {trial0}"
        );
    }
}

#[test]
fn compare_on_data_needs_truth_and_one_run() {
    let cfg = manifest().join("examples/run/config.toml");
    let out_dir = temp("compare-data");
    let out = ok(&[
        "compare",
        cfg.to_str().unwrap(),
        "--out",
        out_dir.to_str().unwrap(),
        "--n-mc",
        "1000",
    ]);
    assert!(text(&out.stdout).contains("given data"));
    let r = json(&out_dir.join("compare.json"));
    assert_eq!(r["teacher"], false);
    assert_eq!(r["rows"].as_array().unwrap().len(), 50 * 2);
    fails(
        &[
            "compare",
            cfg.to_str().unwrap(),
            "--out",
            out_dir.to_str().unwrap(),
            "--seeds",
            "2",
        ],
        "--seeds",
    );
    // The same data without `truth`.
    let dir = temp("compare-notruth");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("truth"))
        .collect::<Vec<_>>()
        .join("\n");
    for f in ["W1.npy", "B1.csv", "Y.npy", "M.npy"] {
        std::fs::copy(manifest().join("examples/run").join(f), dir.join(f)).unwrap();
    }
    let c = write_config(&dir, &text);
    fails(
        &["compare", &c, "--out", dir.join("o").to_str().unwrap()],
        "ground truth",
    );
}

#[test]
fn run_samples_law_arrays() {
    // `run` draws the weight law and the mask law from the seed (teacher mode).
    let dir = temp("run-laws");
    let cfg = write_config(&dir, SMALL);
    let out_dir = dir.join("out");
    ok(&["run", &cfg, "--out", out_dir.to_str().unwrap(), "--quiet"]);
    let h = json(&out_dir.join("history.json"));
    assert!(h["iterations"][4]["variables"][0]["mse"].as_f64().unwrap() > 0.0);
    let y = mlmatvamp::io::read_npy(&out_dir.join("y.npy"))
        .unwrap()
        .data;
    let missing = (0..y.nrows())
        .flat_map(|i| (0..2).map(move |j| (i, j)))
        .filter(|&(i, j)| y[(i, j)].is_nan())
        .count() as f64
        / (2.0 * y.nrows() as f64);
    // 240 entries, each missing with probability 0.2: 0.2 ± 5 standard deviations (0.026).
    assert!((missing - 0.2).abs() < 0.13, "missing fraction {missing}");
}

#[test]
fn se_errors_are_clear() {
    let dir = temp("errors");
    let cfg = write_config(&dir, SMALL);
    let out = dir.join("o");
    let o = out.to_str().unwrap();
    fails(
        &["se", &cfg, "--out", o, "--psi-mode", "foo"],
        "unknown mode `foo`: expected `general` or `identity`",
    );
    fails(&["compare", &cfg, "--out", o, "--seeds", "0"], "--seeds");
    let variant = |from: &str, to: &str| {
        assert!(SMALL.contains(from), "{from}");
        write_config(&dir, &SMALL.replace(from, to))
    };
    let c = variant("n_mc = 2000", "n_mc = 2000\npsi_mode = \"foo\"");
    fails(&["se", &c, "--out", o], "unknown variant `foo`");
    let c = variant("n_mc = 2000", "n_mc = 10");
    fails(&["se", &c, "--out", o], "se.n_mc");
    let c = variant("seed = 3\n", "seed = 3\n[policy]\ndamp_mean = 0.5\n");
    fails(&["se", &c, "--out", o], "damp_mean");
    let c = variant("law = \"gaussian\"", "law = \"bernoulli\", observed = 0.5");
    fails(&["se", &c, "--out", o], "must be `gaussian`");
    let c = variant(
        "{ law = \"gaussian\", rows = 120, cols = 200 }",
        "{ law = \"gaussian\", cols = 200 }",
    );
    fails(&["se", &c, "--out", o], "`rows` is required");
    let c = variant(
        "{ law = \"bernoulli\", observed = 0.8 }",
        "{ law = \"bernoulli\" }",
    );
    fails(&["se", &c, "--out", o], "needs `observed`");
    fails(&["run", &c, "--out", o], "needs `observed`");
    let c = variant("observed = 0.8", "observed = 1.5");
    fails(&["se", &c, "--out", o], "must be a probability");
    let c = variant("cols = 200", "cols = 199");
    fails(&["se", &c, "--out", o], "shape mismatch");
}

/// A teacher configuration with a random asymmetric start (`[init]`).
const WITH_INIT: &str = r#"
d = 2
iterations = 4
seed = 5

[init]
seed = 3
precision = 1e-3
scale = 2.0

[se]
n_mc = 2000

[prior]
kind = "gaussian"
rows = 80

[[layer]]
kind = "linear"
weight = { law = "gaussian", rows = 60, cols = 80 }

[output]
kind = "awgn"
noise_precision = [[20.0, 0.0], [0.0, 20.0]]
"#;

/// `run`, `se` and `compare` build from one resolver: `compare`'s simulation starts where `run`
/// starts. Before, `compare` ignored `[init]` and started from `R⁻ = 0`, so its first iteration
/// differed from `run`'s (0.78317 vs 0.78307 per entry here).
#[test]
fn compare_honours_init_like_run() {
    let dir = temp("compare-init");
    let cfg = write_config(&dir, WITH_INIT);
    let run_dir = dir.join("run");
    ok(&["run", &cfg, "--out", run_dir.to_str().unwrap(), "--quiet"]);
    let cmp_dir = dir.join("compare");
    ok(&[
        "compare",
        &cfg,
        "--out",
        cmp_dir.to_str().unwrap(),
        "--quiet",
    ]);
    let h = json(&run_dir.join("history.json"));
    let c = json(&cmp_dir.join("compare.json"));
    let rows: Vec<&Value> = c["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["variable"] == 0)
        .collect();
    assert_eq!(rows.len(), 4);
    for (k, row) in rows.iter().enumerate() {
        let run_mse = h["iterations"][k]["variables"][0]["mse"].as_f64().unwrap() / 2.0;
        let trial0 = row["sim_mse_per_entry"]["values"][0].as_f64().unwrap();
        assert_eq!(
            run_mse, trial0,
            "iteration {k}: run {run_mse} vs compare {trial0}"
        );
    }
}

/// A mixed-regression configuration in teacher mode (no `y`): `run` accepts it, and so must
/// `compare` (before, it asked for `truth` because it recognised teacher mode for AWGN only).
#[test]
fn compare_accepts_a_mixed_regression_teacher() {
    let dir = temp("compare-mixed");
    let cfg = write_config(
        &dir,
        r#"
d = 2
iterations = 3
seed = 1

[policy]
lam_min = 1e-3
damp_precision = 0.2

[init]
seed = 7
precision = 1e-6
scale = 1.0

[se]
n_mc = 2000

[prior]
kind = "gaussian"
rows = 60

[[layer]]
kind = "linear"
weight = { law = "gaussian", rows = 300, cols = 60 }

[output]
kind = "mixed-regression"
noise_variance = 0.01
"#,
    );
    let run_dir = dir.join("run");
    ok(&["run", &cfg, "--out", run_dir.to_str().unwrap(), "--quiet"]);
    let cmp_dir = dir.join("compare");
    ok(&[
        "compare",
        &cfg,
        "--out",
        cmp_dir.to_str().unwrap(),
        "--quiet",
    ]);
    let c = json(&cmp_dir.join("compare.json"));
    assert_eq!(c["teacher"], true);
    assert_eq!(c["failed"], 0);
    let h = json(&run_dir.join("history.json"));
    for row in c["rows"].as_array().unwrap() {
        let (k, l) = (
            row["iteration"].as_u64().unwrap() as usize,
            row["variable"].as_u64().unwrap() as usize,
        );
        let run_mse = h["iterations"][k]["variables"][l]["mse"].as_f64().unwrap() / 2.0;
        assert_eq!(
            row["sim_mse_per_entry"]["values"][0].as_f64().unwrap(),
            run_mse
        );
        assert!(row["se_mse_per_entry"].as_f64().unwrap() > 0.0);
    }
}
