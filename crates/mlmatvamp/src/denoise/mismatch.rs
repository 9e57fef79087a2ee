//! Mismatched estimation: the data are drawn from one prior, the estimator assumes another.
//!
//! The state evolution's prior step (spec §6.2 (P)) and the teacher ([`crate::network::Network::sample`])
//! draw rows with the prior's `sample`, while the algorithm uses its `denoise`. A
//! [`MismatchedPrior`] pairs a *data law* (used by `sample`) with an *estimator* (used by
//! `denoise`), so that one network description gives the teacher, the algorithm and the SE of
//! a mismatched estimator, e.g. the group lasso (MAP) on row-sparse Bernoulli–Gaussian data.

use super::Rng;
use crate::error::{Error, Result};
use crate::factor::{Factor, InputPrior, MonteCarloSe, PriorDenoiser, PriorSampler};
use crate::message::{Belief, Message};
use faer::Mat;
use std::sync::Arc;

/// A prior whose rows are drawn from `data` but whose denoiser `G⁺_0` is `estimator`'s.
///
/// * `denoise` = `estimator.denoise` (the algorithm never sees the data law);
/// * `sample` = `data.sample` (teacher and SE Monte Carlo draw the true rows from the data law);
/// * `se_forward` is the default Monte-Carlo step over this pair (spec §6.2 (P)), never an
///   inner prior's closed form (which would assume matched data).
#[derive(Clone)]
pub struct MismatchedPrior {
    data: Arc<dyn InputPrior>,
    estimator: Arc<dyn InputPrior>,
}

impl std::fmt::Debug for MismatchedPrior {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MismatchedPrior")
            .field("description", &self.describe())
            .finish()
    }
}

impl MismatchedPrior {
    /// Pairs a data law with an estimator; both must have the same `d`.
    pub fn new(data: Arc<dyn InputPrior>, estimator: Arc<dyn InputPrior>) -> Result<Self> {
        if data.dim() != estimator.dim() {
            return Err(Error::shape(
                format!("columns of the data law ({})", data.describe()),
                format!(
                    "d = {} (as the estimator {})",
                    estimator.dim(),
                    estimator.describe()
                ),
                data.dim().to_string(),
            ));
        }
        Ok(MismatchedPrior { data, estimator })
    }
    /// The law the rows are drawn from.
    pub fn data(&self) -> &Arc<dyn InputPrior> {
        &self.data
    }
    /// The prior the denoiser assumes.
    pub fn estimator(&self) -> &Arc<dyn InputPrior> {
        &self.estimator
    }
}

impl Factor for MismatchedPrior {
    fn describe(&self) -> String {
        format!(
            "estimator: {}; data: {}",
            self.estimator.describe(),
            self.data.describe()
        )
    }

    fn dim(&self) -> usize {
        self.estimator.dim()
    }
}

impl PriorDenoiser for MismatchedPrior {
    fn denoise(&self, incoming: &Message) -> Result<Belief> {
        self.estimator.denoise(incoming)
    }
}

impl PriorSampler for MismatchedPrior {
    fn sample(&self, n: usize, rng: &mut Rng) -> Result<Mat<f64>> {
        self.data.sample(n, rng)
    }
}

/// No closed form: the Monte-Carlo SE step over this factor's sampler and denoiser.
impl MonteCarloSe for MismatchedPrior {}
