//! Spectral laws of `A = WᵀW` (`docs/matrix-free.md`): the linear layer's average covariances
//! need only the two spectral sums
//! `a(m) = tr (I + mA)^{-1} = Σ_k 1/(1 + m θ_k)` and `b(m) = tr A(I + mA)^{-1} = Σ_k θ_k/(1 + m θ_k)`
//! over the `n_in` eigenvalues `θ_k` of `A` (zeros included), at the `d` values `m_j` of the shared
//! basis (paper eq. 15 in the basis of spec §3.3).
//!
//! A law is a set of weighted nodes `(θ, ω)` with `Σ ω = n_in`, possibly in several independent
//! groups (one per Lanczos probe): the law is their average, and the spread between groups gives
//! the estimator's standard error.

use super::lanczos;
use super::LinearOperator;
use crate::error::{Error, Result};
use serde::Serialize;

/// The number of quantiles at which a Marchenko–Pastur law is discretised (at least this many
/// when the layer has more singular values; all of them otherwise).
pub const LAW_SPECTRUM_POINTS: usize = 2000;

/// Where a spectral law comes from.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum LawSource {
    /// The singular values of `W` (from an SVD, or known).
    Exact,
    /// Orthogonal rows, `W Wᵀ = c² I`: `n_out` eigenvalues `c²`, the rest 0.
    OrthogonalRows,
    /// The Marchenko–Pastur law of an i.i.d. Gaussian `W`, discretised at quantiles.
    MarchenkoPastur,
    /// Stochastic Lanczos quadrature with `probes` seeded Rademacher probes and `steps` steps.
    Lanczos {
        /// Probes.
        probes: usize,
        /// Lanczos steps per probe.
        steps: usize,
        /// Seed of the probes.
        seed: u64,
    },
}

/// A spectral law of `WᵀW` for an `n_out x n_in` weight.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SpectralLaw {
    n_out: usize,
    n_in: usize,
    /// Independent groups of `(node, weight)`, each with weights summing to `n_in`.
    groups: Vec<Vec<(f64, f64)>>,
    source: LawSource,
}

/// A spectral sum and its standard error (0 for exact laws).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Estimate {
    /// The value.
    pub value: f64,
    /// Its standard error over the groups (NaN with one group of a random law).
    pub std_err: f64,
}

impl SpectralLaw {
    fn check_shape(n_out: usize, n_in: usize) -> Result<()> {
        if n_out == 0 || n_in == 0 {
            return Err(Error::invalid(
                "spectral law",
                format!("the weight must be non-empty, got {n_out} x {n_in}"),
            ));
        }
        Ok(())
    }

    /// The exact law from the `r = min(n_out, n_in)` singular values of `W`.
    pub fn exact(singular_values: &[f64], n_out: usize, n_in: usize) -> Result<Self> {
        Self::check_shape(n_out, n_in)?;
        let r = n_out.min(n_in);
        if singular_values.len() != r
            || singular_values
                .iter()
                .any(|s| !(s.is_finite() && *s >= 0.0))
        {
            return Err(Error::invalid(
                "spectral law",
                format!(
                    "need {r} finite non-negative singular values for a {n_out} x {n_in} weight, got {}",
                    singular_values.len()
                ),
            ));
        }
        let mut g: Vec<(f64, f64)> = singular_values.iter().map(|s| (s * s, 1.0)).collect();
        if n_in > r {
            g.push((0.0, (n_in - r) as f64));
        }
        Ok(SpectralLaw {
            n_out,
            n_in,
            groups: vec![g],
            source: LawSource::Exact,
        })
    }

    /// Orthogonal rows `W Wᵀ = c2 · I` (`n_out ≤ n_in`): `n_out` eigenvalues `c2`, the rest 0.
    pub fn orthogonal_rows(n_out: usize, n_in: usize, c2: f64) -> Result<Self> {
        Self::check_shape(n_out, n_in)?;
        if n_out > n_in || !(c2 > 0.0 && c2.is_finite()) {
            return Err(Error::invalid(
                "spectral law",
                format!("orthogonal rows need n_out <= n_in and c² > 0, got {n_out} x {n_in}, c² = {c2}"),
            ));
        }
        let mut g = vec![(c2, n_out as f64)];
        if n_in > n_out {
            g.push((0.0, (n_in - n_out) as f64));
        }
        Ok(SpectralLaw {
            n_out,
            n_in,
            groups: vec![g],
            source: LawSource::OrthogonalRows,
        })
    }

    /// The Marchenko–Pastur law of an `n_out x n_in` weight with i.i.d. `N(0, variance)` entries,
    /// discretised at `points` quantiles of its `r = min(n_out, n_in)` nonzero singular values
    /// (all of them if `r ≤ points`).
    pub fn marchenko_pastur(
        n_out: usize,
        n_in: usize,
        variance: f64,
        points: usize,
    ) -> Result<Self> {
        Self::check_shape(n_out, n_in)?;
        let r = n_out.min(n_in);
        let spec = marchenko_pastur_quantiles(n_out, n_in, variance, points.clamp(1, r))?;
        let w = r as f64 / spec.len() as f64;
        let mut g: Vec<(f64, f64)> = spec.iter().map(|s| (s * s, w)).collect();
        if n_in > r {
            g.push((0.0, (n_in - r) as f64));
        }
        Ok(SpectralLaw {
            n_out,
            n_in,
            groups: vec![g],
            source: LawSource::MarchenkoPastur,
        })
    }

    /// Estimates the law of an operator by stochastic Lanczos quadrature: `probes` seeded
    /// Rademacher probes, `steps` Lanczos steps on `WᵀW` each, run in lock-step (every step is
    /// one pass of `W` and one of `Wᵀ` for all probes).
    pub fn lanczos(
        op: &dyn LinearOperator,
        probes: usize,
        steps: usize,
        seed: u64,
    ) -> Result<Self> {
        let (n_out, n_in) = op.shape();
        Self::check_shape(n_out, n_in)?;
        if probes == 0 || steps == 0 {
            return Err(Error::invalid(
                "spectral law",
                format!("stochastic Lanczos quadrature needs at least one probe and one step, got {probes} probes and {steps} steps"),
            ));
        }
        let groups = lanczos::quadrature(op, probes, steps, seed)?;
        Ok(SpectralLaw {
            n_out,
            n_in,
            groups,
            source: LawSource::Lanczos {
                probes,
                steps,
                seed,
            },
        })
    }

    /// `(n_out, n_in)`.
    pub fn shape(&self) -> (usize, usize) {
        (self.n_out, self.n_in)
    }
    /// Where the law comes from.
    pub fn source(&self) -> &LawSource {
        &self.source
    }
    /// A one-line description.
    pub fn describe(&self) -> String {
        match &self.source {
            LawSource::Exact => "exact singular values".into(),
            LawSource::OrthogonalRows => "orthogonal rows (closed form)".into(),
            LawSource::MarchenkoPastur => "Marchenko-Pastur law".into(),
            LawSource::Lanczos {
                probes,
                steps,
                seed,
            } => format!(
                "stochastic Lanczos quadrature ({probes} probes, {steps} steps, seed {seed})"
            ),
        }
    }

    /// `tr f(WᵀW) ≈ Σ ω f(θ)`, averaged over the groups, with its standard error.
    pub fn trace(&self, f: impl Fn(f64) -> f64) -> Estimate {
        let per: Vec<f64> = self
            .groups
            .iter()
            .map(|g| g.iter().map(|&(t, w)| w * f(t)).sum())
            .collect();
        let k = per.len() as f64;
        let value = per.iter().sum::<f64>() / k;
        let std_err = match (&self.source, per.len()) {
            (LawSource::Lanczos { .. }, 1) => f64::NAN,
            (LawSource::Lanczos { .. }, _) => {
                (per.iter().map(|x| (x - value).powi(2)).sum::<f64>() / (k - 1.0) / k).sqrt()
            }
            _ => 0.0,
        };
        Estimate { value, std_err }
    }

    /// `a(m) = tr (I + mA)^{-1}` over all `n_in` eigenvalues.
    pub fn a(&self, m: f64) -> f64 {
        self.trace(|t| 1.0 / (1.0 + m * t)).value
    }
    /// `b(m) = tr A (I + mA)^{-1}`.
    pub fn b(&self, m: f64) -> f64 {
        self.trace(|t| t / (1.0 + m * t)).value
    }

    /// The law as weighted singular values for the state evolution's closed-form step: the
    /// nodes of all groups, each weight divided by the number of groups (`√θ`, `ω/groups`).
    pub fn weighted_singular_values(&self) -> (Vec<f64>, Vec<f64>) {
        let k = self.groups.len() as f64;
        self.groups
            .iter()
            .flatten()
            .map(|&(t, w)| (t.max(0.0).sqrt(), w / k))
            .unzip()
    }
}

/// The singular values of an `n_out x n_in` matrix with i.i.d. `N(0, variance)` entries in the
/// large-system limit: `s_i² = variance · max(n_out, n_in) · x_i`, with `x_i` the Marchenko–Pastur
/// (ratio `λ = min/max`) quantiles at `(i − ½)/r`, `r = min(n_out, n_in)`.
pub fn marchenko_pastur_singular_values(
    n_out: usize,
    n_in: usize,
    variance: f64,
) -> Result<Vec<f64>> {
    marchenko_pastur_quantiles(n_out, n_in, variance, n_out.min(n_in))
}

/// `count` quantiles (at `(i − ½)/count`) of the law of the nonzero singular values of an
/// `n_out x n_in` matrix with i.i.d. `N(0, variance)` entries (the Marchenko–Pastur law of
/// ratio `min/max`, scaled by `variance · max`), in decreasing order.
pub fn marchenko_pastur_quantiles(
    n_out: usize,
    n_in: usize,
    variance: f64,
    count: usize,
) -> Result<Vec<f64>> {
    if n_out == 0 || n_in == 0 {
        return Err(Error::invalid(
            "Marchenko-Pastur law",
            "rows and cols must be positive",
        ));
    }
    if !(variance > 0.0 && variance.is_finite()) {
        return Err(Error::invalid(
            "variance",
            format!("must be positive and finite, got {variance}"),
        ));
    }
    let (p, q) = (n_out.min(n_in), n_out.max(n_in));
    let lambda = p as f64 / q as f64;
    let (a, b) = ((1.0 - lambda.sqrt()).powi(2), (1.0 + lambda.sqrt()).powi(2));
    // CDF on a grid in θ: x = a + (b − a)(1 − cos θ)/2, density √((b−x)(x−a))/(2πλx).
    let m = 20_000usize;
    let h = std::f64::consts::PI / m as f64;
    let x_of = |t: f64| a + (b - a) * (1.0 - t.cos()) / 2.0;
    let f_of = |t: f64| {
        let x = x_of(t);
        let s = t.sin();
        if x <= 0.0 {
            // λ = 1 near θ = 0: ((b−a)/2)² sin²θ / x → (b−a)/... finite limit b(1)/.. use small-θ form.
            return ((b - a) / 2.0).powi(2) * 4.0 / (b - a) / (2.0 * std::f64::consts::PI * lambda);
        }
        ((b - a) / 2.0).powi(2) * s * s / (2.0 * std::f64::consts::PI * lambda * x)
    };
    let mut cdf = vec![0.0; m + 1];
    for i in 0..m {
        let (t0, t1) = (i as f64 * h, (i + 1) as f64 * h);
        cdf[i + 1] = cdf[i] + h / 6.0 * (f_of(t0) + 4.0 * f_of(0.5 * (t0 + t1)) + f_of(t1));
    }
    let total = cdf[m];
    let r = count.max(1);
    let mut out = Vec::with_capacity(r);
    let mut j = 0;
    for i in 0..r {
        let target = (i as f64 + 0.5) / r as f64 * total;
        while j < m && cdf[j + 1] < target {
            j += 1;
        }
        let (c0, c1) = (cdf[j], cdf[j + 1]);
        let frac = if c1 > c0 {
            (target - c0) / (c1 - c0)
        } else {
            0.0
        };
        let x = x_of((j as f64 + frac) * h);
        out.push((variance * q as f64 * x.max(0.0)).sqrt());
    }
    out.sort_by(|x, y| y.total_cmp(x));
    Ok(out)
}
