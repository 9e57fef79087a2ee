//! The multi-layer network of eq. (1): a prior on `Z_0`, alternating linear (odd `l`) and
//! row-wise nonlinear (even `l`) layers, and an output channel holding `Y = Z_L`.
//!
//! One description serves three uses: [`Network::sample`] draws a ground truth and its
//! observation (teacher), [`crate::solver::Solver`] runs Algorithm 1 on it, and the state
//! evolution predicts the algorithm's error from it.

use crate::denoise::{InputPrior, Layer, LayerKind, OutputChannel, Rng};
use crate::error::{Error, Result};
use faer::Mat;
use std::sync::Arc;

/// A validated network `Z_0 → Z_1 → … → Z_{L−1} → Y` of even depth `L`.
#[derive(Clone)]
pub struct Network {
    prior: Arc<dyn InputPrior>,
    layers: Vec<Arc<dyn Layer>>,
    output: Arc<dyn OutputChannel>,
    rows: Vec<usize>,
    d: usize,
}

impl std::fmt::Debug for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Network")
            .field("description", &self.describe())
            .finish()
    }
}

impl Network {
    /// Builds a network from the prior (with `n_0` rows), the hidden layers `1 … L−1` in order and
    /// the output channel. Checks that the layers alternate linear / row-wise starting with a
    /// linear layer (so that `L` is even), and that all row counts and `d` agree.
    pub fn new(
        prior: Arc<dyn InputPrior>,
        n0: usize,
        layers: Vec<Arc<dyn Layer>>,
        output: Arc<dyn OutputChannel>,
    ) -> Result<Self> {
        let d = prior.dim();
        if n0 == 0 {
            return Err(Error::invalid("prior rows", "n_0 must be at least 1"));
        }
        if layers.len() % 2 == 0 {
            return Err(Error::invalid(
                "network",
                format!(
                    "the depth L = {} is odd; ML-Mat-VAMP needs alternating linear and row-wise layers \
                     (linear first), i.e. an odd number of hidden layers and an even L",
                    layers.len() + 1
                ),
            ));
        }
        let mut rows = vec![n0];
        for (i, layer) in layers.iter().enumerate() {
            let l = i + 1;
            let expected = if l % 2 == 1 {
                LayerKind::Linear
            } else {
                LayerKind::RowWise
            };
            if layer.kind() != expected {
                return Err(Error::invalid(
                    format!("layer {l}"),
                    format!(
                        "layer {l} must be {} (layers alternate: odd l linear, even l row-wise), got {}",
                        if expected == LayerKind::Linear { "linear" } else { "a row-wise nonlinear layer" },
                        layer.describe()
                    ),
                ));
            }
            if layer.dim() != d {
                return Err(Error::shape(
                    format!("columns of layer {l}"),
                    d.to_string(),
                    layer.dim().to_string(),
                ));
            }
            let n_in = *rows.last().expect("non-empty");
            if let Some(req) = layer.input_rows() {
                if req != n_in {
                    return Err(Error::shape(
                        format!("input rows of layer {l} ({})", layer.describe()),
                        format!("n_{} = {n_in}", l - 1),
                        req.to_string(),
                    ));
                }
            }
            rows.push(layer.output_rows(n_in));
        }
        let n_last = *rows.last().expect("non-empty");
        if output.dim() != d {
            return Err(Error::shape(
                "columns of the output's Z_{L-1}",
                d.to_string(),
                output.dim().to_string(),
            ));
        }
        if output.rows() != n_last {
            return Err(Error::shape(
                "rows of the output observation",
                format!("n_{{L-1}} = {n_last}"),
                output.rows().to_string(),
            ));
        }
        Ok(Network {
            prior,
            layers,
            output,
            rows,
            d,
        })
    }

    /// The depth `L` (number of variables `Z_0 … Z_{L−1}`).
    pub fn depth(&self) -> usize {
        self.layers.len() + 1
    }
    /// The column count `d`.
    pub fn dim(&self) -> usize {
        self.d
    }
    /// The row counts `n_0 … n_{L−1}`.
    pub fn rows(&self) -> &[usize] {
        &self.rows
    }
    /// The prior.
    pub fn prior(&self) -> &Arc<dyn InputPrior> {
        &self.prior
    }
    /// Hidden layer `l` (1-based, `1 ≤ l ≤ L−1`).
    pub fn layer(&self, l: usize) -> &Arc<dyn Layer> {
        &self.layers[l - 1]
    }
    /// All hidden layers in order.
    pub fn layers(&self) -> &[Arc<dyn Layer>] {
        &self.layers
    }
    /// The output channel.
    pub fn output(&self) -> &Arc<dyn OutputChannel> {
        &self.output
    }
    /// A multi-line description.
    pub fn describe(&self) -> String {
        let mut s = format!(
            "Z_0: {} x {}, {}",
            self.rows[0],
            self.d,
            self.prior.describe()
        );
        for (i, l) in self.layers.iter().enumerate() {
            s += &format!(
                "\nZ_{}: {} x {}, {}",
                i + 1,
                self.rows[i + 1],
                self.d,
                l.describe()
            );
        }
        s += &format!("\nY: {}", self.output.describe());
        s
    }

    /// The same network with another output channel (e.g. a new observation).
    pub fn with_output(&self, output: Arc<dyn OutputChannel>) -> Result<Self> {
        Network::new(
            self.prior.clone(),
            self.rows[0],
            self.layers.clone(),
            output,
        )
    }

    /// Teacher: draws a ground truth `Z_0 … Z_{L−1}` from the model (eq. 1) and returns it with
    /// the network whose output holds the corresponding fresh observation `Y`.
    pub fn sample(&self, rng: &mut Rng) -> Result<(Vec<Mat<f64>>, Network)> {
        let mut truth = vec![self.prior.sample(self.rows[0], rng)?];
        for layer in &self.layers {
            let z = layer.sample(truth.last().expect("non-empty").as_ref(), rng)?;
            truth.push(z);
        }
        let output = self
            .output
            .resample(truth.last().expect("non-empty").as_ref(), rng)?;
        let net = self.with_output(Arc::from(output))?;
        Ok((truth, net))
    }
}
