//! Gaussian input prior with full mean and covariance (spec §5.1).

use super::{gaussian_rows, Rng};
use crate::error::{Error, Result};
use crate::factor::affine::{Affine, Blocks};
use crate::factor::law::{SeBackward, SeContext, SeEstimate, SeForward, SeStep};
use crate::factor::{Factor, PriorDenoiser, PriorSampler, PriorSe, RowBlockDenoiser};
use crate::message::{Belief, Message};
use crate::rows::{check_finite, mul_small};
use crate::spd::{sym, DMat, Spd};
use faer::Mat;

/// Rows of `Z_0` i.i.d. `N(μ_0, Σ_0)`.
///
/// Denoiser (spec §5.1): `Σ = (Σ_0^{-1} + Γ⁻)^{-1}`, `ẑ = (μ_0 Σ_0^{-1} + r Γ⁻) Σ`. The forward
/// message is therefore exactly the prior: `Γ⁺_0 = Σ_0^{-1}`, `R⁺_0 = 1 μ_0^T`.
#[derive(Clone, Debug)]
pub struct GaussianPrior {
    mean: Vec<f64>,
    cov: Spd,
    prec: Spd,
}

impl GaussianPrior {
    /// A prior with mean `μ_0` (length `d`) and covariance `Σ_0` (`d x d`, SPD).
    pub fn new(mean: Vec<f64>, cov: DMat) -> Result<Self> {
        let d = mean.len();
        if d == 0 {
            return Err(Error::invalid("prior mean", "d must be at least 1"));
        }
        if let Some(x) = mean.iter().find(|x| !x.is_finite()) {
            return Err(Error::NonFinite {
                what: "prior mean".into(),
                detail: format!("entry is {x}"),
            });
        }
        let cov = Spd::new("prior covariance", cov, Some(d))?;
        let prec = Spd::from_symmetric("prior precision", cov.inverse())?;
        Ok(GaussianPrior { mean, cov, prec })
    }

    /// Zero mean, covariance `v I_d`.
    pub fn isotropic(d: usize, v: f64) -> Result<Self> {
        Self::new(vec![0.0; d], DMat::identity(d, d) * v)
    }

    /// The prior mean `μ_0`.
    pub fn mean(&self) -> &[f64] {
        &self.mean
    }
    /// The prior covariance `Σ_0`.
    pub fn covariance(&self) -> &Spd {
        &self.cov
    }
    /// The prior precision `Σ_0^{-1}`.
    pub fn precision(&self) -> &Spd {
        &self.prec
    }
}

impl Factor for GaussianPrior {
    fn describe(&self) -> String {
        format!("gaussian prior (d = {})", self.mean.len())
    }

    fn dim(&self) -> usize {
        self.mean.len()
    }
}

impl PriorDenoiser for GaussianPrior {
    fn denoise(&self, incoming: &Message) -> Result<Belief> {
        let d = self.dim();
        incoming.check("backward message R⁻ into the prior", incoming.rows(), d)?;
        check_finite("backward message R⁻ into the prior", incoming.mean.as_ref())?;
        let post_prec = Spd::from_symmetric(
            "prior posterior precision",
            self.prec.matrix() + incoming.precision.matrix(),
        )?;
        let cov = post_prec.inverse();
        // ẑ = r Γ⁻ Σ + μ_0 Σ_0^{-1} Σ
        let g = incoming.precision.matrix() * &cov;
        let mu = DMat::from_row_slice(1, d, &self.mean) * self.prec.matrix() * &cov;
        let mut mean = mul_small(incoming.mean.as_ref(), &g);
        for j in 0..d {
            let c = mu[(0, j)];
            for i in 0..mean.nrows() {
                mean[(i, j)] += c;
            }
        }
        Ok(Belief::new(mean, cov))
    }

    /// Row-separable: `ẑ_i = r_i Γ⁻ Σ + μ_0 Σ_0^{-1} Σ`, and `Σ̄ = Σ` for every row.
    fn row_denoiser(&self, precision: &Spd) -> Option<Result<Box<dyn RowBlockDenoiser + '_>>> {
        let d = self.dim();
        if precision.dim() != d {
            return None;
        }
        let build = || -> Result<Box<dyn RowBlockDenoiser>> {
            let post_prec = Spd::from_symmetric(
                "prior posterior precision",
                self.prec.matrix() + precision.matrix(),
            )?;
            let cov = post_prec.inverse();
            let g = precision.matrix() * &cov;
            let mu = DMat::from_row_slice(1, d, &self.mean) * self.prec.matrix() * &cov;
            Ok(Box::new(GaussianRows { g, mu, cov }))
        };
        Some(build())
    }
}

/// [`GaussianPrior`]'s denoiser for a fixed `Γ⁻`: `ẑ_i = r_i G + m` (the same sums as
/// [`PriorDenoiser::denoise`]), `Σ̄ = Σ`.
struct GaussianRows {
    g: DMat,
    mu: DMat,
    cov: DMat,
}

impl RowBlockDenoiser for GaussianRows {
    fn denoise_rows(
        &self,
        r: faer::MatRef<'_, f64>,
        mut z: faer::MatMut<'_, f64>,
        _cov_sum: &mut [f64],
    ) -> Result<()> {
        let d = self.g.ncols();
        for i in 0..r.nrows() {
            for j in 0..d {
                let mut acc = 0.0;
                for l in 0..d {
                    let c = self.g[(l, j)];
                    if c != 0.0 {
                        acc += c * r[(i, l)];
                    }
                }
                z[(i, j)] = acc + self.mu[(0, j)];
            }
        }
        Ok(())
    }

    fn covariance(&self, _cov_sum: &[f64], _n: usize) -> DMat {
        self.cov.clone()
    }
}

impl PriorSampler for GaussianPrior {
    fn sample(&self, n: usize, rng: &mut Rng) -> Result<Mat<f64>> {
        let mut z = gaussian_rows(n, self.cov.cholesky_lower(), rng);
        for j in 0..self.dim() {
            for i in 0..n {
                z[(i, j)] += self.mean[j];
            }
        }
        Ok(z)
    }
}

impl PriorSe for GaussianPrior {
    /// Analytic SE step (spec §6.2 (P)): with `z = μ_0 + z̃`, `z̃ ~ N(0, Σ_0)`, `r⁻ = zΨ⁻ + c`,
    /// everything is affine in the Gaussian blocks `(z̃, c)`, so `K⁺` is exact.
    fn se_forward(
        &self,
        minus: &SeBackward,
        ctx: &SeContext<'_>,
        prev: Option<&Spd>,
    ) -> Result<SeStep<SeForward>> {
        let d = self.dim();
        crate::factor::law::check_laws(d, Some(minus), None, prev)?;
        let gm = minus.gamma.matrix();
        let sigma =
            Spd::from_symmetric("prior posterior precision", self.prec.matrix() + gm)?.inverse();
        let (lambda, gamma, divisor) = ctx.policy.precision_update(
            &sigma,
            &minus.gamma,
            prev,
            &ctx.location,
            ctx.iteration,
        )?;
        let bl = Blocks::new(&[self.cov.matrix(), &minus.t]);
        let mu = DMat::from_row_slice(1, d, &self.mean);
        let z = Affine::constant(bl.dim(), mu.clone()).add(&bl.var(0, d));
        let r = z.mul(&minus.psi).add(&bl.var(1, d));
        let z_hat = Affine::constant(bl.dim(), &mu * self.prec.matrix() * &sigma)
            .add(&r.mul(&(gm * &sigma)));
        let e = z_hat
            .mul(&lambda)
            .sub(&r.mul(gm))
            .mul(&divisor.inverse())
            .sub(&z);
        let diff = z_hat.sub(&z);
        Ok(SeStep {
            out: SeForward {
                k: bl.joint(&z, &e),
                gamma,
            },
            estimate: SeEstimate {
                error_cov: sym(&bl.moment(&diff, &diff)),
                joint: bl.joint(&z, &z_hat),
                predicted_cov: sigma,
                samples: None,
            },
        })
    }
}
