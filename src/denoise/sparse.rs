//! Row-sparse priors for multi-task / multiple-measurement-vector regression (spec §5.2–5.3).

use super::{gaussian_rows, InputPrior, Rng};
use crate::error::{Error, Result};
use crate::message::{Belief, Message};
use crate::rows::{check_finite, par_map_rows};
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
        let g = incoming.precision.matrix();
        let post = Spd::from_symmetric("Σ_0^{-1} + Γ", self.prec.matrix() + g)?;
        let c1 = post.inverse();
        let gc = g * &c1;
        let mu = DMat::from_row_slice(1, d, &self.mean);
        let mu_term = &mu * self.prec.matrix() * &c1;
        // S^{-1} with S = Σ_0 + Γ^{-1}: Woodbury S^{-1} = Γ − Γ C_1 Γ.
        let s_inv = sym(&(g - g * &c1 * g));
        // log det(I + Σ_0 Γ) = log det(Σ_0) + log det(Σ_0^{-1} + Γ)
        let logdet = self.cov.logdet() + post.logdet();
        let prior_logit = if self.rho >= 1.0 {
            f64::INFINITY
        } else {
            (self.rho / (1.0 - self.rho)).ln()
        };
        let r = incoming.mean.as_ref();
        let out = par_map_rows(r.nrows(), d, d * d, |i, zrow, acc| {
            let ri: Vec<f64> = (0..d).map(|j| r[(i, j)]).collect();
            let mut m1 = vec![0.0; d];
            for (j, m) in m1.iter_mut().enumerate() {
                *m = mu_term[(0, j)] + (0..d).map(|k| ri[k] * gc[(k, j)]).sum::<f64>();
            }
            let quad_g: f64 = (0..d)
                .map(|a| (0..d).map(|b| ri[a] * g[(a, b)] * ri[b]).sum::<f64>())
                .sum();
            let diff: Vec<f64> = (0..d).map(|j| ri[j] - self.mean[j]).collect();
            let quad_s: f64 = (0..d)
                .map(|a| {
                    (0..d)
                        .map(|b| diff[a] * s_inv[(a, b)] * diff[b])
                        .sum::<f64>()
                })
                .sum();
            let llr =
                (prior_logit - 0.5 * logdet + 0.5 * quad_g - 0.5 * quad_s).clamp(-700.0, 700.0);
            let pi = logistic(llr);
            for j in 0..d {
                zrow[j] = pi * m1[j];
            }
            let w = pi * (1.0 - pi);
            for a in 0..d {
                for b in 0..d {
                    acc[a * d + b] += pi * c1[(a, b)] + w * m1[a] * m1[b];
                }
            }
            Ok(())
        })?;
        let n = r.nrows().max(1) as f64;
        let cov = DMat::from_fn(d, d, |a, b| out.acc[a * d + b] / n);
        Ok(Belief {
            mean: out.rows,
            cov: sym(&cov),
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
