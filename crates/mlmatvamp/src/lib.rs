//! # mlmatvamp
//!
//! Multi-Layer Matrix VAMP (ML-Mat-VAMP, Pandit et al., NeurIPS 2020) and its state evolution.
//!
//! The model (eq. 1): `Z_0` has i.i.d. rows from a prior; linear layers
//! `Z_l = W_l Z_{l−1} + B_l + Ξ_l` (odd `l`) alternate with row-wise nonlinear layers
//! `Z_l = φ_l(Z_{l−1}, Ξ_l)` (even `l`); `Y = Z_L` is observed. Every unknown `Z_l` is an
//! `n_l x d` matrix whose `d` columns are coupled, so every precision is a `d x d` matrix.
//! ML-Mat-VAMP (Algorithm 1) estimates all `Z_l` by passing Gaussian messages `(R, Γ)` between
//! row-wise denoisers and SVD-diagonalised linear layers.
//!
//! The `mlmatvamp` binary runs the algorithm on users' data described by a TOML file
//! (`mlmatvamp run CONFIG.toml --out DIR`): see [`config`] for the format, [`io`] for the
//! accepted `.npy`/`.csv` files and [`run`] for the outputs.
//!
//! ```
//! use mlmatvamp::prelude::*;
//! use std::sync::Arc;
//! # fn main() -> mlmatvamp::Result<()> {
//! let d = 2;
//! let mut rng = rng_from_seed(0);
//! // Z_0 (50 x 2) ~ N(0, I); Z_1 = W Z_0 (noiseless); Y = Z_1 + noise.
//! let w = standard_normal(80, 50, &mut rng) * faer::Scale(1.0 / 50f64.sqrt());
//! let prior = Arc::new(GaussianPrior::isotropic(d, 1.0)?);
//! let layer = Arc::new(LinearLayer::new(w.as_ref(), None, None, d)?);
//! let noise = Spd::scaled_identity(d, 100.0)?;
//! let template = Arc::new(AwgnOutput::new(faer::Mat::zeros(80, d), noise, None)?);
//! let model = Network::new(prior, 50, vec![layer], template)?;
//! let (truth, net) = model.sample(&mut rng)?;
//! let solution = Solver::new(SolverConfig { iterations: 20, ..Default::default() })?.run(&net, Some(&truth))?;
//! let last = solution.history.last().unwrap();
//! assert!(last.variables[0].mse.unwrap() < 1.0);
//! # Ok(())
//! # }
//! ```

// Index loops mirror the formulas they implement (row i, column j); keep them.
#![allow(clippy::needless_range_loop)]
#![warn(missing_docs)]

// Foundations.
pub(crate) mod cpu;
pub mod error;
pub mod figure;
pub mod limits;
pub mod observe;
pub mod pages;
pub mod rng;
pub(crate) mod rows;
pub mod spd;
// Linear operators (dense, sparse, orthogonal transforms, user) and their spectral laws.
pub mod operator;
// Messages, factors, Algorithm 1, the state evolution (the paper's order).
pub mod denoise;
pub mod factor;
pub mod message;
pub mod network;
pub mod schedule;
pub mod se;
pub mod solver;
// Applications (paper Section 2).
pub mod apps;
// Configuration and array files, and the drivers that write result files (feature `io`).
#[cfg(feature = "io")]
pub mod config;
#[cfg(feature = "io")]
pub mod experiments;
#[cfg(feature = "io")]
pub mod io;
#[cfg(feature = "io")]
pub mod predict;
#[cfg(feature = "io")]
pub mod run;

pub use error::{Error, Result};
pub use rng::rng_from_seed;
pub use rows::{matmul_into, stream_sum, use_deterministic_parallelism};

/// The commonly used items.
pub mod prelude {
    pub use crate::denoise::{
        standard_normal, Activation, ActivationLayer, AwgnOutput, BernoulliGaussianPrior,
        Estimator, GaussianPrior, HessianKind, LinearLayer, MmseMethod, Rng, TwoLayerEstimator,
        TwoLayerOutput,
    };
    pub use crate::denoise::{GroupLassoPrior, MismatchedPrior};
    pub use crate::error::{Error, Result};
    pub use crate::factor::{
        Factor, InputPrior, Layer, LayerDenoiser, LayerKind, LayerSampler, LayerSe, LayerShape,
        OutputChannel, OutputDenoiser, OutputLaw, OutputSe, OutputShape, PriorDenoiser,
        PriorSampler, PriorSe,
    };
    pub use crate::message::{Belief, Message, MessagePolicy};
    pub use crate::network::Network;
    pub use crate::network::SeNetwork;
    pub use crate::rng_from_seed;
    pub use crate::solver::{Control, Solution, Solver, SolverConfig, State};
    pub use crate::spd::{DMat, Spd};
}

/// The README's Rust examples, compiled as doctests (`no_run`) so that they stay true to the API.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;
