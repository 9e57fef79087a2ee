//! The relu hidden layer `u = relu(v) + ξ`, `ξ ~ N(0, N^{-1})` or noiseless (spec §4.7):
//!
//! * MMSE moments (`v̂`, `Σ_vv`, `û`, `Σ_uu`) against a dense 2-D grid for non-diagonal `Γ`s
//!   (spec §8.2.10) to `1e-6`, and the separable closed form against the grid to `1e-8`;
//! * MAP against a generic numerical minimiser (Nelder–Mead) of the joint `(u, v)` objective;
//! * the Jacobian identities `∂v̂/∂r⁺ = Γ⁺Σ_vv`, `∂û/∂r⁻ = Γ⁻Σ_uu` (spec §0) by finite
//!   differences, for MMSE (Stein) and MAP (implicit function theorem);
//! * covariance calibration under the matched model (spec §8.2.6);
//! * `d = 1` equals a scalar relu VAMP denoiser written here;
//! * errors.

mod common;

use common::*;
use faer::Mat;
use mlmatvamp::denoise::{gaussian_rows, ReluMmseMethod};
use mlmatvamp::prelude::*;

/// A noisy (`Some(N)`) or noiseless relu layer.
fn relu_layer(noise: Option<DMat>, est: Estimator, d: usize) -> ActivationLayer {
    let noise = noise.map(|n| Spd::new("N", n, Some(d)).unwrap());
    ActivationLayer::new(Activation::Relu, noise, est, d).unwrap()
}

fn one_row_message(r: &[f64], gamma: &DMat) -> Message {
    Message {
        mean: Mat::from_fn(1, r.len(), |_, j| r[j]),
        precision: Spd::new("Γ", gamma.clone(), Some(r.len())).unwrap(),
    }
}

fn row(m: &Mat<f64>, i: usize) -> Vec<f64> {
    (0..m.ncols()).map(|j| m[(i, j)]).collect()
}

fn inv(m: &DMat) -> DMat {
    m.clone().try_inverse().unwrap()
}

/// `P = (N^{-1} + (Γ⁻)^{-1})^{-1}` (`Γ⁻` if noiseless) and `A = (N + Γ⁻)^{-1}` (0 if noiseless).
fn effective(noise: &Option<DMat>, gm: &DMat) -> (DMat, Option<DMat>) {
    match noise {
        Some(n) => (inv(&(inv(n) + inv(gm))), Some(inv(&(n + gm)))),
        None => (gm.clone(), None),
    }
}

/// Gauss–Legendre nodes and weights on `[-1, 1]` (Golub–Welsch), for the reference grid.
fn gauss_legendre(n: usize) -> (Vec<f64>, Vec<f64>) {
    let j = DMat::from_fn(n, n, |a, b| {
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

/// Composite Gauss–Legendre nodes on `[lo, hi]` with a breakpoint at the relu kink 0.
fn composite_nodes(lo: f64, hi: f64, panels: usize) -> Vec<(f64, f64)> {
    let (x, w) = gauss_legendre(12);
    let mut cuts = vec![lo, hi];
    if lo < 0.0 && hi > 0.0 {
        cuts.insert(1, 0.0);
    }
    let mut out = vec![];
    for s in cuts.windows(2) {
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

/// The reference moments of one row at `d = 2` on a dense grid in `v`: the belief
/// `q(v) ∝ N(v; r⁺, (Γ⁺)^{-1}) N(relu(v); r⁻, P^{-1})` (u integrated out, spec §4.7), and
/// `E[u | v] = (relu(v)N + r⁻Γ⁻)A`, `Cov(u | v) = A` (noiseless: `u = relu(v)`), so that
/// `E u = E E[u|v]`, `Cov u = A + Cov E[u|v]`. Returns `(v̂, Σ_vv, û, Σ_uu)`.
fn grid_moments(
    rp: &[f64],
    gp: &DMat,
    rm: &[f64],
    gm: &DMat,
    noise: &Option<DMat>,
) -> (Vec<f64>, DMat, Vec<f64>, DMat) {
    let (p, a) = effective(noise, gm);
    let cov = inv(gp);
    let grids: Vec<Vec<(f64, f64)>> = (0..2)
        .map(|j| {
            let s = cov[(j, j)].sqrt();
            composite_nodes(rp[j] - 14.0 * s, rp[j] + 14.0 * s, 64)
        })
        .collect();
    let cond_u = |v: [f64; 2]| -> [f64; 2] {
        let rl = [v[0].max(0.0), v[1].max(0.0)];
        match (noise, &a) {
            (Some(n), Some(a)) => {
                let x = DMat::from_row_slice(1, 2, &rl) * n + DMat::from_row_slice(1, 2, rm) * gm;
                let y = x * a;
                [y[0], y[1]]
            }
            _ => rl,
        }
    };
    let logq = |v: [f64; 2]| -> f64 {
        let dv = [v[0] - rp[0], v[1] - rp[1]];
        let dr = [v[0].max(0.0) - rm[0], v[1].max(0.0) - rm[1]];
        let mut s = 0.0;
        for i in 0..2 {
            for j in 0..2 {
                s += dv[i] * gp[(i, j)] * dv[j] + dr[i] * p[(i, j)] * dr[j];
            }
        }
        -0.5 * s
    };
    let mut top = f64::NEG_INFINITY;
    for &(x, _) in &grids[0] {
        for &(y, _) in &grids[1] {
            top = top.max(logq([x, y]));
        }
    }
    // Moments about r⁺ (v) and about the first point (u) to avoid cancellation.
    let u0 = cond_u([rp[0], rp[1]]);
    let (mut s0, mut sv, mut svv, mut su, mut suu) =
        (0.0, [0.0; 2], [[0.0; 2]; 2], [0.0; 2], [[0.0; 2]; 2]);
    for &(x, wx) in &grids[0] {
        for &(y, wy) in &grids[1] {
            let v = [x, y];
            let w = wx * wy * (logq(v) - top).exp();
            let dv = [x - rp[0], y - rp[1]];
            let cu = cond_u(v);
            let du = [cu[0] - u0[0], cu[1] - u0[1]];
            s0 += w;
            for i in 0..2 {
                sv[i] += w * dv[i];
                su[i] += w * du[i];
                for j in 0..2 {
                    svv[i][j] += w * dv[i] * dv[j];
                    suu[i][j] += w * du[i] * du[j];
                }
            }
        }
    }
    let mv: Vec<f64> = (0..2).map(|i| sv[i] / s0).collect();
    let mu: Vec<f64> = (0..2).map(|i| su[i] / s0).collect();
    let cv = DMat::from_fn(2, 2, |i, j| svv[i][j] / s0 - mv[i] * mv[j]);
    let mut cu = DMat::from_fn(2, 2, |i, j| suu[i][j] / s0 - mu[i] * mu[j]);
    if let Some(a) = &a {
        cu += a;
    }
    (
        vec![rp[0] + mv[0], rp[1] + mv[1]],
        cv,
        vec![u0[0] + mu[0], u0[1] + mu[1]],
        cu,
    )
}

fn max_diff(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).fold(0.0, |m, (x, y)| m.max((x - y).abs()))
}

fn max_diff_mat(a: &DMat, b: &DMat) -> f64 {
    (a - b).iter().fold(0.0, |m, x| m.max(x.abs()))
}

/// One-row forward and backward beliefs.
fn denoise_row(
    layer: &ActivationLayer,
    rp: &[f64],
    gp: &DMat,
    rm: &[f64],
    gm: &DMat,
) -> (Vec<f64>, DMat, Vec<f64>, DMat) {
    let plus = one_row_message(rp, gp);
    let minus = one_row_message(rm, gm);
    let b = layer.backward(&minus, &plus).unwrap();
    let f = layer.forward(&minus, &plus).unwrap();
    (row(&b.mean, 0), b.cov, row(&f.mean, 0), f.cov)
}

/// A random test case at `d = 2`: non-diagonal `Γ⁺`, `Γ⁻`, `N`, messages with a spread that
/// puts mass in several orthants.
struct Case {
    rp: Vec<f64>,
    gp: DMat,
    rm: Vec<f64>,
    gm: DMat,
    noise: Option<DMat>,
}

fn case(rng: &mut Rng, d: usize, noisy: bool, diagonal: bool) -> Case {
    let spd = |rng: &mut Rng, scale: f64| {
        let m = random_spd(d, scale, rng);
        if diagonal {
            DMat::from_diagonal(&m.diagonal())
        } else {
            m
        }
    };
    let gp = spd(rng, 2.0);
    let gm = spd(rng, 4.0);
    let noise = noisy.then(|| spd(rng, 10.0));
    let g = standard_normal(2, d, rng);
    let rp: Vec<f64> = (0..d).map(|j| 0.7 * g[(0, j)]).collect();
    let rm: Vec<f64> = (0..d).map(|j| 0.4 + 0.7 * g[(1, j)]).collect();
    Case {
        rp,
        gp,
        rm,
        gm,
        noise,
    }
}

#[test]
fn mmse_moments_match_a_dense_grid() {
    let mut rng = rng_from_seed(11);
    let mut worst: f64 = 0.0;
    let mut kinds = [0usize; 2];
    for t in 0..8 {
        let noisy = t % 2 == 0;
        let c = case(&mut rng, 2, noisy, false);
        let layer = relu_layer(c.noise.clone(), Estimator::Mmse, 2);
        let (v, cv, u, cu) = denoise_row(&layer, &c.rp, &c.gp, &c.rm, &c.gm);
        let (gv, gcv, gu, gcu) = grid_moments(&c.rp, &c.gp, &c.rm, &c.gm, &c.noise);
        let err = max_diff(&v, &gv)
            .max(max_diff_mat(&cv, &gcv))
            .max(max_diff(&u, &gu))
            .max(max_diff_mat(&cu, &gcu));
        worst = worst.max(err);
        kinds[noisy as usize] += 1;
        assert!(
            cv[(0, 1)].abs() > 1e-3,
            "the case must couple the coordinates"
        );
        assert!(err < 1e-6, "case {t} (noisy {noisy}): max error {err:.3e}");
    }
    println!("relu MMSE (orthant GL, default 16 nodes per panel) vs dense grid, d = 2: max abs error {worst:.2e} over {kinds:?} noiseless/noisy cases");
}

#[test]
fn separable_closed_form_matches_the_grid() {
    let mut rng = rng_from_seed(12);
    let mut worst: f64 = 0.0;
    for t in 0..6 {
        let c = case(&mut rng, 2, t % 2 == 0, true);
        let layer = relu_layer(c.noise.clone(), Estimator::Mmse, 2);
        let (v, cv, u, cu) = denoise_row(&layer, &c.rp, &c.gp, &c.rm, &c.gm);
        let (gv, gcv, gu, gcu) = grid_moments(&c.rp, &c.gp, &c.rm, &c.gm, &c.noise);
        let err = max_diff(&v, &gv)
            .max(max_diff_mat(&cv, &gcv))
            .max(max_diff(&u, &gu))
            .max(max_diff_mat(&cu, &gcu));
        worst = worst.max(err);
        assert!(err < 1e-8, "case {t}: max error {err:.3e}");
        // The quadrature on the same separable case agrees too.
        let q = relu_layer(c.noise.clone(), Estimator::Mmse, 2)
            .with_relu_mmse(ReluMmseMethod::Orthants { nodes: 32 })
            .unwrap();
        let (qv, qcv, _, _) = denoise_row(&q, &c.rp, &c.gp, &c.rm, &c.gm);
        assert!(max_diff(&qv, &v) < 1e-9 && max_diff_mat(&qcv, &cv) < 1e-9);
    }
    println!("relu MMSE separable closed form vs dense grid, d = 2: max abs error {worst:.2e}");
}

#[test]
fn quadrature_converges_at_d3() {
    // No grid at d = 3: the default rule (12 nodes per panel) against a 48-node rule.
    let mut rng = rng_from_seed(13);
    let mut worst: f64 = 0.0;
    for t in 0..6 {
        let c = case(&mut rng, 3, t % 2 == 0, false);
        let a = relu_layer(c.noise.clone(), Estimator::Mmse, 3);
        let b = a
            .clone()
            .with_relu_mmse(ReluMmseMethod::Orthants { nodes: 48 })
            .unwrap();
        let x = denoise_row(&a, &c.rp, &c.gp, &c.rm, &c.gm);
        let y = denoise_row(&b, &c.rp, &c.gp, &c.rm, &c.gm);
        let err = max_diff(&x.0, &y.0)
            .max(max_diff_mat(&x.1, &y.1))
            .max(max_diff(&x.2, &y.2))
            .max(max_diff_mat(&x.3, &y.3));
        worst = worst.max(err);
        assert!(err < 2e-5, "case {t}: {err:.3e}");
    }
    println!("relu MMSE d = 3: default 12 nodes vs 48 nodes, max abs difference {worst:.2e}");
}

/// Nelder–Mead on `f: R^m → R` from `x0` with initial step `step`; restarts until no progress.
fn nelder_mead(f: &dyn Fn(&[f64]) -> f64, x0: &[f64], step: f64) -> (Vec<f64>, f64) {
    let m = x0.len();
    let mut best = x0.to_vec();
    let mut fbest = f(&best);
    let mut scale = step;
    for _restart in 0..30 {
        let mut simplex: Vec<Vec<f64>> = vec![best.clone()];
        for i in 0..m {
            let mut p = best.clone();
            p[i] += scale;
            simplex.push(p);
        }
        let mut vals: Vec<f64> = simplex.iter().map(|p| f(p)).collect();
        for _ in 0..20000 {
            let mut order: Vec<usize> = (0..=m).collect();
            order.sort_by(|&a, &b| vals[a].total_cmp(&vals[b]));
            simplex = order.iter().map(|&i| simplex[i].clone()).collect();
            vals = order.iter().map(|&i| vals[i]).collect();
            let spread = (1..=m)
                .map(|i| max_diff(&simplex[i], &simplex[0]))
                .fold(0.0, f64::max);
            if spread < 1e-13 {
                break;
            }
            let c: Vec<f64> = (0..m)
                .map(|j| simplex[..m].iter().map(|p| p[j]).sum::<f64>() / m as f64)
                .collect();
            let along = |t: f64| -> Vec<f64> {
                (0..m).map(|j| c[j] + t * (simplex[m][j] - c[j])).collect()
            };
            let xr = along(-1.0);
            let fr = f(&xr);
            if fr < vals[0] {
                let xe = along(-2.0);
                let fe = f(&xe);
                if fe < fr {
                    simplex[m] = xe;
                    vals[m] = fe;
                } else {
                    simplex[m] = xr;
                    vals[m] = fr;
                }
            } else if fr < vals[m - 1] {
                simplex[m] = xr;
                vals[m] = fr;
            } else {
                let xc = if fr < vals[m] {
                    along(-0.5)
                } else {
                    along(0.5)
                };
                let fc = f(&xc);
                if fc < vals[m].min(fr) {
                    simplex[m] = xc;
                    vals[m] = fc;
                } else {
                    for i in 1..=m {
                        let p: Vec<f64> = (0..m)
                            .map(|j| simplex[0][j] + 0.5 * (simplex[i][j] - simplex[0][j]))
                            .collect();
                        vals[i] = f(&p);
                        simplex[i] = p;
                    }
                }
            }
        }
        let i = (0..=m)
            .min_by(|&a, &b| vals[a].total_cmp(&vals[b]))
            .unwrap();
        if vals[i] < fbest - 1e-15 {
            fbest = vals[i];
            best = simplex[i].clone();
            scale = (scale * 0.5).max(1e-4);
        } else {
            break;
        }
    }
    (best, fbest)
}

/// The joint negative log-belief of one row in `(u, v)` (spec §4.1, §4.7):
/// `½‖u − relu(v)‖²_N + ½‖u − r⁻‖²_{Γ⁻} + ½‖v − r⁺‖²_{Γ⁺}`; noiseless: `u = relu(v)`.
fn joint_objective(c: &Case, u: &[f64], v: &[f64]) -> f64 {
    let d = v.len();
    let q = |x: &[f64], m: &DMat| -> f64 {
        let mut s = 0.0;
        for i in 0..d {
            for j in 0..d {
                s += x[i] * m[(i, j)] * x[j];
            }
        }
        0.5 * s
    };
    let rl: Vec<f64> = v.iter().map(|x| x.max(0.0)).collect();
    let dv: Vec<f64> = (0..d).map(|j| v[j] - c.rp[j]).collect();
    match &c.noise {
        Some(n) => {
            let e: Vec<f64> = (0..d).map(|j| u[j] - rl[j]).collect();
            let du: Vec<f64> = (0..d).map(|j| u[j] - c.rm[j]).collect();
            q(&e, n) + q(&du, &c.gm) + q(&dv, &c.gp)
        }
        None => {
            let du: Vec<f64> = (0..d).map(|j| rl[j] - c.rm[j]).collect();
            q(&du, &c.gm) + q(&dv, &c.gp)
        }
    }
}

#[test]
fn map_matches_a_generic_minimiser() {
    let mut rng = rng_from_seed(14);
    let mut worst_v: f64 = 0.0;
    let mut at_kink = 0;
    for t in 0..12 {
        let d = 2 + t % 2;
        let noisy = t % 3 != 0;
        let c = case(&mut rng, d, noisy, false);
        let layer = relu_layer(c.noise.clone(), Estimator::Map, d);
        let (v, _, u, _) = denoise_row(&layer, &c.rp, &c.gp, &c.rm, &c.gm);
        let lib = joint_objective(&c, &u, &v);
        // Nelder–Mead over (u, v) (noisy) or v (noiseless), from every orthant.
        let m = if noisy { 2 * d } else { d };
        let obj = |x: &[f64]| {
            if noisy {
                joint_objective(&c, &x[..d], &x[d..])
            } else {
                joint_objective(&c, &[], x)
            }
        };
        let mut best = (vec![], f64::INFINITY);
        for o in 0..(1usize << d) {
            let mut x0 = vec![0.0; m];
            for j in 0..d {
                let s = if o & (1 << j) != 0 { 1.0 } else { -1.0 };
                x0[m - d + j] = s * (c.rp[j].abs() + 0.3);
                if noisy {
                    x0[j] = c.rm[j];
                }
            }
            let r = nelder_mead(&obj, &x0, 0.3);
            if r.1 < best.1 {
                best = r;
            }
        }
        assert!(
            lib <= best.1 + 1e-12,
            "case {t}: library objective {lib} above Nelder-Mead {}",
            best.1
        );
        let vn = &best.0[m - d..];
        let dv = max_diff(&v, vn);
        worst_v = worst_v.max(dv);
        assert!(dv < 1e-6, "case {t}: v̂ {v:?} vs Nelder-Mead {vn:?}");
        if noisy {
            assert!(
                max_diff(&u, &best.0[..d]) < 1e-6,
                "case {t}: û {u:?} vs {:?}",
                &best.0[..d]
            );
        } else {
            let rl: Vec<f64> = v.iter().map(|x| x.max(0.0)).collect();
            assert_eq!(u, rl, "noiseless MAP: û = relu(v̂)");
        }
        at_kink += v.iter().filter(|x| **x == 0.0).count();
    }
    assert!(at_kink > 0, "some MAP should sit on a kink (face rule)");
    println!("relu MAP vs Nelder-Mead: max |v̂ − v_NM| = {worst_v:.2e}; {at_kink} coordinates at the kink");
}

/// `(∂ mean/∂r) ` by central differences in the row convention `J_ij = ∂ẑ_j/∂r_i`.
fn fd_jacobian(f: &dyn Fn(&[f64]) -> Vec<f64>, r: &[f64], h: f64) -> DMat {
    let d = r.len();
    let mut j = DMat::zeros(d, d);
    for i in 0..d {
        let mut a = r.to_vec();
        let mut b = r.to_vec();
        a[i] += h;
        b[i] -= h;
        let (fa, fb) = (f(&a), f(&b));
        for k in 0..d {
            j[(i, k)] = (fa[k] - fb[k]) / (2.0 * h);
        }
    }
    j
}

#[test]
fn jacobians_equal_precision_times_covariance() {
    let mut rng = rng_from_seed(15);
    let mut worst: f64 = 0.0;
    let mut checked = 0;
    for t in 0..16 {
        let d = 2 + t % 2;
        let est = if t % 4 < 2 {
            Estimator::Mmse
        } else {
            Estimator::Map
        };
        let c = case(&mut rng, d, t % 3 != 0, false);
        // A converged rule (48 nodes), so that finite differences see a smooth function.
        let layer = relu_layer(c.noise.clone(), est, d)
            .with_relu_mmse(ReluMmseMethod::Orthants { nodes: 48 })
            .unwrap();
        let (v, cv, _u, cu) = denoise_row(&layer, &c.rp, &c.gp, &c.rm, &c.gm);
        if est == Estimator::Map && v.iter().any(|x| x.abs() < 1e-3) {
            // Too close to a kink for finite differences (the face rule is exercised by the
            // Nelder–Mead test).
            continue;
        }
        let h = 1e-5;
        let jv = fd_jacobian(
            &|r: &[f64]| denoise_row(&layer, r, &c.gp, &c.rm, &c.gm).0,
            &c.rp,
            h,
        );
        let ju = fd_jacobian(
            &|r: &[f64]| denoise_row(&layer, &c.rp, &c.gp, r, &c.gm).2,
            &c.rm,
            h,
        );
        let ev = rel_err(&jv, &(&c.gp * &cv));
        let eu = rel_err(&ju, &(&c.gm * &cu));
        worst = worst.max(ev).max(eu);
        checked += 1;
        assert!(
            ev < 3e-5 && eu < 3e-5,
            "case {t} ({est:?}): {ev:.2e} {eu:.2e}"
        );
    }
    assert!(checked >= 10);
    println!("relu Jacobians vs Γ Σ ({checked} cases, MAP and MMSE): max rel error {worst:.2e}");
}

/// Relative Frobenius error between the predicted `Σ̄` and the empirical error covariance.
fn calibration(pred: &DMat, est: &Mat<f64>, truth: &Mat<f64>) -> f64 {
    let diff = to_dmat(est) - to_dmat(truth);
    let emp = diff.transpose() * &diff / est.nrows() as f64;
    rel_err(pred, &emp)
}

#[test]
fn mmse_covariance_is_calibrated() {
    // The matched model of the layer belief (spec §4.7, §6.3): the forward message has the
    // posterior form v = r⁺ + N(0, (Γ⁺)^{-1}) with r⁺ independent of the noise, u = relu(v) + ξ,
    // and the backward message r⁻ = u + N(0, (Γ⁻)^{-1}). Then the belief is the exact posterior
    // of (u, v) and Σ̄ must equal the empirical error covariance up to sampling noise.
    // The statistic's own sampling noise is ≈ 0.03·√(4000/n); thresholds ≈ 3.5 standard errors.
    let mut rng = rng_from_seed(16);
    let mut report = vec![];
    for (d, noisy, n, tol) in [
        (2, true, 20_000, 0.05),
        (2, false, 20_000, 0.05),
        (3, true, 8_000, 0.07),
        (3, false, 8_000, 0.07),
    ] {
        let gp = geometric_spd(d, 4.0, &mut rng);
        let gm = geometric_spd(d, 8.0, &mut rng);
        let noise = noisy.then(|| geometric_spd(d, 20.0, &mut rng));
        let spread = geometric_spd(d, 1.0, &mut rng);
        let rp = gaussian_rows(n, &spread.clone().cholesky().unwrap().l(), &mut rng);
        let v = &rp + &gaussian_rows(n, &inv(&gp).cholesky().unwrap().l(), &mut rng);
        let mut u = Mat::from_fn(n, d, |i, j| v[(i, j)].max(0.0));
        if let Some(nz) = &noise {
            u += &gaussian_rows(n, &inv(nz).cholesky().unwrap().l(), &mut rng);
        }
        let rm = &u + &gaussian_rows(n, &inv(&gm).cholesky().unwrap().l(), &mut rng);
        let layer = relu_layer(noise.clone(), Estimator::Mmse, d);
        let plus = Message {
            mean: rp,
            precision: Spd::new("Γ⁺", gp.clone(), Some(d)).unwrap(),
        };
        let minus = Message {
            mean: rm,
            precision: Spd::new("Γ⁻", gm.clone(), Some(d)).unwrap(),
        };
        let start = std::time::Instant::now();
        let b = layer.backward(&minus, &plus).unwrap();
        let f = layer.forward(&minus, &plus).unwrap();
        let secs = start.elapsed().as_secs_f64();
        let cv = calibration(&b.cov, &b.mean, &v);
        let cu = calibration(&f.cov, &f.mean, &u);
        report.push(format!(
            "d = {d} {}, n = {n}: Σ_vv {cv:.4}, Σ_uu {cu:.4} ({:.1} µs/row per call)",
            if noisy { "noisy" } else { "noiseless" },
            secs / (2.0 * n as f64) * 1e6
        ));
        assert!(cv < tol && cu < tol, "{}", report.last().unwrap());
    }
    println!(
        "relu MMSE calibration (relative Frobenius error):\n  {}",
        report.join("\n  ")
    );
}

/// A scalar relu VAMP denoiser (vampyre's `ReLUEst` equations), written independently: the
/// belief `N(v; r⁺, 1/γ) N(relu(v); r⁻, 1/p)` has pieces `v > 0` and `v < 0`; with
/// `Φ` from a series / continued-fraction `erfc`.
fn scalar_relu(gp: f64, p: f64, rp: f64, rm: f64) -> (f64, f64, f64, f64) {
    fn erfc(x: f64) -> f64 {
        if x < 0.0 {
            return 2.0 - erfc(-x);
        }
        if x < 3.0 {
            // erf by its Maclaurin series.
            let mut term = x;
            let mut s = x;
            let mut n = 0.0;
            while term.abs() > 1e-18 {
                n += 1.0;
                term *= -x * x / n;
                s += term / (2.0 * n + 1.0);
            }
            1.0 - s * 2.0 / std::f64::consts::PI.sqrt()
        } else {
            let mut f = x;
            for k in (1..200).rev() {
                f = x + 0.5 * k as f64 / f;
            }
            (-x * x).exp() / (std::f64::consts::PI.sqrt() * f)
        }
    }
    let cdf = |x: f64| 0.5 * erfc(-x / 2f64.sqrt());
    let pdf = |x: f64| (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt();
    // v > 0: N(v; m1, 1/h1) times Z1; v < 0: N(v; rp, 1/gp) times Z0.
    let h1 = gp + p;
    let m1 = (gp * rp + p * rm) / h1;
    let s1 = 1.0 / h1.sqrt();
    let z1 = (-0.5 * gp * p * (rp - rm).powi(2) / h1).exp() / h1.sqrt() * cdf(m1 / s1);
    let s0 = 1.0 / gp.sqrt();
    let z0 = (-0.5 * p * rm * rm).exp() / gp.sqrt() * cdf(-rp / s0);
    let w1 = z1 / (z1 + z0);
    let a1 = m1 / s1;
    let l1 = pdf(a1) / cdf(a1);
    let e1 = m1 + s1 * l1;
    let v1 = s1 * s1 * (1.0 - l1 * (l1 + a1));
    let a0 = -rp / s0;
    let l0 = pdf(a0) / cdf(a0);
    let e0 = rp - s0 * l0;
    let v0 = s0 * s0 * (1.0 - l0 * (l0 + a0));
    let mean = w1 * e1 + (1.0 - w1) * e0;
    let second = w1 * (v1 + e1 * e1) + (1.0 - w1) * (v0 + e0 * e0);
    let rmean = w1 * e1;
    let rsecond = w1 * (v1 + e1 * e1);
    (mean, second - mean * mean, rmean, rsecond - rmean * rmean)
}

#[test]
fn d1_equals_a_scalar_relu_vamp_denoiser() {
    let mut rng = rng_from_seed(17);
    let n = 200;
    let g = standard_normal(n, 2, &mut rng);
    let (gp, gm, nz) = (1.7, 3.1, 9.0);
    let mut worst: f64 = 0.0;
    for noisy in [true, false] {
        let noise = noisy.then(|| DMat::from_element(1, 1, nz));
        let layer = relu_layer(noise, Estimator::Mmse, 1);
        let plus = Message {
            mean: Mat::from_fn(n, 1, |i, _| 1.5 * g[(i, 0)]),
            precision: Spd::scaled_identity(1, gp).unwrap(),
        };
        let minus = Message {
            mean: Mat::from_fn(n, 1, |i, _| 0.3 + 1.5 * g[(i, 1)]),
            precision: Spd::scaled_identity(1, gm).unwrap(),
        };
        let b = layer.backward(&minus, &plus).unwrap();
        let f = layer.forward(&minus, &plus).unwrap();
        let p = if noisy {
            1.0 / (1.0 / nz + 1.0 / gm)
        } else {
            gm
        };
        let (mut vbar, mut cbar) = (0.0, 0.0);
        for i in 0..n {
            let (m, v, rmn, rv) = scalar_relu(gp, p, plus.mean[(i, 0)], minus.mean[(i, 0)]);
            let u = if noisy {
                (rmn * nz + minus.mean[(i, 0)] * gm) / (nz + gm)
            } else {
                rmn
            };
            worst = worst
                .max((b.mean[(i, 0)] - m).abs())
                .max((f.mean[(i, 0)] - u).abs());
            vbar += v / n as f64;
            cbar += rv / n as f64;
        }
        let ubar = if noisy {
            let a = 1.0 / (nz + gm);
            a + a * nz * cbar * nz * a
        } else {
            cbar
        };
        worst = worst
            .max((b.cov[(0, 0)] - vbar).abs())
            .max((f.cov[(0, 0)] - ubar).abs());
    }
    assert!(worst < 1e-10, "d = 1 vs scalar relu VAMP: {worst:.3e}");
    println!("relu d = 1 vs scalar relu VAMP denoiser: max abs difference {worst:.2e}");
}

#[test]
fn errors_are_reported() {
    let e = ActivationLayer::new(Activation::Relu, None, Estimator::Mmse, 7).unwrap_err();
    assert!(e.to_string().contains("d <= 6"), "{e}");
    let s = ActivationLayer::new(Activation::Sigmoid, None, Estimator::Mmse, 2).unwrap();
    let msg = one_row_message(&[0.0, 0.0], &DMat::identity(2, 2));
    let e = s.forward(&msg, &msg).unwrap_err();
    assert!(e.to_string().contains("not implemented"), "{e}");
    let layer = relu_layer(None, Estimator::Mmse, 2);
    let bad = one_row_message(&[f64::NAN, 0.0], &DMat::identity(2, 2));
    let e = layer.forward(&bad, &msg).unwrap_err();
    assert!(e.to_string().contains("R⁻"), "{e}");
    let e = layer
        .clone()
        .with_relu_mmse(ReluMmseMethod::Orthants { nodes: 1 })
        .unwrap_err();
    assert!(e.to_string().contains("nodes"), "{e}");
}

/// Per-row cost of the relu denoisers (run with `--release -- --ignored --nocapture`).
#[test]
#[ignore]
fn timing() {
    let n = 20_000;
    let mut rng = rng_from_seed(18);
    for d in [2, 3, 4] {
        let gp = geometric_spd(d, 4.0, &mut rng);
        let gm = geometric_spd(d, 8.0, &mut rng);
        let nz = geometric_spd(d, 20.0, &mut rng);
        let plus = Message {
            mean: standard_normal(n, d, &mut rng),
            precision: Spd::new("Γ⁺", gp, Some(d)).unwrap(),
        };
        let minus = Message {
            mean: standard_normal(n, d, &mut rng) * faer::Scale(0.7),
            precision: Spd::new("Γ⁻", gm, Some(d)).unwrap(),
        };
        for est in [Estimator::Mmse, Estimator::Map] {
            let layer = relu_layer(Some(nz.clone()), est, d);
            let start = std::time::Instant::now();
            let b = layer.backward(&minus, &plus).unwrap();
            let secs = start.elapsed().as_secs_f64();
            assert!(b.cov.iter().all(|x| x.is_finite()));
            println!(
                "d = {d} {est:?}: {:.2} µs per row ({} threads)",
                secs / n as f64 * 1e6,
                rayon::current_num_threads()
            );
        }
    }
}
