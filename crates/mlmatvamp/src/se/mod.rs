//! State evolution (SE): the deterministic recursion that predicts ML-Mat-VAMP's error in the
//! large-system limit (Theorem 1), derived in `docs/se-recursion.md`.
//!
//! The SE follows Algorithm 1's schedule exactly ([`crate::schedule`]) with laws in place of
//! messages ([`crate::factor::law`]):
//! * forward, about `Z_l`: the `2d x 2d` second moment `K⁺ = E[[z, e⁺]^T [z, e⁺]]` of the true
//!   row `z` and the message error `e⁺ = r⁺ − z`, and the precision `Γ̄⁺` ([`SeForward`]);
//! * backward, about `Z_l`: `r⁻ = z Ψ⁻ + c`, `c ~ N(0, T⁻)` independent, and `Γ̄⁻`
//!   ([`SeBackward`]).
//!
//! It runs on an [`SeNetwork`], whose factors need only their SE step
//! ([`crate::factor::PriorSe`], [`crate::factor::LayerSe`], [`crate::factor::OutputSe`]); every
//! [`crate::network::Network`] is one. Each factor kind implements its own SE step next to its
//! denoiser: linear layers in closed form over their singular values
//! ([`crate::denoise::spectral`]), the Gaussian prior analytically ([`crate::denoise::gaussian`]),
//! the AWGN output (with missing entries) in closed form ([`crate::denoise::mask_law`]), every
//! other prior, row-wise layer and output by seeded Monte Carlo over its own sampler and denoiser
//! ([`crate::factor::monte_carlo`]). The message rule, clipping and damping are the algorithm's
//! ([`crate::message::MessagePolicy::precision_update`]).

pub use crate::denoise::spectral::{
    marchenko_pastur_singular_values, LinearSpec, SpectralLinearLayer,
};
pub use crate::factor::law::{
    backward_law, clamp_psd, joint_moment, PsiMode, SeBackward, SeContext, SeEstimate, SeForward,
    SeStep,
};
pub use crate::network::SeNetwork;

use crate::error::{Error, Result};
use crate::factor::monte_carlo::sample_rows;
use crate::message::{MessagePolicy, OnDivergence};
use crate::schedule::{self, Schedule};
use crate::spd::{dmat_to_rows, DMat, Spd};
use faer::MatRef;
use serde::{Deserialize, Serialize};

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
        if !(MIN_N_MC..=MAX_N_MC).contains(&self.n_mc) {
            return Err(Error::invalid(
                "n_mc",
                format!(
                    "the Monte-Carlo rows per step must be between {MIN_N_MC} and {MAX_N_MC}, got {}",
                    self.n_mc
                ),
            ));
        }
        if self.iterations > crate::solver::MAX_ITERATIONS {
            return Err(Error::invalid(
                "iterations",
                format!(
                    "at most {} iterations, got {}",
                    crate::solver::MAX_ITERATIONS,
                    self.iterations
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

/// The fewest Monte-Carlo rows per sampled SE step.
pub const MIN_N_MC: usize = 100;
/// The most Monte-Carlo rows per sampled SE step (a few `n_mc x 2d` blocks must fit in memory).
pub const MAX_N_MC: usize = 50_000_000;

/// Per-iteration SE prediction for one variable `Z_l`.
///
/// Field names match the solver's history ([`crate::solver::VariableRecord`]): a field with the
/// same name is the same quantity — its large-system limit. The SE's predictions of the
/// *empirical* error (the history's `mse`, `error_cov`, …, which need the truth) carry the prefix
/// `se_`. The schemas of both are documented in `docs/outputs.md`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SeVariableRecord {
    /// `l`.
    pub variable: usize,
    /// Predicted empirical MSE per entry of the primary estimate, `tr(E)/d`.
    pub se_mse_per_entry: f64,
    /// Predicted empirical MSE per row, `tr(E)` (predicts the history's `mse`).
    pub se_mse: f64,
    /// Predicted empirical `d x d` error covariance `E` (predicts the history's `error_cov`).
    pub se_error_cov: Vec<Vec<f64>>,
    /// Predicted normalized MSE `tr(E) / E||z||²`.
    pub se_nmse: f64,
    /// Predicted empirical MSE per row of the forward-pass estimate `Ẑ⁺_l` (the history's
    /// `mse_plus`).
    pub se_mse_plus: f64,
    /// Predicted empirical MSE per row of the backward-pass estimate `Ẑ⁻_l` (the history's
    /// `mse_minus`).
    pub se_mse_minus: f64,
    /// The limit of the algorithm's own average posterior covariance `Σ̄` of the primary
    /// estimate (the history's `cov`).
    pub cov: Vec<Vec<f64>>,
    /// `tr` of `cov`: the limit of the algorithm's own predicted MSE per row (the history's
    /// `predicted_mse`).
    pub predicted_mse: f64,
    /// `Γ̄⁺_l` (the history's `gamma_plus`).
    pub gamma_plus: Vec<Vec<f64>>,
    /// `Γ̄⁻_l`, produced this iteration (the history's `gamma_minus`).
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
    /// Roll-backs before this iteration succeeded (omitted from JSON when there are none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// The state of the recursion: the laws of all messages and the predictions about every
/// estimate. Built by [`StateEvolution::initial_state`] for one network and advanced by
/// [`StateEvolution::step`]; its fields are private so that it always matches its network.
#[derive(Clone, Debug)]
pub struct SeState {
    plus: Vec<Option<SeForward>>,
    minus: Vec<SeBackward>,
    est_plus: Vec<Option<SeEstimate>>,
    est_minus: Vec<Option<SeEstimate>>,
    d: usize,
    iterations: usize,
}

impl SeState {
    /// A state whose backward laws are `minus` (one per variable `Z_0 … Z_{L−1}`, all `d x d`)
    /// and with no forward law yet: a custom start (e.g. the law of an initialisation, or of an
    /// algorithm's iterate). Use it with the network it was made for.
    pub fn from_minus(minus: Vec<SeBackward>) -> Result<Self> {
        let first = minus
            .first()
            .ok_or_else(|| Error::invalid("SE state", "at least one backward law is needed"))?;
        let d = first.gamma.dim();
        let l = minus.len();
        let mut state = SeState {
            plus: vec![None; l],
            minus: minus.clone(),
            est_plus: vec![None; l],
            est_minus: vec![None; l],
            d,
            iterations: 0,
        };
        for (i, law) in minus.into_iter().enumerate() {
            state.set_minus(i, law)?;
        }
        Ok(state)
    }
    /// All backward laws `Z_0 … Z_{L−1}`.
    pub fn minus_all(&self) -> &[SeBackward] {
        &self.minus
    }
    /// Replaces the law of the forward message about `Z_l` (e.g. the law of a given first-layer
    /// message). The law must be `2d x 2d` / `d x d`.
    pub fn set_plus(&mut self, l: usize, law: SeForward) -> Result<()> {
        let depth = self.plus.len();
        let d = self.d;
        let slot = self.plus.get_mut(l).ok_or_else(|| {
            Error::invalid(
                "SE state",
                format!("variables are numbered 0 … {}, got {l}", depth - 1),
            )
        })?;
        if law.k.nrows() != 2 * d || law.k.ncols() != 2 * d || law.gamma.dim() != d {
            return Err(Error::shape(
                format!("forward law about Z_{l}"),
                format!("K {} x {}, Γ {d} x {d}", 2 * d, 2 * d),
                format!(
                    "K {} x {}, Γ {} x {}",
                    law.k.nrows(),
                    law.k.ncols(),
                    law.gamma.dim(),
                    law.gamma.dim()
                ),
            ));
        }
        *slot = Some(law);
        Ok(())
    }
    /// The prediction about the primary estimate of `Z_l` (see
    /// [`crate::solver::State::estimate`]); `None` before the first iteration or past the depth.
    pub fn estimate(&self, l: usize) -> Option<&SeEstimate> {
        if l.is_multiple_of(2) {
            self.est_plus.get(l)?.as_ref()
        } else {
            self.est_minus.get(l)?.as_ref()
        }
    }
    /// The prediction about the forward-pass estimate `Ẑ⁺_l`.
    pub fn estimate_plus(&self, l: usize) -> Option<&SeEstimate> {
        self.est_plus.get(l)?.as_ref()
    }
    /// The prediction about the backward-pass estimate `Ẑ⁻_l`.
    pub fn estimate_minus(&self, l: usize) -> Option<&SeEstimate> {
        self.est_minus.get(l)?.as_ref()
    }
    /// The law of the forward message about `Z_l` (`None` before the first forward pass).
    pub fn plus(&self, l: usize) -> Option<&SeForward> {
        self.plus.get(l)?.as_ref()
    }
    /// The law of the backward message about `Z_l`.
    pub fn minus(&self, l: usize) -> Option<&SeBackward> {
        self.minus.get(l)
    }
    /// Replaces the law of the backward message about `Z_l` (a custom start, e.g. the law of an
    /// initialisation). The law must be `d x d`.
    pub fn set_minus(&mut self, l: usize, law: SeBackward) -> Result<()> {
        let depth = self.minus.len();
        let slot = self.minus.get_mut(l).ok_or_else(|| {
            Error::invalid(
                "SE state",
                format!("variables are numbered 0 … {}, got {l}", depth - 1),
            )
        })?;
        let d = self.d;
        let ok = |m: &DMat| m.nrows() == d && m.ncols() == d;
        if !ok(&law.psi) || !ok(&law.t) || law.gamma.dim() != d {
            return Err(Error::shape(
                format!("backward law about Z_{l}"),
                format!("{d} x {d} matrices"),
                format!(
                    "Ψ {} x {}, T {} x {}, Γ {} x {}",
                    law.psi.nrows(),
                    law.psi.ncols(),
                    law.t.nrows(),
                    law.t.ncols(),
                    law.gamma.dim(),
                    law.gamma.dim()
                ),
            ));
        }
        *slot = law;
        Ok(())
    }
    /// The number of variables `L`.
    pub fn depth(&self) -> usize {
        self.minus.len()
    }
    /// The number of completed iterations.
    pub fn iterations(&self) -> usize {
        self.iterations
    }
}

/// A row-wise metric evaluated on `(z, ẑ)` rows of the primary estimate of variable `l`.
pub type RowMetric<'a> = dyn Fn(usize, MatRef<'_, f64>, MatRef<'_, f64>) -> f64 + 'a;

/// The state-evolution runner.
#[derive(Clone, Debug, Default)]
pub struct StateEvolution {
    config: SeConfig,
}

struct SeSteps<'a, 'b> {
    net: &'a SeNetwork,
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
    fn layer(&self, l: usize) -> Result<&std::sync::Arc<dyn crate::factor::LayerSe>> {
        self.net.layer(l)
    }
}

impl Schedule for SeSteps<'_, '_> {
    type Fwd = SeForward;
    type Bwd = SeBackward;

    fn prior(&mut self, minus: &SeBackward, prev: Option<&SeForward>) -> Result<SeForward> {
        let ctx = self.ctx(0, 0, self.net.chain().location_forward(0));
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
        let ctx = self.ctx(l, 0, self.net.chain().location_forward(l));
        let step = self
            .layer(l)?
            .se_forward(minus, plus_in, &ctx, prev.map(|p| &p.gamma))?;
        self.est_plus[l] = Some(step.estimate);
        Ok(step.out)
    }
    fn output(&mut self, plus: &SeForward, prev: &SeBackward) -> Result<SeBackward> {
        let last = self.net.depth() - 1;
        let ctx = self.ctx(last + 1, 1, self.net.chain().location_backward(last));
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
        let ctx = self.ctx(l, 1, self.net.chain().location_backward(l - 1));
        let step = self
            .layer(l)?
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

    /// The options.
    pub fn config(&self) -> &SeConfig {
        &self.config
    }

    /// The initial state: `R⁻_{0l} = 0` gives `Ψ⁻ = 0`, `T⁻ = 0`, `Γ̄⁻ = gamma_init · I`.
    pub fn initial_state<N: AsRef<SeNetwork> + ?Sized>(&self, net: &N) -> Result<SeState> {
        let net = net.as_ref();
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
            d,
            iterations: 0,
        })
    }

    fn check_state(net: &SeNetwork, state: &SeState) -> Result<()> {
        if state.depth() != net.depth() || state.d != net.dim() {
            return Err(Error::shape(
                "SE state",
                format!(
                    "a state of this network (L = {}, d = {})",
                    net.depth(),
                    net.dim()
                ),
                format!("L = {}, d = {}", state.depth(), state.d),
            ));
        }
        Ok(())
    }

    fn pass(
        &self,
        net: &SeNetwork,
        state: &mut SeState,
        k: usize,
        want_samples: bool,
        forward: bool,
    ) -> Result<()> {
        Self::check_state(net, state)?;
        let SeState {
            plus,
            minus,
            est_plus,
            est_minus,
            ..
        } = state;
        let mut steps = SeSteps {
            net,
            config: &self.config,
            k,
            want_samples,
            est_plus,
            est_minus,
        };
        if forward {
            schedule::forward_pass(&mut steps, plus, minus)
        } else {
            schedule::backward_pass(&mut steps, plus, minus)
        }
    }

    /// The forward pass of iteration `k` (Algorithm 1's schedule, [`crate::schedule`]).
    pub fn forward_pass<N: AsRef<SeNetwork> + ?Sized>(
        &self,
        net: &N,
        state: &mut SeState,
        k: usize,
        want_samples: bool,
    ) -> Result<()> {
        self.pass(net.as_ref(), state, k, want_samples, true)
    }

    /// The backward pass of iteration `k` (an error before the first forward pass).
    pub fn backward_pass<N: AsRef<SeNetwork> + ?Sized>(
        &self,
        net: &N,
        state: &mut SeState,
        k: usize,
        want_samples: bool,
    ) -> Result<()> {
        self.pass(net.as_ref(), state, k, want_samples, false)?;
        state.iterations = state.iterations.max(k + 1);
        Ok(())
    }

    /// One SE iteration (forward and backward pass) on `state`.
    pub fn step<N: AsRef<SeNetwork> + ?Sized>(
        &self,
        net: &N,
        state: &mut SeState,
        k: usize,
    ) -> Result<()> {
        self.step_sampled(net, state, k, false)
    }

    /// As [`StateEvolution::step`]; with `want_samples`, steps return Monte-Carlo rows of
    /// `(z, ẑ)` for non-quadratic metrics.
    pub fn step_sampled<N: AsRef<SeNetwork> + ?Sized>(
        &self,
        net: &N,
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
    pub fn run<N: AsRef<SeNetwork> + ?Sized>(
        &self,
        net: &N,
        metric: Option<&RowMetric<'_>>,
    ) -> Result<(Vec<SeIteration>, SeState)> {
        self.config.validate()?;
        let net = net.as_ref();
        // A sampled step holds about a dozen `n_mc x d` blocks (rows, messages, estimates).
        crate::limits::check_memory(
            &format!("the Monte-Carlo SE with n_mc = {} rows", self.config.n_mc),
            "n_mc",
            crate::limits::f64_bytes(
                (self.config.n_mc as u64).saturating_mul(12 * net.dim() as u64),
            ),
        )?;
        let mut state = self.initial_state(net)?;
        let mut out: Vec<SeIteration> = Vec::with_capacity(self.config.iterations);
        // Divergence handling as the solver's (`MessagePolicy::on_divergence`): roll back to the
        // last sound state and damp the precisions harder, or stop with the error.
        let mut runner = self.clone();
        let mut retries = 0usize;
        let mut events = Vec::new();
        let mut k = 0;
        while k < self.config.iterations {
            let start = std::time::Instant::now();
            let sound = state.clone();
            let attempt = runner
                .step_sampled(net, &mut state, k, metric.is_some())
                .and_then(|()| runner.record(net, &state, k, start.elapsed().as_secs_f64(), metric))
                .and_then(|rec| check_se_sound(net, &rec, &out).map(|()| rec));
            match attempt {
                Ok(mut rec) => {
                    rec.warnings.append(&mut events);
                    out.push(rec);
                    k += 1;
                }
                Err(Error::Diverged {
                    location,
                    iteration,
                    detail,
                }) if runner.config.policy.on_divergence == OnDivergence::Damp
                    && retries < runner.config.policy.max_retries =>
                {
                    retries += 1;
                    state = sound;
                    let p = &mut runner.config.policy;
                    p.damp_precision = (0.5 * (1.0 + p.damp_precision)).min(0.95);
                    events.push(format!(
                        "iteration {iteration}: {location} diverged ({detail}); rolled back and raised the precision damping to {:.3}",
                        p.damp_precision
                    ));
                }
                Err(Error::Diverged {
                    location,
                    iteration,
                    detail,
                }) if retries > 0 => {
                    return Err(Error::Diverged {
                        location,
                        iteration,
                        detail: format!(
                            "{detail} (after {retries} roll-backs with stronger damping)"
                        ),
                    })
                }
                Err(e) => return Err(e),
            }
        }
        Ok((out, state))
    }

    /// Summarises `state` after iteration `k` (see [`SeIteration`]); an error if the state has
    /// not completed an iteration or does not belong to `net`.
    pub fn record<N: AsRef<SeNetwork> + ?Sized>(
        &self,
        net: &N,
        state: &SeState,
        k: usize,
        seconds: f64,
        metric: Option<&RowMetric<'_>>,
    ) -> Result<SeIteration> {
        let net = net.as_ref();
        Self::check_state(net, state)?;
        let d = net.dim();
        let not_run = || {
            Error::invalid(
                "SE record",
                "the state has not completed an iteration: run a step first",
            )
        };
        let variables = (0..net.depth())
            .map(|l| {
                let est = state.estimate(l).ok_or_else(not_run)?;
                let plus = state.plus(l).ok_or_else(not_run)?;
                let minus = &state.minus[l];
                let tr = est.error_cov.trace();
                let zz = est.joint.view((0, 0), (d, d)).trace();
                let metric_value = metric.map(|f| match &est.samples {
                    Some((z, zh)) => f(l, z.as_ref(), zh.as_ref()),
                    None => {
                        let mut rng = crate::rng_from_seed(crate::rng::splitmix64(
                            self.config.seed ^ 0xABCD ^ ((k as u64) << 20) ^ l as u64,
                        ));
                        let rows = sample_rows(self.config.n_mc, &est.joint, &mut rng);
                        let z = rows.as_ref().subcols(0, d).to_owned();
                        let zh = rows.as_ref().subcols(d, d).to_owned();
                        f(l, z.as_ref(), zh.as_ref())
                    }
                });
                Ok(SeVariableRecord {
                    variable: l,
                    se_mse_per_entry: tr / d as f64,
                    se_mse: tr,
                    se_error_cov: dmat_to_rows(&est.error_cov),
                    se_nmse: if zz > 0.0 { tr / zz } else { f64::NAN },
                    se_mse_plus: state
                        .estimate_plus(l)
                        .map_or(f64::NAN, |e| e.error_cov.trace()),
                    se_mse_minus: state
                        .estimate_minus(l)
                        .map_or(f64::NAN, |e| e.error_cov.trace()),
                    cov: dmat_to_rows(&est.predicted_cov),
                    predicted_mse: est.predicted_cov.trace(),
                    gamma_plus: dmat_to_rows(plus.gamma.matrix()),
                    gamma_minus: dmat_to_rows(minus.gamma.matrix()),
                    k_plus: dmat_to_rows(&plus.k),
                    psi_minus: dmat_to_rows(&minus.psi),
                    t_minus: dmat_to_rows(&minus.t),
                    metric: metric_value,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(SeIteration {
            iteration: k,
            seconds,
            variables,
            warnings: Vec::new(),
        })
    }
}

/// Whether an SE iteration is sound (as the solver's check): every prediction finite, and no
/// predicted error exploding by more than `1e8` against the largest predicted so far.
fn check_se_sound(net: &SeNetwork, rec: &SeIteration, before: &[SeIteration]) -> Result<()> {
    const EXPLOSION: f64 = 1e8;
    for v in &rec.variables {
        let l = v.variable;
        let seen = before
            .iter()
            .map(|r| r.variables[l].se_mse)
            .fold(0.0f64, f64::max);
        let bad = !(v.se_mse.is_finite() && v.predicted_mse.is_finite())
            || (seen > 0.0 && v.se_mse > EXPLOSION * seen);
        if bad {
            let location = if l % 2 == 0 {
                net.chain().location_forward(l)
            } else {
                net.chain().location_backward(l)
            };
            return Err(Error::Diverged {
                location: format!("state evolution, {location}"),
                iteration: rec.iteration,
                detail: format!(
                    "the predicted error of Z_{l} exploded or is not finite: {:.3e} per row, against at most {seen:.3e} before",
                    v.se_mse
                ),
            });
        }
    }
    Ok(())
}
