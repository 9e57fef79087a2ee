//! With `d = 1` ML-Mat-VAMP is scalar ML-VAMP (spec §8.2.3).
//!
//! An independent scalar ML-VAMP is written here in the vampyre form (`α = ⟨g'⟩`, `η = γ/α`,
//! `γ_new = η − γ`, `r_new = (ηẑ − γr)/γ_new`) with its own denoisers:
//! * the Bernoulli–Gaussian prior, with its derivative `g'` differentiated by hand (not via a
//!   posterior variance);
//! * the linear layer as a dense joint Gaussian solve over `(z_1, z_0)` (no SVD), with
//!   `g'` the diagonal of the linear estimator's derivative;
//! * the AWGN output.
//!
//! It runs the solver's schedule (prior → linear forward → output → linear backward) from the
//! solver's initialisation (`R⁻ = 0`, `Γ⁻ = gamma_init`), and every iterate — all estimates,
//! all message means and precisions — must agree with the library to `1e-12` relative.

mod common;

use common::*;
use faer::Mat;
use mlmatvamp::prelude::*;
use nalgebra::{DMatrix, DVector};
use std::sync::Arc;

/// The scalar problem: `z_0` i.i.d. `(1−ρ)δ_0 + ρ N(μ, v)`, `z_1 = W z_0 + b (+ N(0, 1/n_lin))`,
/// `y = z_1 + N(0, 1/n_out)`.
struct Problem {
    rho: f64,
    mu: f64,
    v: f64,
    w: DMatrix<f64>,
    b: DVector<f64>,
    n_lin: Option<f64>,
    n_out: f64,
    y: DVector<f64>,
}

/// One scalar message.
#[derive(Clone, Debug)]
struct Msg {
    r: DVector<f64>,
    gamma: f64,
}

/// A scalar estimate with its `α = ⟨g'⟩` and the precision `γ` of the message it consumed.
#[derive(Clone, Debug)]
struct Est {
    z: DVector<f64>,
    alpha: f64,
    gamma_in: f64,
}

/// The vampyre message update: `η = γ/α`, `γ_new = η − γ`, `r_new = (ηẑ − γr)/γ_new`.
fn update(est: &Est, incoming: &Msg) -> Msg {
    let eta = incoming.gamma / est.alpha;
    let gamma = eta - incoming.gamma;
    let r = (&est.z * eta - &incoming.r * incoming.gamma) / gamma;
    Msg { r, gamma }
}

impl Problem {
    /// Bernoulli–Gaussian MMSE denoiser and its derivative in `r`, for a message `N(r, 1/γ)`.
    ///
    /// `p(z | r) = (1−π) δ_0 + π N(m, c)`, `c = 1/(1/v + γ)`, `m = c(μ/v + γr)`,
    /// `π = logistic(L)`, `L = log(ρ/(1−ρ)) + log N(r; μ, v + 1/γ) − log N(r; 0, 1/γ)`.
    /// `ẑ = π m`, `dẑ/dr = π'(r) m + π cγ`, `π' = π(1−π) dL/dr`,
    /// `dL/dr = −(r − μ)/(v + 1/γ) + γ r`.
    fn prior(&self, msg: &Msg) -> Est {
        let g = msg.gamma;
        let c = 1.0 / (1.0 / self.v + g);
        let s = self.v + 1.0 / g;
        let n = msg.r.len();
        let mut z = DVector::zeros(n);
        let mut dsum = 0.0;
        for i in 0..n {
            let r = msg.r[i];
            let m = c * (self.mu / self.v + g * r);
            let llr = (self.rho / (1.0 - self.rho)).ln()
                - 0.5 * (s * g).ln()
                - 0.5 * (r - self.mu).powi(2) / s
                + 0.5 * g * r * r;
            let pi = 1.0 / (1.0 + (-llr).exp());
            let dl = -(r - self.mu) / s + g * r;
            z[i] = pi * m;
            dsum += pi * (1.0 - pi) * dl * m + pi * c * g;
        }
        Est {
            z,
            alpha: dsum / n as f64,
            gamma_in: g,
        }
    }

    /// The linear layer's joint Gaussian belief over `(z_1, z_0)`, solved densely. Returns
    /// `(ẑ_1 with α⁺ = ⟨∂ẑ_1/∂r⁻⟩, ẑ_0 with α⁻ = ⟨∂ẑ_0/∂r⁺⟩)`.
    fn linear(&self, minus: &Msg, plus: &Msg) -> (Est, Est) {
        let (n1, n0) = self.w.shape();
        let (gm, gp) = (minus.gamma, plus.gamma);
        match self.n_lin {
            Some(nl) => {
                // Unknowns x = [z_1; z_0]; energy ½nl|z_1 − W z_0 − b|² + ½gm|z_1 − r⁻|² + ½gp|z_0 − r⁺|².
                let m = n1 + n0;
                let mut p = DMatrix::<f64>::zeros(m, m);
                let mut h = DVector::<f64>::zeros(m);
                for i in 0..n1 {
                    p[(i, i)] += nl + gm;
                    h[i] += nl * self.b[i] + gm * minus.r[i];
                }
                for j in 0..n0 {
                    p[(n1 + j, n1 + j)] += gp;
                    h[n1 + j] += gp * plus.r[j];
                }
                let wtw = self.w.transpose() * &self.w * nl;
                let mut blk = p.view_mut((n1, n1), (n0, n0));
                blk += &wtw;
                let cross = &self.w * (-nl);
                p.view_mut((0, n1), (n1, n0)).copy_from(&cross);
                p.view_mut((n1, 0), (n0, n1)).copy_from(&cross.transpose());
                let wtb = self.w.transpose() * &self.b * nl;
                for j in 0..n0 {
                    h[n1 + j] -= wtb[j];
                }
                let chol = p.cholesky().unwrap();
                let x = chol.solve(&h);
                let cov = chol.inverse();
                // x = P^{-1} h and h depends on r⁻ through gm·r⁻, on r⁺ through gp·r⁺.
                let a_plus = (0..n1).map(|i| cov[(i, i)]).sum::<f64>() * gm / n1 as f64;
                let a_minus = (0..n0).map(|j| cov[(n1 + j, n1 + j)]).sum::<f64>() * gp / n0 as f64;
                (
                    Est {
                        z: x.rows(0, n1).into_owned(),
                        alpha: a_plus,
                        gamma_in: gm,
                    },
                    Est {
                        z: x.rows(n1, n0).into_owned(),
                        alpha: a_minus,
                        gamma_in: gp,
                    },
                )
            }
            None => {
                // z_1 = W z_0 + b exactly; energy ½gm|W z_0 + b − r⁻|² + ½gp|z_0 − r⁺|².
                let p = self.w.transpose() * &self.w * gm + DMatrix::identity(n0, n0) * gp;
                let h = self.w.transpose() * (&minus.r - &self.b) * gm + &plus.r * gp;
                let chol = p.cholesky().unwrap();
                let z0 = chol.solve(&h);
                let cov = chol.inverse();
                let z1 = &self.w * &z0 + &self.b;
                // ∂ẑ_1/∂r⁻ = W P^{-1} W^T gm; ∂ẑ_0/∂r⁺ = P^{-1} gp.
                let wcw = &self.w * &cov * self.w.transpose();
                (
                    Est {
                        z: z1,
                        alpha: wcw.trace() * gm / n1 as f64,
                        gamma_in: gm,
                    },
                    Est {
                        z: z0,
                        alpha: cov.trace() * gp / n0 as f64,
                        gamma_in: gp,
                    },
                )
            }
        }
    }

    /// AWGN output: `ẑ = (γr + n y)/(γ + n)`, `g' = γ/(γ + n)`.
    fn output(&self, plus: &Msg) -> Est {
        let g = plus.gamma;
        let z = (&plus.r * g + &self.y * self.n_out) / (g + self.n_out);
        Est {
            z,
            alpha: g / (g + self.n_out),
            gamma_in: g,
        }
    }
}

/// All iterates of one iteration, per variable `l ∈ {0, 1}`.
#[derive(Clone, Debug)]
struct Snapshot {
    est_plus: [(DVector<f64>, f64); 2],
    est_minus: [(DVector<f64>, f64); 2],
    plus: [Msg; 2],
    minus: [Msg; 2],
}

fn scalar_run(p: &Problem, gamma_init: f64, iterations: usize) -> Vec<Snapshot> {
    let (n1, n0) = p.w.shape();
    let mut minus0 = Msg {
        r: DVector::zeros(n0),
        gamma: gamma_init,
    };
    let mut minus1 = Msg {
        r: DVector::zeros(n1),
        gamma: gamma_init,
    };
    let mut out = vec![];
    // Belief covariance Σ̄ = α/γ_in, i.e. Λ = η.
    let cov = |e: &Est| (e.z.clone(), e.alpha / e.gamma_in);
    for _ in 0..iterations {
        // Forward pass.
        let e0 = p.prior(&minus0);
        let plus0 = update(&e0, &minus0);
        let (e1, _) = p.linear(&minus1, &plus0);
        let plus1 = update(&e1, &minus1);
        // Backward pass.
        let f1 = p.output(&plus1);
        minus1 = update(&f1, &plus1);
        let (_, f0) = p.linear(&minus1, &plus0);
        minus0 = update(&f0, &plus0);
        out.push(Snapshot {
            est_plus: [cov(&e0), cov(&e1)],
            est_minus: [cov(&f0), cov(&f1)],
            plus: [plus0.clone(), plus1.clone()],
            minus: [minus0.clone(), minus1.clone()],
        });
    }
    out
}

fn vec_of(m: &Mat<f64>) -> DVector<f64> {
    DVector::from_fn(m.nrows(), |i, _| m[(i, 0)])
}

/// Relative difference (absolute when the reference is exactly zero, e.g. `ẑ = 0` at `k = 0`).
fn rel(a: f64, b: f64) -> f64 {
    let d = (a - b).abs();
    if b != 0.0 {
        d / b.abs()
    } else {
        d
    }
}

fn rel_v(a: &DVector<f64>, b: &DVector<f64>) -> f64 {
    let d = (a - b).norm();
    if b.norm() > 0.0 {
        d / b.norm()
    } else {
        d
    }
}

/// Builds the same problem in the library (d = 1), runs both, and returns the worst relative
/// difference over all iterates.
fn compare(p: &Problem, iterations: usize) -> f64 {
    let gamma_init = 1e-3;
    let (n1, n0) = p.w.shape();
    let prior = Arc::new(
        BernoulliGaussianPrior::new(p.rho, vec![p.mu], DMat::from_element(1, 1, p.v)).unwrap(),
    );
    let wm = to_mat(&p.w);
    let bias = Mat::from_fn(n1, 1, |i, _| p.b[i]);
    let noise = p.n_lin.map(|x| Spd::scaled_identity(1, x).unwrap());
    let layer = Arc::new(LinearLayer::new(wm.as_ref(), Some(bias), noise, 1).unwrap());
    let y = Mat::from_fn(n1, 1, |i, _| p.y[i]);
    let out =
        Arc::new(AwgnOutput::new(y, Spd::scaled_identity(1, p.n_out).unwrap(), None).unwrap());
    let net = Network::new(prior, n0, vec![layer], out).unwrap();
    let config = SolverConfig {
        iterations,
        gamma_init,
        ..Default::default()
    };
    let mut lib = vec![];
    Solver::new(config.clone())
        .unwrap()
        .run_with(&net, None, &mut |_, s| {
            lib.push(s.clone());
            Control::Continue
        })
        .unwrap();
    let scalar = scalar_run(p, gamma_init, iterations);
    assert_eq!(lib.len(), iterations);
    let (lo, hi) = (config.policy.lam_min, config.policy.lam_max);
    let mut worst = 0.0f64;
    for (k, (s, t)) in lib.iter().zip(&scalar).enumerate() {
        let mut worst_k = 0.0f64;
        for l in 0..2 {
            let bp = s.estimate_plus(l).unwrap();
            let bm = s.estimate_minus(l).unwrap();
            let mp = s.plus(l).unwrap();
            let mm = s.minus(l).unwrap();
            let errs = [
                rel_v(&vec_of(&bp.mean), &t.est_plus[l].0),
                rel(bp.cov[(0, 0)], t.est_plus[l].1),
                rel_v(&vec_of(&bm.mean), &t.est_minus[l].0),
                rel(bm.cov[(0, 0)], t.est_minus[l].1),
                rel_v(&vec_of(&mp.mean), &t.plus[l].r),
                rel(mp.precision.matrix()[(0, 0)], t.plus[l].gamma),
                rel_v(&vec_of(&mm.mean), &t.minus[l].r),
                rel(mm.precision.matrix()[(0, 0)], t.minus[l].gamma),
            ];
            for e in errs {
                assert!(e.is_finite());
                worst_k = worst_k.max(e);
            }
            // The default clipping [1e-12, 1e12] must not bind: every raw precision of the
            // independent run lies well inside.
            for g in [t.plus[l].gamma, t.minus[l].gamma] {
                assert!(
                    g > 10.0 * lo && g < hi / 10.0,
                    "k = {k}: γ = {g} near the clip bounds"
                );
            }
        }
        if k < 3 || k + 1 == iterations {
            println!(
                "k = {k}: worst rel diff {worst_k:.2e}, γ⁺_0 = {:.4e}, γ⁻_0 = {:.4e}, γ⁺_1 = {:.4e}, γ⁻_1 = {:.4e}",
                t.plus[0].gamma, t.minus[0].gamma, t.plus[1].gamma, t.minus[1].gamma
            );
        }
        worst = worst.max(worst_k);
    }
    // Non-vacuous: the iterates moved a lot over the run.
    let first = &scalar[0].est_plus[0].0;
    let last = &scalar[iterations - 1].est_plus[0].0;
    assert!(rel_v(first, last) > 0.1, "iterates did not move");
    worst
}

/// A sparse problem `Y = W Z_0 + b + noise`, with `Z_0` drawn from the prior.
fn problem(seed: u64, n0: usize, n1: usize, mu: f64, n_lin: Option<f64>) -> Problem {
    let mut rng = rng_from_seed(seed);
    let (rho, v, n_out): (f64, f64, f64) = (0.2, 1.5, 40.0);
    let w = to_dmat(&gaussian_w(n1, n0, &mut rng));
    let b = to_dmat(&standard_normal(n1, 1, &mut rng)).column(0) * 0.2;
    let g = to_dmat(&standard_normal(n0, 1, &mut rng));
    let u: Vec<f64> = {
        use rand::RngExt;
        (0..n0).map(|_| rng.random::<f64>()).collect()
    };
    let z0 = DVector::from_fn(n0, |i, _| {
        if u[i] < rho {
            mu + v.sqrt() * g[(i, 0)]
        } else {
            0.0
        }
    });
    let mut z1 = &w * &z0 + &b;
    if let Some(nl) = n_lin {
        z1 += to_dmat(&standard_normal(n1, 1, &mut rng)).column(0) / nl.sqrt();
    }
    let y = z1 + to_dmat(&standard_normal(n1, 1, &mut rng)).column(0) / n_out.sqrt();
    Problem {
        rho,
        mu,
        v,
        w,
        b,
        n_lin,
        n_out,
        y,
    }
}

#[test]
fn wide_noiseless_layer_matches_scalar_ml_vamp() {
    // Compressed sensing: n_1 < n_0 (input-only rows in the SVD), noiseless W.
    let p = problem(5, 120, 80, 0.0, None);
    let worst = compare(&p, 20);
    println!("worst relative difference over 20 iterations: {worst:.3e}");
    assert!(worst < 1e-12, "{worst:e}");
}

#[test]
fn tall_noisy_layer_with_slab_mean_matches_scalar_ml_vamp() {
    // n_1 > n_0 (output-only rows), noisy W, non-zero slab mean.
    let p = problem(6, 60, 90, 0.7, Some(25.0));
    let worst = compare(&p, 20);
    println!("worst relative difference over 20 iterations: {worst:.3e}");
    assert!(worst < 1e-12, "{worst:e}");
}
