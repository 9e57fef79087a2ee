//! Our half of `scripts/side_by_side.sh` (`docs/side-by-side.md`): the workloads of issue 14 with
//! the same sizes and iteration counts as the reference codes, timed inside the process (problem
//! generation and SVDs excluded, as in the Python helper), one JSON line per call on stdout.
//!
//! ```text
//! cargo run --release -p mlmatvamp-cli --example side_by_side -- two-layer NTR [REPS] [warm]
//! cargo run --release -p mlmatvamp-cli --example side_by_side -- vamp-sparse NZ NY [ITERS] [REPS]
//! cargo run --release -p mlmatvamp-cli --example side_by_side -- mlvamp-probit NZ0 NZ1 [ITERS] [REPS]
//! cargo run --release -p mlmatvamp-cli --example side_by_side -- cluster SKETCH_DIR [REPS]
//! ```
//!
//! * `two-layer`: one Figure-2 trial (`n_in = 100`, `d = 4`, sigmoid, SNR 10 dB, 20 iterations,
//!   MAP output, reference start), seconds per trial (the held-out test MSE every iteration, as
//!   the authors' script computes its test metric every iteration; the analytic test error of
//!   eq. (17) once, after the last iteration). The network, i.e. the thin SVD of `X_tr`, is
//!   built before the timing, as the authors' script factors `X_tr` when it constructs its
//!   input estimator, before the timed `solve`; `seconds_per_trial_with_svd` includes it.
//!   With `warm`, the output's Newton rows start at the previous iteration's estimate
//!   (`MapOptions::warm_start`), as the authors' `NeuralOutEst` warm-starts its gradient descent.
//! * `vamp-sparse`: vampyre's sparse linear inverse (`test_vamp_sparse.py`): Bernoulli–Gaussian
//!   `z` (ρ = 0.1, unit variance), Gaussian `A` (`NY x NZ`, variance `1/NZ`), AWGN at 30 dB,
//!   `d = 1`; seconds per iteration, and the marginal seconds of an iteration (below).
//! * `mlvamp-probit`: vampyre's ML-VAMP probit test (`test_mlvamp_probit.py`, one column):
//!   Bernoulli–Gaussian `z_0` (ρ = 0.1, power 2), `z_1 = A z_0 + b + w` (30 dB), `y = sign(z_1)`;
//!   here the probit output with `σ² = 1e-10 · mean(z_1²)` (vampyre's noiseless threshold is the
//!   limit `σ → 0`); seconds per iteration, and the marginal seconds of an iteration.
//!
//! The marginal time of an iteration is `(T(ITERS) − T(1)) / (ITERS − 1)`, `T(k)` the time of a
//! run of `k` iterations on the same data, each on a copy of the layer with empty product caches
//! (one-time work cancels: our `U_rᵀ Y` and final `U_r C`; vampyre's initial estimate, while its
//! `Uᵀy` is computed when its estimator is built, outside its timed `solve`).
//!
//! * `cluster`: `mlmatvamp cluster`'s decoding (`apps::cluster::recover`, default settings, `K`
//!   from the sketch) of a sketch directory, repeated in one process; the minimum and median
//!   seconds per decoding (`scripts/clompr_benchmark.py` writes the sketches it compares with
//!   CL-OMPR). Repetitions in one process show small changes in the decoding's CPU time that
//!   separate runs of the tool, each paying its start-up, hide in the machine's noise.
//!
//! Every report also gives the final normalized MSE of `Ẑ_0` (dB), to show that the work done
//! is the same. The thread count is rayon's (`RAYON_NUM_THREADS`).

use faer::Mat;
use mlmatvamp::apps::two_layer::{Init, TwoLayerConfig};
use mlmatvamp::apps::two_layer_vamp::{network, VampConfig};
use mlmatvamp::denoise::{MapOptions, ProbitOutput};
use mlmatvamp::prelude::*;
use rand::RngExt;
use serde_json::json;
use std::sync::Arc;
use std::time::Instant;

fn arg<T: std::str::FromStr>(args: &[String], i: usize, default: T) -> T {
    args.get(i).and_then(|s| s.parse().ok()).unwrap_or(default)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// A Bernoulli–Gaussian vector (`n x 1`): `N(0, var)` with probability `rho`, else 0.
fn bernoulli_gaussian(n: usize, rho: f64, var: f64, rng: &mut Rng) -> Mat<f64> {
    let g = standard_normal(n, 1, rng);
    Mat::from_fn(n, 1, |i, _| {
        let u: f64 = rng.random();
        if u < rho {
            var.sqrt() * g[(i, 0)]
        } else {
            0.0
        }
    })
}

fn nmse_db(est: faer::MatRef<'_, f64>, truth: faer::MatRef<'_, f64>) -> f64 {
    10.0 * ((est - truth).norm_l2().powi(2) / truth.norm_l2().powi(2)).log10()
}

fn two_layer(args: &[String]) -> Result<serde_json::Value> {
    let ntr: usize = arg(args, 2, 1000);
    let reps: usize = arg(args, 3, 5);
    let warm = args.get(4).map(String::as_str) == Some("warm");
    let cfg = TwoLayerConfig {
        ntr,
        ..Default::default()
    };
    // The authors' script computes its test metric (the held-out test MSE) every iteration and
    // records nothing else; so does ours here (`run_network_lean`: the same iterations and
    // estimates as `run_network`, without the analytic test error of eq. (17), the parameter
    // error and the engine's record, whose time is reported too as `seconds_per_trial_full`).
    let vamp = VampConfig {
        analytic_every_iteration: false,
        estimator: TwoLayerEstimator::Map(MapOptions {
            warm_start: warm,
            ..Default::default()
        }),
        ..VampConfig::default()
    };
    let mut times = Vec::new();
    let mut with_svd = Vec::new();
    let mut full = Vec::new();
    let mut mse = Vec::new();
    for rep in 0..reps {
        let trial = cfg.sample(1000 + rep as u64)?;
        let init = Init::reference().draw(&trial, &mut rng_from_seed(2000 + rep as u64))?;
        // As the authors' code (which factors X_tr when it builds its input estimator, before
        // the timed `solve`), the network (the thin SVD of X_tr) is built outside the timing;
        // the time with it is reported too.
        let t0 = Instant::now();
        let net = network(&trial, vamp.estimator)?;
        let t = Instant::now();
        let run = vamp.run_network_lean(&net, &trial, &init)?;
        times.push(t.elapsed().as_secs_f64());
        with_svd.push(t0.elapsed().as_secs_f64());
        mse.push(run.final_test_mse());
        let t = Instant::now();
        let whole = vamp.run_network(&net, &trial, &init)?;
        full.push(t.elapsed().as_secs_f64());
        assert_eq!(
            whole.final_test_mse().to_bits(),
            run.final_test_mse().to_bits()
        );
    }
    Ok(
        json!({"workload": "two-layer", "ntr": ntr, "reps": reps, "warm_start": warm,
        "seconds_per_trial": median(times), "seconds_per_trial_with_svd": median(with_svd),
        "seconds_per_trial_full": median(full), "final_test_mse_median": median(mse)}),
    )
}

/// A run of `iters` iterations and one of a single iteration, each on a network from `net`
/// (fresh copies of the layers, so with empty product caches): the first run's seconds, the
/// marginal seconds of an iteration `(T(iters) − T(1)) / (iters − 1)`, the first run's solution.
fn timed_with_marginal(
    net: impl Fn() -> Result<Network>,
    iters: usize,
) -> Result<(f64, f64, Solution)> {
    if iters < 2 {
        return Err(Error::invalid(
            "ITERS",
            "must be at least 2 (the marginal time of an iteration needs two runs)",
        ));
    }
    let time = |k: usize| -> Result<(f64, Solution)> {
        let net = net()?;
        let solver = Solver::new(SolverConfig {
            iterations: k,
            ..Default::default()
        })?;
        let t = Instant::now();
        let sol = solver.run(&net, None)?;
        Ok((t.elapsed().as_secs_f64(), sol))
    };
    let (t_one, _) = time(1)?;
    let (t_all, sol) = time(iters)?;
    Ok((t_all, (t_all - t_one) / (iters - 1) as f64, sol))
}

fn vamp_sparse(args: &[String]) -> Result<serde_json::Value> {
    let nz: usize = arg(args, 2, 4096);
    let ny: usize = arg(args, 3, 2048);
    let iters: usize = arg(args, 4, 10);
    let reps: usize = arg(args, 5, 3);
    let mut rng = rng_from_seed(7);
    let a = standard_normal(ny, nz, &mut rng) * faer::Scale(1.0 / (nz as f64).sqrt());
    let layer = Arc::new(LinearLayer::new(a.as_ref(), None, None, 1)?);
    let prior = Arc::new(BernoulliGaussianPrior::new(
        0.1,
        vec![0.0],
        DMat::identity(1, 1),
    )?);
    let mut per_it = Vec::new();
    let mut marginal = Vec::new();
    let mut last_db = f64::NAN;
    for rep in 0..reps {
        let mut rng = rng_from_seed(100 + rep as u64);
        let z = bernoulli_gaussian(nz, 0.1, 1.0, &mut rng);
        let y0 = &a * &z;
        let wvar = 1e-3 * y0.norm_l2().powi(2) / ny as f64;
        let y = &y0 + standard_normal(ny, 1, &mut rng) * faer::Scale(wvar.sqrt());
        let out = Arc::new(AwgnOutput::new(
            y,
            Spd::new(
                "noise precision",
                DMat::from_element(1, 1, 1.0 / wvar),
                Some(1),
            )?,
            None,
        )?);
        let (t, dt, sol) = timed_with_marginal(
            || {
                let layer = Arc::new((*layer).clone());
                Network::new(prior.clone(), nz, vec![layer], out.clone())
            },
            iters,
        )?;
        per_it.push(t / iters as f64);
        marginal.push(dt);
        last_db = nmse_db(sol.estimates[0].as_ref(), z.as_ref());
    }
    Ok(
        json!({"workload": "vamp-sparse", "nz": nz, "ny": ny, "iterations": iters, "reps": reps,
        "seconds_per_iteration": median(per_it),
        "seconds_per_marginal_iteration": median(marginal), "final_nmse_db": last_db}),
    )
}

fn mlvamp_probit(args: &[String]) -> Result<serde_json::Value> {
    let nz0: usize = arg(args, 2, 512);
    let nz1: usize = arg(args, 3, 4096);
    let iters: usize = arg(args, 4, 10);
    let reps: usize = arg(args, 5, 3);
    let (rho, zvar0) = (0.1, 20.0);
    let mut rng = rng_from_seed(11);
    let a = standard_normal(nz1, nz0, &mut rng) * faer::Scale(1.0 / (nz0 as f64).sqrt());
    let b = standard_normal(nz1, 1, &mut rng);
    let prior = Arc::new(BernoulliGaussianPrior::new(
        rho,
        vec![0.0],
        DMat::from_element(1, 1, zvar0),
    )?);
    let mut per_it = Vec::new();
    let mut marginal = Vec::new();
    let mut last_db = f64::NAN;
    for rep in 0..reps {
        let mut rng = rng_from_seed(300 + rep as u64);
        let z0 = bernoulli_gaussian(nz0, rho, zvar0, &mut rng);
        let az = &a * &z0 + &b;
        let wvar = 1e-3 * az.norm_l2().powi(2) / nz1 as f64;
        let z1 = &az + standard_normal(nz1, 1, &mut rng) * faer::Scale(wvar.sqrt());
        let y = Mat::from_fn(nz1, 1, |i, _| if z1[(i, 0)] > 0.0 { 1.0 } else { -1.0 });
        let sigma2 = 1e-10 * z1.norm_l2().powi(2) / nz1 as f64;
        let layer = Arc::new(LinearLayer::new(
            a.as_ref(),
            Some(b.clone()),
            Some(Spd::new(
                "noise precision",
                DMat::from_element(1, 1, 1.0 / wvar),
                Some(1),
            )?),
            1,
        )?);
        let out = Arc::new(ProbitOutput::new(y, sigma2, Estimator::Mmse)?);
        let (t, dt, sol) = timed_with_marginal(
            || {
                let layer = Arc::new((*layer).clone());
                Network::new(prior.clone(), nz0, vec![layer], out.clone())
            },
            iters,
        )?;
        per_it.push(t / iters as f64);
        marginal.push(dt);
        // vampyre's debiased NMSE: 1 − <ẑ, z>² / (|ẑ|² |z|²).
        let zh = &sol.estimates[0];
        let dot: f64 = (0..nz0).map(|i| zh[(i, 0)] * z0[(i, 0)]).sum();
        last_db = 10.0 * (1.0 - dot * dot / (zh.norm_l2().powi(2) * z0.norm_l2().powi(2))).log10();
    }
    Ok(
        json!({"workload": "mlvamp-probit", "nz0": nz0, "nz1": nz1, "iterations": iters,
        "reps": reps, "seconds_per_iteration": median(per_it),
        "seconds_per_marginal_iteration": median(marginal), "final_debiased_nmse_db": last_db}),
    )
}

fn cluster(args: &[String]) -> Result<serde_json::Value> {
    use mlmatvamp::apps::cluster::{recover, ClusterConfig};
    let dir = std::path::PathBuf::from(args.get(2).map(String::as_str).unwrap_or("."));
    let reps: usize = arg(args, 3, 10);
    let d = mlmatvamp::experiments::sketch_files::read_sketch_dir(&dir)?;
    let config = ClusterConfig {
        k: d.meta.k,
        ..Default::default()
    };
    let mut times = Vec::new();
    let mut residual = f64::NAN;
    for _ in 0..reps.max(1) {
        let t = Instant::now();
        let res = recover(&d.sketch, &d.frequencies, &config)?;
        times.push(t.elapsed().as_secs_f64());
        residual = res.residual;
    }
    let min = times.iter().copied().fold(f64::INFINITY, f64::min);
    Ok(
        json!({"workload": "cluster", "sketch": dir, "reps": reps.max(1),
        "seconds_min": min, "seconds_median": median(times), "residual": residual}),
    )
}

fn main() {
    // faer calls made here (the problem's `A z`) use the library's fixed task width, so that a
    // draw does not depend on the thread count.
    mlmatvamp::use_deterministic_parallelism();
    let args: Vec<String> = std::env::args().collect();
    let res = match args.get(1).map(String::as_str) {
        Some("two-layer") => two_layer(&args),
        Some("vamp-sparse") => vamp_sparse(&args),
        Some("mlvamp-probit") => mlvamp_probit(&args),
        Some("cluster") => cluster(&args),
        _ => {
            eprintln!("usage: side_by_side two-layer NTR [REPS] | vamp-sparse NZ NY [ITERS] [REPS] | mlvamp-probit NZ0 NZ1 [ITERS] [REPS] | cluster SKETCH_DIR [REPS]");
            std::process::exit(2);
        }
    };
    match res {
        Ok(v) => println!("{v}"),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}

/// The command-line tool's allocator (mimalloc), so that the times are the tool's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
