//! State evolution (SE): the deterministic recursion that predicts ML-Mat-VAMP's error in the
//! large-system limit (Theorem 1), as derived in spec §6.2.
//!
//! The SE follows Algorithm 1's schedule exactly ([`crate::schedule`]) with laws in place of
//! messages:
//! * forward, about `Z_l`: the `2d x 2d` second moment `K⁺ = E[[z, e⁺]^T [z, e⁺]]` of the true
//!   row `z` and the message error `e⁺ = r⁺ − z`, and the precision `Γ̄⁺` ([`SeForward`]);
//! * backward, about `Z_l`: `r⁻ = z Ψ⁻ + c`, `c ~ N(0, T⁻)` independent, and `Γ̄⁻`
//!   ([`SeBackward`]).
//!
//! Each factor kind implements its own SE step next to its denoiser: linear layers in closed form
//! over their singular values ([`crate::denoise::linear`]), the Gaussian prior analytically
//! ([`crate::denoise::gaussian`]), the AWGN output (with missing entries) in closed form
//! ([`awgn`]), every other prior, row-wise layer and output by seeded Monte Carlo over its row
//! model, through the default trait methods that call the kind's own `sample` and denoiser
//! ([`mc`]). The message rule, clipping and damping are the algorithm's
//! ([`crate::message::MessagePolicy::precision_update`]).

pub mod affine;
pub mod awgn;
pub mod laws;
pub mod mc;

use crate::error::{Error, Result};
use crate::message::MessagePolicy;
use crate::network::Network;
use crate::rows::{cross_moment, mul_small};
use crate::schedule::{self, Schedule};
use crate::solver::{location_backward, location_forward};
use crate::spd::{dmat_to_rows, psd_inverse, sym, DMat, Spd};
use faer::{Mat, MatRef};
use serde::{Deserialize, Serialize};

pub use laws::{marchenko_pastur_singular_values, LinearSpec, SpectralLinearLayer};

/// How backward messages are modelled (spec §6.3).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PsiMode {
    /// `r⁻ = z Ψ⁻ + c` with a general `Ψ⁻` fitted by regression (needed for MAP or mismatched
    /// denoisers, whose backward messages stay correlated with the truth).
    #[default]
    General,
    /// The paper's stated structure `r⁻ = z + c`, `c ~ N(0, τ⁻)`, `τ⁻ = E[e⁻^T e⁻]`.
    Identity,
}

/// The law of a forward message about `Z_l`.
#[derive(Clone, Debug)]
pub struct SeForward {
    /// `K⁺ = E[[z, e⁺]^T [z, e⁺]]` (`2d x 2d`; second moments, not covariances).
    pub k: DMat,
    /// The limit precision `Γ̄⁺`.
    pub gamma: Spd,
}

/// The law of a backward message about `Z_l`: `r⁻ = z Ψ⁻ + c`, `c ~ N(0, T⁻)`.
#[derive(Clone, Debug)]
pub struct SeBackward {
    /// `Ψ⁻` (`d x d`).
    pub psi: DMat,
    /// `T⁻` (`d x d`, positive semi-definite).
    pub t: DMat,
    /// The limit precision `Γ̄⁻`.
    pub gamma: Spd,
}

/// What an SE step predicts about the estimate its denoiser produces.
#[derive(Clone, Debug)]
pub struct SeEstimate {
    /// `E[(ẑ − z)^T (ẑ − z)]` (`d x d`): the predicted empirical error covariance.
    pub error_cov: DMat,
    /// `E[[z, ẑ]^T [z, ẑ]]` (`2d x 2d`): any quadratic row-wise metric follows from it.
    pub joint: DMat,
    /// `E[Σ]`: the algorithm's predicted average posterior covariance (its `Λ^{-1}`).
    pub predicted_cov: DMat,
    /// Monte-Carlo rows `(z, ẑ)` when the step was sampled (for non-quadratic metrics).
    pub samples: Option<(Mat<f64>, Mat<f64>)>,
}

/// One SE step's output.
#[derive(Clone, Debug)]
pub struct SeStep<T> {
    /// The outgoing law.
    pub out: T,
    /// The prediction about the step's estimate.
    pub estimate: SeEstimate,
}

/// Context of one SE step.
#[derive(Clone, Debug)]
pub struct SeContext<'a> {
    /// The message rule (the algorithm's).
    pub policy: &'a MessagePolicy,
    /// Monte-Carlo rows.
    pub n_mc: usize,
    /// Backward-message model.
    pub psi_mode: PsiMode,
    /// Seed of this step's Monte Carlo (derived from the run seed, iteration, layer, direction).
    pub seed: u64,
    /// Iteration `k`.
    pub iteration: usize,
    /// Where in the network (for error messages).
    pub location: String,
    /// Whether the caller needs Monte-Carlo rows of `(z, ẑ)` (a non-quadratic metric): steps
    /// that have an exact quadrature for non-Gaussian rows then use Monte Carlo instead.
    pub want_samples: bool,
}

impl SeContext<'_> {
    /// The step's RNG.
    pub fn rng(&self) -> crate::denoise::Rng {
        crate::rng_from_seed(self.seed)
    }
    /// A divergence error at this step.
    pub fn diverged(&self, detail: impl Into<String>) -> Error {
        Error::Diverged {
            location: format!("state evolution, {}", self.location),
            iteration: self.iteration,
            detail: detail.into(),
        }
    }
}

/// Options of the state evolution.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SeConfig {
    /// Number of iterations (as the algorithm's).
    pub iterations: usize,
    /// Monte-Carlo rows per sampled step (`≥ 2·10^4` recommended).
    pub n_mc: usize,
    /// Seed of all Monte-Carlo draws.
    pub seed: u64,
    /// Backward-message model.
    pub psi_mode: PsiMode,
    /// Initial `Γ̄⁻_{0l} = gamma_init · I` (the algorithm's).
    pub gamma_init: f64,
    /// The message rule (the algorithm's). Mean damping has no SE counterpart and is rejected.
    pub policy: MessagePolicy,
}

impl Default for SeConfig {
    fn default() -> Self {
        let s = crate::solver::SolverConfig::default();
        SeConfig {
            iterations: s.iterations,
            n_mc: 20_000,
            seed: 0,
            psi_mode: PsiMode::General,
            gamma_init: s.gamma_init,
            policy: s.policy,
        }
    }
}

impl SeConfig {
    /// The SE matching a solver configuration.
    pub fn from_solver(cfg: &crate::solver::SolverConfig) -> Self {
        SeConfig {
            iterations: cfg.iterations,
            gamma_init: cfg.gamma_init,
            policy: cfg.policy.clone(),
            ..Default::default()
        }
    }
    /// Checks the options.
    pub fn validate(&self) -> Result<()> {
        self.policy.validate()?;
        if self.policy.damp_mean != 0.0 {
            return Err(Error::invalid(
                "damp_mean",
                "mean damping has no state-evolution counterpart; set it to 0 for the SE",
            ));
        }
        if self.n_mc < 100 {
            return Err(Error::invalid(
                "n_mc",
                format!(
                    "at least 100 Monte-Carlo rows are needed, got {}",
                    self.n_mc
                ),
            ));
        }
        if !(self.gamma_init > 0.0 && self.gamma_init.is_finite()) {
            return Err(Error::invalid(
                "gamma_init",
                format!("must be positive and finite, got {}", self.gamma_init),
            ));
        }
        Ok(())
    }
}

/// Per-iteration SE prediction for one variable `Z_l`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SeVariableRecord {
    /// `l`.
    pub variable: usize,
    /// Predicted MSE per entry of the primary estimate, `tr(E)/d`.
    pub mse_per_entry: f64,
    /// Predicted MSE per row, `tr(E)` (comparable with the solver history's `mse`).
    pub mse: f64,
    /// Predicted `d x d` error covariance `E` of the primary estimate.
    pub error_cov: Vec<Vec<f64>>,
    /// Predicted normalized MSE `tr(E) / E||z||²`.
    pub nmse: f64,
    /// The algorithm's predicted covariance `E[Σ]` of the primary estimate (its own error bar).
    pub predicted_cov: Vec<Vec<f64>>,
    /// Predicted MSE per row of the forward-pass estimate `Ẑ⁺_l`.
    pub mse_plus: f64,
    /// Predicted MSE per row of the backward-pass estimate `Ẑ⁻_l`.
    pub mse_minus: f64,
    /// `Γ̄⁺_l`.
    pub gamma_plus: Vec<Vec<f64>>,
    /// `Γ̄⁻_l` (produced this iteration).
    pub gamma_minus: Vec<Vec<f64>>,
    /// `K⁺_l` (`2d x 2d`).
    pub k_plus: Vec<Vec<f64>>,
    /// `Ψ⁻_l`.
    pub psi_minus: Vec<Vec<f64>>,
    /// `T⁻_l`.
    pub t_minus: Vec<Vec<f64>>,
    /// A caller-supplied row-wise metric of the primary estimate, if any.
    pub metric: Option<f64>,
}

/// Per-iteration SE record.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SeIteration {
    /// `k`.
    pub iteration: usize,
    /// Seconds spent on this iteration.
    pub seconds: f64,
    /// One record per variable.
    pub variables: Vec<SeVariableRecord>,
}

/// The state of the recursion after some iterations.
#[derive(Clone, Debug)]
pub struct SeState {
    /// Forward laws per variable.
    pub plus: Vec<Option<SeForward>>,
    /// Backward laws per variable.
    pub minus: Vec<SeBackward>,
    /// Predictions about `Ẑ⁺_l`.
    pub est_plus: Vec<Option<SeEstimate>>,
    /// Predictions about `Ẑ⁻_l`.
    pub est_minus: Vec<Option<SeEstimate>>,
}

impl SeState {
    /// The prediction about the primary estimate of `Z_l` (see [`crate::solver::State::estimate`]).
    pub fn estimate(&self, l: usize) -> Option<&SeEstimate> {
        if l % 2 == 0 {
            self.est_plus[l].as_ref()
        } else {
            self.est_minus[l].as_ref()
        }
    }
}

/// A row-wise metric evaluated on `(z, ẑ)` rows of the primary estimate of variable `l`.
pub type RowMetric<'a> = dyn Fn(usize, MatRef<'_, f64>, MatRef<'_, f64>) -> f64 + 'a;

/// The state-evolution runner.
#[derive(Clone, Debug, Default)]
pub struct StateEvolution {
    /// Options.
    pub config: SeConfig,
}

struct SeSteps<'a, 'b> {
    net: &'a Network,
    config: &'a SeConfig,
    k: usize,
    want_samples: bool,
    est_plus: &'b mut [Option<SeEstimate>],
    est_minus: &'b mut [Option<SeEstimate>],
}

impl SeSteps<'_, '_> {
    fn ctx(&self, l: usize, dir: u64, location: String) -> SeContext<'_> {
        let seed = crate::rng::step_seed(self.config.seed, self.k, l, dir);
        SeContext {
            policy: &self.config.policy,
            n_mc: self.config.n_mc,
            psi_mode: self.config.psi_mode,
            seed,
            iteration: self.k,
            location,
            want_samples: self.want_samples,
        }
    }
}

impl Schedule for SeSteps<'_, '_> {
    type Fwd = SeForward;
    type Bwd = SeBackward;

    fn prior(&mut self, minus: &SeBackward, prev: Option<&SeForward>) -> Result<SeForward> {
        let ctx = self.ctx(0, 0, location_forward(self.net, 0));
        let step = self
            .net
            .prior()
            .se_forward(minus, &ctx, prev.map(|p| &p.gamma))?;
        self.est_plus[0] = Some(step.estimate);
        Ok(step.out)
    }
    fn layer_forward(
        &mut self,
        l: usize,
        minus: &SeBackward,
        plus_in: &SeForward,
        prev: Option<&SeForward>,
    ) -> Result<SeForward> {
        let ctx = self.ctx(l, 0, location_forward(self.net, l));
        let step = self
            .net
            .layer(l)
            .se_forward(minus, plus_in, &ctx, prev.map(|p| &p.gamma))?;
        self.est_plus[l] = Some(step.estimate);
        Ok(step.out)
    }
    fn output(&mut self, plus: &SeForward, prev: &SeBackward) -> Result<SeBackward> {
        let last = self.net.depth() - 1;
        let ctx = self.ctx(last + 1, 1, location_backward(self.net, last));
        let step = self
            .net
            .output()
            .se_backward(plus, &ctx, Some(&prev.gamma))?;
        self.est_minus[last] = Some(step.estimate);
        Ok(step.out)
    }
    fn layer_backward(
        &mut self,
        l: usize,
        minus: &SeBackward,
        plus_in: &SeForward,
        prev: &SeBackward,
    ) -> Result<SeBackward> {
        let ctx = self.ctx(l, 1, location_backward(self.net, l - 1));
        let step = self
            .net
            .layer(l)
            .se_backward(minus, plus_in, &ctx, Some(&prev.gamma))?;
        self.est_minus[l - 1] = Some(step.estimate);
        Ok(step.out)
    }
}

impl StateEvolution {
    /// An SE runner with the given options.
    pub fn new(config: SeConfig) -> Result<Self> {
        config.validate()?;
        Ok(StateEvolution { config })
    }

    /// The initial state: `R⁻_{0l} = 0` gives `Ψ⁻ = 0`, `T⁻ = 0`, `Γ̄⁻ = gamma_init · I`.
    pub fn initial_state(&self, net: &Network) -> Result<SeState> {
        let d = net.dim();
        let l = net.depth();
        let minus = (0..l)
            .map(|_| {
                Ok(SeBackward {
                    psi: DMat::zeros(d, d),
                    t: DMat::zeros(d, d),
                    gamma: Spd::scaled_identity(d, self.config.gamma_init)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(SeState {
            plus: vec![None; l],
            minus,
            est_plus: vec![None; l],
            est_minus: vec![None; l],
        })
    }

    fn steps<'a, 'b>(
        &'a self,
        net: &'a Network,
        state: &'b mut SeState,
        k: usize,
        want_samples: bool,
    ) -> (
        SeSteps<'a, 'b>,
        &'b mut Vec<Option<SeForward>>,
        &'b mut Vec<SeBackward>,
    ) {
        let SeState {
            plus,
            minus,
            est_plus,
            est_minus,
        } = state;
        (
            SeSteps {
                net,
                config: &self.config,
                k,
                want_samples,
                est_plus,
                est_minus,
            },
            plus,
            minus,
        )
    }

    /// The forward pass of iteration `k` (Algorithm 1's schedule, [`crate::schedule`]).
    pub fn forward_pass(
        &self,
        net: &Network,
        state: &mut SeState,
        k: usize,
        want_samples: bool,
    ) -> Result<()> {
        let (mut steps, plus, minus) = self.steps(net, state, k, want_samples);
        schedule::forward_pass(&mut steps, plus, minus)
    }

    /// The backward pass of iteration `k`.
    pub fn backward_pass(
        &self,
        net: &Network,
        state: &mut SeState,
        k: usize,
        want_samples: bool,
    ) -> Result<()> {
        let (mut steps, plus, minus) = self.steps(net, state, k, want_samples);
        schedule::backward_pass(&mut steps, plus, minus)
    }

    /// One SE iteration (forward and backward pass) on `state`.
    pub fn step(&self, net: &Network, state: &mut SeState, k: usize) -> Result<()> {
        self.step_sampled(net, state, k, false)
    }

    /// As [`StateEvolution::step`]; with `want_samples`, steps return Monte-Carlo rows of
    /// `(z, ẑ)` for non-quadratic metrics.
    pub fn step_sampled(
        &self,
        net: &Network,
        state: &mut SeState,
        k: usize,
        want_samples: bool,
    ) -> Result<()> {
        self.forward_pass(net, state, k, want_samples)?;
        self.backward_pass(net, state, k, want_samples)
    }

    /// Runs the recursion for `config.iterations` iterations and returns one record per iteration.
    /// `metric`, if given, is evaluated on `(z, ẑ)` rows of every primary estimate (Monte-Carlo
    /// rows, or `n_mc` Gaussian draws from the predicted joint law for closed-form steps).
    pub fn run(
        &self,
        net: &Network,
        metric: Option<&RowMetric<'_>>,
    ) -> Result<(Vec<SeIteration>, SeState)> {
        self.config.validate()?;
        let mut state = self.initial_state(net)?;
        let mut out = Vec::with_capacity(self.config.iterations);
        for k in 0..self.config.iterations {
            let start = std::time::Instant::now();
            self.step_sampled(net, &mut state, k, metric.is_some())?;
            out.push(self.record(net, &state, k, start.elapsed().as_secs_f64(), metric));
        }
        Ok((out, state))
    }

    /// Summarises `state` after iteration `k` (see [`SeIteration`]).
    pub fn record(
        &self,
        net: &Network,
        state: &SeState,
        k: usize,
        seconds: f64,
        metric: Option<&RowMetric<'_>>,
    ) -> SeIteration {
        let d = net.dim();
        let variables = (0..net.depth())
            .map(|l| {
                let est = state.estimate(l).expect("ran");
                let tr = est.error_cov.trace();
                let zz = est.joint.view((0, 0), (d, d)).trace();
                let metric_value = metric.map(|f| match &est.samples {
                    Some((z, zh)) => f(l, z.as_ref(), zh.as_ref()),
                    None => {
                        let mut rng = crate::rng_from_seed(crate::rng::splitmix64(self.config.seed
                            ^ 0xABCD
                            ^ ((k as u64) << 20)
                            ^ l as u64));
                        let rows = mc::sample_rows(self.config.n_mc, &est.joint, &mut rng);
                        let z = rows.as_ref().subcols(0, d).to_owned();
                        let zh = rows.as_ref().subcols(d, d).to_owned();
                        f(l, z.as_ref(), zh.as_ref())
                    }
                });
                let plus = state.plus[l].as_ref().expect("ran");
                let minus = &state.minus[l];
                SeVariableRecord {
                    variable: l,
                    mse_per_entry: tr / d as f64,
                    mse: tr,
                    error_cov: dmat_to_rows(&est.error_cov),
                    nmse: if zz > 0.0 { tr / zz } else { f64::NAN },
                    predicted_cov: dmat_to_rows(&est.predicted_cov),
                    mse_plus: state.est_plus[l]
                        .as_ref()
                        .map_or(f64::NAN, |e| e.error_cov.trace()),
                    mse_minus: state.est_minus[l]
                        .as_ref()
                        .map_or(f64::NAN, |e| e.error_cov.trace()),
                    gamma_plus: dmat_to_rows(plus.gamma.matrix()),
                    gamma_minus: dmat_to_rows(minus.gamma.matrix()),
                    k_plus: dmat_to_rows(&plus.k),
                    psi_minus: dmat_to_rows(&minus.psi),
                    t_minus: dmat_to_rows(&minus.t),
                    metric: metric_value,
                }
            })
            .collect();
        SeIteration {
            iteration: k,
            seconds,
            variables,
        }
    }
}

/// The regression of a backward message error on the true row (spec §6.2 (N), (O)):
/// `M = E[a^T a]^{-1} E[a^T e⁻]`, `Ψ⁻ = I + M`, `T⁻ = E[e⁻^T e⁻] − M^T E[a^T a] M`; with
/// [`PsiMode::Identity`], `Ψ⁻ = I`, `T⁻ = E[e⁻^T e⁻]`.
pub fn backward_law(k_aa: &DMat, ae: &DMat, ee: &DMat, mode: PsiMode, gamma: Spd) -> SeBackward {
    let d = k_aa.nrows();
    match mode {
        PsiMode::Identity => SeBackward {
            psi: DMat::identity(d, d),
            t: clamp_psd(&sym(ee)),
            gamma,
        },
        PsiMode::General => {
            let inv = psd_inverse(k_aa).unwrap_or_else(|| DMat::zeros(d, d));
            let m = &inv * ae;
            let t = sym(&(ee - m.transpose() * k_aa * &m));
            SeBackward {
                psi: DMat::identity(d, d) + m,
                t: clamp_psd(&t),
                gamma,
            }
        }
    }
}

/// Floors the eigenvalues of a symmetric matrix at 0.
pub fn clamp_psd(m: &DMat) -> DMat {
    let e = nalgebra::SymmetricEigen::new(sym(m));
    if e.eigenvalues.iter().all(|&v| v >= 0.0) {
        return sym(m);
    }
    let q = &e.eigenvectors;
    sym(&(q * DMat::from_diagonal(&e.eigenvalues.map(|v| v.max(0.0))) * q.transpose()))
}

/// The joint second moment `E[[x, y]^T [x, y]]` of two `n x d` sample matrices.
pub fn joint_moment(x: MatRef<'_, f64>, y: MatRef<'_, f64>) -> DMat {
    let d = x.ncols();
    let mut j = DMat::zeros(2 * d, 2 * d);
    j.view_mut((0, 0), (d, d)).copy_from(&cross_moment(x, x));
    j.view_mut((0, d), (d, d)).copy_from(&cross_moment(x, y));
    j.view_mut((d, d), (d, d)).copy_from(&cross_moment(y, y));
    let upper = j.view((0, d), (d, d)).transpose();
    j.view_mut((d, 0), (d, d)).copy_from(&upper);
    sym(&j)
}

/// `x Ψ` for sample rows.
pub(crate) fn times(x: MatRef<'_, f64>, m: &DMat) -> Mat<f64> {
    mul_small(x, m)
}
