//! Row-wise activation layers `Z_l = σ(Z_{l−1}) + Ξ_l` inside deeper networks (eq. 1b, spec §4.7).

use super::{gaussian_rows, Estimator, Layer, LayerKind, Rng};
use crate::error::{Error, Result};
use crate::message::{Belief, Message};
use crate::rows::{check_finite, mul_small_sum};
use crate::spd::{sym, Spd};
use faer::{Mat, MatRef};

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
    /// `σ(v) = 1/(1 + e^{−v})`, evaluated as `½(1 + tanh(v/2))` to avoid overflow (spec §8.1.9).
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
            Activation::Sigmoid => 0.5 * (1.0 + (0.5 * v).tanh()),
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

/// A hidden row-wise layer `u = σ(v) + ξ`, `ξ ~ N(0, N^{-1})` (or noiseless), where `v` is a row of
/// `Z_{l−1}` and `u` the corresponding row of `Z_l`.
#[derive(Clone, Debug)]
pub struct ActivationLayer {
    activation: Activation,
    noise: Option<Spd>,
    estimator: Estimator,
    d: usize,
}

impl ActivationLayer {
    /// A layer with the given activation, optional noise precision `N` (`None` = noiseless) and
    /// estimator (MAP or MMSE; they coincide for the identity).
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
        Ok(ActivationLayer {
            activation,
            noise,
            estimator,
            d,
        })
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
            return Ok(Belief {
                mean: v_hat,
                cov: svv,
            });
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
                Ok(Belief { mean, cov })
            }
            _ => Ok(Belief {
                mean: v_hat,
                cov: svv,
            }),
        }
    }
}

impl Layer for ActivationLayer {
    fn describe(&self) -> String {
        format!(
            "{} activation layer{}",
            self.activation.name(),
            if self.noise.is_some() {
                ", noisy"
            } else {
                ", noiseless"
            }
        )
    }
    fn kind(&self) -> LayerKind {
        LayerKind::RowWise
    }
    fn dim(&self) -> usize {
        self.d
    }
    fn input_rows(&self) -> Option<usize> {
        None
    }
    fn output_rows(&self, n_in: usize) -> usize {
        n_in
    }
    fn forward(&self, minus: &Message, plus: &Message) -> Result<Belief> {
        match self.activation {
            Activation::Identity => self.identity(minus, plus, true),
            other => Err(unsupported(other)),
        }
    }
    fn backward(&self, minus: &Message, plus: &Message) -> Result<Belief> {
        match self.activation {
            Activation::Identity => self.identity(minus, plus, false),
            other => Err(unsupported(other)),
        }
    }
    fn sample(&self, z_prev: MatRef<'_, f64>, rng: &mut Rng) -> Result<Mat<f64>> {
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

fn unsupported(a: Activation) -> Error {
    Error::invalid(
        "hidden layer activation",
        format!(
            "{} hidden layers are not implemented yet (only identity)",
            a.name()
        ),
    )
}
