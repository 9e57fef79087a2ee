//! Never a silent wrong answer (`docs/algorithm.md`, divergence and degenerate problems):
//! degenerate and badly scaled weights give the right answer, a run that blows up is detected
//! in the iteration it happens and either rolled back with stronger damping or stopped with a
//! named error, and sizes a user can type are bounded before anything is allocated.

mod common;

use common::*;
use faer::{Mat, MatRef};
use mlmatvamp::message::OnDivergence;
use mlmatvamp::prelude::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

const D: usize = 3;

fn sigma0() -> DMat {
    DMat::from_row_slice(3, 3, &[1.0, 0.3, 0.0, 0.3, 1.0, 0.1, 0.0, 0.1, 0.8])
}

fn noise() -> Spd {
    Spd::new(
        "N",
        DMat::from_row_slice(3, 3, &[100.0, 20.0, 0.0, 20.0, 100.0, 0.0, 0.0, 0.0, 50.0]),
        Some(3),
    )
    .unwrap()
}

fn rel_mat(a: &Mat<f64>, b: &Mat<f64>) -> f64 {
    (a - b).norm_l2() / b.norm_l2().max(1e-300)
}

/// Gaussian prior (covariance `scale_z² Σ_0`) → linear `W` (+ bias) → AWGN.
fn network(w: &Mat<f64>, bias: Option<Mat<f64>>, scale_z: f64, y: Mat<f64>) -> Network {
    let prior = Arc::new(GaussianPrior::new(vec![0.0; D], sigma0() * (scale_z * scale_z)).unwrap());
    let layer = Arc::new(LinearLayer::new(w.as_ref(), bias, None, D).unwrap());
    let out = Arc::new(AwgnOutput::new(y, noise(), None).unwrap());
    Network::new(prior, w.ncols(), vec![layer], out).unwrap()
}

fn solve(net: &Network, iterations: usize) -> Solution {
    Solver::new(SolverConfig {
        iterations,
        tolerance: Some(1e-13),
        ..Default::default()
    })
    .unwrap()
    .run(net, None)
    .unwrap()
}

#[test]
fn a_zero_weight_with_a_bias_gives_the_bias_exactly() {
    let (n0, n1) = (40, 60);
    let mut rng = rng_from_seed(1);
    let bias = Mat::from_fn(n1, D, |i, j| [0.5, -0.25, 1.0][j] + 0.01 * i as f64);
    let y = &bias + &standard_normal(n1, D, &mut rng) * faer::Scale(0.1);
    let net = network(&Mat::zeros(n1, n0), Some(bias.clone()), 1.0, y);
    let sol = solve(&net, 20);
    // Z_1 = B exactly (the noiseless layer is certain of it), Z_0 is the prior.
    let dz1 = rel_mat(&sol.estimates[1], &bias);
    assert!(dz1 < 1e-10, "Z_1 differs from the bias by {dz1:e}");
    assert!(
        sol.estimates[0].norm_max() < 1e-10,
        "Z_0 is not the prior mean"
    );
    assert!(
        rel_err(&sol.covariances[0], &sigma0()) < 1e-10,
        "Z_0's covariance is not the prior's"
    );
    assert!(sol.covariances[1].norm() < 1e-10);
    assert!(sol.converged);
    for rec in &sol.history {
        for v in &rec.variables {
            assert!(v.predicted_mse.is_finite());
        }
    }
    // The state evolution of the same network: finite, and the prior's error for Z_0.
    let se = mlmatvamp::se::StateEvolution::new(mlmatvamp::se::SeConfig {
        iterations: 5,
        n_mc: 1000,
        ..Default::default()
    })
    .unwrap();
    let (iters, _) = se.run(&net, None).unwrap();
    for it in &iters {
        assert!(
            (it.variables[0].se_mse - sigma0().trace()).abs() < 1e-8,
            "{}",
            it.variables[0].se_mse
        );
        if it.iteration < 2 {
            continue; // the first forward messages face the initial placeholders
        }
        assert!(
            it.variables[1].se_mse.is_finite() && it.variables[1].se_mse < 1e-10,
            "{:?}",
            it.variables[1]
        );
    }
}

/// `W → cW` with the prior rescaled to match (`Z_0 → Z_0/c`), the same data, and the initial
/// backward precision of `Z_0` rescaled like its other precisions (by `c²`; `gamma_init` is an
/// absolute scale, see `docs/algorithm.md`): the estimates of `Z_0` scale by `1/c`, those of
/// `Z_1` do not change, the covariances of `Z_0` scale by `1/c²` — at `c = 10^{±150}`, where
/// every precision of `Z_0` is `10^{∓300}` times the unscaled one. Nothing in the message rule
/// (clipping, ridges, divergence checks) may depend on the absolute scale.
#[test]
fn rescaling_the_weight_by_ten_to_the_plus_minus_150_rescales_the_estimates() {
    let (n0, n1) = (50, 80);
    let mut rng = rng_from_seed(2);
    let w = gaussian_w(n1, n0, &mut rng);
    let bias = Mat::from_fn(n1, D, |_, j| [0.3, 0.0, -0.2][j]);
    let model = network(&w, Some(bias.clone()), 1.0, Mat::zeros(n1, D));
    let (_, data) = model.sample(&mut rng).unwrap();
    let y = data.output().observation().to_owned();
    let gamma0 = 1e-6;
    let run = |c: f64| {
        let net = network(
            &(&w * faer::Scale(c)),
            Some(bias.clone()),
            1.0 / c,
            y.clone(),
        );
        let mut state = State::new(&net, gamma0).unwrap();
        state
            .set_minus(0, Message::zero(n0, D, gamma0 * c * c).unwrap())
            .unwrap();
        Solver::new(SolverConfig {
            iterations: 200,
            tolerance: Some(1e-13),
            ..Default::default()
        })
        .unwrap()
        .run_from(&net, state, None, &mut |_, _| Control::Continue)
        .unwrap()
    };
    let base = run(1.0);
    for c in [1e-150, 1e150] {
        let scaled = run(c);
        let z0 = &scaled.estimates[0] * faer::Scale(c);
        let (d0, d1) = (
            rel_mat(&z0, &base.estimates[0]),
            rel_mat(&scaled.estimates[1], &base.estimates[1]),
        );
        let dc = rel_err(&(&scaled.covariances[0] * (c * c)), &base.covariances[0]);
        println!("c = {c:e}: Z_0 {d0:.2e}, Z_1 {d1:.2e}, covariance of Z_0 {dc:.2e}");
        assert!(
            d0 < 1e-9 && d1 < 1e-9 && dc < 1e-9,
            "c = {c:e}: {d0:e}, {d1:e}, {dc:e}"
        );
        assert!(scaled.converged);
        assert!(scaled.history.iter().all(|r| r.warnings.is_empty()));
    }
}

#[test]
fn a_rank_deficient_weight_leaves_the_null_space_to_the_prior() {
    // W = u vᵀ (rank one): the posterior of Z_0 along directions orthogonal to v is the prior's.
    // Checked against the exact Gaussian posterior of vec(Z_0) (d = 3, n_0 = 6, n_1 = 8).
    let (n0, n1) = (6, 8);
    let u: Vec<f64> = (0..n1).map(|i| 1.0 + 0.2 * i as f64).collect();
    let v: Vec<f64> = (0..n0)
        .map(|j| if j % 2 == 0 { 0.5 } else { -0.3 })
        .collect();
    let w = Mat::from_fn(n1, n0, |i, j| u[i] * v[j]);
    let mut rng = rng_from_seed(3);
    let y = standard_normal(n1, D, &mut rng);
    let net = network(&w, None, 1.0, y.clone());
    let sol = solve(&net, 300);
    // Exact: vec(Z_0) (row-major, n0 d) ~ N(0, I ⊗ Σ_0); y = (W ⊗ I) vec(Z_0) + noise, noise rows
    // with precision N.
    let nd = n0 * D;
    let prior_prec = kron_identity(n0, &sigma0().try_inverse().unwrap());
    let a = DMat::from_fn(n1 * D, nd, |r, c| {
        let (i, k) = (r / D, r % D);
        let (j, l) = (c / D, c % D);
        if k == l {
            w[(i, j)]
        } else {
            0.0
        }
    });
    let nn = kron_identity(n1, noise().matrix());
    let post = (&prior_prec + a.transpose() * &nn * &a)
        .try_inverse()
        .unwrap();
    let yv = nalgebra::DVector::from_fn(n1 * D, |r, _| y[(r / D, r % D)]);
    let mean = &post * a.transpose() * &nn * yv;
    let exact = Mat::from_fn(n0, D, |j, l| mean[j * D + l]);
    let d = rel_mat(&sol.estimates[0], &exact);
    assert!(
        d < 1e-8,
        "Z_0 differs from the exact posterior mean by {d:e}"
    );
    let avg = (0..n0).fold(DMat::zeros(D, D), |acc, j| {
        acc + post.view((j * D, j * D), (D, D)).into_owned()
    }) / n0 as f64;
    assert!(rel_err(&sol.covariances[0], &avg) < 1e-8);
}

fn kron_identity(n: usize, m: &DMat) -> DMat {
    let d = m.nrows();
    let mut out = DMat::zeros(n * d, n * d);
    for i in 0..n {
        out.view_mut((i * d, i * d), (d, d)).copy_from(m);
    }
    out
}

#[test]
fn a_precision_at_an_absolute_clip_bound_keeps_the_belief_mean() {
    // lam_max binds on the certain forward message of a zero weight: the message still carries
    // the belief's mean (the bias), so the output's estimate is the precision-weighted average
    // of the bias and y with the clipped precision, not a blow-up.
    let (n0, n1) = (10, 12);
    let bias = Mat::from_fn(n1, D, |_, j| [1.0, 2.0, -1.0][j]);
    let y = Mat::from_fn(n1, D, |i, j| bias[(i, j)] + 0.5);
    let net = network(&Mat::zeros(n1, n0), Some(bias.clone()), 1.0, y);
    let lam_max = 1e3;
    let sol = Solver::new(SolverConfig {
        iterations: 5,
        policy: MessagePolicy {
            lam_max,
            ..Default::default()
        },
        ..Default::default()
    })
    .unwrap()
    .run(&net, None)
    .unwrap();
    let plus = sol.state.plus(1).unwrap();
    assert!(
        rel_mat(&plus.mean, &bias) < 1e-12,
        "the clipped message lost the belief mean"
    );
    let g = plus.precision.matrix();
    assert!(
        (g - DMat::identity(D, D) * lam_max).norm() < 1e-9 * lam_max,
        "{g}"
    );
    // Ẑ_1 = (B Γ + y N)(Γ + N)^{-1} with Γ = lam_max I.
    let gam = DMat::identity(D, D) * lam_max;
    let post = (&gam + noise().matrix()).try_inverse().unwrap();
    let want = Mat::from_fn(n1, D, |i, j| {
        let b = nalgebra::RowDVector::from_fn(D, |_, k| bias[(i, k)]);
        let yy = nalgebra::RowDVector::from_fn(D, |_, k| bias[(i, k)] + 0.5);
        ((b * &gam + yy * noise().matrix()) * &post)[j]
    });
    assert!(rel_mat(&sol.estimates[1], &want) < 1e-10);
}

/// An AWGN-like output (noise precision 4 I) that misbehaves on some calls: `nan_from` returns a
/// NaN from that call on, `explode_at` scales one call's estimate by 1e12.
struct Faulty {
    y: Mat<f64>,
    calls: AtomicUsize,
    nan_from: usize,
    explode_at: usize,
}

impl Factor for Faulty {
    fn describe(&self) -> String {
        "faulty test output".into()
    }
    fn dim(&self) -> usize {
        D
    }
}
impl OutputShape for Faulty {
    fn rows(&self) -> usize {
        self.y.nrows()
    }
}
impl OutputDenoiser for Faulty {
    fn observation(&self) -> MatRef<'_, f64> {
        self.y.as_ref()
    }
    fn denoise(&self, plus: &Message) -> Result<Belief> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst);
        let g = plus.precision.matrix();
        let sigma = (g + DMat::identity(D, D) * 4.0).try_inverse().unwrap();
        let rg = to_dmat(&plus.mean) * g + to_dmat(&self.y) * 4.0;
        let mut mean = to_mat(&(rg * &sigma));
        if call >= self.nan_from {
            mean[(1, 1)] = f64::NAN;
        }
        if call == self.explode_at {
            mean = &mean * faer::Scale(1e12);
        }
        Ok(Belief::new(mean, sigma))
    }
}
impl OutputLaw for Faulty {
    fn resample(&self, _: MatRef<'_, f64>, _: &mut Rng) -> Result<Box<dyn OutputChannel>> {
        Err(Error::invalid("faulty test output", "cannot resample"))
    }
}
impl mlmatvamp::factor::MonteCarloSe for Faulty {}

fn faulty_net(nan_from: usize, explode_at: usize) -> (Network, Arc<Faulty>) {
    let mut rng = rng_from_seed(9);
    let w = gaussian_w(30, 20, &mut rng);
    let out = Arc::new(Faulty {
        y: standard_normal(30, D, &mut rng),
        calls: AtomicUsize::new(0),
        nan_from,
        explode_at,
    });
    let prior = Arc::new(GaussianPrior::new(vec![0.0; D], sigma0()).unwrap());
    let layer = Arc::new(LinearLayer::new(w.as_ref(), None, None, D).unwrap());
    (
        Network::new(prior, 20, vec![layer], out.clone()).unwrap(),
        out,
    )
}

fn run_with(net: &Network, on_divergence: OnDivergence) -> Result<Solution> {
    Solver::new(SolverConfig {
        iterations: 12,
        policy: MessagePolicy {
            on_divergence,
            ..Default::default()
        },
        ..Default::default()
    })
    .unwrap()
    .run(net, None)
}

#[test]
fn an_exploding_iteration_is_rolled_back_and_damped_or_stopped() {
    // Stop: a named error at the iteration where the estimate exploded.
    let (net, _) = faulty_net(usize::MAX, 4);
    let e = run_with(&net, OnDivergence::Stop).unwrap_err().to_string();
    println!("{e}");
    assert!(
        e.contains("diverged at iteration 4") && e.contains("exploded") && e.contains("Z_1"),
        "{e}"
    );
    // Damp (the default): rolled back, damped, and completed; the history says what happened.
    let (net, out) = faulty_net(usize::MAX, 4);
    let sol = run_with(&net, OnDivergence::Damp).unwrap();
    assert_eq!(sol.history.len(), 12);
    assert_eq!(
        out.calls.load(Ordering::SeqCst),
        13,
        "one retried iteration"
    );
    let notes: Vec<&String> = sol.history.iter().flat_map(|r| &r.warnings).collect();
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(
        notes[0].contains("rolled back") && notes[0].contains("damping"),
        "{}",
        notes[0]
    );
    assert!(sol
        .estimates
        .iter()
        .all(|z| z.norm_max().is_finite() && z.norm_max() < 1e3));
    // A persistent fault: retried `max_retries` times, then the error says so.
    let (net, out) = faulty_net(3, usize::MAX);
    let e = run_with(&net, OnDivergence::Damp).unwrap_err().to_string();
    assert!(
        e.contains("diverged at iteration 3") && e.contains("after 5 roll-backs"),
        "{e}"
    );
    assert_eq!(out.calls.load(Ordering::SeqCst), 3 + 6);
}

#[test]
fn absurd_sizes_are_refused_before_anything_runs() {
    let e = Solver::new(SolverConfig {
        iterations: 1_000_000_000,
        ..Default::default()
    })
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("iterations") && e.contains("at most 100000"),
        "{e}"
    );
    let e = mlmatvamp::se::StateEvolution::new(mlmatvamp::se::SeConfig {
        n_mc: 1_000_000_000_000,
        ..Default::default()
    })
    .unwrap_err()
    .to_string();
    assert!(e.contains("n_mc") && e.contains("50000000"), "{e}");
    let e = mlmatvamp::se::StateEvolution::new(mlmatvamp::se::SeConfig {
        n_mc: 0,
        ..Default::default()
    })
    .unwrap_err()
    .to_string();
    assert!(e.contains("between 100 and 50000000, got 0"), "{e}");
}
