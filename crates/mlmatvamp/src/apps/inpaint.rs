//! Inpainting with a deep generative prior (paper §2.4, eq. 10, with `L = 4`).
//!
//! The generative model (eq. 1) is
//!
//! ```text
//! Z_0 (n_0 x d): rows i.i.d. N(0, Σ_0)                  latent
//! Z_1 = W_1 Z_0                (n_1 x n_0 weights)       linear
//! Z_2 = relu(Z_1) + Ξ_2,  rows of Ξ_2 ~ N(0, N_2^{-1})   noisy relu (or noiseless)
//! Z_3 = W_3 Z_2                (n_3 x n_1 weights)       linear
//! Y   = Z_3 + Ξ_4 on the observed entries Ω (mask M), rows of Ξ_4 ~ N(0, N_4^{-1})
//! ```
//!
//! The `d` columns are `d` signals produced by the same generator from `d` latent codes; they
//! are coupled through the latent covariance `Σ_0` and the output noise `N_4`. The problem is to
//! impute the missing entries of `Z_3` (the clean data) from `Y`. Each entry is observed
//! independently with probability `observed`.
//!
//! * ML-Mat-VAMP: Gaussian prior → linear → relu layer ([`crate::denoise::ActivationLayer`],
//!   MMSE or MAP, spec §4.7) → linear → AWGN output with the mask (spec §4.5). The imputation is
//!   the output denoiser's estimate `Ẑ_3` at the missing entries.
//! * Baseline ([`LatentAdamConfig`]): MAP over the latent code only, by gradient descent (Adam)
//!   on `½‖M ⊙ (Y − G(Z_0))‖²_{N_4} + ½‖Z_0‖²_{Σ_0^{-1}}` with the deterministic generator
//!   `G(Z_0) = W_3 relu(W_1 Z_0)` (the hidden noise set to its mode), as in compressed sensing
//!   with generative models (Bora et al. 2017). The imputation is `G(Ẑ_0)`.
//! * State evolution: the missing-entry NMSE predicted from the SE's law of the forward message
//!   into the output, per missingness pattern ([`predicted_missing_nmse`]).

use super::adam::AdamStep;
use crate::denoise::mask_law::observed_precision;
use crate::denoise::{
    standard_normal, Activation, ActivationLayer, AwgnOutput, Estimator, GaussianPrior, InputPrior,
    Layer, LinearLayer, OutputChannel, ReluMmseMethod, Rng,
};
use crate::error::{Error, Result};
use crate::network::Network;
use crate::rng_from_seed;
use crate::rows::{check_finite, check_shape, shape_str};
use crate::se::{SeConfig, StateEvolution};
use crate::solver::{Control, Solver, SolverConfig};
use crate::spd::{dmat_from_rows, DMat, Spd};
use faer::{Mat, MatRef};
use rand::RngExt;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

/// The sizes and noise levels of one inpainting problem.
///
/// Defaults: `d = 3` signals of length `n_3 = 400` generated from latent codes of length
/// `n_0 = 100` through a hidden layer of width `n_1 = 200`; latent correlation `0.6^{|i−j|}`,
/// hidden noise variance `0.01`, output noise covariance `0.01·0.5^{|i−j|}`, half the entries
/// observed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InpaintConfig {
    /// Number of columns `d` (signals).
    pub d: usize,
    /// Latent length `n_0`.
    pub n0: usize,
    /// Hidden width `n_1` (rows of `Z_1` and `Z_2`).
    pub n1: usize,
    /// Signal length `n_3` (rows of `Z_3` and `Y`).
    pub n3: usize,
    /// `Σ_0 = [ρ^{|i−j|}]` with this `ρ ∈ (−1, 1)`.
    pub latent_correlation: f64,
    /// Variance of the relu layer's noise `Ξ_2` (`N_2 = I/var`); `None`: noiseless.
    pub hidden_noise_variance: Option<f64>,
    /// Output noise covariance `N_4^{-1} = var·[ρ_n^{|i−j|}]`: the variance …
    pub output_noise_variance: f64,
    /// … and the correlation `ρ_n ∈ (−1, 1)`.
    pub output_noise_correlation: f64,
    /// Probability that an entry of `Y` is observed, in `(0, 1]`.
    pub observed: f64,
}

impl Default for InpaintConfig {
    fn default() -> Self {
        InpaintConfig {
            d: 3,
            n0: 100,
            n1: 200,
            n3: 400,
            latent_correlation: 0.6,
            hidden_noise_variance: Some(0.01),
            output_noise_variance: 0.01,
            output_noise_correlation: 0.5,
            observed: 0.5,
        }
    }
}

fn toeplitz(d: usize, scale: f64, rho: f64) -> DMat {
    DMat::from_fn(d, d, |i, j| scale * rho.powi((i as i32 - j as i32).abs()))
}

impl InpaintConfig {
    /// Checks sizes, noise levels and the observed fraction.
    pub fn validate(&self) -> Result<()> {
        for (name, v) in [
            ("d", self.d),
            ("n0", self.n0),
            ("n1", self.n1),
            ("n3", self.n3),
        ] {
            if v == 0 {
                return Err(Error::invalid(name, "must be at least 1"));
            }
        }
        if self.d > crate::denoise::relu::MAX_RELU_DIM {
            return Err(Error::invalid(
                "d",
                format!(
                    "the relu layer supports d <= {}, got {}",
                    crate::denoise::relu::MAX_RELU_DIM,
                    self.d
                ),
            ));
        }
        for (name, r) in [
            ("latent_correlation", self.latent_correlation),
            ("output_noise_correlation", self.output_noise_correlation),
        ] {
            if !(r > -1.0 && r < 1.0) {
                return Err(Error::invalid(name, format!("must be in (-1, 1), got {r}")));
            }
        }
        if let Some(v) = self.hidden_noise_variance {
            if !(v > 0.0 && v.is_finite()) {
                return Err(Error::invalid(
                    "hidden_noise_variance",
                    format!("must be positive and finite (omit it for a noiseless layer), got {v}"),
                ));
            }
        }
        if !(self.output_noise_variance > 0.0 && self.output_noise_variance.is_finite()) {
            return Err(Error::invalid(
                "output_noise_variance",
                format!(
                    "must be positive and finite, got {}",
                    self.output_noise_variance
                ),
            ));
        }
        if !(self.observed > 0.0 && self.observed <= 1.0) {
            return Err(Error::invalid(
                "observed",
                format!(
                    "the observed fraction must be in (0, 1], got {}",
                    self.observed
                ),
            ));
        }
        Ok(())
    }

    /// The latent covariance `Σ_0`.
    pub fn latent_covariance(&self) -> DMat {
        toeplitz(self.d, 1.0, self.latent_correlation)
    }
    /// The relu layer's noise precision `N_2` (`None`: noiseless).
    pub fn hidden_noise_precision(&self) -> Option<DMat> {
        self.hidden_noise_variance
            .map(|v| DMat::identity(self.d, self.d) / v)
    }
    /// The output noise covariance `N_4^{-1}`.
    pub fn output_noise_covariance(&self) -> DMat {
        toeplitz(
            self.d,
            self.output_noise_variance,
            self.output_noise_correlation,
        )
    }
}

/// The generator's weights: drawn per trial, or given by the user.
#[derive(Clone, Debug, Default)]
pub enum Weights {
    /// I.i.d. `N(0, 1/cols)` entries, drawn from each trial's seed.
    #[default]
    Random,
    /// Fixed weights `W_1` (`n_1 x n_0`) and `W_3` (`n_3 x n_1`), e.g. a trained generator.
    Given {
        /// `W_1`.
        w1: Arc<Mat<f64>>,
        /// `W_3`.
        w3: Arc<Mat<f64>>,
    },
}

impl Weights {
    /// Checks given weights against the sizes of `cfg`.
    pub fn check(&self, cfg: &InpaintConfig) -> Result<()> {
        if let Weights::Given { w1, w3 } = self {
            check_shape("generator weight W_1", w1.as_ref().as_ref(), cfg.n1, cfg.n0)?;
            check_shape("generator weight W_3", w3.as_ref().as_ref(), cfg.n3, cfg.n1)?;
            check_finite("generator weight W_1", w1.as_ref().as_ref())?;
            check_finite("generator weight W_3", w3.as_ref().as_ref())?;
        }
        Ok(())
    }
}

/// One inpainting problem: the generator, the ground truth, the mask and the observation.
#[derive(Clone)]
pub struct InpaintTrial {
    /// The configuration.
    pub config: InpaintConfig,
    /// `W_1` (`n_1 x n_0`).
    pub w1: Arc<Mat<f64>>,
    /// `W_3` (`n_3 x n_1`).
    pub w3: Arc<Mat<f64>>,
    /// The truth `Z_0 … Z_3`.
    pub truth: Vec<Mat<f64>>,
    /// The mask of `Y` (`n_3 x d`, 1 = observed, 0 = missing).
    pub mask: Mat<f64>,
    prior: Arc<GaussianPrior>,
    lin1: Arc<LinearLayer>,
    lin3: Arc<LinearLayer>,
    output: Arc<dyn OutputChannel>,
}

impl std::fmt::Debug for InpaintTrial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InpaintTrial")
            .field("config", &self.config)
            .finish()
    }
}

impl InpaintTrial {
    /// Draws the weights (if random), the mask, the truth and `Y` from `seed`.
    pub fn generate(cfg: &InpaintConfig, weights: &Weights, seed: u64) -> Result<Self> {
        cfg.validate()?;
        weights.check(cfg)?;
        let d = cfg.d;
        let mut rng = rng_from_seed(seed);
        let (w1, w3) = match weights {
            Weights::Random => {
                let w1 = standard_normal(cfg.n1, cfg.n0, &mut rng)
                    * faer::Scale(1.0 / (cfg.n0 as f64).sqrt());
                let w3 = standard_normal(cfg.n3, cfg.n1, &mut rng)
                    * faer::Scale(1.0 / (cfg.n1 as f64).sqrt());
                (Arc::new(w1), Arc::new(w3))
            }
            Weights::Given { w1, w3 } => (w1.clone(), w3.clone()),
        };
        let mask = Mat::from_fn(cfg.n3, d, |_, _| {
            if rng.random::<f64>() < cfg.observed {
                1.0
            } else {
                0.0
            }
        });
        let prior = Arc::new(GaussianPrior::new(vec![0.0; d], cfg.latent_covariance())?);
        let lin1 = Arc::new(LinearLayer::new(w1.as_ref().as_ref(), None, None, d)?);
        let lin3 = Arc::new(LinearLayer::new(w3.as_ref().as_ref(), None, None, d)?);
        let noise = Spd::new(
            "output noise precision",
            Spd::new(
                "output noise covariance",
                cfg.output_noise_covariance(),
                Some(d),
            )?
            .inverse(),
            Some(d),
        )?;
        let template: Arc<dyn OutputChannel> = Arc::new(AwgnOutput::new(
            Mat::zeros(cfg.n3, d),
            noise,
            Some(mask.clone()),
        )?);
        let relu = Self::relu(cfg, Estimator::Mmse, ReluMmseMethod::Auto)?;
        let model = Self::assemble(cfg, &prior, &lin1, &lin3, template, relu)?;
        let (truth, observed) = model.sample(&mut rng)?;
        Ok(InpaintTrial {
            config: cfg.clone(),
            w1,
            w3,
            truth,
            mask,
            prior,
            lin1,
            lin3,
            output: observed.output().clone(),
        })
    }

    fn relu(
        cfg: &InpaintConfig,
        estimator: Estimator,
        mmse: ReluMmseMethod,
    ) -> Result<Arc<dyn Layer>> {
        let noise = cfg
            .hidden_noise_precision()
            .map(|n| Spd::new("hidden noise precision", n, Some(cfg.d)))
            .transpose()?;
        Ok(Arc::new(
            ActivationLayer::new(Activation::Relu, noise, estimator, cfg.d)?
                .with_relu_mmse(mmse)?,
        ))
    }

    fn assemble(
        cfg: &InpaintConfig,
        prior: &Arc<GaussianPrior>,
        lin1: &Arc<LinearLayer>,
        lin3: &Arc<LinearLayer>,
        output: Arc<dyn OutputChannel>,
        relu: Arc<dyn Layer>,
    ) -> Result<Network> {
        let prior: Arc<dyn InputPrior> = prior.clone();
        Network::new(
            prior,
            cfg.n0,
            vec![lin1.clone(), relu, lin3.clone()],
            output,
        )
    }

    /// The ML-Mat-VAMP network for this trial's observation, with a MAP or MMSE relu layer.
    pub fn network(&self, estimator: Estimator) -> Result<Network> {
        self.network_with(estimator, ReluMmseMethod::Auto)
    }

    /// The network with a given relu MMSE rule.
    pub fn network_with(&self, estimator: Estimator, mmse: ReluMmseMethod) -> Result<Network> {
        let relu = Self::relu(&self.config, estimator, mmse)?;
        Self::assemble(
            &self.config,
            &self.prior,
            &self.lin1,
            &self.lin3,
            self.output.clone(),
            relu,
        )
    }

    /// The observation `Y` (`n_3 x d`, NaN at missing entries).
    pub fn observation(&self) -> MatRef<'_, f64> {
        self.output.observation()
    }

    /// The missing-entry NMSE of an estimate of `Z_3`.
    pub fn missing_nmse(&self, z3: MatRef<'_, f64>) -> f64 {
        missing_nmse(z3, self.truth[3].as_ref(), self.mask.as_ref())
    }
}

/// `‖(Ẑ − Z⁰) ⊙ (1 − M)‖² / ‖Z⁰ ⊙ (1 − M)‖²`: the normalized squared error of the missing
/// entries (NaN if none is missing).
pub fn missing_nmse(est: MatRef<'_, f64>, truth: MatRef<'_, f64>, mask: MatRef<'_, f64>) -> f64 {
    let (mut num, mut den) = (0.0, 0.0);
    for j in 0..truth.ncols() {
        for i in 0..truth.nrows() {
            if mask[(i, j)] == 0.0 {
                num += (est[(i, j)] - truth[(i, j)]).powi(2);
                den += truth[(i, j)].powi(2);
            }
        }
    }
    if den > 0.0 {
        num / den
    } else {
        f64::NAN
    }
}

/// `‖Ẑ − Z⁰‖²_F / ‖Z⁰‖²_F`.
pub fn nmse(est: MatRef<'_, f64>, truth: MatRef<'_, f64>) -> f64 {
    let diff = est - truth;
    let n = truth.norm_l2();
    if n > 0.0 {
        (diff.norm_l2() / n).powi(2)
    } else {
        f64::NAN
    }
}

// ---------------------------------------------------------------------------------------------
// ML-Mat-VAMP and its state evolution
// ---------------------------------------------------------------------------------------------

/// Per-iteration record of an ML-Mat-VAMP run (or its SE prediction) on an inpainting trial.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Curve {
    /// Missing-entry NMSE of `Ẑ_3` after each iteration.
    pub missing_nmse: Vec<f64>,
    /// NMSE of `Ẑ_0` (the latent codes) after each iteration.
    pub z0_nmse: Vec<f64>,
    /// Cumulative wall time after each iteration (seconds; 0 for the SE).
    pub seconds: Vec<f64>,
}

/// Runs ML-Mat-VAMP (Algorithm 1) with a MAP or MMSE relu layer and records the metrics.
pub fn run_vamp(
    trial: &InpaintTrial,
    estimator: Estimator,
    solver: &SolverConfig,
) -> Result<Curve> {
    let net = trial.network(estimator)?;
    let solver = Solver::new(solver.clone())?;
    let mut curve = Curve::default();
    let start = Instant::now();
    let mut failure = None;
    solver.run_with(&net, Some(&trial.truth), &mut |_, state| match (
        state.estimate(3),
        state.estimate(0),
    ) {
        (Some(z3), Some(z0)) => {
            curve
                .missing_nmse
                .push(trial.missing_nmse(z3.mean.as_ref()));
            curve
                .z0_nmse
                .push(nmse(z0.mean.as_ref(), trial.truth[0].as_ref()));
            curve.seconds.push(start.elapsed().as_secs_f64());
            Control::Continue
        }
        _ => {
            failure = Some("the solver produced no estimate".to_string());
            Control::Stop
        }
    })?;
    if let Some(f) = failure {
        return Err(Error::Numerical {
            what: "inpainting".into(),
            detail: f,
        });
    }
    Ok(curve)
}

/// The missing-entry NMSE that the state evolution predicts for the output denoiser's
/// estimate of `Z_3`, given the law of the forward message into the output (spec §6.2 (O)):
/// `z` the true row with second moment `K_aa`, `r⁺ = z + b`, `E[bᵀb] = K_bb`, precision `Γ̄⁺`.
///
/// For a row with observed set `O` (pattern `p`, drawn independently of the row with the
/// frequency `π_p` of the mask), the AWGN output denoiser (spec §4.5) is linear:
/// `ẑ = (r⁺Γ̄⁺ + y M_p)Σ_p`, `Σ_p = (Γ̄⁺ + M_p)^{-1}`, `y_O = z_O + ξ_O`. Since
/// `z(Γ̄⁺ + M_p)Σ_p = z`, its error is `e = bΓ̄⁺Σ_p + ξ M_p Σ_p`, so
/// `E[eᵀe | p] = Σ_p Γ̄⁺ K_bb Γ̄⁺ Σ_p + Σ_p M_p N^{-1} M_p Σ_p`. The prediction is
/// `Σ_p π_p Σ_{j∉O_p} E[e_j² | p] / Σ_p π_p Σ_{j∉O_p} [K_aa]_jj`, the large-system value of
/// `‖(Ẑ − Z⁰)⊙(1−M)‖²/‖Z⁰⊙(1−M)‖²`.
pub fn predicted_missing_nmse(
    k_plus: &DMat,
    gamma_plus: &DMat,
    noise_cov: &DMat,
    patterns: &BTreeMap<Vec<bool>, f64>,
) -> Result<f64> {
    let d = gamma_plus.nrows();
    let k_aa = k_plus.view((0, 0), (d, d)).into_owned();
    let k_bb = k_plus.view((d, d), (d, d)).into_owned();
    let (mut num, mut den) = (0.0, 0.0);
    for (obs, &pi) in patterns {
        let m = observed_precision(noise_cov, obs)?;
        let sigma = Spd::from_symmetric("Γ⁺ + M_p", gamma_plus + &m)?.inverse();
        let e = &sigma * gamma_plus * &k_bb * gamma_plus * &sigma
            + &sigma * &m * noise_cov * &m * &sigma;
        for j in (0..d).filter(|&j| !obs[j]) {
            num += pi * e[(j, j)];
            den += pi * k_aa[(j, j)];
        }
    }
    Ok(if den > 0.0 { num / den } else { f64::NAN })
}

/// The frequencies of the missingness patterns (observed flags per row) of a mask.
pub fn pattern_frequencies(mask: MatRef<'_, f64>) -> BTreeMap<Vec<bool>, f64> {
    let mut out: BTreeMap<Vec<bool>, f64> = BTreeMap::new();
    let n = mask.nrows().max(1) as f64;
    for i in 0..mask.nrows() {
        let key: Vec<bool> = (0..mask.ncols()).map(|j| mask[(i, j)] != 0.0).collect();
        *out.entry(key).or_insert(0.0) += 1.0 / n;
    }
    out
}

/// The state evolution of ML-Mat-VAMP (MMSE relu layer, spec §6.2) on this trial's network
/// (linear layers in closed form over the actual singular values; the relu layer and the
/// output by Monte Carlo, the output redrawing mask patterns from the trial's mask), and the
/// per-iteration predictions of the missing-entry NMSE ([`predicted_missing_nmse`]) and of the
/// latent NMSE.
pub fn run_se(trial: &InpaintTrial, se: &SeConfig, mmse: ReluMmseMethod) -> Result<Curve> {
    let net = trial.network_with(Estimator::Mmse, mmse)?;
    let (iters, _) = StateEvolution::new(se.clone())?.run(&net, None)?;
    let patterns = pattern_frequencies(trial.mask.as_ref());
    let noise_cov = trial.config.output_noise_covariance();
    let d = trial.config.d;
    let mut curve = Curve::default();
    for it in &iters {
        let v3 = &it.variables[3];
        let k = dmat_from_rows("SE K⁺_3", &v3.k_plus, Some(2 * d))?;
        let g = dmat_from_rows("SE Γ⁺_3", &v3.gamma_plus, Some(d))?;
        curve
            .missing_nmse
            .push(predicted_missing_nmse(&k, &g, &noise_cov, &patterns)?);
        curve.z0_nmse.push(it.variables[0].se_nmse);
        curve.seconds.push(0.0);
    }
    Ok(curve)
}

// ---------------------------------------------------------------------------------------------
// Baseline: MAP over the latent code by Adam
// ---------------------------------------------------------------------------------------------

/// Full-batch Adam on the latent code (the baseline of compressed sensing with generative
/// models): minimises `L(Z_0) = ½ Σ_i e_i M_{p_i} e_iᵀ + ½ Σ_i z_i Σ_0^{-1} z_iᵀ` with
/// `e = Y − W_3 relu(W_1 Z_0)` and `M_p = E_Oᵀ([N_4^{-1}]_OO)^{-1}E_O` the observed-entry
/// precision of row `i`'s pattern (the negative log-posterior of eq. 10 with the hidden noise at
/// its mode). Gradient: `∂L/∂Z_0 = −W_1ᵀ((W_3ᵀ E) ⊙ 1[W_1Z_0 > 0]) + Z_0Σ_0^{-1}`, `E_i = e_iM_{p_i}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LatentAdamConfig {
    /// Number of Adam steps (default 1500).
    pub steps: usize,
    /// Learning rate (default 0.02).
    pub learning_rate: f64,
    /// `β₁` (default 0.9).
    pub beta1: f64,
    /// `β₂` (default 0.999).
    pub beta2: f64,
    /// `ε` (default 1e-8).
    pub epsilon: f64,
    /// The start is `Z_0 ~ N(0, init_scale² Σ_0)` (default 0.1; at `Z_0 = 0` every relu is at its
    /// kink and the gradient vanishes).
    pub init_scale: f64,
    /// Record the metric every this many steps (default 25).
    pub record_every: usize,
}

impl Default for LatentAdamConfig {
    fn default() -> Self {
        LatentAdamConfig {
            steps: 1500,
            learning_rate: 0.02,
            beta1: 0.9,
            beta2: 0.999,
            epsilon: 1e-8,
            init_scale: 0.1,
            record_every: 25,
        }
    }
}

/// The result of [`latent_adam`].
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct AdamCurve {
    /// Step counts at the records.
    pub steps: Vec<usize>,
    /// Cumulative wall time at the records.
    pub seconds: Vec<f64>,
    /// Missing-entry NMSE of `G(Ẑ_0)` at the records.
    pub missing_nmse: Vec<f64>,
    /// NMSE of `Ẑ_0` at the records.
    pub z0_nmse: Vec<f64>,
    /// The objective `L(Ẑ_0)` at the records.
    pub loss: Vec<f64>,
}

impl LatentAdamConfig {
    /// Checks the options.
    pub fn validate(&self) -> Result<()> {
        AdamStep::new(0, self.learning_rate, self.beta1, self.beta2, self.epsilon)?;
        if !(self.init_scale.is_finite() && self.init_scale > 0.0) {
            return Err(Error::invalid(
                "init_scale",
                format!("must be positive and finite, got {}", self.init_scale),
            ));
        }
        if self.steps == 0 || self.record_every == 0 {
            return Err(Error::invalid("steps / record_every", "must be at least 1"));
        }
        Ok(())
    }
}

/// The deterministic generator `G(Z_0) = W_3 relu(W_1 Z_0)`; also returns `W_1 Z_0`.
pub fn generator(
    w1: MatRef<'_, f64>,
    w3: MatRef<'_, f64>,
    z0: MatRef<'_, f64>,
) -> (Mat<f64>, Mat<f64>) {
    let a = w1 * z0;
    let h = Mat::from_fn(a.nrows(), a.ncols(), |i, j| a[(i, j)].max(0.0));
    (w3 * &h, a)
}

/// The MAP objective over the latent code (the baseline's loss, see [`LatentAdamConfig`]):
/// `L(Z_0) = ½ Σ_i e_i M_{p_i} e_iᵀ + ½ Σ_i z_i Σ_0^{-1} z_iᵀ`, `e = Y − W_3 relu(W_1 Z_0)`
/// on the observed entries, with its gradient.
pub struct LatentObjective<'a> {
    trial: &'a InpaintTrial,
    /// Observed-entry precision per pattern, and each row's pattern.
    ms: Vec<DMat>,
    row_pattern: Vec<usize>,
    /// `Y` with missing entries set to 0.
    y0: Mat<f64>,
    prec0: DMat,
}

impl<'a> LatentObjective<'a> {
    /// The objective of a trial.
    pub fn new(trial: &'a InpaintTrial) -> Result<Self> {
        let c = &trial.config;
        let d = c.d;
        let y = trial.observation();
        if y.nrows() != c.n3 || y.ncols() != d {
            return Err(Error::shape(
                "observation Y",
                format!("{} x {d}", c.n3),
                shape_str(y),
            ));
        }
        let noise_cov = c.output_noise_covariance();
        let mut pattern_index: BTreeMap<Vec<bool>, usize> = BTreeMap::new();
        let mut ms: Vec<DMat> = vec![];
        let mut row_pattern = Vec::with_capacity(c.n3);
        for i in 0..c.n3 {
            let key: Vec<bool> = (0..d).map(|j| trial.mask[(i, j)] != 0.0).collect();
            let next = ms.len();
            let p = *pattern_index.entry(key.clone()).or_insert(next);
            if p == next {
                ms.push(observed_precision(&noise_cov, &key)?);
            }
            row_pattern.push(p);
        }
        let y0 = Mat::from_fn(c.n3, d, |i, j| {
            if trial.mask[(i, j)] != 0.0 {
                y[(i, j)]
            } else {
                0.0
            }
        });
        let prec0 = Spd::new("latent covariance", c.latent_covariance(), Some(d))?.inverse();
        Ok(LatentObjective {
            trial,
            ms,
            row_pattern,
            y0,
            prec0,
        })
    }

    /// `(L(Z_0), ∂L/∂Z_0, G(Z_0))`. The gradient is
    /// `−W_1ᵀ((W_3ᵀE) ⊙ 1[W_1Z_0 > 0]) + Z_0Σ_0^{-1}` with `E_i = e_i M_{p_i}`.
    pub fn evaluate(&self, z: MatRef<'_, f64>) -> (f64, Mat<f64>, Mat<f64>) {
        let t = self.trial;
        let c = &t.config;
        let d = c.d;
        let (w1, w3) = (t.w1.as_ref().as_ref(), t.w3.as_ref().as_ref());
        let (yhat, a) = generator(w1, w3, z);
        let mut e = Mat::<f64>::zeros(c.n3, d);
        let mut loss = 0.0;
        let mut r = [0.0; crate::denoise::relu::MAX_RELU_DIM];
        for i in 0..c.n3 {
            let m = &self.ms[self.row_pattern[i]];
            for (k, rk) in r.iter_mut().enumerate().take(d) {
                *rk = if t.mask[(i, k)] != 0.0 {
                    self.y0[(i, k)] - yhat[(i, k)]
                } else {
                    0.0
                };
            }
            for j in 0..d {
                let x: f64 = (0..d).map(|k| r[k] * m[(k, j)]).sum();
                e[(i, j)] = x;
                loss += 0.5 * x * r[j];
            }
        }
        let zp = crate::rows::mul_small(z, &self.prec0);
        for j in 0..d {
            for i in 0..c.n0 {
                loss += 0.5 * z[(i, j)] * zp[(i, j)];
            }
        }
        let gh = w3.transpose() * &e;
        let ga = Mat::from_fn(a.nrows(), d, |i, j| {
            if a[(i, j)] > 0.0 {
                -gh[(i, j)]
            } else {
                0.0
            }
        });
        let grad = w1.transpose() * &ga + &zp;
        (loss, grad, yhat)
    }
}

/// Runs the latent-code Adam baseline on a trial (see [`LatentAdamConfig`]).
pub fn latent_adam(trial: &InpaintTrial, cfg: &LatentAdamConfig, seed: u64) -> Result<AdamCurve> {
    cfg.validate()?;
    let c = &trial.config;
    let d = c.d;
    let objective = LatentObjective::new(trial)?;
    let mut rng: Rng = rng_from_seed(seed);
    let chol = c
        .latent_covariance()
        .cholesky()
        .ok_or_else(|| Error::invalid("latent covariance", "not positive definite"))?;
    let mut z = crate::rows::mul_small(
        standard_normal(c.n0, d, &mut rng).as_ref(),
        &(chol.l().transpose() * cfg.init_scale),
    );
    let mut adam = AdamStep::new(
        c.n0 * d,
        cfg.learning_rate,
        cfg.beta1,
        cfg.beta2,
        cfg.epsilon,
    )?;
    // Parameters and gradient as column-major vectors for the optimiser.
    let mut w = vec![0.0; c.n0 * d];
    let mut gv = vec![0.0; c.n0 * d];
    let mut out = AdamCurve::default();
    let start = Instant::now();
    let record = |out: &mut AdamCurve, step: usize, loss: f64, yhat: &Mat<f64>, z: &Mat<f64>| {
        out.steps.push(step);
        out.seconds.push(start.elapsed().as_secs_f64());
        out.missing_nmse.push(trial.missing_nmse(yhat.as_ref()));
        out.z0_nmse.push(nmse(z.as_ref(), trial.truth[0].as_ref()));
        out.loss.push(loss);
    };
    for step in 1..=cfg.steps {
        let (loss, g, yhat) = objective.evaluate(z.as_ref());
        if !loss.is_finite() {
            return Err(Error::Numerical {
                what: "latent Adam".into(),
                detail: format!("the objective is not finite at step {step}"),
            });
        }
        if (step - 1) % cfg.record_every == 0 {
            record(&mut out, step - 1, loss, &yhat, &z);
        }
        for j in 0..d {
            for i in 0..c.n0 {
                w[j * c.n0 + i] = z[(i, j)];
                gv[j * c.n0 + i] = g[(i, j)];
            }
        }
        adam.step(&mut w, &gv)?;
        z = MatRef::from_column_major_slice(&w, c.n0, d).to_owned();
    }
    let (loss, _, yhat) = objective.evaluate(z.as_ref());
    record(&mut out, cfg.steps, loss, &yhat, &z);
    Ok(out)
}

/// The first wall time at which a curve's missing-entry NMSE is at most `target` (linear
/// interpolation between records), or `None` if it never is.
pub fn time_to_reach(seconds: &[f64], values: &[f64], target: f64) -> Option<f64> {
    for i in 0..values.len() {
        if values[i] <= target {
            if i == 0 {
                return Some(seconds[0]);
            }
            let (v0, v1) = (values[i - 1], values[i]);
            let (t0, t1) = (seconds[i - 1], seconds[i]);
            let f = if v0 > v1 {
                (v0 - target) / (v0 - v1)
            } else {
                1.0
            };
            return Some(t0 + f * (t1 - t0));
        }
    }
    None
}
