//! The two-layer output's Newton MAP in fixed-size `d x d` arithmetic (`d ≤ 8`, on the stack)
//! equals the generic dynamic-size code (issue 14): same estimates, covariance and diagnostics,
//! for several `d`, activations, Hessians and a badly conditioned message.

use faer::Mat;
use mlmatvamp::denoise::gaussian_rows;
use mlmatvamp::denoise::two_layer::{MapOptions, ReluMapSolver, MAX_FIXED_D};
use mlmatvamp::prelude::*;

fn to_dmat(m: &Mat<f64>) -> DMat {
    DMat::from_fn(m.nrows(), m.ncols(), |i, j| m[(i, j)])
}

/// A random SPD matrix with eigenvalues spread over `cond` (geometric), mean `mean`.
fn random_spd(d: usize, mean: f64, cond: f64, rng: &mut Rng) -> DMat {
    let q = to_dmat(&standard_normal(d, d, rng)).qr().q();
    let raw: Vec<f64> = (0..d)
        .map(|j| cond.powf(-(j as f64) / (d.max(2) - 1) as f64))
        .collect();
    let s = mean * d as f64 / raw.iter().sum::<f64>();
    let lam = DMat::from_diagonal(&nalgebra::DVector::from_iterator(
        d,
        raw.iter().map(|x| x * s),
    ));
    let m = &q * lam * q.transpose();
    (&m + m.transpose()) * 0.5
}

/// Rows `Z ~ N(0, I)`, `y = σ(Z)F_2 + noise` (SNR 10 dB), the message `R = Z + N(0, Rvar)` with
/// precision `Γ = Rvar^{-1}`.
fn problem(
    act: Activation,
    n: usize,
    d: usize,
    nout: usize,
    cond: f64,
    seed: u64,
) -> (Mat<f64>, DMat, f64, Message) {
    let mut rng = rng_from_seed(seed);
    let z = standard_normal(n, d, &mut rng);
    let f2 = to_dmat(&standard_normal(d, nout, &mut rng));
    let y0 = Mat::from_fn(n, nout, |i, o| {
        (0..d)
            .map(|j| act.eval(z[(i, j)]) * f2[(j, o)])
            .sum::<f64>()
    });
    let power = (0..nout)
        .flat_map(|o| (0..n).map(move |i| (i, o)))
        .map(|(i, o)| y0[(i, o)] * y0[(i, o)])
        .sum::<f64>()
        / (n * nout) as f64;
    let yvar = power * 0.1;
    let y = &y0 + &standard_normal(n, nout, &mut rng) * faer::Scale(yvar.sqrt());
    let rvar = Spd::new("Rvar", random_spd(d, 0.3, cond, &mut rng), Some(d)).unwrap();
    let r = &z + &gaussian_rows(n, rvar.cholesky_lower(), &mut rng);
    let gamma = Spd::from_symmetric("Γ", rvar.inverse()).unwrap();
    (
        y,
        f2,
        yvar,
        Message {
            mean: r,
            precision: gamma,
        },
    )
}

fn max_rel_diff(a: impl Iterator<Item = f64>, b: impl Iterator<Item = f64>) -> f64 {
    a.zip(b)
        .map(|(x, y)| (x - y).abs() / (1.0 + x.abs().max(y.abs())))
        .fold(0.0, f64::max)
}

#[test]
fn fixed_size_map_rows_equal_the_dynamic_code() {
    let estimators = [
        (
            "sigmoid, exact Hessian",
            Activation::Sigmoid,
            TwoLayerEstimator::map(HessianKind::Exact),
        ),
        (
            "sigmoid, Gauss-Newton Hessian",
            Activation::Sigmoid,
            TwoLayerEstimator::map(HessianKind::GaussNewton),
        ),
        (
            "relu, Newton MAP",
            Activation::Relu,
            TwoLayerEstimator::map_newton(HessianKind::GaussNewton),
        ),
    ];
    let mut checked = 0;
    for (name, act, est) in estimators {
        for d in [1usize, 2, 3, 4, 5, 7, 8, 9] {
            for (nout, cond) in [(1usize, 10.0), (3, 1e4)] {
                let seed = 1000 + 17 * d as u64 + nout as u64;
                let (y, f2, yvar, msg) = problem(act, 300, d, nout, cond, seed);
                let fixed = TwoLayerOutput::new(y.clone(), f2.clone(), act, yvar, est).unwrap();
                let dynamic = fixed.clone().with_fixed_size_kernels(false);
                let (bf, df) = fixed.denoise_with_diagnostics(&msg).unwrap();
                let (bd, dd) = dynamic.denoise_with_diagnostics(&msg).unwrap();
                let case = format!("{name}, d = {d}, nout = {nout}, cond {cond:e}");
                let mean_diff = max_rel_diff(
                    (0..d)
                        .flat_map(|j| (0..300).map(move |i| (i, j)))
                        .map(|(i, j)| bf.mean[(i, j)]),
                    (0..d)
                        .flat_map(|j| (0..300).map(move |i| (i, j)))
                        .map(|(i, j)| bd.mean[(i, j)]),
                );
                let cov_diff = max_rel_diff(bf.cov.iter().copied(), bd.cov.iter().copied());
                assert!(
                    mean_diff <= 1e-12,
                    "{case}: estimates differ by {mean_diff:e}"
                );
                assert!(
                    cov_diff <= 1e-12,
                    "{case}: covariances differ by {cov_diff:e}"
                );
                assert_eq!(df, dd, "{case}: diagnostics differ");
                assert!(df.newton_max_iterations > 0, "{case}: no Newton step taken");
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 3 * 8 * 2);
    const { assert!(MAX_FIXED_D >= 8) };
}

/// The exact relu MAP (orthant enumeration) and MMSE do not use the fixed-size Newton path:
/// the switch changes nothing there.
#[test]
fn the_switch_leaves_other_estimators_unchanged() {
    let (y, f2, yvar, msg) = problem(Activation::Relu, 100, 3, 1, 10.0, 5);
    let est = TwoLayerEstimator::Map(MapOptions {
        relu_solver: ReluMapSolver::Orthants,
        ..Default::default()
    });
    let a = TwoLayerOutput::new(y, f2, Activation::Relu, yvar, est).unwrap();
    let b = a.clone().with_fixed_size_kernels(false);
    let (ba, _) = a.denoise_with_diagnostics(&msg).unwrap();
    let (bb, _) = b.denoise_with_diagnostics(&msg).unwrap();
    assert_eq!(ba.cov, bb.cov);
}
