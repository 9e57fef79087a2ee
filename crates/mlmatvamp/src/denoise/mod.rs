//! The factors of eq. (1), one file per family, each implementing the capability traits of
//! [`crate::factor`] (denoiser of eq. 13, sampler, SE step):
//!
//! * priors on `Z_0`: [`gaussian`], [`sparse`] (Bernoulli–Gaussian, group lasso), [`mismatch`];
//! * hidden layers: [`linear`] (SVD, `docs/linear-layer.md`), [`operator_layer`] (matrix-free:
//!   conjugate gradients and a spectral law, `docs/matrix-free.md`), [`spectral`] (a linear layer known
//!   by its singular values, SE only), [`activation`] and [`relu`] (row-wise nonlinear layers);
//! * outputs: [`output`] (AWGN with missing entries), [`mask_law`] (AWGN known by its mask law,
//!   SE only), [`two_layer`], [`mixed`], [`probit`] (sign of a noisy pre-activation), [`cexp`]
//!   (the complex exponential of sketched clustering);
//! * shared numerical tools: [`newton`], [`quadrature`].
//!
//! Every denoiser is a pure function of its incoming messages and returns a
//! [`crate::message::Belief`] `(Ẑ, Σ̄)`; the message rule is applied by the solver
//! ([`crate::message::MessagePolicy`]).

pub mod activation;
pub mod cexp;
pub mod gaussian;
pub mod linear;
pub mod mask_law;
pub mod mismatch;
pub mod mixed;
pub mod newton;
pub mod operator_layer;
pub mod output;
pub mod probit;
pub mod quadrature;
pub mod relu;
pub mod sparse;
pub mod spectral;
pub mod two_layer;

pub use activation::{Activation, ActivationLayer};
pub use cexp::{CexpOptions, CexpOutput};
pub use gaussian::GaussianPrior;
pub use linear::LinearLayer;
pub use mismatch::MismatchedPrior;
pub use mixed::MixedRegressionOutput;
pub use newton::HessianKind;
pub use operator_layer::{LawOptions, OperatorLayer};
pub use output::AwgnOutput;
pub use probit::ProbitOutput;
pub use relu::ReluMmseMethod;
pub use sparse::BernoulliGaussianPrior;
pub use sparse::GroupLassoPrior;
pub use two_layer::{
    MapOptions, MmseMethod, MmseOptions, ReluMapSolver, TwoLayerEstimator, TwoLayerOutput,
};

pub use crate::factor::{
    Factor, InputPrior, Layer, LayerDenoiser, LayerKind, LayerSampler, LayerSe, LayerShape,
    MonteCarloSe, OutputChannel, OutputDenoiser, OutputLaw, OutputSe, OutputShape, PriorDenoiser,
    PriorSampler, PriorSe,
};
pub use crate::rng::{gaussian_rows, standard_normal, Rng};

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
