//! Output channels `p(Y | Z_{L−1})`.

use super::{gaussian_rows, Rng};
use crate::denoise::mask_law::observed_precision;
use crate::error::{Error, Result};
use crate::factor::{
    Factor, LinearEstimate, OutputChannel, OutputDenoiser, OutputLaw, OutputSe, OutputShape,
};
use crate::message::{Belief, Message};
use crate::rows::{check_finite, check_shape, shape_str};
use crate::spd::{sym, DMat, Spd};
use faer::{Mat, MatRef};
use rand::RngExt;
use std::collections::HashMap;

/// AWGN output with a full `d x d` noise precision and optional missing entries (spec §4.5,
/// matrix completion eq. 10): `y_ij = z_ij + ξ_ij` observed for `(i, j) ∈ Ω`, rows of `ξ`
/// `N(0, N^{-1})`.
///
/// For row `i` with observed set `O_i`, `M_i = E_O^T ([N^{-1}]_{OO})^{-1} E_O`,
/// `Σ_i = (Γ + M_i)^{-1}`, `v̂_i = (r_i Γ + ỹ_i M_i) Σ_i` (`ỹ` = `y` with missing entries zeroed).
/// Rows are grouped by missingness pattern so each `d x d` inverse is computed once per pattern.
/// MAP and MMSE coincide.
#[derive(Clone, Debug)]
pub struct AwgnOutput {
    y: Mat<f64>,
    noise: Spd,
    mask: Option<Mat<f64>>,
    /// Per-row pattern index into `patterns`.
    row_pattern: Vec<usize>,
    /// Distinct patterns: observed-column flags and the matrix `M_p`.
    patterns: Vec<(Vec<bool>, DMat)>,
    d: usize,
}

impl AwgnOutput {
    /// A fully or partially observed AWGN channel. `y` is `n x d`; `mask` (same shape, entries
    /// exactly 0 or 1, 1 = observed) marks missing entries, which may hold any value (NaN
    /// included) in `y`. Observed entries must be finite.
    pub fn new(y: Mat<f64>, noise_precision: Spd, mask: Option<Mat<f64>>) -> Result<Self> {
        let (n, d) = (y.nrows(), y.ncols());
        if n == 0 || d == 0 {
            return Err(Error::invalid(
                "observation Y",
                format!("must be non-empty, got {}", shape_str(y.as_ref())),
            ));
        }
        if noise_precision.dim() != d {
            return Err(Error::shape(
                "output noise precision",
                format!("{d} x {d}"),
                format!("{0} x {0}", noise_precision.dim()),
            ));
        }
        let mut observed = vec![true; n * d];
        if let Some(m) = &mask {
            check_shape("mask", m.as_ref(), n, d)?;
            for i in 0..n {
                for j in 0..d {
                    let v = m[(i, j)];
                    if v == 1.0 {
                        continue;
                    } else if v == 0.0 {
                        observed[i * d + j] = false;
                    } else {
                        return Err(Error::invalid("mask", format!("entry ({i}, {j}) is {v}; entries must be 0 (missing) or 1 (observed)")));
                    }
                }
            }
        }
        for i in 0..n {
            for j in 0..d {
                if observed[i * d + j] && !y[(i, j)].is_finite() {
                    return Err(Error::NonFinite {
                        what: "observation Y".into(),
                        detail: format!(
                            "entry ({i}, {j}) is {}{}",
                            y[(i, j)],
                            if mask.is_some() {
                                " but the mask marks it observed"
                            } else {
                                "; mark missing entries with a mask"
                            }
                        ),
                    });
                }
            }
        }
        let noise_cov = noise_precision.inverse();
        // Rows grouped by their observed set (keyed by the flags themselves, so any `d` works).
        let mut index: HashMap<&[bool], usize> = HashMap::new();
        let mut patterns = Vec::new();
        let mut row_pattern = Vec::with_capacity(n);
        for flags in observed.chunks(d) {
            let p = match index.get(flags) {
                Some(&p) => p,
                None => {
                    patterns.push((flags.to_vec(), observed_precision(&noise_cov, flags)?));
                    index.insert(flags, patterns.len() - 1);
                    patterns.len() - 1
                }
            };
            row_pattern.push(p);
        }
        Ok(AwgnOutput {
            y,
            noise: noise_precision,
            mask,
            row_pattern,
            patterns,
            d,
        })
    }

    /// The noise precision `N`.
    pub fn noise_precision(&self) -> &Spd {
        &self.noise
    }
    /// The mask, if any.
    pub fn mask(&self) -> Option<&Mat<f64>> {
        self.mask.as_ref()
    }
    /// Whether entry `(i, j)` is observed.
    pub fn is_observed(&self, i: usize, j: usize) -> bool {
        self.patterns[self.row_pattern[i]].0[j]
    }
    /// The distinct missingness patterns (observed-column flags) and the fraction of rows that
    /// have each (the law of the pattern used by the state evolution).
    pub fn pattern_frequencies(&self) -> Vec<(Vec<bool>, f64)> {
        let mut counts = vec![0usize; self.patterns.len()];
        for &p in &self.row_pattern {
            counts[p] += 1;
        }
        let n = self.row_pattern.len() as f64;
        self.patterns
            .iter()
            .zip(counts)
            .map(|((flags, _), c)| (flags.clone(), c as f64 / n))
            .collect()
    }
}

impl Factor for AwgnOutput {
    fn describe(&self) -> String {
        let missing = self.mask.as_ref().map_or(0, |m| {
            m.col_iter()
                .map(|c| c.iter().filter(|&&x| x == 0.0).count())
                .sum()
        });
        format!(
            "awgn output {} x {} ({} missing entries)",
            self.y.nrows(),
            self.d,
            missing
        )
    }

    fn dim(&self) -> usize {
        self.d
    }
}

impl OutputShape for AwgnOutput {
    fn rows(&self) -> usize {
        self.y.nrows()
    }
}

impl OutputDenoiser for AwgnOutput {
    fn observation(&self) -> MatRef<'_, f64> {
        self.y.as_ref()
    }

    /// `(Y, N)` when every entry is observed (with a mask the rows' precisions differ).
    fn likelihood_message(&self) -> Option<Message> {
        if self.mask.is_some() {
            return None;
        }
        Some(Message {
            mean: self.y.clone(),
            precision: self.noise_precision().clone(),
        })
    }

    /// Without a mask: `Ẑ = R⁺ ΓΣ + Y NΣ`, `Σ = (Γ + N)^{-1}`, computed as
    /// [`OutputDenoiser::denoise`] computes them.
    fn linear_estimate(&self, plus_precision: &Spd) -> Option<Result<LinearEstimate>> {
        if self.mask.is_some() || self.patterns.len() != 1 {
            return None;
        }
        let g = plus_precision.matrix();
        let mp = &self.patterns[0].1;
        Some((|| {
            if g.nrows() != self.d || g.ncols() != self.d {
                return Err(Error::shape(
                    "forward precision Γ⁺ into the output",
                    format!("{0} x {0}", self.d),
                    format!("{} x {}", g.nrows(), g.ncols()),
                ));
            }
            let sigma = Spd::from_symmetric("Γ + M", g + mp)?.inverse();
            Ok(LinearEstimate {
                incoming: g * &sigma,
                observation: mp * &sigma,
                cov: sym(&(&sigma * 1.0)),
            })
        })())
    }

    fn denoise(&self, plus: &Message) -> Result<Belief> {
        let (n, d) = (self.y.nrows(), self.d);
        plus.check("forward message R⁺ into the output", n, d)?;
        check_finite("forward message R⁺ into the output", plus.mean.as_ref())?;
        let g = plus.precision.matrix();
        // Per pattern: Σ_p = (Γ + M_p)^{-1}, and the maps r ↦ rΓΣ_p, ỹ ↦ ỹ M_p Σ_p.
        let mut per_pattern = Vec::with_capacity(self.patterns.len());
        for (_, mp) in &self.patterns {
            let sigma = Spd::from_symmetric("Γ + M", g + mp)?.inverse();
            per_pattern.push((g * &sigma, mp * &sigma, sigma));
        }
        let mut counts = vec![0usize; self.patterns.len()];
        let mut mean = Mat::<f64>::zeros(n, d);
        for i in 0..n {
            let p = self.row_pattern[i];
            counts[p] += 1;
            let (gs, ms, _) = &per_pattern[p];
            let flags = &self.patterns[p].0;
            for j in 0..d {
                let mut acc = 0.0;
                for k in 0..d {
                    acc += plus.mean[(i, k)] * gs[(k, j)];
                    if flags[k] {
                        acc += self.y[(i, k)] * ms[(k, j)];
                    }
                }
                mean[(i, j)] = acc;
            }
        }
        let mut cov = DMat::zeros(d, d);
        for (c, (_, _, sigma)) in counts.iter().zip(&per_pattern) {
            cov += sigma * (*c as f64 / n as f64);
        }
        Ok(Belief::new(mean, sym(&cov)))
    }
}

impl OutputLaw for AwgnOutput {
    fn resample(&self, z: MatRef<'_, f64>, rng: &mut Rng) -> Result<Box<dyn OutputChannel>> {
        let (n, d) = (z.nrows(), self.d);
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
        let mask = match &self.mask {
            None => None,
            Some(m) => {
                let mut out = Mat::<f64>::zeros(n, d);
                for i in 0..n {
                    // Same row's pattern when the row count matches, else a random row's pattern.
                    let src = if n == self.y.nrows() {
                        i
                    } else {
                        rng.random_range(0..self.y.nrows())
                    };
                    for j in 0..d {
                        out[(i, j)] = m[(src, j)];
                        if m[(src, j)] == 0.0 {
                            y[(i, j)] = f64::NAN;
                        }
                    }
                }
                Some(out)
            }
        };
        Ok(Box::new(AwgnOutput::new(y, self.noise.clone(), mask)?))
    }
}

impl OutputSe for AwgnOutput {
    /// Closed form (spec §6.2 (O)): the denoiser is affine in the Gaussian row-model blocks, with
    /// the missingness patterns at their frequencies in this channel ([`crate::denoise::mask_law`]).
    fn se_backward(
        &self,
        plus: &crate::factor::law::SeForward,
        ctx: &crate::factor::law::SeContext<'_>,
        prev: Option<&Spd>,
    ) -> Result<crate::factor::law::SeStep<crate::factor::law::SeBackward>> {
        if ctx.want_samples {
            return crate::factor::monte_carlo::output_backward(self, plus, ctx, prev);
        }
        crate::denoise::mask_law::awgn_backward(
            &self.noise,
            &self.pattern_frequencies(),
            plus,
            ctx,
            prev,
        )
    }
}
