//! The last variable's estimates without its factor `U_r` (`docs/speed.md`, "The lazy estimate
//! of the last variable").
//!
//! When the last hidden layer is the SVD [`LinearLayer`] and the output's estimate is linear in
//! its input ([`crate::factor::OutputDenoiser::linear_estimate`], a fully observed Gaussian
//! channel), every quantity about `Z_{L−1}` that Algorithm 1 produces is an affine
//! combination `U_r C + Σ_j X_j G_j` of the layer's `U_r` and a few fixed `n x d` matrices
//! `X_j` — the observation `Y` (which is also the exact backward message `R⁻_{L−1}`), the
//! bias `B` and, for the history, the truth `Z⁰_{L−1}`:
//!
//! * `Ẑ⁺ = U_r C + R⁻ K_r + B K_b` (the layer's forward call, spec §3.1–3.3);
//! * `R⁺ = (1−ρ)(Ẑ⁺ A + R⁻ B_r) + ρ R⁺_prev` (the message rule, eq. 2.1, a [`MeanMap`]);
//! * `Ẑ⁻ = R⁺ G + Y H` (the output), and the output's message back is `(Y, N)` exactly.
//!
//! Nothing downstream needs these matrices: the algorithm only needs their precisions, and the
//! history and the divergence check only their `d x d` Gram matrices, which follow from the
//! rotated coordinates `C + Σ_j (U_rᵀ X_j) G_j` (`r x d`) and the Gram matrices of the parts of
//! the `X_j` orthogonal to `U_r` (computed once). So an iteration never streams `U_r`; the
//! estimate is formed (one product with `U_r`) only when it is asked for.
//!
//! [`LinearLayer`]: crate::denoise::linear::LinearLayer
//! [`MeanMap`]: crate::message::MeanMap

use crate::denoise::linear::LinearLayer;
use crate::rows::{cross_moment, matmul, mul_small};
use crate::spd::DMat;
use faer::Mat;
use std::sync::Arc;

/// The matrices the lazy estimates are combinations of: `U_r` and the fixed `X_j`, with what
/// the Gram matrices need (`U_rᵀ X_j`, and `(P⊥X_i)ᵀ P⊥X_j` with `P⊥ = I − U_r U_rᵀ`).
pub(crate) struct Span {
    /// The layer (its address) and the output's observation (its address) it was built for.
    pub key: (usize, usize),
    u: Arc<Mat<f64>>,
    /// `X_j` (`n x d` each): `Y` first, then `B` (if any), then the truth (if added).
    fixed: Vec<Mat<f64>>,
    /// `U_rᵀ X_j` (`r x d` each).
    rotated: Vec<Mat<f64>>,
    /// `(P⊥X_i)ᵀ P⊥X_j` (`d x d`, row-major over `(i, j)`), all zero when `U_r` is square.
    perp: Vec<DMat>,
    /// The index of `B` among the `X_j`.
    pub bias: Option<usize>,
    d: usize,
}

impl std::fmt::Debug for Span {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Span {{ rows: {}, rank: {}, fixed: {} }}",
            self.u.nrows(),
            self.u.ncols(),
            self.fixed.len()
        )
    }
}

impl Span {
    /// The span of the last linear layer's estimates for the observation `y` (which must be the
    /// output's exact likelihood mean). One product with `U_r` when `U_r` is not square (the
    /// orthogonal parts); `U_rᵀ Y` goes through the layer's cache, which the forward call then
    /// hits.
    pub fn new(layer: &LinearLayer, y: Mat<f64>, key: (usize, usize)) -> Self {
        let d = y.ncols();
        let mut fixed = vec![y];
        let mut rotated = vec![layer.ut_product(fixed[0].as_ref())];
        let bias = layer.bias().map(|b| {
            fixed.push(b.clone());
            rotated.push(layer.bias_rotated().to_owned());
            fixed.len() - 1
        });
        let mut span = Span {
            key,
            u: layer.u_shared(),
            fixed,
            rotated,
            perp: Vec::new(),
            bias,
            d,
        };
        span.perp = span.perp_grams();
        span
    }

    /// This span with one more fixed matrix `x` (`n x d`) at index [`Span::len`]: one product
    /// with `U_rᵀ`, and one with `U_r` when it is not square.
    pub fn with(&self, x: Mat<f64>) -> Self {
        let rot = matmul(self.u.as_ref().as_ref().transpose(), x.as_ref());
        let mut fixed = self.fixed.clone();
        let mut rotated = self.rotated.clone();
        fixed.push(x);
        rotated.push(rot);
        let mut span = Span {
            key: self.key,
            u: Arc::clone(&self.u),
            fixed,
            rotated,
            perp: Vec::new(),
            bias: self.bias,
            d: self.d,
        };
        span.perp = span.perp_grams();
        span
    }

    /// The number of fixed matrices.
    pub fn len(&self) -> usize {
        self.fixed.len()
    }

    /// The rows `n` of the variable.
    pub fn rows(&self) -> usize {
        self.u.nrows()
    }

    /// `(P⊥X_i)ᵀ P⊥X_j` for all pairs, from `P⊥X = X − U_r (U_rᵀ X)` (one product with all
    /// `X_j` side by side).
    fn perp_grams(&self) -> Vec<DMat> {
        let (n, r, k, d) = (self.u.nrows(), self.u.ncols(), self.fixed.len(), self.d);
        if n == r {
            return vec![DMat::zeros(d, d); k * k];
        }
        let rot = Mat::from_fn(r, k * d, |i, c| self.rotated[c / d][(i, c % d)]);
        let mut perp = Mat::from_fn(n, k * d, |i, c| self.fixed[c / d][(i, c % d)]);
        perp -= matmul(self.u.as_ref().as_ref(), rot.as_ref());
        let all = cross_moment(perp.as_ref(), perp.as_ref()) * n as f64;
        (0..k * k)
            .map(|p| {
                let (i, j) = (p / k, p % k);
                all.view((i * d, j * d), (d, d)).into_owned()
            })
            .collect()
    }

    /// The rotated coordinates `U_rᵀ M = C + Σ_j (U_rᵀ X_j) G_j` (`r x d`) of `M = U_r C + Σ_j X_j G_j`.
    pub fn rotated(&self, m: &LazyMat) -> Mat<f64> {
        let mut out = m.c.clone();
        for (rot, g) in self.rotated.iter().zip(&m.g) {
            if let Some(g) = g {
                out += mul_small(rot.as_ref(), g);
            }
        }
        out
    }

    /// `Aᵀ B` (`d x d`, not averaged) of two lazy matrices: the rotated parts, plus the parts
    /// orthogonal to `U_r` through the fixed matrices' Gram matrices.
    pub fn gram(&self, a: &LazyMat, b: &LazyMat) -> DMat {
        let (ra, rb) = (self.rotated(a), self.rotated(b));
        let r = ra.nrows() as f64;
        let mut out = cross_moment(ra.as_ref(), rb.as_ref()) * r;
        let k = self.fixed.len();
        for (i, gi) in a.g.iter().enumerate() {
            let Some(gi) = gi else { continue };
            for (j, gj) in b.g.iter().enumerate() {
                let Some(gj) = gj else { continue };
                out += gi.transpose() * &self.perp[i * k + j] * gj;
            }
        }
        out
    }

    /// The matrix itself, `U_r C + Σ_j X_j G_j` (one product with `U_r`).
    pub fn form(&self, m: &LazyMat) -> Mat<f64> {
        let mut out = matmul(self.u.as_ref().as_ref(), m.c.as_ref());
        for (x, g) in self.fixed.iter().zip(&m.g) {
            if let Some(g) = g {
                out += mul_small(x.as_ref(), g);
            }
        }
        out
    }

    /// Whether `x` is bit for bit the fixed matrix `j`.
    pub fn is_fixed(&self, j: usize, x: &Mat<f64>) -> bool {
        self.fixed
            .get(j)
            .is_some_and(|f| super::same_mat_bits(f, x))
    }
}

/// `U_r C + Σ_j X_j G_j` of a [`Span`]: `C` is `r x d`, each present `G_j` is `d x d`.
#[derive(Clone, Debug)]
pub(crate) struct LazyMat {
    c: Mat<f64>,
    g: Vec<Option<DMat>>,
}

impl LazyMat {
    /// `U_r C`.
    pub fn new(c: Mat<f64>) -> Self {
        LazyMat { c, g: Vec::new() }
    }

    /// Adds `X_j G`.
    pub fn add_fixed(&mut self, j: usize, g: &DMat) {
        if self.g.len() <= j {
            self.g.resize(j + 1, None);
        }
        self.g[j] = Some(match self.g[j].take() {
            Some(old) => old + g,
            None => g.clone(),
        });
    }

    /// `M F` for a `d x d` matrix `F`.
    pub fn times(&self, f: &DMat) -> Self {
        LazyMat {
            c: mul_small(self.c.as_ref(), f),
            g: self.g.iter().map(|g| g.as_ref().map(|g| g * f)).collect(),
        }
    }

    /// `a M + b N`.
    pub fn combine(&self, a: f64, other: &LazyMat, b: f64) -> Self {
        let c = &self.c * faer::Scale(a) + &other.c * faer::Scale(b);
        let k = self.g.len().max(other.g.len());
        let g = (0..k)
            .map(|j| {
                let x = self.g.get(j).and_then(Option::as_ref).map(|g| g * a);
                let y = other.g.get(j).and_then(Option::as_ref).map(|g| g * b);
                match (x, y) {
                    (Some(x), Some(y)) => Some(x + y),
                    (x, y) => x.or(y),
                }
            })
            .collect();
        LazyMat { c, g }
    }

    /// Whether every coefficient is finite (then so is the matrix, short of an overflow).
    pub fn is_finite(&self) -> bool {
        crate::rows::first_non_finite(self.c.as_ref()).is_none()
            && self
                .g
                .iter()
                .flatten()
                .all(|g| g.iter().all(|x| x.is_finite()))
    }
}
