//! The inpainting application (paper §2.4, eq. 10; `L = 4`): the missing-entry metric, the SE's
//! per-pattern prediction against Monte Carlo of the output denoiser, the latent baseline's
//! gradient and descent, the sweep driver and CLI, and `relu` layers in `run` configurations.

use faer::Mat;
use mlmatvamp::apps::inpaint::{
    latent_adam, missing_nmse, pattern_frequencies, predicted_missing_nmse, InpaintConfig,
    InpaintTrial, LatentAdamConfig, LatentObjective, Weights,
};
use mlmatvamp::config;
use mlmatvamp::factor::monte_carlo::sample_rows;
use mlmatvamp::prelude::*;
use std::path::PathBuf;
use std::process::Command;

fn small() -> InpaintConfig {
    InpaintConfig {
        n0: 30,
        n1: 60,
        n3: 90,
        observed: 0.6,
        ..Default::default()
    }
}

#[test]
fn missing_nmse_counts_only_missing_entries() {
    let truth = Mat::from_fn(3, 2, |i, j| (i + 2 * j) as f64 + 1.0);
    let mask = Mat::from_fn(3, 2, |i, j| if (i + j) % 2 == 0 { 1.0 } else { 0.0 });
    let mut est = truth.clone();
    // Observed entries may be anything; missing (0,1), (1,0), (2,1) get errors 1, 2, 3.
    est[(0, 0)] += 100.0;
    est[(0, 1)] += 1.0;
    est[(1, 0)] -= 2.0;
    est[(2, 1)] += 3.0;
    let den = truth[(0, 1)].powi(2) + truth[(1, 0)].powi(2) + truth[(2, 1)].powi(2);
    let v = missing_nmse(est.as_ref(), truth.as_ref(), mask.as_ref());
    assert!((v - 14.0 / den).abs() < 1e-15, "{v}");
    let all = Mat::from_fn(3, 2, |_, _| 1.0);
    assert!(missing_nmse(est.as_ref(), truth.as_ref(), all.as_ref()).is_nan());
}

/// The SE prediction of the missing-entry NMSE (per-pattern error covariances) equals the
/// Monte-Carlo error of the library's AWGN output denoiser on rows drawn from the same law.
#[test]
fn predicted_missing_nmse_matches_monte_carlo() {
    let d = 3;
    let n = 100_000;
    let mut rng = rng_from_seed(3);
    let cfg = InpaintConfig::default();
    let noise_cov = cfg.output_noise_covariance();
    // A forward message law: z ~ N(0, K_aa), error b correlated with z.
    let g = standard_normal(2 * d, 2 * d, &mut rng);
    let mut k = to_dmat(&g) * to_dmat(&g).transpose() / (2 * d) as f64;
    for i in 0..d {
        k[(i, i)] += 0.5;
        k[(d + i, d + i)] += 0.05;
    }
    k *= 0.5;
    let gamma = DMat::from_fn(d, d, |i, j| if i == j { 12.0 } else { 2.0 });
    let rows = sample_rows(n, &k, &mut rng);
    let z = Mat::from_fn(n, d, |i, j| rows[(i, j)]);
    let r = Mat::from_fn(n, d, |i, j| rows[(i, j)] + rows[(i, d + j)]);
    let mask = Mat::from_fn(n, d, |i, j| if (i * 7 + j * 3) % 5 < 3 { 1.0 } else { 0.0 });
    let noise = Spd::new("N", noise_cov.clone().try_inverse().unwrap(), Some(d)).unwrap();
    let template = AwgnOutput::new(Mat::zeros(n, d), noise, Some(mask.clone())).unwrap();
    let channel = template.resample(z.as_ref(), &mut rng).unwrap();
    let b = channel
        .denoise(&Message {
            mean: r,
            precision: Spd::new("Γ", gamma.clone(), Some(d)).unwrap(),
        })
        .unwrap();
    let mc = missing_nmse(b.mean.as_ref(), z.as_ref(), mask.as_ref());
    let pred = predicted_missing_nmse(&k, &gamma, &noise_cov, &pattern_frequencies(mask.as_ref()))
        .unwrap();
    println!("missing-entry NMSE: per-pattern prediction {pred:.5}, Monte Carlo {mc:.5}");
    assert!((pred - mc).abs() < 0.02 * pred, "{pred} vs {mc}");
}

fn to_dmat(m: &Mat<f64>) -> DMat {
    DMat::from_fn(m.nrows(), m.ncols(), |i, j| m[(i, j)])
}

#[test]
fn latent_objective_gradient_matches_finite_differences() {
    let trial = InpaintTrial::generate(&small(), &Weights::Random, 5).unwrap();
    let obj = LatentObjective::new(&trial).unwrap();
    let z = trial.truth[0].clone() * faer::Scale(0.7);
    let (_, g, _) = obj.evaluate(z.as_ref());
    let h = 1e-6;
    let mut worst: f64 = 0.0;
    let mut checked = 0;
    for (i, j) in [(0, 0), (3, 1), (7, 2), (11, 0), (29, 2)] {
        let mut a = z.clone();
        let mut b = z.clone();
        a[(i, j)] += h;
        b[(i, j)] -= h;
        // Skip if a pre-activation crosses the relu kink within the step.
        let pa = trial.w1.as_ref() * &a;
        let pb = trial.w1.as_ref() * &b;
        if (0..pa.nrows()).any(|r| (0..3).any(|c| pa[(r, c)].signum() != pb[(r, c)].signum())) {
            continue;
        }
        let fd = (obj.evaluate(a.as_ref()).0 - obj.evaluate(b.as_ref()).0) / (2.0 * h);
        worst = worst.max((fd - g[(i, j)]).abs() / (1.0 + g[(i, j)].abs()));
        checked += 1;
    }
    assert!(checked >= 4);
    assert!(worst < 1e-5, "{worst}");
}

#[test]
fn latent_adam_descends_and_imputes() {
    let trial = InpaintTrial::generate(&small(), &Weights::Random, 6).unwrap();
    let cfg = LatentAdamConfig {
        steps: 300,
        record_every: 50,
        ..Default::default()
    };
    let a = latent_adam(&trial, &cfg, 1).unwrap();
    assert_eq!(a.steps, vec![0, 50, 100, 150, 200, 250, 300]);
    assert!(a.loss.last().unwrap() < &(0.15 * a.loss[0]), "{:?}", a.loss);
    assert!(a.loss.windows(2).all(|w| w[1] < w[0]), "{:?}", a.loss);
    assert!(
        a.missing_nmse.last().unwrap() < &0.5,
        "{:?}",
        a.missing_nmse
    );
    // Deterministic given the seed.
    let b = latent_adam(&trial, &cfg, 1).unwrap();
    assert_eq!(a.loss, b.loss);
}

#[test]
fn given_weights_are_checked() {
    let c = small();
    let w = Weights::Given {
        w1: std::sync::Arc::new(Mat::zeros(c.n1, c.n0 + 1)),
        w3: std::sync::Arc::new(Mat::zeros(c.n3, c.n1)),
    };
    let e = InpaintTrial::generate(&c, &w, 0).unwrap_err().to_string();
    assert!(
        e.contains("W_1") && e.contains("60 x 30") && e.contains("60 x 31"),
        "{e}"
    );
    let bad = InpaintConfig {
        observed: 0.0,
        ..small()
    };
    let e = InpaintTrial::generate(&bad, &Weights::Random, 0)
        .unwrap_err()
        .to_string();
    assert!(e.contains("observed"), "{e}");
}

fn temp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("mlmatvamp-inpaint-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[test]
fn inpaint_command_writes_its_outputs() {
    let out = temp("cli");
    let o = Command::new(env!("CARGO_BIN_EXE_mlmatvamp"))
        .args([
            "inpaint",
            "--out",
            out.to_str().unwrap(),
            "--fractions",
            "0.4,0.8",
            "--trials",
            "2",
            "--iterations",
            "4",
            "--n0",
            "20",
            "--n1",
            "40",
            "--n3",
            "60",
            "--adam-steps",
            "40",
            "--se-rows",
            "300",
            "-q",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for f in ["inpaint.json", "inpaint.csv", "inpaint.png", "inpaint.svg"] {
        assert!(out.join(f).exists(), "{f}");
    }
    let j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("inpaint.json")).unwrap()).unwrap();
    assert_eq!(j["meta"]["command"], "inpaint");
    assert_eq!(j["meta"]["config"]["problem"]["n0"], 20);
    let points = j["points"].as_array().unwrap();
    assert_eq!(points.len(), 2);
    let methods: Vec<&str> = points[0]["methods"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["method"].as_str().unwrap())
        .collect();
    assert_eq!(
        methods,
        ["ml-mat-vamp-mmse", "ml-mat-vamp-map", "adam-map", "se"]
    );
    for m in points[1]["methods"].as_array().unwrap() {
        let v = m["missing_nmse"]["median"].as_f64().unwrap();
        assert!(v.is_finite() && v > 0.0 && v < 1.5, "{}: {v}", m["method"]);
    }
    let csv = std::fs::read_to_string(out.join("inpaint.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + 2 * 4);
    std::fs::remove_dir_all(&out).ok();
    // A bad option: a clean error, exit code 1.
    let o = Command::new(env!("CARGO_BIN_EXE_mlmatvamp"))
        .args([
            "inpaint",
            "--out",
            out.to_str().unwrap(),
            "--estimators",
            "mean",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("unknown estimator `mean`") && !err.contains("panicked"),
        "{err}"
    );
}

const RELU_CONFIG: &str = r#"
d = 2
iterations = 12
seed = 3
estimator = "ESTIMATOR"
[prior]
kind = "gaussian"
rows = 40
covariance = [[1.0, 0.5], [0.5, 1.0]]
[[layer]]
kind = "linear"
weight = { law = "gaussian", rows = 80, cols = 40 }
[[layer]]
kind = "relu"
noise_precision = [[100.0, 0.0], [0.0, 100.0]]
[[layer]]
kind = "linear"
weight = { law = "gaussian", rows = 120, cols = 80 }
[output]
kind = "awgn"
noise_precision = [[100.0, 20.0], [20.0, 100.0]]
mask = { law = "bernoulli", rows = 120, cols = 2, probability = 0.7 }
"#;

#[test]
fn relu_layers_run_from_configs() {
    for est in ["mmse", "map"] {
        let text = RELU_CONFIG.replace("ESTIMATOR", est);
        let p = config::from_toml_str(&text, std::path::Path::new("."), None).unwrap();
        assert!(p.teacher);
        let desc = p.network.layer(2).unwrap().describe();
        assert!(
            desc.contains("relu") && desc.contains(&est.to_uppercase()),
            "{desc}"
        );
        let truth = p.truth.as_ref().unwrap();
        let sol = Solver::new(p.solver.clone())
            .unwrap()
            .run(&p.network, Some(truth))
            .unwrap();
        let y = p.network.output().observation();
        let mask = Mat::from_fn(y.nrows(), y.ncols(), |i, j| {
            if y[(i, j)].is_nan() {
                0.0
            } else {
                1.0
            }
        });
        let missing = (0..y.nrows())
            .flat_map(|i| (0..2).map(move |j| (i, j)))
            .filter(|&(i, j)| mask[(i, j)] == 0.0)
            .count();
        assert!(missing > 40 && missing < 110, "{missing} missing entries");
        let v = missing_nmse(sol.estimates[3].as_ref(), truth[3].as_ref(), mask.as_ref());
        println!("relu config ({est}): missing-entry NMSE {v:.4}");
        assert!(v < 0.2, "{est}: {v}");
    }
    // Errors name the place.
    let bad = RELU_CONFIG
        .replace("ESTIMATOR", "mmse")
        .replace(", probability = 0.7", "");
    let e = config::from_toml_str(&bad, std::path::Path::new("."), None)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("probability") && e.contains("output.mask"),
        "{e}"
    );
    let bad = RELU_CONFIG.replace("ESTIMATOR", "mmse").replace(
        "noise_precision = [[100.0, 0.0], [0.0, 100.0]]",
        "mmse_nodes = 1",
    );
    let e = config::from_toml_str(&bad, std::path::Path::new("."), None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("mmse_nodes"), "{e}");
}
