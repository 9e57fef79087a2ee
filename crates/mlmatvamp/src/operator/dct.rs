//! A subsampled orthogonal transform: `n_out` seeded rows of the orthonormal DCT-II of length
//! `n_in`, applied after seeded random signs and scaled by `c`:
//! `W = c · S D diag(σ)`, so that `W Wᵀ = c² I_{n_out}` (spec of the matrix-free layer,
//! `docs/matrix-free.md`). `W X` and `Wᵀ Y` cost `O(n_in log n_in)` per column (rustdct) and no
//! matrix is ever stored.

use super::{LinearOperator, SpectralLaw};
use crate::error::{Error, Result};
use crate::rows::check_shape;
use faer::{MatMut, MatRef};
use rand::seq::SliceRandom;
use rand::RngExt;
use rayon::prelude::*;
use rustdct::{Dct2, Dct3, DctPlanner};
use std::sync::Arc;

/// `W = c · S D diag(σ)`: `D` the orthonormal DCT-II (`n_in × n_in`), `σ` random signs, `S` a
/// selection of `n_out ≤ n_in` distinct rows, both drawn from `seed`.
#[derive(Clone)]
pub struct SubsampledDct {
    n_out: usize,
    n_in: usize,
    rows: Vec<usize>,
    signs: Vec<f64>,
    scale: f64,
    seed: u64,
    dct2: Arc<dyn Dct2<f64>>,
    dct3: Arc<dyn Dct3<f64>>,
}

impl std::fmt::Debug for SubsampledDct {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubsampledDct")
            .field("n_out", &self.n_out)
            .field("n_in", &self.n_in)
            .field("scale", &self.scale)
            .field("seed", &self.seed)
            .finish()
    }
}

impl SubsampledDct {
    /// `n_out` rows of the `n_in`-point orthonormal DCT with random signs, scaled by `scale`
    /// (`W Wᵀ = scale² I`), drawn from `seed`. Needs `1 ≤ n_out ≤ n_in` and a positive finite
    /// scale.
    pub fn new(n_out: usize, n_in: usize, scale: f64, seed: u64) -> Result<Self> {
        if n_out == 0 || n_in == 0 || n_out > n_in {
            return Err(Error::invalid(
                "DCT operator",
                format!(
                    "a subsampled orthogonal transform needs 1 <= rows <= cols, got {n_out} x {n_in}"
                ),
            ));
        }
        if n_in > crate::limits::MAX_DIMENSION {
            return Err(Error::invalid(
                "DCT operator",
                format!(
                    "at most {} columns, got {n_in}",
                    crate::limits::MAX_DIMENSION
                ),
            ));
        }
        if !(scale > 0.0 && scale.is_finite()) {
            return Err(Error::invalid(
                "DCT operator",
                format!("the scale must be positive and finite, got {scale}"),
            ));
        }
        let mut rng = crate::rng::named_stream(seed, "dct operator");
        let signs: Vec<f64> = (0..n_in)
            .map(|_| if rng.random::<bool>() { 1.0 } else { -1.0 })
            .collect();
        let mut all: Vec<usize> = (0..n_in).collect();
        all.shuffle(&mut rng);
        let mut rows = all[..n_out].to_vec();
        rows.sort_unstable();
        let mut planner = DctPlanner::new();
        Ok(SubsampledDct {
            n_out,
            n_in,
            rows,
            signs,
            scale,
            seed,
            dct2: planner.plan_dct2(n_in),
            dct3: planner.plan_dct3(n_in),
        })
    }

    /// The selected rows of the DCT (sorted).
    pub fn rows(&self) -> &[usize] {
        &self.rows
    }
    /// The scale `c`.
    pub fn scale(&self) -> f64 {
        self.scale
    }

    /// The orthonormal DCT-II weights: `√(1/n)` for frequency 0, `√(2/n)` otherwise.
    fn norm(&self, k: usize) -> f64 {
        let n = self.n_in as f64;
        if k == 0 {
            (1.0 / n).sqrt()
        } else {
            (2.0 / n).sqrt()
        }
    }

    /// One column: `y = c S D (σ ⊙ x)`.
    fn forward_column(&self, x: &[f64], y: &mut [f64]) {
        let mut buf: Vec<f64> = x.iter().zip(&self.signs).map(|(a, s)| a * s).collect();
        self.dct2.process_dct2(&mut buf);
        for (yi, &k) in y.iter_mut().zip(&self.rows) {
            *yi = self.scale * self.norm(k) * buf[k];
        }
    }

    /// One column: `x = c σ ⊙ Dᵀ Sᵀ y`. With rustdct's DCT-III `x_n = z_0/2 + Σ_k z_k cos(…)`,
    /// `Dᵀ u = DCT3(z)` for `z_0 = 2 w_0 u_0`, `z_k = w_k u_k`.
    fn transpose_column(&self, y: &[f64], x: &mut [f64]) {
        let mut buf = vec![0.0; self.n_in];
        for (&yi, &k) in y.iter().zip(&self.rows) {
            let w = self.norm(k) * if k == 0 { 2.0 } else { 1.0 };
            buf[k] = self.scale * w * yi;
        }
        self.dct3.process_dct3(&mut buf);
        for ((xi, b), s) in x.iter_mut().zip(&buf).zip(&self.signs) {
            *xi = b * s;
        }
    }

    /// Runs `f` on every column of `input` into the matching column of `out`, columns in
    /// parallel (each column's arithmetic is sequential: deterministic).
    fn by_columns(
        &self,
        input: MatRef<'_, f64>,
        mut out: MatMut<'_, f64>,
        f: impl Fn(&[f64], &mut [f64]) + Sync,
    ) {
        let (n_in_rows, n_out_rows, d) = (input.nrows(), out.nrows(), input.ncols());
        let cols: Vec<Vec<f64>> = (0..d)
            .map(|j| (0..n_in_rows).map(|i| input[(i, j)]).collect())
            .collect();
        let results: Vec<Vec<f64>> = cols
            .par_iter()
            .map(|c| {
                let mut r = vec![0.0; n_out_rows];
                f(c, &mut r);
                r
            })
            .collect();
        for (j, r) in results.iter().enumerate() {
            for (i, &v) in r.iter().enumerate() {
                out[(i, j)] = v;
            }
        }
    }
}

impl LinearOperator for SubsampledDct {
    fn shape(&self) -> (usize, usize) {
        (self.n_out, self.n_in)
    }
    fn describe(&self) -> String {
        format!(
            "subsampled DCT {} x {} (scale {}, seed {})",
            self.n_out, self.n_in, self.scale, self.seed
        )
    }
    fn apply(&self, x: MatRef<'_, f64>, out: MatMut<'_, f64>) -> Result<()> {
        check_shape("input of W X", x, self.n_in, out.ncols())?;
        check_shape("output of W X", out.as_ref(), self.n_out, x.ncols())?;
        self.by_columns(x, out, |a, b| self.forward_column(a, b));
        Ok(())
    }
    fn apply_transpose(&self, y: MatRef<'_, f64>, out: MatMut<'_, f64>) -> Result<()> {
        check_shape("input of Wᵀ Y", y, self.n_out, out.ncols())?;
        check_shape("output of Wᵀ Y", out.as_ref(), self.n_in, y.ncols())?;
        self.by_columns(y, out, |a, b| self.transpose_column(a, b));
        Ok(())
    }
    fn spectral_law(&self) -> Option<SpectralLaw> {
        SpectralLaw::orthogonal_rows(self.n_out, self.n_in, self.scale * self.scale).ok()
    }
    fn row_gram_scale(&self) -> Option<f64> {
        Some(self.scale * self.scale)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use faer::Mat;

    #[test]
    fn rows_are_orthogonal_and_transpose_is_the_adjoint() {
        let op = SubsampledDct::new(12, 40, 1.5, 3).unwrap();
        // W Wᵀ = c² I, column by column of the identity.
        let eye = Mat::<f64>::identity(12, 12);
        let wt = crate::operator::apply_transpose(&op, eye.as_ref()).unwrap();
        let wwt = crate::operator::apply(&op, wt.as_ref()).unwrap();
        for i in 0..12 {
            for j in 0..12 {
                let want = if i == j { 2.25 } else { 0.0 };
                assert!(
                    (wwt[(i, j)] - want).abs() < 1e-12,
                    "({i}, {j}): {}",
                    wwt[(i, j)]
                );
            }
        }
        // <W x, y> = <x, Wᵀ y>.
        let x = Mat::from_fn(40, 3, |i, j| ((i * 7 + j * 3) % 11) as f64 - 5.0);
        let y = Mat::from_fn(12, 3, |i, j| ((i * 5 + j) % 7) as f64 - 3.0);
        let wx = crate::operator::apply(&op, x.as_ref()).unwrap();
        let wty = crate::operator::apply_transpose(&op, y.as_ref()).unwrap();
        for j in 0..3 {
            let a: f64 = (0..12).map(|i| wx[(i, j)] * y[(i, j)]).sum();
            let b: f64 = (0..40).map(|i| x[(i, j)] * wty[(i, j)]).sum();
            assert!((a - b).abs() < 1e-10 * a.abs().max(1.0), "{a} vs {b}");
        }
        assert!(SubsampledDct::new(41, 40, 1.0, 0).is_err());
        assert!(SubsampledDct::new(4, 40, 0.0, 0).is_err());
    }
}
