//! Row-sparse priors for multi-task / multiple-measurement-vector regression (spec §5.2–5.3).

use super::quadrature;
use super::{gaussian_rows, InputPrior, Rng};
use crate::error::{Error, Result};
use crate::message::{Belief, Message};
use crate::rows::{check_finite, par_map_rows, read_row};
use crate::se::{SeBackward, SeContext, SeEstimate, SeForward, SeStep};
use crate::spd::{sym, DMat, Spd};
use faer::Mat;
use rand::RngExt;

/// Row-sparse Bernoulli–Gaussian prior: a row is `0` with probability `1 − ρ`, else
/// `N(μ_0, Σ_0)` (full `d x d` slab covariance). MMSE denoiser (spec §5.2).
#[derive(Clone, Debug)]
pub struct BernoulliGaussianPrior {
    rho: f64,
    mean: Vec<f64>,
    cov: Spd,
    prec: Spd,
}

impl BernoulliGaussianPrior {
    /// `sparsity` = `ρ ∈ (0, 1]` (probability that a row is non-zero), slab mean and covariance.
    pub fn new(sparsity: f64, mean: Vec<f64>, cov: DMat) -> Result<Self> {
        if !(sparsity > 0.0 && sparsity <= 1.0) {
            return Err(Error::invalid(
                "sparsity",
                format!("must be in (0, 1], got {sparsity}"),
            ));
        }
        let d = mean.len();
        if d == 0 {
            return Err(Error::invalid("slab mean", "d must be at least 1"));
        }
        if let Some(x) = mean.iter().find(|x| !x.is_finite()) {
            return Err(Error::NonFinite {
                what: "slab mean".into(),
                detail: format!("entry is {x}"),
            });
        }
        let cov = Spd::new("slab covariance", cov, Some(d))?;
        let prec = Spd::from_symmetric("slab precision", cov.inverse())?;
        Ok(BernoulliGaussianPrior {
            rho: sparsity,
            mean,
            cov,
            prec,
        })
    }
    /// `ρ`.
    pub fn sparsity(&self) -> f64 {
        self.rho
    }
    /// The slab mean.
    pub fn slab_mean(&self) -> &[f64] {
        &self.mean
    }
    /// The slab covariance `Σ_0`.
    pub fn slab_covariance(&self) -> &Spd {
        &self.cov
    }
}

/// Stable logistic function.
pub fn logistic(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// The per-call constants of the Bernoulli–Gaussian denoiser for a given `Γ` (spec §5.2).
struct BgRowDenoiser {
    d: usize,
    mean: Vec<f64>,
    g: DMat,
    c1: DMat,
    gc: DMat,
    mu_term: Vec<f64>,
    s_inv: DMat,
    logdet: f64,
    prior_logit: f64,
}

impl BgRowDenoiser {
    fn new(p: &BernoulliGaussianPrior, gamma: &Spd) -> Result<Self> {
        let d = p.dim();
        let g = gamma.matrix().clone();
        let post = Spd::from_symmetric("Σ_0^{-1} + Γ", p.prec.matrix() + &g)?;
        let c1 = post.inverse();
        let gc = &g * &c1;
        let mu = DMat::from_row_slice(1, d, &p.mean);
        let mu_term = (&mu * p.prec.matrix() * &c1).iter().copied().collect();
        // S^{-1} with S = Σ_0 + Γ^{-1}: Woodbury S^{-1} = Γ − Γ C_1 Γ.
        let s_inv = sym(&(&g - &g * &c1 * &g));
        // log det(I + Σ_0 Γ) = log det(Σ_0) + log det(Σ_0^{-1} + Γ)
        let logdet = p.cov.logdet() + post.logdet();
        let prior_logit = if p.rho >= 1.0 {
            f64::INFINITY
        } else {
            (p.rho / (1.0 - p.rho)).ln()
        };
        Ok(BgRowDenoiser {
            d,
            mean: p.mean.clone(),
            g,
            c1,
            gc,
            mu_term,
            s_inv,
            logdet,
            prior_logit,
        })
    }

    /// One row: writes `ẑ` into `z` and adds `w · Σ_i` into `cov` (row-major `d x d`).
    #[inline]
    fn row(&self, r: &[f64], z: &mut [f64], cov: &mut [f64], w: f64) {
        let d = self.d;
        let mut m1 = [0.0f64; 16];
        let mut quad_g = 0.0;
        let mut quad_s = 0.0;
        for j in 0..d {
            let mut acc = self.mu_term[j];
            for k in 0..d {
                acc += r[k] * self.gc[(k, j)];
            }
            m1[j] = acc;
        }
        for a in 0..d {
            let da = r[a] - self.mean[a];
            for b in 0..d {
                quad_g += r[a] * self.g[(a, b)] * r[b];
                quad_s += da * self.s_inv[(a, b)] * (r[b] - self.mean[b]);
            }
        }
        let llr = (self.prior_logit - 0.5 * self.logdet + 0.5 * quad_g - 0.5 * quad_s)
            .clamp(-700.0, 700.0);
        let pi = logistic(llr);
        for j in 0..d {
            z[j] = pi * m1[j];
        }
        let v = pi * (1.0 - pi);
        for a in 0..d {
            for b in 0..d {
                cov[a * d + b] += w * (pi * self.c1[(a, b)] + v * m1[a] * m1[b]);
            }
        }
    }
}

/// Largest `d` for which the Bernoulli–Gaussian SE step uses tensor Gauss–Hermite quadrature
/// (beyond it, the Monte-Carlo default).
pub const BG_QUADRATURE_MAX_D: usize = 4;

fn bg_nodes(d: usize) -> usize {
    match d {
        1 => 80,
        2 => 40,
        3 => 20,
        _ => 12,
    }
}

impl InputPrior for BernoulliGaussianPrior {
    fn describe(&self) -> String {
        format!(
            "row-sparse Bernoulli-Gaussian prior (rho = {}, d = {})",
            self.rho,
            self.mean.len()
        )
    }
    fn dim(&self) -> usize {
        self.mean.len()
    }
    /// Spec §5.2: with `C_1 = (Σ_0^{-1} + Γ)^{-1}` and `m_1 = (rΓ + μ_0Σ_0^{-1}) C_1`,
    /// `LLR = log(ρ/(1−ρ)) + log N(r; μ_0, Σ_0 + Γ^{-1}) − log N(r; 0, Γ^{-1})`,
    /// `π = logistic(LLR)`, `ẑ = π m_1`, `Σ_i = π C_1 + π(1−π) m_1^T m_1`.
    fn denoise(&self, incoming: &Message) -> Result<Belief> {
        let d = self.dim();
        incoming.check("backward message R⁻ into the prior", incoming.rows(), d)?;
        check_finite("message into the row-sparse prior", incoming.mean.as_ref())?;
        if d > 16 {
            return Err(Error::invalid(
                "d",
                "the row-sparse prior supports at most 16 columns",
            ));
        }
        let den = BgRowDenoiser::new(self, &incoming.precision)?;
        let r = incoming.mean.as_ref();
        let out = par_map_rows(r.nrows(), d, d * d, |i, zrow, acc| {
            let mut ri = [0.0f64; 16];
            read_row(r, i, &mut ri[..d]);
            den.row(&ri[..d], zrow, acc, 1.0);
            Ok(())
        })?;
        let n = r.nrows().max(1) as f64;
        let cov = DMat::from_fn(d, d, |a, b| out.acc[a * d + b] / n);
        Ok(Belief {
            mean: out.rows,
            cov: sym(&cov),
        })
    }

    /// Exact SE step (spec §6.2 (P)) by quadrature instead of Monte Carlo: given the indicator,
    /// `(z, r⁻ = zΨ⁻ + c)` is jointly Gaussian, so every expectation is an integral over `r`
    /// alone, with `E[z | r] = μ_0 + (r − m_r) S^+ Ψ^T Σ_0`, `S = Ψ^T Σ_0 Ψ + T⁻` for the slab
    /// and `z = 0` for the spike. The `d`-dimensional integrals use tensor Gauss–Hermite rules
    /// (`d ≤ 4`; Monte Carlo beyond).
    fn se_forward(
        &self,
        minus: &SeBackward,
        ctx: &SeContext<'_>,
        prev: Option<&Spd>,
    ) -> Result<SeStep<SeForward>> {
        let d = self.dim();
        if d > BG_QUADRATURE_MAX_D || ctx.want_samples {
            return crate::se::mc::prior_forward(self, minus, ctx, prev);
        }
        let den = BgRowDenoiser::new(self, &minus.gamma)?;
        let (x, w) = quadrature::gauss_hermite(bg_nodes(d))?;
        let npts = x.len().pow(d as u32);
        let mu = DMat::from_row_slice(1, d, &self.mean);
        // Components: (weight, m_r, S^{1/2}, S^{+1/2} Ψ^T Σ_0 (maps g to E[z|r] − μ), z mean).
        let sqrt_pinv = |s: &DMat| {
            let e = nalgebra::SymmetricEigen::new(sym(s));
            let tol = 1e-14
                * e.eigenvalues
                    .iter()
                    .fold(0.0f64, |m, v| m.max(v.abs()))
                    .max(f64::MIN_POSITIVE);
            let q = &e.eigenvectors;
            let root =
                q * DMat::from_diagonal(&e.eigenvalues.map(|v| v.max(0.0).sqrt())) * q.transpose();
            let pinv =
                q * DMat::from_diagonal(&e.eigenvalues.map(|v| {
                    if v > tol {
                        1.0 / v.sqrt()
                    } else {
                        0.0
                    }
                })) * q.transpose();
            (root, pinv)
        };
        let (spike_root, _) = sqrt_pinv(&minus.t);
        let slab_s = minus.psi.transpose() * self.cov.matrix() * &minus.psi + &minus.t;
        let (slab_root, slab_pinv) = sqrt_pinv(&slab_s);
        let slab_gain = &slab_pinv * minus.psi.transpose() * self.cov.matrix();
        struct Comp {
            weight: f64,
            m_r: DMat,
            root: DMat,
            gain: Option<DMat>,
        }
        let comps = [
            Comp {
                weight: 1.0 - self.rho,
                m_r: DMat::zeros(1, d),
                root: spike_root,
                gain: None,
            },
            Comp {
                weight: self.rho,
                m_r: &mu * &minus.psi,
                root: slab_root,
                gain: Some(slab_gain),
            },
        ];
        // First pass: E[Σ] and the needed moments of (r, ẑ, E[z|r]).
        let mut sigma = vec![0.0; d * d];
        let mut e_zz = DMat::zeros(d, d); // E[ẑ^T ẑ]
        let mut e_rz = DMat::zeros(d, d); // E[r^T ẑ]
        let mut e_rr = DMat::zeros(d, d); // E[r^T r]
        let mut e_tz = DMat::zeros(d, d); // E[z^T ẑ]
        let mut e_tr = DMat::zeros(d, d); // E[z^T r]
        let mut idx = vec![0usize; d];
        let (mut g, mut r, mut zh, mut zt) =
            ([0.0f64; 16], [0.0f64; 16], [0.0f64; 16], [0.0f64; 16]);
        for comp in &comps {
            if comp.weight == 0.0 {
                continue;
            }
            idx.iter_mut().for_each(|v| *v = 0);
            for _ in 0..npts {
                let mut wk = comp.weight;
                for j in 0..d {
                    g[j] = x[idx[j]];
                    wk *= w[idx[j]];
                }
                for j in 0..d {
                    r[j] = comp.m_r[(0, j)] + (0..d).map(|k| g[k] * comp.root[(k, j)]).sum::<f64>();
                    zt[j] = match &comp.gain {
                        Some(gain) => {
                            self.mean[j] + (0..d).map(|k| g[k] * gain[(k, j)]).sum::<f64>()
                        }
                        None => 0.0,
                    };
                }
                den.row(&r[..d], &mut zh[..d], &mut sigma, wk);
                for a in 0..d {
                    for b in 0..d {
                        e_zz[(a, b)] += wk * zh[a] * zh[b];
                        e_rz[(a, b)] += wk * r[a] * zh[b];
                        e_rr[(a, b)] += wk * r[a] * r[b];
                        e_tz[(a, b)] += wk * zt[a] * zh[b];
                        e_tr[(a, b)] += wk * zt[a] * r[b];
                    }
                }
                for v in idx.iter_mut() {
                    *v += 1;
                    if *v < x.len() {
                        break;
                    }
                    *v = 0;
                }
            }
        }
        let predicted = sym(&DMat::from_fn(d, d, |a, b| sigma[a * d + b]));
        let (lambda, gamma) = ctx.policy.precision_update(
            &predicted,
            &minus.gamma,
            prev,
            &ctx.location,
            ctx.iteration,
        )?;
        // E[z^T z] exactly; e⁺ = R_out − z with R_out = ẑ A − r B, A = Λ Γ_out^{-1}, B = Γ⁻ Γ_out^{-1}.
        let e_zz_true = (self.cov.matrix() + mu.transpose() * &mu) * self.rho;
        let a = gamma.solve_right(&lambda);
        let b = gamma.solve_right(minus.gamma.matrix());
        // E[R^T R], E[z^T R]
        let e_out_out = a.transpose() * &e_zz * &a
            - a.transpose() * e_rz.transpose() * &b
            - b.transpose() * &e_rz * &a
            + b.transpose() * &e_rr * &b;
        let e_z_out = &e_tz * &a - &e_tr * &b;
        let e_ze = &e_z_out - &e_zz_true;
        let e_ee = &e_out_out - &e_z_out - e_z_out.transpose() + &e_zz_true;
        let mut k = DMat::zeros(2 * d, 2 * d);
        k.view_mut((0, 0), (d, d)).copy_from(&e_zz_true);
        k.view_mut((0, d), (d, d)).copy_from(&e_ze);
        k.view_mut((d, 0), (d, d)).copy_from(&e_ze.transpose());
        k.view_mut((d, d), (d, d)).copy_from(&e_ee);
        let mut joint = DMat::zeros(2 * d, 2 * d);
        joint.view_mut((0, 0), (d, d)).copy_from(&e_zz_true);
        joint.view_mut((0, d), (d, d)).copy_from(&e_tz);
        joint.view_mut((d, 0), (d, d)).copy_from(&e_tz.transpose());
        joint.view_mut((d, d), (d, d)).copy_from(&e_zz);
        let error_cov = &e_zz - &e_tz - e_tz.transpose() + &e_zz_true;
        Ok(SeStep {
            out: SeForward { k: sym(&k), gamma },
            estimate: SeEstimate {
                error_cov: sym(&error_cov),
                joint: sym(&joint),
                predicted_cov: predicted,
                samples: None,
            },
        })
    }

    fn sample(&self, n: usize, rng: &mut Rng) -> Result<Mat<f64>> {
        let d = self.dim();
        let mut z = gaussian_rows(n, self.cov.cholesky_lower(), rng);
        for i in 0..n {
            let on = rng.random::<f64>() < self.rho;
            for j in 0..d {
                z[(i, j)] = if on { z[(i, j)] + self.mean[j] } else { 0.0 };
            }
        }
        Ok(z)
    }
}
