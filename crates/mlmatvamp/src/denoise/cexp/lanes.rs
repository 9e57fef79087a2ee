//! The Gauss–Newton rows of the complex-exponential MAP denoiser, [`LANES`] rows at a time
//! (`docs/sketched-clustering.md`, "Fifth pass").
//!
//! [`super::MapRow::minimize_gn`] solves one row at a time; its work is a chain of short
//! dependent sums (`K`-term dot products, `K x K` column updates, the phases' sines and
//! cosines), so one row waits on the latency of its additions. Here every quantity of a row is
//! a lane of an `[f64; LANES]` array and the same loop runs `LANES` rows side by side, which the
//! compiler turns into vector instructions across rows. Each lane performs **the same
//! floating-point operations in the same order** as the one-row solver (sums from `-0.0` like
//! `Iterator::sum`, `K x K` products from `+0.0` in column order, no fused multiply-adds), so
//! every row's estimate and covariance have the same bits.
//!
//! Only the common path runs in lanes: Newton steps whose capacitance matrix is positive
//! definite and whose Armijo line search succeeds, up to convergence or the iteration limit. A
//! row that leaves it — a gradient fallback, a failed line search, a non-finite value, a final
//! capacitance that is not positive definite — is marked [`Lane::Deferred`] and solved again
//! from its start by the one-row solver, which is a function of the row's inputs alone, so the
//! result is the one-row solver's in every case.

use super::{fast_sin_cos, GnMatrices};
use crate::denoise::newton::NewtonOptions;
use faer::MatRef;
use std::ops::Range;

/// Rows per group (two AVX2 registers, or one AVX-512 register, per quantity).
pub(super) const LANES: usize = 8;

/// The state of a lane, or of a row once solved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Lane {
    /// Iterating.
    Active,
    /// Loaded in this step; it joins the next one (its derivatives are not yet computed).
    Fresh,
    /// Converged, or at the iteration limit, in this step; its covariance is formed before it
    /// is retired.
    Converged,
    /// Converged, with its estimate and covariance (a row's final state).
    Done,
    /// Stopped by the iteration limit before the gradient tolerance, with its estimate and
    /// covariance at that point, as the one-row solver leaves it (a row's final state; the
    /// caller counts it as not converged).
    Limited,
    /// Left the common path: the caller solves the row with the one-row solver (a row's final
    /// state; a lane in this state is retired at the end of the step).
    Deferred,
    /// No row (the chunk's rows are used up).
    Empty,
}

type V = [f64; LANES];

/// A chunk of rows to solve, with everything the rows share.
pub(super) struct Chunk<'a> {
    /// The rows (at most one chunk of `par_map_rows_with`).
    pub range: Range<usize>,
    /// The observations (`M x 2`: real, imaginary part).
    pub y: MatRef<'a, f64>,
    /// The gains `g_m`.
    pub gains: &'a [f64],
    /// The noise variances `v_m`.
    pub noise: &'a [f64],
    /// The message means (`M x K`).
    pub r: MatRef<'a, f64>,
    /// The cluster weights `α`.
    pub alpha: &'a [f64],
    /// `Γ` and `C = Γ^{-1}`.
    pub gn: &'a GnMatrices,
    /// The Newton options of the one-row solver.
    pub opts: &'a NewtonOptions,
}

/// The rows of one chunk, solved [`LANES`] at a time with `K = N` (`N ≥ 1`): a lane whose row
/// is finished takes the next row of the chunk, so that the lanes stay busy while the rows need
/// different numbers of steps.
pub(super) struct GnLanes<const N: usize> {
    /// The first row of the chunk and the number of rows in it.
    pub start: usize,
    pub len: usize,
    /// Per row of the chunk: `Done`, `Limited` or `Deferred` after [`GnLanes::solve`].
    pub rows: Vec<Lane>,
    /// Per `Done` row: its estimate (`N` values) and its `H^{-1}` (`N x N`, column-major).
    estimates: Vec<f64>,
    covariances: Vec<f64>,
    /// Per lane: its state and its row (relative to `start`).
    status: [Lane; LANES],
    row: [usize; LANES],
    /// Whether the lane's row stopped at the iteration limit.
    limited: [bool; LANES],
    y0: V,
    y1: V,
    /// The residual `e` at the current point `z` (real, imaginary part): formed when a row is
    /// loaded and taken from the line search's accepted trial, whose residual it is.
    er: V,
    ei: V,
    v: V,
    iv: V,
    ga: [V; N],
    r: [V; N],
    z: [V; N],
    sin: [V; N],
    cos: [V; N],
    tsin: [V; N],
    tcos: [V; N],
    trial: [V; N],
    dz: [V; N],
    gz: [V; N],
    gp: [V; N],
    u0: [V; N],
    u1: [V; N],
    cu0: [V; N],
    cu1: [V; N],
    grad: [V; N],
    step: [V; N],
    q: V,
    tol: V,
    iterations: [usize; LANES],
}

impl<const N: usize> GnLanes<N> {
    /// An empty chunk.
    pub fn new() -> Box<Self> {
        let z = [[0.0; LANES]; N];
        Box::new(GnLanes {
            start: 0,
            len: 0,
            rows: Vec::new(),
            estimates: Vec::new(),
            covariances: Vec::new(),
            status: [Lane::Empty; LANES],
            row: [0; LANES],
            limited: [false; LANES],
            y0: [0.0; LANES],
            y1: [0.0; LANES],
            er: [0.0; LANES],
            ei: [0.0; LANES],
            v: [1.0; LANES],
            iv: [1.0; LANES],
            ga: z,
            r: z,
            z,
            sin: z,
            cos: z,
            tsin: z,
            tcos: z,
            trial: z,
            dz: z,
            gz: z,
            gp: z,
            u0: z,
            u1: z,
            cu0: z,
            cu1: z,
            grad: z,
            step: z,
            q: [0.0; LANES],
            tol: [0.0; LANES],
            iterations: [0; LANES],
        })
    }

    /// Whether the solved chunk holds row `i`.
    pub fn holds(&self, i: usize) -> bool {
        i >= self.start && i < self.start + self.len
    }

    /// Row `i`'s estimate (a `Done` or `Limited` row of the chunk).
    pub fn estimate(&self, i: usize, out: &mut [f64]) {
        let t = i - self.start;
        out[..N].copy_from_slice(&self.estimates[t * N..(t + 1) * N]);
    }

    /// Adds row `i`'s `H^{-1}` (a `Done` or `Limited` row of the chunk) to `acc` (column-major `N x N`),
    /// entry by entry as [`super::MapRow::woodbury_covariance`] does.
    pub fn add_covariance(&self, i: usize, acc: &mut [f64]) {
        let t = i - self.start;
        for (a, c) in acc[..N * N]
            .iter_mut()
            .zip(&self.covariances[t * N * N..(t + 1) * N * N])
        {
            *a += c;
        }
    }

    /// Row `i`'s final state (`Done`, `Limited` or `Deferred`).
    pub fn state(&self, i: usize) -> Lane {
        self.rows[i - self.start]
    }

    /// Solves the chunk's rows on the common path.
    pub fn solve(&mut self, chunk: &Chunk<'_>) {
        #[cfg(target_arch = "x86_64")]
        if super::use_avx2() {
            // SAFETY: the processor has AVX2 and FMA (checked at run time).
            return unsafe { self.solve_avx2(chunk) };
        }
        self.solve_portable(chunk)
    }

    /// [`GnLanes::solve`] compiled for AVX2 and FMA (the same bits: Rust does not contract
    /// `a * b + c` into a fused multiply-add).
    ///
    /// # Safety
    /// The processor must support AVX2 and FMA.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn solve_avx2(&mut self, chunk: &Chunk<'_>) {
        self.solve_portable(chunk)
    }

    #[inline(always)]
    fn solve_portable(&mut self, chunk: &Chunk<'_>) {
        let (range, alpha, gn, opts) = (&chunk.range, chunk.alpha, chunk.gn, chunk.opts);
        let len = range.len();
        self.start = range.start;
        self.len = len;
        self.rows.clear();
        self.rows.resize(len, Lane::Deferred);
        if len == 0
            || alpha.len() != N
            || gn.gamma.len() != N * N
            || gn.cov.len() != N * N
            || chunk.r.ncols() != N
            || range.end > chunk.r.nrows()
            || range.end > chunk.y.nrows()
            || range.end > chunk.gains.len()
            || range.end > chunk.noise.len()
        {
            return;
        }
        self.estimates.resize(len * N, 0.0);
        self.covariances.resize(len * N * N, 0.0);
        let (gamma, cov) = (&gn.gamma[..], &gn.cov[..]);
        let mut next = 0;
        for l in 0..LANES {
            self.status[l] = Lane::Empty;
            if next < len {
                self.load(l, next, chunk);
                next += 1;
            }
        }
        // Lanes without a row keep finite values (those of `new`, or of a finished row); every
        // operation is lane by lane, and their results are never read.
        loop {
            for s in self.status.iter_mut() {
                if *s == Lane::Fresh {
                    *s = Lane::Active;
                }
            }
            if !self.status.contains(&Lane::Active) {
                break;
            }
            let (f, er, ei, gnorm) = self.derivatives();
            for l in 0..LANES {
                if self.status[l] != Lane::Active {
                    continue;
                }
                let g = gnorm[l].sqrt();
                if !f[l].is_finite() || !g.is_finite() {
                    self.status[l] = Lane::Deferred;
                } else if g <= self.tol[l] {
                    self.status[l] = Lane::Converged;
                } else if self.iterations[l] >= opts.max_iterations {
                    self.status[l] = Lane::Converged;
                    self.limited[l] = true;
                }
            }
            let (inv, ok, cg) = self.capacitance(cov);
            for l in 0..LANES {
                match self.status[l] {
                    Lane::Converged if ok[l] => self.store(l, &inv, cov),
                    Lane::Converged | Lane::Active if !ok[l] => self.status[l] = Lane::Deferred,
                    _ => {}
                }
            }
            if self.status.contains(&Lane::Active) {
                let slope = self.newton_step(&inv, &er, &ei, &cg);
                self.line_search(gamma, &f, &slope, opts);
            }
            // Finished rows leave their lanes to the next rows of the chunk.
            for l in 0..LANES {
                if matches!(self.status[l], Lane::Done | Lane::Limited | Lane::Deferred) {
                    self.rows[self.row[l]] = self.status[l];
                    self.status[l] = Lane::Empty;
                    if next < len {
                        self.load(l, next, chunk);
                        next += 1;
                    }
                }
            }
        }
    }

    /// Loads row `t` of the chunk into lane `l` at its start `z = r` ([`super::MapRow::set`],
    /// then the start of [`super::MapRow::minimize_gn`]): the sines and cosines, `z − r`,
    /// `Γ (z − r)`, `q` and the gradient tolerance `grad_tol (1 + ‖r‖)` of the caller.
    #[inline(always)]
    fn load(&mut self, l: usize, t: usize, chunk: &Chunk<'_>) {
        let (alpha, gamma, opts) = (chunk.alpha, &chunk.gn.gamma[..], chunk.opts);
        let i = self.start + t;
        self.status[l] = Lane::Fresh;
        self.row[l] = t;
        self.limited[l] = false;
        self.iterations[l] = 0;
        self.y0[l] = chunk.y[(i, 0)];
        self.y1[l] = chunk.y[(i, 1)];
        self.v[l] = chunk.noise[i];
        self.iv[l] = 1.0 / chunk.noise[i];
        let mut rr = -0.0;
        for (j, a) in alpha.iter().enumerate() {
            self.ga[j][l] = chunk.gains[i] * a;
            let r = chunk.r[(i, j)];
            self.r[j][l] = r;
            self.z[j][l] = r;
            rr += r * r;
        }
        self.tol[l] = opts.grad_tol * (1.0 + f64::sqrt(rr));
        let mut start_at_r = true;
        let (mut er, mut ei) = (self.y0[l], self.y1[l]);
        for j in 0..N {
            let (sn, cs) = fast_sin_cos(self.z[j][l]);
            (self.sin[j][l], self.cos[j][l]) = (sn, cs);
            // The residual ([`super::MapRow::residual`]'s order: `y − Σ_j g α_j e^{i z_j}`).
            er -= self.ga[j][l] * cs;
            ei -= self.ga[j][l] * sn;
            self.dz[j][l] = self.z[j][l] - self.r[j][l];
            start_at_r &= self.dz[j][l].to_bits() == 0;
        }
        (self.er[l], self.ei[l]) = (er, ei);
        if start_at_r {
            // `z − r = +0` in every entry (a finite `r`): `Γ (z − r)` is a sum of signed zeros
            // from `+0`, i.e. `+0`, and `q = −0 + Σ (+0)(+0) = +0`, the bits of the loop below.
            for j in 0..N {
                self.gz[j][l] = 0.0;
            }
            self.q[l] = 0.0;
            return;
        }
        let mut gz = [0.0; N];
        for j in 0..N {
            for (i, g) in gz.iter_mut().enumerate() {
                *g += gamma[i + j * N] * self.dz[j][l];
            }
        }
        let mut q = -0.0;
        for (j, g) in gz.iter().enumerate() {
            self.gz[j][l] = *g;
            q += self.dz[j][l] * g;
        }
        self.q[l] = q;
    }

    /// `f`, the gradient, `u` and `w` at the current points
    /// ([`super::MapRow::gn_derivatives`], with the residual kept from the load or the line
    /// search); returns `f`, the residual and `‖g‖²` (summed from `-0.0` as `Iterator::sum`
    /// sums, alongside the gradient's entries).
    #[inline(always)]
    fn derivatives(&mut self) -> (V, V, V, V) {
        let (er, ei) = (self.er, self.ei);
        let mut gnorm = [-0.0; LANES];
        for j in 0..N {
            for l in 0..LANES {
                let (u0, u1) = (
                    self.ga[j][l] * self.cos[j][l],
                    self.ga[j][l] * self.sin[j][l],
                );
                self.u0[j][l] = u0;
                self.u1[j][l] = u1;
                let g = (er[l] * u1 - ei[l] * u0) * self.iv[l] + self.gz[j][l];
                self.grad[j][l] = g;
                gnorm[l] += g * g;
            }
        }
        let mut f = [0.0; LANES];
        for l in 0..LANES {
            f[l] = (er[l] * er[l] + ei[l] * ei[l]) * self.iv[l] * 0.5 + 0.5 * self.q[l];
        }
        (f, er, ei, gnorm)
    }

    /// `C u`, `C w` and the inverse of the 2 x 2 capacitance matrix per lane
    /// ([`super::MapRow::capacitance`]), whether that matrix is positive definite numerically,
    /// and `(C u)·g`, `(C w)·g` for the Newton step. The dot products are summed from `-0.0`
    /// in the order of the entries (as `Iterator::sum`), each term as soon as its entry of
    /// `C u` and `C w` is formed: independent sums side by side instead of one chain of
    /// additions after another.
    #[inline(always)]
    fn capacitance(&mut self, cov: &[f64]) -> ([V; 3], [bool; LANES], [V; 2]) {
        let [mut d00, mut d11, mut d01, mut d10, mut t0, mut t1] = [[-0.0; LANES]; 6];
        // Entry by entry, each sum from `+0.0` over `j` ([`super::MapRow::matvec`]'s order).
        for i in 0..N {
            let (mut s0, mut s1) = ([0.0; LANES], [0.0; LANES]);
            for j in 0..N {
                let cij = cov[i + j * N];
                for l in 0..LANES {
                    s0[l] += cij * self.u0[j][l];
                    s1[l] += cij * self.u1[j][l];
                }
            }
            for l in 0..LANES {
                let (u0, u1, g) = (self.u0[i][l], self.u1[i][l], self.grad[i][l]);
                d00[l] += u0 * s0[l];
                d11[l] += u1 * s1[l];
                d01[l] += u0 * s1[l];
                d10[l] += u1 * s0[l];
                t0[l] += s0[l] * g;
                t1[l] += s1[l] * g;
            }
            self.cu0[i] = s0;
            self.cu1[i] = s1;
        }
        let mut inv = [[0.0; LANES]; 3];
        let mut ok = [false; LANES];
        for l in 0..LANES {
            let s00 = self.v[l] + d00[l];
            let s11 = self.v[l] + d11[l];
            let s01 = 0.5 * (d01[l] + d10[l]);
            let det = s00 * s11 - s01 * s01;
            if det > 0.0 && det.is_finite() && s00 > 0.0 {
                inv[0][l] = s11 / det;
                inv[1][l] = -s01 / det;
                inv[2][l] = s00 / det;
                ok[l] = true;
            }
        }
        (inv, ok, [t0, t1])
    }

    /// Stores lane `l`'s estimate and `H^{-1} = C − [Cu Cw] S^{-1} [Cu Cw]ᵀ` at its solution
    /// ([`super::MapRow::woodbury_covariance`]; `Cu`, `Cw` and `S^{-1}` from
    /// [`GnLanes::capacitance`] there) and marks it `Done`, or `Limited` if it stopped at the
    /// iteration limit.
    #[inline(always)]
    fn store(&mut self, l: usize, inv: &[V; 3], cov: &[f64]) {
        let t = self.row[l];
        for j in 0..N {
            self.estimates[t * N + j] = self.z[j][l];
        }
        let out = &mut self.covariances[t * N * N..(t + 1) * N * N];
        for b in 0..N {
            let (x0, x1) = (self.cu0[b][l], self.cu1[b][l]);
            let (y0, y1) = (
                inv[0][l] * x0 + inv[1][l] * x1,
                inv[1][l] * x0 + inv[2][l] * x1,
            );
            for a in 0..N {
                out[a + b * N] = cov[a + b * N] - (self.cu0[a][l] * y0 + self.cu1[a][l] * y1);
            }
        }
        self.status[l] = if self.limited[l] {
            Lane::Limited
        } else {
            Lane::Done
        };
    }

    /// The Woodbury step `p = −(C g − [Cu Cw] S^{-1} [Cu Cw]ᵀ g)`
    /// ([`super::MapRow::minimize_gn`]; `[Cu Cw]ᵀ g` from [`GnLanes::capacitance`]); an active
    /// lane with a non-finite step is deferred. Returns the slope `g · p`
    /// (summed from `-0.0` as `Iterator::sum` sums).
    #[inline(always)]
    fn newton_step(&mut self, inv: &[V; 3], er: &V, ei: &V, cg: &[V; 2]) -> V {
        let [t0, t1] = *cg;
        let mut slope = [-0.0; LANES];
        let (mut s0, mut s1) = ([0.0; LANES], [0.0; LANES]);
        for l in 0..LANES {
            s0[l] = inv[0][l] * t0[l] + inv[1][l] * t1[l];
            s1[l] = inv[1][l] * t0[l] + inv[2][l] * t1[l];
        }
        // `p · 0` is `±0` for a finite `p` and NaN otherwise.
        let mut finite = [0.0; LANES];
        for j in 0..N {
            for l in 0..LANES {
                let cg =
                    (er[l] * self.cu1[j][l] - ei[l] * self.cu0[j][l]) * self.iv[l] + self.dz[j][l];
                let p = -(cg - self.cu0[j][l] * s0[l] - self.cu1[j][l] * s1[l]);
                self.step[j][l] = p;
                slope[l] += self.grad[j][l] * p;
                finite[l] += p * 0.0;
            }
        }
        let finite = finite.map(|x| x == 0.0);
        for l in 0..LANES {
            if self.status[l] == Lane::Active && !finite[l] {
                self.status[l] = Lane::Deferred;
            }
        }
        slope
    }

    /// The Armijo line search of [`super::MapRow::gn_line_search`] in every active lane, each
    /// with its own step length; a lane whose search fails is deferred.
    #[inline(always)]
    fn line_search(&mut self, gamma: &[f64], f: &V, slope: &V, opts: &NewtonOptions) {
        let mut pending = [false; LANES];
        for l in 0..LANES {
            if self.status[l] != Lane::Active {
                continue;
            }
            if slope[l].is_nan() || slope[l] >= 0.0 {
                self.status[l] = Lane::Deferred;
            } else {
                pending[l] = true;
            }
        }
        if !pending.contains(&true) {
            return;
        }
        // `Γ p` entry by entry, each sum from `+0.0` over `j` (`MapRow::matvec`'s order), and
        // with each entry the terms of `cross` and of `quad = p · Γp` (from `-0.0`), in the
        // same order as separate loops would add them.
        let (mut cross, mut quad) = ([-0.0; LANES], [-0.0; LANES]);
        for i in 0..N {
            let mut s = [0.0; LANES];
            for j in 0..N {
                let aij = gamma[i + j * N];
                for l in 0..LANES {
                    s[l] += aij * self.step[j][l];
                }
            }
            for l in 0..LANES {
                let p = self.step[i][l];
                cross[l] += p * self.gz[i][l] + self.dz[i][l] * s[l];
                quad[l] += p * s[l];
            }
            self.gp[i] = s;
        }
        let mut noise = [0.0; LANES];
        for l in 0..LANES {
            noise[l] = 8.0 * f64::EPSILON * (1.0 + f[l].abs());
        }
        let mut t = [1.0; LANES];
        for _ in 0..=opts.max_halvings {
            // The trial points, their sines and cosines ([`fast_sin_cos`], the one-row
            // solver's) and the residual there ([`super::MapRow::residual`]'s sums, each term
            // added as soon as its phase's sine and cosine are known; an accepted lane keeps it
            // for its next derivatives).
            let (mut er, mut ei) = (self.y0, self.y1);
            for j in 0..N {
                for l in 0..LANES {
                    let x = self.z[j][l] + t[l] * self.step[j][l];
                    let (sn, cs) = fast_sin_cos(x);
                    self.trial[j][l] = x;
                    self.tsin[j][l] = sn;
                    self.tcos[j][l] = cs;
                    er[l] -= self.ga[j][l] * cs;
                    ei[l] -= self.ga[j][l] * sn;
                }
            }
            let mut accept = [false; LANES];
            for l in 0..LANES {
                if !pending[l] {
                    continue;
                }
                let qt = self.q[l] + t[l] * cross[l] + t[l] * t[l] * quad[l];
                let ft = (er[l] * er[l] + ei[l] * ei[l]) / (2.0 * self.v[l]) + 0.5 * qt;
                if ft.is_finite() && ft <= f[l] + opts.armijo * t[l] * slope[l] + noise[l] {
                    accept[l] = true;
                    self.q[l] = qt;
                    (self.er[l], self.ei[l]) = (er[l], ei[l]);
                    self.iterations[l] += 1;
                    pending[l] = false;
                }
            }
            // The accepted lanes move to their trial points (lane-wise selects).
            for j in 0..N {
                for l in 0..LANES {
                    if accept[l] {
                        self.z[j][l] = self.trial[j][l];
                        self.sin[j][l] = self.tsin[j][l];
                        self.cos[j][l] = self.tcos[j][l];
                        self.dz[j][l] = self.trial[j][l] - self.r[j][l];
                        self.gz[j][l] += t[l] * self.gp[j][l];
                    }
                }
            }
            for l in 0..LANES {
                if pending[l] {
                    t[l] *= 0.5;
                }
            }
            if !pending.contains(&true) {
                return;
            }
        }
        for l in 0..LANES {
            if pending[l] {
                self.status[l] = Lane::Deferred;
            }
        }
    }
}
