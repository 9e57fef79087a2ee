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
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

/// A positive number that is usually sensible and sometimes hostile (about one in six).
fn number() -> impl Strategy<Value = String> {
    prop_oneof![
        24 => (0.05f64..3.0).prop_map(|x| format!("{x:.3}")),
        6 => (0.01f64..200.0).prop_map(|x| format!("{x:.3}")),
        1 => Just("0.0".to_string()),
        1 => Just("-1.0".to_string()),
        1 => Just("1e300".to_string()),
        1 => Just("1e-300".to_string()),
        1 => Just("nan".to_string()),
        1 => Just("inf".to_string()),
        1 => Just("\"x\"".to_string()),
    ]
}

/// A probability, usually in (0, 1].
fn fraction() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => (0.02f64..1.0).prop_map(|x| format!("{x:.3}")),
        1 => number(),
    ]
}

/// A count: `n` (coherent with the rest of the network) or, rarely, something absurd.
fn count(n: usize) -> impl Strategy<Value = String> {
    prop_oneof![
        24 => Just(n.to_string()),
        2 => (1usize..40).prop_map(|n| n.to_string()),
        1 => Just("0".to_string()),
        1 => Just("1000000000".to_string()),
        1 => Just("\"10\"".to_string()),
    ]
}

/// A `d x d` matrix: usually SPD (diagonal-dominant), sometimes anything.
fn matrix(d: usize) -> impl Strategy<Value = String> {
    prop_oneof![
        20 => (0.5f64..50.0).prop_map(move |x| {
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

/// A weight `rows x cols`: usually a law of that shape, else a file (written by [`files`]; its
/// shape is random), an operator, a scaled or zero law, or garbage.
fn weight(rows: usize, cols: usize) -> impl Strategy<Value = String> {
    prop_oneof![
        12 => (count(rows), count(cols)).prop_map(|(r, c)| format!("{{ law = \"gaussian\", rows = {r}, cols = {c} }}")),
        2 => (count(rows), count(cols), number()).prop_map(|(r, c, v)| format!("{{ law = \"gaussian\", rows = {r}, cols = {c}, variance = {v} }}")),
        1 => Just("\"W.npy\"".to_string()),
        1 => Just("\"W.csv\"".to_string()),
        1 => Just("\"garbage.npy\"".to_string()),
        1 => Just("\"missing.npy\"".to_string()),
        2 => (count(rows.min(cols)), count(cols)).prop_map(|(r, c)| format!("{{ operator = \"dct\", rows = {r}, cols = {c} }}")),
        1 => Just("[[1.0, 2.0], [3.0]]".to_string()),
    ]
}

/// A whole configuration file: a coherent network (`n_0 … n_3`, `d`) whose fields are, one by
/// one and rarely, replaced by hostile values, so that a good share of the cases reach the
/// solver and the SE and the rest exercise the named errors.
fn configuration() -> impl Strategy<Value = String> {
    (1usize..4, 1usize..6, proptest::collection::vec(2usize..40, 4), prop::bool::ANY)
        .prop_flat_map(|(d, iterations, n, teacher)| {
            let prior = prop_oneof![
                (count(n[0]), matrix(d)).prop_map(|(r, c)| format!("kind = \"gaussian\"\nrows = {r}\ncovariance = {c}")),
                (count(n[0]), fraction(), matrix(d)).prop_map(|(r, s, c)| format!("kind = \"row-sparse\"\nrows = {r}\nsparsity = {s}\ncovariance = {c}")),
                (count(n[0]), number()).prop_map(|(r, l)| format!("kind = \"group-lasso\"\nrows = {r}\nlambda = {l}")),
            ];
            let (n0, n1, n2) = (n[0], n[1], n[2]);
            let layers = prop_oneof![
                (weight(n1, n0), prop::option::of(matrix(d)), prop::option::of(number()))
                    .prop_map(|(w, nz, b)| {
                        let mut s = format!("[[layer]]\nkind = \"linear\"\nweight = {w}\n");
                        if let Some(nz) = nz { s += &format!("noise_precision = {nz}\n"); }
                        if let Some(b) = b { s += &format!("bias = [{b}]\n"); }
                        s
                    }),
                (weight(n1, n0), prop_oneof![Just("relu"), Just("identity")], matrix(d), weight(n2, n1))
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
                6 => Just(String::new()),
                1 => (number(), fraction()).prop_map(|(a, b)| format!("[policy]\nlam_min = {a}\ndamp_precision = {b}\n")),
                1 => prop_oneof![Just("damp"), Just("stop")].prop_map(|o| format!("[policy]\non_divergence = \"{o}\"\n")),
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
                let p = std::env::temp_dir().join(format!(
                    "mlmatvamp-fuzz-npy-{}-{:?}",
                    std::process::id(),
                    std::thread::current().id()
                ));
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
    // One directory per call: the tests of this file run in parallel in one process.
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let k = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let d = std::env::temp_dir().join(format!("mlmatvamp-fuzz-{}-{k}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// How each case ended, counted for the soak's report (`FUZZ_REPORT`): per front door (`run`,
/// `se`), a success or the kind of the named error.
#[derive(Default)]
struct Outcomes {
    counts: BTreeMap<String, u64>,
    cases: u64,
    /// Every `every` cases, the counts so far (the soak's figure).
    trace: Vec<(u64, BTreeMap<String, u64>)>,
    every: u64,
}

impl Outcomes {
    fn add<T>(&mut self, door: &str, result: &Result<T, mlmatvamp::Error>) {
        let what = match result {
            Ok(_) => "success".to_string(),
            Err(e) => format!("{} error", kind(e)),
        };
        *self.counts.entry(format!("{door}: {what}")).or_default() += 1;
    }
}

fn kind(e: &mlmatvamp::Error) -> &'static str {
    use mlmatvamp::Error::*;
    match e {
        Shape { .. } => "shape",
        NonFinite { .. } => "non-finite",
        NotSymmetric { .. } | NotPositiveDefinite { .. } => "not positive definite",
        Diverged { .. } => "divergence",
        Invalid { .. } => "invalid option",
        Config { .. } => "configuration",
        Io { .. } | Data { .. } => "file",
        _ => "other",
    }
}

/// Runs one case: `run` (build and solve) and `se` (build and run). A panic, or a success with
/// a non-finite estimate, fails the case; errors are fine.
fn check(
    dir: &Path,
    text: &str,
    files: &[(String, Vec<u8>)],
    outcomes: &RefCell<Outcomes>,
) -> Result<(), TestCaseError> {
    for (name, bytes) in files {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
    if std::env::var_os("FUZZ_TRACE").is_some() {
        eprintln!("----- case\n{text}");
    }
    let outcome = catch_unwind(AssertUnwindSafe(|| -> Result<(), String> {
        let mut out = outcomes.borrow_mut();
        out.cases += 1;
        if out.every > 0 && out.cases.is_multiple_of(out.every) {
            let snapshot = (out.cases, out.counts.clone());
            out.trace.push(snapshot);
        }
        let run = config::from_toml_str(text, dir, None)
            .and_then(|problem| problem.solve(&mut |_, _| mlmatvamp::solver::Control::Continue));
        out.add("run", &run);
        if let (Some(_), Err(e)) = (std::env::var_os("FUZZ_TRACE"), &run) {
            eprintln!("run: {e}");
        }
        if let Ok(sol) = run {
            {
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
        let se = config::RunConfig::parse(text, None)
            .and_then(|cfg| build_se_model(&cfg, dir, None, &SeOverrides::default()))
            .and_then(|model| model.run());
        out.add("se", &se);
        {
            {
                if let Ok((iters, _)) = se {
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

/// Runs `cases` cases on a thread with a large stack (proptest's nested strategy types need more
/// than a test thread's default 2 MB to build).
fn fuzz(cases: u32) -> Outcomes {
    std::thread::Builder::new()
        .stack_size(256 << 20)
        .spawn(move || fuzz_here(cases))
        .unwrap()
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e))
}

fn fuzz_here(cases: u32) -> Outcomes {
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
    let outcomes = RefCell::new(Outcomes {
        every: (cases as u64 / 100).max(1),
        ..Outcomes::default()
    });
    let result = runner.run(&(configuration(), files()), |(text, files)| {
        check(&dir, &text, &files, &outcomes)
    });
    std::panic::set_hook(hook);
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(e) = result {
        panic!("{e}");
    }
    outcomes.into_inner()
}

#[test]
fn random_configurations_never_panic_or_succeed_with_non_finite_results() {
    let outcomes = fuzz(400);
    // The generator reaches both front doors' successes and their named errors.
    for door in ["run", "se"] {
        assert!(outcomes
            .counts
            .get(&format!("{door}: success"))
            .is_some_and(|&n| n > 0));
        assert!(outcomes
            .counts
            .iter()
            .any(|(k, &n)| k.starts_with(door) && k.ends_with(" error") && n > 0));
    }
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
    let outcomes = fuzz(cases);
    let seconds = start.elapsed().as_secs_f64();
    println!("{cases} cases in {seconds:.1} s");
    for (what, n) in &outcomes.counts {
        println!("  {what}: {n}");
    }
    // The report that docs/testing.md's figure is drawn from (a failing case panics above, so
    // a written report always has zero panics and zero non-finite successes).
    if let Some(path) = std::env::var_os("FUZZ_REPORT") {
        let report = serde_json::json!({
            "cases": outcomes.cases,
            "seconds": seconds,
            "panics": 0,
            "non_finite_successes": 0,
            "outcomes": outcomes.counts,
            "trace": outcomes.trace.iter().map(|(n, c)| serde_json::json!({"cases": n, "counts": c})).collect::<Vec<_>>(),
        });
        std::fs::write(path, serde_json::to_string_pretty(&report).unwrap()).unwrap();
    }
}
