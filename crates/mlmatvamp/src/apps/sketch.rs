//! The sketch of sketched clustering (paper §2.2; `docs/sketched-clustering.md`): a dataset of
//! `T` points `x_t ∈ R^p` compressed in one pass to the `M` complex numbers
//!
//! ```text
//! y_m = (1/T) Σ_t exp(i w_mᵀ (x_t − μ)),     μ = (1/T) Σ_t x_t,
//! ```
//!
//! the empirical characteristic function of the centred data at the frequencies `w_m` (the rows
//! of `Ω`, `M x p`).
//!
//! * **Frequencies** ([`Frequencies::draw`]): `w_m = R_m u_m` with `u_m` uniform on the unit
//!   sphere and the radius from the "adapted radius" density of Keriven et al.,
//!   `p(R) ∝ (R²σ² + R⁴σ⁴/4)^{1/2} exp(−R²σ²/2)`, where `σ²` is the within-cluster variance
//!   (given, or estimated by [`estimate_sigma2`] from a subsample), seeded.
//! * **One pass, any order, mergeable.** A [`PartialSketch`] holds *sums*: the count `T`, the
//!   running mean and second moments of the data (Chan's update), and
//!   `Σ_t exp(i w_mᵀ (x_t − s))` about a fixed *shift* `s` (the mean of the first block it saw,
//!   which keeps the phases small). It needs no knowledge of `μ`: the centring is exact
//!   afterwards, `y_m = e^{−i w_mᵀ(μ − s)} (1/T) Σ_t e^{i w_mᵀ(x_t − s)}` ([`PartialSketch::finish`]).
//!   Two partial sketches of disjoint shards with the same frequencies [`merge`] into the partial
//!   sketch of their union (the second is re-expressed about the first's shift, exactly:
//!   `e^{i wᵀ(s_b − s_a)}`), which is what a map-reduce engine needs: map = [`sketch_block`],
//!   reduce = [`merge`].
//! * **Fast.** Points are processed in blocks of [`BLOCK`] rows; for each frequency the phases
//!   of a block are one product, and `Σ cos`, `Σ sin` one vectorisable pass of a polynomial
//!   sine/cosine (Cody–Waite reduction by `π/2`, fdlibm's minimax kernels; measured within
//!   `3.3e-16` of the standard library for phases up to `7.3e3` rad, `tests/sketch.rs`). Blocks of [`TASK_ROWS`] rows run in parallel and their sums
//!   are added in block order, so the result does not depend on the thread count.

use crate::error::{Error, Result};
use crate::rng::{rng_from_seed, Rng};
use faer::{Mat, MatRef};
use rand::RngExt;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// Rows per inner block of the sketching kernel.
pub const BLOCK: usize = 256;

/// Rows per parallel task (a multiple of [`BLOCK`]); task sums are added in order.
pub const TASK_ROWS: usize = 16 * BLOCK;

// ---------------------------------------------------------------------------------------------
// Frequencies
// ---------------------------------------------------------------------------------------------

/// The frequency matrix `Ω` (`M x p`, rows `w_m`) with the `σ²` it was adapted to.
#[derive(Clone, Debug)]
pub struct Frequencies {
    omega: Mat<f64>,
    sigma2: f64,
    fingerprint: u64,
}

/// FNV-1a over the bits of a matrix and its shape: identifies a frequency matrix in a partial
/// sketch, so that sketches made with different frequencies are never merged.
fn fingerprint(m: MatRef<'_, f64>) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |x: u64| {
        for b in x.to_le_bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    eat(m.nrows() as u64);
    eat(m.ncols() as u64);
    for i in 0..m.nrows() {
        for j in 0..m.ncols() {
            eat(m[(i, j)].to_bits());
        }
    }
    h
}

/// Checks `σ² > 0` and finite (a named error otherwise).
pub fn check_sigma2(sigma2: f64) -> Result<()> {
    if !(sigma2 > 0.0 && sigma2.is_finite()) {
        return Err(Error::invalid(
            "sigma2",
            format!("the within-cluster variance σ² must be positive and finite, got {sigma2}"),
        ));
    }
    Ok(())
}

/// The unnormalised adapted-radius density in `s = Rσ`: `(s² + s⁴/4)^{1/2} e^{−s²/2}`.
fn adapted_radius_pdf(s: f64) -> f64 {
    (s * s + s.powi(4) / 4.0).sqrt() * (-0.5 * s * s).exp()
}

/// Draws `n` values of `s = Rσ` from the adapted-radius law by inverting its cumulative
/// distribution, tabulated on `[0, 12]` (the mass beyond is below `1e-29`) with 4096 trapezoids.
fn adapted_radii(n: usize, rng: &mut Rng) -> Vec<f64> {
    const CELLS: usize = 4096;
    const TOP: f64 = 12.0;
    let h = TOP / CELLS as f64;
    let mut cdf = vec![0.0; CELLS + 1];
    for c in 0..CELLS {
        let (a, b) = (c as f64 * h, (c + 1) as f64 * h);
        cdf[c + 1] = cdf[c] + 0.5 * h * (adapted_radius_pdf(a) + adapted_radius_pdf(b));
    }
    let total = cdf[CELLS];
    (0..n)
        .map(|_| {
            let u: f64 = rng.random::<f64>() * total;
            // The cell with cdf[c] <= u < cdf[c+1], then linear interpolation.
            let c = cdf.partition_point(|&x| x <= u).clamp(1, CELLS) - 1;
            let span = cdf[c + 1] - cdf[c];
            let f = if span > 0.0 { (u - cdf[c]) / span } else { 0.0 };
            (c as f64 + f) * h
        })
        .collect()
}

impl Frequencies {
    /// `M` frequencies in `R^p` from the adapted-radius law for the within-cluster variance
    /// `sigma2`, seeded: `w_m = (s_m/σ) u_m`, `u_m` uniform on the unit sphere.
    pub fn draw(m: usize, p: usize, sigma2: f64, seed: u64) -> Result<Self> {
        if m == 0 {
            return Err(Error::invalid(
                "M",
                "the sketch needs at least one frequency",
            ));
        }
        if p == 0 {
            return Err(Error::invalid("p", "the data need at least one coordinate"));
        }
        check_sigma2(sigma2)?;
        let mut rng = rng_from_seed(seed);
        let radii = adapted_radii(m, &mut rng);
        let sigma = sigma2.sqrt();
        let mut omega = Mat::<f64>::zeros(m, p);
        for (i, s) in radii.iter().enumerate() {
            let mut norm2 = 0.0;
            while norm2 == 0.0 {
                for j in 0..p {
                    let g: f64 = rng.sample(rand_distr::StandardNormal);
                    omega[(i, j)] = g;
                    norm2 += g * g;
                }
            }
            let scale = s / sigma / norm2.sqrt();
            for j in 0..p {
                omega[(i, j)] *= scale;
            }
        }
        Self::from_matrix(omega, sigma2)
    }

    /// Given frequencies (`M x p`, finite) and the `σ²` that the gains use.
    pub fn from_matrix(omega: Mat<f64>, sigma2: f64) -> Result<Self> {
        if omega.nrows() == 0 || omega.ncols() == 0 {
            return Err(Error::invalid(
                "frequencies Ω",
                format!(
                    "must be non-empty, got {} x {}",
                    omega.nrows(),
                    omega.ncols()
                ),
            ));
        }
        crate::rows::check_finite("frequencies Ω", omega.as_ref())?;
        check_sigma2(sigma2)?;
        let fingerprint = fingerprint(omega.as_ref());
        Ok(Frequencies {
            omega,
            sigma2,
            fingerprint,
        })
    }

    /// `Ω` (`M x p`).
    pub fn matrix(&self) -> MatRef<'_, f64> {
        self.omega.as_ref()
    }
    /// `M`.
    pub fn m(&self) -> usize {
        self.omega.nrows()
    }
    /// `p`.
    pub fn p(&self) -> usize {
        self.omega.ncols()
    }
    /// The `σ²` the frequencies were adapted to.
    pub fn sigma2(&self) -> f64 {
        self.sigma2
    }
    /// The identifier of `Ω` stored in partial sketches.
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }
    /// The first `m` frequencies (a prefix of i.i.d. frequencies is itself such a draw; the
    /// sketch at those frequencies is the prefix of the sketch).
    pub fn prefix(&self, m: usize) -> Result<Self> {
        if m == 0 || m > self.m() {
            return Err(Error::invalid(
                "M",
                format!("a prefix needs 1 <= M <= {}, got {m}", self.m()),
            ));
        }
        Self::from_matrix(self.omega.as_ref().subrows(0, m).to_owned(), self.sigma2)
    }
    /// The gains `g_m = exp(−σ² ‖w_m‖²/2)` (the characteristic function of an isotropic Gaussian
    /// cluster of variance `σ²` per coordinate).
    pub fn gains(&self, sigma2: f64) -> Vec<f64> {
        (0..self.m())
            .map(|i| {
                let r2: f64 = (0..self.p()).map(|j| self.omega[(i, j)].powi(2)).sum();
                (-0.5 * sigma2 * r2).exp()
            })
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// The kernel: Σ_t cos θ_t and Σ_t sin θ_t
// ---------------------------------------------------------------------------------------------

/// `(sin θ, cos θ)` in plain floating-point and bit operations that vectorise (defined with the
/// complex-exponential output, whose Gauss–Newton rows share it).
pub use crate::denoise::cexp::fast_sin_cos;

/// `Σ_t cos θ_t`, `Σ_t sin θ_t` over a slice (four independent partial sums: term `t` goes to
/// sum `t mod 4`, the terms after the last whole group of four to the first), with `sn`, `cs`
/// (at least as long as `theta`) as room for the sines and cosines, which are formed first in
/// one loop that vectorises ([`crate::denoise::cexp::sin_cos_into`]).
#[inline(always)]
fn sum_cis(theta: &[f64], sn: &mut [f64], cs: &mut [f64]) -> (f64, f64) {
    let n = theta.len();
    let (sn, cs) = (&mut sn[..n], &mut cs[..n]);
    crate::denoise::cexp::sin_cos_into(theta, sn, cs);
    let mut c = [0.0f64; 4];
    let mut s = [0.0f64; 4];
    for (chs, chc) in sn.chunks_exact(4).zip(cs.chunks_exact(4)) {
        for l in 0..4 {
            c[l] += chc[l];
            s[l] += chs[l];
        }
    }
    for t in n / 4 * 4..n {
        c[0] += cs[t];
        s[0] += sn[t];
    }
    ((c[0] + c[1]) + (c[2] + c[3]), (s[0] + s[1]) + (s[2] + s[3]))
}

/// The sums of one block of rows (already shifted and transposed: `xt[j * b + t]`, `b` rows)
/// added into `re`, `im` (length `M`).
#[inline(always)]
fn block_sums(xt: &[f64], b: usize, omega_t: &[f64], p: usize, re: &mut [f64], im: &mut [f64]) {
    let mut theta = [0.0f64; BLOCK];
    let theta = &mut theta[..b];
    let (mut sn, mut cs) = ([0.0f64; BLOCK], [0.0f64; BLOCK]);
    for (mi, (r, i)) in re.iter_mut().zip(im.iter_mut()).enumerate() {
        let w = &omega_t[mi * p..(mi + 1) * p];
        theta.fill(0.0);
        for j in 0..p {
            let wj = w[j];
            for (th, x) in theta.iter_mut().zip(&xt[j * b..(j + 1) * b]) {
                *th += wj * x;
            }
        }
        let (c, s) = sum_cis(theta, &mut sn, &mut cs);
        *r += c;
        *i += s;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
/// [`block_sums`] compiled for AVX2 and FMA (4 lanes).
///
/// # Safety
/// The CPU must support AVX2 and FMA.
unsafe fn block_sums_avx2(
    xt: &[f64],
    b: usize,
    omega_t: &[f64],
    p: usize,
    re: &mut [f64],
    im: &mut [f64],
) {
    block_sums(xt, b, omega_t, p, re, im)
}

/// Whether the AVX2 kernel may run (detected once).
fn use_avx2() -> bool {
    crate::rows::has_avx2_fma()
}

/// The kernel on one task's rows: `Σ_t e^{i w_mᵀ (x_t − s)}` for every `m`.
fn task_sums(
    data: MatRef<'_, f64>,
    shift: &[f64],
    omega_t: &[f64],
    m: usize,
) -> (Vec<f64>, Vec<f64>) {
    let p = data.ncols();
    let mut re = vec![0.0; m];
    let mut im = vec![0.0; m];
    let mut xt = vec![0.0; p * BLOCK];
    let n = data.nrows();
    let avx2 = use_avx2();
    let mut start = 0;
    while start < n {
        let b = BLOCK.min(n - start);
        for j in 0..p {
            for t in 0..b {
                xt[j * b + t] = data[(start + t, j)] - shift[j];
            }
        }
        #[cfg(target_arch = "x86_64")]
        if avx2 {
            // SAFETY: AVX2 and FMA were detected at run time (`use_avx2`).
            unsafe { block_sums_avx2(&xt[..p * b], b, omega_t, p, &mut re, &mut im) };
            start += b;
            continue;
        }
        let _ = avx2;
        block_sums(&xt[..p * b], b, omega_t, p, &mut re, &mut im);
        start += b;
    }
    (re, im)
}

// ---------------------------------------------------------------------------------------------
// Partial sketches
// ---------------------------------------------------------------------------------------------

/// The sums behind a sketch of the points seen so far (module documentation): mergeable, and
/// exactly re-centred by [`PartialSketch::finish`].
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PartialSketch {
    /// [`Frequencies::fingerprint`] of the frequencies used.
    pub fingerprint: u64,
    /// `M`.
    pub m: usize,
    /// `p`.
    pub p: usize,
    /// The number of points `T`.
    pub count: u64,
    /// The shift `s` the sums are taken about (length `p`).
    pub shift: Vec<f64>,
    /// `Σ_t cos w_mᵀ(x_t − s)` (length `M`).
    pub re: Vec<f64>,
    /// `Σ_t sin w_mᵀ(x_t − s)` (length `M`).
    pub im: Vec<f64>,
    /// The running mean of the points (length `p`).
    pub mean: Vec<f64>,
    /// `Σ_t (x_tj − mean_j)²` per coordinate (length `p`).
    pub m2: Vec<f64>,
}

/// Checks a data block: `p` columns, every entry finite (the error, [`Error::NonFinite`], names
/// the row, counted from `first_row`).
pub fn check_block(data: MatRef<'_, f64>, p: usize, first_row: u64) -> Result<()> {
    if data.ncols() != p {
        return Err(Error::shape(
            "data block",
            format!("T x {p} (the frequencies have p = {p})"),
            format!("{} x {}", data.nrows(), data.ncols()),
        ));
    }
    for j in 0..p {
        for i in 0..data.nrows() {
            let x = data[(i, j)];
            if !x.is_finite() {
                // Report the first bad row (in row order).
                let row = (0..data.nrows())
                    .find(|&r| (0..p).any(|c| !data[(r, c)].is_finite()))
                    .unwrap_or(i);
                let col = (0..p).find(|&c| !data[(row, c)].is_finite()).unwrap_or(j);
                return Err(Error::NonFinite {
                    what: "data".into(),
                    detail: format!(
                        "row {} (0-based), column {col} is {}",
                        first_row + row as u64,
                        data[(row, col)]
                    ),
                });
            }
        }
    }
    Ok(())
}

impl PartialSketch {
    /// The sketch of no points (`T = 0`) for the frequencies `freqs`.
    pub fn empty(freqs: &Frequencies) -> Self {
        PartialSketch {
            fingerprint: freqs.fingerprint(),
            m: freqs.m(),
            p: freqs.p(),
            count: 0,
            shift: vec![0.0; freqs.p()],
            re: vec![0.0; freqs.m()],
            im: vec![0.0; freqs.m()],
            mean: vec![0.0; freqs.p()],
            m2: vec![0.0; freqs.p()],
        }
    }

    fn check_frequencies(&self, freqs: &Frequencies) -> Result<()> {
        if self.fingerprint != freqs.fingerprint() || self.m != freqs.m() || self.p != freqs.p() {
            return Err(Error::invalid(
                "frequencies",
                format!(
                    "the partial sketch was made with other frequencies (M = {}, p = {}, fingerprint {:016x}) than the ones given (M = {}, p = {}, fingerprint {:016x})",
                    self.m,
                    self.p,
                    self.fingerprint,
                    freqs.m(),
                    freqs.p(),
                    freqs.fingerprint()
                ),
            ));
        }
        Ok(())
    }

    /// Adds a block of points (`n x p`, finite; `first_row` = the index of its first row in the
    /// whole dataset, for error messages). An empty sketch takes the block's mean as its shift.
    /// The block is checked before anything changes.
    pub fn add_block(
        &mut self,
        data: MatRef<'_, f64>,
        freqs: &Frequencies,
        first_row: u64,
    ) -> Result<()> {
        self.check_frequencies(freqs)?;
        check_block(data, self.p, first_row)?;
        let n = data.nrows();
        if n == 0 {
            return Ok(());
        }
        let p = self.p;
        // The block's mean and second moments (two passes over the block).
        let mut bmean = vec![0.0; p];
        for j in 0..p {
            bmean[j] = (0..n).map(|i| data[(i, j)]).sum::<f64>() / n as f64;
        }
        let bm2: Vec<f64> = (0..p)
            .map(|j| (0..n).map(|i| (data[(i, j)] - bmean[j]).powi(2)).sum())
            .collect();
        if self.count == 0 {
            self.shift = bmean.clone();
        }
        let (re, im) = sketch_sums(data, &self.shift, freqs);
        for (a, b) in self.re.iter_mut().zip(re) {
            *a += b;
        }
        for (a, b) in self.im.iter_mut().zip(im) {
            *a += b;
        }
        self.combine_moments(n as u64, &bmean, &bm2);
        Ok(())
    }

    /// Chan et al.'s pairwise update of the count, mean and second moments.
    fn combine_moments(&mut self, nb: u64, bmean: &[f64], bm2: &[f64]) {
        let (na, nbf) = (self.count as f64, nb as f64);
        let n = na + nbf;
        for j in 0..self.p {
            let delta = bmean[j] - self.mean[j];
            self.mean[j] += delta * nbf / n;
            self.m2[j] += bm2[j] + delta * delta * na * nbf / n;
        }
        self.count += nb;
    }

    /// The finished sketch: centred at the data mean, averaged over the `T` points.
    pub fn finish(&self, freqs: &Frequencies) -> Result<Sketch> {
        self.check_frequencies(freqs)?;
        if self.count == 0 {
            return Err(Error::invalid(
                "data",
                "the sketch has seen no points (T = 0)",
            ));
        }
        let t = self.count as f64;
        let delta: Vec<f64> = (0..self.p).map(|j| self.mean[j] - self.shift[j]).collect();
        let om = freqs.matrix();
        let y = Mat::from_fn(self.m, 2, |i, c| {
            let phase: f64 = (0..self.p).map(|j| om[(i, j)] * delta[j]).sum();
            let (s, co) = (-phase).sin_cos();
            let (a, b) = (self.re[i] / t, self.im[i] / t);
            // (a + ib) e^{−i wᵀ(μ − s)}.
            if c == 0 {
                a * co - b * s
            } else {
                a * s + b * co
            }
        });
        Ok(Sketch {
            y,
            count: self.count,
            mean: self.mean.clone(),
            variance: self.m2.iter().map(|v| v / t).collect(),
        })
    }
}

/// `Σ_t e^{i w_mᵀ(x_t − s)}` for every `m`, in parallel over fixed tasks of [`TASK_ROWS`] rows
/// (summed in task order).
fn sketch_sums(data: MatRef<'_, f64>, shift: &[f64], freqs: &Frequencies) -> (Vec<f64>, Vec<f64>) {
    let (m, p) = (freqs.m(), freqs.p());
    let om = freqs.matrix();
    let mut omega_t = vec![0.0; m * p];
    for i in 0..m {
        for j in 0..p {
            omega_t[i * p + j] = om[(i, j)];
        }
    }
    let n = data.nrows();
    let tasks = n.div_ceil(TASK_ROWS);
    let parts: Vec<(Vec<f64>, Vec<f64>)> = (0..tasks)
        .into_par_iter()
        .map(|t| {
            let start = t * TASK_ROWS;
            let rows = TASK_ROWS.min(n - start);
            task_sums(data.subrows(start, rows), shift, &omega_t, m)
        })
        .collect();
    let mut re = vec![0.0; m];
    let mut im = vec![0.0; m];
    for (a, b) in parts {
        for i in 0..m {
            re[i] += a[i];
            im[i] += b[i];
        }
    }
    (re, im)
}

/// The partial sketch of one in-memory block of points (`n x p`, finite) — the "map" of a
/// distributed sketch. Its shift is the block's mean.
pub fn sketch_block(data: MatRef<'_, f64>, freqs: &Frequencies) -> Result<PartialSketch> {
    let mut s = PartialSketch::empty(freqs);
    s.add_block(data, freqs, 0)?;
    Ok(s)
}

/// The partial sketch of the union of two disjoint shards — the "reduce" of a distributed sketch.
/// Both must come from the same frequencies; the sums of `b` are re-expressed about the shift of
/// `a` (exactly, by the phase factor `e^{i w_mᵀ(s_b − s_a)}`).
pub fn merge(a: &PartialSketch, b: &PartialSketch, freqs: &Frequencies) -> Result<PartialSketch> {
    a.check_frequencies(freqs)?;
    b.check_frequencies(freqs)?;
    if a.count == 0 {
        return Ok(b.clone());
    }
    if b.count == 0 {
        return Ok(a.clone());
    }
    let mut out = a.clone();
    let om = freqs.matrix();
    for i in 0..a.m {
        let phase: f64 = (0..a.p)
            .map(|j| om[(i, j)] * (b.shift[j] - a.shift[j]))
            .sum();
        let (s, c) = phase.sin_cos();
        out.re[i] += b.re[i] * c - b.im[i] * s;
        out.im[i] += b.re[i] * s + b.im[i] * c;
    }
    out.combine_moments(b.count, &b.mean, &b.m2);
    Ok(out)
}

/// A finished sketch: `y_m` centred at the data mean (`M x 2`: real, imaginary), with `T`, the
/// mean and the per-coordinate variance of the data.
#[derive(Clone, Debug)]
pub struct Sketch {
    /// `y` (`M x 2`).
    pub y: Mat<f64>,
    /// `T`.
    pub count: u64,
    /// The data mean `μ` (length `p`).
    pub mean: Vec<f64>,
    /// The per-coordinate variance of the data (length `p`).
    pub variance: Vec<f64>,
}

impl Sketch {
    /// The sketch at the first `m` frequencies.
    pub fn prefix(&self, m: usize) -> Result<Sketch> {
        if m == 0 || m > self.y.nrows() {
            return Err(Error::invalid(
                "M",
                format!("a prefix needs 1 <= M <= {}, got {m}", self.y.nrows()),
            ));
        }
        Ok(Sketch {
            y: self.y.as_ref().subrows(0, m).to_owned(),
            ..self.clone()
        })
    }
}

/// The sketch `(1/T) Σ_t e^{i w_mᵀ(x_t − μ)}` of an in-memory dataset (`T x p`).
pub fn sketch(data: MatRef<'_, f64>, freqs: &Frequencies) -> Result<Sketch> {
    sketch_block(data, freqs)?.finish(freqs)
}

// ---------------------------------------------------------------------------------------------
// σ² from a subsample
// ---------------------------------------------------------------------------------------------

/// The within-cluster variance per coordinate, `σ²`, estimated from a subsample (`n x p`, e.g.
/// the first chunk of a file): `rounds` Lloyd iterations from a seeded k-means++ start with `k`
/// centres, then `σ² = (mean squared distance to the nearest centre) / p`. A heuristic for the
/// frequency law only (the recovery does not use the subsample).
pub fn estimate_sigma2(sample: MatRef<'_, f64>, k: usize, rounds: usize, seed: u64) -> Result<f64> {
    let (n, p) = (sample.nrows(), sample.ncols());
    if k == 0 || k > n {
        return Err(Error::invalid(
            "K",
            format!("the σ² heuristic needs 1 <= K <= {n} (the subsample's points), got {k}"),
        ));
    }
    check_block(sample, p, 0)?;
    let mut rng = rng_from_seed(seed);
    let dist2 =
        |i: usize, c: &[f64]| -> f64 { (0..p).map(|j| (sample[(i, j)] - c[j]).powi(2)).sum() };
    // k-means++ seeding.
    let first = rng.random_range(0..n);
    let mut centres: Vec<Vec<f64>> = vec![(0..p).map(|j| sample[(first, j)]).collect()];
    let mut near: Vec<f64> = (0..n).map(|i| dist2(i, &centres[0])).collect();
    while centres.len() < k {
        let total: f64 = near.iter().sum();
        let pick = if total > 0.0 {
            let u = rng.random::<f64>() * total;
            let mut acc = 0.0;
            near.iter()
                .position(|d| {
                    acc += d;
                    acc > u
                })
                .unwrap_or(n - 1)
        } else {
            rng.random_range(0..n)
        };
        let c: Vec<f64> = (0..p).map(|j| sample[(pick, j)]).collect();
        for (i, d) in near.iter_mut().enumerate() {
            *d = d.min(dist2(i, &c));
        }
        centres.push(c);
    }
    let mut sse = 0.0;
    for round in 0..=rounds {
        let mut sums = vec![vec![0.0; p]; k];
        let mut counts = vec![0usize; k];
        sse = 0.0;
        for i in 0..n {
            let (best, d) = centres
                .iter()
                .enumerate()
                .map(|(c, cc)| (c, dist2(i, cc)))
                .fold((0, f64::INFINITY), |a, b| if b.1 < a.1 { b } else { a });
            sse += d;
            counts[best] += 1;
            for j in 0..p {
                sums[best][j] += sample[(i, j)];
            }
        }
        if round == rounds {
            break;
        }
        for c in 0..k {
            if counts[c] > 0 {
                for j in 0..p {
                    centres[c][j] = sums[c][j] / counts[c] as f64;
                }
            }
        }
    }
    let s2 = sse / (n * p) as f64;
    if !(s2 > 0.0 && s2.is_finite()) {
        return Err(Error::invalid(
            "data",
            format!(
                "the σ² heuristic found a within-cluster variance of {s2} (are all points equal?)"
            ),
        ));
    }
    Ok(s2)
}
