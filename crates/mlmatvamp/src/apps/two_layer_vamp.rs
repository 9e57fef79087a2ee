//! ML-Mat-VAMP for learning the input layer of a two-layer network (paper Sections 2.3 and 5,
//! spec §3.4, §7.2), run through the general engine ([`crate::solver::Solver`]).
//!
//! The learning problem `Y = σ(X F_1) F_2 + Ξ` (eq. 7–9) is the three-factor network
//! (paper Section 2.3)
//!
//! ```text
//! Z_0 = F_1 (nin x d)  rows N(0, ŵ I)              GaussianPrior      (spec §5.1)
//! Z_1 = X_tr Z_0       noiseless linear layer      LinearLayer        (spec §3, W_1 = X_tr)
//! Y   = σ(Z_1) F_2 + N(0, yvar)                     TwoLayerOutput     (spec §4.4(a))
//! ```
//!
//! built by [`network`]. The prior variance is the oracle `ŵ = w1var = mean(F_1²)`, as in the
//! reference (spec §3.4, §7.2); `F_2` and `yvar` are known.
//!
//! **Order and start (spec §7.2).** The reference starts by sending `R_1 = X_tr F1init` with a
//! precision into the *output* estimator and then alternates output → input. In engine terms
//! one reference iteration is a backward pass (output `G⁻_2`, then the linear layer's `G⁻_1`,
//! whose estimate `Ẑ⁻_0` is `F̂_1`) followed by a forward pass (prior `G⁺_0`, then `G⁺_1`, whose
//! extrinsic message is the next `R_1`). [`initial_state`] therefore builds the state at the
//! end of the forward pass of iteration 0 — the prior's forward message is computed by the
//! engine (it is exactly the prior, spec §5.1) — and replaces the forward message on `Z_1` by
//! the initial message of [`Init`](super::two_layer::Init). [`VampConfig::run`] then alternates
//! [`Solver::backward_pass`] and [`Solver::forward_pass`]: iteration `k` is backward pass `k`
//! followed by forward pass `k + 1` of Algorithm 1. Because the Gaussian prior's forward message
//! does not depend on its input, the iterates are those of the fused two-factor "input
//! estimator" VAMP of spec §3.4 (checked to 1e-10 in `tests/two_layer_network.rs`).
//!
//! **Metrics per iteration (spec §7.2, §7.4).** After each backward pass, `F̂_1` is the linear
//! layer's backward estimate `Ẑ⁻_0` (`state.estimate_minus(0)`, the fused input estimator's `F̂_1`).
//! Its normalized test MSE on the held-out samples and its analytic test error from the
//! `2d x 2d` matrix `K` of eq. (17) are both recorded, with the engine's per-variable record
//! (message precisions `Γ±`, predicted and empirical MSEs).
//!
//! **Damping** (off by default) mixes each new message with the previous one on the same edge
//! (spec §2.4); iteration 0 has no previous message and runs undamped, as the reference's
//! message handlers.

pub mod gram_svd;

use super::two_layer::{InitialEstimate, TwoLayerTrial};
use crate::denoise::{
    GaussianPrior, HessianKind, InputPrior, Layer, LinearLayer, OutputChannel, TwoLayerEstimator,
    TwoLayerOutput,
};
use crate::error::{Error, Result};
use crate::message::{Belief, Message, MessagePolicy};
use crate::network::Network;
use crate::rows::to_dmat;
use crate::solver::{IterationRecord, Solver, SolverConfig, State};
use crate::spd::{DMat, Spd};
use faer::Mat;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Instant;

/// Options of ML-Mat-VAMP on a two-layer learning trial.
///
/// Defaults: 20 iterations and the MAP output estimator with the exact Hessian
/// (`TwoLayerEstimator::map(HessianKind::Exact)`), as in the paper's Figure 2 (the reference
/// uses a Gauss–Newton covariance; spec §4.2 recommends the exact Hessian for sigmoid), and the
/// message policy [`VampConfig::default_policy`]: eigenvalues of every outgoing precision clipped
/// into `[0.3, 1e3]`, no damping.
///
/// **Why not the reference's `[1e-3, 1e3]`** ([`MessagePolicy::reference`], spec §7.2). With
/// one output, the output factor carries almost no information about the directions of `Z_1`
/// orthogonal to (roughly) `F_2`: the eigenvalues of its extrinsic precision there were
/// `0.01–0.5` in the runs examined, and `Λ − Γ` is sometimes indefinite with the exact Hessian
/// (or through finite-size fluctuations). Clipped up to `1e-3`, the
/// message mean `R = (ẐΛ − R_in Γ_in) Γ_out^{-1}` (spec §2.4, computed with the unclipped
/// `Λ, Γ_in`) is amplified by up to `1e3` in those directions with a claimed variance of only
/// `1e3`, and the iteration oscillates or diverges. Measured on the Figure-2 sweep (10 trials per
/// point, seed 0): with the `1e-3` floor the median normalized test MSE at SNR 15 dB is 3.5 at
/// `ntr = 2000` and 7.8 at `ntr = 2500` (ADAM: 1.14, 1.17), and the MMSE estimator also leaves
/// diverging trials; with a floor of `0.3` every point's median lies within 0.03 of ADAM's
/// (docs/fig2.md). The floor `0.3` says that no message about `F_1` or `Z_1 = X F_1` claims a
/// variance above ≈ 3.3 per entry, about three times the prior variance of those entries
/// (`w1var ≈ 1` for the Figure-2 data); rescale it for data of another scale.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VampConfig {
    /// Number of iterations (each: output → input, spec §7.2).
    pub iterations: usize,
    /// The output estimator `G⁻_2` (MAP or MMSE, spec §4.4(a)).
    pub estimator: TwoLayerEstimator,
    /// Clipping and damping of the messages (spec §2.4).
    pub policy: MessagePolicy,
    /// Compute the analytic test error of eq. (17) at every iteration (`true`) or only after the
    /// last one (`false`; the held-out test MSE is always recorded per iteration).
    pub analytic_every_iteration: bool,
}

impl Default for VampConfig {
    fn default() -> Self {
        VampConfig {
            iterations: 20,
            estimator: TwoLayerEstimator::map(HessianKind::Exact),
            policy: VampConfig::default_policy(),
            analytic_every_iteration: true,
        }
    }
}

/// One ML-Mat-VAMP iteration on a two-layer trial.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VampIteration {
    /// Iteration index `k` (0-based).
    pub iteration: usize,
    /// Normalized test MSE of `F̂_1 = Ẑ⁻_0` on the held-out samples (spec §7.2 "metric").
    pub test_mse: f64,
    /// Normalized analytic test error of `F̂_1` from `K` (eq. 17, spec §7.4); `None` when only
    /// the last iteration is evaluated ([`VampConfig::analytic_every_iteration`]).
    pub analytic_test_error: Option<f64>,
    /// `(1/nin)‖F̂_1 − F_1‖²_F`, the parameter error of `F̂_1 = Ẑ⁻_0`.
    pub f1_mse: f64,
    /// `tr Σ̄` of `F̂_1` (the predicted value of `f1_mse`).
    pub f1_predicted_mse: f64,
    /// Wall time of this iteration (both passes and the metrics), seconds.
    pub seconds: f64,
    /// The engine's record after the iteration, with the truth `[F_1, X_tr F_1]`: per variable
    /// the precisions `Γ⁺` (`gamma_plus`) and `Γ⁻` (`gamma_minus`), the predicted and empirical
    /// MSEs of both beliefs. Variable 0 is `F_1`, variable 1 is `Z_1 = X_tr F_1`.
    pub engine: IterationRecord,
}

/// The result of [`VampConfig::run`].
#[derive(Clone, Debug)]
pub struct VampRun {
    /// The final `F̂_1` (`nin x d`).
    pub f1: Mat<f64>,
    /// Normalized test MSE of the initial estimate `F1init`.
    pub initial_test_mse: f64,
    /// One record per iteration.
    pub history: Vec<VampIteration>,
    /// The final state of the engine.
    pub state: State,
}

impl VampRun {
    /// The final normalized test MSE (held-out samples); `NaN` if no iteration ran.
    pub fn final_test_mse(&self) -> f64 {
        self.history.last().map_or(f64::NAN, |h| h.test_mse)
    }
    /// The final analytic test error (eq. 17); `NaN` if no iteration ran.
    pub fn final_analytic_test_error(&self) -> f64 {
        self.history
            .last()
            .and_then(|h| h.analytic_test_error)
            .unwrap_or(f64::NAN)
    }
}

/// What [`VampConfig`]'s iterations call after each iteration: `(k, state, belief of F_1,
/// held-out test MSE of its mean, start time of the iteration)`.
type AfterIteration<'a> = dyn FnMut(usize, &State, &Belief, f64, Instant) -> Result<()> + 'a;

/// The result of [`VampConfig::run_network_lean`]: the final estimate and the held-out test
/// MSE per iteration only.
#[derive(Clone, Debug)]
pub struct LeanRun {
    /// The final `F̂_1` (`nin x d`), equal to [`VampRun::f1`] of the same run.
    pub f1: Mat<f64>,
    /// Normalized test MSE of the initial estimate `F1init`.
    pub initial_test_mse: f64,
    /// Normalized held-out test MSE after each iteration (equal to [`VampIteration::test_mse`]).
    pub test_mse: Vec<f64>,
}

impl LeanRun {
    /// The final normalized test MSE; `NaN` if no iteration ran.
    pub fn final_test_mse(&self) -> f64 {
        self.test_mse.last().copied().unwrap_or(f64::NAN)
    }
}

/// The three-factor network of a two-layer learning trial (module docs): Gaussian prior
/// `N(0, w1var I)` on the rows of `F_1` (oracle variance, spec §3.4), the noiseless linear layer
/// `W_1 = X_tr`, and the output `Y_tr = σ(Z_1) F_2 + N(0, yvar)` with the given estimator.
///
/// The thin SVD of `X_tr` is computed through its Gram matrix when `X_tr` is tall and
/// well-conditioned ([`gram_svd::thin_svd_tall`], about twice as fast as the Householder route
/// of [`LinearLayer::new`], which it equals to rounding), otherwise as [`LinearLayer::new`] does.
pub fn network(trial: &TwoLayerTrial, estimator: TwoLayerEstimator) -> Result<Network> {
    let d = trial.f1.ncols();
    let nin = trial.x_train.ncols();
    let prior = Arc::new(GaussianPrior::isotropic(d, trial.w1var)?);
    let x = trial.x_train.as_ref();
    if x.nrows() == 0 || x.ncols() == 0 {
        return Err(Error::invalid(
            "weight",
            format!("W must be non-empty, got {}", crate::rows::shape_str(x)),
        ));
    }
    crate::rows::check_finite("weight W", x)?;
    let start = Instant::now();
    let (u, s, v) = gram_svd::thin_svd_tall(x)?;
    let svd_seconds = start.elapsed().as_secs_f64();
    let layer = Arc::new(LinearLayer::from_svd(u, s, v, None, None, d, svd_seconds)?);
    let output = Arc::new(TwoLayerOutput::new(
        trial.y_train.clone(),
        to_dmat(trial.f2.as_ref()),
        trial.activation(),
        trial.yvar,
        estimator,
    )?);
    Network::new(
        prior as Arc<dyn InputPrior>,
        nin,
        vec![layer as Arc<dyn Layer>],
        output as Arc<dyn OutputChannel>,
    )
}

/// Checks that `net` has the shape of [`network`] for `trial`: depth 2, `d` columns, rows
/// `[nin, ntr]`.
fn check_network(net: &Network, trial: &TwoLayerTrial) -> Result<()> {
    let (nin, d) = (trial.f1.nrows(), trial.f1.ncols());
    let want = [nin, trial.x_train.nrows()];
    if net.depth() != 2 || net.dim() != d || net.rows() != want {
        return Err(Error::invalid(
            "network",
            format!(
                "not the two-layer network of this trial: want depth 2, d = {d}, rows {want:?}; \
                 got depth {}, d = {}, rows {:?}",
                net.depth(),
                net.dim(),
                net.rows()
            ),
        ));
    }
    Ok(())
}

/// The true values of the network's variables: `[F_1, X_tr F_1]`.
pub fn truth(trial: &TwoLayerTrial) -> Vec<Mat<f64>> {
    vec![trial.f1.clone(), &trial.x_train * &trial.f1]
}

/// The engine state from which the reference order starts (module docs): the forward pass of
/// iteration 0 is run as usual (the prior's forward message on `Z_0` is exactly the prior,
/// spec §5.1), then the forward message on `Z_1` (`state.plus[1]`) is replaced by `first`, the
/// initial message `R_1 = X_tr F1init` with its precision (spec §7.2). The next step is
/// [`Solver::backward_pass`].
pub fn initial_state(solver: &Solver, net: &Network, first: &Message) -> Result<State> {
    if net.depth() != 2 {
        return Err(Error::invalid(
            "network",
            format!(
                "the two-layer start needs a network Z_0 → Z_1 → Y (depth 2), got depth {}",
                net.depth()
            ),
        ));
    }
    first.check("initial message on Z_1", net.rows()[1], net.dim())?;
    crate::rows::check_finite("initial message on Z_1", first.mean.as_ref())?;
    let mut state = State::new(net, solver.config.gamma_init)?;
    solver.forward_pass(net, &mut state)?;
    state.set_plus(1, first.clone())?;
    Ok(state)
}

impl VampConfig {
    /// The default message policy for two-layer learning: clipping into `[0.3, 1e3]`, no
    /// damping (see [`VampConfig`] for why the reference's `1e-3` floor is not used).
    pub fn default_policy() -> MessagePolicy {
        MessagePolicy {
            lam_min: 0.3,
            lam_max: 1e3,
            ..MessagePolicy::reference()
        }
    }

    /// Checks the options.
    pub fn validate(&self) -> Result<()> {
        self.policy.validate()?;
        if self.iterations == 0 {
            return Err(Error::invalid("iterations", "must be at least 1"));
        }
        Ok(())
    }

    /// The engine options: `iterations` and `policy` (the initial precision is irrelevant, the
    /// start is [`initial_state`]).
    pub fn solver(&self) -> Result<Solver> {
        Solver::new(SolverConfig {
            iterations: self.iterations,
            tolerance: None,
            policy: self.policy.clone(),
            ..Default::default()
        })
    }

    /// Runs ML-Mat-VAMP on a trial from the initial estimate `init` (module docs).
    pub fn run(&self, trial: &TwoLayerTrial, init: &InitialEstimate) -> Result<VampRun> {
        self.run_with(trial, init, &mut |_, _| {})
    }

    /// As [`VampConfig::run`], calling `callback` with each iteration's record and the engine
    /// state after it.
    pub fn run_with(
        &self,
        trial: &TwoLayerTrial,
        init: &InitialEstimate,
        callback: &mut dyn FnMut(&VampIteration, &State),
    ) -> Result<VampRun> {
        self.validate()?;
        let net = network(trial, self.estimator)?;
        self.run_network_with(&net, trial, init, callback)
    }

    /// As [`VampConfig::run`] on a network already built by [`network`] for this trial and
    /// this estimator (its thin SVD of `X_tr` done once, outside: the authors' code also
    /// factors `X_tr` when it builds its input estimator, before it iterates).
    pub fn run_network(
        &self,
        net: &Network,
        trial: &TwoLayerTrial,
        init: &InitialEstimate,
    ) -> Result<VampRun> {
        self.run_network_with(net, trial, init, &mut |_, _| {})
    }

    /// As [`VampConfig::run_with`] on a network built by [`network`] (see
    /// [`VampConfig::run_network`]).
    pub fn run_network_with(
        &self,
        net: &Network,
        trial: &TwoLayerTrial,
        init: &InitialEstimate,
        callback: &mut dyn FnMut(&VampIteration, &State),
    ) -> Result<VampRun> {
        // The options first (as `iterate` does), so that a bad option is named before any work.
        self.validate()?;
        let truth = truth(trial);
        let mut history = Vec::with_capacity(self.iterations);
        let mut previous: Option<Vec<Mat<f64>>> = None;
        let solver = self.solver()?;
        let (state, initial_test_mse, f1) = self.iterate(
            net,
            trial,
            init,
            &mut |k, state, f1_belief, test_mse, start| {
                let f1_hat = f1_belief.mean.as_ref();
                let last = k + 1 == self.iterations;
                let analytic_test_error = if self.analytic_every_iteration || last {
                    Some(trial.analytic_test_error(f1_hat)?)
                } else {
                    None
                };
                let (f1_mse, _) = crate::rows::error_stats(f1_hat, trial.f1.as_ref());
                let f1_predicted_mse = f1_belief.cov.trace();
                let mut engine = solver.record(
                    net,
                    state,
                    previous.as_deref(),
                    Some(&truth),
                    start.elapsed().as_secs_f64(),
                )?;
                engine.iteration = k;
                let rec = VampIteration {
                    iteration: k,
                    test_mse,
                    analytic_test_error,
                    f1_mse,
                    f1_predicted_mse,
                    seconds: start.elapsed().as_secs_f64(),
                    engine,
                };
                callback(&rec, state);
                history.push(rec);
                previous = (0..net.depth())
                    .map(|l| state.estimate(l).map(|b| b.mean.clone()))
                    .collect::<Option<Vec<_>>>();
                Ok(())
            },
        )?;
        Ok(VampRun {
            f1,
            initial_test_mse,
            history,
            state,
        })
    }

    /// The same iterations as [`VampConfig::run_network`] (the same estimates, bit for bit),
    /// recording only the held-out test MSE per iteration — what the authors' script records
    /// (its `metric_cb`). No analytic test error, parameter error or engine record is computed;
    /// this is the workload timed against the authors' code (`docs/side-by-side.md`).
    pub fn run_network_lean(
        &self,
        net: &Network,
        trial: &TwoLayerTrial,
        init: &InitialEstimate,
    ) -> Result<LeanRun> {
        let mut test_mse = Vec::with_capacity(self.iterations);
        let (_, initial_test_mse, f1) =
            self.iterate(net, trial, init, &mut |_, _, _, mse, _| {
                test_mse.push(mse);
                Ok(())
            })?;
        Ok(LeanRun {
            f1,
            initial_test_mse,
            test_mse,
        })
    }

    /// The iterations of [`VampConfig::run_network_with`]: after each, `after(k, state, belief
    /// of F_1, held-out test MSE of its mean, start time of the iteration)`. Returns the final
    /// state, the test MSE of `init` and the final `F̂_1` (`init`'s if no estimate was made).
    fn iterate(
        &self,
        net: &Network,
        trial: &TwoLayerTrial,
        init: &InitialEstimate,
        after: &mut AfterIteration<'_>,
    ) -> Result<(State, f64, Mat<f64>)> {
        self.validate()?;
        check_network(net, trial)?;
        let solver = self.solver()?;
        // Damping mixes in the previous message on the same edge; at iteration 0 there is none
        // (the backward messages of `State::new` are placeholders), so iteration 0 is undamped.
        let undamped = Solver::new(SolverConfig {
            policy: MessagePolicy {
                damp_precision: 0.0,
                damp_mean: 0.0,
                ..self.policy.clone()
            },
            ..solver.config.clone()
        })?;
        let initial_test_mse = trial.test_mse(init.f1.as_ref())?;
        let mut state = initial_state(&solver, net, &init.message)?;
        for k in 0..self.iterations {
            let start = Instant::now();
            // Reference order (spec §7.2): output, then the input estimator (G⁻_1 gives F̂_1) …
            let pass = if k == 0 { &undamped } else { &solver };
            state.clear_warnings();
            state.set_iteration(k);
            pass.backward_pass(net, &mut state)?;
            // … then the input estimator's message to the output (G⁺_0, G⁺_1).
            state.set_iteration(k + 1);
            pass.forward_pass(net, &mut state)?;
            let f1_belief = state.estimate_minus(0).ok_or_else(|| {
                Error::invalid("two-layer ML-Mat-VAMP", "no estimate of F_1 after the pass")
            })?;
            let test_mse = trial.test_mse(f1_belief.mean.as_ref())?;
            after(k, &state, f1_belief, test_mse, start)?;
        }
        let f1 = state
            .estimate_minus(0)
            .map(|b| b.mean.clone())
            .unwrap_or_else(|| init.f1.clone());
        Ok((state, initial_test_mse, f1))
    }
}

/// The state-evolution prediction of a two-layer trial, per iteration.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SeTwoLayerIteration {
    /// Iteration index `k` (as [`VampIteration::iteration`]).
    pub iteration: usize,
    /// Predicted normalized test error of `F̂_1 = Ẑ⁻_0` (eq. 17 with the SE's `K_F`).
    pub test_error: f64,
    /// Predicted parameter error `(1/nin)‖F̂_1 − F_1‖²_F`.
    pub f1_mse: f64,
    /// The SE's `K_F = E[[f, f̂]^T [f, f̂]]` (`2d x 2d`).
    pub k_f: Vec<Vec<f64>>,
}

/// The state evolution of ML-Mat-VAMP on the two-layer learning problem (spec §6.2, §7.4),
/// computed from the recursion — not from a simulation: the prior is the Gaussian `N(0, w1var I)`
/// (analytic step), the linear layer `X_tr` is described by the Marchenko–Pastur law of an
/// `ntr x nin` matrix with `N(0, 1/nin)` entries (closed-form step), and the output
/// `y = σ(z) F_2 + N(0, yvar)` by Monte Carlo over its row model (the trial's `F_2` and `yvar`,
/// the same estimator). The schedule and the initialisation mirror [`VampConfig::run`]: the
/// forward law on `Z_1` starts as the law of the initial message `R_1 = X F1init`
/// (its precision `first_precision` and the second moments implied by `init`), then each
/// iteration is a backward pass (giving `F̂_1`) and a forward pass. The predicted test error
/// is eq. (17) with `K_F` = the SE's joint second moment of `(f, f̂)` for the linear layer's
/// backward estimate `Ẑ⁻_0`.
pub fn state_evolution(
    config: &VampConfig,
    trial: &TwoLayerTrial,
    init: &crate::apps::two_layer::Init,
    first_precision: &Spd,
    se: &crate::se::SeConfig,
) -> Result<Vec<SeTwoLayerIteration>> {
    use crate::apps::two_layer::{normalized_test_error, Init};
    use crate::se::{LinearSpec, SeForward, SeNetwork, SpectralLinearLayer, StateEvolution};
    config.validate()?;
    let (nin, d) = (trial.f1.nrows(), trial.f1.ncols());
    let ntr = trial.x_train.nrows();
    let w1var = trial.w1var;
    let prior = Arc::new(GaussianPrior::isotropic(d, w1var)?);
    let layer = Arc::new(SpectralLinearLayer::new(LinearSpec::marchenko_pastur(
        ntr,
        nin,
        1.0 / nin as f64,
        d,
        None,
        None,
    )?));
    let output = Arc::new(TwoLayerOutput::new(
        Mat::zeros(ntr, trial.f2.ncols()),
        to_dmat(trial.f2.as_ref()),
        trial.activation(),
        trial.yvar,
        config.estimator,
    )?);
    let net = SeNetwork::new(prior, nin, vec![layer], output)?;
    let se_cfg = crate::se::SeConfig {
        iterations: config.iterations,
        policy: config.policy.clone(),
        ..se.clone()
    };
    // Damping is not applied at iteration 0, as in `run_with`.
    let undamped = StateEvolution::new(crate::se::SeConfig {
        policy: MessagePolicy {
            damp_precision: 0.0,
            damp_mean: 0.0,
            ..config.policy.clone()
        },
        ..se_cfg.clone()
    })?;
    let runner = StateEvolution::new(se_cfg)?;
    // Second moments of (f, f1init − f) per entry; z = x F with E[x x^T] = I/nin gives the same
    // second moments for (z, e) rows.
    let (ff, fe, ee) = match *init {
        Init::Reference { wcorr, .. } => {
            let a = wcorr.sqrt();
            (
                w1var,
                (a - 1.0) * w1var,
                (a - 1.0).powi(2) * w1var + (1.0 - wcorr),
            )
        }
        Init::Uninformed { std } => (w1var, -w1var, w1var + std * std),
    };
    let eye = DMat::identity(d, d);
    let mut k0 = DMat::zeros(2 * d, 2 * d);
    k0.view_mut((0, 0), (d, d)).copy_from(&(&eye * ff));
    k0.view_mut((0, d), (d, d)).copy_from(&(&eye * fe));
    k0.view_mut((d, 0), (d, d)).copy_from(&(&eye * fe));
    k0.view_mut((d, d), (d, d)).copy_from(&(&eye * ee));
    let mut state = runner.initial_state(&net)?;
    undamped.forward_pass(&net, &mut state, 0, false)?;
    state.set_plus(
        1,
        SeForward {
            k: k0,
            gamma: first_precision.clone(),
        },
    )?;
    let mut out = Vec::with_capacity(config.iterations);
    for k in 0..config.iterations {
        let pass = if k == 0 { &undamped } else { &runner };
        pass.backward_pass(&net, &mut state, k, false)?;
        pass.forward_pass(&net, &mut state, k + 1, false)?;
        let est = state
            .estimate_minus(0)
            .ok_or_else(|| Error::invalid("state evolution", "no estimate of F_1"))?;
        let test_error = normalized_test_error(
            &est.joint,
            trial.f2.as_ref(),
            trial.activation(),
            trial.yvar,
        )?;
        out.push(SeTwoLayerIteration {
            iteration: k,
            test_error,
            f1_mse: est.error_cov.trace(),
            k_f: crate::spd::dmat_to_rows(&est.joint),
        });
    }
    Ok(out)
}
