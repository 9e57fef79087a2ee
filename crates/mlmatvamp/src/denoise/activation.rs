//! Row-wise activation layers `Z_l = σ(Z_{l−1}) + Ξ_l` inside deeper networks (eq. 1b, spec §4.7).
//!
//! * identity: the linear-Gaussian closed form (spec §3.1(a) with `s = 1`);
//! * relu: MAP and MMSE through the row belief of [`super::relu`] (spec §4.7), noisy or noiseless;
//! * sigmoid hidden layers are not implemented (an error says so).

use super::relu::{ReluMmseMethod, ReluPlan, ReluRow, ReluRules, MAX_RELU_DIM};
use super::{gaussian_rows, Estimator, Rng};
use crate::error::{Error, Result};
use crate::factor::{Factor, LayerDenoiser, LayerKind, LayerSampler, LayerShape, MonteCarloSe};
use crate::message::{Belief, Message};
use crate::rows::{check_finite, mul_small_sum, par_map_rows, read_row};
use crate::spd::{sym, DMat, Spd};
use faer::{Mat, MatRef};
use std::sync::Arc;

/// An elementwise activation `σ`, used by hidden layers (eq. 1b) and by the two-layer network
/// output `y = σ(v) F_2 + ξ` (eq. 9).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    /// `σ(v) = v` (also accepted as `"linear"`). With Gaussian noise a hidden identity layer is
    /// linear-Gaussian and its denoiser is exact.
    #[serde(alias = "linear")]
    Identity,
    /// `σ(v) = max(v, 0)`; `σ'(0)` is taken as 0 (as the reference code).
    Relu,
    /// `σ(v) = 1/(1 + e^{−v})`, evaluated without overflow (spec §8.1.9) as `1/(1 + e^{−v})` for
    /// `v ≥ 0` and `e^{v}/(1 + e^{v})` for `v < 0` (one exponential of `−|v|`, by a polynomial
    /// within 1.5 ulp of the standard library's `exp` that vectorises: cheaper than `tanh`, and
    /// accurate to a few ulp in relative terms on both tails).
    Sigmoid,
}

impl Activation {
    /// The name used in configurations and on the command line.
    pub fn name(&self) -> &'static str {
        match self {
            Activation::Identity => "identity",
            Activation::Relu => "relu",
            Activation::Sigmoid => "sigmoid",
        }
    }
    /// Parses `identity`/`linear`, `relu`, `sigmoid`.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "identity" | "linear" => Ok(Activation::Identity),
            "relu" => Ok(Activation::Relu),
            "sigmoid" => Ok(Activation::Sigmoid),
            other => Err(Error::invalid("activation", format!("unknown activation `{other}`; expected one of identity (linear), relu, sigmoid"))),
        }
    }
    /// `σ(v)`.
    #[inline]
    pub fn eval(&self, v: f64) -> f64 {
        match self {
            Activation::Identity => v,
            Activation::Relu => v.max(0.0),
            Activation::Sigmoid => sigmoid(v),
        }
    }
    /// `σ(v)` for every entry of `values`, in place: the entries of [`Activation::eval`], with the
    /// sigmoid's exponentials four at a time where the processor has AVX2.
    pub(crate) fn eval_in_place(&self, values: &mut [f64]) {
        match self {
            Activation::Sigmoid => sigmoid_in_place(values),
            _ => values.iter_mut().for_each(|v| *v = self.eval(*v)),
        }
    }
    /// `σ'(v)`.
    #[inline]
    pub fn deriv(&self, v: f64) -> f64 {
        match self {
            Activation::Identity => 1.0,
            Activation::Relu => {
                if v > 0.0 {
                    1.0
                } else {
                    0.0
                }
            }
            Activation::Sigmoid => {
                let s = self.eval(v);
                s * (1.0 - s)
            }
        }
    }
    /// `σ''(v)` (zero almost everywhere for identity and relu).
    #[inline]
    pub fn second_deriv(&self, v: f64) -> f64 {
        match self {
            Activation::Identity | Activation::Relu => 0.0,
            Activation::Sigmoid => {
                let s = self.eval(v);
                s * (1.0 - s) * (1.0 - 2.0 * s)
            }
        }
    }
}

/// `e^x` for `x ≤ 0` (`x > 0` is taken as 0, below `−1400` as `−1400`, where `e^x` is 0 in
/// double precision; NaN gives NaN), within 1.5 ulp of the exact value in relative terms
/// (measured against the standard library's `exp`, `tests` below), down to the smallest normal
/// result; subnormal results are rounded once from that.
///
/// It is written for the sigmoid of the two-layer output's Newton rows (spec §4.2), whose
/// 16 side-by-side rows ([`super::two_layer`]'s lanes) need it as straight-line arithmetic that
/// the compiler vectorises: no table, no branch, only `+`, `−`, `×` and bit operations, which
/// IEEE arithmetic rounds the same in a scalar and in a vector register (Rust never fuses
/// `a * b + c`), so one row gives the same bits either way. The standard library's `exp` is a
/// call per value (about 2.5 times slower than this in a vector of four).
///
/// The method (Cody–Waite): `x = k ln 2 + r` with `k = round(x / ln 2)` (by adding and
/// subtracting `1.5 · 2^52`), `ln 2` split in two parts so that `k ln2_hi` is exact and
/// `|r| ≤ ln 2 / 2`; `e^r` by its Taylor polynomial of degree 13 (truncation below `5e-18`),
/// evaluated as even and odd parts in `r²` (two Horner chains of half the length); then
/// `e^x = e^r · 2^{k₁} · 2^{k₂}` with `k₁ + k₂ = k` (two exact power-of-two scalings, so that
/// `k` down to `−2020` needs no special case).
#[inline(always)]
pub(crate) fn exp_nonpositive(x: f64) -> f64 {
    const SHIFTER: f64 = 6_755_399_441_055_744.0; // 1.5 · 2^52
                                                  // ln 2 = LN2_HI + LN2_LO (fdlibm's split: LN2_HI has 32 significant bits).
    const LN2_HI: f64 = f64::from_bits(0x3fe6_2e42_fee0_0000);
    const LN2_LO: f64 = f64::from_bits(0x3dea_39ef_3579_3c76);
    // 1/n!, n = 0..=13.
    const C: [f64; 14] = [
        1.0,
        1.0,
        1.0 / 2.0,
        1.0 / 6.0,
        1.0 / 24.0,
        1.0 / 120.0,
        1.0 / 720.0,
        1.0 / 5040.0,
        1.0 / 40_320.0,
        1.0 / 362_880.0,
        1.0 / 3_628_800.0,
        1.0 / 39_916_800.0,
        1.0 / 479_001_600.0,
        1.0 / 6_227_020_800.0,
    ];
    // (`clamp` passes NaN through.)
    let x = x.clamp(-1400.0, 0.0);
    let t = x * std::f64::consts::LOG2_E + SHIFTER;
    // `t` lies in [2^52, 2^53), where its last bits count `k` (two's complement).
    let k = (t.to_bits() as i64).wrapping_sub(SHIFTER.to_bits() as i64);
    let kf = t - SHIFTER;
    let r = (x - kf * LN2_HI) - kf * LN2_LO;
    let r2 = r * r;
    let mut even = C[12];
    let mut odd = C[13];
    let mut i = 12;
    while i > 0 {
        i -= 2;
        even = even * r2 + C[i];
        odd = odd * r2 + C[i + 1];
    }
    let p = even + r * odd;
    // k ∈ [−2020, 0]: k₁ = −⌊−k/2⌋ and k₂ = k − k₁ are both at least −1010.
    let k1 = -((k.wrapping_neg() as u64 >> 1) as i64);
    let k2 = k - k1;
    let s1 = f64::from_bits(((k1 + 1023) as u64) << 52);
    let s2 = f64::from_bits(((k2 + 1023) as u64) << 52);
    p * s1 * s2
}

/// The logistic sigmoid `1/(1 + e^{−v})` without overflow ([`Activation::Sigmoid`]).
#[inline(always)]
pub(crate) fn sigmoid(v: f64) -> f64 {
    let e = exp_nonpositive(-v.abs());
    let num = if v >= 0.0 { 1.0 } else { e };
    num / (1.0 + e)
}

/// [`sigmoid`] of every entry, in place (AVX2 where available: the same bits, four at a time).
fn sigmoid_in_place(values: &mut [f64]) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx512f") {
        // SAFETY: the processor has AVX-512F (checked just above).
        unsafe { sigmoid_in_place_avx512(values) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the processor has AVX2 (checked just above).
        unsafe { sigmoid_in_place_avx2(values) };
        return;
    }
    values.iter_mut().for_each(|v| *v = sigmoid(*v));
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn sigmoid_in_place_avx2(values: &mut [f64]) {
    values.iter_mut().for_each(|v| *v = sigmoid(*v));
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,avx512f")]
unsafe fn sigmoid_in_place_avx512(values: &mut [f64]) {
    values.iter_mut().for_each(|v| *v = sigmoid(*v));
}

/// A hidden row-wise layer `u = σ(v) + ξ`, `ξ ~ N(0, N^{-1})` (or noiseless), where `v` is a row of
/// `Z_{l−1}` and `u` the corresponding row of `Z_l`.
#[derive(Clone, Debug)]
pub struct ActivationLayer {
    activation: Activation,
    noise: Option<Spd>,
    estimator: Estimator,
    d: usize,
    /// Relu MMSE rule and its Gauss–Legendre nodes (relu layers only).
    relu_mmse: ReluMmseMethod,
    relu_rules: Option<Arc<ReluRules>>,
}

/// What a relu layer call computes for all rows (spec §4.7).
struct ReluMoments {
    /// `v̂` (`n x d`).
    v_mean: Mat<f64>,
    /// `Σ̄_vv` = average of the per-row `Σ_v`.
    v_cov: DMat,
    /// `E[relu(v)]` (MMSE) or `relu(v̂)` (MAP), `n x d`.
    relu_mean: Mat<f64>,
    /// Average of `Cov(relu(v))` (MMSE) or of `D Σ_v D` (MAP).
    relu_cov: DMat,
}

impl ActivationLayer {
    /// A layer with the given activation, optional noise precision `N` (`None` = noiseless) and
    /// estimator (MAP or MMSE; they coincide for the identity). Relu layers support
    /// `d ≤ 6` (the orthant enumeration of spec §4.7) and use [`ReluMmseMethod::Auto`]; sigmoid
    /// layers are rejected when used (not implemented).
    pub fn new(
        activation: Activation,
        noise: Option<Spd>,
        estimator: Estimator,
        d: usize,
    ) -> Result<Self> {
        if d == 0 {
            return Err(Error::invalid("d", "must be at least 1"));
        }
        if let Some(nz) = &noise {
            if nz.dim() != d {
                return Err(Error::shape(
                    "activation noise precision N",
                    format!("{d} x {d}"),
                    format!("{0} x {0}", nz.dim()),
                ));
            }
        }
        if activation == Activation::Relu && d > MAX_RELU_DIM {
            return Err(Error::invalid(
                "relu hidden layer",
                format!("supports d <= {MAX_RELU_DIM} columns (2^d orthants are enumerated), got d = {d}"),
            ));
        }
        let mut layer = ActivationLayer {
            activation,
            noise,
            estimator,
            d,
            relu_mmse: ReluMmseMethod::Auto,
            relu_rules: None,
        };
        if activation == Activation::Relu {
            layer = layer.with_relu_mmse(ReluMmseMethod::Auto)?;
        }
        Ok(layer)
    }

    /// The same layer with another relu MMSE rule (ignored by other activations and by MAP).
    pub fn with_relu_mmse(mut self, method: ReluMmseMethod) -> Result<Self> {
        let nodes = match method {
            ReluMmseMethod::Auto => ReluMmseMethod::default_nodes(self.d),
            ReluMmseMethod::Orthants { nodes } => nodes,
        };
        self.relu_rules = Some(Arc::new(ReluRules::new(nodes)?));
        self.relu_mmse = method;
        Ok(self)
    }

    /// The relu MMSE rule.
    pub fn relu_mmse(&self) -> ReluMmseMethod {
        self.relu_mmse
    }
    /// The noise precision `N` (`None` = noiseless).
    pub fn noise(&self) -> Option<&Spd> {
        self.noise.as_ref()
    }

    /// The activation.
    pub fn activation(&self) -> Activation {
        self.activation
    }
    /// The estimator.
    pub fn estimator(&self) -> Estimator {
        self.estimator
    }

    fn check(&self, minus: &Message, plus: &Message) -> Result<()> {
        let n = plus.rows();
        minus.check("backward message R⁻ into activation layer", n, self.d)?;
        plus.check("forward message R⁺ into activation layer", n, self.d)?;
        Ok(())
    }

    /// Identity activation: the Gaussian belief with precision `[[N+Γ⁻, −N], [−N, N+Γ⁺]]`
    /// (spec §3.1(a) with `s = 1`, `b = 0`). Returns `(û, Σ_uu)` or `(v̂, Σ_vv)`.
    fn identity(&self, minus: &Message, plus: &Message, want_u: bool) -> Result<Belief> {
        self.check(minus, plus)?;
        check_finite(
            "backward message R⁻ into activation layer",
            minus.mean.as_ref(),
        )?;
        check_finite(
            "forward message R⁺ into activation layer",
            plus.mean.as_ref(),
        )?;
        let gm = minus.precision.matrix();
        let gp = plus.precision.matrix();
        let (p_eff, a) = match &self.noise {
            Some(nz) => {
                let a = Spd::from_symmetric("N + Γ⁻", nz.matrix() + gm)?.inverse();
                (sym(&(gm * &a * nz.matrix())), Some(a))
            }
            None => (gm.clone(), None),
        };
        let svv = Spd::from_symmetric("Γ⁺ + P_eff", gp + &p_eff)?.inverse();
        // v̂ = (r⁺Γ⁺ + r⁻ P_eff) Σ_vv
        let v_hat = mul_small_sum(
            plus.mean.as_ref(),
            &(gp * &svv),
            minus.mean.as_ref(),
            &(&p_eff * &svv),
        );
        if !want_u {
            return Ok(Belief::new(v_hat, svv));
        }
        match (&self.noise, a) {
            (Some(nz), Some(a)) => {
                // û = (v̂ N + r⁻ Γ⁻) A,  Σ_uu = A + A N Σ_vv N A
                let mean = mul_small_sum(
                    v_hat.as_ref(),
                    &(nz.matrix() * &a),
                    minus.mean.as_ref(),
                    &(gm * &a),
                );
                let cov = sym(&(&a + &a * nz.matrix() * &svv * nz.matrix() * &a));
                Ok(Belief::new(mean, cov))
            }
            _ => Ok(Belief::new(v_hat, svv)),
        }
    }
}

impl ActivationLayer {
    /// `A = (N + Γ⁻)^{-1}` and the effective precision `P = (N^{-1} + (Γ⁻)^{-1})^{-1} = Γ⁻ A N`
    /// (spec §4.7); noiseless: `A = 0`, `P = Γ⁻`.
    fn relu_precisions(&self, minus: &Message) -> Result<(Option<DMat>, Spd)> {
        let gm = minus.precision.matrix();
        match &self.noise {
            Some(nz) => {
                let a = Spd::from_symmetric("N + Γ⁻", nz.matrix() + gm)?.inverse();
                let p = Spd::from_symmetric(
                    "relu effective precision P = (N^-1 + (Γ⁻)^-1)^-1",
                    sym(&(gm * &a * nz.matrix())),
                )?;
                Ok((Some(a), p))
            }
            None => Ok((None, minus.precision.clone())),
        }
    }

    /// The per-row relu moments (spec §4.7) for all rows, in parallel.
    fn relu_moments(&self, minus: &Message, plus: &Message) -> Result<ReluMoments> {
        self.check(minus, plus)?;
        check_finite(
            "backward message R⁻ into the relu layer",
            minus.mean.as_ref(),
        )?;
        check_finite("forward message R⁺ into the relu layer", plus.mean.as_ref())?;
        let d = self.d;
        let (_, p) = self.relu_precisions(minus)?;
        let plan = ReluPlan::new(&plus.precision, &p)?;
        let rules = self.relu_rules.as_deref().ok_or_else(|| Error::Numerical {
            what: "relu layer".into(),
            detail: "the Gauss-Legendre rule is missing".into(),
        })?;
        let separable = self.relu_mmse == ReluMmseMethod::Auto && plan.is_separable();
        let estimator = self.estimator;
        let (rm, rp) = (minus.mean.as_ref(), plus.mean.as_ref());
        let n = plus.rows();
        let out = par_map_rows(n, 2 * d, 2 * d * d, |i, row, acc| {
            let mut buf = [0.0; 2 * MAX_RELU_DIM];
            let (r_plus, r_minus) = buf.split_at_mut(MAX_RELU_DIM);
            read_row(rp, i, &mut r_plus[..d]);
            read_row(rm, i, &mut r_minus[..d]);
            let mut res = ReluRow::new(d);
            match estimator {
                Estimator::Map => plan.map_row(&r_plus[..d], &r_minus[..d], &mut res),
                Estimator::Mmse if separable => {
                    plan.separable_row(&r_plus[..d], &r_minus[..d], &mut res)
                }
                Estimator::Mmse => {
                    plan.orthant_row(&r_plus[..d], &r_minus[..d], rules, &mut res)?
                }
            }
            let finite = res
                .v_mean()
                .iter()
                .chain(res.v_cov())
                .chain(res.relu_mean())
                .chain(res.relu_cov())
                .all(|x| x.is_finite());
            if !finite {
                return Err(Error::Numerical {
                    what: "relu layer denoiser".into(),
                    detail: format!("row {i}: the estimate or its covariance is not finite"),
                });
            }
            row[..d].copy_from_slice(res.v_mean());
            row[d..].copy_from_slice(res.relu_mean());
            for (a, x) in acc[..d * d].iter_mut().zip(res.v_cov()) {
                *a += x;
            }
            for (a, x) in acc[d * d..].iter_mut().zip(res.relu_cov()) {
                *a += x;
            }
            Ok(())
        })?;
        let nf = n.max(1) as f64;
        let avg = |off: usize| sym(&DMat::from_fn(d, d, |a, b| out.acc[off + a * d + b] / nf));
        Ok(ReluMoments {
            v_mean: Mat::from_fn(n, d, |i, j| out.rows[(i, j)]),
            v_cov: avg(0),
            relu_mean: Mat::from_fn(n, d, |i, j| out.rows[(i, d + j)]),
            relu_cov: avg(d * d),
        })
    }

    /// `G⁺` of the relu layer (spec §4.7): `û = (E[relu v] N + r⁻Γ⁻) A`,
    /// `Σ̄_uu = A + A N C̄ N A` (`C̄` the average `Cov(relu v)`, or `D Σ_v D` for MAP); noiseless:
    /// `û = E[relu v]`, `Σ̄_uu = C̄`.
    fn relu_forward(&self, minus: &Message, plus: &Message) -> Result<Belief> {
        let m = self.relu_moments(minus, plus)?;
        let (a, _) = self.relu_precisions(minus)?;
        match (&self.noise, a) {
            (Some(nz), Some(a)) => {
                let na = nz.matrix() * &a;
                let mean = mul_small_sum(
                    m.relu_mean.as_ref(),
                    &na,
                    minus.mean.as_ref(),
                    &(minus.precision.matrix() * &a),
                );
                let cov = sym(&(&a + na.transpose() * &m.relu_cov * &na));
                Ok(Belief::new(mean, cov))
            }
            _ => Ok(Belief::new(m.relu_mean, m.relu_cov)),
        }
    }

    /// `G⁻` of the relu layer (spec §4.7): `v̂` and `Σ̄_vv`.
    fn relu_backward(&self, minus: &Message, plus: &Message) -> Result<Belief> {
        let m = self.relu_moments(minus, plus)?;
        Ok(Belief::new(m.v_mean, m.v_cov))
    }
}

impl Factor for ActivationLayer {
    fn describe(&self) -> String {
        format!(
            "{} activation layer{}{}",
            self.activation.name(),
            if self.noise.is_some() {
                ", noisy"
            } else {
                ", noiseless"
            },
            match (self.activation, self.estimator) {
                (Activation::Identity, _) => "",
                (_, Estimator::Map) => ", MAP",
                (_, Estimator::Mmse) => ", MMSE",
            }
        )
    }

    fn dim(&self) -> usize {
        self.d
    }
}

impl LayerShape for ActivationLayer {
    fn kind(&self) -> LayerKind {
        LayerKind::RowWise
    }

    fn input_rows(&self) -> Option<usize> {
        None
    }

    fn output_rows(&self, n_in: usize) -> usize {
        n_in
    }
}

impl LayerDenoiser for ActivationLayer {
    fn forward(&self, minus: &Message, plus: &Message) -> Result<Belief> {
        match self.activation {
            Activation::Identity => self.identity(minus, plus, true),
            Activation::Relu => self.relu_forward(minus, plus),
            other => Err(unsupported(other)),
        }
    }

    fn backward(&self, minus: &Message, plus: &Message) -> Result<Belief> {
        match self.activation {
            Activation::Identity => self.identity(minus, plus, false),
            Activation::Relu => self.relu_backward(minus, plus),
            other => Err(unsupported(other)),
        }
    }
}

impl LayerSampler for ActivationLayer {
    fn sample(&self, z_prev: MatRef<'_, f64>, rng: &mut Rng) -> Result<Mat<f64>> {
        if z_prev.ncols() != self.d {
            return Err(Error::shape(
                "input of activation layer",
                format!("n x {}", self.d),
                format!("{} x {}", z_prev.nrows(), z_prev.ncols()),
            ));
        }
        check_finite("input of activation layer", z_prev)?;
        let act = self.activation;
        let mut z = Mat::from_fn(z_prev.nrows(), z_prev.ncols(), |i, j| {
            act.eval(z_prev[(i, j)])
        });
        if let Some(nz) = &self.noise {
            let cov = Spd::from_symmetric("noise covariance", nz.inverse())?;
            z += &gaussian_rows(z.nrows(), cov.cholesky_lower(), rng);
        }
        Ok(z)
    }
}

/// No closed form: the Monte-Carlo SE step over this factor's sampler and denoiser.
impl MonteCarloSe for ActivationLayer {}

fn unsupported(a: Activation) -> Error {
    Error::invalid(
        "hidden layer activation",
        format!(
            "{} hidden layers are not implemented yet (only identity and relu)",
            a.name()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::{exp_nonpositive, sigmoid, Activation};
    use crate::rng::rng_from_seed;
    use rand::RngExt;

    /// `exp_nonpositive` against the standard library's `exp` (correctly rounded to within
    /// about half an ulp): within 1.5 ulp relative for every normal result, at most one
    /// rounding step apart (relative to the smallest normal) for subnormal ones, exact at 0 and
    /// on the special values.
    #[test]
    fn exp_nonpositive_matches_the_standard_library() {
        let mut rng = rng_from_seed(7);
        let mut worst: f64 = 0.0;
        let ranges = [1.0, 40.0, 708.0];
        for &range in &ranges {
            for _ in 0..200_000 {
                let x = -rng.random::<f64>() * range;
                let (a, b) = (exp_nonpositive(x), x.exp());
                worst = worst.max(((a - b) / b).abs());
            }
        }
        assert!(
            worst <= 1.5 * f64::EPSILON,
            "relative error {worst:e} > 1.5 ulp"
        );
        // Subnormal results (x below ln of the smallest normal, about −708.4).
        for i in 0..10_000 {
            let x = -708.4 - 36.7 * i as f64 / 10_000.0;
            let (a, b) = (exp_nonpositive(x), x.exp());
            assert!(
                (a - b).abs() <= f64::MIN_POSITIVE * f64::EPSILON,
                "x = {x}: {a:e} vs {b:e}"
            );
        }
        for x in [
            0.0,
            -0.0,
            -1e-300,
            -5e-324,
            -745.2,
            -1e4,
            f64::NEG_INFINITY,
            f64::MIN,
        ] {
            assert_eq!(exp_nonpositive(x), x.exp(), "x = {x}");
        }
        assert!(exp_nonpositive(f64::NAN).is_nan());
        // Positive arguments are taken as 0.
        assert_eq!(exp_nonpositive(3.0), 1.0);
    }

    /// The sigmoid: exact limits, symmetry `σ(−v) = 1 − σ(v)` to rounding, NaN through, and
    /// the in-place (vectorised) path gives the same bits as one value at a time.
    #[test]
    fn sigmoid_limits_symmetry_and_batch_bits() {
        let act = Activation::Sigmoid;
        assert_eq!(act.eval(0.0), 0.5);
        assert_eq!(act.eval(f64::INFINITY), 1.0);
        assert_eq!(act.eval(f64::NEG_INFINITY), 0.0);
        assert_eq!(act.eval(800.0), 1.0);
        assert!(act.eval(-800.0) >= 0.0 && act.eval(-800.0) < 1e-300);
        assert!(act.eval(f64::NAN).is_nan());
        let mut rng = rng_from_seed(8);
        let values: Vec<f64> = (0..1001)
            .map(|i| match i {
                0 => f64::NAN,
                1 => f64::INFINITY,
                2 => -745.5,
                _ => (rng.random::<f64>() - 0.5) * 60.0,
            })
            .collect();
        let mut batch = values.clone();
        act.eval_in_place(&mut batch);
        for (&v, &b) in values.iter().zip(&batch) {
            let one = sigmoid(v);
            assert!(
                one.to_bits() == b.to_bits() || (one.is_nan() && b.is_nan()),
                "v = {v}"
            );
            if v.is_finite() {
                let libm = 1.0 / (1.0 + (-v).exp());
                assert!((one - libm).abs() <= 4.0 * f64::EPSILON * libm, "v = {v}");
                assert!((sigmoid(-v) - (1.0 - one)).abs() <= 2.0 * f64::EPSILON);
            }
        }
    }
}
