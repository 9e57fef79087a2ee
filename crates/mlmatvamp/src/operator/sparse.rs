//! A sparse `W` in compressed sparse row (CSR) form, as scipy stores it (`data`, `indices`,
//! `indptr`, `shape`).
//!
//! The products are written here rather than taken from faer 0.24, whose sparse × dense
//! product runs one column of the block at a time on one thread and whose constructors panic on
//! malformed input: here every row of `W` is read once for all `d` columns, rows are split into
//! fixed chunks run in parallel (so the sums do not depend on the thread count), and every
//! malformed input is a named error. `Wᵀ Y` uses the transpose, built once in CSR form.

use super::LinearOperator;
use crate::error::{Error, Result};
use crate::rows::{check_shape, give_buffer, take_buffer, ROW_CHUNK};
use faer::{MatMut, MatRef};
use rayon::prelude::*;

/// A CSR matrix: row `i` holds the entries `data[indptr[i]..indptr[i+1]]` in the columns
/// `indices[indptr[i]..indptr[i+1]]` (strictly increasing).
#[derive(Clone, Debug, PartialEq)]
pub struct Csr {
    nrows: usize,
    ncols: usize,
    indptr: Vec<usize>,
    indices: Vec<usize>,
    data: Vec<f64>,
}

impl Csr {
    /// Validates and wraps CSR arrays. Every problem is an error naming it: `indptr` of the wrong
    /// length, not starting at 0, decreasing or not ending at `nnz`; `indices` and `data` of
    /// different lengths; a column index out of range; column indices not strictly increasing
    /// within a row (unsorted or duplicated); a non-finite value. `what` names the matrix.
    pub fn new(
        what: &str,
        shape: (usize, usize),
        indptr: Vec<usize>,
        indices: Vec<usize>,
        data: Vec<f64>,
    ) -> Result<Self> {
        let (nrows, ncols) = shape;
        let bad = |detail: String| Err(Error::invalid(what, detail));
        if nrows == 0 || ncols == 0 {
            return bad(format!("the shape must be positive, got {nrows} x {ncols}"));
        }
        if indptr.len() != nrows + 1 {
            return bad(format!(
                "`indptr` must have rows + 1 = {} entries, got {}",
                nrows + 1,
                indptr.len()
            ));
        }
        if indices.len() != data.len() {
            return bad(format!(
                "`indices` and `data` must have the same length, got {} and {}",
                indices.len(),
                data.len()
            ));
        }
        if indptr[0] != 0 {
            return bad(format!("`indptr[0]` must be 0, got {}", indptr[0]));
        }
        if let Some(i) = (0..nrows).find(|&i| indptr[i + 1] < indptr[i]) {
            return bad(format!(
                "`indptr` must be non-decreasing, but indptr[{}] = {} < indptr[{i}] = {}",
                i + 1,
                indptr[i + 1],
                indptr[i]
            ));
        }
        if indptr[nrows] != data.len() {
            return bad(format!(
                "`indptr[-1]` must equal the number of stored entries {}, got {}",
                data.len(),
                indptr[nrows]
            ));
        }
        for i in 0..nrows {
            let row = &indices[indptr[i]..indptr[i + 1]];
            if let Some(&j) = row.iter().find(|&&j| j >= ncols) {
                return bad(format!(
                    "row {i} has the column index {j}, out of range for {ncols} columns"
                ));
            }
            if let Some(k) = (1..row.len()).find(|&k| row[k] <= row[k - 1]) {
                return bad(format!(
                    "the column indices of row {i} are not strictly increasing ({} then {}): \
                     sort them and sum duplicates (scipy: `A.sum_duplicates(); A.sort_indices()`)",
                    row[k - 1],
                    row[k]
                ));
            }
        }
        if let Some(k) = data.iter().position(|x| !x.is_finite()) {
            let row = indptr.partition_point(|&p| p <= k) - 1;
            return Err(Error::NonFinite {
                what: what.to_string(),
                detail: format!(
                    "stored entry {k} (row {row}, column {}) is {}",
                    indices[k], data[k]
                ),
            });
        }
        Ok(Csr {
            nrows,
            ncols,
            indptr,
            indices,
            data,
        })
    }

    /// `(rows, columns)`.
    pub fn shape(&self) -> (usize, usize) {
        (self.nrows, self.ncols)
    }
    /// The number of stored entries.
    pub fn nnz(&self) -> usize {
        self.data.len()
    }
    /// The CSR arrays `(indptr, indices, data)`.
    pub fn parts(&self) -> (&[usize], &[usize], &[f64]) {
        (&self.indptr, &self.indices, &self.data)
    }

    /// The transpose, in CSR form (a counting sort: column indices stay sorted).
    pub fn transpose(&self) -> Csr {
        let mut count = vec![0usize; self.ncols + 1];
        for &j in &self.indices {
            count[j + 1] += 1;
        }
        for j in 0..self.ncols {
            count[j + 1] += count[j];
        }
        let indptr = count.clone();
        let mut next = count;
        let mut indices = vec![0usize; self.nnz()];
        let mut data = vec![0.0; self.nnz()];
        for i in 0..self.nrows {
            for k in self.indptr[i]..self.indptr[i + 1] {
                let j = self.indices[k];
                let p = next[j];
                indices[p] = i;
                data[p] = self.data[k];
                next[j] += 1;
            }
        }
        Csr {
            nrows: self.ncols,
            ncols: self.nrows,
            indptr,
            indices,
            data,
        }
    }

    /// `out = A X`: each row of `A` is read once for all columns of `X`; rows run in fixed
    /// chunks in parallel (deterministic).
    pub fn mul_dense(&self, x: MatRef<'_, f64>, mut out: MatMut<'_, f64>) -> Result<()> {
        let d = x.ncols();
        check_shape("input of the sparse product", x, self.ncols, d)?;
        check_shape("output of the sparse product", out.as_ref(), self.nrows, d)?;
        // Row-major copies make each gathered row of X one contiguous read (pooled buffers).
        let mut xr = take_buffer(self.ncols * d);
        for j in 0..d {
            let col = x.col(j);
            for i in 0..self.ncols {
                xr[i * d + j] = col[i];
            }
        }
        let mut yr = take_buffer(self.nrows * d);
        let work = (self.nnz() + self.nrows) * d;
        let body = |(c, chunk): (usize, &mut [f64])| {
            let first = c * ROW_CHUNK;
            for (r, y) in chunk.chunks_mut(d).enumerate() {
                let i = first + r;
                for k in self.indptr[i]..self.indptr[i + 1] {
                    let a = self.data[k];
                    let xrow = &xr[self.indices[k] * d..self.indices[k] * d + d];
                    for (yj, xj) in y.iter_mut().zip(xrow) {
                        *yj += a * xj;
                    }
                }
            }
        };
        if work < 1 << 16 {
            yr.chunks_mut(ROW_CHUNK * d).enumerate().for_each(body);
        } else {
            yr.par_chunks_mut(ROW_CHUNK * d).enumerate().for_each(body);
        }
        for j in 0..d {
            let mut col = out.as_mut().col_mut(j);
            for i in 0..self.nrows {
                col[i] = yr[i * d + j];
            }
        }
        give_buffer(xr);
        give_buffer(yr);
        Ok(())
    }
}

/// A sparse `W` (CSR) as an operator; `Wᵀ` is kept in CSR form too, so both products read each
/// stored entry once per block.
#[derive(Clone, Debug)]
pub struct SparseOperator {
    w: Csr,
    wt: Csr,
}

impl SparseOperator {
    /// The operator of a validated CSR matrix.
    pub fn new(w: Csr) -> Self {
        let wt = w.transpose();
        SparseOperator { w, wt }
    }
    /// From scipy's CSR arrays (validated, see [`Csr::new`]).
    pub fn from_csr(
        what: &str,
        shape: (usize, usize),
        indptr: Vec<usize>,
        indices: Vec<usize>,
        data: Vec<f64>,
    ) -> Result<Self> {
        Ok(Self::new(Csr::new(what, shape, indptr, indices, data)?))
    }
    /// The matrix.
    pub fn csr(&self) -> &Csr {
        &self.w
    }
}

impl LinearOperator for SparseOperator {
    fn shape(&self) -> (usize, usize) {
        self.w.shape()
    }
    fn describe(&self) -> String {
        let (r, c) = self.w.shape();
        format!("sparse {r} x {c} ({} stored entries)", self.w.nnz())
    }
    fn apply(&self, x: MatRef<'_, f64>, out: MatMut<'_, f64>) -> Result<()> {
        self.w.mul_dense(x, out)
    }
    fn apply_transpose(&self, y: MatRef<'_, f64>, out: MatMut<'_, f64>) -> Result<()> {
        self.wt.mul_dense(y, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use faer::Mat;

    fn example() -> Csr {
        // [[1, 0, 2], [0, 0, 0], [0, 3, 0], [4, 0, 5]]
        Csr::new(
            "A",
            (4, 3),
            vec![0, 2, 2, 3, 5],
            vec![0, 2, 1, 0, 2],
            vec![1.0, 2.0, 3.0, 4.0, 5.0],
        )
        .unwrap()
    }

    #[test]
    fn products_match_the_dense_matrix() {
        let a = example();
        let dense = Mat::from_fn(4, 3, |i, j| {
            [
                [1.0, 0.0, 2.0],
                [0.0, 0.0, 0.0],
                [0.0, 3.0, 0.0],
                [4.0, 0.0, 5.0],
            ][i][j]
        });
        let x = Mat::from_fn(3, 2, |i, j| (i as f64 + 1.0) * (j as f64 - 0.5));
        let op = SparseOperator::new(a);
        let mut y = Mat::zeros(4, 2);
        op.apply(x.as_ref(), y.as_mut()).unwrap();
        assert_eq!(y, &dense * &x);
        let z = Mat::from_fn(4, 2, |i, j| i as f64 - j as f64);
        let mut w = Mat::zeros(3, 2);
        op.apply_transpose(z.as_ref(), w.as_mut()).unwrap();
        assert_eq!(w, dense.transpose() * &z);
    }

    #[test]
    fn malformed_arrays_are_named_errors() {
        let e = |r: Result<Csr>| r.unwrap_err().to_string();
        let s = e(Csr::new("A", (2, 3), vec![0, 1], vec![0], vec![1.0]));
        assert!(s.contains("`indptr` must have rows + 1 = 3 entries"), "{s}");
        let s = e(Csr::new(
            "A",
            (2, 3),
            vec![0, 1, 2],
            vec![0, 3],
            vec![1.0, 1.0],
        ));
        assert!(s.contains("column index 3, out of range"), "{s}");
        let s = e(Csr::new(
            "A",
            (1, 3),
            vec![0, 2],
            vec![2, 0],
            vec![1.0, 1.0],
        ));
        assert!(s.contains("not strictly increasing"), "{s}");
        let s = e(Csr::new(
            "A",
            (1, 3),
            vec![0, 2],
            vec![1, 1],
            vec![1.0, 1.0],
        ));
        assert!(s.contains("not strictly increasing"), "{s}");
        let s = e(Csr::new(
            "A",
            (2, 3),
            vec![0, 2, 1],
            vec![0, 1],
            vec![1.0, 1.0],
        ));
        assert!(s.contains("non-decreasing"), "{s}");
        let s = e(Csr::new("A", (1, 3), vec![0, 1], vec![0], vec![f64::NAN]));
        assert!(s.contains("row 0, column 0") && s.contains("NaN"), "{s}");
        let s = e(Csr::new("A", (1, 3), vec![0, 1], vec![0, 1], vec![1.0]));
        assert!(s.contains("same length"), "{s}");
    }
}
