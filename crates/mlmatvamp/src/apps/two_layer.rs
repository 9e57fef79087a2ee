//! Learning the input layer of a two-layer network (paper Section 2.3 and Section 5).
//!
//! The model (eq. 7/9) is `Y = σ(X F_1) F_2 + Ξ` with `F_2` known; ML-Mat-VAMP sees it as the
//! two-layer inference network `Z_0 = F_1`, `W_1 = X`, `Z_1 = X F_1`, `Y = φ_2(Z_1, Ξ)`.
//! This module holds the application pieces around the solver:
//!
//! * [`TwoLayerConfig`] / [`TwoLayerTrial`] — one random trial of the Figure-2 experiment
//!   (spec §7.1);
//! * [`Init`] / [`InitialEstimate`] — the initial `F_1` estimate shared by ML-Mat-VAMP and ADAM,
//!   and ML-Mat-VAMP's first message about `Z_1` (spec §7.2, pitfall §8.1.10);
//! * the test error: on held-out samples ([`normalized_test_mse`]) and analytically from the
//!   `2d x 2d` covariance `K` of eq. (17) ([`test_covariance`], [`normalized_test_error`]),
//!   spec §7.4. The `K → error` map is public so that the state evolution can evaluate its
//!   predicted `K`.

use crate::denoise::{standard_normal, Activation, Rng};
use crate::error::{Error, Result};
use crate::message::Message;
use crate::rng_from_seed;
use crate::rows::{check_finite, check_shape, cross_moment, shape_str};
use crate::spd::{check_finite_dmat, max_abs, DMat, Spd};
use faer::{Mat, MatRef};
use nalgebra::SymmetricEigen;
use serde::{Deserialize, Serialize};
use std::sync::OnceLock;

// ---------------------------------------------------------------------------------------------
// Data generation (spec §7.1)
// ---------------------------------------------------------------------------------------------

/// The sizes and noise level of one two-layer learning problem (spec §7.1; paper Section 5).
///
/// Defaults: `nin = 100`, `d = 4`, `nout = 1`, `ntr = 1000`, `nts = 1000`, `snr_db = 10`,
/// sigmoid activation (the paper's Figure 2).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TwoLayerConfig {
    /// Number of inputs `N_in` (rows of `F_1`).
    pub nin: usize,
    /// Number of hidden units `d` (columns of `F_1`).
    pub d: usize,
    /// Number of outputs `N_out` (columns of `F_2` and `Y`).
    pub nout: usize,
    /// Number of training samples `N`.
    pub ntr: usize,
    /// Number of held-out test samples.
    pub nts: usize,
    /// Signal-to-noise ratio in dB: `yvar = mean(Y0²)·10^{−snr/10}`.
    pub snr_db: f64,
    /// The activation `σ`, used both to generate the data and by the estimators.
    pub activation: Activation,
}

impl Default for TwoLayerConfig {
    fn default() -> Self {
        TwoLayerConfig {
            nin: 100,
            d: 4,
            nout: 1,
            ntr: 1000,
            nts: 1000,
            snr_db: 10.0,
            activation: Activation::Sigmoid,
        }
    }
}

/// One trial of the two-layer experiment: the true weights, the data and the noise level.
///
/// Produced by [`TwoLayerConfig::sample`]. Matrices are `faer` matrices; rows are samples.
#[derive(Clone, Debug)]
pub struct TwoLayerTrial {
    /// The configuration the trial was drawn from.
    pub config: TwoLayerConfig,
    /// Training inputs `X_tr` (`ntr x nin`), entries `N(0, 1/nin)`.
    pub x_train: Mat<f64>,
    /// Training outputs `Y_tr` (`ntr x nout`).
    pub y_train: Mat<f64>,
    /// Test inputs `X_ts` (`nts x nin`).
    pub x_test: Mat<f64>,
    /// Test outputs `Y_ts` (`nts x nout`).
    pub y_test: Mat<f64>,
    /// True first-layer weights `F_1` (`nin x d`), entries `N(0, 1)`.
    pub f1: Mat<f64>,
    /// Known second-layer weights `F_2` (`d x nout`), entries `N(0, 1)`.
    pub f2: Mat<f64>,
    /// Output noise variance `yvar` (per output entry).
    pub yvar: f64,
    /// `w1var = mean(F_1²)`, the (oracle) prior variance of the entries of `F_1` used by both
    /// ML-Mat-VAMP's input estimator (spec §3.4, `ŵ`) and ADAM's regularisation (spec §7.3).
    pub w1var: f64,
}

impl TwoLayerConfig {
    /// Checks the sizes and the SNR.
    pub fn validate(&self) -> Result<()> {
        for (name, v) in [
            ("nin", self.nin),
            ("d", self.d),
            ("nout", self.nout),
            ("ntr", self.ntr),
            ("nts", self.nts),
        ] {
            if v == 0 {
                return Err(Error::invalid(name, "must be at least 1"));
            }
        }
        if !self.snr_db.is_finite() {
            return Err(Error::invalid(
                "snr_db",
                format!("must be finite, got {}", self.snr_db),
            ));
        }
        Ok(())
    }

    /// Draws one trial from `seed` (see [`TwoLayerConfig::sample_with`]).
    pub fn sample(&self, seed: u64) -> Result<TwoLayerTrial> {
        self.sample_with(&mut rng_from_seed(seed))
    }

    /// Draws one trial (spec §7.1, reference `twolayer.py`), in this order from `rng`:
    /// `F_1 ~ N(0,1)^{nin×d}`, `F_2 ~ N(0,1)^{d×nout}`, `X ~ N(0, 1/nin)^{(ntr+nts)×nin}`, then
    /// the noise. With `Y0 = σ(X F_1) F_2`,
    /// `yvar = mean(Y0²)·10^{−snr/10}` over **all** `ntr + nts` samples, and
    /// `Y = Y0 + N(0, yvar)`. The first `ntr` rows are the training set, the last `nts` the
    /// test set.
    pub fn sample_with(&self, rng: &mut Rng) -> Result<TwoLayerTrial> {
        self.validate()?;
        let (nin, d, nout) = (self.nin, self.d, self.nout);
        let n = self.ntr + self.nts;
        let f1 = standard_normal(nin, d, rng);
        let f2 = standard_normal(d, nout, rng);
        let x = standard_normal(n, nin, rng) * faer::Scale(1.0 / (nin as f64).sqrt());
        let y0 = predict(x.as_ref(), f1.as_ref(), f2.as_ref(), self.activation)?;
        let y0_power = mean_square(y0.as_ref());
        let yvar = y0_power * 10f64.powf(-self.snr_db / 10.0);
        if !(yvar.is_finite() && yvar > 0.0) {
            return Err(Error::Numerical {
                what: "two-layer data generation".into(),
                detail: format!(
                    "the noise variance yvar = mean(Y0²)·10^(−snr/10) = {yvar:e} is not positive and finite (mean(Y0²) = {y0_power:e})"
                ),
            });
        }
        let y = y0 + standard_normal(n, nout, rng) * faer::Scale(yvar.sqrt());
        let w1var = mean_square(f1.as_ref());
        Ok(TwoLayerTrial {
            config: self.clone(),
            x_train: x.subrows(0, self.ntr).to_owned(),
            y_train: y.subrows(0, self.ntr).to_owned(),
            x_test: x.subrows(self.ntr, self.nts).to_owned(),
            y_test: y.subrows(self.ntr, self.nts).to_owned(),
            f1,
            f2,
            yvar,
            w1var,
        })
    }
}

impl TwoLayerTrial {
    /// The activation `σ`.
    pub fn activation(&self) -> Activation {
        self.config.activation
    }

    /// Normalized test MSE of an estimate `F̂_1` on the held-out samples:
    /// `mean((σ(X_ts F̂_1) F_2 − Y_ts)²)/yvar` (spec §7.2 "metric", §7.4). See
    /// [`normalized_test_mse`].
    pub fn test_mse(&self, f1_hat: MatRef<'_, f64>) -> Result<f64> {
        normalized_test_mse(
            self.x_test.as_ref(),
            self.y_test.as_ref(),
            f1_hat,
            self.f2.as_ref(),
            self.activation(),
            self.yvar,
        )
    }

    /// The `2d x 2d` covariance `K` of eq. (17) between the true and the estimated
    /// pre-activations of a fresh input (see [`test_covariance`]).
    pub fn test_covariance(&self, f1_hat: MatRef<'_, f64>) -> Result<DMat> {
        test_covariance(self.f1.as_ref(), f1_hat)
    }

    /// The normalized test error of an estimate `F̂_1` computed analytically from `K`
    /// (eq. 17; see [`normalized_test_error`]).
    pub fn analytic_test_error(&self, f1_hat: MatRef<'_, f64>) -> Result<f64> {
        let k = self.test_covariance(f1_hat)?;
        normalized_test_error(&k, self.f2.as_ref(), self.activation(), self.yvar)
    }
}

/// `mean(A²)` over all entries.
fn mean_square(a: MatRef<'_, f64>) -> f64 {
    let n = (a.nrows() * a.ncols()).max(1) as f64;
    let mut s = 0.0;
    for j in 0..a.ncols() {
        for i in 0..a.nrows() {
            s += a[(i, j)] * a[(i, j)];
        }
    }
    s / n
}

/// The network output `σ(X F_1) F_2` (eq. 7 without noise), for `X` (`n x nin`), `F_1`
/// (`nin x d`) and `F_2` (`d x nout`).
pub fn predict(
    x: MatRef<'_, f64>,
    f1: MatRef<'_, f64>,
    f2: MatRef<'_, f64>,
    activation: Activation,
) -> Result<Mat<f64>> {
    let (nin, d) = (f1.nrows(), f1.ncols());
    check_shape("F_1 (second factor of X F_1)", f1, x.ncols(), d)?;
    if f2.nrows() != d {
        return Err(Error::shape("F_2", format!("{d} x nout"), shape_str(f2)));
    }
    if nin == 0 || d == 0 {
        return Err(Error::invalid(
            "F_1",
            format!("must be non-empty, got {}", shape_str(f1)),
        ));
    }
    if check_finite("F_1", f1).is_err() || check_finite("F_2", f2).is_err() {
        // The same error, in the same order, as checking X first.
        check_finite("inputs X", x)?;
        check_finite("F_1", f1)?;
        check_finite("F_2", f2)?;
    }
    // The engine's thin product (sequential on the calling thread for the test sets of Figure 2,
    // whatever faer's global parallelism: a fork per product cost more than the product).
    let mut h = crate::rows::matmul(x, f1);
    // With F_1 finite, a non-finite entry of X makes every entry of its row of X F_1 non-finite
    // (`±∞·0` is NaN), so X (`n x nin`, the large input) needs a check only then.
    let mut finite = true;
    for j in 0..d {
        match h.col_mut(j).try_as_col_major_mut() {
            Some(col) => {
                let col = col.as_slice_mut();
                finite &= col.iter().all(|v| v.is_finite());
                activation.eval_in_place(col);
            }
            None => {
                for v in h.col_mut(j).iter_mut() {
                    finite &= v.is_finite();
                    *v = activation.eval(*v);
                }
            }
        }
    }
    if !finite {
        check_finite("inputs X", x)?;
    }
    Ok(crate::rows::matmul(h.as_ref(), f2))
}

/// Normalized test MSE on held-out samples (spec §7.4, "via test samples"):
/// `mean_{i,o} ((σ(X F̂_1) F_2 − Y)_{io}²) / yvar`, the mean running over all `n x nout` entries
/// (as Keras' `mse`). Its optimal value is 1 (the noise variance) up to sampling error.
pub fn normalized_test_mse(
    x: MatRef<'_, f64>,
    y: MatRef<'_, f64>,
    f1_hat: MatRef<'_, f64>,
    f2: MatRef<'_, f64>,
    activation: Activation,
    yvar: f64,
) -> Result<f64> {
    check_yvar(yvar)?;
    let y_hat = predict(x, f1_hat, f2, activation)?;
    check_shape("test outputs Y", y, y_hat.nrows(), y_hat.ncols())?;
    check_finite("test outputs Y", y)?;
    let diff = &y_hat - y;
    Ok(mean_square(diff.as_ref()) / yvar)
}

fn check_yvar(yvar: f64) -> Result<()> {
    if !(yvar.is_finite() && yvar > 0.0) {
        return Err(Error::invalid(
            "yvar",
            format!("the noise variance must be positive and finite, got {yvar}"),
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Analytic test error, eq. (17) (spec §7.4)
// ---------------------------------------------------------------------------------------------

/// The covariance `K` of eq. (17): `K = (1/nin) Σ_k u_k^T u_k` with `u_k = [F_{1,k·}, F̂_{1,k·}]`
/// (`2d x 2d`). For a fresh input `x ~ N(0, I/nin)`, `(z, ẑ) = (x^T F_1, x^T F̂_1)` is Gaussian
/// with covariance `K`; the first `d` coordinates are the true pre-activations `z`.
pub fn test_covariance(f1: MatRef<'_, f64>, f1_hat: MatRef<'_, f64>) -> Result<DMat> {
    let (nin, d) = (f1.nrows(), f1.ncols());
    if nin == 0 || d == 0 {
        return Err(Error::invalid(
            "F_1",
            format!("must be non-empty, got {}", shape_str(f1)),
        ));
    }
    check_shape("F̂_1", f1_hat, nin, d)?;
    check_finite("F_1", f1)?;
    check_finite("F̂_1", f1_hat)?;
    let u = Mat::from_fn(nin, 2 * d, |i, j| {
        if j < d {
            f1[(i, j)]
        } else {
            f1_hat[(i, j - d)]
        }
    });
    // (1/nin) u^T u: entry (p, q) is computed from the same products as (q, p), so K is exactly
    // symmetric, and its blocks are bitwise equal when F̂_1 = F_1.
    Ok(cross_moment(u.as_ref(), u.as_ref()))
}

/// Second moments of the activations of a Gaussian vector: `S_pq = E[σ(w_p) σ(w_q)]` for
/// `w ~ N(0, K)` (any `m x m` covariance `K`; here `m = 2d`). Each entry is a bivariate
/// expectation with variances `a = K_pp`, `c = K_qq`, covariance `b = K_pq`,
/// `ρ = b/√(ac)` clamped to `[−1, 1]` (spec §7.4):
///
/// * identity: `E[xy] = b`;
/// * relu (arc-cosine kernel): `E[relu(x) relu(y)] = √(ac)/(2π)·(√(1−ρ²) + ρ(π − arccos ρ))`,
///   which gives `a/2` on the diagonal;
/// * sigmoid: 2-D Gauss–Hermite with 40 × 40 nodes while `max(a, c) ≤ 2`, and more nodes for
///   larger variances (up to 320 × 320, absolute error ≲ 1e-11 for variances ≤ 8); when
///   `|ρ| = 1` (the diagonal, or `F̂_1 = F_1`) the pair is one-dimensional and a 1-D rule with
///   twice the nodes (80 at unit scale) is used.
///
/// Zero variances (e.g. `F̂_1 = 0`) are allowed: the variable is then identically 0.
pub fn activation_moments(k: &DMat, activation: Activation) -> Result<DMat> {
    validate_covariance(k)?;
    let m = k.nrows();
    let mut s = DMat::zeros(m, m);
    for p in 0..m {
        for q in p..m {
            let v = pair_moment(activation, k[(p, p)], k[(p, q)], k[(q, q)]);
            s[(p, q)] = v;
            s[(q, p)] = v;
        }
    }
    Ok(s)
}

/// The excess test error per output, `E‖(σ(z) − σ(ẑ)) F_2‖² / nout` for `(z, ẑ) ~ N(0, K)`
/// (eq. 17 without the noise term). With `S` from [`activation_moments`], it is the quadratic
/// form `(1/nout) Σ_o Σ_{j,k} F_2jo F_2ko (S_{j,k} − S_{j,d+k} − S_{d+j,k} + S_{d+j,d+k})`.
/// Being a mean of squares it is `≥ 0`; quadrature round-off below zero is clamped to 0.
pub fn excess_test_error(k: &DMat, f2: MatRef<'_, f64>, activation: Activation) -> Result<f64> {
    let (d, nout) = (f2.nrows(), f2.ncols());
    if d == 0 || nout == 0 {
        return Err(Error::invalid(
            "F_2",
            format!("must be non-empty, got {}", shape_str(f2)),
        ));
    }
    check_finite("F_2", f2)?;
    if k.nrows() != 2 * d || k.ncols() != 2 * d {
        return Err(Error::shape(
            "test covariance K (eq. 17)",
            format!("{0} x {0} (2d, with d = rows of F_2)", 2 * d),
            format!("{} x {}", k.nrows(), k.ncols()),
        ));
    }
    let s = activation_moments(k, activation)?;
    let mut total = 0.0;
    for o in 0..nout {
        for j in 0..d {
            for l in 0..d {
                let c = s[(j, l)] - s[(j, d + l)] - s[(d + j, l)] + s[(d + j, d + l)];
                total += f2[(j, o)] * f2[(l, o)] * c;
            }
        }
    }
    Ok((total / nout as f64).max(0.0))
}

/// The normalized test error of eq. (17): `(E|y − ŷ|²)/yvar = 1 + excess/yvar`, where the
/// excess is [`excess_test_error`] (per output entry) and `yvar` the noise variance of a fresh
/// sample, so that the Bayes-optimal value is 1 (paper Section 5). `K` is the `2d x 2d`
/// covariance of `(z, ẑ)` (from [`test_covariance`], or predicted by the state evolution).
pub fn normalized_test_error(
    k: &DMat,
    f2: MatRef<'_, f64>,
    activation: Activation,
    yvar: f64,
) -> Result<f64> {
    check_yvar(yvar)?;
    Ok(1.0 + excess_test_error(k, f2, activation)? / yvar)
}

/// `K` must be square, finite, symmetric (relative tolerance `1e-8`) with a non-negative
/// diagonal (relative tolerance `1e-12` for round-off).
fn validate_covariance(k: &DMat) -> Result<()> {
    let what = "test covariance K (eq. 17)";
    if k.nrows() != k.ncols() || k.nrows() == 0 {
        return Err(Error::shape(
            what,
            "non-empty square",
            format!("{} x {}", k.nrows(), k.ncols()),
        ));
    }
    check_finite_dmat(what, k)?;
    let scale = max_abs(k).max(f64::MIN_POSITIVE);
    let asym = max_abs(&(k - k.transpose()));
    if asym > 1e-8 * scale {
        return Err(Error::NotSymmetric {
            what: what.into(),
            detail: format!("max |K - K^T| = {asym:.3e} (largest entry {scale:.3e})"),
        });
    }
    for p in 0..k.nrows() {
        if k[(p, p)] < -1e-12 * scale {
            return Err(Error::NotPositiveDefinite {
                what: what.into(),
                detail: format!("diagonal entry {p} is {:e}", k[(p, p)]),
            });
        }
    }
    Ok(())
}

/// `|ρ|` this close to 1 is treated as exactly ±1 (one-dimensional pair).
const RHO_ONE: f64 = 1e-12;

/// `E[σ(x) σ(y)]` for `(x, y)` Gaussian with variances `a, c` and covariance `b` (spec §7.4).
fn pair_moment(activation: Activation, a: f64, b: f64, c: f64) -> f64 {
    // Canonical order (the larger variance first), so that the pair is a symmetric function of
    // (a, c) bitwise: then S has exactly equal blocks when F̂_1 = F_1 and eq. (17) gives exactly 1.
    let (a, c) = if a >= c {
        (a.max(0.0), c.max(0.0))
    } else {
        (c.max(0.0), a.max(0.0))
    };
    let ac = a * c;
    let rho = if ac > 0.0 {
        (b / ac.sqrt()).clamp(-1.0, 1.0)
    } else {
        0.0
    };
    let degenerate = 1.0 - rho.abs() < RHO_ONE;
    match activation {
        Activation::Identity => b,
        Activation::Relu => {
            let s = ac.sqrt();
            if degenerate {
                // ρ = ±1: E[relu(x)relu(y)] = √(ac)/2 for ρ = 1, 0 for ρ = −1.
                if rho > 0.0 {
                    0.5 * s
                } else {
                    0.0
                }
            } else {
                s / (2.0 * std::f64::consts::PI)
                    * ((1.0 - rho * rho).sqrt() + rho * (std::f64::consts::PI - rho.acos()))
            }
        }
        Activation::Sigmoid => {
            let (sa, sc) = (a.sqrt(), c.sqrt());
            let level = gh_level(a.max(c));
            if degenerate {
                // y = sign(ρ)·√(c/a)·x: a one-dimensional expectation over ξ ~ N(0, 1).
                let sy = rho.signum() * sc;
                let gh = gh_rule(level + 1);
                gh.nodes
                    .iter()
                    .zip(&gh.weights)
                    .map(|(&t, &w)| w * activation.eval(sa * t) * activation.eval(sy * t))
                    .sum()
            } else {
                sigmoid_pair_2d(gh_rule(level), sa, sc, rho)
            }
        }
    }
}

/// `E[σ(x)σ(y)]` for sigmoid with `x = √a ξ1`, `y = √c (ρ ξ1 + √(1−ρ²) ξ2)`,
/// `(ξ1, ξ2) ~ N(0, I_2)`, by the tensor-product rule `gh × gh`.
fn sigmoid_pair_2d(gh: &GaussHermite, sa: f64, sc: f64, rho: f64) -> f64 {
    let act = Activation::Sigmoid;
    let r2 = (1.0 - rho * rho).sqrt();
    // The inner node's sigmoids, all at once (vectorised; the same values as one by one).
    let mut sy = vec![0.0; gh.nodes.len()];
    let mut total = 0.0;
    for (&t1, &w1) in gh.nodes.iter().zip(&gh.weights) {
        let sx = act.eval(sa * t1);
        for (y, &t2) in sy.iter_mut().zip(&gh.nodes) {
            *y = sc * (rho * t1 + r2 * t2);
        }
        act.eval_in_place(&mut sy);
        let mut inner = 0.0;
        for (&y, &w2) in sy.iter().zip(&gh.weights) {
            inner += w2 * y;
        }
        total += w1 * sx * inner;
    }
    total
}

/// A probabilists' Gauss–Hermite rule: `E[f(ξ)] ≈ Σ_i w_i f(t_i)` for `ξ ~ N(0, 1)`.
struct GaussHermite {
    nodes: Vec<f64>,
    weights: Vec<f64>,
}

/// Nodes of the cached Gauss–Hermite rules: level 0 is the spec's 40 nodes per dimension for
/// pairs (spec §7.4), level 1 its 80-node 1-D rule.
const GH_NODES: [usize; 5] = [40, 80, 160, 320, 640];

/// The 2-D rule level for a sigmoid pair whose larger variance is `v`.
///
/// Gauss–Hermite converges slowly for `σ(√v t)` at large `v` (its poles sit at `t = ±iπ/√v`).
/// Measured against a 400-node rule, the error per pair stays below ≈1e-11 when the nodes per
/// dimension are at least `20·v`: 40 nodes for `v ≤ 2`, doubling per doubling of `v`, capped at
/// 320 nodes (error ≈1e-6 at `v = 36`). For `|ρ| = 1` the next level is used in 1-D.
fn gh_level(v: f64) -> usize {
    match v {
        v if v <= 2.0 => 0,
        v if v <= 4.0 => 1,
        v if v <= 8.0 => 2,
        _ => 3,
    }
}

fn gh_rule(level: usize) -> &'static GaussHermite {
    static RULES: [OnceLock<GaussHermite>; 5] = [const { OnceLock::new() }; 5];
    let level = level.min(GH_NODES.len() - 1);
    RULES[level].get_or_init(|| gauss_hermite(GH_NODES[level]))
}

/// Golub–Welsch: the nodes of the `n`-point rule for the weight `N(0, 1)` are the eigenvalues
/// of the symmetric Jacobi matrix of the probabilists' Hermite polynomials
/// (`He_{k+1} = t He_k − k He_{k−1}`: zero diagonal, off-diagonal `√k`, `k = 1 … n−1`); the
/// weights are the squared first components of the normalised eigenvectors (they sum to 1).
fn gauss_hermite(n: usize) -> GaussHermite {
    let mut jac = DMat::zeros(n, n);
    for k in 1..n {
        let b = (k as f64).sqrt();
        jac[(k - 1, k)] = b;
        jac[(k, k - 1)] = b;
    }
    let e = SymmetricEigen::new(jac);
    let mut pairs: Vec<(f64, f64)> = (0..n)
        .map(|i| (e.eigenvalues[i], e.eigenvectors[(0, i)].powi(2)))
        .collect();
    pairs.sort_by(|x, y| x.0.total_cmp(&y.0));
    // Symmetrise (the rule is exactly symmetric about 0) and renormalise.
    let mut nodes = vec![0.0; n];
    let mut weights = vec![0.0; n];
    for i in 0..n {
        let j = n - 1 - i;
        nodes[i] = 0.5 * (pairs[i].0 - pairs[j].0);
        weights[i] = 0.5 * (pairs[i].1 + pairs[j].1);
    }
    let total: f64 = weights.iter().sum();
    for w in &mut weights {
        *w /= total;
    }
    GaussHermite { nodes, weights }
}

// ---------------------------------------------------------------------------------------------
// Initialisation (spec §7.2, pitfall §8.1.10)
// ---------------------------------------------------------------------------------------------

/// The precision attached to ML-Mat-VAMP's first message `R_1 = X_tr F1init` under
/// [`Init::Reference`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InitPrecision {
    /// The actual expected error variance of `R_1` per entry:
    /// `Γ = I / (nin·mean(X_tr²)·e)`, `e = E[(F1init − F_1)²] = (1−√wcorr)²·w1var + (1 − wcorr)`.
    #[default]
    Honest,
    /// The reference code's `Rvar1 = werr·mean(X_tr²)·I`, `werr = (1−√wcorr)²`:
    /// `Γ = I/(werr·mean(X_tr²))`. It omits the factor `nin` (each entry of `R_1` sums `nin`
    /// terms) and the fresh-noise part `1 − wcorr` of the error, so at the defaults it claims a
    /// precision ≈ 400 where the truth is ≈ 1 (spec §7.2, §8.1.10). For reproducing the
    /// reference only.
    Reference,
}

/// How the initial estimate `F1init` of `F_1` is formed, for both ML-Mat-VAMP and ADAM
/// (spec §7.2).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Init {
    /// The reference's oracle-correlated start (`twolayer.py: gen_W1init`):
    /// `F1init = √wcorr·F_1 + N(0, 1 − wcorr)` (fresh noise of variance `1 − wcorr`, not scaled
    /// by `w1var`; with `F_1 ~ N(0, 1)` the entries of `F1init` have variance ≈ 1 and
    /// correlation ≈ √wcorr with `F_1`). The reference uses `wcorr = 0.25`. `wcorr ∈ [0, 1)`.
    Reference {
        /// The target squared correlation `wcorr`.
        wcorr: f64,
        /// The precision of ML-Mat-VAMP's first message.
        #[serde(default)]
        precision: InitPrecision,
    },
    /// No knowledge of the truth: `F1init` has i.i.d. `N(0, std²)` entries independent of
    /// `F_1` (`std = 0` gives `F1init = 0`; a small `std > 0` breaks the symmetry between
    /// hidden units that a zero start leaves for ADAM). ML-Mat-VAMP's first message is
    /// uninformative: its precision is that of the prior of `Z_1 = X_tr F_1` around
    /// `X_tr F1init`, `Γ = I/(nin·mean(X_tr²)·(w1var + std²))`.
    Uninformed {
        /// Standard deviation of the entries of `F1init`.
        std: f64,
    },
}

impl Default for Init {
    fn default() -> Self {
        Init::reference()
    }
}

/// The initial estimate of `F_1` and ML-Mat-VAMP's first message about `Z_1 = X_tr F_1`.
#[derive(Clone, Debug)]
pub struct InitialEstimate {
    /// `F1init` (`nin x d`): ADAM's starting weights and the estimate behind the message.
    pub f1: Mat<f64>,
    /// The first message into ML-Mat-VAMP's output estimator: mean `R_1 = X_tr F1init`
    /// (`ntr x d`) and precision `Γ` (`d x d`, see [`Init`] and [`InitPrecision`]).
    pub message: Message,
}

impl Init {
    /// The reference start, `wcorr = 0.25`, with the honest precision.
    pub fn reference() -> Self {
        Init::Reference {
            wcorr: 0.25,
            precision: InitPrecision::Honest,
        }
    }

    /// An uninformed start with `std = 0.1`.
    pub fn uninformed() -> Self {
        Init::Uninformed { std: 0.1 }
    }

    /// Checks the parameters.
    pub fn validate(&self) -> Result<()> {
        match *self {
            Init::Reference { wcorr, .. } => {
                if !(0.0..1.0).contains(&wcorr) {
                    return Err(Error::invalid(
                        "init wcorr",
                        format!("must be in [0, 1), got {wcorr}"),
                    ));
                }
            }
            Init::Uninformed { std } => {
                if !(std.is_finite() && std >= 0.0) {
                    return Err(Error::invalid(
                        "init std",
                        format!("must be finite and non-negative, got {std}"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Draws `F1init` for `trial` from `rng` and forms the first message
    /// `R_1 = X_tr F1init` with the precision documented on [`Init`] / [`InitPrecision`].
    ///
    /// The message precision is `I/v`, with `v` the expected squared error of an entry of `R_1`:
    /// a row `x` of `X_tr` has `E‖x‖² ≈ nin·mean(X_tr²)`, so
    /// `v = nin·mean(X_tr²)·E[(F1init − F_1)²]` (honest), or the reference's `werr·mean(X_tr²)`.
    pub fn draw(&self, trial: &TwoLayerTrial, rng: &mut Rng) -> Result<InitialEstimate> {
        self.validate()?;
        let (nin, d) = (trial.f1.nrows(), trial.f1.ncols());
        check_shape("X_tr", trial.x_train.as_ref(), trial.x_train.nrows(), nin)?;
        let x_power = mean_square(trial.x_train.as_ref());
        let w1var = trial.w1var;
        let (f1, var) = match *self {
            Init::Reference { wcorr, precision } => {
                // gen_W1init: √wcorr·W1 + N(0, 1 − wcorr).
                let noise = standard_normal(nin, d, rng);
                let (a, s) = (wcorr.sqrt(), (1.0 - wcorr).sqrt());
                let f1 = Mat::from_fn(nin, d, |i, j| a * trial.f1[(i, j)] + s * noise[(i, j)]);
                let var = match precision {
                    InitPrecision::Honest => {
                        nin as f64 * x_power * ((1.0 - a).powi(2) * w1var + (1.0 - wcorr))
                    }
                    InitPrecision::Reference => (1.0 - a).powi(2) * x_power,
                };
                (f1, var)
            }
            Init::Uninformed { std } => {
                let f1 = standard_normal(nin, d, rng) * faer::Scale(std);
                (f1, nin as f64 * x_power * (w1var + std * std))
            }
        };
        if !(var.is_finite() && var > 0.0) {
            return Err(Error::invalid(
                "initial message",
                format!(
                    "its error variance {var:e} must be positive and finite (is X_tr or F_1 zero?)"
                ),
            ));
        }
        let mean = &trial.x_train * &f1;
        let precision = Spd::scaled_identity(d, 1.0 / var)?;
        Ok(InitialEstimate {
            f1,
            message: Message { mean, precision },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gauss_hermite_integrates_even_moments() {
        // E[ξ^{2k}] = (2k−1)!!; an n-point rule is exact up to degree 2n − 1.
        for &n in &GH_NODES[..3] {
            let gh = gauss_hermite(n);
            let mut dfact = 1.0;
            for k in 0..12 {
                if k > 0 {
                    dfact *= (2 * k - 1) as f64;
                }
                let m: f64 = gh
                    .nodes
                    .iter()
                    .zip(&gh.weights)
                    .map(|(t, w)| w * t.powi(2 * k))
                    .sum();
                assert!(
                    (m - dfact).abs() < 1e-10 * dfact,
                    "n={n} k={k}: {m} vs {dfact}"
                );
            }
        }
    }

    #[test]
    fn sigmoid_pair_quadrature_is_converged() {
        // The adaptive rule choice against a 400-node tensor rule (2-D), and the 1-D |ρ| = 1
        // rule against a 400-node 1-D rule.
        let fine = gauss_hermite(400);
        for &a in &[0.3_f64, 1.0, 2.0, 3.5, 7.5] {
            for &(cf, rho) in &[(1.0_f64, 0.5_f64), (0.5, -0.9), (0.3, 0.999), (0.05, 0.0)] {
                let c = a * cf;
                let b = rho * (a * c).sqrt();
                let got = pair_moment(Activation::Sigmoid, a, b, c);
                let exact = sigmoid_pair_2d(&fine, a.sqrt(), c.sqrt(), rho);
                assert!(
                    (got - exact).abs() < 1e-10,
                    "a={a} c={c} ρ={rho}: {got} vs {exact}"
                );
            }
            let one_d = pair_moment(Activation::Sigmoid, a, a, a);
            let exact: f64 = fine
                .nodes
                .iter()
                .zip(&fine.weights)
                .map(|(&t, &w)| w * Activation::Sigmoid.eval(a.sqrt() * t).powi(2))
                .sum();
            assert!((one_d - exact).abs() < 1e-12, "a={a}: {one_d} vs {exact}");
        }
    }
}
