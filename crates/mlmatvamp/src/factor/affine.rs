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
    /// `C` row by row (`cov_rows[l K + k] = C[l, k]`), so that `Mᵀ C` runs along contiguous rows.
    cov_rows: Vec<f64>,
}

/// nalgebra multiplies two dynamically sized matrices `A B` with its own loops (below) when the
/// rows of `A`, the columns of `A` (the rows of `B`) or the columns of `B` number at most this,
/// and with `matrixmultiply` (another rounding) otherwise (`gemm_uninit`, nalgebra 0.35).
const NALGEBRA_SMALL_DIM: usize = 5;

/// `x` projected on the blocks: `T = M_xᵀ C` (`d_x x K`, row by row), the first product of every
/// second moment with `x` on the left, computed once per quantity instead of once per moment.
struct Projected<'a> {
    x: &'a Affine,
    t: Vec<f64>,
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
        let k = cov.nrows();
        let cov_rows = (0..k * k).map(|e| cov[(e / k, e % k)]).collect();
        Blocks {
            offsets,
            sizes,
            cov,
            cov_rows,
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
        match self.project(x) {
            Some(px) => self.moment_projected(&px, y),
            None => Self::moment_nalgebra(&self.cov, x, y),
        }
    }
    /// The joint second moment `E[[x, y]^T [x, y]]`.
    pub fn joint(&self, x: &Affine, y: &Affine) -> DMat {
        let d = x.m.ncols();
        let mut j = DMat::zeros(2 * d, 2 * d);
        let parts = match (self.project(x), self.project(y)) {
            (Some(px), Some(py)) => [
                self.moment_projected(&px, x),
                self.moment_projected(&px, y),
                self.moment_projected(&py, x),
                self.moment_projected(&py, y),
            ],
            _ => [
                Self::moment_nalgebra(&self.cov, x, x),
                Self::moment_nalgebra(&self.cov, x, y),
                Self::moment_nalgebra(&self.cov, y, x),
                Self::moment_nalgebra(&self.cov, y, y),
            ],
        };
        for (part, (r, c)) in parts.iter().zip([(0, 0), (0, d), (d, 0), (d, d)]) {
            j.view_mut((r, c), (d, d)).copy_from(part);
        }
        sym(&j)
    }

    /// `c_0xᵀ c_0y + M_xᵀ C M_y` as nalgebra computes it: the definition of the moment's bits.
    fn moment_nalgebra(cov: &DMat, x: &Affine, y: &Affine) -> DMat {
        x.c0.transpose() * &y.c0 + x.m.transpose() * cov * &y.m
    }

    /// `T = M_xᵀ C`, when nalgebra would compute the moment's products with its own loops: every
    /// entry `Σ_l M_x[l, i] C[l, k]` summed in the order of `l`, a product then an addition (no
    /// fused multiply-add), the first term alone, as nalgebra's `gemv` does. `None` when nalgebra
    /// would hand the first product, `M_xᵀ C`, to `matrixmultiply` (`d_x` and `K` both above its
    /// small size); whenever it does not, it does not hand it the second, `T M_y`, either.
    fn project<'a>(&self, x: &'a Affine) -> Option<Projected<'a>> {
        let (k, d) = (x.m.nrows(), x.m.ncols());
        assert_eq!(k, self.dim(), "an affine quantity over other blocks");
        if d > NALGEBRA_SMALL_DIM && k > NALGEBRA_SMALL_DIM {
            return None;
        }
        let mut t = vec![0.0; d * k];
        if k > 0 {
            for (i, ti) in t.chunks_exact_mut(k).enumerate() {
                let m = &x.m.as_slice()[i * k..(i + 1) * k];
                for (tik, c) in ti.iter_mut().zip(&self.cov_rows[..k]) {
                    *tik = m[0] * c;
                }
                for (l, &ml) in m.iter().enumerate().skip(1) {
                    let c = &self.cov_rows[l * k..(l + 1) * k];
                    for (tik, c) in ti.iter_mut().zip(c) {
                        *tik += ml * c;
                    }
                }
            }
        }
        Some(Projected { x, t })
    }

    /// `E[x^T y] = c_0xᵀ c_0y + T M_y` from `x`'s projection, with nalgebra's rounding: every entry
    /// of `T M_y` summed in the order of `k` (a product then an addition, the first term alone),
    /// then added to `c_0x[i] c_0y[j]`.
    fn moment_projected(&self, px: &Projected<'_>, y: &Affine) -> DMat {
        let (k, dx, dy) = (y.m.nrows(), px.x.m.ncols(), y.m.ncols());
        assert_eq!(k, self.dim(), "an affine quantity over other blocks");
        let (cx, cy) = (px.x.c0.as_slice(), y.c0.as_slice());
        DMat::from_fn(dx, dy, |i, j| {
            let c0 = cx[i] * cy[j];
            if k == 0 {
                return c0 + 0.0;
            }
            let t = &px.t[i * k..(i + 1) * k];
            let m = &y.m.as_slice()[j * k..(j + 1) * k];
            let mut s = t[0] * m[0];
            for (a, b) in t.iter().zip(m).skip(1) {
                s += a * b;
            }
            c0 + s
        })
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

#[cfg(test)]
mod tests {
    use super::{Affine, Blocks, DMat};
    use crate::rng::{rng_from_seed, standard_normal};
    use crate::spd::sym;

    fn normal(rows: usize, cols: usize, rng: &mut crate::rng::Rng) -> DMat {
        let g = standard_normal(rows, cols, rng);
        DMat::from_fn(rows, cols, |i, j| g[(i, j)])
    }

    fn same_bits(a: &DMat, b: &DMat) -> bool {
        a.shape() == b.shape()
            && a.iter()
                .zip(b.iter())
                .all(|(x, y)| x.to_bits() == y.to_bits())
    }

    /// The projected moments have the bits of nalgebra's `c_0xᵀ c_0y + M_xᵀ C M_y` (and the joint
    /// those of its four moments, symmetrised), on both sides of nalgebra's small size, for
    /// dense coefficients and for the sparse ones that `var` builds.
    #[test]
    fn moments_have_the_bits_of_nalgebras_products() {
        let mut rng = rng_from_seed(77);
        for d in 1..=7usize {
            for sizes in [
                vec![],
                vec![1],
                vec![2 * d, d, d, d],
                vec![3, d + 2],
                vec![d],
                vec![2, 1],
            ] {
                let covs: Vec<DMat> = sizes
                    .iter()
                    .map(|&s| {
                        let b = normal(s, s, &mut rng);
                        // Not exactly symmetric, as a computed covariance may be.
                        DMat::from_fn(s, s, |i, j| {
                            (0..s).map(|l| b[(i, l)] * b[(j, l)]).sum::<f64>() + 1e-9 * b[(i, j)]
                        })
                    })
                    .collect();
                let bl = Blocks::new(&covs.iter().collect::<Vec<_>>());
                let k = bl.dim();
                let dense = |rng: &mut crate::rng::Rng| Affine {
                    c0: normal(1, d, rng),
                    m: normal(k, d, rng),
                };
                // Signed zeros: a `-0` constant row and `-0` coefficients, so that a sum
                // started from `+0`, or a dropped `+ 0` when `K = 0`, shows in the bits.
                let zeros = |rng: &mut crate::rng::Rng| {
                    let mut z = dense(rng);
                    z.c0.iter_mut().for_each(|v| *v = -0.0);
                    z.m.iter_mut().step_by(2).for_each(|v| *v = -0.0);
                    z
                };
                let mut pairs = vec![
                    (dense(&mut rng), dense(&mut rng)),
                    (zeros(&mut rng), dense(&mut rng)),
                    (zeros(&mut rng), zeros(&mut rng)),
                ];
                if sizes.len() == 4 {
                    let a = bl.var_range(0, 0, d, d);
                    let x = a.scale(1.7).add(&bl.var(2, d)).add(&bl.var(1, d));
                    let y = x.mul(&normal(d, d, &mut rng)).sub(&bl.var(3, d));
                    pairs.push((x, y));
                }
                for (x, y) in &pairs {
                    for (p, q) in [(x, y), (y, x), (x, x)] {
                        let want = Blocks::moment_nalgebra(&bl.cov, p, q);
                        assert!(
                            same_bits(&bl.moment(p, q), &want),
                            "d {d}, blocks {sizes:?}"
                        );
                    }
                    let mut want = DMat::zeros(2 * d, 2 * d);
                    for (p, q, r, c) in [(x, x, 0, 0), (x, y, 0, d), (y, x, d, 0), (y, y, d, d)] {
                        want.view_mut((r, c), (d, d))
                            .copy_from(&Blocks::moment_nalgebra(&bl.cov, p, q));
                    }
                    assert!(same_bits(&bl.joint(x, y), &sym(&want)), "d {d}, {sizes:?}");
                }
                // A moment between quantities of different widths.
                for dy in [1, d + 1, 7] {
                    let y = Affine {
                        c0: normal(1, dy, &mut rng),
                        m: normal(k, dy, &mut rng),
                    };
                    let (x, _) = &pairs[0];
                    let want = Blocks::moment_nalgebra(&bl.cov, x, &y);
                    assert!(
                        same_bits(&bl.moment(x, &y), &want),
                        "d {d} x {dy}, {sizes:?}"
                    );
                }
            }
        }
    }
}
