//! The AWGN output with missing entries in the state evolution: its SE step in closed form
//! (spec §6.2 (O) for the denoiser of §4.5), and [`AwgnMaskLaw`], the channel whose missing
//! entries are described by a law (`mask = { law = "bernoulli", observed = 0.7 }`).
//!
//! For a row with observed set `O` (pattern `p`), with `M_p = E_O^T ([N^{-1}]_{OO})^{-1} E_O`
//! and `Σ_p = (Γ̄⁺ + M_p)^{-1}`, the output denoiser is
//! `v̂ = (r⁺ Γ̄⁺ + ỹ M_p) Σ_p` with `ỹ M_p = (a + ξ) M_p` (the missing entries of `y` do not enter,
//! since `M_p` vanishes on them). With `(a, b) ~ N(0, K⁺_{L−1})`, `r⁺ = a + b` and
//! `ξ ~ N(0, N^{-1})` independent, every quantity of the row model is affine in the Gaussian
//! blocks `[a, b, ξ]`, so its second moments are exact (exact Gaussian second moments); the row law is the
//! mixture over patterns, so every moment is the frequency-weighted sum. No Monte Carlo is needed.

use crate::denoise::{gaussian_rows, AwgnOutput, Rng};
use crate::error::{Error, Result};
use crate::factor::affine::{Affine, Blocks};
use crate::factor::law::{backward_law, SeBackward, SeContext, SeEstimate, SeForward, SeStep};
use crate::factor::{Factor, OutputChannel, OutputLaw, OutputSe, OutputShape};
use crate::rows::shape_str;
use crate::spd::{sym, DMat, Spd};
use faer::{Mat, MatRef};

/// `M = E_O^T ([N^{-1}]_{OO})^{-1} E_O` for the observed columns `O` (spec §4.5).
pub fn observed_precision(noise_cov: &DMat, observed: &[bool]) -> Result<DMat> {
    let d = observed.len();
    let idx: Vec<usize> = (0..d).filter(|&j| observed[j]).collect();
    let mut m = DMat::zeros(d, d);
    if idx.is_empty() {
        return Ok(m);
    }
    let sub = DMat::from_fn(idx.len(), idx.len(), |a, b| noise_cov[(idx[a], idx[b])]);
    let inv = Spd::from_symmetric("observed block of the output noise covariance", sub)?.inverse();
    for (a, &ja) in idx.iter().enumerate() {
        for (b, &jb) in idx.iter().enumerate() {
            m[(ja, jb)] = inv[(a, b)];
        }
    }
    Ok(m)
}

/// The closed-form SE step (O) of an AWGN output with noise precision `N` whose rows have the
/// missingness `patterns` (observed-column flags) with the given probabilities (summing to 1).
/// Produces `(Ψ⁻, T⁻, Γ̄⁻)_{L−1}` and the prediction about `Ẑ⁻_{L−1}`.
pub fn awgn_backward(
    noise_precision: &Spd,
    patterns: &[(Vec<bool>, f64)],
    plus: &SeForward,
    ctx: &SeContext<'_>,
    prev: Option<&Spd>,
) -> Result<SeStep<SeBackward>> {
    let d = noise_precision.dim();
    crate::factor::law::check_laws(d, None, Some(plus), prev)?;
    if let Some((p, _)) = patterns.iter().find(|(p, _)| p.len() != d) {
        return Err(Error::shape(
            "missingness pattern",
            format!("{d} flags"),
            format!("{} flags", p.len()),
        ));
    }
    let total: f64 = patterns.iter().map(|p| p.1).sum();
    if patterns.is_empty() || total.is_nan() || total <= 0.0 {
        return Err(Error::invalid(
            "AWGN output state evolution",
            "no missingness pattern has positive probability",
        ));
    }
    let noise_cov = noise_precision.inverse();
    let gp = plus.gamma.matrix();
    // Per pattern: M_p and Σ_p = (Γ̄⁺ + M_p)^{-1}; Σ̄ = Σ_p w_p Σ_p.
    let mut per = Vec::with_capacity(patterns.len());
    let mut predicted = DMat::zeros(d, d);
    for (flags, w) in patterns {
        if *w <= 0.0 {
            continue;
        }
        let w = w / total;
        let mp = observed_precision(&noise_cov, flags)?;
        let sigma = Spd::from_symmetric("Γ⁺ + M", gp + &mp)?.inverse();
        predicted += &sigma * w;
        per.push((w, mp, sigma));
    }
    let predicted = sym(&predicted);
    let (lambda, gamma, divisor) =
        ctx.policy
            .precision_update(&predicted, &plus.gamma, prev, &ctx.location, ctx.iteration)?;
    let gamma_inv = divisor.inverse();
    // Blocks: [a, b] ~ N(0, K⁺), ξ ~ N(0, N^{-1}).
    let bl = Blocks::new(&[&plus.k, &noise_cov]);
    let a = bl.var_range(0, 0, d, d);
    let r_plus = a.add(&bl.var_range(0, d, d, d));
    let a_xi = a.add(&bl.var(1, d));
    let (mut ae, mut ee) = (DMat::zeros(d, d), DMat::zeros(d, d));
    let mut joint = DMat::zeros(2 * d, 2 * d);
    let mut err = DMat::zeros(d, d);
    for (w, mp, sigma) in &per {
        let v_hat: Affine = r_plus.mul(&(gp * sigma)).add(&a_xi.mul(&(mp * sigma)));
        // e⁻ = (v̂ Λ̄ − r⁺ Γ̄⁺)(Γ̄⁻)^{-1} − a  (the message rule, eq. 2.1).
        let e = v_hat
            .mul(&lambda)
            .sub(&r_plus.mul(gp))
            .mul(&gamma_inv)
            .sub(&a);
        ae += bl.moment(&a, &e) * *w;
        ee += bl.moment(&e, &e) * *w;
        joint += bl.joint(&a, &v_hat) * *w;
        let diff = v_hat.sub(&a);
        err += bl.moment(&diff, &diff) * *w;
    }
    let k_aa = plus.k.view((0, 0), (d, d)).into_owned();
    let out = backward_law(&k_aa, &ae, &ee, ctx.psi_mode, gamma);
    Ok(SeStep {
        out,
        estimate: SeEstimate {
            error_cov: sym(&err),
            joint: sym(&joint),
            predicted_cov: predicted,
            samples: None,
        },
    })
}

/// The largest `d` for which [`AwgnMaskLaw`] sums over all `2^d` patterns in closed form; above
/// it, its SE step is Monte Carlo.
pub const MAX_D_EXACT_PATTERNS: usize = 10;

/// An AWGN output (spec §4.5) whose entries are observed independently with probability
/// `observed` — the law of a mask rather than a mask. It holds no observation, so it serves the
/// state evolution only: its SE step averages over all `2^d` patterns with their probabilities
/// `observed^{|O|} (1 − observed)^{d − |O|}`, and `resample` draws fresh masks.
#[derive(Clone, Debug)]
pub struct AwgnMaskLaw {
    noise: Spd,
    observed: f64,
    n: usize,
}

impl AwgnMaskLaw {
    /// `n` rows, noise precision `N` (`d x d`), each entry observed with probability `observed`.
    pub fn new(n: usize, noise_precision: Spd, observed: f64) -> Result<Self> {
        if !(0.0..=1.0).contains(&observed) {
            return Err(Error::invalid(
                "mask law",
                format!("`observed` must be a probability in [0, 1], got {observed}"),
            ));
        }
        if n == 0 {
            return Err(Error::invalid(
                "mask law",
                "the output needs at least one row",
            ));
        }
        Ok(AwgnMaskLaw {
            noise: noise_precision,
            observed,
            n,
        })
    }

    /// The probability that an entry is observed.
    pub fn observed(&self) -> f64 {
        self.observed
    }

    /// All `2^d` patterns with positive probability (`d ≤ MAX_D_EXACT_PATTERNS`).
    pub fn patterns(&self) -> Vec<(Vec<bool>, f64)> {
        let d = self.noise.dim();
        let p = self.observed;
        (0u64..(1u64 << d))
            .map(|bits| {
                let flags: Vec<bool> = (0..d).map(|j| bits >> j & 1 == 1).collect();
                let k = flags.iter().filter(|&&f| f).count() as i32;
                (flags, p.powi(k) * (1.0 - p).powi(d as i32 - k))
            })
            .filter(|(_, w)| *w > 0.0)
            .collect()
    }
}

impl Factor for AwgnMaskLaw {
    fn describe(&self) -> String {
        format!(
            "awgn output {} x {} (each entry observed with probability {})",
            self.n,
            self.noise.dim(),
            self.observed
        )
    }

    fn dim(&self) -> usize {
        self.noise.dim()
    }
}

impl OutputShape for AwgnMaskLaw {
    fn rows(&self) -> usize {
        self.n
    }
}

impl OutputLaw for AwgnMaskLaw {
    fn resample(&self, z: MatRef<'_, f64>, rng: &mut Rng) -> Result<Box<dyn OutputChannel>> {
        use rand::RngExt;
        let (n, d) = (z.nrows(), self.noise.dim());
        if z.ncols() != d {
            return Err(Error::shape(
                "Z_{L-1} for the output",
                format!("n x {d}"),
                shape_str(z),
            ));
        }
        let cov = Spd::from_symmetric("output noise covariance", self.noise.inverse())?;
        let mut y = z.to_owned();
        y += &gaussian_rows(n, cov.cholesky_lower(), rng);
        let mut mask = Mat::<f64>::zeros(n, d);
        for i in 0..n {
            for j in 0..d {
                if rng.random::<f64>() < self.observed {
                    mask[(i, j)] = 1.0;
                } else {
                    y[(i, j)] = f64::NAN;
                }
            }
        }
        Ok(Box::new(AwgnOutput::new(
            y,
            self.noise.clone(),
            Some(mask),
        )?))
    }
}

impl OutputSe for AwgnMaskLaw {
    /// Closed form over all patterns for `d ≤ MAX_D_EXACT_PATTERNS`, else Monte Carlo.
    fn se_backward(
        &self,
        plus: &SeForward,
        ctx: &SeContext<'_>,
        prev: Option<&Spd>,
    ) -> Result<SeStep<SeBackward>> {
        if self.noise.dim() <= MAX_D_EXACT_PATTERNS {
            awgn_backward(&self.noise, &self.patterns(), plus, ctx, prev)
        } else {
            crate::factor::monte_carlo::output_backward(self, plus, ctx, prev)
        }
    }
}
