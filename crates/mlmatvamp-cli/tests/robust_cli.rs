//! The front door's answers to degenerate, badly scaled or absurd inputs (each case once gave a
//! silent wrong answer, a crash or an unclear message): the right answer or a clean, named error,
//! and never a panic or an abort.

mod common;

use common::cli::*;
use faer::Mat;
use mlmatvamp::io::{read_matrix, write_npy};
use std::path::Path;

/// The shipped example's directory copied into a scratch directory, with `W1.npy` replaced.
fn example_with_weight(dir: &Path, w: Option<Mat<f64>>) -> String {
    let src = manifest().join("examples/run");
    for f in std::fs::read_dir(&src).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, dir.join(f.file_name().unwrap())).unwrap();
    }
    if let Some(w) = w {
        write_npy(&dir.join("W1.npy"), w.as_ref()).unwrap();
    }
    dir.join("config.toml").display().to_string()
}

fn weight(dir: &Path) -> Mat<f64> {
    read_matrix(&dir.join("W1.npy")).unwrap().data
}

#[test]
fn a_zero_weight_gives_the_bias_and_finite_errors() {
    let dir = temp("zero-w");
    let w = {
        let d = temp("zero-w-src");
        example_with_weight(&d, None);
        weight(&d)
    };
    let cfg = example_with_weight(&dir, Some(Mat::zeros(w.nrows(), w.ncols())));
    let out = dir.join("out");
    ok(&["run", &cfg, "--out", out.to_str().unwrap(), "--quiet"]);
    let z1 = read_matrix(&out.join("z_1.npy")).unwrap().data;
    let bias = [0.5, -0.25, 1.0]; // examples/run/B1.csv
    for i in 0..z1.nrows() {
        for j in 0..3 {
            assert!(
                (z1[(i, j)] - bias[j]).abs() < 1e-9,
                "z_1[{i}, {j}] = {}",
                z1[(i, j)]
            );
        }
    }
    let h = json(&out.join("history.json"));
    let last = h["iterations"].as_array().unwrap().last().unwrap().clone();
    for v in last["variables"].as_array().unwrap() {
        assert!(v["predicted_mse"].as_f64().unwrap().is_finite(), "{v}");
        assert!(v["mse"].as_f64().unwrap().is_finite(), "{v}");
    }
    // The state evolution of the same configuration: no NaN.
    let se = dir.join("se");
    ok(&[
        "se",
        &cfg,
        "--out",
        se.to_str().unwrap(),
        "--quiet",
        "--n-mc",
        "1000",
    ]);
    let r = json(&se.join("se.json"));
    for it in r["iterations"].as_array().unwrap() {
        for v in it["variables"].as_array().unwrap() {
            assert!(v["se_mse"].as_f64().is_some_and(f64::is_finite), "{v}");
        }
    }
}

#[test]
fn weights_scaled_by_ten_to_the_plus_minus_150_give_finite_estimates() {
    for (name, c) in [("small", 1e-150), ("big", 1e150)] {
        let dir = temp(&format!("scaled-{name}"));
        let w = {
            let d = temp(&format!("scaled-src-{name}"));
            example_with_weight(&d, None);
            weight(&d)
        };
        let cfg = example_with_weight(&dir, Some(&w * faer::Scale(c)));
        let out = dir.join("out");
        ok(&["run", &cfg, "--out", out.to_str().unwrap(), "--quiet"]);
        for l in 0..2 {
            let z = read_matrix(&out.join(format!("z_{l}.npy"))).unwrap().data;
            let m = z.norm_max();
            // The data were not generated at this scale: Z_0 absorbs the scale (≈ 1/c), Z_1
            // stays at the data's; nothing overflows to 1e289 or NaN.
            assert!(m.is_finite() && m < 1e3, "{name}: max |z_{l}| = {m:e}");
        }
    }
}

#[test]
fn absurd_sizes_and_bad_inputs_are_named_errors() {
    let dir = temp("absurd");
    let cfg = example_with_weight(&dir, None);
    let inpaint = manifest().join("examples/inpaint/inpaint.toml");
    let inpaint = inpaint.to_str().unwrap();
    let o = dir.join("o");
    let o = o.to_str().unwrap();
    fails(
        &["se", inpaint, "--out", o, "--n-mc", "1000000000000"],
        "`--n-mc`: the Monte-Carlo rows per step must be between 100 and 50000000",
    );
    fails(
        &["se", inpaint, "--out", o, "--n-mc", "0"],
        "between 100 and 50000000, got 0",
    );
    fails(
        &["--threads", "100000", "run", &cfg, "--out", o],
        "--threads must be at least 1 and at most",
    );
    let text = std::fs::read_to_string(&cfg).unwrap();
    let huge = dir.join("huge.toml");
    std::fs::write(
        &huge,
        text.replace("iterations = 50", "iterations = 1000000000"),
    )
    .unwrap();
    for cmd in ["run", "se", "compare"] {
        fails(
            &[cmd, huge.to_str().unwrap(), "--out", o],
            "`iterations` must be at most 100000",
        );
    }
    // A directory where a file is expected.
    std::fs::create_dir_all(dir.join("W1dir.npy")).unwrap();
    let d = dir.join("dir.toml");
    std::fs::write(&d, text.replace("\"W1.npy\"", "\"W1dir.npy\"")).unwrap();
    fails(
        &["run", d.to_str().unwrap(), "--out", o],
        "is a directory, not a file",
    );
    // A semicolon-separated CSV.
    std::fs::write(dir.join("B_semi.csv"), "b_1;b_2;b_3\n0.5;-0.25;1\n").unwrap();
    let s = dir.join("semi.toml");
    std::fs::write(&s, text.replace("\"B1.csv\"", "\"B_semi.csv\"")).unwrap();
    fails(
        &["run", s.to_str().unwrap(), "--out", o],
        "fields must be separated by commas (this file seems to use `;`)",
    );
    // Type errors inside the tagged tables name the key.
    for (from, to, key) in [
        ("rows = 100", "rows = \"100\"", "`prior.rows`"),
        (
            "covariance = [[1.0, 0.3, 0.0], [0.3, 1.0, 0.0], [0.0, 0.0, 1.0]]",
            "covariance = 1.0",
            "`prior.covariance`",
        ),
        (
            "mean = [0.0, 0.0, 0.0]",
            "mean = [0.0, \"x\", 0.0]",
            "`prior.mean`",
        ),
    ] {
        assert!(text.contains(from), "the example changed: {from}");
        let p = dir.join("typed.toml");
        std::fs::write(&p, text.replace(from, to)).unwrap();
        fails(&["run", p.to_str().unwrap(), "--out", o], key);
    }
}
