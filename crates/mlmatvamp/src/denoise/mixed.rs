//! Mixed linear regression output (paper eq. 6; spec §4.6): `y = v_q + ξ` with a hidden label
//! `q ∈ {1 … d}`, `P(q = k) = π_k`, `ξ ~ N(0, σ²)`.
//!
//! In the network of the paper's Section 2.1, `Z_0 = F = [f_1, …, f_d]` (`p x d`), `W_1 = X`,
//! `Z_1 = X F`, and row `i` of `Z_1` is `v_i = (x_i·f_1, …, x_i·f_d)`; sample `i` observes one of
//! its `d` entries, chosen by `q_i`, plus noise. The paper's `d = 2` case is
//! `y_i = q_i x_iᵀf_1 + (1 − q_i) x_iᵀf_2 + v_i`.
//!
//! Given the forward message `N(r, Γ^{-1})` on a row, the belief
//! `b(v) ∝ Σ_k π_k N(y; v_k, σ²) N(v; r, C)`, `C = Γ^{-1}`, is a mixture of `d` Gaussians, so both
//! denoisers are closed form (spec §4.6). For component `k`:
//!
//! ```text
//! s_k = σ² + C_kk
//! m_k = r + ((y − r_k)/s_k) C_{k·}
//! Σ_k = C − C_{·k} C_{k·} / s_k
//! log ω_k = log π_k − ½ log s_k − (y − r_k)²/(2 s_k)      (normalised by log-sum-exp)
//! ```
//!
//! * **MMSE**: `v̂ = Σ_k ω_k m_k`, `Σ = Σ_k ω_k (Σ_k + (m_k − v̂)ᵀ(m_k − v̂))`.
//! * **MAP** (joint over `(v, q)`): `k* = argmax_k [log π_k − (y − r_k)²/(2 s_k)]`,
//!   `v̂ = m_{k*}`, `Σ = Σ_{k*}` (the inverse Hessian `(Γ + e_k e_kᵀ/σ²)^{-1}` of the negative
//!   log-belief at the minimiser). Ties go to the smallest `k`.
//!
//! **Caveats.**
//! * The MAP denoiser jumps where `k*` switches: it is discontinuous in `r`, so its
//!   a.e.-Jacobian is not the Stein divergence, and neither Onsager cancellation nor the state
//!   evolution is guaranteed (spec §4.1 caveat, §8.1.7). Prefer MMSE when the SE must be accurate.
//! * **Label symmetry** (spec §4.6): with equal weights, a message that is symmetric under a
//!   permutation of the columns (e.g. the all-zero start of Algorithm 1 with `Γ ∝ I`) stays
//!   symmetric: the all-symmetric start is a fixed point at which every column of `F̂` is the same.
//!   Start from asymmetric messages, e.g. [`crate::apps::mixed::RandomStart`].

use super::{Estimator, Rng};
use crate::error::{Error, Result};
use crate::factor::{Factor, MonteCarloSe, OutputChannel, OutputDenoiser, OutputLaw, OutputShape};
use crate::message::{Belief, Message};
use crate::rows::{check_finite, par_map_rows, shape_str};
use crate::spd::{sym, DMat};
use faer::{Mat, MatRef};
use rand::RngExt;

/// The largest number of components `d` supported (per-row work is on the stack).
pub const MAX_COMPONENTS: usize = 16;

/// The mixed linear regression output channel `y = v_q + N(0, σ²)`, `P(q = k) = π_k`
/// (paper eq. 6, spec §4.6), with its MMSE or joint-MAP denoiser.
#[derive(Clone, Debug)]
pub struct MixedRegressionOutput {
    /// The observations (`n x 1`).
    y: Mat<f64>,
    /// `π` (length `d`, positive, summing to 1).
    weights: Vec<f64>,
    /// `log π`.
    log_weights: Vec<f64>,
    /// `σ²`.
    noise_variance: f64,
    /// MMSE or MAP.
    estimator: Estimator,
    /// The labels `q_i` (0-based) when the observation was drawn by [`crate::factor::OutputLaw::resample`].
    labels: Option<Vec<usize>>,
}

/// The per-component quantities of spec §4.6 that depend only on `Γ` and `σ²`.
struct Components {
    /// `s_k = σ² + C_kk`.
    s: Vec<f64>,
    /// `log s_k`.
    log_s: Vec<f64>,
    /// Row `k` of `C = Γ^{-1}`: `c[k * d + j] = C_kj`.
    c: Vec<f64>,
    /// `Σ_k = C − C_{·k}C_{k·}/s_k`.
    sigma: Vec<DMat>,
}

impl MixedRegressionOutput {
    /// A mixed regression channel with `d` components for the observations `y` (`n x 1`, finite).
    ///
    /// `noise_variance` is `σ² > 0`; `weights` are the component probabilities `π` (length `d`,
    /// positive, summing to 1 within `1e-9`; `None` = uniform).
    pub fn new(
        y: Mat<f64>,
        d: usize,
        noise_variance: f64,
        weights: Option<Vec<f64>>,
        estimator: Estimator,
    ) -> Result<Self> {
        if d == 0 {
            return Err(Error::invalid(
                "d",
                "mixed regression needs at least one component",
            ));
        }
        if d > MAX_COMPONENTS {
            return Err(Error::invalid(
                "d",
                format!(
                    "the mixed regression output supports at most {MAX_COMPONENTS} components, got {d}"
                ),
            ));
        }
        if y.nrows() == 0 || y.ncols() != 1 {
            return Err(Error::shape(
                "observation y of the mixed regression output",
                "n x 1 with n >= 1 (one response per sample)",
                shape_str(y.as_ref()),
            ));
        }
        check_finite("observation y of the mixed regression output", y.as_ref())?;
        if !(noise_variance > 0.0 && noise_variance.is_finite()) {
            return Err(Error::invalid(
                "noise_variance",
                format!(
                    "the output noise variance σ² must be positive and finite, got {noise_variance}"
                ),
            ));
        }
        let weights = match weights {
            None => vec![1.0 / d as f64; d],
            Some(w) => {
                if w.len() != d {
                    return Err(Error::shape(
                        "mixed regression weights π",
                        format!("a vector of length d = {d}"),
                        format!("a vector of length {}", w.len()),
                    ));
                }
                if let Some((k, x)) = w
                    .iter()
                    .enumerate()
                    .find(|(_, x)| !(x.is_finite() && **x > 0.0))
                {
                    return Err(Error::invalid(
                        "mixed regression weights π",
                        format!("every weight must be positive and finite, got π_{k} = {x}"),
                    ));
                }
                let total: f64 = w.iter().sum();
                if (total - 1.0).abs() > 1e-9 {
                    return Err(Error::invalid(
                        "mixed regression weights π",
                        format!("the weights must sum to 1, got {total}"),
                    ));
                }
                w
            }
        };
        let log_weights = weights.iter().map(|w| w.ln()).collect();
        Ok(MixedRegressionOutput {
            y,
            weights,
            log_weights,
            noise_variance,
            estimator,
            labels: None,
        })
    }

    /// The component weights `π`.
    pub fn weights(&self) -> &[f64] {
        &self.weights
    }
    /// The noise variance `σ²`.
    pub fn noise_variance(&self) -> f64 {
        self.noise_variance
    }
    /// MMSE or MAP.
    pub fn estimator(&self) -> Estimator {
        self.estimator
    }
    /// The labels `q_i ∈ {0 … d−1}` (0-based) that generated `y`, when it was drawn by
    /// [`crate::factor::OutputLaw::resample`] (teacher); `None` for user data.
    pub fn labels(&self) -> Option<&[usize]> {
        self.labels.as_deref()
    }
    /// The same channel and data with another estimator.
    pub fn with_estimator(&self, estimator: Estimator) -> Self {
        MixedRegressionOutput {
            estimator,
            ..self.clone()
        }
    }

    /// The same channel with a fresh observation from the model (the teacher): for every row of
    /// `z` (`m x d`, any `m`), `q_i ~ π` and `y_i = z_{i q_i} + N(0, σ²)`; the labels are kept
    /// ([`MixedRegressionOutput::labels`]). [`crate::factor::OutputLaw::resample`] calls this.
    pub fn draw(&self, z: MatRef<'_, f64>, rng: &mut Rng) -> Result<MixedRegressionOutput> {
        let d = self.weights.len();
        if z.ncols() != d {
            return Err(Error::shape(
                "Z_{L-1} for the mixed regression output",
                format!("n x {d}"),
                shape_str(z),
            ));
        }
        check_finite("Z_{L-1} for the mixed regression output", z)?;
        let n = z.nrows();
        if n == 0 {
            return Err(Error::invalid(
                "Z_{L-1} for the mixed regression output",
                "must have at least one row",
            ));
        }
        let sd = self.noise_variance.sqrt();
        let mut labels = Vec::with_capacity(n);
        let mut y = Mat::<f64>::zeros(n, 1);
        for i in 0..n {
            // Inverse-CDF draw of q_i ~ π.
            let u: f64 = rng.random();
            let mut acc = 0.0;
            let mut q = d - 1;
            for (k, w) in self.weights.iter().enumerate() {
                acc += w;
                if u < acc {
                    q = k;
                    break;
                }
            }
            let xi: f64 = rng.sample(rand_distr::StandardNormal);
            y[(i, 0)] = z[(i, q)] + sd * xi;
            labels.push(q);
        }
        Ok(MixedRegressionOutput {
            y,
            labels: Some(labels),
            ..self.clone()
        })
    }

    /// `s_k`, `C_{k·}` and `Σ_k` for the message precision `Γ` (spec §4.6).
    fn components(&self, c: &DMat) -> Components {
        let d = self.weights.len();
        let mut s = Vec::with_capacity(d);
        let mut rows = Vec::with_capacity(d * d);
        let mut sigma = Vec::with_capacity(d);
        for k in 0..d {
            let sk = self.noise_variance + c[(k, k)];
            let ck = c.row(k).transpose();
            sigma.push(sym(&(c - &ck * ck.transpose() / sk)));
            rows.extend(ck.iter().copied());
            s.push(sk);
        }
        Components {
            log_s: s.iter().map(|x| x.ln()).collect(),
            s,
            c: rows,
            sigma,
        }
    }
}

impl Factor for MixedRegressionOutput {
    fn describe(&self) -> String {
        format!(
            "mixed linear regression output {} x 1 ({} components, σ² = {:.3e}, {})",
            self.y.nrows(),
            self.weights.len(),
            self.noise_variance,
            match self.estimator {
                Estimator::Mmse => "MMSE",
                Estimator::Map => "joint MAP",
            }
        )
    }

    fn dim(&self) -> usize {
        self.weights.len()
    }
}

impl OutputShape for MixedRegressionOutput {
    fn rows(&self) -> usize {
        self.y.nrows()
    }
}

impl OutputDenoiser for MixedRegressionOutput {
    fn observation(&self) -> MatRef<'_, f64> {
        self.y.as_ref()
    }

    /// `G⁻_L` of spec §4.6 (MMSE or joint MAP), row by row.
    fn denoise(&self, plus: &Message) -> Result<Belief> {
        let (n, d) = (self.y.nrows(), self.weights.len());
        plus.check("forward message R⁺ into the mixed regression output", n, d)?;
        check_finite(
            "forward message R⁺ into the mixed regression output",
            plus.mean.as_ref(),
        )?;
        let comp = self.components(&plus.precision.inverse());
        let r = plus.mean.as_ref();
        let map = self.estimator == Estimator::Map;
        // Accumulator: the between-component part of Σ (d x d), then Σ_i ω_ik per component.
        let out = par_map_rows(n, d, d * d + d, |i, v, acc| {
            let y = self.y[(i, 0)];
            // δ_k = (y − r_k)/s_k, so that m_k = r + δ_k C_{k·}.
            let mut delta = [0.0f64; MAX_COMPONENTS];
            let mut w = [0.0f64; MAX_COMPONENTS];
            let (delta, w) = (&mut delta[..d], &mut w[..d]);
            for k in 0..d {
                let res = y - r[(i, k)];
                delta[k] = res / comp.s[k];
                // MAP score log π_k − (y − r_k)²/(2 s_k); MMSE adds −½ log s_k.
                w[k] = self.log_weights[k] - 0.5 * res * delta[k];
                if !map {
                    w[k] -= 0.5 * comp.log_s[k];
                }
            }
            if map {
                let mut best = 0;
                for k in 1..d {
                    if w[k] > w[best] {
                        best = k;
                    }
                }
                for j in 0..d {
                    v[j] = r[(i, j)] + delta[best] * comp.c[best * d + j];
                }
                acc[d * d + best] += 1.0;
                return Ok(());
            }
            let max = w.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let mut total = 0.0;
            for wk in w.iter_mut() {
                *wk = (*wk - max).exp();
                total += *wk;
            }
            for wk in w.iter_mut() {
                *wk /= total;
            }
            // v̂ − r = u := Σ_k ω_k δ_k C_{k·}.
            let mut u = [0.0f64; MAX_COMPONENTS];
            let u = &mut u[..d];
            for k in 0..d {
                let a = w[k] * delta[k];
                for (uj, ckj) in u.iter_mut().zip(&comp.c[k * d..(k + 1) * d]) {
                    *uj += a * ckj;
                }
            }
            for j in 0..d {
                v[j] = r[(i, j)] + u[j];
            }
            // Between-component covariance Σ_k ω_k (m_k − v̂)ᵀ(m_k − v̂)
            //   = Σ_k ω_k δ_k² C_{k·}ᵀC_{k·} − uᵀu.
            for k in 0..d {
                acc[d * d + k] += w[k];
                let a = w[k] * delta[k] * delta[k];
                let ck = &comp.c[k * d..(k + 1) * d];
                for p in 0..d {
                    for q in 0..d {
                        acc[p * d + q] += a * ck[p] * ck[q];
                    }
                }
            }
            for p in 0..d {
                for q in 0..d {
                    acc[p * d + q] -= u[p] * u[q];
                }
            }
            Ok(())
        })?;
        let nf = n as f64;
        let mut cov = DMat::from_fn(d, d, |p, q| out.acc[p * d + q] / nf);
        for k in 0..d {
            let wk = out.acc[d * d + k] / nf;
            if wk != 0.0 {
                cov += &comp.sigma[k] * wk;
            }
        }
        let mean = out.rows;
        if let Some((i, j, x)) = crate::rows::first_non_finite(mean.as_ref()) {
            return Err(Error::Numerical {
                what: "mixed regression denoiser".into(),
                detail: format!("estimate entry ({i}, {j}) is {x}"),
            });
        }
        Ok(Belief::new(mean, sym(&cov)))
    }
}

impl OutputLaw for MixedRegressionOutput {
    /// Draws `q_i ~ π` and `y_i = z_{i q_i} + N(0, σ²)` for every row of `z` (any number of rows).
    fn resample(&self, z: MatRef<'_, f64>, rng: &mut Rng) -> Result<Box<dyn OutputChannel>> {
        Ok(Box::new(self.draw(z, rng)?))
    }
}

/// No closed form: the Monte-Carlo SE step over this factor's sampler and denoiser.
impl MonteCarloSe for MixedRegressionOutput {}
