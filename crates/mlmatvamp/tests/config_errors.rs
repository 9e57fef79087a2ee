//! Every error path of the run configuration (`mlmatvamp::config`) gives a message that names
//! the problem: the unknown key or kind and the valid ones, the config path, the matrix with the
//! expected and actual shape, the file and entry of a non-finite value, the key of a bad
//! covariance or precision, the path of a missing file.

use faer::Mat;
use mlmatvamp::config;
use mlmatvamp::io::write_npy;
use std::path::{Path, PathBuf};

/// A fresh directory under the system temp dir, unique per test.
fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "mlmatvamp-config-errors-{}-{name}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn gaussian(rows: usize, cols: usize, seed: u64) -> Mat<f64> {
    let mut rng = mlmatvamp::rng_from_seed(seed);
    mlmatvamp::denoise::standard_normal(rows, cols, &mut rng)
        * faer::Scale(1.0 / (cols as f64).sqrt())
}

/// Writes the data of a valid problem: n_0 = 20, n_1 = 30, d = 2.
fn write_data(d: &Path) {
    write_npy(&d.join("W1.npy"), gaussian(30, 20, 1).as_ref()).unwrap();
    write_npy(&d.join("Y.npy"), gaussian(30, 2, 2).as_ref()).unwrap();
}

const PRIOR: &str = r#"
[prior]
kind = "gaussian"
rows = 20
covariance = [[1.0, 0.2], [0.2, 1.0]]
"#;

const LAYER: &str = r#"
[[layer]]
kind = "linear"
weight = "W1.npy"
"#;

const OUTPUT: &str = r#"
[output]
kind = "awgn"
y = "Y.npy"
noise_precision = [[10.0, 0.0], [0.0, 10.0]]
"#;

/// A config made of a header and the three sections (each replaceable).
fn config(head: &str, prior: &str, layers: &str, output: &str) -> String {
    format!("d = 2\niterations = 5\n{head}\n{prior}\n{layers}\n{output}")
}

/// Writes the config (and the default data) and returns the load error's message.
fn load_err(name: &str, text: &str, extra: impl FnOnce(&Path)) -> String {
    let d = dir(name);
    write_data(&d);
    extra(&d);
    let path = d.join("config.toml");
    std::fs::write(&path, text).unwrap();
    match config::load(&path) {
        Ok(_) => panic!("{name}: expected an error, the config loaded"),
        Err(e) => e.to_string(),
    }
}

fn assert_has(msg: &str, parts: &[&str]) {
    for p in parts {
        assert!(msg.contains(p), "message lacks {p:?}:\n{msg}");
    }
}

#[test]
fn base_config_is_valid() {
    let d = dir("valid");
    write_data(&d);
    let path = d.join("config.toml");
    std::fs::write(&path, config("", PRIOR, LAYER, OUTPUT)).unwrap();
    let p = config::load(&path).unwrap();
    assert_eq!(p.network.rows(), &[20, 30]);
    assert!(!p.teacher && p.truth.is_none());
    assert_eq!(p.layers[0].kind, "linear");
    assert!(p.layers[0].svd_seconds.is_some());
    assert_eq!(p.raw["output"]["y"], "Y.npy");
}

#[test]
fn unknown_keys_name_the_key_the_valid_ones_and_the_path() {
    let cases = [
        ("top", config("colour = 3", PRIOR, LAYER, OUTPUT), "colour", "`iterations`"),
        ("prior", config("", &format!("{PRIOR}scale = 2"), LAYER, OUTPUT), "scale", "`covariance`"),
        ("layer", config("", PRIOR, &format!("{LAYER}activation = \"relu\""), OUTPUT), "activation", "`noise_precision`"),
        ("output", config("", PRIOR, LAYER, &format!("{OUTPUT}sigma = 1.0")), "sigma", "`mask`"),
        ("policy", config("[policy]\nlam_mn = 1e-3", PRIOR, LAYER, OUTPUT), "lam_mn", "`lam_min`"),
        (
            "law",
            config("", PRIOR, "[[layer]]\nkind = \"linear\"\nweight = { law = \"gaussian\", rows = 30, cols = 20, mean = 1 }", OUTPUT),
            "mean",
            "`variance`",
        ),
    ];
    for (name, text, key, valid) in cases {
        let msg = load_err(&format!("unknown-{name}"), &text, |_| {});
        assert_has(
            &msg,
            &[
                &format!("unknown field `{key}`"),
                valid,
                "config.toml",
                "configuration error in",
            ],
        );
    }
}

#[test]
fn unknown_kinds_list_the_valid_kinds() {
    let prior = PRIOR.replace("\"gaussian\"", "\"laplace\"");
    let msg = load_err("kind-prior", &config("", &prior, LAYER, OUTPUT), |_| {});
    assert_has(
        &msg,
        &[
            "unknown variant `laplace`",
            "`gaussian`",
            "`row-sparse`",
            "config.toml",
        ],
    );
    let layer = LAYER.replace("\"linear\"", "\"softmax\"");
    let msg = load_err("kind-layer", &config("", PRIOR, &layer, OUTPUT), |_| {});
    assert_has(
        &msg,
        &["unknown variant `softmax`", "`linear`", "`identity`"],
    );
    let output = OUTPUT.replace("\"awgn\"", "\"poisson\"");
    let msg = load_err("kind-output", &config("", PRIOR, LAYER, &output), |_| {});
    assert_has(&msg, &["unknown variant `poisson`", "`awgn`"]);
    let layers = format!("{LAYER}\n[[layer]]\nkind = \"identity\"\nestimator = \"mode\"\n[[layer]]\nkind = \"linear\"\nweight = {{ law = \"gaussian\", rows = 30, cols = 30 }}");
    let msg = load_err(
        "kind-estimator",
        &config("", PRIOR, &layers, OUTPUT),
        |_| {},
    );
    assert_has(&msg, &["unknown variant `mode`", "`map`", "`mmse`"]);
    let law = "[[layer]]\nkind = \"linear\"\nweight = { law = \"uniform\", rows = 30, cols = 20 }";
    let msg = load_err("kind-law", &config("", PRIOR, law, OUTPUT), |_| {});
    assert_has(&msg, &["unknown variant `uniform`", "`gaussian`"]);
}

#[test]
fn syntax_and_type_errors_name_the_place() {
    let msg = load_err("syntax", "d = 2\n[prior\nkind = 1", |_| {});
    assert_has(&msg, &["config.toml", "line 2"]);
    let layer = "[[layer]]\nkind = \"linear\"\nweight = 5";
    let msg = load_err("type", &config("", PRIOR, layer, OUTPUT), |_| {});
    assert_has(
        &msg,
        &["invalid type: integer `5`", "a file name (.npy or .csv)"],
    );
    let prior = PRIOR.replace("[[1.0, 0.2], [0.2, 1.0]]", "[[1.0, 0.2], 0.5]");
    let msg = load_err("mixed", &config("", &prior, LAYER, OUTPUT), |_| {});
    assert_has(&msg, &["either numbers (a vector) or arrays of numbers"]);
    let msg = load_err(
        "missing-kind",
        &config("", "[prior]\nrows = 20", LAYER, OUTPUT),
        |_| {},
    );
    assert_has(&msg, &["missing field `kind`"]);
}

#[test]
fn wrong_shapes_name_the_matrix_and_expected_vs_got() {
    // The weight stored transposed (20 x 30 instead of 30 x 20).
    let msg = load_err("shape-weight", &config("", PRIOR, LAYER, OUTPUT), |d| {
        write_npy(&d.join("W1.npy"), gaussian(20, 30, 1).as_ref()).unwrap();
    });
    assert_has(
        &msg,
        &[
            "weight of layer 1 (W1.npy",
            "expected n_1 x 20",
            "got 20 x 30 (is it transposed?)",
        ],
    );
    let msg = load_err("shape-y", &config("", PRIOR, LAYER, OUTPUT), |d| {
        write_npy(&d.join("Y.npy"), gaussian(30, 3, 2).as_ref()).unwrap();
    });
    assert_has(
        &msg,
        &[
            "observation y of the output (Y.npy",
            "expected 30 x 2, got 30 x 3",
        ],
    );
    let layer = format!("{LAYER}bias = [[1.0, 2.0, 3.0]]");
    let msg = load_err("shape-bias", &config("", PRIOR, &layer, OUTPUT), |_| {});
    assert_has(
        &msg,
        &[
            "bias of layer 1 (inline, key `layer[1].bias`)",
            "expected 30 x 2",
            "got 1 x 3",
        ],
    );
    let prior = PRIOR.replace("covariance", "mean = [0.0, 0.0, 0.0]\ncovariance");
    let msg = load_err("shape-mean", &config("", &prior, LAYER, OUTPUT), |_| {});
    assert_has(
        &msg,
        &[
            "prior mean (inline, key `prior.mean`)",
            "a vector of length 2",
            "got a vector of length 3",
        ],
    );
    let prior = PRIOR.replace(
        "[[1.0, 0.2], [0.2, 1.0]]",
        "[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]",
    );
    let msg = load_err("shape-cov", &config("", &prior, LAYER, OUTPUT), |_| {});
    assert_has(
        &msg,
        &[
            "prior covariance (inline, key `prior.covariance`)",
            "expected 2 x 2, got 3 x 3",
        ],
    );
    let output = format!("{OUTPUT}mask = \"M.npy\"");
    let msg = load_err("shape-mask", &config("", PRIOR, LAYER, &output), |d| {
        write_npy(&d.join("M.npy"), Mat::<f64>::ones(29, 2).as_ref()).unwrap();
    });
    assert_has(
        &msg,
        &["mask of the output (M.npy", "expected 30 x 2, got 29 x 2"],
    );
    let prior = PRIOR.replace("[[1.0, 0.2], [0.2, 1.0]]", "[[1.0, 0.2], [0.2]]");
    let msg = load_err("ragged", &config("", &prior, LAYER, OUTPUT), |_| {});
    assert_has(&msg, &["prior covariance (inline", "row 1 of length 1"]);
    // A 1-D array is a column: fine for d = 1, a shape error for d = 2.
    let msg = load_err("shape-1d", &config("", PRIOR, LAYER, OUTPUT), |d| {
        let y: Vec<f64> = (0..60).map(f64::from).collect();
        npyz::to_file_1d(d.join("Y.npy"), y).unwrap();
    });
    assert_has(
        &msg,
        &["Y.npy", "expected 30 x 2, got a vector of length 60"],
    );
}

#[test]
fn truth_is_checked() {
    let head = "truth = [\"Z0.npy\", \"Z1.npy\"]";
    let msg = load_err("truth-shape", &config(head, PRIOR, LAYER, OUTPUT), |d| {
        write_npy(&d.join("Z0.npy"), gaussian(20, 2, 3).as_ref()).unwrap();
        write_npy(&d.join("Z1.npy"), gaussian(20, 2, 4).as_ref()).unwrap();
    });
    assert_has(
        &msg,
        &[
            "truth Z_1 (Z1.npy, key `truth[1]`)",
            "expected 30 x 2, got 20 x 2",
        ],
    );
    let msg = load_err(
        "truth-count",
        &config("truth = [\"Z0.npy\"]", PRIOR, LAYER, OUTPUT),
        |_| {},
    );
    assert_has(
        &msg,
        &["`truth` must list one array per variable Z_0 … Z_1 (2 arrays), got 1"],
    );
    let output = OUTPUT.replace("y = \"Y.npy\"\n", "");
    let msg = load_err(
        "truth-teacher",
        &config(head, PRIOR, LAYER, &output),
        |_| {},
    );
    assert_has(&msg, &["`truth` cannot be combined with teacher mode"]);
}

#[test]
fn non_finite_inputs_name_the_file_and_entry() {
    let msg = load_err("nan-weight", &config("", PRIOR, LAYER, OUTPUT), |d| {
        let mut w = gaussian(30, 20, 1);
        w[(4, 7)] = f64::NAN;
        write_npy(&d.join("W1.npy"), w.as_ref()).unwrap();
    });
    assert_has(
        &msg,
        &[
            "non-finite value in weight of layer 1 (W1.npy",
            "entry (4, 7) is NaN",
        ],
    );
    let layer = LAYER.replace("W1.npy", "W1.csv");
    let msg = load_err("inf-csv", &config("", PRIOR, &layer, OUTPUT), |d| {
        let mut w = gaussian(30, 20, 1);
        w[(2, 3)] = f64::INFINITY;
        mlmatvamp::io::write_csv(&d.join("W1.csv"), w.as_ref()).unwrap();
    });
    assert_has(&msg, &["W1.csv", "entry (2, 3) is inf"]);
    let msg = load_err("nan-y", &config("", PRIOR, LAYER, OUTPUT), |d| {
        let mut y = gaussian(30, 2, 2);
        y[(5, 1)] = f64::NAN;
        write_npy(&d.join("Y.npy"), y.as_ref()).unwrap();
    });
    assert_has(
        &msg,
        &[
            "observation y of the output (Y.npy",
            "entry (5, 1)",
            "is NaN",
            "mark missing entries with `mask`",
        ],
    );
    let prior = PRIOR.replace("covariance", "mean = [0.0, nan]\ncovariance");
    let msg = load_err("nan-mean", &config("", &prior, LAYER, OUTPUT), |_| {});
    assert_has(
        &msg,
        &[
            "prior mean (inline, key `prior.mean`)",
            "entry (1, 0) is NaN",
        ],
    );
}

#[test]
fn nan_is_allowed_only_at_masked_entries() {
    let output = format!("{OUTPUT}mask = \"M.npy\"");
    let write = |d: &Path, masked: bool| {
        let mut y = gaussian(30, 2, 2);
        y[(5, 1)] = f64::NAN;
        write_npy(&d.join("Y.npy"), y.as_ref()).unwrap();
        let mut m = Mat::<f64>::ones(30, 2);
        if masked {
            m[(5, 1)] = 0.0;
        }
        write_npy(&d.join("M.npy"), m.as_ref()).unwrap();
    };
    let msg = load_err("nan-observed", &config("", PRIOR, LAYER, &output), |d| {
        write(d, false)
    });
    assert_has(&msg, &["entry (5, 1)", "but the mask marks it observed"]);
    let d = dir("nan-masked");
    write_data(&d);
    write(&d, true);
    std::fs::write(d.join("config.toml"), config("", PRIOR, LAYER, &output)).unwrap();
    config::load(&d.join("config.toml")).unwrap();
    let msg = load_err("mask-values", &config("", PRIOR, LAYER, &output), |d| {
        write_npy(&d.join("Y.npy"), gaussian(30, 2, 2).as_ref()).unwrap();
        let mut m = Mat::<f64>::ones(30, 2);
        m[(3, 0)] = 0.5;
        write_npy(&d.join("M.npy"), m.as_ref()).unwrap();
    });
    assert_has(
        &msg,
        &[
            "mask of the output (M.npy",
            "entry (3, 0)",
            "is 0.5",
            "1 (observed) or 0 (missing)",
        ],
    );
}

#[test]
fn bad_covariances_and_precisions_name_the_key() {
    let prior = PRIOR.replace("[[1.0, 0.2], [0.2, 1.0]]", "[[1.0, 0.2], [0.3, 1.0]]");
    let msg = load_err("nonsym", &config("", &prior, LAYER, OUTPUT), |_| {});
    assert_has(&msg, &["key `prior.covariance`", "is not symmetric"]);
    let output = OUTPUT.replace("[[10.0, 0.0], [0.0, 10.0]]", "[[1.0, 2.0], [2.0, 1.0]]");
    let msg = load_err("nonpd", &config("", PRIOR, LAYER, &output), |_| {});
    assert_has(
        &msg,
        &[
            "key `output.noise_precision`",
            "is not positive definite",
            "smallest eigenvalue is -1",
        ],
    );
    let layer = format!("{LAYER}noise_precision = \"N1.npy\"");
    let msg = load_err("nonpd-file", &config("", PRIOR, &layer, OUTPUT), |d| {
        let n = Mat::from_fn(2, 2, |i, j| if i == j { 1.0 - 3.0 * i as f64 } else { 0.0 });
        write_npy(&d.join("N1.npy"), n.as_ref()).unwrap();
    });
    assert_has(
        &msg,
        &[
            "noise precision of layer 1 (N1.npy, key `layer[1].noise_precision`)",
            "not positive definite",
        ],
    );
}

#[test]
fn missing_and_unreadable_files_name_the_path() {
    let layer = LAYER.replace("W1.npy", "data/W_missing.npy");
    let msg = load_err("missing", &config("", PRIOR, &layer, OUTPUT), |_| {});
    assert_has(&msg, &["reading", "data/W_missing.npy", "No such file"]);
    let layer = LAYER.replace("W1.npy", "W1.mat");
    let msg = load_err("extension", &config("", PRIOR, &layer, OUTPUT), |_| {});
    assert_has(&msg, &["W1.mat", "use a .npy or a .csv file"]);
    let msg = load_err("garbage", &config("", PRIOR, LAYER, OUTPUT), |d| {
        std::fs::write(d.join("W1.npy"), b"PK\x03\x04 this is a zip").unwrap();
    });
    assert_has(&msg, &["W1.npy", "not a .npy file"]);
    let msg = config::load(Path::new("/nonexistent/dir/run.toml"))
        .unwrap_err()
        .to_string();
    assert_has(&msg, &["reading /nonexistent/dir/run.toml"]);
}

#[test]
fn invalid_values_name_the_key() {
    let cases = [
        ("d0", "d = 0\n".to_string() + &config("", PRIOR, LAYER, OUTPUT)[6..], "`d` must be between 1 and"),
        ("iter0", config("", PRIOR, LAYER, OUTPUT).replace("iterations = 5", "iterations = 0"), "`iterations` must be at least 1"),
        ("lam", config("[policy]\nlam_min = -1.0", PRIOR, LAYER, OUTPUT), "`policy.lam_min` must be non-negative"),
        ("damp", config("[policy]\ndamp_mean = 1.0", PRIOR, LAYER, OUTPUT), "`policy.damp_mean` must be in [0, 1)"),
        ("gamma", config("gamma_init = 0.0", PRIOR, LAYER, OUTPUT), "`gamma_init` must be positive"),
        ("tol", config("tolerance = nan", PRIOR, LAYER, OUTPUT), "`tolerance` must be non-negative"),
        ("rows0", config("", &PRIOR.replace("rows = 20", "rows = 0"), LAYER, OUTPUT), "`prior.rows` must be at least 1"),
        (
            "sparsity",
            config("", "[prior]\nkind = \"row-sparse\"\nrows = 20\nsparsity = 1.5", LAYER, OUTPUT),
            "`prior.sparsity` must be in (0, 1], got 1.5",
        ),
        (
            "law-rows",
            config("", PRIOR, "[[layer]]\nkind = \"linear\"\nweight = { law = \"gaussian\", rows = 0, cols = 20 }", OUTPUT),
            "rows and cols must be at least 1",
        ),
        (
            "law-var",
            config("", PRIOR, "[[layer]]\nkind = \"linear\"\nweight = { law = \"gaussian\", rows = 30, cols = 20, variance = -1 }", OUTPUT),
            "variance must be non-negative",
        ),
        ("rows-negative", config("", &PRIOR.replace("rows = 20", "rows = -3"), LAYER, OUTPUT), "invalid value: integer `-3`"),
    ];
    for (name, text, want) in cases {
        let msg = load_err(name, &text, |_| {});
        assert_has(&msg, &[want]);
    }
}

#[test]
fn layers_must_alternate_starting_with_linear() {
    let identity =
        "[[layer]]\nkind = \"identity\"\nnoise_precision = [[100.0, 0.0], [0.0, 100.0]]\n";
    let cases = [
        (
            "identity-first",
            format!("{identity}{LAYER}{identity}"),
            "got [identity, linear, identity]",
        ),
        (
            "ends-row-wise",
            format!("{LAYER}{identity}"),
            "got [linear, identity]",
        ),
        (
            "two-linear",
            format!("{LAYER}{LAYER}{LAYER}"),
            "got [linear, linear, linear]",
        ),
        ("no-layer", String::new(), "got []"),
    ];
    for (name, layers, want) in cases {
        let msg = load_err(name, &config("", PRIOR, &layers, OUTPUT), |_| {});
        assert_has(
            &msg,
            &["must alternate linear / row-wise", want, "config.toml"],
        );
    }
}

// ------------------------------------------------------------------ matrix-free linear layers

/// A teacher configuration (no data files) whose layer is `layer`: n_0 = 64, d = 2.
fn teacher_with(layer: &str) -> String {
    format!(
        r#"d = 2
iterations = 4
seed = 3
[prior]
kind = "row-sparse"
rows = 64
sparsity = 0.3
{layer}
[output]
kind = "awgn"
noise_precision = [[50.0, 0.0], [0.0, 50.0]]
"#
    )
}

#[test]
fn operator_sparse_and_cg_layers_load_and_run() {
    use mlmatvamp::io::write_npz_csr;
    use mlmatvamp::operator::sparse::Csr;
    let d = dir("matrix-free");
    // A sparse 40 x 64 weight with 3 entries per row.
    let (mut indptr, mut indices, mut data) = (vec![0], vec![], vec![]);
    for i in 0..40usize {
        let mut cols: Vec<usize> = (0..3).map(|k| (i * 7 + k * 19) % 64).collect();
        cols.sort_unstable();
        cols.dedup();
        for c in cols {
            indices.push(c);
            data.push(if (i + c) % 2 == 0 { 0.6 } else { -0.6 });
        }
        indptr.push(indices.len());
    }
    write_npz_csr(
        &d.join("W.npz"),
        &Csr::new("W", (40, 64), indptr, indices, data).unwrap(),
    )
    .unwrap();
    for (name, layer, form) in [
        (
            "dct",
            "[[layer]]\nkind = \"linear\"\nweight = { operator = \"dct\", rows = 40, cols = 64, seed = 1 }",
            "closed form",
        ),
        ("sparse", "[[layer]]\nkind = \"linear\"\nweight = \"W.npz\"", "primal"),
        (
            "gaussian-cg",
            "[[layer]]\nkind = \"linear\"\nweight = { law = \"gaussian\", rows = 40, cols = 64 }\nmethod = \"cg\"\ntolerance = 1e-10",
            "primal",
        ),
    ] {
        let text = teacher_with(layer);
        let problem = config::from_toml_str(&text, &d, None).unwrap();
        let desc = problem.network.layer(1).unwrap().describe();
        assert!(desc.contains("matrix-free"), "{name}: {desc}");
        let sol = problem.solve(&mut |_, _| mlmatvamp::solver::Control::Continue).unwrap();
        let last = sol.history.last().unwrap();
        assert_eq!(last.solves.len(), 2, "{name}");
        assert!(last.solves.iter().all(|s| s.form == form), "{name}: {:?}", last.solves);
        assert!(last.variables[0].mse.unwrap() < 0.3, "{name}: the estimate is poor");
        // The state evolution of the same configuration uses the same law.
        let se = mlmatvamp::predict::build_se_model(
            &config::RunConfig::parse(&text, None).unwrap(),
            &d,
            None,
            &mlmatvamp::predict::SeOverrides {
                n_mc: Some(2000),
                ..Default::default()
            },
        )
        .unwrap();
        let (iters, _) = se.run().unwrap();
        assert!(iters.last().unwrap().variables[0].se_mse.is_finite(), "{name}");
    }
    // The default `auto` keeps the SVD for a small dense weight.
    let text = teacher_with(
        "[[layer]]\nkind = \"linear\"\nweight = { law = \"gaussian\", rows = 40, cols = 64 }",
    );
    let problem = config::from_toml_str(&text, &d, None).unwrap();
    assert!(!problem
        .network
        .layer(1)
        .unwrap()
        .describe()
        .contains("matrix-free"));
}

#[test]
fn matrix_free_configuration_errors_name_the_problem() {
    let d = dir("matrix-free-errors");
    let err = |layer: &str| {
        config::from_toml_str(&teacher_with(layer), &d, None)
            .map(|_| ())
            .unwrap_err()
            .to_string()
    };
    // An operator whose shape does not match its neighbours.
    let e =
        err("[[layer]]\nkind = \"linear\"\nweight = { operator = \"dct\", rows = 40, cols = 60 }");
    assert_has(
        &e,
        &["weight of layer 1", "operator", "n_1 x 64", "40 x 60"],
    );
    // More rows than columns cannot be a subsampled orthogonal transform.
    let e =
        err("[[layer]]\nkind = \"linear\"\nweight = { operator = \"dct\", rows = 80, cols = 64 }");
    assert_has(&e, &["weight of layer 1", "rows <= cols", "80 x 64"]);
    // Unknown operator and unknown operator key.
    let e =
        err("[[layer]]\nkind = \"linear\"\nweight = { operator = \"fft\", rows = 40, cols = 64 }");
    assert_has(&e, &["operator", "fft", "dct"]);
    let e = err("[[layer]]\nkind = \"linear\"\nweight = { operator = \"dct\", rows = 40, cols = 64, size = 3 }");
    assert_has(&e, &["operator", "size"]);
    // A tolerance that is not positive, and no iterations.
    let e = err("[[layer]]\nkind = \"linear\"\nweight = { law = \"gaussian\", rows = 40, cols = 64 }\nmethod = \"cg\"\ntolerance = 0.0");
    assert_has(&e, &["layer[1].tolerance", "(0, 1)", "got 0"]);
    let e = err("[[layer]]\nkind = \"linear\"\nweight = { law = \"gaussian\", rows = 40, cols = 64 }\nmethod = \"cg\"\nmax_iterations = 0");
    assert_has(&e, &["layer[1].max_iterations"]);
    let e = err("[[layer]]\nkind = \"linear\"\nweight = { law = \"gaussian\", rows = 40, cols = 64 }\nmethod = \"exact\"");
    assert_has(&e, &["exact", "svd", "cg", "auto"]);
    // An SVD of an operator.
    let e = err("[[layer]]\nkind = \"linear\"\nweight = { operator = \"dct\", rows = 40, cols = 64 }\nmethod = \"svd\"");
    assert_has(&e, &["method = \"svd\" needs the weight as a matrix"]);
    // An operator where only arrays make sense.
    let e = err("[[layer]]\nkind = \"linear\"\nweight = { law = \"gaussian\", rows = 40, cols = 64 }\nbias = { operator = \"dct\", rows = 40, cols = 64 }");
    assert_has(&e, &["bias of layer 1", "only allowed as the `weight`"]);
    // A sparse file that is not an archive, and one whose indices are out of range.
    std::fs::write(d.join("bad.npz"), b"not a zip").unwrap();
    let e = err("[[layer]]\nkind = \"linear\"\nweight = \"bad.npz\"");
    assert_has(&e, &["bad.npz", "not an .npz"]);
    let e = err("[[layer]]\nkind = \"linear\"\nweight = \"missing.npz\"");
    assert_has(&e, &["missing.npz"]);
}
