//! Algorithm 1 (ML-Mat-VAMP) with the corrected indices of spec §2.3.
//!
//! One iteration `k` is a forward pass (`G⁺_0`, then `G⁺_l` for `l = 1 … L−1`) followed by a
//! backward pass (`G⁻_L`, then `G⁻_l` for `l = L−1 … 1`). After every denoiser the message rule
//! ([`MessagePolicy::extrinsic`]) forms the outgoing message about the *same* variable the
//! denoiser estimated, subtracting the incoming message on that variable (lines 18 and 23 as
//! corrected).

mod fused;

use crate::denoise::linear::LinearLayer;
use crate::error::{Error, Result};
use crate::factor::WarmStart;
use crate::message::{Belief, Message, MessagePolicy, OnDivergence};
use crate::network::Network;
use crate::rows::check_shape;
use crate::schedule::{self, Schedule};
use crate::spd::Spd;
use crate::spd::{dmat_to_rows, DMat};
use faer::{Mat, MatRef};
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

/// The largest number of iterations a run may ask for: the history keeps one record per
/// iteration, so an absurd count is refused before anything runs.
pub const MAX_ITERATIONS: usize = 100_000;

impl SolverConfig {
    /// Checks the option values.
    pub fn validate(&self) -> Result<()> {
        self.policy.validate()?;
        if self.iterations > MAX_ITERATIONS {
            return Err(Error::invalid(
                "iterations",
                format!(
                    "must be at most {MAX_ITERATIONS} (the history keeps one record per iteration), got {}",
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
/// Index `l` runs over the variables `Z_0 … Z_{L−1}`. A state is made for one network by
/// [`State::new`] and only changed through checked setters, so its messages always have the
/// network's shapes.
#[derive(Clone, Debug)]
pub struct State {
    plus: Vec<Option<Message>>,
    minus: Vec<Message>,
    est_plus: Vec<Option<Belief>>,
    est_minus: Vec<Option<Belief>>,
    rows: Vec<usize>,
    d: usize,
    iteration: usize,
    /// Warnings of the denoisers in the current iteration (moved into its record).
    warnings: Vec<String>,
    /// Iterative solves of the current iteration (moved into its record).
    solves: Vec<SolveRecord>,
    /// Warm starts of the hidden layers `1 … L−1`: `[forward, backward]`.
    warm: Vec<[WarmStart; 2]>,
    /// The next prior belief and its products with `V_r`, computed by the fused pass of the
    /// previous backward call (see [`Solver::with_fused_pass`]); used only if the backward
    /// message about `Z_0` is still the one it was computed for.
    pending: Option<Box<Pending>>,
    /// `(R⁺_0, V_rᵀ R⁺_0)` of the current forward message about `Z_0` when the fused pass
    /// obtained the product by linearity (not read from `V_r`).
    vt_plus0: Option<Box<(Mat<f64>, Mat<f64>)>>,
}

/// The prior's belief for the next iteration, computed in the fused pass (`solver/fused.rs`).
#[derive(Clone, Debug)]
struct Pending {
    /// The backward message about `Z_0` it was computed from (compared bit for bit).
    key: Message,
    /// The layer whose `V_r` the products are with (its address).
    layer: usize,
    /// `(Ẑ⁺_0, Σ̄)`.
    z: Mat<f64>,
    cov: DMat,
    /// `V_rᵀ Ẑ⁺_0` and `V_rᵀ R⁻_0`.
    vt_z: Mat<f64>,
    vt_r: Mat<f64>,
}

/// Whether two messages are the same bits.
fn same_bits(a: &Message, b: &Message) -> bool {
    a.precision.matrix() == b.precision.matrix() && same_mat_bits(&a.mean, &b.mean)
}

/// Whether two matrices are the same bits.
fn same_mat_bits(x: &Mat<f64>, y: &Mat<f64>) -> bool {
    x.nrows() == y.nrows()
        && x.ncols() == y.ncols()
        && (0..x.ncols())
            .all(|j| (0..x.nrows()).all(|i| x[(i, j)].to_bits() == y[(i, j)].to_bits()))
}

impl State {
    /// Algorithm 1, line 1: `R⁻_{0l} = 0`, `Γ⁻_{0l} = gamma_init · I`.
    pub fn new(network: &Network, gamma_init: f64) -> Result<Self> {
        if !(gamma_init > 0.0 && gamma_init.is_finite()) {
            return Err(Error::invalid(
                "gamma_init",
                format!("must be positive and finite, got {gamma_init}"),
            ));
        }
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
            rows: network.rows().to_vec(),
            d,
            iteration: 0,
            warnings: Vec::new(),
            solves: Vec::new(),
            warm: vec![Default::default(); l.saturating_sub(1)],
            pending: None,
            vt_plus0: None,
        })
    }

    /// The number of variables `L`.
    pub fn depth(&self) -> usize {
        self.rows.len()
    }
    /// Completed iterations.
    pub fn iteration(&self) -> usize {
        self.iteration
    }
    /// Sets the iteration counter (the index `k` the next pass uses).
    pub fn set_iteration(&mut self, k: usize) {
        self.iteration = k;
    }
    /// The denoisers' warnings since the last [`State::clear_warnings`] (each names where it
    /// arose); [`Solver::run`] clears them at the start of every iteration and records them.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }
    /// Forgets the collected warnings and solve reports (call before a hand-driven iteration).
    pub fn clear_warnings(&mut self) {
        self.warnings.clear();
        self.solves.clear();
    }
    /// The iterative solves since the last [`State::clear_warnings`].
    pub fn solves(&self) -> &[SolveRecord] {
        &self.solves
    }
    /// The forward message `(R⁺_l, Γ⁺_l)` (`None` before the first forward pass, or past the depth).
    pub fn plus(&self, l: usize) -> Option<&Message> {
        self.plus.get(l)?.as_ref()
    }
    /// The backward message `(R⁻_l, Γ⁻_l)` (`None` past the depth).
    pub fn minus(&self, l: usize) -> Option<&Message> {
        self.minus.get(l)
    }
    /// All backward messages `Z_0 … Z_{L−1}`.
    pub fn minus_all(&self) -> &[Message] {
        &self.minus
    }
    /// The forward-pass belief `(Ẑ⁺_l, Σ̄)` from `G⁺_l`.
    pub fn estimate_plus(&self, l: usize) -> Option<&Belief> {
        self.est_plus.get(l)?.as_ref()
    }
    /// The backward-pass belief `(Ẑ⁻_l, Σ̄)` from `G⁻_{l+1}`.
    pub fn estimate_minus(&self, l: usize) -> Option<&Belief> {
        self.est_minus.get(l)?.as_ref()
    }

    fn check_message(&self, what: &str, l: usize, msg: &Message) -> Result<()> {
        let n = *self.rows.get(l).ok_or_else(|| {
            Error::invalid(
                "variable index",
                format!(
                    "variables are numbered 0 … {}, got {l}",
                    self.rows.len() - 1
                ),
            )
        })?;
        msg.check(&format!("{what} about Z_{l}"), n, self.d)?;
        crate::rows::check_finite(
            &format!("mean of the {what} about Z_{l}"),
            msg.mean.as_ref(),
        )
    }
    /// Replaces the backward message about `Z_l` (a custom start); it must be `n_l x d` and finite.
    pub fn set_minus(&mut self, l: usize, msg: Message) -> Result<()> {
        self.check_message("backward message", l, &msg)?;
        self.minus[l] = msg;
        Ok(())
    }
    /// Replaces the forward message about `Z_l` (e.g. a warm start of one layer); it must be
    /// `n_l x d` and finite.
    pub fn set_plus(&mut self, l: usize, msg: Message) -> Result<()> {
        self.check_message("forward message", l, &msg)?;
        self.plus[l] = Some(msg);
        Ok(())
    }

    /// The primary estimate of `Z_l`: the one produced by the row-wise (non-Gaussian) factor
    /// next to it, as tracked by Theorem 1 — `Ẑ⁺_l` for even `l` (prior or nonlinear layer `l`),
    /// `Ẑ⁻_l` for odd `l` (nonlinear layer `l+1` or the output). `None` before it is computed or
    /// past the depth.
    pub fn estimate(&self, l: usize) -> Option<&Belief> {
        if l.is_multiple_of(2) {
            self.estimate_plus(l)
        } else {
            self.estimate_minus(l)
        }
    }

    /// Checks that this state belongs to `net` (same depth, rows and `d`).
    fn check_network(&self, net: &Network) -> Result<()> {
        if self.rows != net.rows() || self.d != net.dim() {
            return Err(Error::shape(
                "solver state",
                format!(
                    "a state of this network (rows {:?}, d = {})",
                    net.rows(),
                    net.dim()
                ),
                format!("rows {:?}, d = {}", self.rows, self.d),
            ));
        }
        Ok(())
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
    /// Warnings of the denoisers in this iteration, each naming where it arose (omitted from
    /// JSON when there are none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Iterative solves of this iteration (matrix-free linear layers; omitted when none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub solves: Vec<SolveRecord>,
}

/// One iterative solve of an iteration: where, and what it achieved.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SolveRecord {
    /// The message it produced (layer and direction).
    pub location: String,
    /// `"primal"`, `"dual"` or `"closed form"`.
    pub form: String,
    /// Conjugate-gradient iterations (largest over the `d` columns).
    pub iterations: usize,
    /// Achieved relative residual (largest over the columns).
    pub residual: f64,
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

pub use crate::observe::Control;

/// Algorithm 1 on a [`Network`].
#[derive(Clone, Debug)]
pub struct Solver {
    /// The options.
    pub config: SolverConfig,
    /// Whether the fused pass over `V` may run (see [`Solver::with_fused_pass`]).
    fused: bool,
}

impl Default for Solver {
    fn default() -> Self {
        Solver {
            config: SolverConfig::default(),
            fused: true,
        }
    }
}

/// The "empirical SE" of the reference code (spec §6.5), a diagnostic: every message, as soon as
/// it is produced, is replaced by a synthetic one with the same linear-Gaussian statistics
/// relative to the truth, `R ← Z⁰ A + N(0, R_err)` with `A = lstsq(Z⁰, R)` and
/// `R_err = (1/n)(Z⁰A − R)^T(Z⁰A − R)` (fresh noise every time). Needs the ground truth.
struct Surrogate<'a> {
    truth: &'a [Mat<f64>],
    rng: crate::rng::Rng,
}

impl Surrogate<'_> {
    fn replace(&mut self, l: usize, msg: &mut Message) -> Result<()> {
        let z = self.truth[l].as_ref();
        let d = z.ncols();
        let zz = crate::rows::cross_moment(z, z);
        let zr = crate::rows::cross_moment(z, msg.mean.as_ref());
        // lstsq via the normal equations with a relative ridge (rcond ~ 1e-8).
        let ridge = 1e-8 * zz.trace().max(f64::MIN_POSITIVE) / d as f64;
        let reg = Spd::from_symmetric("Z^T Z", &zz + DMat::identity(d, d) * ridge)?;
        let a = reg.solve_right(&zr.transpose())?.transpose();
        let fit = crate::rows::mul_small(z, &a);
        let resid = &fit - &msg.mean;
        let rerr = crate::rows::cross_moment(resid.as_ref(), resid.as_ref());
        let e = nalgebra::SymmetricEigen::new(crate::spd::sym(&rerr));
        let sqrt = &e.eigenvectors
            * DMat::from_diagonal(&e.eigenvalues.map(|v| v.max(0.0).sqrt()))
            * e.eigenvectors.transpose();
        let noise = crate::rng::standard_normal(z.nrows(), d, &mut self.rng);
        msg.mean = &fit + &crate::rows::mul_small(noise.as_ref(), &sqrt);
        Ok(())
    }
}

/// Algorithm 1 as a [`Schedule`]: messages flow, beliefs are kept for the history.
struct AlgorithmStep<'a, 'b, 't> {
    net: &'a Network,
    policy: &'a MessagePolicy,
    k: usize,
    est_plus: &'b mut [Option<Belief>],
    est_minus: &'b mut [Option<Belief>],
    surrogate: Option<&'b mut Surrogate<'t>>,
    warnings: &'b mut Vec<String>,
    solves: &'b mut Vec<SolveRecord>,
    warm: &'b mut [[WarmStart; 2]],
    /// The first layer, when the fused pass runs ([`Solver::with_fused_pass`]).
    fused: Option<&'a LinearLayer>,
    pending: &'b mut Option<Box<Pending>>,
    vt_plus0: &'b mut Option<Box<(Mat<f64>, Mat<f64>)>>,
}

impl AlgorithmStep<'_, '_, '_> {
    fn wrap(&self, loc: String) -> impl Fn(Error) -> Error + '_ {
        let k = self.k;
        move |e| match e {
            Error::Diverged { .. } => e,
            other => Error::Diverged {
                location: loc.clone(),
                iteration: k,
                detail: other.to_string(),
            },
        }
    }
    /// Moves a belief's warnings into the iteration's list, prefixed by where they arose.
    fn keep_warnings(&mut self, loc: &str, belief: &Belief) {
        for w in &belief.warnings {
            self.warnings
                .push(format!("iteration {}, {loc}: {w}", self.k));
        }
        if let Some(r) = &belief.solve {
            self.solves.push(SolveRecord {
                location: loc.to_string(),
                form: r.form.name().to_string(),
                iterations: r.iterations,
                residual: r.residual,
            });
        }
    }
    fn finish(&mut self, l: usize, mut msg: Message) -> Result<Message> {
        if let Some(s) = self.surrogate.as_deref_mut() {
            s.replace(l, &mut msg)?;
        }
        Ok(msg)
    }
}

/// The address of a layer (to tie pending products to it).
fn layer_address(layer: &LinearLayer) -> usize {
    layer as *const LinearLayer as usize
}

impl AlgorithmStep<'_, '_, '_> {
    /// `V_rᵀ R⁺_0` when the fused pass obtained it by linearity for this very message.
    fn given_vt_plus(&self, plus: &Message) -> Option<&Mat<f64>> {
        self.vt_plus0
            .as_deref()
            .filter(|(key, _)| same_mat_bits(key, &plus.mean))
            .map(|(_, value)| value)
    }

    /// `G⁻_1`, the message rule about `Z_0` and the next prior denoiser in one pass over `V_r`
    /// (`solver/fused.rs`). Changes nothing on error.
    fn fused_backward(
        &mut self,
        layer: &LinearLayer,
        loc: &str,
        minus: &Message,
        plus_in: &Message,
        prev: &Message,
    ) -> Result<Message> {
        let b = layer.backward_rotated(minus, plus_in, self.given_vt_plus(plus_in))?;
        let (out_prec, map) = self.policy.extrinsic_rule(
            &b.cov,
            &plus_in.precision,
            Some(&prev.precision),
            loc,
            self.k,
        )?;
        prev.check("previous message", plus_in.rows(), plus_in.dim())?;
        let prior = self.net.prior();
        let den = prior.row_denoiser(&out_prec).and_then(|r| r.ok());
        let out = fused::pass(&fused::PassInput {
            vt: layer.vt(),
            q: b.q.as_ref(),
            complement: b.complement,
            plus: plus_in.mean.as_ref(),
            map: &map,
            prev: prev.mean.as_ref(),
            prior: den.as_deref(),
        })?;
        crate::rows::check_finite("estimate", out.z_minus.as_ref())?;
        crate::rows::check_finite("outgoing message", out.r_minus.as_ref())?;
        let n = out.r_minus.nrows();
        let next = match (out.prior, den.as_deref()) {
            (Some(p), Some(den)) => Some(Box::new(Pending {
                key: Message {
                    mean: out.r_minus.clone(),
                    precision: out_prec.clone(),
                },
                layer: layer_address(layer),
                z: p.z,
                cov: den.covariance(&p.cov_sum, n),
                vt_z: p.vt_z,
                vt_r: p.vt_r,
            })),
            _ => None,
        };
        let belief = Belief::new(out.z_minus, b.cov);
        self.keep_warnings(loc, &belief);
        self.est_minus[0] = Some(belief);
        *self.pending = next;
        Ok(Message {
            mean: out.r_minus,
            precision: out_prec,
        })
    }
}

impl Schedule for AlgorithmStep<'_, '_, '_> {
    type Fwd = Message;
    type Bwd = Message;

    fn prior(&mut self, minus: &Message, prev: Option<&Message>) -> Result<Message> {
        let loc = self.net.chain().location_forward(0);
        let Some(layer) = self.fused else {
            let belief = self
                .net
                .prior()
                .denoise(minus)
                .map_err(self.wrap(loc.clone()))?;
            let ext = self.policy.extrinsic(&belief, minus, prev, &loc, self.k)?;
            self.keep_warnings(&loc, &belief);
            self.est_plus[0] = Some(belief);
            return self.finish(0, ext.message);
        };
        // The fused pass of the previous backward call computed this belief and its products
        // with V_r, if the message is still the one it saw.
        let pending = self
            .pending
            .take()
            .filter(|p| p.layer == layer_address(layer) && same_bits(&p.key, minus));
        let (belief, products) = match pending {
            Some(p) => {
                let p = *p;
                (Belief::new(p.z, p.cov), Some((p.vt_z, p.vt_r)))
            }
            None => (
                self.net
                    .prior()
                    .denoise(minus)
                    .map_err(self.wrap(loc.clone()))?,
                None,
            ),
        };
        let (ext, map) = self
            .policy
            .extrinsic_map(&belief, minus, prev, &loc, self.k)?;
        // V_rᵀ R⁺_0 by linearity (eq. 2.1): (1−ρ)(V_rᵀẐ A + V_rᵀR⁻ B) + ρ V_rᵀR⁺_prev.
        let vt_plus = products.map(|(vt_z, vt_r)| {
            let mut v = crate::rows::mul_small_sum(
                vt_z.as_ref(),
                &map.estimate,
                vt_r.as_ref(),
                &map.incoming,
            );
            if let Some(p) = prev.filter(|_| map.damping > 0.0) {
                let vt_prev = match self.vt_plus0.as_deref() {
                    Some((key, value)) if same_mat_bits(key, &p.mean) => value.clone(),
                    _ => layer.vt_product(p.mean.as_ref()),
                };
                v = &v * faer::Scale(1.0 - map.damping) + &vt_prev * faer::Scale(map.damping);
            }
            v
        });
        *self.vt_plus0 = vt_plus.map(|v| Box::new((ext.message.mean.clone(), v)));
        self.keep_warnings(&loc, &belief);
        self.est_plus[0] = Some(belief);
        self.finish(0, ext.message)
    }

    fn layer_forward(
        &mut self,
        l: usize,
        minus: &Message,
        plus_in: &Message,
        prev: Option<&Message>,
    ) -> Result<Message> {
        let loc = self.net.chain().location_forward(l);
        let belief = match self.fused.filter(|_| l == 1) {
            Some(layer) => layer
                .forward_with(minus, plus_in, self.given_vt_plus(plus_in))
                .map_err(self.wrap(loc.clone()))?,
            None => self
                .net
                .layer(l)?
                .forward_warm(minus, plus_in, &mut self.warm[l - 1][0])
                .map_err(self.wrap(loc.clone()))?,
        };
        // Lines 10–12: the message is about Z_l and subtracts R⁻_{kl} Γ⁻_{kl}.
        let ext = self.policy.extrinsic(&belief, minus, prev, &loc, self.k)?;
        self.keep_warnings(&loc, &belief);
        self.est_plus[l] = Some(belief);
        self.finish(l, ext.message)
    }

    fn output(&mut self, plus: &Message, prev: &Message) -> Result<Message> {
        let last = self.net.depth() - 1;
        let loc = self.net.chain().location_backward(last);
        let belief = self
            .net
            .output()
            .denoise(plus)
            .map_err(self.wrap(loc.clone()))?;
        // Lines 16–18 (corrected): subtract R⁺_{k,L−1} Γ⁺_{k,L−1}, divide by Γ⁻_{k+1,L−1}.
        let ext = self
            .policy
            .extrinsic(&belief, plus, Some(prev), &loc, self.k)?;
        // An output whose message does not depend on what it receives sends it exactly, when the
        // rule left it as it is (no damping or clipping moved it beyond rounding).
        let message = match self.net.output().likelihood_message() {
            Some(exact) if same_up_to_rounding(&ext.message, &exact) => exact,
            _ => ext.message,
        };
        self.keep_warnings(&loc, &belief);
        self.est_minus[last] = Some(belief);
        self.finish(last, message)
    }

    fn layer_backward(
        &mut self,
        l: usize,
        minus: &Message,
        plus_in: &Message,
        prev: &Message,
    ) -> Result<Message> {
        let loc = self.net.chain().location_backward(l - 1);
        if l == 1 {
            if let Some(layer) = self.fused {
                // On any error, the ordinary call below runs and reports it where it arises.
                if let Ok(msg) = self.fused_backward(layer, &loc, minus, plus_in, prev) {
                    return Ok(msg);
                }
            }
        }
        let belief = self
            .net
            .layer(l)?
            .backward_warm(minus, plus_in, &mut self.warm[l - 1][1])
            .map_err(self.wrap(loc.clone()))?;
        // Lines 21–23 (corrected): about Z_{l−1}, subtract R⁺_{k,l−1} Γ⁺_{k,l−1}.
        let ext = self
            .policy
            .extrinsic(&belief, plus_in, Some(prev), &loc, self.k)?;
        self.keep_warnings(&loc, &belief);
        self.est_minus[l - 1] = Some(belief);
        self.finish(l - 1, ext.message)
    }
}

/// Whether two messages agree to `1e-9` relative (precision in Frobenius norm, means entry by
/// entry against the largest entry): the exact likelihood message replaces the computed one
/// only then.
fn same_up_to_rounding(computed: &Message, exact: &Message) -> bool {
    let (a, b) = (computed.precision.matrix(), exact.precision.matrix());
    if a.shape() != b.shape() || (a - b).norm() > 1e-9 * b.norm() {
        return false;
    }
    let (x, y) = (computed.mean.as_ref(), exact.mean.as_ref());
    if x.nrows() != y.nrows() || x.ncols() != y.ncols() {
        return false;
    }
    let scale = (0..y.ncols())
        .flat_map(|j| (0..y.nrows()).map(move |i| (i, j)))
        .fold(0.0f64, |m, (i, j)| m.max(y[(i, j)].abs()));
    (0..y.ncols())
        .flat_map(|j| (0..y.nrows()).map(move |i| (i, j)))
        .all(|(i, j)| (x[(i, j)] - y[(i, j)]).abs() <= 1e-9 * scale.max(f64::MIN_POSITIVE))
}

impl Solver {
    /// A solver with the given options.
    pub fn new(config: SolverConfig) -> Result<Self> {
        config.validate()?;
        Ok(Solver {
            config,
            fused: true,
        })
    }

    /// Switches the fused pass over `V` on (the default) or off (`docs/speed.md`).
    ///
    /// When the first hidden layer is the SVD linear layer ([`LinearLayer`]), one iteration
    /// ends with its backward call `G⁻_1` (spec §3.3), the message rule about `Z_0` (eq. 2.1)
    /// and, at the start of the next iteration, the prior's denoiser `G⁺_0` (eq. 13) and the
    /// forward call's product `V_rᵀ R⁺_0`. The fused pass computes the first three row block
    /// by row block of `V_r`, in one read of `V_r`, and the product by linearity of the message
    /// rule ([`MessagePolicy::extrinsic_rule`]). It engages when
    ///
    /// * the solver runs the real denoisers (not the empirical SE, which replaces messages);
    /// * layer 1 is a [`LinearLayer`] (any shape, bias, noise);
    /// * for the prior part: the prior is row-separable
    ///   ([`crate::factor::PriorDenoiser::row_denoiser`]: the Bernoulli–Gaussian and Gaussian
    ///   priors); otherwise only `G⁻_1` and the message rule are fused;
    ///
    /// and otherwise, or on any error (which the ordinary path then reports), the ordinary
    /// schedule runs. The results agree with the ordinary path up to rounding
    /// (`tests/fused_pass.rs`) and do not depend on the number of threads.
    pub fn with_fused_pass(mut self, on: bool) -> Self {
        self.fused = on;
        self
    }

    /// Whether the fused pass may run ([`Solver::with_fused_pass`]).
    pub fn fused_pass(&self) -> bool {
        self.fused
    }

    fn pass(
        &self,
        net: &Network,
        state: &mut State,
        forward: bool,
        surrogate: Option<&mut Surrogate<'_>>,
    ) -> Result<()> {
        self.pass_with(net, state, forward, surrogate, &self.config.policy)
    }

    fn pass_with(
        &self,
        net: &Network,
        state: &mut State,
        forward: bool,
        surrogate: Option<&mut Surrogate<'_>>,
        policy: &MessagePolicy,
    ) -> Result<()> {
        state.check_network(net)?;
        let fused = if self.fused && surrogate.is_none() && net.depth() >= 2 {
            net.layer(1)?
                .as_any()
                .and_then(|a| a.downcast_ref::<LinearLayer>())
                .filter(|l| l.vt().row_stride() == 1)
        } else {
            None
        };
        let State {
            plus,
            minus,
            est_plus,
            est_minus,
            iteration,
            warnings,
            solves,
            warm,
            pending,
            vt_plus0,
            ..
        } = state;
        let mut step = AlgorithmStep {
            net,
            policy,
            k: *iteration,
            est_plus,
            est_minus,
            surrogate,
            warnings,
            solves,
            warm,
            fused,
            pending,
            vt_plus0,
        };
        if forward {
            schedule::forward_pass(&mut step, plus, minus)
        } else {
            schedule::backward_pass(&mut step, plus, minus)
        }
    }

    /// The forward pass of iteration `state.iteration` (Algorithm 1, lines 4–13).
    pub fn forward_pass(&self, net: &Network, state: &mut State) -> Result<()> {
        self.pass(net, state, true, None)
    }

    /// The backward pass of iteration `state.iteration` (Algorithm 1, lines 15–24, corrected).
    pub fn backward_pass(&self, net: &Network, state: &mut State) -> Result<()> {
        self.pass(net, state, false, None)
    }

    /// Summarises the state after an iteration (with the truth, when supplied). An error if the
    /// state does not belong to `net`, or the truth or the previous estimates do not have its
    /// shapes.
    pub fn record(
        &self,
        net: &Network,
        state: &State,
        previous: Option<&[Mat<f64>]>,
        truth: Option<&[Mat<f64>]>,
        seconds: f64,
    ) -> Result<IterationRecord> {
        state.check_network(net)?;
        check_truth(net, truth, "truth")?;
        check_truth(net, previous, "previous estimates")?;
        Ok(Self::record_checked(net, state, previous, truth, seconds))
    }

    /// [`Solver::record`] after its checks.
    fn record_checked(
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
                (Some(b), Some(t)) => {
                    Some(crate::rows::error_stats(b.mean.as_ref(), t[l].as_ref()).0)
                }
                _ => None,
            };
            let (mse, error_cov) = match (primary, truth) {
                (Some(b), Some(t)) => {
                    let (m, c) = crate::rows::error_stats(b.mean.as_ref(), t[l].as_ref());
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
                predicted_mse_plus: tr(state.estimate_plus(l)),
                predicted_mse_minus: tr(state.estimate_minus(l)),
                gamma_plus: state.plus[l]
                    .as_ref()
                    .map(|m| dmat_to_rows(m.precision.matrix()))
                    .unwrap_or_default(),
                gamma_minus: dmat_to_rows(state.minus[l].precision.matrix()),
                change,
                mse,
                error_cov,
                mse_plus: mse_of(state.estimate_plus(l)),
                mse_minus: mse_of(state.estimate_minus(l)),
            });
        }
        IterationRecord {
            iteration: state.iteration,
            seconds,
            variables,
            warnings: state.warnings.clone(),
            solves: state.solves.clone(),
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
        state: State,
        truth: Option<&[Mat<f64>]>,
        callback: &mut dyn FnMut(&IterationRecord, &State) -> Control,
    ) -> Result<Solution> {
        self.run_impl(net, state, truth, callback, None)
    }

    /// The reference code's "empirical SE" (spec §6.5), a **diagnostic**, not the state
    /// evolution: the real denoisers run on the real data, but every message is replaced, as soon
    /// as it is produced, by `Z⁰A + N(0, R_err)` fitted to the truth (fresh noise from `seed`).
    /// Needs the ground truth. For the deterministic prediction use [`crate::se`].
    pub fn run_empirical_se(
        &self,
        net: &Network,
        truth: &[Mat<f64>],
        seed: u64,
        callback: &mut dyn FnMut(&IterationRecord, &State) -> Control,
    ) -> Result<Solution> {
        self.config.validate()?;
        let state = State::new(net, self.config.gamma_init)?;
        let mut surrogate = Surrogate {
            truth,
            rng: crate::rng_from_seed(seed),
        };
        check_truth(net, Some(truth), "truth")?;
        self.run_impl(net, state, Some(truth), callback, Some(&mut surrogate))
    }

    fn run_impl(
        &self,
        net: &Network,
        mut state: State,
        truth: Option<&[Mat<f64>]>,
        callback: &mut dyn FnMut(&IterationRecord, &State) -> Control,
        mut surrogate: Option<&mut Surrogate<'_>>,
    ) -> Result<Solution> {
        self.config.validate()?;
        check_truth(net, truth, "truth")?;
        state.check_network(net)?;
        let mut history = Vec::new();
        let mut previous: Option<Vec<Mat<f64>>> = None;
        let mut converged = false;
        // Divergence handling (`MessagePolicy::on_divergence`): the last sound state, the scale
        // of every primary estimate seen so far, and the damping raised after each roll-back.
        let mut policy = self.config.policy.clone();
        let mut retries = 0usize;
        let mut scale: Vec<f64> = vec![0.0; net.depth()];
        let mut events: Vec<String> = Vec::new();
        while history.len() < self.config.iterations {
            let start = Instant::now();
            let sound = state.clone();
            state.clear_warnings();
            let attempt = self
                .pass_with(net, &mut state, true, surrogate.as_deref_mut(), &policy)
                .and_then(|()| {
                    self.pass_with(net, &mut state, false, surrogate.as_deref_mut(), &policy)
                })
                .and_then(|()| check_sound(net, &sound, &state, &scale));
            if let Err(e) = attempt {
                let Error::Diverged {
                    location,
                    iteration,
                    detail,
                } = e
                else {
                    return Err(e);
                };
                if policy.on_divergence == OnDivergence::Stop || retries >= policy.max_retries {
                    let detail = if retries > 0 {
                        format!("{detail} (after {retries} roll-backs with stronger damping)")
                    } else {
                        detail
                    };
                    return Err(Error::Diverged {
                        location,
                        iteration,
                        detail,
                    });
                }
                // Roll back to the last sound iterate and damp harder (both halves of the rule).
                retries += 1;
                state = sound;
                // Halfway to 1 each time (0.5, 0.75, …), at most 0.95.
                policy.damp_precision = (0.5 * (1.0 + policy.damp_precision)).min(0.95);
                policy.damp_mean = (0.5 * (1.0 + policy.damp_mean)).min(0.95);
                events.push(format!(
                    "iteration {iteration}: {location} diverged ({detail}); rolled back to iteration {} and raised the damping to {:.3} (precision) and {:.3} (mean)",
                    iteration.saturating_sub(1),
                    policy.damp_precision,
                    policy.damp_mean
                ));
                continue;
            }
            for (l, s) in scale.iter_mut().enumerate() {
                if let Some(b) = state.estimate(l) {
                    *s = s.max(mean_square(b.mean.as_ref()));
                }
            }
            state.warnings.append(&mut events);
            let rec = Self::record_checked(
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
            previous = (0..net.depth())
                .map(|l| state.estimate(l).map(|b| b.mean.clone()))
                .collect();
            if let (Some(tol), Some(ch)) = (self.config.tolerance, max_change) {
                // Converged only on a sound iterate: finite predicted (and, with the truth,
                // empirical) errors.
                let honest = history.last().is_some_and(|r: &IterationRecord| {
                    r.variables
                        .iter()
                        .all(|v| v.predicted_mse.is_finite() && v.mse.is_none_or(f64::is_finite))
                });
                if ch < tol && honest {
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

/// Checks a list of `Z_0 … Z_{L−1}`-shaped matrices (`what`: "truth") against the network.
fn check_truth(net: &Network, truth: Option<&[Mat<f64>]>, what: &str) -> Result<()> {
    if let Some(t) = truth {
        if t.len() != net.depth() {
            return Err(Error::shape(
                what,
                format!("{} matrices Z_0 … Z_{{L-1}}", net.depth()),
                format!("{} matrices", t.len()),
            ));
        }
        for (l, z) in t.iter().enumerate() {
            check_shape(
                &format!("{what} Z_{l}"),
                z.as_ref(),
                net.rows()[l],
                net.dim(),
            )?;
            crate::rows::check_finite(&format!("{what} Z_{l}"), z.as_ref())?;
        }
    }
    Ok(())
}

/// The empirical error of an estimate: the MSE per row `(1/n)||Ẑ − Z||²_F` and the `d x d` error
/// covariance `(1/n)(Ẑ − Z)^T(Ẑ − Z)` (the history's `mse` and `error_cov`). An error if the
/// shapes differ.
pub fn error_stats(estimate: MatRef<'_, f64>, truth: MatRef<'_, f64>) -> Result<(f64, DMat)> {
    check_shape("truth", truth, estimate.nrows(), estimate.ncols())?;
    Ok(crate::rows::error_stats(estimate, truth))
}

/// `(1/(n d)) ‖M‖²_F`.
fn mean_square(m: MatRef<'_, f64>) -> f64 {
    let (n, d) = (m.nrows(), m.ncols());
    let f = m.norm_l2();
    f * f / (n * d).max(1) as f64
}

/// The largest absolute eigenvalue of a symmetric matrix.
fn spectral_radius(m: &DMat) -> f64 {
    nalgebra::SymmetricEigen::new(crate::spd::sym(m))
        .eigenvalues
        .iter()
        .fold(0.0f64, |a, &x| a.max(x.abs()))
}

/// Whether the iterate `now` is sound after `before` (`docs/algorithm.md`, divergence): every
/// primary estimate's mean square at most `EXPLOSION` times the largest seen so far (`scale`,
/// once there is one), and every message precision within a factor `EXPLOSION²` of its
/// previous value — an estimate that explodes or a precision that explodes or collapses in one
/// iteration is a divergence at the factor that produced it.
fn check_sound(net: &Network, before: &State, now: &State, scale: &[f64]) -> Result<()> {
    const EXPLOSION: f64 = 1e8;
    let k = now.iteration;
    let chain = net.chain();
    for l in 0..net.depth() {
        if let Some(b) = now.estimate(l) {
            let ms = mean_square(b.mean.as_ref());
            let location = if l % 2 == 0 {
                chain.location_forward(l)
            } else {
                chain.location_backward(l)
            };
            // Against the largest seen so far and the algorithm's own error bar, so that an
            // estimate growing from a tiny first iterate to its true scale is not an explosion.
            let reference = scale[l].max(b.cov.trace().abs() / b.cov.nrows().max(1) as f64);
            if !ms.is_finite() || (k > 0 && reference > 0.0 && ms > EXPLOSION * reference) {
                return Err(Error::Diverged {
                    location,
                    iteration: k,
                    detail: format!(
                        "the estimate of Z_{l} exploded: mean square {ms:.3e}, against at most {:.3e} before",
                        scale[l]
                    ),
                });
            }
        }
        let pairs = [
            (before.plus(l), now.plus(l), true),
            (before.minus(l), now.minus(l), false),
        ];
        for (old, new, fwd) in pairs {
            if let (Some(old), Some(new)) = (old, new) {
                if k < 2 {
                    continue; // the initial messages are placeholders
                }
                let (a, b) = (
                    spectral_radius(old.precision.matrix()),
                    spectral_radius(new.precision.matrix()),
                );
                let ratio = b / a;
                if !(ratio.is_finite()
                    && (1.0 / (EXPLOSION * EXPLOSION)..=EXPLOSION * EXPLOSION).contains(&ratio))
                {
                    let location = if fwd {
                        chain.location_forward(l)
                    } else {
                        chain.location_backward(l)
                    };
                    return Err(Error::Diverged {
                        location,
                        iteration: k,
                        detail: format!(
                            "the precision {} in one iteration (largest eigenvalue {a:.3e} -> {b:.3e})",
                            if ratio > 1.0 { "exploded" } else { "collapsed" }
                        ),
                    });
                }
            }
        }
    }
    Ok(())
}
