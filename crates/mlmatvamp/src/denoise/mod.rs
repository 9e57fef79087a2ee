//! The denoisers `G` of eq. (13): one trait per position in the network.
//!
//! * [`InputPrior`] — `G⁺_0`, the belief `b_0(Z_0) ∝ p(Z_0) exp(-½||Z_0 − R⁻_0||²_{Γ⁻_0})`;
//! * [`Layer`] — `G_l = (G⁺_l, G⁻_l)` for `l = 1 … L−1`, the belief
//!   `b_l(Z_l, Z_{l−1}) ∝ p(Z_l | Z_{l−1}) exp(-½||Z_l − R⁻_l||²_{Γ⁻_l} − ½||Z_{l−1} − R⁺_{l−1}||²_{Γ⁺_{l−1}})`
//!   (eq. 12): linear layers (odd `l`) and row-wise nonlinear layers (even `l`);
//! * [`OutputChannel`] — `G⁻_L`, the belief `b_L(Z_{L−1}) ∝ p(Y | Z_{L−1}) exp(-½||Z_{L−1} − R⁺_{L−1}||²_{Γ⁺_{L−1}})`.
//!
//! Every denoiser is a pure function of its incoming messages and returns a [`Belief`]
//! `(Ẑ, Σ̄)`; the message rule is applied by the solver ([`crate::message::MessagePolicy`]).
//! Each kind also knows how to *sample* its factor, so the same description generates a
//! ground truth (teacher), runs the algorithm and drives the state evolution.

pub mod activation;
pub mod gaussian;
pub mod linear;
pub mod mismatch;
pub mod mixed;
pub mod newton;
pub mod output;
pub mod quadrature;
pub mod relu;
pub mod sparse;
pub mod two_layer;

pub use activation::{Activation, ActivationLayer};
pub use gaussian::GaussianPrior;
pub use linear::LinearLayer;
pub use mismatch::MismatchedPrior;
pub use mixed::MixedRegressionOutput;
pub use newton::HessianKind;
pub use output::AwgnOutput;
pub use relu::ReluMmseMethod;
pub use sparse::BernoulliGaussianPrior;
pub use sparse::GroupLassoPrior;
pub use two_layer::{
    MapOptions, MmseMethod, MmseOptions, ReluMapSolver, TwoLayerEstimator, TwoLayerOutput,
};

use crate::error::Result;
use crate::message::{Belief, Message};
use crate::se::{SeBackward, SeContext, SeForward, SeStep};
use crate::spd::Spd;
use faer::{Mat, MatRef};

pub use crate::rng::Rng;

/// Whether a hidden layer is a linear layer (odd `l`) or a row-wise nonlinear layer (even `l`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerKind {
    /// `Z_l = W_l Z_{l−1} + B_l + Ξ_l` (eq. 1a).
    Linear,
    /// `Z_l = φ_l(Z_{l−1}, Ξ_l)` acting row by row (eq. 1b).
    RowWise,
}

/// Whether a nonlinear denoiser returns the mode or the mean of its belief (eq. 11, 13).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Estimator {
    /// Maximum a posteriori: the minimiser of the negative log-belief; `Σ̄` = average inverse Hessian.
    Map,
    /// Minimum mean squared error: the posterior mean; `Σ̄` = average posterior covariance.
    #[default]
    Mmse,
}

/// The input prior `p_0` on the rows of `Z_0` and its denoiser `G⁺_0`.
pub trait InputPrior: Send + Sync {
    /// A one-line description (for histories and error messages).
    fn describe(&self) -> String;
    /// The number of columns `d`.
    fn dim(&self) -> usize;
    /// `G⁺_0`: the estimate of `Z_0` and its average posterior covariance, given the backward
    /// message `(R⁻_0, Γ⁻_0)`. Works for any number of rows.
    fn denoise(&self, incoming: &Message) -> Result<Belief>;
    /// Draws `n` i.i.d. rows from `p_0`.
    fn sample(&self, n: usize, rng: &mut Rng) -> Result<Mat<f64>>;
    /// The SE step of the prior (spec §6.2 (P)); by default Monte Carlo over the row model with
    /// this prior's own `sample` and `denoise`. `prev` is the previous `Γ̄⁺_0` (for damping).
    fn se_forward(
        &self,
        minus: &SeBackward,
        ctx: &SeContext<'_>,
        prev: Option<&Spd>,
    ) -> Result<SeStep<SeForward>> {
        crate::se::mc::prior_forward(self, minus, ctx, prev)
    }
}

/// A hidden layer `l ∈ {1 … L−1}` with its two-sided denoiser `G_l = (G⁺_l, G⁻_l)`.
///
/// `minus` is the backward message `(R⁻_l, Γ⁻_l)` about the layer's output `Z_l`; `plus` is the
/// forward message `(R⁺_{l−1}, Γ⁺_{l−1})` about its input `Z_{l−1}`.
pub trait Layer: Send + Sync {
    /// A one-line description.
    fn describe(&self) -> String;
    /// Linear or row-wise.
    fn kind(&self) -> LayerKind;
    /// The number of columns `d`.
    fn dim(&self) -> usize;
    /// The number of input rows `n_{l−1}` the layer requires (`None`: any, row-wise layers).
    fn input_rows(&self) -> Option<usize>;
    /// The number of output rows `n_l` for `n_in` input rows.
    fn output_rows(&self, n_in: usize) -> usize;
    /// `G⁺_l`: the estimate of `Z_l` (and `Σ̄_u`).
    fn forward(&self, minus: &Message, plus: &Message) -> Result<Belief>;
    /// `G⁻_l`: the estimate of `Z_{l−1}` (and `Σ̄_v`).
    fn backward(&self, minus: &Message, plus: &Message) -> Result<Belief>;
    /// Draws `Z_l` given `Z_{l−1}` (eq. 1).
    fn sample(&self, z_prev: MatRef<'_, f64>, rng: &mut Rng) -> Result<Mat<f64>>;
    /// For linear layers, the singular values of `W` (used by the state evolution).
    fn singular_values(&self) -> Option<&[f64]> {
        None
    }
    /// The forward SE step (spec §6.2 (N)); by default Monte Carlo over the row model with this
    /// layer's own `sample` and `forward`. Linear layers override it with the closed form (Lin).
    fn se_forward(
        &self,
        minus: &SeBackward,
        plus_in: &SeForward,
        ctx: &SeContext<'_>,
        prev: Option<&Spd>,
    ) -> Result<SeStep<SeForward>> {
        crate::se::mc::layer_forward(self, minus, plus_in, ctx, prev)
    }
    /// The backward SE step (spec §6.2 (N)); by default Monte Carlo with this layer's own
    /// `sample` and `backward`.
    fn se_backward(
        &self,
        minus: &SeBackward,
        plus_in: &SeForward,
        ctx: &SeContext<'_>,
        prev: Option<&Spd>,
    ) -> Result<SeStep<SeBackward>> {
        crate::se::mc::layer_backward(self, minus, plus_in, ctx, prev)
    }
}

/// The output channel `p(Y | Z_{L−1})`, holding the observation `Y`, and its denoiser `G⁻_L`.
pub trait OutputChannel: Send + Sync {
    /// A one-line description.
    fn describe(&self) -> String;
    /// The number of columns `d` of `Z_{L−1}`.
    fn dim(&self) -> usize;
    /// The number of rows `n_{L−1}`.
    fn rows(&self) -> usize;
    /// The observation `Y`.
    fn observation(&self) -> MatRef<'_, f64>;
    /// `G⁻_L`: the estimate of `Z_{L−1}` given the forward message `(R⁺_{L−1}, Γ⁺_{L−1})`.
    fn denoise(&self, plus: &Message) -> Result<Belief>;
    /// The same channel with a fresh observation drawn from `p(Y | Z)` for the given `Z`
    /// (any number of rows; per-row side information such as a missing-entry pattern is
    /// redrawn from its empirical law when the row count differs).
    fn resample(&self, z: MatRef<'_, f64>, rng: &mut Rng) -> Result<Box<dyn OutputChannel>>;
    /// The SE step of the output (spec §6.2 (O)); by default Monte Carlo over the row model with
    /// this channel's own `resample` and `denoise`.
    fn se_backward(
        &self,
        plus: &SeForward,
        ctx: &SeContext<'_>,
        prev: Option<&Spd>,
    ) -> Result<SeStep<SeBackward>> {
        crate::se::mc::output_backward(self, plus, ctx, prev)
    }
}

pub use crate::rng::{gaussian_rows, standard_normal};
