//! The ADAM-MAP baseline of Figure 2 (paper Section 5, spec §7.3), written directly on plain
//! slices and `faer` (no ML framework).
//!
//! The reference trains a Keras model `Dense(d, σ, no bias, l2(reg)) → Dense(nout, linear, no
//! bias)` with the output layer frozen at the true `F_2`. This module reproduces it:
//!
//! * model `ŷ = σ(x F_1) F_2`, only `F_1` is trained;
//! * mini-batch loss (Keras `loss='mse'` plus the kernel regulariser)
//!   `L_B(F_1) = (1/(|B|·nout)) Σ_{i∈B} ‖y_i − ŷ_i‖² + reg·‖F_1‖²_F` — Keras' `mse` averages
//!   over the outputs *and* the batch, so for `nout > 1` the data term carries `1/nout`;
//! * Adam with Keras' defaults and Keras' update form (see [`AdamConfig`]), batches of 32,
//!   100 epochs, the training set reshuffled every epoch (seeded);
//! * after every epoch, the normalized test MSE `mean((ŷ − y)²)/yvar` on the held-out set
//!   (Keras' `val_mse / yvar`, spec §7.3).

use super::two_layer::{normalized_test_mse, TwoLayerTrial};
use crate::denoise::{Activation, Rng};
use crate::error::{Error, Result};
use crate::rows::{check_finite, check_shape, shape_str};
use faer::{Mat, MatRef};
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

/// The L2 weight `reg` on `‖F_1‖²_F` in the loss (spec §7.3).
///
/// The MAP problem ML-Mat-VAMP solves (entries of `F_1` a priori `N(0, w1var)`, Gaussian output
/// noise of variance `yvar`, eq. 9) minimises
/// `‖Y − σ(X F_1)F_2‖²_F/(2 yvar) + ‖F_1‖²_F/(2 w1var)`. Multiplying by
/// `2 yvar/(ntr·nout)` gives the per-entry mean loss that Keras minimises,
/// `(1/(ntr·nout))‖Y − Ŷ‖²_F + reg‖F_1‖²_F` with `reg = yvar/(w1var·ntr·nout)` ([`Regularization::Map`]);
/// a mini-batch loss is an unbiased estimate of it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Regularization {
    /// The reference protocol (`twolayer.py`): `reg = yvar / w1var / nin / d`. This is exactly
    /// the MAP weight only when `ntr·nout = nin·d` (400 for the Figure-2 sizes); for larger
    /// `ntr` it over-regularises relative to MAP, for smaller `ntr` it under-regularises.
    #[default]
    Reference,
    /// The exact MAP weight `reg = yvar/(w1var·ntr·nout)` (derivation on the type).
    Map,
    /// No regularisation (maximum likelihood).
    None,
    /// A given weight.
    Fixed {
        /// The weight `reg ≥ 0`.
        weight: f64,
    },
}

impl Regularization {
    /// The weight `reg` for a trial (uses its `yvar`, `w1var` and sizes).
    pub fn weight(&self, trial: &TwoLayerTrial) -> Result<f64> {
        let c = &trial.config;
        let (ntr, nout) = (trial.x_train.nrows(), trial.y_train.ncols());
        let reg = match *self {
            Regularization::Reference => trial.yvar / trial.w1var / c.nin as f64 / c.d as f64,
            Regularization::Map => trial.yvar / (trial.w1var * ntr as f64 * nout as f64),
            Regularization::None => 0.0,
            Regularization::Fixed { weight } => weight,
        };
        if !(reg.is_finite() && reg >= 0.0) {
            return Err(Error::invalid(
                "ADAM regularisation",
                format!(
                    "the weight must be finite and non-negative, got {reg} (yvar = {}, w1var = {})",
                    trial.yvar, trial.w1var
                ),
            ));
        }
        Ok(reg)
    }
}

/// ADAM settings. Defaults are the reference's (spec §7.3): `lr = 0.01`, Keras' `β₁ = 0.9`,
/// `β₂ = 0.999`, `ε = 1e-7`, batch 32, 100 epochs, [`Regularization::Reference`].
///
/// The update is Keras'/TensorFlow's form of Adam, with `ε` added to `√v` before bias
/// correction of the step size: at step `t`,
/// `m ← β₁m + (1−β₁)g`, `v ← β₂v + (1−β₂)g²`, `α_t = lr·√(1−β₂ᵗ)/(1−β₁ᵗ)`,
/// `F_1 ← F_1 − α_t m/(√v + ε)`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdamConfig {
    /// Learning rate `lr`.
    pub learning_rate: f64,
    /// First-moment decay `β₁`.
    pub beta1: f64,
    /// Second-moment decay `β₂`.
    pub beta2: f64,
    /// `ε`.
    pub epsilon: f64,
    /// Mini-batch size (the last batch of an epoch holds the remainder).
    pub batch_size: usize,
    /// Number of passes over the training set.
    pub epochs: usize,
    /// The L2 weight on `F_1`.
    pub regularization: Regularization,
}

impl Default for AdamConfig {
    fn default() -> Self {
        AdamConfig {
            learning_rate: 0.01,
            beta1: 0.9,
            beta2: 0.999,
            epsilon: 1e-7,
            batch_size: 32,
            epochs: 100,
            regularization: Regularization::Reference,
        }
    }
}

/// The result of [`AdamConfig::fit`].
#[derive(Clone, Debug)]
pub struct AdamFit {
    /// The final `F̂_1` (`nin x d`).
    pub f1: Mat<f64>,
    /// Per epoch: the sample-weighted mean of the mini-batch losses `L_B` seen during the epoch
    /// (regularisation included), as Keras reports `loss`.
    pub train_loss: Vec<f64>,
}

/// The result of [`AdamConfig::train`] on a two-layer trial.
#[derive(Clone, Debug)]
pub struct AdamResult {
    /// The final `F̂_1` (`nin x d`).
    pub f1: Mat<f64>,
    /// The regularisation weight that was used.
    pub reg: f64,
    /// Normalized test MSE of the initial weights.
    pub initial_test_mse: f64,
    /// Normalized test MSE after each epoch (`val_mse/yvar`); the last entry is the Figure-2
    /// value.
    pub test_mse: Vec<f64>,
    /// Per-epoch training loss (see [`AdamFit::train_loss`]).
    pub train_loss: Vec<f64>,
}

/// The Adam update (Kingma & Ba, in the Keras/TensorFlow form with the bias correction folded
/// into the step size): per step `t`, `m ← β₁m + (1−β₁)g`, `v ← β₂v + (1−β₂)g²`,
/// `α_t = lr·√(1−β₂ᵗ)/(1−β₁ᵗ)` and `w ← w − α_t m/(√v + ε)`. Shared by the two-layer baseline
/// and the latent-code baseline of [`super::inpaint`].
#[derive(Clone, Debug)]
pub struct AdamStep {
    learning_rate: f64,
    beta1: f64,
    beta2: f64,
    epsilon: f64,
    m: Vec<f64>,
    v: Vec<f64>,
    beta1_t: f64,
    beta2_t: f64,
}

impl AdamStep {
    /// An optimiser for `p` parameters; checks `lr > 0`, `ε > 0` (finite) and `β₁, β₂ ∈ [0, 1)`.
    pub fn new(p: usize, learning_rate: f64, beta1: f64, beta2: f64, epsilon: f64) -> Result<Self> {
        for (name, v) in [("learning_rate", learning_rate), ("epsilon", epsilon)] {
            if !(v.is_finite() && v > 0.0) {
                return Err(Error::invalid(
                    name,
                    format!("must be positive and finite, got {v}"),
                ));
            }
        }
        for (name, b) in [("beta1", beta1), ("beta2", beta2)] {
            if !(0.0..1.0).contains(&b) {
                return Err(Error::invalid(name, format!("must be in [0, 1), got {b}")));
            }
        }
        Ok(AdamStep {
            learning_rate,
            beta1,
            beta2,
            epsilon,
            m: vec![0.0; p],
            v: vec![0.0; p],
            beta1_t: 1.0,
            beta2_t: 1.0,
        })
    }

    /// One step on the parameters `w` with the gradient `g` (both of length `p`); an error if
    /// a length differs.
    pub fn step(&mut self, w: &mut [f64], g: &[f64]) -> Result<()> {
        if w.len() != self.m.len() || g.len() != self.m.len() {
            return Err(Error::shape(
                "Adam parameters and gradient",
                format!("length {}", self.m.len()),
                format!("{} and {}", w.len(), g.len()),
            ));
        }
        let (b1, b2, eps) = (self.beta1, self.beta2, self.epsilon);
        self.beta1_t *= b1;
        self.beta2_t *= b2;
        let alpha = self.learning_rate * (1.0 - self.beta2_t).sqrt() / (1.0 - self.beta1_t);
        for i in 0..w.len() {
            self.m[i] = b1 * self.m[i] + (1.0 - b1) * g[i];
            self.v[i] = b2 * self.v[i] + (1.0 - b2) * g[i] * g[i];
            w[i] -= alpha * self.m[i] / (self.v[i].sqrt() + eps);
        }
        Ok(())
    }
}

impl AdamConfig {
    /// Checks the option values.
    pub fn validate(&self) -> Result<()> {
        AdamStep::new(0, self.learning_rate, self.beta1, self.beta2, self.epsilon)?;
        if self.batch_size == 0 {
            return Err(Error::invalid("batch_size", "must be at least 1"));
        }
        if let Regularization::Fixed { weight } = self.regularization {
            if !(weight.is_finite() && weight >= 0.0) {
                return Err(Error::invalid(
                    "regularization weight",
                    format!("must be finite and non-negative, got {weight}"),
                ));
            }
        }
        Ok(())
    }

    /// Trains `F_1` on a trial's training set from `f1_init` (`nin x d`, e.g.
    /// [`super::two_layer::InitialEstimate::f1`]), with `F_2` frozen at the truth, recording the
    /// normalized test MSE on the trial's test set after every epoch. `rng` drives the
    /// per-epoch shuffles.
    pub fn train(
        &self,
        trial: &TwoLayerTrial,
        f1_init: MatRef<'_, f64>,
        rng: &mut Rng,
    ) -> Result<AdamResult> {
        let reg = self.regularization.weight(trial)?;
        let act = trial.activation();
        let initial_test_mse = trial.test_mse(f1_init)?;
        let mut test_mse = Vec::with_capacity(self.epochs);
        let fit = self.fit(
            trial.x_train.as_ref(),
            trial.y_train.as_ref(),
            trial.f2.as_ref(),
            act,
            reg,
            f1_init,
            rng,
            |_, f1| {
                test_mse.push(normalized_test_mse(
                    trial.x_test.as_ref(),
                    trial.y_test.as_ref(),
                    f1,
                    trial.f2.as_ref(),
                    act,
                    trial.yvar,
                )?);
                Ok(())
            },
        )?;
        Ok(AdamResult {
            f1: fit.f1,
            reg,
            initial_test_mse,
            test_mse,
            train_loss: fit.train_loss,
        })
    }

    /// Minimises the mini-batch loss `L_B` (module docs) over `F_1` by Adam, from `f1_init`.
    ///
    /// `x` is `n x nin`, `y` is `n x nout`, `f2` is `d x nout` (frozen), `reg ≥ 0` the L2 weight.
    /// Each epoch visits a fresh random permutation of the `n` samples (drawn from `rng`) in
    /// batches of `batch_size`; after each epoch `on_epoch(epoch, F_1)` is called (0-based).
    #[allow(clippy::too_many_arguments)]
    pub fn fit<F>(
        &self,
        x: MatRef<'_, f64>,
        y: MatRef<'_, f64>,
        f2: MatRef<'_, f64>,
        activation: Activation,
        reg: f64,
        f1_init: MatRef<'_, f64>,
        rng: &mut Rng,
        mut on_epoch: F,
    ) -> Result<AdamFit>
    where
        F: FnMut(usize, MatRef<'_, f64>) -> Result<()>,
    {
        self.validate()?;
        check_reg(reg)?;
        let data = Batches::new(x, y, f2, f1_init, activation, reg)?;
        let (nin, d) = (data.nin, data.d);
        let mut f1: Vec<f64> = (0..d)
            .flat_map(|j| (0..nin).map(move |k| (j, k)))
            .map(|(j, k)| f1_init[(k, j)])
            .collect();
        let p = f1.len();
        let mut g = vec![0.0; p];
        let mut adam = AdamStep::new(p, self.learning_rate, self.beta1, self.beta2, self.epsilon)?;
        let mut order: Vec<usize> = (0..data.n).collect();
        let mut train_loss = Vec::with_capacity(self.epochs);
        for epoch in 0..self.epochs {
            order.shuffle(rng);
            let mut epoch_loss = 0.0;
            for batch in order.chunks(self.batch_size) {
                let loss = data.loss_grad(batch, &f1, &mut g);
                if !loss.is_finite() || g.iter().any(|x| !x.is_finite()) {
                    return Err(Error::Diverged {
                        location: "ADAM baseline".into(),
                        iteration: epoch,
                        detail: format!(
                            "the mini-batch loss or its gradient is not finite (loss = {loss})"
                        ),
                    });
                }
                epoch_loss += loss * batch.len() as f64;
                adam.step(&mut f1, &g)?;
            }
            train_loss.push(epoch_loss / data.n as f64);
            on_epoch(epoch, MatRef::from_column_major_slice(&f1, nin, d))?;
        }
        Ok(AdamFit {
            f1: MatRef::from_column_major_slice(&f1, nin, d).to_owned(),
            train_loss,
        })
    }
}

/// The mini-batch loss `L_B` of the module docs over **all** rows of `x`, `y`, and its gradient
/// with respect to `F_1` (`nin x d`):
///
/// with `E = σ(X F_1) F_2 − Y` (`n x nout`), `c = 2/(n·nout)`,
/// `∂L/∂F_1 = X^T ((c E F_2^T) ⊙ σ'(X F_1)) + 2 reg F_1`.
///
/// This is the same routine the optimiser uses on each batch (exposed for gradient checks).
pub fn loss_and_gradient(
    x: MatRef<'_, f64>,
    y: MatRef<'_, f64>,
    f1: MatRef<'_, f64>,
    f2: MatRef<'_, f64>,
    activation: Activation,
    reg: f64,
) -> Result<(f64, Mat<f64>)> {
    check_reg(reg)?;
    let data = Batches::new(x, y, f2, f1, activation, reg)?;
    let (nin, d) = (data.nin, data.d);
    let w: Vec<f64> = (0..d)
        .flat_map(|j| (0..nin).map(move |k| f1[(k, j)]))
        .collect();
    let mut g = vec![0.0; w.len()];
    let all: Vec<usize> = (0..data.n).collect();
    let loss = data.loss_grad(&all, &w, &mut g);
    Ok((loss, MatRef::from_column_major_slice(&g, nin, d).to_owned()))
}

fn check_reg(reg: f64) -> Result<()> {
    if !(reg.is_finite() && reg >= 0.0) {
        return Err(Error::invalid(
            "regularisation weight",
            format!("must be finite and non-negative, got {reg}"),
        ));
    }
    Ok(())
}

/// The training data laid out for mini-batch passes: sample `i`'s input is the contiguous
/// slice `xt[i·nin .. (i+1)·nin]`, its output `y[i·nout .. (i+1)·nout]`.
struct Batches {
    xt: Vec<f64>,
    y: Vec<f64>,
    /// `F_2` column-major (`d x nout`).
    f2: Vec<f64>,
    n: usize,
    nin: usize,
    d: usize,
    nout: usize,
    activation: Activation,
    reg: f64,
}

impl Batches {
    fn new(
        x: MatRef<'_, f64>,
        y: MatRef<'_, f64>,
        f2: MatRef<'_, f64>,
        f1: MatRef<'_, f64>,
        activation: Activation,
        reg: f64,
    ) -> Result<Self> {
        let (n, nin) = (x.nrows(), x.ncols());
        let (d, nout) = (f2.nrows(), f2.ncols());
        if n == 0 || nin == 0 || d == 0 || nout == 0 {
            return Err(Error::invalid(
                "ADAM inputs",
                format!(
                    "X ({}) and F_2 ({}) must be non-empty",
                    shape_str(x),
                    shape_str(f2)
                ),
            ));
        }
        check_shape("training outputs Y", y, n, nout)?;
        check_shape("F_1", f1, nin, d)?;
        check_finite("training inputs X", x)?;
        check_finite("training outputs Y", y)?;
        check_finite("F_2", f2)?;
        check_finite("F_1", f1)?;
        let xt = (0..n)
            .flat_map(|i| (0..nin).map(move |k| (i, k)))
            .map(|(i, k)| x[(i, k)])
            .collect();
        let yv = (0..n)
            .flat_map(|i| (0..nout).map(move |o| (i, o)))
            .map(|(i, o)| y[(i, o)])
            .collect();
        let f2v = (0..nout)
            .flat_map(|o| (0..d).map(move |j| (j, o)))
            .map(|(j, o)| f2[(j, o)])
            .collect();
        Ok(Batches {
            xt,
            y: yv,
            f2: f2v,
            n,
            nin,
            d,
            nout,
            activation,
            reg,
        })
    }

    /// `L_B` for the samples `batch` at `F_1 = f1` (column-major `nin x d`); writes `∂L_B/∂F_1`
    /// into `grad` (same layout).
    ///
    /// Per sample: the `d` products `x F_1[:, j]` in one sweep over `x` ([`dots`], each with the
    /// bits of [`dot`]), `σ` of the `d` values at once ([`Activation::eval_in_place`], the bits of
    /// [`Activation::eval`]), and `σ'` from those values ([`deriv_at`]), so for the sigmoid one
    /// exponential per unit instead of two. Compiled twice: for AVX2 (taken when the processor has it) and for
    /// the baseline; both are the same additions and multiplications, so the same bits.
    fn loss_grad(&self, batch: &[usize], f1: &[f64], grad: &mut [f64]) -> f64 {
        #[cfg(target_arch = "x86_64")]
        if crate::cpu::has_avx2_fma() {
            // SAFETY: the processor has AVX2 and FMA (checked just above).
            return unsafe { self.loss_grad_avx2(batch, f1, grad) };
        }
        self.loss_grad_body(batch, f1, grad)
    }

    /// [`Batches::loss_grad`] for AVX2 (wider vectors; no fused multiply-adds, as Rust does not
    /// contract `a * b + c`).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn loss_grad_avx2(&self, batch: &[usize], f1: &[f64], grad: &mut [f64]) -> f64 {
        self.loss_grad_body(batch, f1, grad)
    }

    #[inline(always)]
    fn loss_grad_body(&self, batch: &[usize], f1: &[f64], grad: &mut [f64]) -> f64 {
        let (nin, d, nout) = (self.nin, self.d, self.nout);
        let act = self.activation;
        // Data term scale: Keras' mse averages over the batch and the outputs.
        let c = 1.0 / (batch.len() * nout) as f64;
        grad.iter_mut().for_each(|g| *g = 0.0);
        let mut z = vec![0.0; d];
        let mut h = vec![0.0; d];
        let mut e = vec![0.0; nout];
        let mut sq = 0.0;
        for &i in batch {
            let x = &self.xt[i * nin..(i + 1) * nin];
            // z = x F_1, h = σ(z)
            dots(x, f1, &mut z);
            h.copy_from_slice(&z);
            act.eval_in_place(&mut h);
            // e = h F_2 − y
            let yi = &self.y[i * nout..(i + 1) * nout];
            for ((eo, yo), f2o) in e.iter_mut().zip(yi).zip(self.f2.chunks_exact(d)) {
                let yhat: f64 = h.iter().zip(f2o).map(|(a, b)| a * b).sum();
                *eo = yhat - yo;
                sq += *eo * *eo;
            }
            // δ_j = 2c (e F_2^T)_j σ'(z_j); ∂/∂F_1[:, j] += x δ_j
            for j in 0..d {
                let back: f64 = (0..nout).map(|o| e[o] * self.f2[o * d + j]).sum();
                let delta = 2.0 * c * back * deriv_at(act, z[j], h[j]);
                if delta != 0.0 {
                    let gcol = &mut grad[j * nin..(j + 1) * nin];
                    for (g, a) in gcol.iter_mut().zip(x) {
                        *g += delta * a;
                    }
                }
            }
        }
        // Keras l2(reg): + reg ‖F_1‖², gradient 2 reg F_1.
        let mut norm2 = 0.0;
        for (g, w) in grad.iter_mut().zip(f1) {
            norm2 += w * w;
            *g += 2.0 * self.reg * w;
        }
        c * sq + self.reg * norm2
    }
}

/// `σ'(v)` given `s = σ(v)` ([`Activation::eval`]): the bits of [`Activation::deriv`], which
/// computes `σ(v)` again for the sigmoid.
#[inline(always)]
fn deriv_at(act: Activation, v: f64, s: f64) -> f64 {
    match act {
        Activation::Sigmoid => s * (1.0 - s),
        _ => act.deriv(v),
    }
}

/// `z_j = x · F_1[:, j]` for every column `j` of the column-major `f1` (`x.len() x z.len()`),
/// each with the bits of [`dot`]: four columns at a time over one sweep of `x`, so that the
/// columns' sums run side by side instead of one latency-bound chain after another.
#[inline(always)]
fn dots(x: &[f64], f1: &[f64], z: &mut [f64]) {
    let nin = x.len();
    let mut cols = f1.chunks_exact(nin);
    let mut out = z.chunks_exact_mut(4);
    for zq in &mut out {
        let c: [&[f64]; 4] = std::array::from_fn(|_| cols.next().expect("a column per output"));
        let mut acc = [[0.0; 4]; 4];
        let body = nin - nin % 4;
        for k in (0..body).step_by(4) {
            let u = &x[k..k + 4];
            for (q, aq) in acc.iter_mut().enumerate() {
                let v = &c[q][k..k + 4];
                for l in 0..4 {
                    aq[l] += u[l] * v[l];
                }
            }
        }
        for (q, zq) in zq.iter_mut().enumerate() {
            let tail: f64 = x[body..]
                .iter()
                .zip(&c[q][body..])
                .map(|(a, b)| a * b)
                .sum();
            let a = acc[q];
            *zq = (a[0] + a[1]) + (a[2] + a[3]) + tail;
        }
    }
    for zj in out.into_remainder() {
        *zj = dot(x, cols.next().expect("a column per output"));
    }
}

/// `Σ_k a_k b_k` with four independent partial sums (so that the loop is not bound by the
/// latency of one floating-point add chain).
#[inline(always)]
fn dot(a: &[f64], b: &[f64]) -> f64 {
    let mut acc = [0.0; 4];
    let (ca, cb) = (a.chunks_exact(4), b.chunks_exact(4));
    let tail: f64 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (u, v) in ca.zip(cb) {
        for l in 0..4 {
            acc[l] += u[l] * v[l];
        }
    }
    (acc[0] + acc[1]) + (acc[2] + acc[3]) + tail
}

#[cfg(test)]
mod tests {
    use super::{dots, Activation, Batches};
    use crate::rng::{rng_from_seed, standard_normal};

    /// The loss and gradient as first written (one `dot` and two sigmoids per unit): the
    /// definition of their bits.
    fn loss_grad_reference(b: &Batches, batch: &[usize], f1: &[f64], grad: &mut [f64]) -> f64 {
        let (nin, d, nout) = (b.nin, b.d, b.nout);
        let act = b.activation;
        let c = 1.0 / (batch.len() * nout) as f64;
        grad.iter_mut().for_each(|g| *g = 0.0);
        let (mut z, mut h, mut e) = (vec![0.0; d], vec![0.0; d], vec![0.0; nout]);
        let mut sq = 0.0;
        for &i in batch {
            let x = &b.xt[i * nin..(i + 1) * nin];
            for j in 0..d {
                z[j] = super::dot(x, &f1[j * nin..(j + 1) * nin]);
                h[j] = act.eval(z[j]);
            }
            let yi = &b.y[i * nout..(i + 1) * nout];
            for ((eo, yo), f2o) in e.iter_mut().zip(yi).zip(b.f2.chunks_exact(d)) {
                let yhat: f64 = h.iter().zip(f2o).map(|(a, b)| a * b).sum();
                *eo = yhat - yo;
                sq += *eo * *eo;
            }
            for j in 0..d {
                let back: f64 = (0..nout).map(|o| e[o] * b.f2[o * d + j]).sum();
                let delta = 2.0 * c * back * act.deriv(z[j]);
                if delta != 0.0 {
                    for (g, a) in grad[j * nin..(j + 1) * nin].iter_mut().zip(x) {
                        *g += delta * a;
                    }
                }
            }
        }
        let mut norm2 = 0.0;
        for (g, w) in grad.iter_mut().zip(f1) {
            norm2 += w * w;
            *g += 2.0 * b.reg * w;
        }
        c * sq + b.reg * norm2
    }

    /// The batched loss and gradient have the bits of the one-unit-at-a-time definition, for
    /// every activation, widths with and without a remainder of four, and one or two outputs.
    #[test]
    fn loss_and_gradient_keep_the_bits_of_their_definition() {
        let mut rng = rng_from_seed(5);
        for act in [Activation::Sigmoid, Activation::Relu, Activation::Identity] {
            for (nin, d, nout) in [
                (7, 1, 1),
                (100, 4, 1),
                (9, 5, 2),
                (12, 8, 1),
                (3, 3, 2),
                (10, 6, 1),
                (11, 7, 2),
            ] {
                let n = 40;
                let x = standard_normal(n, nin, &mut rng);
                let y = standard_normal(n, nout, &mut rng);
                let f2 = standard_normal(d, nout, &mut rng);
                let f1 = standard_normal(nin, d, &mut rng);
                let b = Batches::new(x.as_ref(), y.as_ref(), f2.as_ref(), f1.as_ref(), act, 0.01)
                    .unwrap();
                let w: Vec<f64> = (0..nin * d).map(|e| f1[(e % nin, e / nin)]).collect();
                let batch: Vec<usize> = (0..n).rev().step_by(3).collect();
                let (mut g, mut g_ref) = (vec![0.0; nin * d], vec![0.0; nin * d]);
                let loss_ref = loss_grad_reference(&b, &batch, &w, &mut g_ref);
                // The dispatched build (AVX2 where the processor has it) and the baseline one.
                for baseline in [false, true] {
                    let loss = if baseline {
                        b.loss_grad_body(&batch, &w, &mut g)
                    } else {
                        b.loss_grad(&batch, &w, &mut g)
                    };
                    assert_eq!(
                        loss.to_bits(),
                        loss_ref.to_bits(),
                        "{act:?} {nin} {d} {nout}"
                    );
                    assert!(
                        g.iter()
                            .zip(&g_ref)
                            .all(|(a, b)| a.to_bits() == b.to_bits()),
                        "{act:?} {nin} {d} {nout}"
                    );
                }
                // Every column of `dots`, in the groups of four and the remainder.
                let x = &b.xt[..nin];
                let mut z = vec![0.0; d];
                dots(x, &w, &mut z);
                for (j, zj) in z.iter().enumerate() {
                    let want = super::dot(x, &w[j * nin..(j + 1) * nin]);
                    assert_eq!(zj.to_bits(), want.to_bits(), "column {j} of {d}");
                }
            }
        }
    }
}
