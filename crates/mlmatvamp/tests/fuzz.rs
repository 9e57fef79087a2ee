//! A fuzzed front door (`docs/testing.md`): random configurations — valid, degenerate and
//! malformed, with random `.npy` and CSV files beside them — through the code behind `run` and
//! `se` (`mlmatvamp::config`, `mlmatvamp::predict`). Nothing may panic, and a success may not
//! carry a non-finite estimate or prediction.
//!
//! `cargo test --release --test fuzz` runs 400 cases; the soak (`-- --ignored`, `FUZZ_CASES`
//! cases, default 100 000) is the same generator run longer.

use mlmatvamp::config;
use mlmatvamp::predict::{build_se_model, SeOverrides};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

/// A number that is usually sensible and sometimes hostile.
fn number() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => (-3.0f64..3.0).prop_map(|x| format!("{x:.3}")),
        2 => (0.01f64..200.0).prop_map(|x| format!("{x:.3}")),
        1 => Just("0.0".to_string()),
        1 => Just("-1.0".to_string()),
        1 => Just("1e300".to_string()),
        1 => Just("1e-300".to_string()),
        1 => Just("nan".to_string()),
        1 => Just("inf".to_string()),
        1 => Just("\"x\"".to_string()),
    ]
}

/// A count that is usually small and sometimes absurd.
fn count() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => (1usize..40).prop_map(|n| n.to_string()),
        1 => Just("0".to_string()),
        1 => Just("1000000000".to_string()),
        1 => Just("\"10\"".to_string()),
    ]
}

/// A `d x d` matrix: usually SPD (diagonal-dominant), sometimes anything.
fn matrix(d: usize) -> impl Strategy<Value = String> {
    prop_oneof![
        4 => (0.5f64..50.0).prop_map(move |x| {
            let rows: Vec<String> = (0..d)
                .map(|i| {
                    let r: Vec<String> = (0..d)
                        .map(|j| if i == j { format!("{x:.3}") } else { format!("{:.3}", 0.1 * x / d as f64) })
                        .collect();
                    format!("[{}]", r.join(", "))
                })
                .collect();
            format!("[{}]", rows.join(", "))
        }),
        1 => proptest::collection::vec(number(), d * d).prop_map(move |v| {
            let rows: Vec<String> = v.chunks(d).map(|c| format!("[{}]", c.join(", "))).collect();
            format!("[{}]", rows.join(", "))
        }),
        1 => number(),
    ]
}

/// A weight: a law, a file (written by [`write_files`]), an operator, or garbage.
fn weight() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => (count(), count()).prop_map(|(r, c)| format!("{{ law = \"gaussian\", rows = {r}, cols = {c} }}")),
        2 => Just("\"W.npy\"".to_string()),
        1 => Just("\"W.csv\"".to_string()),
        1 => Just("\"garbage.npy\"".to_string()),
        1 => Just("\"missing.npy\"".to_string()),
        1 => (count(), count()).prop_map(|(r, c)| format!("{{ operator = \"dct\", rows = {r}, cols = {c} }}")),
        1 => Just("[[1.0, 2.0], [3.0]]".to_string()),
    ]
}

/// A whole configuration file.
fn configuration() -> impl Strategy<Value = String> {
    (1usize..4, 1usize..6, count(), prop::bool::ANY)
        .prop_flat_map(|(d, iterations, rows, teacher)| {
            let (r1, r2, r3) = (rows.clone(), rows.clone(), rows);
            let prior = prop_oneof![
                matrix(d).prop_map(move |c| format!("kind = \"gaussian\"\nrows = {r1}\ncovariance = {c}")),
                (number(), matrix(d)).prop_map(move |(s, c)| format!("kind = \"row-sparse\"\nrows = {r2}\nsparsity = {s}\ncovariance = {c}")),
                number().prop_map(move |l| format!("kind = \"group-lasso\"\nrows = {r3}\nlambda = {l}")),
            ];
            let layers = prop_oneof![
                (weight(), prop::option::of(matrix(d)), prop::option::of(number()))
                    .prop_map(|(w, nz, b)| {
                        let mut s = format!("[[layer]]\nkind = \"linear\"\nweight = {w}\n");
                        if let Some(nz) = nz { s += &format!("noise_precision = {nz}\n"); }
                        if let Some(b) = b { s += &format!("bias = [{b}]\n"); }
                        s
                    }),
                (weight(), prop_oneof![Just("relu"), Just("identity")], matrix(d), weight())
                    .prop_map(|(w1, act, nz, w2)| format!(
                        "[[layer]]\nkind = \"linear\"\nweight = {w1}\n[[layer]]\nkind = \"{act}\"\nnoise_precision = {nz}\n[[layer]]\nkind = \"linear\"\nweight = {w2}\n"
                    )),
            ];
            let output = prop_oneof![
                3 => matrix(d).prop_map(move |n| {
                    let y = if teacher { String::new() } else { "y = \"Y.npy\"\n".into() };
                    format!("kind = \"awgn\"\n{y}noise_precision = {n}")
                }),
                1 => number().prop_map(move |v| {
                    let y = if teacher { String::new() } else { "y = \"y.csv\"\n".into() };
                    format!("kind = \"mixed-regression\"\n{y}noise_variance = {v}")
                }),
            ];
            let policy = prop_oneof![
                3 => Just(String::new()),
                1 => (number(), number()).prop_map(|(a, b)| format!("[policy]\nlam_min = {a}\ndamp_precision = {b}\n")),
            ];
            (Just(d), Just(iterations), prior, layers, output, policy)
        })
        .prop_map(|(d, iterations, prior, layers, output, policy)| {
            format!("d = {d}\niterations = {iterations}\n[se]\nn_mc = 200\n{policy}[prior]\n{prior}\n{layers}[output]\n{output}\n")
        })
}

/// Random bytes, a corrupted `.npy`, or a valid small one, for the files a configuration names.
fn files() -> impl Strategy<Value = Vec<(String, Vec<u8>)>> {
    let npy = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..200),
        (
            1usize..30,
            1usize..30,
            proptest::collection::vec(-3.0f64..3.0, 900)
        )
            .prop_map(|(r, c, v)| {
                let m = faer::Mat::from_fn(r, c, |i, j| v[i * 30 + j]);
                let p =
                    std::env::temp_dir().join(format!("mlmatvamp-fuzz-npy-{}", std::process::id()));
                mlmatvamp::io::write_npy(&p, m.as_ref()).unwrap();
                let mut bytes = std::fs::read(&p).unwrap();
                let _ = std::fs::remove_file(&p);
                if r % 3 == 0 {
                    bytes.truncate(bytes.len() / 2); // truncated
                }
                bytes
            }),
    ];
    let csv = prop_oneof![
        "[0-9,;.\\-\\n eE]{0,200}".prop_map(String::into_bytes),
        Just(b"1,2\n3\n".to_vec()),
    ];
    (npy.clone(), csv.clone(), npy, csv).prop_map(|(w, wc, y, yc)| {
        vec![
            ("W.npy".to_string(), w),
            ("W.csv".to_string(), wc),
            ("Y.npy".to_string(), y),
            ("y.csv".to_string(), yc),
            (
                "garbage.npy".to_string(),
                b"\x93NUMPY\x01\x00\xff\xff{'descr".to_vec(),
            ),
        ]
    })
}

fn scratch() -> PathBuf {
    let d = std::env::temp_dir().join(format!("mlmatvamp-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Runs one case: `run` (build and solve) and `se` (build and run). A panic, or a success with
/// a non-finite estimate, fails the case; errors are fine.
fn check(dir: &Path, text: &str, files: &[(String, Vec<u8>)]) -> Result<(), TestCaseError> {
    for (name, bytes) in files {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
    if std::env::var_os("FUZZ_TRACE").is_some() {
        eprintln!("----- case\n{text}");
    }
    let outcome = catch_unwind(AssertUnwindSafe(|| -> Result<(), String> {
        if let Ok(problem) = config::from_toml_str(text, dir, None) {
            if let Ok(sol) = problem.solve(&mut |_, _| mlmatvamp::solver::Control::Continue) {
                for (l, z) in sol.estimates.iter().enumerate() {
                    if !z.norm_max().is_finite() {
                        return Err(format!("run succeeded with a non-finite estimate of Z_{l}"));
                    }
                }
                for rec in &sol.history {
                    for v in &rec.variables {
                        if !v.predicted_mse.is_finite() {
                            return Err("run succeeded with a non-finite predicted MSE".into());
                        }
                    }
                }
            }
        }
        if let Ok(cfg) = config::RunConfig::parse(text, None) {
            if let Ok(model) = build_se_model(&cfg, dir, None, &SeOverrides::default()) {
                if let Ok((iters, _)) = model.run() {
                    for it in &iters {
                        for v in &it.variables {
                            if !v.se_mse.is_finite() {
                                return Err("se succeeded with a non-finite prediction".into());
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }));
    match outcome {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(TestCaseError::fail(format!("{e}\n{text}"))),
        Err(_) => Err(TestCaseError::fail(format!("panicked on\n{text}"))),
    }
}

fn fuzz(cases: u32) {
    let dir = scratch();
    // Panics are caught and reported as failures; keep their default messages out of the log.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        rng_seed: proptest::test_runner::RngSeed::Fixed(20261206),
        ..Config::default()
    });
    let result = runner.run(&(configuration(), files()), |(text, files)| {
        check(&dir, &text, &files)
    });
    std::panic::set_hook(hook);
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(e) = result {
        panic!("{e}");
    }
}

#[test]
fn random_configurations_never_panic_or_succeed_with_non_finite_results() {
    fuzz(400);
}

/// The soak: `FUZZ_CASES` (default 100 000) cases of the same generator.
#[test]
#[ignore]
fn soak() {
    let cases = std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let start = std::time::Instant::now();
    fuzz(cases);
    println!("{cases} cases in {:.1} s", start.elapsed().as_secs_f64());
}
