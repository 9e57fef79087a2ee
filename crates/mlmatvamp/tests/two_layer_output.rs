//! The two-layer network output denoiser `y = σ(v)F_2 + ξ` (paper eq. 9, spec §4.4(a)):
//! covariance calibration (spec §8.2.6), exactness of the relu orthant MAP, quadrature accuracy
//! against a dense grid (spec §8.2.10), derivatives, closed forms, determinism, error paths.

use faer::Mat;
use mlmatvamp::denoise::gaussian_rows;
use mlmatvamp::denoise::newton::{self, NewtonOptions, NewtonWorkspace, RowObjective};
use mlmatvamp::denoise::quadrature::{self, Moments, PointSet};
use mlmatvamp::denoise::two_layer::{MapOptions, MmseOptions, TwoLayerDiagnostics};
use mlmatvamp::prelude::*;
use nalgebra::DMatrix;

fn to_dmat(m: &Mat<f64>) -> DMat {
    DMat::from_fn(m.nrows(), m.ncols(), |i, j| m[(i, j)])
}

/// A random non-diagonal SPD matrix with eigenvalues `s·0.5^j`, `j = 0..d`, scaled so that
/// their mean is `mean`.
fn random_spd(d: usize, mean: f64, rng: &mut Rng) -> DMat {
    let g = to_dmat(&standard_normal(d, d, rng));
    let q = g.qr().q();
    let raw: Vec<f64> = (0..d).map(|j| 0.5f64.powi(j as i32)).collect();
    let s = mean * d as f64 / raw.iter().sum::<f64>();
    let lam = DMat::from_diagonal(&nalgebra::DVector::from_iterator(
        d,
        raw.iter().map(|x| x * s),
    ));
    let m = &q * lam * q.transpose();
    (&m + m.transpose()) * 0.5
}

/// A teacher: true rows `Z ~ N(0, I)`, `y = σ(Z)F_2 + noise` at `snr_db`, and the message
/// `R = Z + N(0, Rvar)`, `Γ = Rvar^{-1}`.
struct Problem {
    z: Mat<f64>,
    y: Mat<f64>,
    f2: DMat,
    yvar: f64,
    msg: Message,
}

fn problem(
    act: Activation,
    n: usize,
    d: usize,
    nout: usize,
    snr_db: f64,
    rvar_mean: f64,
    seed: u64,
) -> Problem {
    let mut rng = rng_from_seed(seed);
    let z = standard_normal(n, d, &mut rng);
    let f2 = to_dmat(&standard_normal(d, nout, &mut rng));
    let y0 = Mat::from_fn(n, nout, |i, o| {
        (0..d)
            .map(|j| act.eval(z[(i, j)]) * f2[(j, o)])
            .sum::<f64>()
    });
    let power = y0
        .col_iter()
        .flat_map(|c| c.iter().map(|x| x * x).collect::<Vec<_>>())
        .sum::<f64>()
        / (n * nout) as f64;
    let yvar = power * 10f64.powf(-snr_db / 10.0);
    let y = &y0 + &standard_normal(n, nout, &mut rng) * faer::Scale(yvar.sqrt());
    let rvar = Spd::new("Rvar", random_spd(d, rvar_mean, &mut rng), Some(d)).unwrap();
    let r = &z + &gaussian_rows(n, rvar.cholesky_lower(), &mut rng);
    let gamma = Spd::from_symmetric("Γ", rvar.inverse()).unwrap();
    Problem {
        z,
        y,
        f2,
        yvar,
        msg: Message {
            mean: r,
            precision: gamma,
        },
    }
}

impl Problem {
    fn channel(&self, act: Activation, est: TwoLayerEstimator) -> TwoLayerOutput {
        TwoLayerOutput::new(self.y.clone(), self.f2.clone(), act, self.yvar, est).unwrap()
    }
}

fn row(m: &Mat<f64>, i: usize) -> Vec<f64> {
    (0..m.ncols()).map(|j| m[(i, j)]).collect()
}

/// `‖Σ̄ − C‖_F / ‖C‖_F` with `C = (1/n)(Ẑ − Z)ᵀ(Ẑ − Z)` (spec §8.2.6).
fn calibration(belief: &Belief, z: &Mat<f64>) -> f64 {
    let e = to_dmat(&(&belief.mean - z));
    let c = e.transpose() * &e / z.nrows() as f64;
    (&belief.cov - &c).norm() / c.norm()
}

#[test]
fn covariance_is_calibrated() {
    // Spec §8.2.6: n = 4000, d = 4, nout = 1, SNR 10 dB, Rvar eigenvalues ∝ 0.5^j, mean 0.075.
    let cases = [
        (
            Activation::Sigmoid,
            TwoLayerEstimator::default(),
            "MMSE sigmoid (adaptive GH 8^4)",
        ),
        (
            Activation::Relu,
            TwoLayerEstimator::default(),
            "MMSE relu (adaptive GH 8^4)",
        ),
        (
            Activation::Sigmoid,
            TwoLayerEstimator::map(HessianKind::Exact),
            "MAP sigmoid (exact Hessian)",
        ),
    ];
    for (k, (act, est, name)) in cases.into_iter().enumerate() {
        let p = problem(act, 4000, 4, 1, 10.0, 0.075, 11 + k as u64);
        let ch = p.channel(act, est);
        let (belief, diag) = ch.denoise_with_diagnostics(&p.msg).unwrap();
        let rel = calibration(&belief, &p.z);
        let (_, msg_err) =
            mlmatvamp::solver::error_stats(p.msg.mean.as_ref(), p.z.as_ref()).unwrap();
        let (_, est_err) =
            mlmatvamp::solver::error_stats(belief.mean.as_ref(), p.z.as_ref()).unwrap();
        println!(
            "{name}: calibration error {rel:.4}; MSE message {:.4} -> estimate {:.4}; {diag:?}",
            msg_err.trace(),
            est_err.trace()
        );
        assert!(rel < 0.05, "{name}: relative Frobenius error {rel}");
        assert!(
            est_err.trace() < msg_err.trace(),
            "{name}: the denoiser must help"
        );
        assert_eq!(diag.newton_not_converged, 0, "{name}: {diag:?}");
    }
}

#[test]
fn relu_orthant_map_is_exact() {
    // Broad messages so that many rows have several local minima or kink solutions.
    let (n, d) = (600, 3);
    let act = Activation::Relu;
    let p = problem(act, n, d, 2, 10.0, 0.5, 5);
    let orth = p.channel(act, TwoLayerEstimator::map(HessianKind::Exact));
    let newt = p.channel(act, TwoLayerEstimator::map_newton(HessianKind::Exact));
    let (bo, _) = orth.denoise_with_diagnostics(&p.msg).unwrap();
    let (bn, dn) = newt.denoise_with_diagnostics(&p.msg).unwrap();
    let (mut same, mut better, mut kinks) = (0, 0, 0);
    for i in 0..n {
        let r = row(&p.msg.mean, i);
        let obj = orth.row_objective(i, &r, &p.msg.precision).unwrap();
        let (vo, vn) = (row(&bo.mean, i), row(&bn.mean, i));
        let (fo, fnw) = (obj.value(&vo), obj.value(&vn));
        // Never worse than Newton.
        assert!(
            fo <= fnw + 1e-12 * (1.0 + fnw.abs()),
            "row {i}: orthant {fo} > Newton {fnw}"
        );
        if vo.contains(&0.0) {
            kinks += 1;
        }
        // Newton converged well inside an orthant: a stationary point of a strictly convex
        // quadratic piece. If it is the orthant optimum's orthant, the points coincide.
        let mut g = vec![0.0; d];
        let mut h = DMat::zeros(d, d);
        obj.derivatives(&vn, HessianKind::Exact, &mut g, &mut h);
        let inside = vn.iter().all(|x| x.abs() > 1e-3);
        let stationary = g.iter().map(|x| x * x).sum::<f64>().sqrt() < 1e-7;
        let same_orthant = vo
            .iter()
            .zip(&vn)
            .all(|(a, b)| (*a > 0.0) == (*b > 0.0) && *a != 0.0);
        if inside && stationary && same_orthant {
            let diff = vo
                .iter()
                .zip(&vn)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f64::max);
            assert!(diff < 1e-8, "row {i}: orthant {vo:?} vs Newton {vn:?}");
            same += 1;
        } else if fo < fnw - 1e-9 * (1.0 + fnw.abs()) {
            better += 1;
        }
    }
    println!(
        "relu orthant vs Newton MAP ({n} rows): {same} identical, {better} strictly better, {kinks} with a coordinate at the kink; Newton {dn:?}"
    );
    assert!(same > n / 2, "only {same} rows comparable");
    assert!(kinks > 0, "the test should exercise the face rule");
    // The face rule: Σ̄ = mean of E_F H_FF^{-1} E_Fᵀ; rows at the kink contribute zero in
    // those coordinates, so Σ̄ is below the all-free average.
    assert!(bo.cov.iter().all(|x| x.is_finite()));
}

/// Gauss–Legendre nodes and weights on `[-1, 1]` (Golub–Welsch), for the reference grid.
fn gauss_legendre(n: usize) -> (Vec<f64>, Vec<f64>) {
    let j = DMatrix::from_fn(n, n, |a, b| {
        if a + 1 == b || b + 1 == a {
            let k = a.max(b) as f64;
            k / (4.0 * k * k - 1.0).sqrt()
        } else {
            0.0
        }
    });
    let e = nalgebra::SymmetricEigen::new(j);
    let x: Vec<f64> = e.eigenvalues.iter().copied().collect();
    let w: Vec<f64> = (0..n)
        .map(|i| 2.0 * e.eigenvectors[(0, i)].powi(2))
        .collect();
    (x, w)
}

/// Composite Gauss–Legendre nodes on `[lo, hi]` with a breakpoint at 0 (the relu kink), so
/// the integrand is smooth on every panel.
fn composite_nodes(lo: f64, hi: f64) -> Vec<(f64, f64)> {
    let (x, w) = gauss_legendre(16);
    let mut cuts = vec![lo, hi];
    if lo < 0.0 && hi > 0.0 {
        cuts.insert(1, 0.0);
    }
    let mut out = vec![];
    for s in cuts.windows(2) {
        let panels = 48;
        let h = (s[1] - s[0]) / panels as f64;
        for p in 0..panels {
            let a = s[0] + p as f64 * h;
            for (xi, wi) in x.iter().zip(&w) {
                out.push((a + 0.5 * h * (xi + 1.0), 0.5 * h * wi));
            }
        }
    }
    out
}

/// Posterior mean, covariance and fourth central moments `E[δ_a² δ_b²]` of row `i` on a dense
/// 2-D grid around the message.
fn dense_moments(ch: &TwoLayerOutput, i: usize, r: &[f64], gamma: &Spd) -> (Vec<f64>, DMat, DMat) {
    let obj = ch.row_objective(i, r, gamma).unwrap();
    let cov = gamma.inverse();
    let grids: Vec<Vec<(f64, f64)>> = (0..2)
        .map(|j| {
            let s = cov[(j, j)].sqrt();
            composite_nodes(r[j] - 14.0 * s, r[j] + 14.0 * s)
        })
        .collect();
    // Weights relative to the largest one (log-sum-exp).
    let mut pts = Vec::with_capacity(grids[0].len() * grids[1].len());
    let mut top = f64::NEG_INFINITY;
    for &(a, wa) in &grids[0] {
        for &(b, wb) in &grids[1] {
            let l = -obj.value(&[a, b]);
            top = top.max(l);
            pts.push(([a - r[0], b - r[1]], wa * wb, l));
        }
    }
    let (mut s0, mut s1) = (0.0, [0.0; 2]);
    for (v, w, l) in pts.iter_mut() {
        *w *= (*l - top).exp();
        s0 += *w;
        for p in 0..2 {
            s1[p] += *w * v[p];
        }
    }
    let mu = [s1[0] / s0, s1[1] / s0];
    let mut c = DMat::zeros(2, 2);
    let mut m4 = DMat::zeros(2, 2);
    for (v, w, _) in &pts {
        let dv = [v[0] - mu[0], v[1] - mu[1]];
        for p in 0..2 {
            for q in 0..2 {
                c[(p, q)] += w * dv[p] * dv[q] / s0;
                m4[(p, q)] += w * dv[p] * dv[p] * dv[q] * dv[q] / s0;
            }
        }
    }
    (vec![r[0] + mu[0], r[1] + mu[1]], c, m4)
}

/// The moments of a one-row channel built from row `i` of `p` (so `Σ̄ = Σ_i`).
fn one_row(
    p: &Problem,
    i: usize,
    act: Activation,
    est: TwoLayerEstimator,
) -> (Belief, TwoLayerDiagnostics) {
    let (d, nout) = (p.f2.nrows(), p.f2.ncols());
    let ch = TwoLayerOutput::new(
        Mat::from_fn(1, nout, |_, o| p.y[(i, o)]),
        p.f2.clone(),
        act,
        p.yvar,
        est,
    )
    .unwrap();
    let msg = Message {
        mean: Mat::from_fn(1, d, |_, j| p.msg.mean[(i, j)]),
        precision: p.msg.precision.clone(),
    };
    ch.denoise_with_diagnostics(&msg).unwrap()
}

#[test]
fn quadrature_matches_a_dense_grid() {
    // Spec §8.2.10, d = 2, nout = 2: deterministic rules to 1e-6 (relative to the posterior
    // scale), importance sampling within 3/√ESS. Gauss–Hermite converges only algebraically
    // across the relu kinks, so for relu the 1e-6 rule is the orthant decomposition and
    // adaptive GH gets a looser bound.
    let rows = 6;
    let gh = |nodes| TwoLayerEstimator::mmse(MmseMethod::AdaptiveGh { nodes });
    let cases: [(Activation, TwoLayerEstimator, &str, f64); 4] = [
        (
            Activation::Identity,
            TwoLayerEstimator::default(),
            "closed form",
            1e-9,
        ),
        (Activation::Sigmoid, gh(48), "adaptive GH 48^2", 1e-6),
        (
            Activation::Relu,
            TwoLayerEstimator::mmse(MmseMethod::ReluOrthants { nodes: 48 }),
            "orthant GL 48^2",
            1e-6,
        ),
        (Activation::Relu, gh(64), "adaptive GH 64^2", 1e-2),
    ];
    for (k, (act, est, name, tol)) in cases.into_iter().enumerate() {
        let p = problem(act, rows, 2, 2, 10.0, 0.3, 100 + k as u64);
        let ch = p.channel(act, est);
        let b = ch.denoise(&p.msg).unwrap();
        let mut worst: f64 = 0.0;
        let mut worst_is: f64 = 0.0;
        for i in 0..rows {
            let r = row(&p.msg.mean, i);
            let (m_ref, c_ref, m4_ref) = dense_moments(&ch, i, &r, &p.msg.precision);
            let scale = c_ref.trace().sqrt();
            for (j, mj) in m_ref.iter().enumerate() {
                worst = worst.max((b.mean[(i, j)] - mj).abs() / scale);
            }
            let (b1, _) = one_row(&p, i, act, est);
            worst = worst.max((&b1.cov - &c_ref).amax() / scale.powi(2));
            if act == Activation::Identity || k == 3 {
                continue;
            }
            // Importance sampling with 2^14 Student-t points.
            let is = TwoLayerEstimator::mmse(MmseMethod::ImportanceSampling { points: 1 << 14 });
            let (bi, di) = one_row(&p, i, act, is);
            let ess = di.min_ess.unwrap();
            assert!(ess > 1000.0, "{act:?} row {i}: ESS {ess}");
            for a in 0..2 {
                let tol = 3.0 * (c_ref[(a, a)] / ess).sqrt();
                let e = (bi.mean[(0, a)] - m_ref[a]).abs();
                assert!(
                    e < tol,
                    "{act:?} row {i}: IS mean {a} off by {e:.3e} > {tol:.3e}"
                );
                worst_is = worst_is.max(e / tol);
                for c in 0..2 {
                    // Sampling sd of a weighted second moment: Var[δ_a δ_c] / ESS.
                    let var_ac = m4_ref[(a, c)] - c_ref[(a, c)].powi(2);
                    let sd = (var_ac.max(0.0) / ess).sqrt();
                    let e = (bi.cov[(a, c)] - c_ref[(a, c)]).abs();
                    assert!(
                        e < 3.0 * sd,
                        "{act:?} row {i}: IS cov ({a},{c}) off by {e:.3e} > {:.3e}",
                        3.0 * sd
                    );
                    worst_is = worst_is.max(e / (3.0 * sd));
                }
            }
        }
        println!("{act:?} {name}: worst relative error {worst:.2e}; IS worst error / (3 sd) {worst_is:.2}");
        assert!(worst < tol, "{act:?} {name}: error {worst:e}");
    }
}

#[test]
fn derivatives_match_finite_differences() {
    let d = 4;
    for act in [Activation::Sigmoid, Activation::Relu, Activation::Identity] {
        let p = problem(act, 3, d, 3, 10.0, 0.2, 7);
        let ch = p.channel(act, TwoLayerEstimator::default());
        for i in 0..3 {
            let r = row(&p.msg.mean, i);
            let obj = ch.row_objective(i, &r, &p.msg.precision).unwrap();
            // A point away from the relu kinks.
            let v: Vec<f64> = r
                .iter()
                .enumerate()
                .map(|(j, x)| x + 0.3 * (j as f64 - 1.5))
                .collect();
            if act == Activation::Relu && v.iter().any(|x| x.abs() < 1e-3) {
                continue;
            }
            let mut g = vec![0.0; d];
            let mut h = DMat::zeros(d, d);
            let f = obj.derivatives(&v, HessianKind::Exact, &mut g, &mut h);
            assert!((f - obj.value(&v)).abs() < 1e-12 * (1.0 + f.abs()));
            let eps = 1e-5;
            for j in 0..d {
                let mut vp = v.clone();
                let mut vm = v.clone();
                vp[j] += eps;
                vm[j] -= eps;
                let fd = (obj.value(&vp) - obj.value(&vm)) / (2.0 * eps);
                assert!(
                    (fd - g[j]).abs() < 1e-6 * (1.0 + g[j].abs()),
                    "{act:?}: gradient {j}: {} vs FD {fd}",
                    g[j]
                );
                let (mut gp, mut gm) = (vec![0.0; d], vec![0.0; d]);
                let mut tmp = DMat::zeros(d, d);
                obj.derivatives(&vp, HessianKind::Exact, &mut gp, &mut tmp);
                obj.derivatives(&vm, HessianKind::Exact, &mut gm, &mut tmp);
                for a in 0..d {
                    let fdh = (gp[a] - gm[a]) / (2.0 * eps);
                    assert!(
                        (fdh - h[(a, j)]).abs() < 1e-5 * (1.0 + h[(a, j)].abs()),
                        "{act:?}: Hessian ({a},{j}): {} vs FD {fdh}",
                        h[(a, j)]
                    );
                }
            }
        }
    }
}

#[test]
fn identity_activation_is_the_closed_form() {
    let (n, d, nout) = (50, 3, 2);
    let act = Activation::Identity;
    let p = problem(act, n, d, nout, 10.0, 0.1, 21);
    // Independent dense computation: Σ = (Γ + F F^T/yvar)^{-1}, v̂ = (rΓ + yF^T/yvar)Σ.
    let g = p.msg.precision.matrix();
    let sigma = (g + &p.f2 * p.f2.transpose() / p.yvar)
        .try_inverse()
        .unwrap();
    let r = to_dmat(&p.msg.mean);
    let y = to_dmat(&p.y);
    let expect = (&r * g + &y * p.f2.transpose() / p.yvar) * &sigma;
    let estimators = [
        TwoLayerEstimator::map(HessianKind::Exact),
        TwoLayerEstimator::map(HessianKind::GaussNewton),
        TwoLayerEstimator::default(),
    ];
    for est in estimators {
        let b = p.channel(act, est).denoise(&p.msg).unwrap();
        let err = (to_dmat(&b.mean) - &expect).amax() / expect.amax();
        assert!(err < 1e-12, "{est:?}: mean error {err:e}");
        assert!((&b.cov - &sigma).amax() < 1e-12 * sigma.amax());
    }
    // The generic machinery (Newton, adaptive GH) reproduces it too on the Gaussian belief.
    let ch = p.channel(act, TwoLayerEstimator::default());
    let set = PointSet::gauss_hermite(d, 6).unwrap();
    for i in 0..5 {
        let ri = row(&p.msg.mean, i);
        let obj = ch.row_objective(i, &ri, &p.msg.precision).unwrap();
        let mut v = ri.clone();
        let mut ws = NewtonWorkspace::new(d);
        let rep = newton::minimize(
            &obj,
            &mut v,
            HessianKind::Exact,
            &NewtonOptions::default(),
            1.0,
            &mut ws,
        )
        .unwrap();
        assert!(rep.converged && rep.iterations <= 2, "{rep:?}");
        for j in 0..d {
            assert!((v[j] - expect[(i, j)]).abs() < 1e-12 * (1.0 + expect[(i, j)].abs()));
        }
        // With c = 1 the Laplace frame is the posterior itself: every weight is equal.
        let factor = quadrature::precision_frame(ws.hessian(), 1.0).unwrap();
        let mut m = Moments::new(d);
        let mut scratch = vec![0.0; d];
        quadrature::frame_moments(&set, &v, &factor, |x| -obj.value(x), &mut scratch, &mut m)
            .unwrap();
        for a in 0..d {
            assert!((m.mean[a] - expect[(i, a)]).abs() < 1e-12 * (1.0 + expect[(i, a)].abs()));
            for b in 0..d {
                assert!((m.cov[a * d + b] - sigma[(a, b)]).abs() < 1e-12 * sigma.amax());
            }
        }
    }
}

#[test]
fn denoise_is_deterministic_and_thread_independent() {
    let act_est = [
        (Activation::Sigmoid, TwoLayerEstimator::default()),
        (Activation::Relu, TwoLayerEstimator::map(HessianKind::Exact)),
        (
            Activation::Sigmoid,
            TwoLayerEstimator::mmse(MmseMethod::ImportanceSampling { points: 2048 }),
        ),
    ];
    for (act, est) in act_est {
        let p = problem(act, 700, 3, 2, 10.0, 0.1, 31);
        let ch = p.channel(act, est);
        let run = |threads: usize| -> (Belief, TwoLayerDiagnostics) {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| ch.denoise_with_diagnostics(&p.msg).unwrap())
        };
        let (b1, d1) = run(1);
        let (b2, d2) = run(2);
        let (b3, _) = run(2);
        assert_eq!(d1, d2);
        for b in [&b2, &b3] {
            assert!(
                b.mean == b1.mean,
                "{act:?}: mean depends on the thread count"
            );
            assert_eq!(
                b.cov, b1.cov,
                "{act:?}: covariance depends on the thread count"
            );
        }
    }
}

#[test]
fn invalid_inputs_are_reported() {
    let f2 = DMat::from_element(3, 2, 0.5);
    let y = Mat::<f64>::zeros(10, 2);
    let est = TwoLayerEstimator::default;
    let msg = |e: Error| e.to_string();
    // Y with the wrong number of columns.
    let e = msg(TwoLayerOutput::new(
        Mat::zeros(10, 3),
        f2.clone(),
        Activation::Sigmoid,
        0.1,
        est(),
    )
    .unwrap_err());
    assert!(
        e.contains("observation Y") && e.contains("expected n x 2") && e.contains("got 10 x 3"),
        "{e}"
    );
    // Empty F_2.
    let e = msg(TwoLayerOutput::new(
        y.clone(),
        DMat::zeros(0, 2),
        Activation::Sigmoid,
        0.1,
        est(),
    )
    .unwrap_err());
    assert!(e.contains("F_2") && e.contains("got 0 x 2"), "{e}");
    // F_2 whose output count disagrees with Y.
    let e = msg(TwoLayerOutput::new(
        y.clone(),
        DMat::zeros(3, 1),
        Activation::Sigmoid,
        0.1,
        est(),
    )
    .unwrap_err());
    assert!(
        e.contains("expected n x 1") && e.contains("3 x 1") && e.contains("got 10 x 2"),
        "{e}"
    );
    // Noise variance.
    for v in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        let e = msg(
            TwoLayerOutput::new(y.clone(), f2.clone(), Activation::Relu, v, est()).unwrap_err(),
        );
        assert!(e.contains("noise variance"), "{e}");
    }
    // NaN in Y, and in F_2.
    let mut ybad = y.clone();
    ybad[(4, 1)] = f64::NAN;
    let e =
        msg(TwoLayerOutput::new(ybad, f2.clone(), Activation::Sigmoid, 0.1, est()).unwrap_err());
    assert!(
        e.contains("observation Y") && e.contains("(4, 1)") && e.contains("NaN"),
        "{e}"
    );
    let mut fbad = f2.clone();
    fbad[(2, 0)] = f64::INFINITY;
    let e = msg(TwoLayerOutput::new(y.clone(), fbad, Activation::Sigmoid, 0.1, est()).unwrap_err());
    assert!(e.contains("F_2") && e.contains("inf"), "{e}");
    // Estimator options.
    let e = msg(TwoLayerOutput::new(
        Mat::zeros(10, 2),
        DMat::zeros(7, 2),
        Activation::Relu,
        0.1,
        TwoLayerEstimator::map(HessianKind::Exact),
    )
    .unwrap_err());
    assert!(e.contains("d <= 6") && e.contains("Newton"), "{e}");
    let e = msg(TwoLayerOutput::new(
        y.clone(),
        f2.clone(),
        Activation::Relu,
        0.1,
        TwoLayerEstimator::mmse(MmseMethod::AdaptiveGh { nodes: 0 }),
    )
    .unwrap_err());
    assert!(e.contains("Gauss-Hermite nodes"), "{e}");
    let e = msg(TwoLayerOutput::new(
        y.clone(),
        f2.clone(),
        Activation::Relu,
        0.1,
        TwoLayerEstimator::mmse(MmseMethod::AdaptiveGh { nodes: 200 }),
    )
    .unwrap_err());
    assert!(e.contains("exceed"), "{e}");
    let bad_scale = TwoLayerEstimator::Mmse(MmseOptions {
        scale: Some(0.5),
        ..Default::default()
    });
    let e = msg(
        TwoLayerOutput::new(y.clone(), f2.clone(), Activation::Relu, 0.1, bad_scale).unwrap_err(),
    );
    assert!(e.contains("scale"), "{e}");
    // Messages and resampling of the wrong shape, or non-finite.
    let ch = TwoLayerOutput::new(y.clone(), f2.clone(), Activation::Sigmoid, 0.1, est()).unwrap();
    let prec = Spd::identity(3);
    let e = msg(ch
        .denoise(&Message {
            mean: Mat::zeros(10, 2),
            precision: Spd::identity(2),
        })
        .unwrap_err());
    assert!(
        e.contains("expected 10 x 3") && e.contains("got 10 x 2"),
        "{e}"
    );
    let mut rbad = Mat::<f64>::zeros(10, 3);
    rbad[(3, 2)] = f64::NAN;
    let e = msg(ch
        .denoise(&Message {
            mean: rbad,
            precision: prec.clone(),
        })
        .unwrap_err());
    assert!(e.contains("(3, 2)"), "{e}");
    let mut rng = rng_from_seed(0);
    let e = msg(ch
        .resample(Mat::<f64>::zeros(5, 4).as_ref(), &mut rng)
        .err()
        .unwrap());
    assert!(
        e.contains("expected n x 3") && e.contains("got 5 x 4"),
        "{e}"
    );
    let e = msg(ch.row_objective(10, &[0.0; 3], &prec).err().unwrap());
    assert!(e.contains("out of range"), "{e}");
}

#[test]
fn resample_draws_the_model() {
    // y = σ(z)F_2 + N(0, yvar): residual variance and mean match.
    let (n, d, nout, yvar) = (20000, 2, 2, 0.3);
    let f2 = DMat::from_row_slice(d, nout, &[1.0, -0.5, 2.0, 0.7]);
    let ch = TwoLayerOutput::new(
        Mat::zeros(1, nout),
        f2.clone(),
        Activation::Sigmoid,
        yvar,
        TwoLayerEstimator::default(),
    )
    .unwrap();
    let mut rng = rng_from_seed(3);
    let z = standard_normal(n, d, &mut rng);
    let out = ch.resample(z.as_ref(), &mut rng).unwrap();
    assert_eq!((out.rows(), out.dim()), (n, d));
    let y = out.observation();
    let mut s = 0.0;
    let mut s2 = 0.0;
    for i in 0..n {
        for o in 0..nout {
            let mean: f64 = (0..d)
                .map(|j| Activation::Sigmoid.eval(z[(i, j)]) * f2[(j, o)])
                .sum();
            let e = y[(i, o)] - mean;
            s += e;
            s2 += e * e;
        }
    }
    // The estimator (and its point set) carries over: the resampled channel denoises.
    let msg = Message {
        mean: Mat::zeros(n, d),
        precision: Spd::identity(d),
    };
    assert_eq!(out.denoise(&msg).unwrap().mean.nrows(), n);
    let m = (n * nout) as f64;
    assert!((s / m).abs() < 4.0 * (yvar / m).sqrt());
    assert!((s2 / m - yvar).abs() < 4.0 * yvar * (2.0 / m).sqrt());
}

/// Timing of one denoise call, n = 4000, d = 4 (run with `--release -- --ignored --nocapture`).
#[test]
#[ignore]
fn timing_n4000_d4() {
    let cases = [
        (
            Activation::Sigmoid,
            TwoLayerEstimator::map(HessianKind::Exact),
            "MAP sigmoid, exact Hessian",
        ),
        (
            Activation::Relu,
            TwoLayerEstimator::map(HessianKind::Exact),
            "MAP relu, orthants",
        ),
        (
            Activation::Sigmoid,
            TwoLayerEstimator::default(),
            "MMSE sigmoid, adaptive GH 8^4",
        ),
        (
            Activation::Relu,
            TwoLayerEstimator::default(),
            "MMSE relu, adaptive GH 8^4",
        ),
    ];
    for (act, est, name) in cases {
        let p = problem(act, 4000, 4, 1, 10.0, 0.075, 1);
        let ch = p.channel(act, est);
        ch.denoise(&p.msg).unwrap();
        for threads in [1, 2] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let t = std::time::Instant::now();
            let reps = 3;
            for _ in 0..reps {
                pool.install(|| ch.denoise(&p.msg).unwrap());
            }
            println!(
                "{name}: {:.1} ms per call ({threads} threads)",
                t.elapsed().as_secs_f64() * 1e3 / reps as f64
            );
        }
    }
}

/// The largest `|a − b|` over the entries of two matrices of the same shape.
fn max_abs_diff(a: &Mat<f64>, b: &Mat<f64>) -> f64 {
    (0..a.ncols())
        .flat_map(|j| (0..a.nrows()).map(move |i| (i, j)))
        .map(|(i, j)| (a[(i, j)] - b[(i, j)]).abs())
        .fold(0.0, f64::max)
}

fn same_bits(a: &Belief, b: &Belief) -> bool {
    let bits = |m: &Mat<f64>| {
        (0..m.ncols())
            .flat_map(|j| (0..m.nrows()).map(move |i| m[(i, j)].to_bits()))
            .collect::<Vec<_>>()
    };
    bits(&a.mean) == bits(&b.mean) && a.cov.iter().zip(b.cov.iter()).all(|(x, y)| x == y)
}

/// The warm start of the MAP output (`MapOptions::warm_start`, spec §4.2): off by default; an
/// empty, mis-shaped or non-finite start is a start at `R⁺` (the same bits as `denoise`); on a
/// convex row objective (sigmoid, strong message) the warm-started Newton rows reach the cold
/// minimiser to within the Newton tolerance, in the lanes (d = 4), the one-row fixed-size code
/// (d = 3, lanes off) and the dynamic-size code (d = 9).
#[test]
fn warm_started_map_rows_reach_the_cold_minimiser() {
    use mlmatvamp::factor::WarmStart;
    assert!(!MapOptions::default().warm_start);
    let act = Activation::Sigmoid;
    for (d, lanes) in [(4, true), (3, false), (9, true)] {
        // SNR 10 dB and a strong message (Rvar mean 0.05): convex rows.
        let p = problem(act, 500, d, 1, 10.0, 0.05, 40 + d as u64);
        let opts = MapOptions::default();
        let cold_out = p.channel(act, TwoLayerEstimator::Map(opts));
        let out = p
            .channel(
                act,
                TwoLayerEstimator::Map(MapOptions {
                    warm_start: true,
                    ..opts
                }),
            )
            .with_lane_kernels(lanes);
        let cold = out.denoise(&p.msg).unwrap();
        // Off: the stored start is not used.
        let mut w = WarmStart::default();
        w.set(Mat::from_fn(500, d, |_, _| 0.3));
        assert!(same_bits(
            &cold_out.denoise_warm(&p.msg, &mut w).unwrap(),
            &cold
        ));
        // Empty, mis-shaped, non-finite starts: the start at R⁺.
        let mut w = WarmStart::default();
        assert!(same_bits(&out.denoise_warm(&p.msg, &mut w).unwrap(), &cold));
        let mut bad = WarmStart::default();
        bad.set(Mat::zeros(499, d));
        assert!(same_bits(
            &out.denoise_warm(&p.msg, &mut bad).unwrap(),
            &cold
        ));
        let mut nan = p.msg.mean.clone();
        nan[(3, 0)] = f64::NAN;
        bad.set(nan);
        assert!(same_bits(
            &out.denoise_warm(&p.msg, &mut bad).unwrap(),
            &cold
        ));
        // The next message (R⁺ moved by 0.1 N(0, I)): warm start at the last estimate (kept in
        // `w` by the call above) against a cold start.
        let mut rng = rng_from_seed(7);
        let msg2 = Message {
            mean: &p.msg.mean + &standard_normal(500, d, &mut rng) * faer::Scale(0.1),
            precision: p.msg.precision.clone(),
        };
        let cold2 = out.denoise(&msg2).unwrap();
        let warm2 = out.denoise_warm(&msg2, &mut w).unwrap();
        let (dm, dc) = (
            max_abs_diff(&cold2.mean, &warm2.mean),
            (&cold2.cov - &warm2.cov).norm() / cold2.cov.norm(),
        );
        assert!(
            dm < 1e-7 && dc < 1e-7,
            "d = {d}: estimates differ by {dm:e}, Σ̄ by {dc:e}"
        );
        // (The start was used: the Newton iterates differ, so do the last bits.)
        assert!(
            !same_bits(&cold2, &warm2),
            "d = {d}: the warm start was not used"
        );
        // The warm start now holds this call's estimate.
        assert_eq!(w.get().map(|m| max_abs_diff(m, &warm2.mean)), Some(0.0));
    }
}
