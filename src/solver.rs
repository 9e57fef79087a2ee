//! Algorithm 1 (ML-Mat-VAMP) with the corrected indices of spec §2.3.
//!
//! One iteration `k` is a forward pass (`G⁺_0`, then `G⁺_l` for `l = 1 … L−1`) followed by a
//! backward pass (`G⁻_L`, then `G⁻_l` for `l = L−1 … 1`). After every denoiser the message rule
//! ([`MessagePolicy::extrinsic`]) forms the outgoing message about the *same* variable the
//! denoiser estimated, subtracting the incoming message on that variable (lines 18 and 23 as
//! corrected).

use crate::error::{Error, Result};
use crate::message::{Belief, Message, MessagePolicy};
use crate::network::Network;
use crate::rows::{check_shape, error_stats};
use crate::spd::{dmat_to_rows, DMat};
use faer::Mat;
use serde::{Deserialize, Serialize};
use std::time::Instant;

/// Options of Algorithm 1.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SolverConfig {
    /// Maximum number of iterations `N_it`.
    pub iterations: usize,
    /// Optional stop: all primary estimates change by less than this (relative Frobenius norm).
    pub tolerance: Option<f64>,
    /// Initial backward precisions `Γ⁻_{0l} = gamma_init · I` (with `R⁻_{0l} = 0`).
    pub gamma_init: f64,
    /// Message rule options (clipping, damping).
    pub policy: MessagePolicy,
}

impl Default for SolverConfig {
    fn default() -> Self {
        SolverConfig {
            iterations: 50,
            tolerance: None,
            gamma_init: 1e-6,
            policy: MessagePolicy::default(),
        }
    }
}

impl SolverConfig {
    /// Checks the option values.
    pub fn validate(&self) -> Result<()> {
        self.policy.validate()?;
        if !(self.gamma_init > 0.0 && self.gamma_init.is_finite()) {
            return Err(Error::invalid(
                "gamma_init",
                format!("must be positive and finite, got {}", self.gamma_init),
            ));
        }
        if let Some(t) = self.tolerance {
            if !(t >= 0.0 && t.is_finite()) {
                return Err(Error::invalid(
                    "tolerance",
                    format!("must be non-negative and finite, got {t}"),
                ));
            }
        }
        Ok(())
    }
}

/// All messages and estimates of Algorithm 1 at the end of an iteration.
///
/// Index `l` runs over the variables `Z_0 … Z_{L−1}`.
#[derive(Clone, Debug)]
pub struct State {
    /// Forward messages `(R⁺_l, Γ⁺_l)` (`None` before the first forward pass).
    pub plus: Vec<Option<Message>>,
    /// Backward messages `(R⁻_l, Γ⁻_l)`.
    pub minus: Vec<Message>,
    /// Forward-pass beliefs `(Ẑ⁺_l, Σ̄)` from `G⁺_l`.
    pub est_plus: Vec<Option<Belief>>,
    /// Backward-pass beliefs `(Ẑ⁻_l, Σ̄)` from `G⁻_{l+1}`.
    pub est_minus: Vec<Option<Belief>>,
    /// Completed iterations.
    pub iteration: usize,
}

impl State {
    /// Algorithm 1, line 1: `R⁻_{0l} = 0`, `Γ⁻_{0l} = gamma_init · I`.
    pub fn new(network: &Network, gamma_init: f64) -> Result<Self> {
        let d = network.dim();
        let minus = network
            .rows()
            .iter()
            .map(|&n| Message::zero(n, d, gamma_init))
            .collect::<Result<Vec<_>>>()?;
        let l = network.depth();
        Ok(State {
            plus: vec![None; l],
            minus,
            est_plus: vec![None; l],
            est_minus: vec![None; l],
            iteration: 0,
        })
    }

    /// The primary estimate of `Z_l`: the one produced by the row-wise (non-Gaussian) factor
    /// next to it, as tracked by Theorem 1 — `Ẑ⁺_l` for even `l` (prior or nonlinear layer `l`),
    /// `Ẑ⁻_l` for odd `l` (nonlinear layer `l+1` or the output).
    pub fn estimate(&self, l: usize) -> Option<&Belief> {
        if l % 2 == 0 {
            self.est_plus[l].as_ref()
        } else {
            self.est_minus[l].as_ref()
        }
    }
}

/// Per-iteration record of one variable `Z_l`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VariableRecord {
    /// `l`.
    pub variable: usize,
    /// `n_l`.
    pub rows: usize,
    /// Predicted average posterior row covariance `Σ̄` of the primary estimate (`d x d`).
    pub cov: Vec<Vec<f64>>,
    /// Predicted MSE per row, `tr Σ̄` (compare with `mse`).
    pub predicted_mse: f64,
    /// `tr Σ̄` of the forward-pass belief `Ẑ⁺_l`.
    pub predicted_mse_plus: f64,
    /// `tr Σ̄` of the backward-pass belief `Ẑ⁻_l`.
    pub predicted_mse_minus: f64,
    /// Forward precision `Γ⁺_{kl}`.
    pub gamma_plus: Vec<Vec<f64>>,
    /// Backward precision `Γ⁻_{k+1,l}` produced in this iteration.
    pub gamma_minus: Vec<Vec<f64>>,
    /// Relative change `||Ẑ_k − Ẑ_{k−1}||_F / ||Ẑ_k||_F` of the primary estimate.
    pub change: Option<f64>,
    /// Empirical MSE per row `(1/n)||Ẑ − Z⁰||²_F` of the primary estimate (truth supplied).
    pub mse: Option<f64>,
    /// Empirical `d x d` error covariance `(1/n)(Ẑ − Z⁰)^T(Ẑ − Z⁰)` (truth supplied).
    pub error_cov: Option<Vec<Vec<f64>>>,
    /// Empirical MSE per row of `Ẑ⁺_l` (truth supplied).
    pub mse_plus: Option<f64>,
    /// Empirical MSE per row of `Ẑ⁻_l` (truth supplied).
    pub mse_minus: Option<f64>,
}

/// Per-iteration record.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct IterationRecord {
    /// Iteration index `k` (0-based).
    pub iteration: usize,
    /// Wall time of this iteration in seconds.
    pub seconds: f64,
    /// One record per variable `Z_0 … Z_{L−1}`.
    pub variables: Vec<VariableRecord>,
}

/// The result of [`Solver::run`].
#[derive(Clone, Debug)]
pub struct Solution {
    /// Primary estimates `Ẑ_0 … Ẑ_{L−1}` (see [`State::estimate`]).
    pub estimates: Vec<Mat<f64>>,
    /// Their predicted average posterior row covariances.
    pub covariances: Vec<DMat>,
    /// One record per iteration.
    pub history: Vec<IterationRecord>,
    /// The final messages.
    pub state: State,
    /// Whether the tolerance stop fired.
    pub converged: bool,
}

/// What a per-iteration callback tells the solver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    /// Go on.
    Continue,
    /// Stop after this iteration.
    Stop,
}

/// Algorithm 1 on a [`Network`].
#[derive(Clone, Debug, Default)]
pub struct Solver {
    /// The options.
    pub config: SolverConfig,
}

fn location_forward(net: &Network, l: usize) -> String {
    if l == 0 {
        format!(
            "forward message on Z_0 out of the prior ({})",
            net.prior().describe()
        )
    } else {
        format!(
            "forward message on Z_{l} out of layer {l} ({})",
            net.layer(l).describe()
        )
    }
}

fn location_backward(net: &Network, l: usize) -> String {
    if l + 1 == net.depth() {
        format!(
            "backward message on Z_{l} out of the output ({})",
            net.output().describe()
        )
    } else {
        format!(
            "backward message on Z_{l} out of layer {} ({})",
            l + 1,
            net.layer(l + 1).describe()
        )
    }
}

impl Solver {
    /// A solver with the given options.
    pub fn new(config: SolverConfig) -> Result<Self> {
        config.validate()?;
        Ok(Solver { config })
    }

    /// The forward pass of iteration `state.iteration` (Algorithm 1, lines 4–13).
    pub fn forward_pass(&self, net: &Network, state: &mut State) -> Result<()> {
        let k = state.iteration;
        let policy = &self.config.policy;
        let wrap = |loc: String, e: Error| match e {
            Error::Diverged { .. } => e,
            other => Error::Diverged {
                location: loc,
                iteration: k,
                detail: other.to_string(),
            },
        };
        // Lines 4–7: G⁺_0 and the forward message on Z_0.
        let belief = net
            .prior()
            .denoise(&state.minus[0])
            .map_err(|e| wrap(location_forward(net, 0), e))?;
        let ext = policy.extrinsic(
            &belief,
            &state.minus[0],
            state.plus[0].as_ref(),
            &location_forward(net, 0),
            k,
        )?;
        state.plus[0] = Some(ext.message);
        state.est_plus[0] = Some(belief);
        // Lines 8–13: G⁺_l consumes (R⁻_{kl}, R⁺_{k,l−1}); the message is about Z_l.
        for l in 1..net.depth() {
            let plus_prev = state.plus[l - 1].as_ref().expect("set above");
            let belief = net
                .layer(l)
                .forward(&state.minus[l], plus_prev)
                .map_err(|e| wrap(location_forward(net, l), e))?;
            let ext = policy.extrinsic(
                &belief,
                &state.minus[l],
                state.plus[l].as_ref(),
                &location_forward(net, l),
                k,
            )?;
            state.plus[l] = Some(ext.message);
            state.est_plus[l] = Some(belief);
        }
        Ok(())
    }

    /// The backward pass of iteration `state.iteration` (Algorithm 1, lines 15–24, corrected).
    pub fn backward_pass(&self, net: &Network, state: &mut State) -> Result<()> {
        let k = state.iteration;
        let policy = &self.config.policy;
        let last = net.depth() - 1;
        let wrap = |loc: String, e: Error| match e {
            Error::Diverged { .. } => e,
            other => Error::Diverged {
                location: loc,
                iteration: k,
                detail: other.to_string(),
            },
        };
        let plus_last = state.plus[last].as_ref().ok_or_else(|| {
            Error::invalid(
                "solver state",
                "the backward pass needs a forward message on Z_{L-1}",
            )
        })?;
        // Lines 15–18 (corrected): Γ⁻_{k+1,L−1} = Λ⁻ − Γ⁺_{k,L−1},
        // R⁻_{k+1,L−1} = (Ẑ⁻Λ⁻ − R⁺_{k,L−1}Γ⁺_{k,L−1})(Γ⁻_{k+1,L−1})^{-1}.
        let belief = net
            .output()
            .denoise(plus_last)
            .map_err(|e| wrap(location_backward(net, last), e))?;
        let prev = state.minus[last].clone();
        let ext = policy.extrinsic(
            &belief,
            plus_last,
            Some(&prev),
            &location_backward(net, last),
            k,
        )?;
        state.minus[last] = ext.message;
        state.est_minus[last] = Some(belief);
        // Lines 19–24 (corrected): G⁻_l consumes (R⁻_{k+1,l}, R⁺_{k,l−1}); the new message is
        // about Z_{l−1} and subtracts R⁺_{k,l−1}Γ⁺_{k,l−1}.
        for l in (1..=last).rev() {
            let plus_prev = state.plus[l - 1].as_ref().expect("forward pass ran");
            let belief = net
                .layer(l)
                .backward(&state.minus[l], plus_prev)
                .map_err(|e| wrap(location_backward(net, l - 1), e))?;
            let prev = state.minus[l - 1].clone();
            let ext = policy.extrinsic(
                &belief,
                plus_prev,
                Some(&prev),
                &location_backward(net, l - 1),
                k,
            )?;
            state.minus[l - 1] = ext.message;
            state.est_minus[l - 1] = Some(belief);
        }
        Ok(())
    }

    /// Summarises the state after an iteration (with the truth, when supplied).
    pub fn record(
        &self,
        net: &Network,
        state: &State,
        previous: Option<&[Mat<f64>]>,
        truth: Option<&[Mat<f64>]>,
        seconds: f64,
    ) -> IterationRecord {
        let mut variables = Vec::with_capacity(net.depth());
        for l in 0..net.depth() {
            let primary = state.estimate(l);
            let tr = |b: Option<&Belief>| b.map_or(f64::NAN, |b| b.cov.trace());
            let mse_of = |b: Option<&Belief>| match (b, truth) {
                (Some(b), Some(t)) => Some(error_stats(b.mean.as_ref(), t[l].as_ref()).0),
                _ => None,
            };
            let (mse, error_cov) = match (primary, truth) {
                (Some(b), Some(t)) => {
                    let (m, c) = error_stats(b.mean.as_ref(), t[l].as_ref());
                    (Some(m), Some(dmat_to_rows(&c)))
                }
                _ => (None, None),
            };
            let change = match (primary, previous) {
                (Some(b), Some(p)) => {
                    let diff = (&b.mean - &p[l]).norm_l2();
                    let norm = b.mean.norm_l2();
                    Some(if norm > 0.0 { diff / norm } else { diff })
                }
                _ => None,
            };
            variables.push(VariableRecord {
                variable: l,
                rows: net.rows()[l],
                cov: primary.map(|b| dmat_to_rows(&b.cov)).unwrap_or_default(),
                predicted_mse: tr(primary),
                predicted_mse_plus: tr(state.est_plus[l].as_ref()),
                predicted_mse_minus: tr(state.est_minus[l].as_ref()),
                gamma_plus: state.plus[l]
                    .as_ref()
                    .map(|m| dmat_to_rows(m.precision.matrix()))
                    .unwrap_or_default(),
                gamma_minus: dmat_to_rows(state.minus[l].precision.matrix()),
                change,
                mse,
                error_cov,
                mse_plus: mse_of(state.est_plus[l].as_ref()),
                mse_minus: mse_of(state.est_minus[l].as_ref()),
            });
        }
        IterationRecord {
            iteration: state.iteration,
            seconds,
            variables,
        }
    }

    /// Runs Algorithm 1 from line 1 for at most `config.iterations` iterations.
    pub fn run(&self, net: &Network, truth: Option<&[Mat<f64>]>) -> Result<Solution> {
        self.run_with(net, truth, &mut |_, _| Control::Continue)
    }

    /// As [`Solver::run`], calling `callback` after every iteration (progress, custom metrics,
    /// early stop).
    pub fn run_with(
        &self,
        net: &Network,
        truth: Option<&[Mat<f64>]>,
        callback: &mut dyn FnMut(&IterationRecord, &State) -> Control,
    ) -> Result<Solution> {
        self.config.validate()?;
        let state = State::new(net, self.config.gamma_init)?;
        self.run_from(net, state, truth, callback)
    }

    /// Runs iterations starting from a given state (e.g. custom initial messages).
    pub fn run_from(
        &self,
        net: &Network,
        mut state: State,
        truth: Option<&[Mat<f64>]>,
        callback: &mut dyn FnMut(&IterationRecord, &State) -> Control,
    ) -> Result<Solution> {
        self.config.validate()?;
        if let Some(t) = truth {
            if t.len() != net.depth() {
                return Err(Error::shape(
                    "truth",
                    format!("{} matrices Z_0 … Z_{{L-1}}", net.depth()),
                    format!("{} matrices", t.len()),
                ));
            }
            for (l, z) in t.iter().enumerate() {
                check_shape(
                    &format!("truth Z_{l}"),
                    z.as_ref(),
                    net.rows()[l],
                    net.dim(),
                )?;
                crate::rows::check_finite(&format!("truth Z_{l}"), z.as_ref())?;
            }
        }
        let mut history = Vec::new();
        let mut previous: Option<Vec<Mat<f64>>> = None;
        let mut converged = false;
        for _ in 0..self.config.iterations {
            let start = Instant::now();
            self.forward_pass(net, &mut state)?;
            self.backward_pass(net, &mut state)?;
            let rec = self.record(
                net,
                &state,
                previous.as_deref(),
                truth,
                start.elapsed().as_secs_f64(),
            );
            state.iteration += 1;
            let control = callback(&rec, &state);
            let max_change = rec
                .variables
                .iter()
                .filter_map(|v| v.change)
                .fold(None, |m: Option<f64>, c| Some(m.map_or(c, |m| m.max(c))));
            history.push(rec);
            previous = Some(
                (0..net.depth())
                    .map(|l| state.estimate(l).expect("ran").mean.clone())
                    .collect(),
            );
            if let (Some(tol), Some(ch)) = (self.config.tolerance, max_change) {
                if ch < tol {
                    converged = true;
                    break;
                }
            }
            if control == Control::Stop {
                break;
            }
        }
        let (estimates, covariances) = (0..net.depth())
            .map(|l| match state.estimate(l) {
                Some(b) => (b.mean.clone(), b.cov.clone()),
                None => (
                    Mat::zeros(net.rows()[l], net.dim()),
                    DMat::zeros(net.dim(), net.dim()),
                ),
            })
            .unzip();
        Ok(Solution {
            estimates,
            covariances,
            history,
            state,
            converged,
        })
    }
}
