//! Factors of the network of eq. (1) and what each use asks of them, one trait per capability.
//!
//! A factor is the prior `p_0` on `Z_0`, a hidden layer `p(Z_l | Z_{l−1})` (`l = 1 … L−1`) or the
//! output channel `p(Y | Z_{L−1})`. Three users need different things of it:
//!
//! | who | needs | prior | hidden layer | output |
//! |---|---|---|---|---|
//! | Algorithm 1 | its denoiser `G` (eq. 13) | [`PriorDenoiser`] | [`LayerDenoiser`] | [`OutputDenoiser`] (conditioned on `Y`) |
//! | a teacher | to sample it (eq. 1) | [`PriorSampler`] | [`LayerSampler`] | [`OutputLaw`] (draws `Y`) |
//! | the state evolution | its SE step (Theorem 1) | [`PriorSe`] | [`LayerSe`] | [`OutputSe`] |
//!
//! All of them share the description [`Factor`] (and [`LayerShape`], [`OutputShape`]). A factor
//! that exists only for the state evolution (a linear layer known by its spectral law, an AWGN
//! output known by its mask law) implements only the SE traits. A factor with no closed-form SE
//! step gets the Monte-Carlo one (over its own sampler and denoiser, [`monte_carlo`]) by
//! implementing the marker [`MonteCarloSe`].
//!
//! [`InputPrior`], [`Layer`] and [`OutputChannel`] are the complete factors (every capability):
//! what a [`crate::network::Network`] holds, so that one description serves the teacher, the
//! algorithm and the state evolution.
//!
//! Every implementation is checked by the shared suite [`conformance`].

pub(crate) mod affine;
pub mod conformance;
pub mod law;
pub mod monte_carlo;

use crate::error::Result;
use crate::message::{Belief, Message};
use crate::rng::Rng;
use crate::spd::{DMat, Spd};
use faer::{Mat, MatRef};
use law::{SeBackward, SeContext, SeForward, SeStep};

/// What every factor says about itself.
pub trait Factor: Send + Sync {
    /// A one-line description (for histories and error messages).
    fn describe(&self) -> String;
    /// The number of columns `d` of the variables it touches.
    fn dim(&self) -> usize;
}

/// Whether a hidden layer is a linear layer (odd `l`) or a row-wise nonlinear layer (even `l`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerKind {
    /// `Z_l = W_l Z_{l−1} + B_l + Ξ_l` (eq. 1a).
    Linear,
    /// `Z_l = φ_l(Z_{l−1}, Ξ_l)` acting row by row (eq. 1b).
    RowWise,
}

/// The shape of a hidden layer `l ∈ {1 … L−1}`.
pub trait LayerShape: Factor {
    /// Linear or row-wise.
    fn kind(&self) -> LayerKind;
    /// The number of input rows `n_{l−1}` the layer requires (`None`: any, row-wise layers).
    fn input_rows(&self) -> Option<usize>;
    /// The number of output rows `n_l` for `n_in` input rows.
    fn output_rows(&self, n_in: usize) -> usize;
}

/// The shape of an output channel.
pub trait OutputShape: Factor {
    /// The number of rows `n_{L−1}` of `Z_{L−1}`.
    fn rows(&self) -> usize;
}

// ---------------------------------------------------------------------------------------------
// What Algorithm 1 needs: the denoisers of eq. (13).
// ---------------------------------------------------------------------------------------------

/// `G⁺_0`: the belief `b_0(Z_0) ∝ p(Z_0) exp(-½||Z_0 − R⁻_0||²_{Γ⁻_0})`.
pub trait PriorDenoiser: Factor {
    /// The estimate of `Z_0` and its average posterior covariance, given the backward message
    /// `(R⁻_0, Γ⁻_0)`. Works for any number of rows.
    fn denoise(&self, incoming: &Message) -> Result<Belief>;
    /// The denoiser for a fixed message precision `Γ⁻_0`, applied to blocks of rows, when the
    /// prior is **row-separable**: the estimate of row `i` depends only on row `i` of `R⁻_0` and
    /// on `Γ⁻_0` (no per-row data, mask or row index enters), `Σ̄` is the average of per-row
    /// contributions, and the belief carries no warnings. Then
    /// `denoise(R⁻_0, Γ⁻_0)` equals the rows of [`RowBlockDenoiser::denoise_rows`] over any
    /// partition of the rows, with `Σ̄` from [`RowBlockDenoiser::covariance`] of the summed
    /// contributions. The solver's fused pass (`docs/speed.md`) denoises rows of `Z_0` while
    /// the block of `V` they belong to is in cache; `None` (the default) keeps a prior out of it.
    fn row_denoiser(&self, precision: &Spd) -> Option<Result<Box<dyn RowBlockDenoiser + '_>>> {
        let _ = precision;
        None
    }
}

/// A row-separable prior's denoiser `G⁺_0` with its message precision fixed (see
/// [`PriorDenoiser::row_denoiser`]): one call per block of rows, no dispatch per row.
pub trait RowBlockDenoiser: Send + Sync {
    /// Writes the estimates of the rows of `r` (a block of `R⁻_0`, `b x d`) into `z` (`b x d`)
    /// and adds each row's contribution to the average covariance into `cov_sum` (row-major
    /// `d x d`), row after row in order.
    fn denoise_rows(
        &self,
        r: MatRef<'_, f64>,
        z: faer::MatMut<'_, f64>,
        cov_sum: &mut [f64],
    ) -> Result<()>;
    /// `Σ̄` from the contributions of all `n` rows, summed within fixed chunks of 256 rows and
    /// then over the chunks in row order (as [`PriorDenoiser::denoise`] sums them).
    fn covariance(&self, cov_sum: &[f64], n: usize) -> crate::spd::DMat;
}

/// `G_l = (G⁺_l, G⁻_l)` of a hidden layer: the belief (eq. 12)
/// `b_l(Z_l, Z_{l−1}) ∝ p(Z_l | Z_{l−1}) exp(-½||Z_l − R⁻_l||²_{Γ⁻_l} − ½||Z_{l−1} − R⁺_{l−1}||²_{Γ⁺_{l−1}})`.
///
/// `minus` is the backward message `(R⁻_l, Γ⁻_l)` about the layer's output `Z_l`; `plus` is the
/// forward message `(R⁺_{l−1}, Γ⁺_{l−1})` about its input `Z_{l−1}`.
pub trait LayerDenoiser: LayerShape {
    /// `G⁺_l`: the estimate of `Z_l` (and `Σ̄_u`).
    fn forward(&self, minus: &Message, plus: &Message) -> Result<Belief>;
    /// `G⁻_l`: the estimate of `Z_{l−1}` (and `Σ̄_v`).
    fn backward(&self, minus: &Message, plus: &Message) -> Result<Belief>;
    /// `G⁺_l` with an explicit warm start: an iterative denoiser (a matrix-free linear layer)
    /// starts from what it left in `warm` and leaves its solution there for the next call; the
    /// solver keeps one slot per layer and direction in its state. Direct denoisers ignore it.
    fn forward_warm(
        &self,
        minus: &Message,
        plus: &Message,
        warm: &mut WarmStart,
    ) -> Result<Belief> {
        let _ = warm;
        self.forward(minus, plus)
    }
    /// `G⁻_l` with an explicit warm start (see [`LayerDenoiser::forward_warm`]).
    fn backward_warm(
        &self,
        minus: &Message,
        plus: &Message,
        warm: &mut WarmStart,
    ) -> Result<Belief> {
        let _ = warm;
        self.backward(minus, plus)
    }
    /// The layer as `Any`, so that the solver can recognise the SVD linear layer
    /// (`crate::denoise::linear::LinearLayer`) and fuse its backward call with the prior
    /// (`docs/speed.md`); `None` (the default) for every other layer.
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        None
    }
}

/// The warm start of an iterative denoiser: the previous solution, held by the caller (the
/// solver's state), so that a denoiser has no hidden state and the same inputs give the same
/// result.
#[derive(Clone, Debug, Default)]
pub struct WarmStart {
    previous: Option<Mat<f64>>,
}

impl WarmStart {
    /// The stored solution, if any.
    pub fn get(&self) -> Option<&Mat<f64>> {
        self.previous.as_ref()
    }
    /// Stores a solution.
    pub fn set(&mut self, solution: Mat<f64>) {
        self.previous = Some(solution);
    }
    /// Forgets the stored solution.
    pub fn clear(&mut self) {
        self.previous = None;
    }
}

/// `G⁻_L`: the belief `b_L(Z_{L−1}) ∝ p(Y | Z_{L−1}) exp(-½||Z_{L−1} − R⁺_{L−1}||²_{Γ⁺_{L−1}})`,
/// for the observation `Y` the channel holds.
pub trait OutputDenoiser: OutputShape {
    /// The observation `Y`.
    fn observation(&self) -> MatRef<'_, f64>;
    /// The estimate of `Z_{L−1}` given the forward message `(R⁺_{L−1}, Γ⁺_{L−1})`.
    fn denoise(&self, plus: &Message) -> Result<Belief>;
    /// [`OutputDenoiser::denoise`] with an explicit warm start, held by the solver's state as
    /// for [`LayerDenoiser::forward_warm`]: an output whose estimate is found iteratively (the
    /// two-layer output's Newton MAP rows) starts from what it left in `warm` and leaves its
    /// estimate there. The default ignores it.
    fn denoise_warm(&self, plus: &Message, warm: &mut WarmStart) -> Result<Belief> {
        let _ = warm;
        self.denoise(plus)
    }
    /// The output's extrinsic message when it does not depend on the forward message: a fully
    /// observed Gaussian channel `Y = Z_{L−1} + Ξ` sends `(Y, N)` whatever it receives (its
    /// belief divided by the incoming message, eq. (2.1), is the likelihood). The solver sends
    /// this exact message instead of the quotient computed in floating point, which differs
    /// from it by rounding — so the layer below receives the same bits at every iteration and
    /// reuses its product with them. `None` (the default) for every other output.
    fn likelihood_message(&self) -> Option<Message> {
        None
    }
    /// The estimate as a linear map, when it is one with factors common to all rows:
    /// `Ẑ = R⁺ G + Y H` with the average posterior row covariance `Σ̄`, returned as
    /// `(G, H, Σ̄)` for the forward precision `Γ⁺` (a fully observed Gaussian channel:
    /// `G = Γ⁺Σ`, `H = NΣ`, `Σ̄ = Σ = (Γ⁺ + N)^{-1}`). The solver then never forms the last
    /// variable's estimate unless it is asked for (`solver/lazy.rs`). `None` (the default)
    /// for every other output; it must agree with [`OutputDenoiser::denoise`].
    fn linear_estimate(&self, _plus_precision: &crate::spd::Spd) -> Option<Result<LinearEstimate>> {
        None
    }
}

/// An output's estimate as a linear map ([`OutputDenoiser::linear_estimate`]):
/// `Ẑ = R⁺ G + Y H`, average posterior row covariance `Σ̄`.
#[derive(Clone, Debug)]
pub struct LinearEstimate {
    /// `G` (`d x d`), applied to the forward message's mean `R⁺`.
    pub incoming: DMat,
    /// `H` (`d x d`), applied to the observation `Y`.
    pub observation: DMat,
    /// `Σ̄` (`d x d`).
    pub cov: DMat,
}

// ---------------------------------------------------------------------------------------------
// What a teacher needs: sampling eq. (1).
// ---------------------------------------------------------------------------------------------

/// Draws rows of `Z_0` from `p_0`.
pub trait PriorSampler: Factor {
    /// `n` i.i.d. rows from `p_0`.
    fn sample(&self, n: usize, rng: &mut Rng) -> Result<Mat<f64>>;
}

/// Draws `Z_l` given `Z_{l−1}` (eq. 1).
pub trait LayerSampler: LayerShape {
    /// `Z_l ~ p(Z_l | Z_{l−1} = z_prev)`.
    fn sample(&self, z_prev: MatRef<'_, f64>, rng: &mut Rng) -> Result<Mat<f64>>;
}

/// The law `p(Y | Z_{L−1})` of an output channel, without an observation: draws `Y` for a given
/// `Z` and returns the channel conditioned on it.
pub trait OutputLaw: Factor {
    /// The channel conditioned on a fresh observation drawn from `p(Y | Z)` for the given `Z`
    /// (any number of rows; per-row side information such as a missing-entry pattern is drawn
    /// from its law, or from its empirical law when the row count differs).
    fn resample(&self, z: MatRef<'_, f64>, rng: &mut Rng) -> Result<Box<dyn OutputChannel>>;
}

// ---------------------------------------------------------------------------------------------
// What the state evolution needs: the factor's SE step.
// ---------------------------------------------------------------------------------------------

/// The SE step of a prior (the prior row of the recursion; `docs/se-recursion.md`).
pub trait PriorSe: Factor {
    /// The law of the forward message about `Z_0` given the backward law `minus`; `prev` is the
    /// previous `Γ̄⁺_0` (for damping).
    fn se_forward(
        &self,
        minus: &SeBackward,
        ctx: &SeContext<'_>,
        prev: Option<&Spd>,
    ) -> Result<SeStep<SeForward>>;
}

/// The SE steps of a hidden layer.
pub trait LayerSe: LayerShape {
    /// The law of the forward message about `Z_l`.
    fn se_forward(
        &self,
        minus: &SeBackward,
        plus_in: &SeForward,
        ctx: &SeContext<'_>,
        prev: Option<&Spd>,
    ) -> Result<SeStep<SeForward>>;
    /// The law of the backward message about `Z_{l−1}`.
    fn se_backward(
        &self,
        minus: &SeBackward,
        plus_in: &SeForward,
        ctx: &SeContext<'_>,
        prev: Option<&Spd>,
    ) -> Result<SeStep<SeBackward>>;
    /// For linear layers, the singular values of `W` the closed-form step sums over.
    fn singular_values(&self) -> Option<&[f64]> {
        None
    }
}

/// The SE step of an output channel.
pub trait OutputSe: OutputShape {
    /// The law of the backward message about `Z_{L−1}` given the forward law `plus`.
    fn se_backward(
        &self,
        plus: &SeForward,
        ctx: &SeContext<'_>,
        prev: Option<&Spd>,
    ) -> Result<SeStep<SeBackward>>;
}

/// Marker: the factor's SE step is the Monte-Carlo one over its own sampler and denoiser
/// ([`monte_carlo`]). Implementing it (an empty `impl`) gives [`PriorSe`], [`LayerSe`] or
/// [`OutputSe`] for free.
pub trait MonteCarloSe {}

impl<T: MonteCarloSe + PriorDenoiser + PriorSampler> PriorSe for T {
    fn se_forward(
        &self,
        minus: &SeBackward,
        ctx: &SeContext<'_>,
        prev: Option<&Spd>,
    ) -> Result<SeStep<SeForward>> {
        monte_carlo::prior_forward(self, minus, ctx, prev)
    }
}

impl<T: MonteCarloSe + LayerDenoiser + LayerSampler> LayerSe for T {
    fn se_forward(
        &self,
        minus: &SeBackward,
        plus_in: &SeForward,
        ctx: &SeContext<'_>,
        prev: Option<&Spd>,
    ) -> Result<SeStep<SeForward>> {
        monte_carlo::layer_forward(self, minus, plus_in, ctx, prev)
    }
    fn se_backward(
        &self,
        minus: &SeBackward,
        plus_in: &SeForward,
        ctx: &SeContext<'_>,
        prev: Option<&Spd>,
    ) -> Result<SeStep<SeBackward>> {
        monte_carlo::layer_backward(self, minus, plus_in, ctx, prev)
    }
}

impl<T: MonteCarloSe + OutputShape + OutputLaw> OutputSe for T {
    fn se_backward(
        &self,
        plus: &SeForward,
        ctx: &SeContext<'_>,
        prev: Option<&Spd>,
    ) -> Result<SeStep<SeBackward>> {
        monte_carlo::output_backward(self, plus, ctx, prev)
    }
}

// ---------------------------------------------------------------------------------------------
// Complete factors.
// ---------------------------------------------------------------------------------------------

/// A prior with every capability: denoiser, sampler and SE step.
pub trait InputPrior: PriorDenoiser + PriorSampler + PriorSe {}
impl<T: PriorDenoiser + PriorSampler + PriorSe + ?Sized> InputPrior for T {}

/// A hidden layer with every capability.
pub trait Layer: LayerDenoiser + LayerSampler + LayerSe {}
impl<T: LayerDenoiser + LayerSampler + LayerSe + ?Sized> Layer for T {}

/// An output channel with every capability: conditioned on its observation `Y` (denoiser), with
/// its law (to draw a new `Y`) and its SE step.
pub trait OutputChannel: OutputDenoiser + OutputLaw + OutputSe {}
impl<T: OutputDenoiser + OutputLaw + OutputSe + ?Sized> OutputChannel for T {}
