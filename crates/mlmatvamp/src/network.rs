//! The multi-layer network of eq. (1): a prior on `Z_0`, alternating linear (odd `l`) and
//! row-wise nonlinear (even `l`) layers, and an output channel holding `Y = Z_L`.
//!
//! One description serves three uses: [`Network::sample`] draws a ground truth and its
//! observation (teacher), [`crate::solver::Solver`] runs Algorithm 1 on it, and the state
//! evolution ([`crate::se`]) predicts the algorithm's error from it.
//!
//! The state evolution needs less of each factor than the algorithm does (only its SE step,
//! [`crate::factor`]), so it runs on an [`SeNetwork`]: every [`Network`] is one
//! ([`Network::se_network`]), and so is a chain of factors that exist only for the SE (a linear
//! layer known by its spectral law, an output known by its mask law).
//!
//! Both share the [`Chain`]: the row counts `n_0 … n_{L−1}`, `d`, and the names of the factors
//! that error messages and histories use.

use crate::error::{Error, Result};
use crate::factor::{
    InputPrior, Layer, LayerKind, LayerSe, LayerShape, OutputChannel, OutputSe, OutputShape,
    PriorSe,
};
use crate::rng::Rng;
use faer::Mat;
use std::sync::Arc;

/// The shape of a validated chain `Z_0 → … → Z_{L−1} → Y` and the names of its factors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chain {
    rows: Vec<usize>,
    d: usize,
    prior: String,
    layers: Vec<String>,
    output: String,
}

impl Chain {
    /// Validates a chain: the layers alternate linear / row-wise starting with a linear layer
    /// (so that `L` is even), and every row count and `d` agree.
    pub(crate) fn new(
        prior_dim: usize,
        prior: String,
        n0: usize,
        layers: &[&dyn LayerShape],
        output: &dyn OutputShape,
    ) -> Result<Self> {
        let d = prior_dim;
        if d == 0 {
            return Err(Error::invalid("prior", "d must be at least 1"));
        }
        if n0 == 0 {
            return Err(Error::invalid("prior rows", "n_0 must be at least 1"));
        }
        if layers.len().is_multiple_of(2) {
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
            let n_in = rows[i];
            if let Some(req) = layer.input_rows() {
                if req != n_in {
                    return Err(Error::shape(
                        format!("input rows of layer {l} ({})", layer.describe()),
                        format!("n_{} = {n_in}", l - 1),
                        req.to_string(),
                    ));
                }
            }
            let n_out = layer.output_rows(n_in);
            if n_out == 0 {
                return Err(Error::invalid(
                    format!("layer {l}"),
                    "a layer must have at least one output row",
                ));
            }
            rows.push(n_out);
        }
        let n_last = rows[rows.len() - 1];
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
        Ok(Chain {
            rows,
            d,
            prior,
            layers: layers.iter().map(|l| l.describe()).collect(),
            output: output.describe(),
        })
    }

    /// The depth `L` (number of variables `Z_0 … Z_{L−1}`).
    pub fn depth(&self) -> usize {
        self.rows.len()
    }
    /// The column count `d`.
    pub fn dim(&self) -> usize {
        self.d
    }
    /// The row counts `n_0 … n_{L−1}`.
    pub fn rows(&self) -> &[usize] {
        &self.rows
    }
    /// A multi-line description, one line per variable and one for the output.
    pub fn describe(&self) -> String {
        let mut s = format!("Z_0: {} x {}, {}", self.rows[0], self.d, self.prior);
        for (i, l) in self.layers.iter().enumerate() {
            s += &format!("\nZ_{}: {} x {}, {}", i + 1, self.rows[i + 1], self.d, l);
        }
        s += &format!("\nY: {}", self.output);
        s
    }
    /// The description of the output channel.
    pub fn output_description(&self) -> &str {
        &self.output
    }
    /// Where a forward output about `Z_l` comes from (for error messages and histories):
    /// the prior for `l = 0`, else layer `l`. `l` past the last variable names the last one.
    pub fn location_forward(&self, l: usize) -> String {
        match l {
            0 => format!("forward message on Z_0 out of the prior ({})", self.prior),
            l => {
                let l = l.min(self.layers.len());
                format!(
                    "forward message on Z_{l} out of layer {l} ({})",
                    self.layers[l - 1]
                )
            }
        }
    }
    /// Where a backward output about `Z_l` comes from: the output channel for `l = L−1`, else
    /// layer `l+1`. `l` past the last variable names the output.
    pub fn location_backward(&self, l: usize) -> String {
        if l + 1 >= self.depth() {
            format!(
                "backward message on Z_{} out of the output ({})",
                self.depth() - 1,
                self.output
            )
        } else {
            format!(
                "backward message on Z_{l} out of layer {} ({})",
                l + 1,
                self.layers[l]
            )
        }
    }
    /// Checks that `l` names a hidden layer (`1 ≤ l ≤ L−1`).
    fn check_layer(&self, l: usize) -> Result<()> {
        if l == 0 || l >= self.depth() {
            return Err(Error::invalid(
                "layer index",
                format!(
                    "hidden layers are numbered 1 … {} (L = {}), got {l}",
                    self.depth() - 1,
                    self.depth()
                ),
            ));
        }
        Ok(())
    }
}

/// A validated network `Z_0 → Z_1 → … → Z_{L−1} → Y` of even depth `L`, each factor with every
/// capability (denoiser, sampler, SE step).
#[derive(Clone)]
pub struct Network {
    prior: Arc<dyn InputPrior>,
    layers: Vec<Arc<dyn Layer>>,
    output: Arc<dyn OutputChannel>,
    /// The same factors through their SE steps (shares the [`Chain`]).
    se: SeNetwork,
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
        let se = SeNetwork::new(
            prior.clone(),
            n0,
            layers
                .iter()
                .map(|l| l.clone() as Arc<dyn LayerSe>)
                .collect(),
            output.clone(),
        )?;
        Ok(Network {
            prior,
            layers,
            output,
            se,
        })
    }

    /// The shape and factor names.
    pub fn chain(&self) -> &Chain {
        &self.se.chain
    }
    /// The depth `L` (number of variables `Z_0 … Z_{L−1}`).
    pub fn depth(&self) -> usize {
        self.chain().depth()
    }
    /// The column count `d`.
    pub fn dim(&self) -> usize {
        self.chain().dim()
    }
    /// The row counts `n_0 … n_{L−1}`.
    pub fn rows(&self) -> &[usize] {
        self.chain().rows()
    }
    /// The prior.
    pub fn prior(&self) -> &Arc<dyn InputPrior> {
        &self.prior
    }
    /// Hidden layer `l` (1-based, `1 ≤ l ≤ L−1`); any other `l` is an error.
    pub fn layer(&self, l: usize) -> Result<&Arc<dyn Layer>> {
        self.chain().check_layer(l)?;
        Ok(&self.layers[l - 1])
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
        self.chain().describe()
    }

    /// The same network with another output channel (e.g. a new observation).
    pub fn with_output(&self, output: Arc<dyn OutputChannel>) -> Result<Self> {
        Network::new(
            self.prior.clone(),
            self.rows()[0],
            self.layers.clone(),
            output,
        )
    }

    /// The network as the state evolution sees it (the same factors, through their SE steps).
    pub fn se_network(&self) -> &SeNetwork {
        &self.se
    }

    /// Teacher: draws a ground truth `Z_0 … Z_{L−1}` from the model (eq. 1) and returns it with
    /// the network whose output holds the corresponding fresh observation `Y`.
    pub fn sample(&self, rng: &mut Rng) -> Result<(Vec<Mat<f64>>, Network)> {
        let mut truth = vec![self.prior.sample(self.rows()[0], rng)?];
        for layer in &self.layers {
            let z = layer.sample(truth[truth.len() - 1].as_ref(), rng)?;
            truth.push(z);
        }
        let output = self.output.resample(truth[truth.len() - 1].as_ref(), rng)?;
        let net = self.with_output(Arc::from(output))?;
        Ok((truth, net))
    }
}

/// A validated chain of factors as the state evolution sees it: each needs only its SE step
/// ([`PriorSe`], [`LayerSe`], [`OutputSe`]).
#[derive(Clone)]
pub struct SeNetwork {
    prior: Arc<dyn PriorSe>,
    layers: Vec<Arc<dyn LayerSe>>,
    output: Arc<dyn OutputSe>,
    chain: Chain,
}

impl std::fmt::Debug for SeNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeNetwork")
            .field("description", &self.describe())
            .finish()
    }
}

impl SeNetwork {
    /// Builds and validates an SE chain (the same checks as [`Network::new`]).
    pub fn new(
        prior: Arc<dyn PriorSe>,
        n0: usize,
        layers: Vec<Arc<dyn LayerSe>>,
        output: Arc<dyn OutputSe>,
    ) -> Result<Self> {
        let shapes: Vec<&dyn LayerShape> = layers.iter().map(|l| &**l as &dyn LayerShape).collect();
        let chain = Chain::new(prior.dim(), prior.describe(), n0, &shapes, &*output)?;
        Ok(SeNetwork {
            prior,
            layers,
            output,
            chain,
        })
    }
    /// The shape and factor names.
    pub fn chain(&self) -> &Chain {
        &self.chain
    }
    /// The depth `L`.
    pub fn depth(&self) -> usize {
        self.chain.depth()
    }
    /// The column count `d`.
    pub fn dim(&self) -> usize {
        self.chain.dim()
    }
    /// The row counts `n_0 … n_{L−1}`.
    pub fn rows(&self) -> &[usize] {
        self.chain.rows()
    }
    /// A multi-line description.
    pub fn describe(&self) -> String {
        self.chain.describe()
    }
    /// The prior's SE step.
    pub fn prior(&self) -> &Arc<dyn PriorSe> {
        &self.prior
    }
    /// Hidden layer `l` (1-based, `1 ≤ l ≤ L−1`); any other `l` is an error.
    pub fn layer(&self, l: usize) -> Result<&Arc<dyn LayerSe>> {
        self.chain.check_layer(l)?;
        Ok(&self.layers[l - 1])
    }
    /// All hidden layers in order.
    pub fn layers(&self) -> &[Arc<dyn LayerSe>] {
        &self.layers
    }
    /// The output's SE step.
    pub fn output(&self) -> &Arc<dyn OutputSe> {
        &self.output
    }
}

impl AsRef<SeNetwork> for Network {
    fn as_ref(&self) -> &SeNetwork {
        &self.se
    }
}

impl AsRef<SeNetwork> for SeNetwork {
    fn as_ref(&self) -> &SeNetwork {
        self
    }
}
