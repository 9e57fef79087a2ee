//! The fused pass over `V` (`docs/speed.md`, "one pass over V per iteration").
//!
//! At the end of an iteration the backward call `G⁻_1` of the first linear layer, the message
//! rule about `Z_0` and — for a row-separable prior — the prior's denoiser `G⁺_0` of the next
//! iteration all act row by row on `Z_0`, and each row of `Z_0` is one row of `V_r`:
//!
//! ```text
//! ẑ⁻_i   = v_i q (+ r⁺_i)                          G⁻_1 (spec §3.3; q = Ṽ − V_rᵀR⁺ or Ṽ)
//! r⁻_i   = (1−ρ)(ẑ⁻_i A + r⁺_i B) + ρ r⁻_prev,i      eq. (2.1), A, B, ρ of `MeanMap`
//! ẑ⁺_i   = g(r⁻_i; Γ⁻_0)                           G⁺_0 of the next iteration (eq. 13)
//! ```
//!
//! and the next forward call `G⁺_1` needs `V_rᵀ R⁺_0` of the next forward message, which is
//! linear in `(Ẑ⁺_0, R⁻_0, R⁺_prev)` with `d x d` right factors known only after the prior's
//! `Σ̄` (eq. 2.1 again). So one pass over the rows of `V_r` computes all three row quantities
//! and accumulates `V_rᵀ Ẑ⁺_0` and `V_rᵀ R⁻_0` while the block of `V_r` is in cache; the next
//! forward message's product follows by linearity without streaming `V_r` again.
//!
//! Determinism: rows are split into fixed tasks of `TASK` rows and blocks of `sub_block(r)`
//! rows; every sum runs in an order fixed by the shapes, and the tasks' partial products are
//! added in task order, so the result does not depend on the number of threads.

use crate::error::Result;
use crate::factor::RowBlockDenoiser;
use crate::message::MeanMap;
use crate::rows::ROW_CHUNK;
use faer::{Mat, MatMut, MatRef};
use rayon::prelude::*;

/// Rows of `Z_0` per parallel task: two of the prior's covariance chunks.
const TASK: usize = 2 * ROW_CHUNK;

/// Rows per block: as many rows of `V_r` as fit in about 256 KB (a power of two between 4 and
/// 64, so that blocks never straddle a covariance chunk).
fn sub_block(r: usize) -> usize {
    let fit = (32 * 1024 / r.max(1)).clamp(4, 64);
    1 << (usize::BITS - 1 - fit.leading_zeros())
}

/// What the pass reads.
pub(super) struct PassInput<'a> {
    /// `V_rᵀ` (`r x n`, column-major).
    pub vt: MatRef<'a, f64>,
    /// `q` (`r x d`).
    pub q: MatRef<'a, f64>,
    /// Whether `R⁺` is added to `V_r q` (the layer has input-only rows).
    pub complement: bool,
    /// `R⁺_0` (`n x d`), the incoming message of the rule about `Z_0`.
    pub plus: MatRef<'a, f64>,
    /// The rule's map.
    pub map: &'a MeanMap,
    /// The previous backward message's mean (mean damping).
    pub prev: MatRef<'a, f64>,
    /// The prior's row denoiser for the new precision `Γ⁻_0`, if the prior is row-separable.
    pub prior: Option<&'a dyn RowBlockDenoiser>,
}

/// What the pass produces.
pub(super) struct PassOutput {
    /// `Ẑ⁻_0 = V_r q (+ R⁺_0)`.
    pub z_minus: Mat<f64>,
    /// The new backward message's mean `R⁻_0`.
    pub r_minus: Mat<f64>,
    /// With a row denoiser: the next prior estimate, its covariance sum (per chunk, summed in
    /// chunk order), `V_rᵀ Ẑ⁺_0` and `V_rᵀ R⁻_0`.
    pub prior: Option<PriorPart>,
}

/// The next iteration's prior belief, computed in the pass.
pub(super) struct PriorPart {
    pub z: Mat<f64>,
    pub cov_sum: Vec<f64>,
    pub vt_z: Mat<f64>,
    pub vt_r: Mat<f64>,
}

/// A task's rows of the pass's row outputs (views into [`PassOutput`]'s matrices, so that the
/// tasks write their rows in place and nothing is copied after the parallel part).
struct TaskRows<'a> {
    z_minus: MatMut<'a, f64>,
    r_minus: MatMut<'a, f64>,
    /// No rows without a row denoiser.
    z_prior: MatMut<'a, f64>,
}

/// One task's sums (added in task order after the parallel part).
struct TaskSums {
    /// One covariance sum per chunk of `ROW_CHUNK` rows.
    cov: Vec<Vec<f64>>,
    /// `r x d` each, column `c` at `[c r .. (c+1) r]`.
    acc_z: Vec<f64>,
    acc_r: Vec<f64>,
}

/// `m` cut into `ntasks` consecutive views of [`TASK`] rows (the last one shorter; views of no
/// rows when `m` has none).
fn task_views(m: MatMut<'_, f64>, ntasks: usize) -> Vec<MatMut<'_, f64>> {
    let mut views = Vec::with_capacity(ntasks);
    let mut rest = m;
    for _ in 0..ntasks {
        let len = TASK.min(rest.nrows());
        let (head, tail) = rest.split_at_row_mut(len);
        views.push(head);
        rest = tail;
    }
    views
}

/// `out[k] = ((+0 + parts[0][k]) + parts[1][k]) + …` for every `k`: the parts added in task
/// order, entry by entry.
fn sum_in_task_order(out: &mut [f64], parts: &[&[f64]], offset: usize) {
    out.fill(0.0);
    let len = out.len();
    for p in parts {
        for (s, x) in out.iter_mut().zip(&p[offset..offset + len]) {
            *s += x;
        }
    }
}

/// `V_rᵀ Ẑ⁺_0` and `V_rᵀ R⁻_0` (`r x d` each) from the tasks' sums ([`sum_in_task_order`] per
/// column); the `2d` columns are shared out over the pool when the sums are long enough to pay
/// for it (every entry is the same sum either way).
fn task_sums(parts: &[TaskSums], r: usize, d: usize) -> (Mat<f64>, Mat<f64>) {
    /// One column of a result, the tasks' sums and the column's offset in them.
    type Job<'a> = (&'a mut [f64], &'a [&'a [f64]], usize);
    let (mut vt_z, mut vt_r) = (Mat::<f64>::zeros(r, d), Mat::<f64>::zeros(r, d));
    let z_parts: Vec<&[f64]> = parts.iter().map(|p| p.acc_z.as_slice()).collect();
    let r_parts: Vec<&[f64]> = parts.iter().map(|p| p.acc_r.as_slice()).collect();
    let mut jobs: Vec<Job<'_>> = Vec::with_capacity(2 * d);
    for (m, p) in [(&mut vt_z, &z_parts), (&mut vt_r, &r_parts)] {
        for (c, col) in m.col_iter_mut().enumerate() {
            if let Some(col) = col.try_as_col_major_mut() {
                jobs.push((col.as_slice_mut(), p.as_slice(), c * r));
            }
        }
    }
    let job = |(out, p, offset): Job<'_>| sum_in_task_order(out, p, offset);
    if 2 * r * d * parts.len() >= 1 << 15 {
        jobs.into_par_iter().for_each(job);
    } else {
        jobs.into_iter().for_each(job);
    }
    (vt_z, vt_r)
}

/// Runs the pass (see the module's documentation).
pub(super) fn pass(input: &PassInput<'_>) -> Result<PassOutput> {
    let (r, n) = (input.vt.nrows(), input.vt.ncols());
    let d = input.q.ncols();
    let ntasks = n.div_ceil(TASK);
    let with_prior = input.prior.is_some();
    let mut z_minus = Mat::<f64>::zeros(n, d);
    let mut r_minus = Mat::<f64>::zeros(n, d);
    let mut z_prior = Mat::<f64>::zeros(if with_prior { n } else { 0 }, d);
    let views: Vec<(usize, TaskRows<'_>)> = task_views(z_minus.as_mut(), ntasks)
        .into_iter()
        .zip(task_views(r_minus.as_mut(), ntasks))
        .zip(task_views(z_prior.as_mut(), ntasks))
        .enumerate()
        .map(|(t, ((z_minus, r_minus), z_prior))| {
            (
                t,
                TaskRows {
                    z_minus,
                    r_minus,
                    z_prior,
                },
            )
        })
        .collect();
    let run = |(t, rows): (usize, TaskRows<'_>)| -> Result<TaskSums> {
        task(input, t * TASK, ((t + 1) * TASK).min(n), rows)
    };
    let parts: Vec<TaskSums> = if ntasks <= 1 {
        views.into_iter().map(run).collect::<Result<_>>()?
    } else {
        views.into_par_iter().map(run).collect::<Result<_>>()?
    };
    let mut cov_sum = vec![0.0; d * d];
    for p in &parts {
        for chunk in &p.cov {
            for (s, x) in cov_sum.iter_mut().zip(chunk) {
                *s += x;
            }
        }
    }
    let prior = with_prior.then(|| {
        let (vt_z, vt_r) = task_sums(&parts, r, d);
        PriorPart {
            z: z_prior,
            cov_sum,
            vt_z,
            vt_r,
        }
    });
    Ok(PassOutput {
        z_minus,
        r_minus,
        prior,
    })
}

/// Rows `start .. end` (one task), dispatched to the AVX-512 or the FMA build when the
/// processor has them (the same operations on every entry, so the same bits: every sum is a
/// chain of fused multiply-adds per entry, or one of [`dot`]'s eight partial sums per lane).
///
/// Only the AVX-512 and the portable builds ask for the next block of `V_r` ahead of time
/// ([`axpy4`]'s prefetches). Measured on two machines (`docs/speed.md`, "7 December, evening"):
/// on the AVX-512 one the prefetches made the pass 9–48% faster; on an AVX2 one (AMD EPYC,
/// 512 KiB of L2 per core) they made it about 18% slower, the hardware's own prefetching doing
/// better without them. A prefetch changes no result, so the builds still give the same bits.
fn task(input: &PassInput<'_>, start: usize, end: usize, rows: TaskRows<'_>) -> Result<TaskSums> {
    #[cfg(target_arch = "x86_64")]
    if crate::cpu::has_avx512vl() {
        // SAFETY: the processor has AVX2, FMA, AVX-512F and AVX-512VL (checked at run time).
        return unsafe { task_avx512(input, start, end, rows) };
    }
    #[cfg(target_arch = "x86_64")]
    if has_fma() {
        // SAFETY: the processor has AVX2 and FMA (checked at run time).
        return unsafe { task_fma(input, start, end, rows) };
    }
    task_body(input, start, end, rows, true)
}

/// [`task_body`] compiled with AVX-512: the accumulation loops run on eight lanes per register
/// (half the instructions of the FMA build for the work done from the cache while the next
/// block of `V_r` streams in), and [`dot4`] holds each row's eight partial sums in one register.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,avx512f,avx512vl")]
unsafe fn task_avx512(
    input: &PassInput<'_>,
    start: usize,
    end: usize,
    rows: TaskRows<'_>,
) -> Result<TaskSums> {
    task_body(input, start, end, rows, true)
}

/// Whether the processor has AVX2 and FMA (checked once).
#[cfg(target_arch = "x86_64")]
fn has_fma() -> bool {
    crate::rows::has_avx2_fma()
}

/// [`task_body`] compiled with AVX2 and FMA: the same operations (`mul_add` is a fused
/// multiply-add in both builds), so the same bits; without software prefetches (see [`task`]).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn task_fma(
    input: &PassInput<'_>,
    start: usize,
    end: usize,
    rows: TaskRows<'_>,
) -> Result<TaskSums> {
    task_body(input, start, end, rows, false)
}

/// Column `j` of a column-major matrix as a slice.
#[inline(always)]
fn col(m: MatRef<'_, f64>, j: usize) -> &[f64] {
    match m.col(j).try_as_col_major() {
        Some(c) => c.as_slice(),
        None => &[],
    }
}

/// The eight partial sums of [`dot`] added in its fixed tree (shared by its SIMD kernels, for
/// the same bits).
#[inline(always)]
fn lane_tree(l: &[f64; 8]) -> f64 {
    ((l[0] + l[4]) + (l[1] + l[5])) + ((l[2] + l[6]) + (l[3] + l[7]))
}

/// `Σ_t x_t y_t` with eight lanes of partial sums, added in a fixed tree.
#[inline(always)]
fn dot(x: &[f64], y: &[f64]) -> f64 {
    let n = x.len().min(y.len());
    let (x, y) = (&x[..n], &y[..n]);
    let full = n / 8 * 8;
    let mut acc = [0.0f64; 8];
    for (xc, yc) in x[..full].chunks_exact(8).zip(y[..full].chunks_exact(8)) {
        for l in 0..8 {
            acc[l] = xc[l].mul_add(yc[l], acc[l]);
        }
    }
    let mut s = lane_tree(&acc);
    for t in full..n {
        s = x[t].mul_add(y[t], s);
    }
    s
}

/// `[dot(c_0, y), …, dot(c_3, y)]` (the same sums as [`dot`]), with AVX-512 or AVX2 registers
/// when the processor has them (chosen at run time, in every build of the pass).
#[inline(always)]
fn dot4(c: [&[f64]; 4], y: &[f64]) -> [f64; 4] {
    #[cfg(target_arch = "x86_64")]
    if crate::cpu::has_avx512vl() && c.iter().all(|x| x.len() >= y.len()) {
        // SAFETY: the processor has AVX-512F (checked at run time); every column has at least
        // `y.len()` entries.
        return unsafe { dot4_avx512(c, y) };
    }
    #[cfg(target_arch = "x86_64")]
    if has_fma() && c.iter().all(|x| x.len() >= y.len()) {
        // SAFETY: the processor has AVX2 and FMA (checked at run time); every column has at
        // least `y.len()` entries.
        return unsafe { dot4_avx2(c, y) };
    }
    std::array::from_fn(|k| dot(c[k], y))
}

/// [`dot4`] with AVX2: lanes `0..4` and `4..8` of [`dot`]'s eight partial sums are two
/// registers, added in the same tree (the same bits).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot4_avx2(c: [&[f64]; 4], y: &[f64]) -> [f64; 4] {
    use std::arch::x86_64::*;
    let n = y.len();
    let full = n / 8 * 8;
    let mut lo = [_mm256_setzero_pd(); 4];
    let mut hi = [_mm256_setzero_pd(); 4];
    let mut t = 0;
    while t < full {
        let yl = _mm256_loadu_pd(y.as_ptr().add(t));
        let yh = _mm256_loadu_pd(y.as_ptr().add(t + 4));
        for k in 0..4 {
            lo[k] = _mm256_fmadd_pd(_mm256_loadu_pd(c[k].as_ptr().add(t)), yl, lo[k]);
            hi[k] = _mm256_fmadd_pd(_mm256_loadu_pd(c[k].as_ptr().add(t + 4)), yh, hi[k]);
        }
        t += 8;
    }
    let mut out = [0.0; 4];
    for k in 0..4 {
        let mut l = [0.0f64; 8];
        _mm256_storeu_pd(l.as_mut_ptr(), lo[k]);
        _mm256_storeu_pd(l.as_mut_ptr().add(4), hi[k]);
        let mut s = lane_tree(&l);
        for t in full..n {
            s = c[k][t].mul_add(y[t], s);
        }
        out[k] = s;
    }
    out
}

/// [`dot4`] with AVX-512: [`dot`]'s eight partial sums of a row are the eight lanes of one
/// register, added in the same tree (the same bits).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,avx512f,avx512vl")]
unsafe fn dot4_avx512(c: [&[f64]; 4], y: &[f64]) -> [f64; 4] {
    use std::arch::x86_64::*;
    let n = y.len();
    let full = n / 8 * 8;
    let mut acc = [_mm512_setzero_pd(); 4];
    let mut t = 0;
    while t < full {
        let yv = _mm512_loadu_pd(y.as_ptr().add(t));
        for k in 0..4 {
            acc[k] = _mm512_fmadd_pd(_mm512_loadu_pd(c[k].as_ptr().add(t)), yv, acc[k]);
        }
        t += 8;
    }
    let mut out = [0.0; 4];
    for k in 0..4 {
        let mut l = [0.0f64; 8];
        _mm512_storeu_pd(l.as_mut_ptr(), acc[k]);
        let mut s = lane_tree(&l);
        for t in full..n {
            s = c[k][t].mul_add(y[t], s);
        }
        out[k] = s;
    }
    out
}

/// `a[t] += Σ_q c_q[t] w_q` and `b[t] += Σ_q c_q[t] u_q` for four columns `c_q`, in order `q`
/// (one fused chain per entry). Meanwhile it asks for the lines of `next` to be brought into
/// the L2 cache, spread evenly over the loop: the next block of `V_r` arrives while this one is
/// worked on from the cache, instead of the memory standing idle until its first reads. (A
/// prefetch changes no result.)
#[inline(always)]
fn axpy4(a: &mut [f64], b: &mut [f64], c: [&[f64]; 4], w: [f64; 4], u: [f64; 4], next: &[f64]) {
    /// Entries per piece of the loop; the prefetches are issued between pieces.
    const PIECE: usize = 64;
    let n = a.len();
    let pieces = n.div_ceil(PIECE);
    // Lines of 64 bytes (8 values) of `next`, and how many to ask for per piece.
    let lines = next.len().div_ceil(8);
    let per_piece = lines.div_ceil(pieces.max(1));
    let mut line = 0;
    for k in 0..pieces {
        for _ in 0..per_piece {
            if line < lines {
                prefetch_l2(&next[line * 8]);
                line += 1;
            }
        }
        let (lo, hi) = (k * PIECE, ((k + 1) * PIECE).min(n));
        axpy4_piece(
            &mut a[lo..hi],
            &mut b[lo..hi],
            [&c[0][lo..hi], &c[1][lo..hi], &c[2][lo..hi], &c[3][lo..hi]],
            w,
            u,
        );
    }
}

/// The loop of [`axpy4`] on equal-length slices (vectorised by the compiler).
#[inline(always)]
fn axpy4_piece(a: &mut [f64], b: &mut [f64], c: [&[f64]; 4], w: [f64; 4], u: [f64; 4]) {
    let n = a.len();
    let b = &mut b[..n];
    let (c0, c1, c2, c3) = (&c[0][..n], &c[1][..n], &c[2][..n], &c[3][..n]);
    for t in 0..n {
        a[t] = c3[t].mul_add(
            w[3],
            c2[t].mul_add(w[2], c1[t].mul_add(w[1], c0[t].mul_add(w[0], a[t]))),
        );
        b[t] = c3[t].mul_add(
            u[3],
            c2[t].mul_add(u[2], c1[t].mul_add(u[1], c0[t].mul_add(u[0], b[t]))),
        );
    }
}

/// A hint to bring the cache line of `x` into the L2 cache (no effect on results).
#[inline(always)]
fn prefetch_l2(x: &f64) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint; it reads nothing and `x` is a valid reference.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T1};
        _mm_prefetch::<_MM_HINT_T1>((x as *const f64).cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = x;
}

/// `a[t] += c[t] w`, `b[t] += c[t] u`.
#[inline(always)]
fn axpy1(a: &mut [f64], b: &mut [f64], c: &[f64], w: f64, u: f64) {
    let n = a.len();
    let (b, c) = (&mut b[..n], &c[..n]);
    for t in 0..n {
        a[t] = c[t].mul_add(w, a[t]);
        b[t] = c[t].mul_add(u, b[t]);
    }
}

/// Rows `from .. to` of `V_r` (columns of `V_rᵀ`) as one slice when they are contiguous, else
/// empty.
#[inline(always)]
fn next_block(vt: MatRef<'_, f64>, from: usize, to: usize) -> &[f64] {
    let r = vt.nrows();
    if from >= to || vt.row_stride() != 1 || vt.col_stride() != r as isize {
        return &[];
    }
    let first = col(vt, from);
    if first.is_empty() {
        return &[];
    }
    // SAFETY: columns `from .. to` of a column-major matrix with column stride `r` are the
    // `(to − from) r` consecutive values starting at column `from`, all inside the matrix.
    unsafe { std::slice::from_raw_parts(first.as_ptr(), (to - from) * r) }
}

/// One task's rows (see [`task`]); with `prefetch`, the next block of `V_r` is asked for while
/// the current one is accumulated.
#[inline(always)]
fn task_body(
    input: &PassInput<'_>,
    start: usize,
    end: usize,
    rows: TaskRows<'_>,
    prefetch: bool,
) -> Result<TaskSums> {
    let (vt, q) = (input.vt, input.q);
    let r = vt.nrows();
    let d = q.ncols();
    let len = end - start;
    let (a, b) = (&input.map.estimate, &input.map.incoming);
    let rho = input.map.damping;
    let TaskRows {
        mut z_minus,
        mut r_minus,
        mut z_prior,
    } = rows;
    let with_prior = input.prior.is_some();
    let mut cov = vec![vec![0.0; d * d]; len.div_ceil(ROW_CHUNK)];
    let mut acc_z = vec![0.0; if with_prior { r * d } else { 0 }];
    let mut acc_r = acc_z.clone();
    let qc: Vec<&[f64]> = (0..d).map(|c| col(q, c)).collect();
    let sub = sub_block(r);
    let mut i0 = 0;
    while i0 < len {
        let i1 = (i0 + sub).min(len);
        // Ẑ⁻ rows, then the message rule's rows (the sums of `mul_small_sum` and of the damping
        // in `MessagePolicy::extrinsic`, row by row).
        // Four rows of V_r at a time (four read streams), then one at a time.
        let mut i = i0;
        while i < i1 {
            let w = if i + 4 <= i1 { 4 } else { 1 };
            let cols: [&[f64]; 4] = std::array::from_fn(|k| col(vt, start + i + k.min(w - 1)));
            for c in 0..d {
                let z = dot4(cols, qc[c]);
                for (k, &zk) in z.iter().enumerate().take(w) {
                    let mut zk = zk;
                    if input.complement {
                        zk += input.plus[(start + i + k, c)];
                    }
                    z_minus[(i + k, c)] = zk;
                }
            }
            i += w;
        }
        for i in i0..i1 {
            for j in 0..d {
                let mut s1 = 0.0;
                let mut s2 = 0.0;
                for l in 0..d {
                    let c = a[(l, j)];
                    if c != 0.0 {
                        s1 += c * z_minus[(i, l)];
                    }
                }
                for l in 0..d {
                    let c = b[(l, j)];
                    if c != 0.0 {
                        s2 += c * input.plus[(start + i, l)];
                    }
                }
                let mut m = s1 + s2;
                if rho > 0.0 {
                    m = m * (1.0 - rho) + input.prev[(start + i, j)] * rho;
                }
                r_minus[(i, j)] = m;
            }
        }
        if let Some(den) = input.prior {
            let chunk = i0 / ROW_CHUNK;
            den.denoise_rows(
                r_minus.as_ref().subrows(i0, i1 - i0),
                z_prior.as_mut().subrows_mut(i0, i1 - i0),
                &mut cov[chunk],
            )?;
            // V_blkᵀ Ẑ⁺ and V_blkᵀ R⁻ while the block is in cache; meanwhile the next block is
            // fetched (its rows are contiguous when `V_rᵀ` is), a share per call of `axpy4`.
            let next = if prefetch {
                next_block(vt, start + i1, start + (i1 + sub).min(len))
            } else {
                &[]
            };
            let calls = d * ((i1 - i0) / 4);
            // Whole cache lines (8 values) per call.
            let share = next.len().div_ceil(calls.max(1)).next_multiple_of(8);
            let mut call = 0;
            for c in 0..d {
                let (az, ar) = (
                    &mut acc_z[c * r..(c + 1) * r],
                    &mut acc_r[c * r..(c + 1) * r],
                );
                let mut i = i0;
                while i + 4 <= i1 {
                    let cols = std::array::from_fn(|k| col(vt, start + i + k));
                    let w = std::array::from_fn(|k| z_prior[(i + k, c)]);
                    let u = std::array::from_fn(|k| r_minus[(i + k, c)]);
                    let lo = (call * share).min(next.len());
                    let hi = ((call + 1) * share).min(next.len());
                    if next.is_empty() {
                        axpy4_piece(az, ar, cols, w, u);
                    } else {
                        axpy4(az, ar, cols, w, u, &next[lo..hi]);
                    }
                    call += 1;
                    i += 4;
                }
                while i < i1 {
                    axpy1(az, ar, col(vt, start + i), z_prior[(i, c)], r_minus[(i, c)]);
                    i += 1;
                }
            }
        }
        i0 = i1;
    }
    Ok(TaskSums { cov, acc_z, acc_r })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::denoise::sparse::BernoulliGaussianPrior;
    use crate::denoise::GaussianPrior;
    use crate::factor::InputPrior;
    use crate::spd::{DMat, Spd};

    fn bits(m: &Mat<f64>) -> Vec<u64> {
        (0..m.ncols())
            .flat_map(|j| (0..m.nrows()).map(move |i| m[(i, j)].to_bits()))
            .collect()
    }

    /// A task's rows in matrices of their own, and its sums.
    struct TaskOut {
        z_minus: Mat<f64>,
        r_minus: Mat<f64>,
        z_prior: Mat<f64>,
        sums: TaskSums,
    }

    /// Runs one build of a task on rows `start .. end` into fresh matrices.
    fn owned(
        input: &PassInput<'_>,
        start: usize,
        end: usize,
        build: impl FnOnce(&PassInput<'_>, usize, usize, TaskRows<'_>) -> Result<TaskSums>,
    ) -> TaskOut {
        let d = input.q.ncols();
        let rows = if input.prior.is_some() {
            end - start
        } else {
            0
        };
        let (mut z_minus, mut r_minus) = (Mat::zeros(end - start, d), Mat::zeros(end - start, d));
        let mut z_prior = Mat::zeros(rows, d);
        let views = TaskRows {
            z_minus: z_minus.as_mut(),
            r_minus: r_minus.as_mut(),
            z_prior: z_prior.as_mut(),
        };
        let sums = build(input, start, end, views).unwrap();
        TaskOut {
            z_minus,
            r_minus,
            z_prior,
            sums,
        }
    }

    fn same(a: &TaskOut, b: &TaskOut) -> bool {
        let v = |x: &[f64]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        let (s, t) = (&a.sums, &b.sums);
        bits(&a.z_minus) == bits(&b.z_minus)
            && bits(&a.r_minus) == bits(&b.r_minus)
            && bits(&a.z_prior) == bits(&b.z_prior)
            && s.cov.iter().zip(&t.cov).all(|(x, y)| v(x) == v(y))
            && v(&s.acc_z) == v(&t.acc_z)
            && v(&s.acc_r) == v(&t.acc_r)
    }

    /// The pass writes every task's rows in place and adds the tasks' sums in task order: its
    /// output has the bits of the tasks run one by one and assembled by hand, on a pool of one
    /// thread and of two (the sums of `V_rᵀ Ẑ⁺` and `V_rᵀ R⁻` long enough to be shared out).
    #[test]
    fn the_pass_assembles_its_tasks_in_order_on_any_pool() {
        let mut rng = crate::rng::rng_from_seed(8);
        let (d, r, n) = (4, 1100, 3 * TASK + 17);
        let prior: Box<dyn InputPrior> =
            Box::new(GaussianPrior::new(vec![0.1; d], DMat::identity(d, d) * 1.5).unwrap());
        let prec = Spd::from_symmetric("precision", DMat::identity(d, d) * 2.0).unwrap();
        let den = prior.row_denoiser(&prec).unwrap().unwrap();
        let vt = crate::rng::standard_normal(r, n, &mut rng);
        let q = crate::rng::standard_normal(r, d, &mut rng);
        let plus = crate::rng::standard_normal(n, d, &mut rng);
        let prev = crate::rng::standard_normal(n, d, &mut rng);
        let map = MeanMap {
            estimate: DMat::identity(d, d) * 0.7,
            incoming: DMat::identity(d, d) * -0.2,
            damping: 0.1,
            lambda: DMat::identity(d, d),
        };
        let input = PassInput {
            vt: vt.as_ref(),
            q: q.as_ref(),
            complement: true,
            plus: plus.as_ref(),
            map: &map,
            prev: prev.as_ref(),
            prior: Some(&*den),
        };
        let tasks: Vec<TaskOut> = (0..n.div_ceil(TASK))
            .map(|t| {
                owned(&input, t * TASK, ((t + 1) * TASK).min(n), |i, s, e, v| {
                    task_body(i, s, e, v, false)
                })
            })
            .collect();
        let rows = |pick: fn(&TaskOut) -> &Mat<f64>| {
            Mat::from_fn(n, d, |i, c| pick(&tasks[i / TASK])[(i % TASK, c)])
        };
        let sum = |pick: fn(&TaskSums) -> &Vec<f64>| {
            Mat::from_fn(r, d, |i, c| {
                tasks.iter().fold(0.0, |s, t| s + pick(&t.sums)[c * r + i])
            })
        };
        let want = [
            rows(|t| &t.z_minus),
            rows(|t| &t.r_minus),
            rows(|t| &t.z_prior),
            sum(|s| &s.acc_z),
            sum(|s| &s.acc_r),
        ];
        for threads in [1, 2] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let out = pool.install(|| pass(&input)).unwrap();
            let p = out.prior.unwrap();
            let got = [out.z_minus, out.r_minus, p.z, p.vt_z, p.vt_r];
            for (k, (g, w)) in got.iter().zip(&want).enumerate() {
                assert_eq!(bits(g), bits(w), "output {k}, {threads} threads");
            }
        }
    }

    /// [`dot4`]'s AVX2 and AVX-512 kernels give [`dot`]'s bits (each where the processor has
    /// it), for lengths on both sides of the eight lanes.
    #[test]
    fn dot4_kernels_give_the_bits_of_dot() {
        let mut rng = crate::rng::rng_from_seed(6);
        for n in [0, 1, 7, 8, 9, 37, 64, 203, 2048] {
            let c = crate::rng::standard_normal(n, 4, &mut rng);
            let y = crate::rng::standard_normal(n, 1, &mut rng);
            let cols: [&[f64]; 4] = std::array::from_fn(|k| col(c.as_ref(), k));
            let y = col(y.as_ref(), 0);
            let want: Vec<u64> = cols.iter().map(|x| dot(x, y).to_bits()).collect();
            #[cfg(target_arch = "x86_64")]
            {
                if has_fma() {
                    // SAFETY: checked at run time; the columns have `n` entries.
                    let got = unsafe { dot4_avx2(cols, y) };
                    assert_eq!(got.map(f64::to_bits).to_vec(), want, "AVX2, n {n}");
                }
                if crate::cpu::has_avx512vl() {
                    // SAFETY: checked at run time; the columns have `n` entries.
                    let got = unsafe { dot4_avx512(cols, y) };
                    assert_eq!(got.map(f64::to_bits).to_vec(), want, "AVX-512, n {n}");
                }
            }
        }
    }

    /// The portable, FMA and AVX-512 builds of a task give the same bits (each where the
    /// processor has it): `d = 1` with vampyre's Bernoulli–Gaussian prior and `d = 4` with a
    /// full-covariance Gaussian, ranks that are not multiples of 8, row ranges that are not
    /// multiples of the blocks, with and without the complement and damping. ([`dot4`] picks its
    /// kernel at run time in every build; `dot4_kernels_give_the_bits_of_dot` compares those.)
    #[test]
    fn every_build_of_a_task_gives_the_same_bits() {
        let mut rng = crate::rng::rng_from_seed(5);
        for (d, r, n, complement, rho) in [
            (1, 203, 700, true, 0.0),
            (1, 64, 64, false, 0.3),
            (4, 37, 300, true, 0.2),
            (4, 100, 100, false, 0.0),
        ] {
            let prior: Box<dyn InputPrior> = if d == 1 {
                Box::new(BernoulliGaussianPrior::new(0.1, vec![0.0], DMat::identity(1, 1)).unwrap())
            } else {
                let a = crate::rng::standard_normal(d, d, &mut rng);
                let cov = crate::spd::sym(
                    &(DMat::from_fn(d, d, |i, j| a[(i, j)]).transpose()
                        * DMat::from_fn(d, d, |i, j| a[(i, j)])
                        + DMat::identity(d, d)),
                );
                Box::new(GaussianPrior::new(vec![0.1; d], cov).unwrap())
            };
            let prec = Spd::from_symmetric(
                "precision",
                DMat::identity(d, d) * 2.0 + DMat::from_element(d, d, 0.3),
            )
            .unwrap();
            let den = prior.row_denoiser(&prec).unwrap().unwrap();
            let vt = crate::rng::standard_normal(r, n, &mut rng);
            let q = crate::rng::standard_normal(r, d, &mut rng);
            let plus = crate::rng::standard_normal(n, d, &mut rng);
            let prev = crate::rng::standard_normal(n, d, &mut rng);
            let m = crate::rng::standard_normal(2 * d, d, &mut rng);
            let map = MeanMap {
                estimate: DMat::from_fn(d, d, |i, j| m[(i, j)]),
                incoming: DMat::from_fn(d, d, |i, j| if i == j { 0.0 } else { m[(d + i, j)] }),
                damping: rho,
                lambda: DMat::identity(d, d),
            };
            let input = PassInput {
                vt: vt.as_ref(),
                q: q.as_ref(),
                complement,
                plus: plus.as_ref(),
                map: &map,
                prev: prev.as_ref(),
                prior: Some(&*den),
            };
            for (start, end) in [(0, n.min(TASK)), (n / 3, n)] {
                let portable = owned(&input, start, end, |i, s, e, v| task_body(i, s, e, v, true));
                // Without prefetches (the FMA build's choice), the same bits.
                assert!(same(
                    &portable,
                    &owned(&input, start, end, |i, s, e, v| task_body(
                        i, s, e, v, false
                    ))
                ));
                assert!(
                    portable.z_prior.norm_l2() > 0.0
                        && portable.sums.acc_r.iter().any(|&x| x != 0.0)
                );
                #[cfg(target_arch = "x86_64")]
                {
                    if has_fma() {
                        // SAFETY: checked at run time.
                        let fma = owned(&input, start, end, |i, s, e, v| unsafe {
                            task_fma(i, s, e, v)
                        });
                        // The portable build has no fused multiply-add instruction: `mul_add`
                        // is a (slow) correctly rounded call there, the same value.
                        assert!(same(&portable, &fma), "FMA build, d {d}, r {r}");
                    }
                    if crate::cpu::has_avx512vl() {
                        // SAFETY: checked at run time.
                        let wide = owned(&input, start, end, |i, s, e, v| unsafe {
                            task_avx512(i, s, e, v)
                        });
                        assert!(same(&portable, &wide), "AVX-512 build, d {d}, r {r}");
                    }
                }
            }
        }
    }
}
