//! Helpers for the tall `n x d` matrices (faer, column-major) that hold activations and
//! messages: shape and finiteness checks, right-multiplication by a small `d x d` matrix, and
//! the parallel row map used by every row-wise denoiser.

mod thin;
pub(crate) use crate::cpu::has_avx2_fma;

use crate::error::{Error, Result};
use crate::spd::DMat;
use faer::reborrow::ReborrowMut;
use faer::{Mat, MatRef};
use rayon::prelude::*;

/// Rows per parallel chunk. Fixed, so that results (including reductions) do not depend on
/// the number of threads.
pub const ROW_CHUNK: usize = 256;

/// `"n x d"`.
pub fn shape_str(m: MatRef<'_, f64>) -> String {
    format!("{} x {}", m.nrows(), m.ncols())
}

/// Checks the shape of an `n x d` matrix.
pub fn check_shape(what: &str, m: MatRef<'_, f64>, rows: usize, cols: usize) -> Result<()> {
    if m.nrows() != rows || m.ncols() != cols {
        return Err(Error::shape(what, format!("{rows} x {cols}"), shape_str(m)));
    }
    Ok(())
}

/// Column `j` of `m` as a slice when it is contiguous (faer's default layout).
fn col_slice<'a>(m: MatRef<'a, f64>, j: usize) -> Option<&'a [f64]> {
    m.col(j).try_as_col_major().map(|c| c.as_slice())
}

/// Returns the first non-finite entry, if any.
pub fn first_non_finite(m: MatRef<'_, f64>) -> Option<(usize, usize, f64)> {
    for j in 0..m.ncols() {
        if let Some(c) = col_slice(m, j) {
            // A contiguous column is scanned as a slice; only a column with a non-finite
            // entry is searched again for its position.
            if all_finite(c) {
                continue;
            }
        }
        for i in 0..m.nrows() {
            let x = m[(i, j)];
            if !x.is_finite() {
                return Some((i, j, x));
            }
        }
    }
    None
}

/// Whether every entry of `c` is finite: chunks of 16 tested without an early exit inside a
/// chunk, so that the test is vectorised (an early-exit scan runs one entry at a time).
#[inline]
fn all_finite(c: &[f64]) -> bool {
    let mut chunks = c.chunks_exact(16);
    for ch in &mut chunks {
        let mut bad = false;
        for &x in ch {
            bad |= !x.is_finite();
        }
        if bad {
            return false;
        }
    }
    chunks.remainder().iter().all(|x| x.is_finite())
}

/// Whether `x` and `y` have the same shape and the same bits in every entry (`-0 ≠ +0`, a NaN
/// equals only the same NaN): the key comparison of the product caches. Contiguous columns
/// are compared in chunks of 16 without an early exit inside a chunk, so that the comparison
/// is vectorised.
pub fn same_bits(x: MatRef<'_, f64>, y: MatRef<'_, f64>) -> bool {
    if (x.nrows(), x.ncols()) != (y.nrows(), y.ncols()) {
        return false;
    }
    (0..x.ncols()).all(|j| match (col_slice(x, j), col_slice(y, j)) {
        (Some(a), Some(b)) => {
            let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
            let tails = ca
                .remainder()
                .iter()
                .zip(cb.remainder())
                .all(|(p, q)| p.to_bits() == q.to_bits());
            tails
                && ca.zip(cb).all(|(p, q)| {
                    p.iter()
                        .zip(q)
                        .fold(0u64, |acc, (p, q)| acc | (p.to_bits() ^ q.to_bits()))
                        == 0
                })
        }
        _ => (0..x.nrows()).all(|i| x[(i, j)].to_bits() == y[(i, j)].to_bits()),
    })
}

/// Checks that all entries are finite.
pub fn check_finite(what: &str, m: MatRef<'_, f64>) -> Result<()> {
    match first_non_finite(m) {
        Some((i, j, x)) => Err(Error::NonFinite {
            what: what.to_string(),
            detail: format!("entry ({i}, {j}) is {x}"),
        }),
        None => Ok(()),
    }
}

/// `R G` for an `n x k` matrix `R` and a small `k x m` matrix `G`.
///
/// Entry `(i, j)` is the sequential sum `((+0 + G_0j R_i0) + G_1j R_i1) + …` over the `l` with
/// `G_lj ≠ 0` (a zero entry of `G` adds nothing, not even a signed zero or `0 · ∞`). Large
/// products are split by rows over two tasks ([`split_small_products`]); every entry is the same
/// sum either way.
pub fn mul_small(r: MatRef<'_, f64>, g: &DMat) -> Mat<f64> {
    debug_assert_eq!(r.ncols(), g.nrows());
    let mut out = Mat::<f64>::zeros(r.nrows(), g.ncols());
    if !split_small_products(out.as_mut(), r, g, None) {
        columnwise(&mut out, r, g);
    }
    out
}

/// `A G + B H` for `n x k` matrices `A`, `B` and small matrices `G`, `H`: entry by entry the
/// sum of [`mul_small`]'s two sums, `(A G)_ij + (B H)_ij`, in one pass without forming either
/// product.
pub fn mul_small_sum(a: MatRef<'_, f64>, g: &DMat, b: MatRef<'_, f64>, h: &DMat) -> Mat<f64> {
    debug_assert_eq!((a.nrows(), g.ncols()), (b.nrows(), h.ncols()));
    let mut out = Mat::<f64>::zeros(a.nrows(), g.ncols());
    if !split_small_products(out.as_mut(), a, g, Some((b, h))) {
        columnwise(&mut out, a, g);
        let mut bh = Mat::<f64>::zeros(b.nrows(), h.ncols());
        columnwise(&mut bh, b, h);
        out += &bh;
    }
    out
}

/// Rows from which [`small_products`] is split over [`PAR_WIDTH`] tasks. Below, one task on
/// the calling thread: a product of `n x d` by `d x d` is a few microseconds per thousand rows,
/// about what waking a second thread costs.
const SPLIT_PRODUCT_ROWS: usize = 1024;

/// [`small_products`] on two halves of the rows under one `rayon::join` when there are at
/// least [`SPLIT_PRODUCT_ROWS`] rows (rows are independent: the same bits as one call).
fn split_small_products(
    mut out: faer::MatMut<'_, f64>,
    a: MatRef<'_, f64>,
    g: &DMat,
    second: Option<(MatRef<'_, f64>, &DMat)>,
) -> bool {
    let n = a.nrows();
    if n < SPLIT_PRODUCT_ROWS || PAR_WIDTH != 2 {
        return small_products(out, a, g, second);
    }
    let half = (n / 2).next_multiple_of(PRODUCT_ROWS);
    if !all_contiguous(out.rb_mut(), a, second) {
        return false;
    }
    let (top, bottom) = out.split_at_row_mut(half);
    let upper = second.map(|(b, h)| (b.subrows(0, half), h));
    let lower = second.map(|(b, h)| (b.subrows(half, n - half), h));
    let (x, y) = rayon::join(
        || small_products(top, a.subrows(0, half), g, upper),
        || small_products(bottom, a.subrows(half, n - half), g, lower),
    );
    debug_assert!(x && y, "contiguous columns stay contiguous in row blocks");
    x && y
}

/// [`mul_small`]'s sums added column by column into `out` (zero on entry): any layout.
fn columnwise(out: &mut Mat<f64>, r: MatRef<'_, f64>, g: &DMat) {
    let (n, k) = (r.nrows(), r.ncols());
    for j in 0..g.ncols() {
        let mut oj = out.col_mut(j);
        for l in 0..k {
            let c = g[(l, j)];
            if c == 0.0 {
                continue;
            }
            let rl = r.col(l);
            for i in 0..n {
                oj[i] += c * rl[i];
            }
        }
    }
}

/// Whether every column of `out`, `A` and `B` is contiguous ([`small_products`]' layout).
fn all_contiguous(
    mut out: faer::MatMut<'_, f64>,
    a: MatRef<'_, f64>,
    second: Option<(MatRef<'_, f64>, &DMat)>,
) -> bool {
    let cols = |m: MatRef<'_, f64>| (0..m.ncols()).all(|l| col_slice(m, l).is_some());
    cols(a)
        && second.is_none_or(|(b, _)| cols(b))
        && (0..out.ncols()).all(|j| out.rb_mut().col_mut(j).try_as_col_major_mut().is_some())
}

/// Rows per register block of [`small_products`] (two AVX2 registers).
const PRODUCT_ROWS: usize = 8;
/// Columns of the output per register block of [`small_products`]: independent sums side by
/// side, so that the additions' latency overlaps.
const PRODUCT_COLS: usize = 4;

/// `out = A G (+ B H)` for contiguous columns, [`PRODUCT_ROWS`] rows by [`PRODUCT_COLS`] columns
/// at a time with each sum in registers (the same sums as [`columnwise`], so the same bits).
/// Returns `false`, leaving `out` untouched, if a column is not contiguous.
fn small_products(
    mut out: faer::MatMut<'_, f64>,
    a: MatRef<'_, f64>,
    g: &DMat,
    second: Option<(MatRef<'_, f64>, &DMat)>,
) -> bool {
    if !all_contiguous(out.rb_mut(), a, second) {
        return false;
    }
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: the processor has AVX2 (checked at run time).
        unsafe { small_products_avx2(out, a, g, second) };
        return true;
    }
    small_products_portable(out, a, g, second);
    true
}

/// [`small_products_portable`] compiled for AVX2 (no fused multiply-adds: Rust does not
/// contract `a * b + c`).
///
/// # Safety
/// The processor must support AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn small_products_avx2(
    out: faer::MatMut<'_, f64>,
    a: MatRef<'_, f64>,
    g: &DMat,
    second: Option<(MatRef<'_, f64>, &DMat)>,
) {
    small_products_portable(out, a, g, second)
}

/// The sums of rows `i0..i0 + W` of columns `j0..j0 + J` of `A G`, each from `+0` over the
/// non-zero `G_lj` in the order of `l`.
#[inline(always)]
fn block_sums<const W: usize, const J: usize>(
    a: MatRef<'_, f64>,
    g: &DMat,
    j0: usize,
    i0: usize,
) -> [[f64; W]; J] {
    let mut s = [[0.0; W]; J];
    for l in 0..a.ncols() {
        // Contiguous columns (checked by `small_products`); the block lies within them.
        let x = &col_slice(a, l).unwrap_or(&[])[i0..i0 + W];
        for (jj, s) in s.iter_mut().enumerate() {
            let c = g[(l, j0 + jj)];
            if c != 0.0 {
                for (s, x) in s.iter_mut().zip(x) {
                    *s += c * x;
                }
            }
        }
    }
    s
}

/// Rows `i0..i0 + W`, columns `j0..j0 + J` of `out`.
#[inline(always)]
fn product_block<const W: usize, const J: usize>(
    out: &mut faer::MatMut<'_, f64>,
    a: MatRef<'_, f64>,
    g: &DMat,
    second: Option<(MatRef<'_, f64>, &DMat)>,
    j0: usize,
    i0: usize,
) {
    let mut s = block_sums::<W, J>(a, g, j0, i0);
    if let Some((b, h)) = second {
        let t = block_sums::<W, J>(b, h, j0, i0);
        for (s, t) in s.iter_mut().zip(&t) {
            for (s, t) in s.iter_mut().zip(t) {
                *s += t;
            }
        }
    }
    for (jj, s) in s.iter().enumerate() {
        if let Some(o) = out.rb_mut().col_mut(j0 + jj).try_as_col_major_mut() {
            o.as_slice_mut()[i0..i0 + W].copy_from_slice(s);
        }
    }
}

/// The columns `j0..j0 + J` of `out`, in blocks of 8, 4 and 1 rows.
#[inline(always)]
fn product_columns<const J: usize>(
    out: &mut faer::MatMut<'_, f64>,
    a: MatRef<'_, f64>,
    g: &DMat,
    second: Option<(MatRef<'_, f64>, &DMat)>,
    j0: usize,
) {
    let n = a.nrows();
    let mut i0 = 0;
    while i0 + PRODUCT_ROWS <= n {
        product_block::<PRODUCT_ROWS, J>(out, a, g, second, j0, i0);
        i0 += PRODUCT_ROWS;
    }
    if i0 + 4 <= n {
        product_block::<4, J>(out, a, g, second, j0, i0);
        i0 += 4;
    }
    while i0 < n {
        product_block::<1, J>(out, a, g, second, j0, i0);
        i0 += 1;
    }
}

#[inline(always)]
fn small_products_portable(
    mut out: faer::MatMut<'_, f64>,
    a: MatRef<'_, f64>,
    g: &DMat,
    second: Option<(MatRef<'_, f64>, &DMat)>,
) {
    let m = g.ncols();
    let mut j0 = 0;
    while j0 < m {
        match m - j0 {
            1 => product_columns::<1>(&mut out, a, g, second, j0),
            2 => product_columns::<2>(&mut out, a, g, second, j0),
            3 => product_columns::<3>(&mut out, a, g, second, j0),
            _ => product_columns::<PRODUCT_COLS>(&mut out, a, g, second, j0),
        }
        j0 += PRODUCT_COLS;
    }
}

/// Converts a small faer matrix to a [`DMat`].
pub fn to_dmat(m: MatRef<'_, f64>) -> DMat {
    DMat::from_fn(m.nrows(), m.ncols(), |i, j| m[(i, j)])
}

/// Converts a [`DMat`] to a faer matrix.
pub fn from_dmat(m: &DMat) -> Mat<f64> {
    Mat::from_fn(m.nrows(), m.ncols(), |i, j| m[(i, j)])
}

/// `(1/n) A^T B` for two `n x d` matrices (a row-averaged second moment).
///
/// Every entry is the sequential sum `((0 + a_0 b_0) + a_1 b_1) + …` over the rows, in row order.
/// Up to [`CROSS_LANES`] columns of `B` are accumulated in one pass over the rows (independent
/// sums side by side, each in the same order, hence the same bits as one pass per entry), and
/// for `A = B` only the upper triangle is summed (`a_i b_i = b_i a_i` exactly) and mirrored.
pub fn cross_moment(a: MatRef<'_, f64>, b: MatRef<'_, f64>) -> DMat {
    let n = a.nrows().max(1) as f64;
    let (da, db) = (a.ncols(), b.ncols());
    let mut out = DMat::zeros(da, db);
    let same = a.nrows() == b.nrows()
        && da == db
        && std::ptr::eq(a.as_ptr(), b.as_ptr())
        && a.row_stride() == b.row_stride()
        && a.col_stride() == b.col_stride();
    let contiguous =
        (0..da).all(|p| col_slice(a, p).is_some()) && (0..db).all(|q| col_slice(b, q).is_some());
    if !contiguous {
        for p in 0..da {
            for q in 0..db {
                let (ca, cb) = (a.col(p), b.col(q));
                let s = (0..a.nrows()).fold(0.0, |s, i| s + ca[i] * cb[i]);
                out[(p, q)] = s / n;
            }
        }
        return out;
    }
    let cols_b: Vec<&[f64]> = (0..db).filter_map(|q| col_slice(b, q)).collect();
    for p in 0..da {
        let ca = col_slice(a, p).unwrap_or(&[]);
        let first = if same { p } else { 0 };
        let mut q0 = first;
        while q0 < db {
            let w = (db - q0).min(CROSS_LANES);
            let mut acc = [0.0f64; CROSS_LANES];
            let cb = &cols_b[q0..q0 + w];
            for (i, &x) in ca.iter().enumerate() {
                for (s, c) in acc[..w].iter_mut().zip(cb) {
                    *s += x * c[i];
                }
            }
            for (k, s) in acc[..w].iter().enumerate() {
                out[(p, q0 + k)] = s / n;
                if same {
                    out[(q0 + k, p)] = s / n;
                }
            }
            q0 += w;
        }
    }
    out
}

/// Columns of `B` summed side by side in [`cross_moment`].
const CROSS_LANES: usize = 8;

/// Row-averaged squared error `(1/n) ||A - B||_F^2` and the `d x d` error covariance
/// `(1/n) (A - B)^T (A - B)`.
pub fn error_stats(est: MatRef<'_, f64>, truth: MatRef<'_, f64>) -> (f64, DMat) {
    let diff = est - truth;
    let c = cross_moment(diff.as_ref(), diff.as_ref());
    (c.trace(), c)
}

/// The output of a row map: the `n x k` matrix of per-row outputs and the sum over rows of a
/// per-row accumulator of length `m`.
pub struct RowMapOutput {
    /// Per-row outputs, `n x k`.
    pub rows: Mat<f64>,
    /// Sum over rows of the accumulators.
    pub acc: Vec<f64>,
}

/// Applies a row function to `n` rows in parallel, deterministically.
///
/// `f(i, out, acc)` writes row `i`'s `k` outputs into `out` and adds its contribution to the
/// accumulator `acc` (length `m`, e.g. a flattened `d x d` covariance). Rows are processed in
/// fixed chunks of [`ROW_CHUNK`]; chunk accumulators are summed in chunk order, so the result
/// does not depend on the number of threads. The first error (in row order) is returned.
pub fn par_map_rows<F>(n: usize, k: usize, m: usize, f: F) -> Result<RowMapOutput>
where
    F: Fn(usize, &mut [f64], &mut [f64]) -> Result<()> + Sync,
{
    par_map_rows_with(n, k, m, || (), |_, i, out, acc| f(i, out, acc))
}

/// As [`par_map_rows`], with a scratch value made once per chunk by `init` and handed to every
/// row of the chunk, so that a row function needs no allocation of its own (buffers, a Newton
/// workspace). A problem of a single chunk runs on the calling thread: no task is spawned.
pub fn par_map_rows_with<S, I, F>(
    n: usize,
    k: usize,
    m: usize,
    init: I,
    f: F,
) -> Result<RowMapOutput>
where
    I: Fn() -> S + Sync,
    F: Fn(&mut S, usize, &mut [f64], &mut [f64]) -> Result<()> + Sync,
{
    let nchunks = n.div_ceil(ROW_CHUNK);
    let chunk = |c: usize| -> Result<(Vec<f64>, Vec<f64>)> {
        let start = c * ROW_CHUNK;
        let end = (start + ROW_CHUNK).min(n);
        let mut scratch = init();
        let mut out = vec![0.0; (end - start) * k];
        let mut acc = vec![0.0; m];
        for i in start..end {
            let o = &mut out[(i - start) * k..(i - start + 1) * k];
            f(&mut scratch, i, o, &mut acc)?;
        }
        Ok((out, acc))
    };
    let parts: Vec<Result<(Vec<f64>, Vec<f64>)>> = if nchunks <= 1 {
        (0..nchunks).map(chunk).collect()
    } else {
        (0..nchunks).into_par_iter().map(chunk).collect()
    };
    let mut rows = Mat::<f64>::zeros(n, k);
    let mut acc = vec![0.0; m];
    for (c, part) in parts.into_iter().enumerate() {
        let (out, a) = part?;
        let start = c * ROW_CHUNK;
        for (r, chunk) in out
            .chunks(k.max(1))
            .enumerate()
            .take(out.len().checked_div(k).unwrap_or(0))
        {
            for (j, &x) in chunk.iter().enumerate() {
                rows[(start + r, j)] = x;
            }
        }
        for (s, x) in acc.iter_mut().zip(a) {
            *s += x;
        }
    }
    Ok(RowMapOutput { rows, acc })
}

/// Copies row `i` of `m` into `buf`.
#[inline]
pub fn read_row(m: MatRef<'_, f64>, i: usize, buf: &mut [f64]) {
    for (j, b) in buf.iter_mut().enumerate() {
        *b = m[(i, j)];
    }
}

/// The task width of dense products and SVDs on large matrices: a fixed number of parallel
/// tasks, not the number of threads, so that results are bit-identical on any machine, with any
/// thread pool, and inside or outside parallel trials (faer's blocked algorithms sum in an order
/// that depends on the task split).
pub const PAR_WIDTH: usize = 2;

/// Sets faer's global parallelism to a fixed number (2) of tasks (not the thread count), so that faer
/// calls made outside the engine (which passes its parallelism explicitly) are also
/// bit-identical whatever the thread pool. Front doors call this once at start-up.
pub fn use_deterministic_parallelism() {
    faer::set_global_parallelism(faer::Par::rayon(PAR_WIDTH));
}

/// The parallelism for an operation of about `work` multiply-adds: sequential below `2^20`,
/// otherwise [`PAR_WIDTH`] tasks. Deterministic for a given problem size.
pub fn par_for(work: usize) -> faer::Par {
    if work < 1 << 20 {
        faer::Par::Seq
    } else {
        faer::Par::rayon(PAR_WIDTH)
    }
}

/// `A B` (independent of faer's global setting); see [`matmul_into`].
pub fn matmul(a: MatRef<'_, f64>, b: MatRef<'_, f64>) -> Mat<f64> {
    let mut out = Mat::<f64>::zeros(a.nrows(), b.ncols());
    matmul_into(out.as_mut(), a, b);
    out
}

/// `out = A B` for the thin products of the engine (`A` large, `B` with `d` columns). Below
/// `2^20` multiply-adds, one sequential kernel on the calling thread. Above, the rows of `A`
/// and `out` are split into two fixed halves (`PAR_WIDTH`) computed by two sequential kernels under
/// one `rayon::join`: one fork and one join per product. (faer's own parallel kernel forks and
/// joins once per cache block of the inner dimension; on a busy machine each of those waits for
/// a descheduled thread, which made two threads up to three times slower than one.) Every entry
/// is the same sequential sum whatever the pool size, so results do not depend on the threads.
pub fn matmul_into(out: faer::MatMut<'_, f64>, a: MatRef<'_, f64>, b: MatRef<'_, f64>) {
    let m = a.nrows();
    if a.nrows() * a.ncols() * b.ncols() < 1 << 20 || m < 2 * 64 {
        sequential_product(out, a, b);
        return;
    }
    let half = (m / PAR_WIDTH).next_multiple_of(8).min(m);
    let (top, bottom) = out.split_at_row_mut(half);
    rayon::join(
        || sequential_product(top, a.subrows(0, half), b),
        || sequential_product(bottom, a.subrows(half, m - half), b),
    );
}

/// `out = A B` on the calling thread: the streaming kernels of [`thin`] for thin `B`, faer's
/// sequential kernel otherwise.
fn sequential_product(out: faer::MatMut<'_, f64>, a: MatRef<'_, f64>, b: MatRef<'_, f64>) {
    let mut out = out;
    if !thin::thin_product(out.rb_mut(), a, b) {
        faer::linalg::matmul::matmul(out, faer::Accum::Replace, a, b, 1.0, faer::Par::Seq);
    }
}

/// The sum of `data` with eight independent accumulators, so that the loop is limited by memory
/// bandwidth rather than by the latency of one chain of additions: the benchmarks measure the
/// machine's streaming-read bandwidth with it (a plain `iter().sum()` is one dependent chain and
/// reads at less than half the bandwidth).
pub fn stream_sum(data: &[f64]) -> f64 {
    let mut acc = [0.0f64; 8];
    let chunks = data.chunks_exact(8);
    let tail: f64 = chunks.remainder().iter().sum();
    for c in chunks {
        for (a, x) in acc.iter_mut().zip(c) {
            *a += x;
        }
    }
    acc.iter().sum::<f64>() + tail
}

/// The thin SVD `A = U diag(s) V^T` with [`par_for`] parallelism (independent of faer's global
/// setting): `U` is `m x r`, `s` has `r = min(m, n)` non-increasing values, `V` is `n x r`.
pub fn thin_svd(a: MatRef<'_, f64>) -> Result<(Mat<f64>, Vec<f64>, Mat<f64>)> {
    use faer::linalg::svd::{svd, svd_scratch, ComputeSvdVectors};
    let (m, n) = (a.nrows(), a.ncols());
    let r = m.min(n);
    // Below 2^22 multiply-adds (e.g. the 200 x 100 inputs of Figure 2) faer's parallel SVD
    // costs more in synchronisation than it saves: two threads made a trial slower than one.
    let par = if m * n * r < 1 << 22 {
        faer::Par::Seq
    } else {
        par_for(m * n * r)
    };
    // `U` is kept and streamed by a linear layer: on huge pages when large (`pages`).
    let mut u = crate::pages::zeros(m, r);
    let mut v = Mat::<f64>::zeros(n, r);
    let mut s = faer::diag::Diag::<f64>::zeros(r);
    let req = svd_scratch::<f64>(
        m,
        n,
        ComputeSvdVectors::Thin,
        ComputeSvdVectors::Thin,
        par,
        Default::default(),
    );
    let mut buf = faer::dyn_stack::MemBuffer::new(req);
    svd(
        a,
        s.as_mut(),
        Some(u.as_mut()),
        Some(v.as_mut()),
        par,
        faer::dyn_stack::MemStack::new(&mut buf),
        Default::default(),
    )
    .map_err(|e| Error::Numerical {
        what: "thin SVD".into(),
        detail: format!("{e:?}"),
    })?;
    let s = (0..r).map(|i| s[i]).collect();
    Ok((u, s, v))
}

thread_local! {
    /// Per-thread pool of reusable `f64` buffers (see [`take_buffer`]).
    static BUFFERS: std::cell::RefCell<Vec<Vec<f64>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A zeroed buffer of `len` values from this thread's pool (a fresh one if the pool is empty):
/// hot loops over large blocks reuse their scratch instead of mapping fresh memory every call.
/// Give it back with [`give_buffer`]. The pool is only borrowed for the moment of the exchange,
/// so nested or work-stolen calls on the same thread are safe.
pub(crate) fn take_buffer(len: usize) -> Vec<f64> {
    let mut v = BUFFERS.with(|b| b.borrow_mut().pop()).unwrap_or_default();
    v.clear();
    v.resize(len, 0.0);
    v
}

/// Returns a buffer taken with [`take_buffer`] to this thread's pool (at most 8 are kept).
pub(crate) fn give_buffer(v: Vec<f64>) {
    BUFFERS.with(|b| {
        let mut b = b.borrow_mut();
        if b.len() < 8 {
            b.push(v);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first non-finite entry is found wherever it is: in a full chunk of the vectorised
    /// scan or in the remainder, in any column, NaN or either infinity; a later one does not
    /// hide it.
    #[test]
    fn first_non_finite_finds_every_position() {
        let (n, d) = (37, 3);
        let base = Mat::from_fn(n, d, |i, j| (i as f64 - 10.0) * 1e300 + j as f64);
        assert_eq!(first_non_finite(base.as_ref()), None);
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            for j in 0..d {
                for i in 0..n {
                    let mut m = base.clone();
                    m[(i, j)] = bad;
                    if i + 1 < n {
                        m[(n - 1, j)] = f64::NAN;
                    }
                    let (gi, gj, x) = first_non_finite(m.as_ref()).expect("found");
                    assert_eq!((gi, gj), (i, j));
                    assert_eq!(x.to_bits(), bad.to_bits());
                    assert!(check_finite("m", m.as_ref()).is_err());
                }
            }
        }
        // A non-contiguous view (a transpose) takes the entry-by-entry path.
        let mut m = base.clone();
        m[(20, 1)] = f64::NAN;
        assert_eq!(
            first_non_finite(m.transpose()).map(|t| (t.0, t.1)),
            Some((1, 20))
        );
    }

    /// [`mul_small`]'s definition: per entry the sequential sum from `+0` over the non-zero
    /// entries of `G`.
    fn naive_mul(r: MatRef<'_, f64>, g: &DMat) -> Mat<f64> {
        Mat::from_fn(r.nrows(), g.ncols(), |i, j| {
            (0..r.ncols())
                .filter(|&l| g[(l, j)] != 0.0)
                .fold(0.0, |s, l| s + g[(l, j)] * r[(i, l)])
        })
    }

    fn same_bits(x: MatRef<'_, f64>, y: MatRef<'_, f64>) -> bool {
        (0..x.ncols()).all(|j| {
            (0..x.nrows()).all(|i| {
                let (a, b) = (x[(i, j)], y[(i, j)]);
                a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
            })
        })
    }

    #[test]
    fn small_products_have_the_bits_of_their_definition() {
        use rand::RngExt;
        let mut rng = crate::rng::rng_from_seed(11);
        let mut next = || rng.random::<f64>() * 2.0 - 1.0;
        // 1024 and 4101 rows: split over two tasks (`SPLIT_PRODUCT_ROWS`).
        for n in [0usize, 1, 7, 8, 10, 17, 100, 259, SPLIT_PRODUCT_ROWS, 4101] {
            for (k, m) in [(1usize, 1usize), (4, 4), (10, 10), (3, 7)] {
                let mut a = Mat::from_fn(n, k, |_, _| next());
                let b = Mat::from_fn(n, k, |_, _| 1e8 * next());
                let mut g = DMat::from_fn(k, m, |_, _| next());
                let h = DMat::from_fn(k, m, |_, _| next());
                // A zero entry of G is skipped even against an infinity; signed zeros.
                g[(0, 0)] = 0.0;
                if n > 3 {
                    a[(3, 0)] = f64::INFINITY;
                    a[(2, k - 1)] = -0.0;
                }
                let ab = naive_mul(a.as_ref(), &g);
                assert!(same_bits(mul_small(a.as_ref(), &g).as_ref(), ab.as_ref()));
                let want = &ab + &naive_mul(b.as_ref(), &h);
                let got = mul_small_sum(a.as_ref(), &g, b.as_ref(), &h);
                assert!(same_bits(got.as_ref(), want.as_ref()), "n = {n}, k = {k}");
                // Strided input (a transposed view): the column-by-column path.
                let at = a.transpose().to_owned();
                let got = mul_small_sum(at.transpose(), &g, b.as_ref(), &h);
                assert!(same_bits(got.as_ref(), want.as_ref()), "strided, n = {n}");
            }
        }
    }

    /// `same_bits` finds a difference of one bit anywhere (in a chunk of 16 or in the tail, in
    /// any column, on contiguous or strided views), tells `-0` from `+0`, and sees the same NaN
    /// as the same.
    #[test]
    fn same_bits_sees_every_difference() {
        let (n, d) = (37, 3);
        let base = Mat::from_fn(n, d, |i, j| (i as f64 - 10.0) * 0.1 + j as f64);
        let t = base.transpose().to_owned();
        assert!(super::same_bits(base.as_ref(), base.clone().as_ref()));
        assert!(super::same_bits(base.as_ref(), t.transpose()));
        assert!(!super::same_bits(base.as_ref(), base.subrows(0, n - 1)));
        for j in 0..d {
            for i in 0..n {
                let mut m = base.clone();
                m[(i, j)] = f64::from_bits(m[(i, j)].to_bits() ^ 1);
                assert!(!super::same_bits(base.as_ref(), m.as_ref()), "({i}, {j})");
                let mt = m.transpose().to_owned();
                assert!(
                    !super::same_bits(base.as_ref(), mt.transpose()),
                    "strided ({i}, {j})"
                );
            }
        }
        let mut z = base.clone();
        z[(20, 1)] = 0.0;
        let mut nz = z.clone();
        nz[(20, 1)] = -0.0;
        assert!(!super::same_bits(z.as_ref(), nz.as_ref()));
        z[(5, 2)] = f64::NAN;
        assert!(super::same_bits(z.as_ref(), z.clone().as_ref()));
    }

    /// The definition of `cross_moment`: one sequential sum per entry, in row order.
    fn naive(a: MatRef<'_, f64>, b: MatRef<'_, f64>) -> DMat {
        let n = a.nrows().max(1) as f64;
        DMat::from_fn(a.ncols(), b.ncols(), |p, q| {
            (0..a.nrows()).fold(0.0, |s, i| s + a[(i, p)] * b[(i, q)]) / n
        })
    }

    #[test]
    fn cross_moment_has_the_bits_of_one_sequential_sum_per_entry() {
        let mut rng = crate::rng_from_seed(5);
        for (n, da, db) in [
            (0, 2, 3),
            (1, 1, 1),
            (37, 4, 4),
            (300, 3, 11),
            (129, 10, 10),
        ] {
            let a = crate::denoise::standard_normal(n, da, &mut rng);
            let b = crate::denoise::standard_normal(n, db, &mut rng);
            for (x, y) in [(a.as_ref(), b.as_ref()), (a.as_ref(), a.as_ref())] {
                let (got, want) = (cross_moment(x, y), naive(x, y));
                for (g, w) in got.iter().zip(want.iter()) {
                    assert_eq!(g.to_bits(), w.to_bits(), "n {n}, {da} x {db}");
                }
            }
            // A row-major view (non-contiguous columns) takes the per-entry path.
            let at = a.transpose().to_owned();
            let v = at.as_ref().transpose();
            let (got, want) = (cross_moment(v, v), naive(v, v));
            for (g, w) in got.iter().zip(want.iter()) {
                assert_eq!(g.to_bits(), w.to_bits());
            }
        }
    }
}
