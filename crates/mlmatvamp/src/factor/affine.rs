//! Exact second moments of quantities that are affine in independent Gaussian blocks — the
//! closed-form SE steps of linear layers and of the Gaussian prior (spec §6.2 (Lin)).
//!
//! A row quantity is `x = c_0 + g M`, with `g = [g_1, …, g_B]` a row of independent zero-mean
//! Gaussian blocks with covariances `C_b`, `M` a `K x d` coefficient matrix and `c_0` a constant
//! `1 x d` row. Then `E[x^T y] = c_0x^T c_0y + M_x^T C M_y` with `C = blockdiag(C_b)`.

use crate::spd::{sym, DMat};

/// The independent Gaussian blocks `g_b ~ N(0, C_b)`.
#[derive(Clone, Debug)]
pub struct Blocks {
    offsets: Vec<usize>,
    sizes: Vec<usize>,
    cov: DMat,
}

impl Blocks {
    /// Blocks with the given covariances (each square, positive semi-definite).
    pub fn new(covs: &[&DMat]) -> Self {
        let sizes: Vec<usize> = covs.iter().map(|c| c.nrows()).collect();
        let total = sizes.iter().sum();
        let mut offsets = Vec::with_capacity(sizes.len());
        let mut cov = DMat::zeros(total, total);
        let mut off = 0;
        for c in covs {
            offsets.push(off);
            cov.view_mut((off, off), (c.nrows(), c.ncols()))
                .copy_from(*c);
            off += c.nrows();
        }
        Blocks {
            offsets,
            sizes,
            cov,
        }
    }
    /// Total dimension `K`.
    pub fn dim(&self) -> usize {
        self.cov.nrows()
    }
    /// The quantity `x = g_b E` where `E` (size_b x d) selects block `b`; `E = I` by default.
    pub fn var(&self, b: usize, d: usize) -> Affine {
        self.var_range(b, 0, self.sizes[b], d)
    }
    /// The sub-block `g_b[start .. start+len]` as a `1 x len` quantity (`len = d`).
    pub fn var_range(&self, b: usize, start: usize, len: usize, d: usize) -> Affine {
        debug_assert_eq!(len, d);
        let mut m = DMat::zeros(self.dim(), d);
        for i in 0..len {
            m[(self.offsets[b] + start + i, i)] = 1.0;
        }
        Affine {
            c0: DMat::zeros(1, d),
            m,
        }
    }
    /// `E[x^T y]`.
    pub fn moment(&self, x: &Affine, y: &Affine) -> DMat {
        x.c0.transpose() * &y.c0 + x.m.transpose() * &self.cov * &y.m
    }
    /// The joint second moment `E[[x, y]^T [x, y]]`.
    pub fn joint(&self, x: &Affine, y: &Affine) -> DMat {
        let d = x.m.ncols();
        let mut j = DMat::zeros(2 * d, 2 * d);
        j.view_mut((0, 0), (d, d)).copy_from(&self.moment(x, x));
        j.view_mut((0, d), (d, d)).copy_from(&self.moment(x, y));
        j.view_mut((d, 0), (d, d)).copy_from(&self.moment(y, x));
        j.view_mut((d, d), (d, d)).copy_from(&self.moment(y, y));
        sym(&j)
    }
}

/// `x = c_0 + g M`.
#[derive(Clone, Debug)]
pub struct Affine {
    /// Constant part (`1 x d`).
    pub c0: DMat,
    /// Coefficients (`K x d`).
    pub m: DMat,
}

impl Affine {
    /// A constant row.
    pub fn constant(k: usize, c0: DMat) -> Self {
        Affine {
            m: DMat::zeros(k, c0.ncols()),
            c0,
        }
    }
    /// `x A` for a `d x d'` matrix.
    pub fn mul(&self, a: &DMat) -> Affine {
        Affine {
            c0: &self.c0 * a,
            m: &self.m * a,
        }
    }
    /// `s x`.
    pub fn scale(&self, s: f64) -> Affine {
        Affine {
            c0: &self.c0 * s,
            m: &self.m * s,
        }
    }
    /// `x + y`.
    pub fn add(&self, y: &Affine) -> Affine {
        Affine {
            c0: &self.c0 + &y.c0,
            m: &self.m + &y.m,
        }
    }
    /// `x − y`.
    pub fn sub(&self, y: &Affine) -> Affine {
        Affine {
            c0: &self.c0 - &y.c0,
            m: &self.m - &y.m,
        }
    }
}
