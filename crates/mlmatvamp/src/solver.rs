//! Algorithm 1 (ML-Mat-VAMP) with the corrected indices of spec §2.3.
//!
//! One iteration `k` is a forward pass (`G⁺_0`, then `G⁺_l` for `l = 1 … L−1`) followed by a
//! backward pass (`G⁻_L`, then `G⁻_l` for `l = L−1 … 1`). After every denoiser the message rule
//! ([`MessagePolicy::extrinsic`]) forms the outgoing message about the *same* variable the
//! denoiser estimated, subtracting the incoming message on that variable (lines 18 and 23 as
//! corrected).

mod fused;
mod lazy;

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
use lazy::{LazyMat, Span};
use serde::{Deserialize, Serialize};
use std::sync::{Arc, OnceLock};
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
    /// Warm start of the output denoiser ([`crate::factor::OutputDenoiser::denoise_warm`]).
    warm_output: WarmStart,
    /// The next prior belief and its products with `V_r`, computed by the fused pass of the
    /// previous backward call (see [`Solver::with_fused_pass`]); used only if the backward
    /// message about `Z_0` is still the one it was computed for.
    pending: Option<Box<Pending>>,
    /// `(R⁺_0, V_rᵀ R⁺_0)` of the current forward message about `Z_0` when the fused pass
    /// obtained the product by linearity (not read from `V_r`).
    vt_plus0: Option<Box<(Mat<f64>, Mat<f64>)>>,
    /// The span of the last variable's lazy estimates (built at the first pass that uses it).
    span: Option<Arc<Span>>,
    /// The last variable's forward message and estimates kept without `U_r`
    /// (`solver/lazy.rs`, [`Solver::with_lazy_estimates`]).
    lazy: Option<Box<LazyLast>>,
}

/// The last variable's quantities held as `U_r C + Σ_j X_j G_j` (`solver/lazy.rs`); each is
/// formed, once, when an accessor asks for it.
#[derive(Clone, Debug)]
struct LazyLast {
    span: Arc<Span>,
    /// The variable `L − 1`.
    l: usize,
    /// `R⁺_{L−1}` (the slot in `State::plus` then holds its precision and an empty mean).
    plus: Option<LazyMessage>,
    /// `Ẑ⁺_{L−1}` (the slot in `State::est_plus` is then empty).
    est_plus: Option<LazyBelief>,
    /// `Ẑ⁻_{L−1}` (the slot in `State::est_minus` is then empty).
    est_minus: Option<LazyBelief>,
}

#[derive(Clone, Debug)]
struct LazyMessage {
    mean: LazyMat,
    precision: Spd,
    formed: OnceLock<Message>,
}

#[derive(Clone, Debug)]
struct LazyBelief {
    mean: LazyMat,
    cov: DMat,
    formed: OnceLock<Belief>,
}

impl LazyBelief {
    fn new(mean: LazyMat, cov: DMat) -> Self {
        LazyBelief {
            mean,
            cov,
            formed: OnceLock::new(),
        }
    }
    fn get(&self, span: &Span) -> &Belief {
        self.formed
            .get_or_init(|| Belief::new(span.form(&self.mean), self.cov.clone()))
    }
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
    crate::rows::same_bits(x.as_ref(), y.as_ref())
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
            warm_output: WarmStart::default(),
            pending: None,
            vt_plus0: None,
            span: None,
            lazy: None,
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
        if let Some((lz, p)) = self.lazy_part(l, |z| z.plus.as_ref()) {
            return Some(p.formed.get_or_init(|| Message {
                mean: lz.span.form(&p.mean),
                precision: p.precision.clone(),
            }));
        }
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
        if let Some((lz, b)) = self.lazy_part(l, |z| z.est_plus.as_ref()) {
            return Some(b.get(&lz.span));
        }
        self.est_plus.get(l)?.as_ref()
    }
    /// The backward-pass belief `(Ẑ⁻_l, Σ̄)` from `G⁻_{l+1}`.
    pub fn estimate_minus(&self, l: usize) -> Option<&Belief> {
        if let Some((lz, b)) = self.lazy_part(l, |z| z.est_minus.as_ref()) {
            return Some(b.get(&lz.span));
        }
        self.est_minus.get(l)?.as_ref()
    }

    /// A lazy quantity about `Z_l`, if `l` is the lazy variable and it holds one.
    fn lazy_part<'s, T>(
        &'s self,
        l: usize,
        part: impl Fn(&'s LazyLast) -> Option<&'s T>,
    ) -> Option<(&'s LazyLast, &'s T)> {
        let lz = self.lazy.as_deref().filter(|z| z.l == l)?;
        part(lz).map(|p| (lz, p))
    }

    /// The primary estimate of `Z_l` in lazy form, if it is held so.
    fn lazy_estimate(&self, l: usize) -> Option<(&Span, &LazyBelief)> {
        let (lz, b) = if l.is_multiple_of(2) {
            self.lazy_part(l, |z| z.est_plus.as_ref())?
        } else {
            self.lazy_part(l, |z| z.est_minus.as_ref())?
        };
        Some((&lz.span, b))
    }

    /// `(1/(n d)) ‖Ẑ_l‖²_F` and `Σ̄` of the primary estimate, without forming a lazy one.
    fn estimate_scale(&self, l: usize) -> Option<(f64, &DMat)> {
        if let Some((span, b)) = self.lazy_estimate(l) {
            let n = (span.rows() * self.d).max(1) as f64;
            return Some((span.gram(&b.mean, &b.mean).trace() / n, &b.cov));
        }
        self.estimate(l)
            .map(|b| (mean_square(b.mean.as_ref()), &b.cov))
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
        if let Some(lz) = self.lazy.as_deref_mut().filter(|z| z.l == l) {
            lz.plus = None;
        }
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

    /// The span of the last variable's lazy estimates for `net`, built once (`solver/lazy.rs`):
    /// `None` unless the last hidden layer is the SVD [`LinearLayer`] and the output is a fully
    /// observed Gaussian channel.
    fn ensure_span(&mut self, net: &Network) -> Option<Arc<Span>> {
        let last = net.depth().checked_sub(1).filter(|&l| l > 0)?;
        let layer = net
            .layer(last)
            .ok()?
            .as_any()?
            .downcast_ref::<LinearLayer>()?;
        let output = net.output();
        let key = (layer_address(layer), output.observation().as_ptr() as usize);
        if let Some(span) = self.span.as_ref().filter(|s| s.key == key) {
            return Some(Arc::clone(span));
        }
        let exact = output.likelihood_message()?;
        output.linear_estimate(&exact.precision)?.ok()?;
        if exact.rows() != self.rows[last] || exact.dim() != self.d {
            return None;
        }
        let span = Arc::new(Span::new(layer, exact.mean, key));
        self.span = Some(Arc::clone(&span));
        Some(span)
    }

    /// Forms every lazy quantity into its ordinary slot and drops the lazy form (a pass that
    /// does not keep them lazily).
    fn form_lazy(&mut self) {
        let Some(lz) = self.lazy.take() else { return };
        let l = lz.l;
        if let Some(m) = &lz.plus {
            if let Some(slot) = self.plus.get_mut(l) {
                *slot = Some(m.formed.get().cloned().unwrap_or_else(|| Message {
                    mean: lz.span.form(&m.mean),
                    precision: m.precision.clone(),
                }));
            }
        }
        for (b, slot) in [
            (&lz.est_plus, &mut self.est_plus),
            (&lz.est_minus, &mut self.est_minus),
        ] {
            if let (Some(b), Some(slot)) = (b, slot.get_mut(l)) {
                *slot = Some(b.get(&lz.span).clone());
            }
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
    /// Whether the last variable's estimates may be kept lazily
    /// (see [`Solver::with_lazy_estimates`]).
    lazy: bool,
}

impl Default for Solver {
    fn default() -> Self {
        Solver {
            config: SolverConfig::default(),
            fused: true,
            lazy: true,
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
    warm_output: &'b mut WarmStart,
    /// The first layer, when the fused pass runs ([`Solver::with_fused_pass`]).
    fused: Option<&'a LinearLayer>,
    pending: &'b mut Option<Box<Pending>>,
    vt_plus0: &'b mut Option<Box<(Mat<f64>, Mat<f64>)>>,
    /// The span of the last variable, when its estimates are kept lazily
    /// ([`Solver::with_lazy_estimates`]).
    span: Option<Arc<Span>>,
    lazy: &'b mut Option<Box<LazyLast>>,
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

    /// Drops lazy quantities that an ordinary call replaces.
    fn forget_lazy(&mut self, f: impl FnOnce(&mut LazyLast)) {
        if let Some(z) = self.lazy.as_deref_mut() {
            f(z);
        }
    }

    /// `G⁺_{L−1}` and the message rule about `Z_{L−1}` without `U_r` (`solver/lazy.rs`):
    /// `Ẑ⁺ = U_r C + R⁻ K_r + B K_b` and `R⁺ = (1−ρ)(Ẑ⁺ A + R⁻ B_r) + ρ R⁺_prev`, kept as
    /// coefficients. `None` (nothing changed) when `R⁻` is neither the observation nor zero, the
    /// previous message is not lazy while damping needs it, or anything fails.
    fn lazy_forward(
        &mut self,
        span: &Arc<Span>,
        l: usize,
        minus: &Message,
        plus_in: &Message,
        prev: Option<&Message>,
        loc: &str,
    ) -> Option<Message> {
        let layer = self
            .net
            .layer(l)
            .ok()?
            .as_any()?
            .downcast_ref::<LinearLayer>()?;
        if layer_address(layer) != span.key.0 {
            return None;
        }
        let is_y = span.is_fixed(0, &minus.mean);
        if !is_y && !minus.mean.col_iter().all(|c| c.iter().all(|&x| x == 0.0)) {
            return None;
        }
        // The previous forward message, for damping: lazy (placeholder in the slot) or absent.
        let prev_lazy = match prev {
            Some(p) if p.mean.nrows() == 0 => Some(
                self.lazy
                    .as_deref()
                    .filter(|z| z.l == l)?
                    .plus
                    .as_ref()?
                    .mean
                    .clone(),
            ),
            Some(_) if self.policy.damp_mean > 0.0 => return None,
            _ => None,
        };
        let vt_plus = if l == 1 {
            self.given_vt_plus(plus_in)
        } else {
            None
        };
        let parts = layer.forward_parts(minus, plus_in, vt_plus).ok()?;
        let mut z = LazyMat::new(parts.c);
        if parts.complement {
            if let (Some(kr), true) = (&parts.minus_factor, is_y) {
                z.add_fixed(0, kr);
            }
            if let (Some(kb), Some(j)) = (&parts.bias_factor, span.bias) {
                z.add_fixed(j, kb);
            }
        }
        if !z.is_finite() {
            return None;
        }
        let (out_prec, map) = self
            .policy
            .extrinsic_rule(
                &parts.cov,
                &minus.precision,
                prev.map(|p| &p.precision),
                loc,
                self.k,
            )
            .ok()?;
        let mut r = z.times(&map.estimate);
        if is_y {
            r.add_fixed(0, &map.incoming);
        }
        if map.damping > 0.0 {
            if let Some(p) = &prev_lazy {
                r = r.combine(1.0 - map.damping, p, map.damping);
            }
        }
        if !r.is_finite() {
            return None;
        }
        let d = minus.dim();
        let lz = self.lazy.get_or_insert_with(|| {
            Box::new(LazyLast {
                span: Arc::clone(span),
                l,
                plus: None,
                est_plus: None,
                est_minus: None,
            })
        });
        if !Arc::ptr_eq(&lz.span, span) || lz.l != l {
            **lz = LazyLast {
                span: Arc::clone(span),
                l,
                plus: None,
                est_plus: None,
                est_minus: None,
            };
        }
        lz.est_plus = Some(LazyBelief::new(z, parts.cov));
        lz.plus = Some(LazyMessage {
            mean: r,
            precision: out_prec.clone(),
            formed: OnceLock::new(),
        });
        self.est_plus[l] = None;
        Some(Message {
            mean: Mat::zeros(0, d),
            precision: out_prec,
        })
    }

    /// `G⁻_L` and its message rule on a lazy `R⁺_{L−1}`: `Ẑ⁻ = R⁺ G + Y H` kept as
    /// coefficients, and the exact likelihood message `(Y, N)` sent back when the rule maps
    /// every input to it up to rounding — the `d x d` form of the test the ordinary path makes
    /// on the computed message: `Γ_out = N` and `R_out = R⁺ P + Y Q` with `P = (1−ρ)(G A + B)`
    /// negligible, `Q = (1−ρ) H A (+ ρ I` when the previous message is `Y`) equal to `I`, both
    /// to `1e-9` relative. `None` (nothing changed) otherwise.
    fn lazy_output(
        &mut self,
        span: &Arc<Span>,
        plus_mean: &LazyMat,
        plus: &Message,
        prev: &Message,
        loc: &str,
    ) -> Option<Message> {
        let output = self.net.output();
        let est = output.linear_estimate(&plus.precision)?.ok()?;
        let exact = output.likelihood_message()?;
        let mut z = plus_mean.times(&est.incoming);
        z.add_fixed(0, &est.observation);
        if !z.is_finite() {
            return None;
        }
        let (out_prec, map) = self
            .policy
            .extrinsic_rule(
                &est.cov,
                &plus.precision,
                Some(&prev.precision),
                loc,
                self.k,
            )
            .ok()?;
        let (a, b) = (&map.estimate, &map.incoming);
        let ga = &est.incoming * a;
        let p = (&ga + b) * (1.0 - map.damping);
        let mut q = &est.observation * a * (1.0 - map.damping);
        if map.damping > 0.0 {
            if !span.is_fixed(0, &prev.mean) {
                return None;
            }
            q += DMat::identity(q.nrows(), q.ncols()) * map.damping;
        }
        let identity = DMat::identity(q.nrows(), q.ncols());
        let (gn, nn) = (out_prec.matrix(), exact.precision.matrix());
        let exact_rule = (gn - nn).norm() <= 1e-9 * nn.norm()
            && p.norm() <= 1e-9 * (ga.norm() + b.norm())
            && (&q - &identity).norm() <= 1e-9 * identity.norm();
        if !exact_rule {
            return None;
        }
        let last = self.net.depth() - 1;
        let lz = self.lazy.as_deref_mut().filter(|z| z.l == last)?;
        lz.est_minus = Some(LazyBelief::new(z, est.cov));
        self.est_minus[last] = None;
        Some(exact)
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
        if let Some(span) = self.span.clone() {
            if l + 1 == self.net.depth() {
                // On anything it cannot represent, or any error, the ordinary call below runs.
                if let Some(msg) = self.lazy_forward(&span, l, minus, plus_in, prev, &loc) {
                    return Ok(msg);
                }
            }
        }
        // A lazy previous message (damping) is formed before the ordinary call uses it.
        let formed_prev;
        let prev = match prev {
            Some(p) if p.mean.nrows() == 0 => {
                formed_prev = self
                    .lazy
                    .as_deref()
                    .filter(|z| z.l == l)
                    .and_then(|z| z.plus.as_ref().map(|m| (z, m)))
                    .map(|(z, m)| Message {
                        mean: z.span.form(&m.mean),
                        precision: m.precision.clone(),
                    });
                formed_prev.as_ref()
            }
            other => other,
        };
        self.forget_lazy(|z| {
            if z.l == l {
                z.plus = None;
                z.est_plus = None;
            }
        });
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
        let formed;
        let plus = match self.lazy.as_deref().filter(|z| z.l == last).and_then(|z| {
            z.plus
                .as_ref()
                .filter(|_| plus.mean.nrows() == 0)
                .map(|p| (Arc::clone(&z.span), p.mean.clone()))
        }) {
            Some((span, mean)) => {
                if let Some(msg) = self.lazy_output(&span, &mean, plus, prev, &loc) {
                    return Ok(msg);
                }
                // The ordinary call on the formed message.
                formed = Message {
                    mean: span.form(&mean),
                    precision: plus.precision.clone(),
                };
                &formed
            }
            None => plus,
        };
        self.forget_lazy(|z| {
            if z.l == last {
                z.est_minus = None
            }
        });
        let belief = self
            .net
            .output()
            .denoise_warm(plus, self.warm_output)
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
            lazy: true,
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

    /// Switches the lazy estimates of the last variable on (the default) or off
    /// (`docs/speed.md`).
    ///
    /// When the last hidden layer is the SVD [`LinearLayer`] and the output is a fully observed
    /// Gaussian channel (its estimate is linear in its input and its message back is the
    /// likelihood `(Y, N)`, [`crate::factor::OutputDenoiser::linear_estimate`]), nothing the
    /// algorithm computes needs the estimates of `Z_{L−1}` or the forward message about it as
    /// matrices: they are kept as `U_r C + Σ_j X_j G_j` with `C` `r x d` and `G_j` `d x d`
    /// over the observation, the bias and (for the history) the truth, so an iteration never
    /// reads `U_r`. The history's changes, errors and error covariances and the divergence
    /// check are computed from `d x d` Gram matrices in rotated coordinates; the matrices
    /// themselves are formed (one product with `U_r`) when [`State::plus`],
    /// [`State::estimate_plus`], [`State::estimate_minus`] or the [`Solution`] ask for them.
    /// It engages only when the solver runs the real denoisers (not the empirical SE) and the
    /// backward message about `Z_{L−1}` is the observation (or the initial zero message); the
    /// exact likelihood message is sent back only when the message rule maps every input to it
    /// up to rounding (no clipping or damping moved it), as on the ordinary path. Results agree
    /// with the ordinary path up to rounding (`tests/lazy_estimates.rs`).
    pub fn with_lazy_estimates(mut self, on: bool) -> Self {
        self.lazy = on;
        self
    }

    /// Whether the last variable's estimates may be kept lazily
    /// ([`Solver::with_lazy_estimates`]).
    pub fn lazy_estimates(&self) -> bool {
        self.lazy
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
        let span = if self.lazy && surrogate.is_none() {
            state.ensure_span(net)
        } else {
            None
        };
        if span.is_none() {
            state.form_lazy();
        }
        let State {
            plus,
            minus,
            est_plus,
            est_minus,
            iteration,
            warnings,
            solves,
            warm,
            warm_output,
            pending,
            vt_plus0,
            lazy,
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
            warm_output,
            fused,
            pending,
            vt_plus0,
            span,
            lazy,
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
        Ok(Self::record_checked(
            net,
            state,
            previous,
            truth,
            seconds,
            &LazyHistory::default(),
        ))
    }

    /// [`Solver::record`] after its checks.
    fn record_checked(
        net: &Network,
        state: &State,
        previous: Option<&[Mat<f64>]>,
        truth: Option<&[Mat<f64>]>,
        seconds: f64,
        lazy: &LazyHistory,
    ) -> IterationRecord {
        let mut variables = Vec::with_capacity(net.depth());
        for l in 0..net.depth() {
            if let Some(v) = lazy.record(net, state, l, previous.is_some(), truth.is_some()) {
                variables.push(v);
                continue;
            }
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
                    // A previous estimate kept lazily (an empty slot) is formed.
                    let formed = match &lazy.previous {
                        Some((pl, m, span)) if *pl == l && p[l].nrows() == 0 => Some(span.form(m)),
                        _ => None,
                    };
                    let diff = (&b.mean - formed.as_ref().unwrap_or(&p[l])).norm_l2();
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
        let mut lazy_history = LazyHistory::default();
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
                if let Some((ms, _)) = state.estimate_scale(l) {
                    *s = s.max(ms);
                }
            }
            state.warnings.append(&mut events);
            lazy_history.prepare(&state, truth);
            let rec = Self::record_checked(
                net,
                &state,
                previous.as_deref(),
                truth,
                start.elapsed().as_secs_f64(),
                &lazy_history,
            );
            state.iteration += 1;
            let control = callback(&rec, &state);
            let max_change = rec
                .variables
                .iter()
                .filter_map(|v| v.change)
                .fold(None, |m: Option<f64>, c| Some(m.map_or(c, |m| m.max(c))));
            history.push(rec);
            // A lazy estimate's previous value is kept lazily (its slot holds an empty matrix).
            lazy_history.previous = state.lazy.as_deref().and_then(|z| {
                state
                    .lazy_estimate(z.l)
                    .map(|(_, b)| (z.l, b.mean.clone(), Arc::clone(&z.span)))
            });
            previous = (0..net.depth())
                .map(|l| match &lazy_history.previous {
                    Some((pl, _, _)) if *pl == l => Some(Mat::zeros(0, 0)),
                    _ => state.estimate(l).map(|b| b.mean.clone()),
                })
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

/// What the history of a lazy variable needs from earlier iterations: its previous primary
/// estimate (lazy) and the span extended by the truth.
#[derive(Default)]
struct LazyHistory {
    /// `(l, Ẑ_l, its span)` of the previous iteration.
    previous: Option<(usize, LazyMat, Arc<Span>)>,
    /// The state's span (its address) and that span extended by the truth `Z⁰_l`.
    truth: Option<(usize, Arc<Span>)>,
}

impl LazyHistory {
    /// Extends the state's span by the truth, once per span (two products with `U_r`).
    fn prepare(&mut self, state: &State, truth: Option<&[Mat<f64>]>) {
        let (Some(t), Some(lz)) = (truth, state.lazy.as_deref()) else {
            return;
        };
        let key = Arc::as_ptr(&lz.span) as usize;
        if self.truth.as_ref().is_none_or(|(k, _)| *k != key) {
            self.truth = Some((key, Arc::new(lz.span.with(t[lz.l].clone()))));
        }
    }

    /// The record of variable `l` from its lazy estimates, or `None` when it is not lazy or
    /// what the record needs is missing (then it is computed from the formed estimates).
    fn record(
        &self,
        net: &Network,
        state: &State,
        l: usize,
        with_previous: bool,
        with_truth: bool,
    ) -> Option<VariableRecord> {
        let lz = state.lazy.as_deref().filter(|z| z.l == l)?;
        let (_, primary) = state.lazy_estimate(l)?;
        let base = &lz.span;
        let previous = match &self.previous {
            Some((pl, p, span)) if *pl == l && Arc::ptr_eq(span, base) => Some(p),
            _ if with_previous => return None,
            _ => None,
        };
        let truth = match &self.truth {
            Some((key, span)) if *key == Arc::as_ptr(base) as usize => Some(span),
            _ if with_truth => return None,
            _ => None,
        };
        // Ordinary slots are used for the parts that are not lazy (`Ẑ⁺` after a fallback).
        let plus = lz.est_plus.as_ref();
        let minus = lz.est_minus.as_ref();
        if plus.is_none() && state.est_plus[l].is_some()
            || minus.is_none() && state.est_minus[l].is_some()
        {
            return None;
        }
        let n = net.rows()[l];
        let error = |b: &LazyBelief| {
            truth.map(|span| {
                let mut e = b.mean.clone();
                e.add_fixed(base.len(), &-DMat::identity(state.d, state.d));
                span.gram(&e, &e) / n.max(1) as f64
            })
        };
        let err = error(primary);
        let change = previous.map(|p| {
            let diff = primary.mean.combine(1.0, p, -1.0);
            let d2 = base.gram(&diff, &diff).trace().max(0.0).sqrt();
            let norm = base
                .gram(&primary.mean, &primary.mean)
                .trace()
                .max(0.0)
                .sqrt();
            if norm > 0.0 {
                d2 / norm
            } else {
                d2
            }
        });
        let tr = |b: Option<&LazyBelief>| b.map_or(f64::NAN, |b| b.cov.trace());
        Some(VariableRecord {
            variable: l,
            rows: n,
            cov: dmat_to_rows(&primary.cov),
            predicted_mse: primary.cov.trace(),
            predicted_mse_plus: tr(plus),
            predicted_mse_minus: tr(minus),
            gamma_plus: state.plus[l]
                .as_ref()
                .map(|m| dmat_to_rows(m.precision.matrix()))
                .unwrap_or_default(),
            gamma_minus: dmat_to_rows(state.minus[l].precision.matrix()),
            change,
            mse: err.as_ref().map(|c| c.trace()),
            error_cov: err.as_ref().map(dmat_to_rows),
            mse_plus: plus.and_then(error).map(|c| c.trace()),
            mse_minus: minus.and_then(error).map(|c| c.trace()),
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
        if let Some((ms, cov)) = now.estimate_scale(l) {
            let location = if l % 2 == 0 {
                chain.location_forward(l)
            } else {
                chain.location_backward(l)
            };
            // Against the largest seen so far and the algorithm's own error bar, so that an
            // estimate growing from a tiny first iterate to its true scale is not an explosion.
            let reference = scale[l].max(cov.trace().abs() / cov.nrows().max(1) as f64);
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
        // The precisions only (the slots, so that a lazy mean is not formed).
        let pairs = [
            (before.plus[l].as_ref(), now.plus[l].as_ref(), true),
            (before.minus.get(l), now.minus.get(l), false),
        ];
        for (old, new, fwd) in pairs {
            if let (Some(old), Some(new)) = (old, new) {
                if k < 2 {
                    continue; // the initial messages are placeholders
                }
                let bounds = (1.0 / (EXPLOSION * EXPLOSION))..=EXPLOSION * EXPLOSION;
                // The precisions are positive definite, so `tr/d ≤ λ_max ≤ tr`: when the
                // ratio of the traces is well inside the bounds (a factor `d` to spare), so is
                // the ratio of the largest eigenvalues, and no eigen-decomposition is needed.
                let (ta, tb) = (
                    old.precision.matrix().trace(),
                    new.precision.matrix().trace(),
                );
                let dim = old.precision.dim().max(1) as f64;
                let (low, high) = (tb / (ta * dim), tb * dim / ta);
                if low.is_finite()
                    && high.is_finite()
                    && bounds.contains(&low)
                    && bounds.contains(&high)
                {
                    continue;
                }
                let (a, b) = (
                    spectral_radius(old.precision.matrix()),
                    spectral_radius(new.precision.matrix()),
                );
                let ratio = b / a;
                if !(ratio.is_finite() && bounds.contains(&ratio)) {
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
