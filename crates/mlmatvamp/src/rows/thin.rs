//! Streaming kernels for the thin products of the engine: `A B` with `A` large (a factor of the
//! SVD, a dense weight) and `B` of `d ≤ 8` columns.
//!
//! Such a product does `d` multiply-adds per entry of `A` it reads, so its cost is one pass over
//! `A` at the memory bandwidth, as long as the kernel keeps enough independent sums in flight.
//! faer's general kernel does not for these shapes (`Vᵀ R` at `d = 4` read `V` at a third of the
//! bandwidth, `docs/speed.md`); these do:
//!
//! * [`dot_rows`] — rows of `A` contiguous (`Vᵀ R`, the dense operator's stored `Wᵀ`):
//!   `out[i, c] = Σ_k A[i, k] B[k, c]` with eight lanes of partial sums per output entry, summed
//!   in a fixed tree at the end;
//! * [`axpy_cols`] — columns of `A` contiguous (`V X`, `U X`): `out[:, c] += Σ_{j ∈ block}
//!   A[:, j] B[j, c]` over blocks of four columns, each column of `A` read once and `out` kept
//!   in cache.
//!
//! The order of every sum depends only on the shapes, never on the thread count or the SIMD
//! width chosen at run time (AVX-512 or AVX2 with FMA when the processor has them, plain
//! arithmetic otherwise), so results are reproducible.

use crate::cpu::{has_avx2_fma, has_avx512vl};
use faer::reborrow::ReborrowMut;
use faer::{MatMut, MatRef};

/// Lanes of partial sums per output entry in [`dot_rows`].
const LANES: usize = 8;

/// `out = A B` by one of the streaming kernels when the shapes and layouts allow it (`B` and
/// `out` column-major with `1 ≤ d ≤ 8` columns, `A` with contiguous rows or columns); returns
/// `false` (and does nothing) otherwise.
pub(crate) fn thin_product(out: MatMut<'_, f64>, a: MatRef<'_, f64>, b: MatRef<'_, f64>) -> bool {
    let d = b.ncols();
    if d == 0 || d > 8 || a.nrows() == 0 || a.ncols() == 0 {
        return false;
    }
    if b.row_stride() != 1 || out.row_stride() != 1 {
        return false;
    }
    // Columns of `a` contiguous (unit row stride, or a single row) or rows contiguous.
    let axpy_ok = a.row_stride() == 1 || a.nrows() == 1;
    let dot_ok = a.col_stride() == 1 || a.ncols() == 1;
    if !axpy_ok && !dot_ok {
        return false;
    }
    let use_axpy = axpy_ok && (a.nrows() > 1 || !dot_ok);
    // Columns of `out` and `B` in groups of at most four.
    let mut out = out;
    let mut c0 = 0;
    while c0 < d {
        let w = (d - c0).min(4);
        let o = out.rb_mut().subcols_mut(c0, w);
        let bb = b.subcols(c0, w);
        if use_axpy {
            dispatch_axpy(o, a, bb);
        } else {
            dispatch_dot(o, a, bb);
        }
        c0 += w;
    }
    true
}

/// `x y + z`, fused when the kernel is compiled for FMA.
#[inline(always)]
fn madd<const FMA: bool>(x: f64, y: f64, z: f64) -> f64 {
    if FMA {
        x.mul_add(y, z)
    } else {
        x * y + z
    }
}

/// `Vᵀ R` (rows of `a` contiguous) for `b` of 1 to 4 columns. With AVX-512 (32 registers of 8
/// lanes) four rows of `a` share the loads of `b` for `d ≥ 3`; with AVX2 (16 registers of 4
/// lanes) two rows do for `d ≤ 2` and one row otherwise (more would not fit the registers).
fn dispatch_dot(out: MatMut<'_, f64>, a: MatRef<'_, f64>, b: MatRef<'_, f64>) {
    macro_rules! by_width {
        ($f:ident, $fma:literal) => {
            by_width!($f, $fma, 1)
        };
        ($f:ident, $fma:literal, $r_wide:literal) => {
            match b.ncols() {
                1 => $f::<1, 2, $fma>(out, a, b),
                2 => $f::<2, 2, $fma>(out, a, b),
                3 => $f::<3, $r_wide, $fma>(out, a, b),
                _ => $f::<4, $r_wide, $fma>(out, a, b),
            }
        };
    }
    #[cfg(target_arch = "x86_64")]
    if has_avx512vl() {
        // SAFETY: the processor has AVX2, FMA, AVX-512F and AVX-512VL (checked at run time).
        // Four rows of `a` per pass for `d ≥ 3` (`d x 4` accumulators of 8 lanes).
        unsafe { by_width!(dot_rows_avx512, true, 4) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: the processor has AVX2 and FMA (checked at run time).
        unsafe { by_width!(dot_rows_avx2, true) };
        return;
    }
    by_width!(dot_rows, false)
}

/// `V X` (columns of `a` contiguous) for `b` of 1 to 4 columns.
fn dispatch_axpy(out: MatMut<'_, f64>, a: MatRef<'_, f64>, b: MatRef<'_, f64>) {
    macro_rules! by_width {
        ($f:ident, $fma:literal) => {
            match b.ncols() {
                1 => $f::<1, $fma>(out, a, b),
                2 => $f::<2, $fma>(out, a, b),
                3 => $f::<3, $fma>(out, a, b),
                _ => $f::<4, $fma>(out, a, b),
            }
        };
    }
    #[cfg(target_arch = "x86_64")]
    if has_avx512vl() && register_blocking_pays(a, b) {
        // SAFETY: the processor has AVX2, FMA, AVX-512F and AVX-512VL (checked at run time).
        unsafe { by_width!(axpy_cols_avx512, true) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: the processor has AVX2 and FMA (checked at run time).
        unsafe { by_width!(axpy_cols_avx2, true) };
        return;
    }
    by_width!(axpy_cols, false)
}

/// The body of [`dot_rows`] with AVX2 registers: the eight lanes of a partial sum are two
/// `__m256d`, in the same order as the portable kernel (the same bits as its FMA form). A macro,
/// so that every instruction is compiled inside the `target_feature` function that expands it
/// (a closure or a helper function would not inherit the features).
#[cfg(target_arch = "x86_64")]
macro_rules! dot_rows_simd {
    ($d:ident, $r:ident, $out:ident, $a:ident, $b:ident) => {{
        use std::arch::x86_64::*;
        let (m, k) = ($a.nrows(), $a.ncols());
        let full = k / LANES * LANES;
        let bc = columns::<$d>($b);
        let mut i = 0;
        while i < m {
            // `R` rows per pass; the last rows one at a time (row `i` loaded `R` times, once kept).
            let rr = if i + $r <= m { $r } else { 1 };
            let rows: [&[f64]; $r] = std::array::from_fn(|q| row($a, i + q.min(rr - 1)));
            let mut lo = [[_mm256_setzero_pd(); $d]; $r];
            let mut hi = [[_mm256_setzero_pd(); $d]; $r];
            let mut t = 0;
            while t < full {
                let mut xl = [_mm256_setzero_pd(); $r];
                let mut xh = [_mm256_setzero_pd(); $r];
                for q in 0..$r {
                    xl[q] = _mm256_loadu_pd(rows[q].as_ptr().add(t));
                    xh[q] = _mm256_loadu_pd(rows[q].as_ptr().add(t + 4));
                }
                for c in 0..$d {
                    let yl = _mm256_loadu_pd(bc[c].as_ptr().add(t));
                    let yh = _mm256_loadu_pd(bc[c].as_ptr().add(t + 4));
                    for q in 0..$r {
                        lo[q][c] = _mm256_fmadd_pd(xl[q], yl, lo[q][c]);
                        hi[q][c] = _mm256_fmadd_pd(xh[q], yh, hi[q][c]);
                    }
                }
                t += LANES;
            }
            for q in 0..rr {
                for c in 0..$d {
                    let mut l = [0.0f64; LANES];
                    _mm256_storeu_pd(l.as_mut_ptr(), lo[q][c]);
                    _mm256_storeu_pd(l.as_mut_ptr().add(4), hi[q][c]);
                    let mut s = lane_sum(&l);
                    for t in full..k {
                        s = rows[q][t].mul_add(bc[c][t], s);
                    }
                    $out[(i + q, c)] = s;
                }
            }
            i += rr;
        }
    }};
}

/// [`dot_rows`] with AVX-512 registers: the eight lanes of a partial sum are one `__m512d` (the
/// same order, the same bits), and 32 registers let four rows of `a` share the loads of `b`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,avx512f,avx512vl")]
unsafe fn dot_rows_avx512<const D: usize, const R: usize, const FMA: bool>(
    mut out: MatMut<'_, f64>,
    a: MatRef<'_, f64>,
    b: MatRef<'_, f64>,
) {
    use std::arch::x86_64::*;
    let (m, k) = (a.nrows(), a.ncols());
    let full = k / LANES * LANES;
    let bc = columns::<D>(b);
    let mut i = 0;
    while i < m {
        let rr = if i + R <= m { R } else { 1 };
        let rows: [&[f64]; R] = std::array::from_fn(|q| row(a, i + q.min(rr - 1)));
        let mut acc = [[_mm512_setzero_pd(); D]; R];
        let mut t = 0;
        while t < full {
            let mut x = [_mm512_setzero_pd(); R];
            for q in 0..R {
                if D >= 2 {
                    _mm_prefetch::<_MM_HINT_T0>(
                        rows[q].as_ptr().wrapping_add(t + PREFETCH) as *const i8
                    );
                }
                x[q] = _mm512_loadu_pd(rows[q].as_ptr().add(t));
            }
            for c in 0..D {
                let y = _mm512_loadu_pd(bc[c].as_ptr().add(t));
                for q in 0..R {
                    acc[q][c] = _mm512_fmadd_pd(x[q], y, acc[q][c]);
                }
            }
            t += LANES;
        }
        for q in 0..rr {
            for c in 0..D {
                let mut l = [0.0f64; LANES];
                _mm512_storeu_pd(l.as_mut_ptr(), acc[q][c]);
                let mut s = lane_sum(&l);
                for t in full..k {
                    s = rows[q][t].mul_add(bc[c][t], s);
                }
                out[(i + q, c)] = s;
            }
        }
        i += rr;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_rows_avx2<const D: usize, const R: usize, const FMA: bool>(
    mut out: MatMut<'_, f64>,
    a: MatRef<'_, f64>,
    b: MatRef<'_, f64>,
) {
    dot_rows_simd!(D, R, out, a, b)
}

/// Software prefetch distance (entries) of the streams of `A` in [`axpy_cols_avx2`] and
/// [`dot_rows_avx512`] (the hardware prefetcher alone kept one core at 14 GB/s on four streams; with one column of
/// `B`, `D = 1`, it does better alone).
const PREFETCH: usize = 192;

/// [`axpy_cols`] with AVX2 registers, four rows at a time (the same bits as its FMA form).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn axpy_cols_avx2<const D: usize, const FMA: bool>(
    mut out: MatMut<'_, f64>,
    a: MatRef<'_, f64>,
    b: MatRef<'_, f64>,
) {
    use std::arch::x86_64::*;
    let (m, k) = (a.nrows(), a.ncols());
    let col = |j: usize| a.col(j).as_ptr();
    let outs: [*mut f64; D] = std::array::from_fn(|c| out.rb_mut().col_mut(c).as_ptr_mut());
    for &o in &outs {
        std::ptr::write_bytes(o, 0, m);
    }
    let m4 = m / 4 * 4;
    let mut j = 0;
    while j + 4 <= k {
        let (a0, a1, a2, a3) = (col(j), col(j + 1), col(j + 2), col(j + 3));
        let w: [[f64; 4]; D] = std::array::from_fn(|c| std::array::from_fn(|q| b[(j + q, c)]));
        let wv: [[__m256d; 4]; D] =
            std::array::from_fn(|c| std::array::from_fn(|q| _mm256_set1_pd(w[c][q])));
        let mut i = 0;
        while i < m4 {
            if D >= 2 && i % 8 == 0 {
                let pf = i.wrapping_add(PREFETCH);
                _mm_prefetch::<_MM_HINT_T0>(a0.wrapping_add(pf) as *const i8);
                _mm_prefetch::<_MM_HINT_T0>(a1.wrapping_add(pf) as *const i8);
                _mm_prefetch::<_MM_HINT_T0>(a2.wrapping_add(pf) as *const i8);
                _mm_prefetch::<_MM_HINT_T0>(a3.wrapping_add(pf) as *const i8);
            }
            let x0 = _mm256_loadu_pd(a0.add(i));
            let x1 = _mm256_loadu_pd(a1.add(i));
            let x2 = _mm256_loadu_pd(a2.add(i));
            let x3 = _mm256_loadu_pd(a3.add(i));
            for c in 0..D {
                let o = outs[c].add(i);
                let s = _mm256_fmadd_pd(x0, wv[c][0], _mm256_loadu_pd(o));
                let s = _mm256_fmadd_pd(x1, wv[c][1], s);
                let s = _mm256_fmadd_pd(x2, wv[c][2], s);
                _mm256_storeu_pd(o, _mm256_fmadd_pd(x3, wv[c][3], s));
            }
            i += 4;
        }
        while i < m {
            for c in 0..D {
                let o = outs[c].add(i);
                let s = (*a0.add(i)).mul_add(w[c][0], *o);
                let s = (*a1.add(i)).mul_add(w[c][1], s);
                let s = (*a2.add(i)).mul_add(w[c][2], s);
                *o = (*a3.add(i)).mul_add(w[c][3], s);
            }
            i += 1;
        }
        j += 4;
    }
    while j < k {
        let a0 = col(j);
        for c in 0..D {
            let w = b[(j, c)];
            let wv = _mm256_set1_pd(w);
            let o = outs[c];
            let mut i = 0;
            while i < m4 {
                let s = _mm256_fmadd_pd(_mm256_loadu_pd(a0.add(i)), wv, _mm256_loadu_pd(o.add(i)));
                _mm256_storeu_pd(o.add(i), s);
                i += 4;
            }
            while i < m {
                *o.add(i) = (*a0.add(i)).mul_add(w, *o.add(i));
                i += 1;
            }
        }
        j += 1;
    }
}

/// Whether [`axpy_cols_avx512`]'s register blocks beat the column-streaming kernels for `A B`
/// (called per group of at most four columns of `B`, and per half of the rows of `A` when
/// `matmul_into` splits a large product between two threads): with at least two columns in the
/// group (more multiply-adds per entry of `A` read), at most [`REGISTER_BLOCK_MAX_COLS`] columns
/// of `A`, and `A` small enough to come from the caches ([`REGISTER_BLOCK_MAX_BYTES`]).
///
/// Each pass of the register blocks over a block of rows reads a few entries of every column
/// of `A`; with many columns, or `A` streamed from memory, those scattered reads and its
/// prefetches ahead no longer fit in the L2 cache, and the column-streaming kernel (one column
/// of `A` after another) is two to three times faster (`examples/thin_product`,
/// `docs/speed.md`). Both give the same bits, so the choice changes no result.
#[inline(always)]
fn register_blocking_pays(a: MatRef<'_, f64>, b: MatRef<'_, f64>) -> bool {
    b.ncols() >= 2
        && a.ncols() <= REGISTER_BLOCK_MAX_COLS
        && a.nrows() * a.ncols() * std::mem::size_of::<f64>() <= REGISTER_BLOCK_MAX_BYTES
}

/// See [`register_blocking_pays`].
const REGISTER_BLOCK_MAX_COLS: usize = 192;
/// See [`register_blocking_pays`].
const REGISTER_BLOCK_MAX_BYTES: usize = 8 << 20;

/// Rows per register block of [`axpy_cols_avx512`] (three registers of 8 lanes per column of
/// `B`: with `D = 4`, 12 accumulators, 3 loads and 4 broadcasts of the 32 registers).
const AXPY_BLOCK: usize = 24;

/// [`axpy_cols`] with AVX-512 registers: a block of [`AXPY_BLOCK`] rows keeps its `AXPY_BLOCK x D`
/// sums in registers over all the columns of `a` (8-row blocks, then single rows, for the rest),
/// so that `out` is written once instead of read and written per block of four columns. Every
/// entry is still `a[i, 0] b[0, c]`, then `+ a[i, 1] b[1, c]`, … fused, in column order from
/// `+0`: the same bits as [`axpy_cols_avx2`] and the portable kernel's FMA form.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,avx512f,avx512vl")]
unsafe fn axpy_cols_avx512<const D: usize, const FMA: bool>(
    mut out: MatMut<'_, f64>,
    a: MatRef<'_, f64>,
    b: MatRef<'_, f64>,
) {
    use std::arch::x86_64::*;
    let (m, k) = (a.nrows(), a.ncols());
    // Entry (i, j) of `a` is at `base + i + j cs` (unit row stride, or a single row: i = 0).
    let base = a.as_ptr();
    let cs = a.col_stride();
    let at = |i: usize, j: usize| base.offset(j as isize * cs).add(i);
    let bc = columns::<D>(b);
    let outs: [*mut f64; D] = std::array::from_fn(|c| out.rb_mut().col_mut(c).as_ptr_mut());
    let mut i = 0;
    while i + AXPY_BLOCK <= m {
        let mut acc = [[_mm512_setzero_pd(); D]; 3];
        for j in 0..k {
            let p = at(i, j);
            // The block three blocks ahead in this column, for the next passes.
            _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(3 * AXPY_BLOCK) as *const i8);
            _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(3 * AXPY_BLOCK + 8) as *const i8);
            _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(3 * AXPY_BLOCK + 16) as *const i8);
            let x = [
                _mm512_loadu_pd(p),
                _mm512_loadu_pd(p.add(8)),
                _mm512_loadu_pd(p.add(16)),
            ];
            for c in 0..D {
                let w = _mm512_set1_pd(*bc[c].get_unchecked(j));
                for q in 0..3 {
                    acc[q][c] = _mm512_fmadd_pd(x[q], w, acc[q][c]);
                }
            }
        }
        for c in 0..D {
            for q in 0..3 {
                _mm512_storeu_pd(outs[c].add(i + 8 * q), acc[q][c]);
            }
        }
        i += AXPY_BLOCK;
    }
    while i + 8 <= m {
        let mut acc = [_mm512_setzero_pd(); D];
        for j in 0..k {
            let x = _mm512_loadu_pd(at(i, j));
            for c in 0..D {
                acc[c] = _mm512_fmadd_pd(x, _mm512_set1_pd(*bc[c].get_unchecked(j)), acc[c]);
            }
        }
        for c in 0..D {
            _mm512_storeu_pd(outs[c].add(i), acc[c]);
        }
        i += 8;
    }
    while i < m {
        let mut acc = [0.0f64; D];
        for j in 0..k {
            let x = *at(i, j);
            for c in 0..D {
                acc[c] = x.mul_add(*bc[c].get_unchecked(j), acc[c]);
            }
        }
        for c in 0..D {
            *outs[c].add(i) = acc[c];
        }
        i += 1;
    }
}

/// The `D` columns of `b` as slices (column-major, checked by the caller).
#[inline(always)]
fn columns<const D: usize>(b: MatRef<'_, f64>) -> [&[f64]; D] {
    std::array::from_fn(|c| {
        let col = b.col(c);
        // SAFETY: `b` has unit row stride (checked by `thin_product`), so column `c` is the
        // `nrows` contiguous values starting at its first entry.
        unsafe { std::slice::from_raw_parts(col.as_ptr(), col.nrows()) }
    })
}

/// Row `i` of `a` as a slice (rows contiguous: unit column stride, or one column).
#[inline(always)]
fn row(a: MatRef<'_, f64>, i: usize) -> &[f64] {
    let r = a.row(i);
    // SAFETY: `a` has unit column stride or a single column (checked by `thin_product`).
    unsafe { std::slice::from_raw_parts(r.as_ptr(), a.ncols()) }
}

/// The eight lanes of a partial sum, added in a fixed tree.
#[inline(always)]
fn lane_sum(l: &[f64; LANES]) -> f64 {
    ((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7]))
}

/// `out[i, c] = Σ_k a[i, k] b[k, c]`, rows of `a` contiguous; `R` rows of `a` per pass share
/// the loads of `b` (the remainder rows one at a time).
#[inline(always)]
fn dot_rows<const D: usize, const R: usize, const FMA: bool>(
    mut out: MatMut<'_, f64>,
    a: MatRef<'_, f64>,
    b: MatRef<'_, f64>,
) {
    let m = a.nrows();
    let mut i = 0;
    while i + R <= m {
        let sums = dot_block::<D, R, FMA>(a, i, b);
        for (q, s) in sums.iter().enumerate() {
            for c in 0..D {
                out[(i + q, c)] = s[c];
            }
        }
        i += R;
    }
    while i < m {
        let sums = dot_block::<D, 1, FMA>(a, i, b);
        for c in 0..D {
            out[(i, c)] = sums[0][c];
        }
        i += 1;
    }
}

/// The `R x D` sums of rows `i .. i + R` of `a` with the columns of `b`.
#[inline(always)]
fn dot_block<const D: usize, const R: usize, const FMA: bool>(
    a: MatRef<'_, f64>,
    i: usize,
    b: MatRef<'_, f64>,
) -> [[f64; D]; R] {
    let k = a.ncols();
    let full = k / LANES * LANES;
    let bc = columns::<D>(b);
    let rows: [&[f64]; R] = std::array::from_fn(|q| row(a, i + q));
    let mut acc = [[[0.0f64; LANES]; D]; R];
    let mut t = 0;
    while t < full {
        let x: [&[f64; LANES]; R] =
            std::array::from_fn(|q| rows[q][t..t + LANES].try_into().unwrap());
        for c in 0..D {
            let y: &[f64; LANES] = bc[c][t..t + LANES].try_into().unwrap();
            for q in 0..R {
                for l in 0..LANES {
                    acc[q][c][l] = madd::<FMA>(x[q][l], y[l], acc[q][c][l]);
                }
            }
        }
        t += LANES;
    }
    std::array::from_fn(|q| {
        std::array::from_fn(|c| {
            let mut s = lane_sum(&acc[q][c]);
            for t in full..k {
                s = madd::<FMA>(rows[q][t], bc[c][t], s);
            }
            s
        })
    })
}

/// `out = a b`, columns of `a` contiguous: `out[:, c]` accumulates `a[:, j] b[j, c]` over blocks
/// of four columns `j` (each entry: the blocks in order, each block's four terms in order).
#[inline(always)]
fn axpy_cols<const D: usize, const FMA: bool>(
    mut out: MatMut<'_, f64>,
    a: MatRef<'_, f64>,
    b: MatRef<'_, f64>,
) {
    let (m, k) = (a.nrows(), a.ncols());
    let col = |j: usize| -> &[f64] {
        let c = a.col(j);
        // SAFETY: `a` has unit row stride (checked by `thin_product`).
        unsafe { std::slice::from_raw_parts(c.as_ptr(), m) }
    };
    // The output columns as disjoint mutable slices.
    let mut outs: [&mut [f64]; D] = {
        let mut rest = Some(out.rb_mut());
        std::array::from_fn(|_| {
            let cur = rest.take().unwrap();
            let (first, tail) = cur.split_at_col_mut(1);
            rest = Some(tail);
            let c = first.col_mut(0);
            // SAFETY: `out` has unit row stride (checked by `thin_product`); the columns are
            // disjoint.
            unsafe { std::slice::from_raw_parts_mut(c.as_ptr_mut(), m) }
        })
    };
    for o in outs.iter_mut() {
        o.fill(0.0);
    }
    let mut j = 0;
    while j + 4 <= k {
        let (a0, a1, a2, a3) = (col(j), col(j + 1), col(j + 2), col(j + 3));
        let w: [[f64; 4]; D] = std::array::from_fn(|c| std::array::from_fn(|q| b[(j + q, c)]));
        for i in 0..m {
            let (x0, x1, x2, x3) = (a0[i], a1[i], a2[i], a3[i]);
            for c in 0..D {
                let s = madd::<FMA>(x0, w[c][0], outs[c][i]);
                let s = madd::<FMA>(x1, w[c][1], s);
                let s = madd::<FMA>(x2, w[c][2], s);
                outs[c][i] = madd::<FMA>(x3, w[c][3], s);
            }
        }
        j += 4;
    }
    while j < k {
        let a0 = col(j);
        let w: [f64; D] = std::array::from_fn(|c| b[(j, c)]);
        for i in 0..m {
            let x0 = a0[i];
            for c in 0..D {
                outs[c][i] = madd::<FMA>(x0, w[c], outs[c][i]);
            }
        }
        j += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use faer::Mat;

    fn reference(a: MatRef<'_, f64>, b: MatRef<'_, f64>) -> Mat<f64> {
        Mat::from_fn(a.nrows(), b.ncols(), |i, c| {
            (0..a.ncols()).map(|k| a[(i, k)] * b[(k, c)]).sum()
        })
    }

    #[test]
    fn kernels_match_the_definition_for_every_shape_and_layout() {
        let mut seed = 7u64;
        let mut next = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((seed >> 11) as f64 / (1u64 << 53) as f64) - 0.5
        };
        for &(m, k) in &[
            (1, 1),
            (1, 9),
            (9, 1),
            (2, 7),
            (13, 17),
            (64, 3),
            (33, 40),
            (5, 100),
        ] {
            for d in 1..=8 {
                let a = Mat::<f64>::from_fn(m, k, |_, _| next());
                let at = a.transpose().to_owned(); // rows of `at.transpose()` contiguous
                let b = Mat::<f64>::from_fn(k, d, |_, _| next());
                let want = reference(a.as_ref(), b.as_ref());
                for view in [a.as_ref(), at.as_ref().transpose()] {
                    let mut out = Mat::<f64>::from_fn(m, d, |_, _| f64::NAN);
                    assert!(thin_product(out.as_mut(), view, b.as_ref()));
                    for i in 0..m {
                        for c in 0..d {
                            let scale: f64 = (0..k).map(|t| (a[(i, t)] * b[(t, c)]).abs()).sum();
                            assert!(
                                (out[(i, c)] - want[(i, c)]).abs() <= 1e-14 * scale.max(1e-300),
                                "m {m} k {k} d {d}: {} vs {}",
                                out[(i, c)],
                                want[(i, c)]
                            );
                        }
                    }
                }
            }
        }
        // The AVX2 kernels give the same bits as the portable ones in their FMA form.
        if has_avx2_fma() {
            for d in 1..=4usize {
                // 61 rows: two register blocks of 24, one of 8 and 5 single rows.
                let (m, k) = (61, 45);
                let a = Mat::<f64>::from_fn(m, k, |_, _| next());
                let at = a.transpose().to_owned();
                let b = Mat::<f64>::from_fn(k, d, |_, _| next());
                let mut fast = Mat::<f64>::zeros(m, d);
                let mut portable = Mat::<f64>::zeros(m, d);
                for transposed in [false, true] {
                    let view = if transposed {
                        at.as_ref().transpose()
                    } else {
                        a.as_ref()
                    };
                    assert!(thin_product(fast.as_mut(), view, b.as_ref()));
                    match (transposed, d) {
                        (true, 1) => dot_rows::<1, 2, true>(portable.as_mut(), view, b.as_ref()),
                        (true, 2) => dot_rows::<2, 2, true>(portable.as_mut(), view, b.as_ref()),
                        // R (rows per pass) does not change any sum's order.
                        (true, 3) => dot_rows::<3, 1, true>(portable.as_mut(), view, b.as_ref()),
                        (true, _) => dot_rows::<4, 2, true>(portable.as_mut(), view, b.as_ref()),
                        (false, 1) => axpy_cols::<1, true>(portable.as_mut(), view, b.as_ref()),
                        (false, 2) => axpy_cols::<2, true>(portable.as_mut(), view, b.as_ref()),
                        (false, 3) => axpy_cols::<3, true>(portable.as_mut(), view, b.as_ref()),
                        (false, _) => axpy_cols::<4, true>(portable.as_mut(), view, b.as_ref()),
                    }
                    for i in 0..m {
                        for c in 0..d {
                            assert_eq!(fast[(i, c)].to_bits(), portable[(i, c)].to_bits());
                        }
                    }
                    // The AVX2 kernel too, where the dispatch picks the AVX-512 one.
                    #[cfg(target_arch = "x86_64")]
                    if !transposed {
                        let mut avx2 = Mat::<f64>::zeros(m, d);
                        // SAFETY: AVX2 and FMA are present (checked above).
                        unsafe {
                            match d {
                                1 => axpy_cols_avx2::<1, true>(avx2.as_mut(), view, b.as_ref()),
                                2 => axpy_cols_avx2::<2, true>(avx2.as_mut(), view, b.as_ref()),
                                3 => axpy_cols_avx2::<3, true>(avx2.as_mut(), view, b.as_ref()),
                                _ => axpy_cols_avx2::<4, true>(avx2.as_mut(), view, b.as_ref()),
                            }
                        }
                        for i in 0..m {
                            for c in 0..d {
                                assert_eq!(avx2[(i, c)].to_bits(), portable[(i, c)].to_bits());
                            }
                        }
                    }
                    #[cfg(target_arch = "x86_64")]
                    if transposed {
                        let mut avx2 = Mat::<f64>::zeros(m, d);
                        // SAFETY: AVX2 and FMA are present (checked above).
                        unsafe {
                            match d {
                                1 => dot_rows_avx2::<1, 2, true>(avx2.as_mut(), view, b.as_ref()),
                                2 => dot_rows_avx2::<2, 2, true>(avx2.as_mut(), view, b.as_ref()),
                                3 => dot_rows_avx2::<3, 1, true>(avx2.as_mut(), view, b.as_ref()),
                                _ => dot_rows_avx2::<4, 1, true>(avx2.as_mut(), view, b.as_ref()),
                            }
                        }
                        for i in 0..m {
                            for c in 0..d {
                                assert_eq!(avx2[(i, c)].to_bits(), portable[(i, c)].to_bits());
                            }
                        }
                    }
                }
            }
        }
        // Layouts the kernels do not take are declined.
        let a = Mat::<f64>::zeros(4, 4);
        let b = Mat::<f64>::zeros(4, 9);
        let mut out = Mat::<f64>::zeros(4, 9);
        assert!(!thin_product(out.as_mut(), a.as_ref(), b.as_ref()));
    }
}
