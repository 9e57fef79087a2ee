//! The sigmoid Newton MAP rows of the two-layer output (spec §4.1–4.2, §4.4(a)) solved
//! [`LANES`] rows at a time, in lockstep.
//!
//! One row's damped Newton iteration is a chain of dependent divisions and square roots (the
//! `d x d` Cholesky factor of `H` and its solve, eq. of spec §4.2) and `exp` calls: its time is
//! latency, not arithmetic. Here every quantity of the iteration holds one value per lane
//! (`[f64; LANES]`), each lane a different row, so the chains of [`LANES`] rows run side by side
//! (and the compiler may pack the lanes into SIMD registers). Every lane performs exactly the
//! operations of the one-row code — [`TwoLayerObjective::derivatives_with`] and `value_with`
//! for sigmoid, `newton::minimize_in` with its Cholesky direction and the first (unit) step
//! of its line search — in the same order, and IEEE arithmetic is lane-wise, so each row gets
//! the bits of [`super::TwoLayerOutput::map_rows_fixed`]'s one-row solve. A row whose Newton
//! direction fails or whose unit step is rejected continues that iteration in the one-row code
//! itself (`newton::search_step`); a finished row's lane takes the next row of the chunk.
//!
//! The results of a chunk of rows are stored per row, so that the caller
//! ([`crate::rows::par_map_rows_with`]) sums the row covariances in row order, as before.

use super::{
    newton, Activation, DMat, Error, HessianKind, MapOptions, Result, RowStats, Spd,
    TwoLayerObjective, TwoLayerOutput, FLAG_GN_COVARIANCE,
};
use crate::denoise::activation::sigmoid;
use nalgebra::{Const, OVector, SMatrix};

/// Rows solved side by side.
pub(super) const LANES: usize = 16;

/// Largest number of outputs (columns of `Y`) handled by the lanes.
pub(super) const MAX_LANE_NOUT: usize = 4;

type Lanes = [f64; LANES];

/// σ of every lane (the sigmoid of [`Activation::eval`], written as straight-line arithmetic
/// that the compiler vectorises).
#[inline(always)]
fn sigmoid_lanes(v: &Lanes) -> Lanes {
    std::array::from_fn(|l| sigmoid(v[l]))
}

/// `Iterator::sum` of `f64` folds from `-0.0`; the lanes do the same, for the same bits.
const SUM_START: f64 = -0.0;

/// A [`ChunkRows::solve_portable`] compiled with the given target features: `$name`, `$features`,
/// its doc comment.
macro_rules! solve_with_features {
    ($name:ident, $features:literal, $doc:literal) => {
        #[doc = $doc]
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = $features)]
        #[allow(clippy::too_many_arguments)]
        unsafe fn $name(
            &mut self,
            out: &TwoLayerOutput,
            gamma: &SMatrix<f64, D, D>,
            fft: &SMatrix<f64, D, D>,
            r: faer::MatRef<'_, f64>,
            v0: faer::MatRef<'_, f64>,
            o: &MapOptions,
            start: usize,
            end: usize,
        ) {
            self.solve_portable(out, gamma, fft, r, v0, o, start, end);
        }
    };
}

/// The solved rows of one chunk: per row `v̂` (`D`), Newton iterations, flags and `Σ_i`
/// (`D x D`, column-major), or the row's error; rows after the first error are not solved.
pub(super) struct ChunkRows<const D: usize> {
    /// First row of the chunk (`usize::MAX` before [`ChunkRows::solve`]).
    start: usize,
    /// Rows solved: a prefix of the chunk, up to the first error.
    len: usize,
    rows: Vec<RowResult<D>>,
    /// Per row: [`PENDING`], [`DONE`] or [`FAILED`] (its error in `errors`).
    status: Vec<u8>,
    errors: Vec<(usize, Error)>,
    /// `σ` of the chunk's starting points `v0` (row-major, `D` per row), computed once per
    /// chunk in one vectorised pass ([`Activation::eval_in_place`]).
    s0: Vec<f64>,
}

const PENDING: u8 = 0;
const DONE: u8 = 1;
const FAILED: u8 = 2;

/// One solved row.
#[derive(Clone, Copy)]
pub(super) struct RowResult<const D: usize> {
    /// The estimate `v̂`.
    pub v: [f64; D],
    /// The Newton iterations.
    pub iterations: usize,
    /// The flags of [`RowStats`].
    pub flags: u32,
    /// `Σ_i` (column-major); the Hessian at `v̂` until the batched inverse.
    pub sigma: SMatrix<f64, D, D>,
}

impl<const D: usize> Default for ChunkRows<D> {
    fn default() -> Self {
        ChunkRows {
            start: usize::MAX,
            len: 0,
            rows: Vec::new(),
            status: Vec::new(),
            errors: Vec::new(),
            s0: Vec::new(),
        }
    }
}

/// The lockstep state of [`LANES`] rows.
struct LaneState<const D: usize> {
    /// The row in each lane, `None` if the lane is idle.
    row: [Option<usize>; LANES],
    r: [Lanes; D],
    v: [Lanes; D],
    /// `σ(v)` (the objective's memo at `v`).
    s: [Lanes; D],
    y: [Lanes; MAX_LANE_NOUT],
    grad: [Lanes; D],
    hess: [[Lanes; D]; D],
    f: Lanes,
    tol: Lanes,
    iterations: [usize; LANES],
    fallback: [usize; LANES],
}

impl TwoLayerOutput {
    /// Whether [`ChunkRows`] applies: sigmoid, MAP with Newton rows, at most
    /// [`MAX_LANE_NOUT`] outputs.
    pub(super) fn lanes_apply(&self) -> bool {
        self.activation == Activation::Sigmoid && self.f2.ncols() <= MAX_LANE_NOUT
    }
}

impl<const D: usize> ChunkRows<D> {
    /// The result of row `i`, taken out (solving its chunk `[i, end)` first if `i` is not in
    /// the solved chunk; `end` is the end of the chunk that starts at `i`).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn row(
        &mut self,
        out: &TwoLayerOutput,
        gamma: &SMatrix<f64, D, D>,
        fft: &SMatrix<f64, D, D>,
        r: faer::MatRef<'_, f64>,
        v0: faer::MatRef<'_, f64>,
        o: &MapOptions,
        i: usize,
        end: usize,
    ) -> Result<&RowResult<D>> {
        if self.start == usize::MAX || i < self.start || i >= self.start + self.len {
            self.solve(out, gamma, fft, r, v0, o, i, end);
        }
        let k = i - self.start;
        if k < self.len && self.status[k] == DONE {
            return Ok(&self.rows[k]);
        }
        match self.errors.iter().position(|(row, _)| *row == i) {
            Some(p) => Err(self.errors.swap_remove(p).1),
            None => Err(Error::Numerical {
                what: "two-layer output denoiser".into(),
                detail: format!("row {i} was not solved"),
            }),
        }
    }

    /// Solves rows `start..end`, up to the first row with an error: with AVX-512 or AVX2
    /// registers where the processor has them (lane-wise IEEE operations, no fused
    /// multiply-adds: the same bits as the portable code).
    #[allow(clippy::too_many_arguments)]
    fn solve(
        &mut self,
        out: &TwoLayerOutput,
        gamma: &SMatrix<f64, D, D>,
        fft: &SMatrix<f64, D, D>,
        r: faer::MatRef<'_, f64>,
        v0: faer::MatRef<'_, f64>,
        o: &MapOptions,
        start: usize,
        end: usize,
    ) {
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx512f") {
            // SAFETY: the processor supports AVX-512F (checked just above).
            unsafe { self.solve_avx512(out, gamma, fft, r, v0, o, start, end) };
            return;
        }
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: the processor supports AVX2 (checked just above).
            unsafe { self.solve_avx2(out, gamma, fft, r, v0, o, start, end) };
            return;
        }
        self.solve_portable(out, gamma, fft, r, v0, o, start, end);
    }

    solve_with_features!(
        solve_avx2,
        "avx2",
        "[`ChunkRows::solve`] compiled for AVX2.\n\n# Safety\nThe processor must support AVX2."
    );
    solve_with_features!(
        solve_avx512,
        "avx2,avx512f",
        "[`ChunkRows::solve`] compiled for AVX-512 (eight lanes per register; the same lane-wise \
         operations, so the same bits).\n\n# Safety\nThe processor must support AVX-512F."
    );

    /// The lockstep solve of rows `start..end` (module docs).
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn solve_portable(
        &mut self,
        out: &TwoLayerOutput,
        gamma: &SMatrix<f64, D, D>,
        fft: &SMatrix<f64, D, D>,
        r: faer::MatRef<'_, f64>,
        v0: faer::MatRef<'_, f64>,
        o: &MapOptions,
        start: usize,
        end: usize,
    ) {
        self.start = start;
        let n = end - start;
        self.rows.clear();
        self.rows.resize(
            n,
            RowResult {
                v: [0.0; D],
                iterations: 0,
                flags: 0,
                sigma: SMatrix::zeros(),
            },
        );
        self.status.clear();
        self.status.resize(n, PENDING);
        self.errors.clear();
        // σ(v0) of every row of the chunk in one vectorised pass: a row entering a lane takes its
        // σ from here (the same function of the same value as `sigmoid_lanes`, hence the same
        // bits), instead of σ of all the lanes being recomputed whenever one of them is fresh.
        self.s0.clear();
        for i in start..end {
            let mut v_i = [0.0; D];
            crate::rows::read_row(v0, i, &mut v_i);
            self.s0.extend_from_slice(&v_i);
        }
        Activation::Sigmoid.eval_in_place(&mut self.s0);
        let nout = out.f2.ncols();
        let f2 = out.f2.as_slice();
        let inv_var = 1.0 / out.noise_var;
        let mut st = LaneState::<D> {
            row: [None; LANES],
            r: [[0.0; LANES]; D],
            v: [[0.0; LANES]; D],
            s: [[0.5; LANES]; D],
            y: [[0.0; LANES]; MAX_LANE_NOUT],
            grad: [[0.0; LANES]; D],
            hess: [[[0.0; LANES]; D]; D],
            f: [0.0; LANES],
            tol: [0.0; LANES],
            iterations: [0; LANES],
            fallback: [0; LANES],
        };
        let mut next = start;
        // The first row (in row order) with an error: rows after it are not needed.
        let mut stop = end;
        loop {
            // Idle lanes take the next rows.
            for l in 0..LANES {
                if st.row[l].is_none() && next < stop {
                    let i = next;
                    next += 1;
                    let mut r_i = [0.0; D];
                    crate::rows::read_row(r, i, &mut r_i);
                    let mut v_i = [0.0; D];
                    crate::rows::read_row(v0, i, &mut v_i);
                    let s_i = &self.s0[(i - start) * D..(i - start + 1) * D];
                    for j in 0..D {
                        st.r[j][l] = r_i[j];
                        st.v[j][l] = v_i[j];
                        st.s[j][l] = s_i[j];
                    }
                    for (k, y) in out.y_rows[i * nout..(i + 1) * nout].iter().enumerate() {
                        st.y[k][l] = *y;
                    }
                    // newton::minimize_in: tol = grad_tol · (1 + ‖r‖).
                    let scale = 1.0 + r_i.iter().map(|x| x * x).sum::<f64>().sqrt();
                    st.tol[l] = o.newton.grad_tol * scale;
                    st.iterations[l] = 0;
                    st.fallback[l] = 0;
                    st.row[l] = Some(i);
                }
            }
            if st.row.iter().all(|x| x.is_none()) {
                break;
            }
            // `s` holds σ(v) in every lane: from `s0` for a fresh row, from its accepted trial
            // point (or the one-row code's memo, the same function of the same `v`) otherwise.
            // f, g, H at v (TwoLayerObjective::derivatives_with, sigmoid).
            let mut s1 = [[0.0; LANES]; D];
            let mut ef = [[0.0; LANES]; D];
            for j in 0..D {
                for l in 0..LANES {
                    s1[j][l] = st.s[j][l] * (1.0 - st.s[j][l]);
                }
            }
            let lik = likelihood(&st.s, &st.y, f2, nout, inv_var, Some(&mut ef));
            for a in 0..D {
                let mut x = [SUM_START; LANES];
                for b in 0..D {
                    let g = gamma[(b, a)];
                    for l in 0..LANES {
                        x[l] += (st.v[b][l] - st.r[b][l]) * g;
                    }
                }
                for l in 0..LANES {
                    st.grad[a][l] = x[l] + inv_var * ef[a][l] * s1[a][l];
                }
            }
            let exact = o.hessian == HessianKind::Exact;
            for a in 0..D {
                for b in 0..D {
                    let (g, c) = (gamma[(a, b)], fft[(a, b)]);
                    for l in 0..LANES {
                        st.hess[a][b][l] = g + inv_var * s1[a][l] * s1[b][l] * c;
                    }
                }
                if exact {
                    for l in 0..LANES {
                        let s2 = s1[a][l] * (1.0 - 2.0 * st.s[a][l]);
                        st.hess[a][a][l] += inv_var * s2 * ef[a][l];
                    }
                }
            }
            let prior = prior_term(&st.v, &st.r, gamma);
            for l in 0..LANES {
                st.f[l] = prior[l] + lik[l];
            }
            // ‖g‖ and the stopping tests of newton::minimize_in.
            let mut gn = [SUM_START; LANES];
            for a in 0..D {
                for l in 0..LANES {
                    gn[l] += st.grad[a][l] * st.grad[a][l];
                }
            }
            // `‖g‖`, and 0 where f, ‖g‖ and every entry of H are finite (NaN elsewhere: x·0 is
            // ±0 for finite x and NaN for ±∞ and NaN), for all lanes at once.
            let mut gnl = [0.0; LANES];
            let mut finite = [0.0; LANES];
            for l in 0..LANES {
                gnl[l] = gn[l].sqrt();
                finite[l] = st.f[l] * 0.0 + gnl[l] * 0.0;
            }
            for row in &st.hess {
                for h in row {
                    for l in 0..LANES {
                        finite[l] += h[l] * 0.0;
                    }
                }
            }
            let mut going = [false; LANES];
            for l in 0..LANES {
                let Some(i) = st.row[l] else { continue };
                let (f, it, gnl) = (st.f[l], st.iterations[l], gnl[l]);
                if finite[l] != 0.0 {
                    self.errors.push((i, newton::not_finite(it, f, gnl)));
                    self.status[i - start] = FAILED;
                    stop = stop.min(i + 1);
                    st.row[l] = None;
                } else if gnl <= st.tol[l] {
                    self.finish(&st, l, i - start, true);
                    st.row[l] = None;
                } else if it >= o.newton.max_iterations {
                    self.finish(&st, l, i - start, false);
                    st.row[l] = None;
                } else {
                    going[l] = true;
                }
            }
            if !going.iter().any(|&x| x) {
                continue;
            }
            // The Newton direction p = −H^{-1} g (newton::newton_direction).
            let (chol_ok, l_factor) = cholesky(&st.hess);
            let mut step = [[0.0; LANES]; D];
            for j in 0..D {
                for l in 0..LANES {
                    step[j][l] = -st.grad[j][l];
                }
            }
            cholesky_solve(&l_factor, &mut step);
            // The unit step of the line search (newton::line_search, t = 1).
            let mut slope = [SUM_START; LANES];
            for j in 0..D {
                for l in 0..LANES {
                    slope[l] += st.grad[j][l] * step[j][l];
                }
            }
            let t = 1.0;
            let mut trial = [[0.0; LANES]; D];
            for j in 0..D {
                for l in 0..LANES {
                    trial[j][l] = st.v[j][l] + t * step[j][l];
                }
            }
            // 0 where the step is finite (as above).
            let mut step_finite = [0.0; LANES];
            for sj in &step {
                for l in 0..LANES {
                    step_finite[l] += sj[l] * 0.0;
                }
            }
            let mut try_unit = [false; LANES];
            let mut newton_ok = [false; LANES];
            for l in 0..LANES {
                newton_ok[l] = going[l] && chol_ok[l] && step_finite[l] == 0.0;
                try_unit[l] = newton_ok[l] && !(slope[l].is_nan() || slope[l] >= 0.0);
            }
            // σ at the trial points, all lanes at once (vectorised); read only where a unit
            // step is tried.
            let s_trial: [Lanes; D] = std::array::from_fn(|j| sigmoid_lanes(&trial[j]));
            let ft = {
                let prior = prior_term(&trial, &st.r, gamma);
                let lik = likelihood(&s_trial, &st.y, f2, nout, inv_var, None);
                let mut ft = [0.0; LANES];
                for l in 0..LANES {
                    ft[l] = prior[l] + lik[l];
                }
                ft
            };
            // The Armijo test of the unit step, for all lanes; accepted lanes move to the trial
            // point (selected lane-wise, vectorised).
            let mut accept = [false; LANES];
            for l in 0..LANES {
                let f = st.f[l];
                let noise = 8.0 * f64::EPSILON * (1.0 + f.abs());
                accept[l] = try_unit[l]
                    && ft[l].is_finite()
                    && ft[l] <= f + o.newton.armijo * t * slope[l] + noise;
            }
            for j in 0..D {
                for l in 0..LANES {
                    st.v[j][l] = if accept[l] { trial[j][l] } else { st.v[j][l] };
                    st.s[j][l] = if accept[l] { s_trial[j][l] } else { st.s[j][l] };
                }
            }
            for l in 0..LANES {
                st.iterations[l] += accept[l] as usize;
            }
            for l in 0..LANES {
                if !going[l] || accept[l] {
                    continue;
                }
                let f = st.f[l];
                // The rest of this iteration in the one-row code.
                let i = st.row[l].unwrap_or(start);
                let r_i: [f64; D] = std::array::from_fn(|j| st.r[j][l]);
                let obj = out.objective_in(i, &r_i, gamma, fft);
                let mut ws = newton::Work::new(Const::<D>);
                for j in 0..D {
                    ws.v[j] = st.v[j][l];
                    ws.grad[j] = st.grad[j][l];
                    ws.step[j] = step[j][l];
                    for b in 0..D {
                        ws.hess[(j, b)] = st.hess[j][b][l];
                    }
                }
                let mut report = newton::NewtonReport::unstarted();
                if newton::search_step(&obj, f, &mut ws, &o.newton, newton_ok[l], &mut report) {
                    for j in 0..D {
                        st.v[j][l] = ws.v[j];
                        st.s[j][l] = ws.memo[j];
                    }
                    st.iterations[l] += 1;
                    st.fallback[l] += report.fallback_steps;
                } else {
                    st.fallback[l] += report.fallback_steps;
                    self.finish(&st, l, i - start, false);
                    st.row[l] = None;
                }
            }
        }
        self.len = self.status.iter().take_while(|&&x| x != PENDING).count();
        self.invert(out, gamma, fft, r);
    }

    /// Stores the solution of lane `l` (row `k` of the chunk) with its Newton statistics and
    /// its Hessian (inverted by [`ChunkRows::invert`]).
    fn finish(&mut self, st: &LaneState<D>, l: usize, k: usize, converged: bool) {
        let stats = RowStats::from_report(&newton::NewtonReport {
            converged,
            iterations: st.iterations[l],
            fallback_steps: st.fallback[l],
            value: st.f[l],
            grad_norm: f64::NAN,
        });
        self.rows[k] = RowResult {
            v: std::array::from_fn(|j| st.v[j][l]),
            iterations: stats.iterations,
            flags: stats.flags,
            sigma: SMatrix::from_fn(|a, b| st.hess[a][b][l]),
        };
        self.status[k] = DONE;
    }

    /// `Σ_i = H^{-1}` of the solved rows, [`LANES`] rows at a time with the operations of
    /// [`super::spd_inverse_fixed`]; where `H` is not positive definite, the inverse of the
    /// Gauss–Newton Hessian, as [`TwoLayerOutput::map_rows_fixed`] does one row at a time.
    #[inline(always)]
    fn invert(
        &mut self,
        out: &TwoLayerOutput,
        gamma: &SMatrix<f64, D, D>,
        fft: &SMatrix<f64, D, D>,
        r: faer::MatRef<'_, f64>,
    ) {
        let done: Vec<usize> = (0..self.len).filter(|&k| self.status[k] == DONE).collect();
        for group in done.chunks(LANES) {
            let mut h = [[[1.0; LANES]; D]; D];
            for (l, &k) in group.iter().enumerate() {
                for a in 0..D {
                    for b in 0..D {
                        h[a][b][l] = self.rows[k].sigma[(a, b)];
                    }
                }
            }
            let (ok, inv) = spd_inverse_lanes(&h);
            for (l, &k) in group.iter().enumerate() {
                if ok[l] {
                    self.rows[k].sigma = SMatrix::from_fn(|a, b| inv[a][b][l]);
                    continue;
                }
                let i = self.start + k;
                self.rows[k].flags |= FLAG_GN_COVARIANCE;
                let mut r_i = [0.0; D];
                crate::rows::read_row(r, i, &mut r_i);
                let v = self.rows[k].v;
                let obj: TwoLayerObjective<'_, Const<D>> = out.objective_in(i, &r_i, gamma, fft);
                let mut grad = OVector::<f64, Const<D>>::zeros();
                let mut hgn = SMatrix::<f64, D, D>::zeros();
                obj.derivatives_slice(&v, HessianKind::GaussNewton, grad.as_mut_slice(), &mut hgn);
                let hgn = DMat::from_column_slice(D, D, hgn.as_slice());
                match Spd::from_symmetric("Gauss-Newton MAP Hessian", hgn) {
                    Ok(spd) => self.rows[k].sigma.copy_from_slice(spd.inverse().as_slice()),
                    Err(e) => {
                        self.errors.push((i, e));
                        self.status[k] = FAILED;
                    }
                }
            }
        }
    }
}

/// `sym(A)^{-1}` per lane with the operations and order of [`super::spd_inverse_fixed`]; `ok[l]` is
/// `false` where `A` is not positive definite or the inverse is not finite.
#[inline(always)]
fn spd_inverse_lanes<const D: usize>(a: &[[Lanes; D]; D]) -> ([bool; LANES], [[Lanes; D]; D]) {
    let mut ok = [true; LANES];
    // Lower Cholesky factor, l[i][j] = L_ij.
    let mut l = [[[0.0; LANES]; D]; D];
    for i in 0..D {
        for j in 0..=i {
            let mut s = [0.0; LANES];
            for x in 0..LANES {
                s[x] = 0.5 * (a[i][j][x] + a[j][i][x]);
            }
            for p in 0..j {
                for x in 0..LANES {
                    s[x] -= l[i][p][x] * l[j][p][x];
                }
            }
            if i == j {
                for x in 0..LANES {
                    ok[x] &= s[x] > 0.0 && s[x].is_finite();
                    l[i][i][x] = s[x].sqrt();
                }
            } else {
                for x in 0..LANES {
                    l[i][j][x] = s[x] / l[j][j][x];
                }
            }
        }
    }
    // M = L^{-1} (lower), then A^{-1} = Mᵀ M.
    let mut m = [[[0.0; LANES]; D]; D];
    for j in 0..D {
        for x in 0..LANES {
            m[j][j][x] = 1.0 / l[j][j][x];
        }
        for i in j + 1..D {
            let mut s = [0.0; LANES];
            for p in j..i {
                for x in 0..LANES {
                    s[x] -= l[i][p][x] * m[p][j][x];
                }
            }
            for x in 0..LANES {
                m[i][j][x] = s[x] / l[i][i][x];
            }
        }
    }
    let mut out = [[[0.0; LANES]; D]; D];
    for i in 0..D {
        for j in 0..=i {
            let mut s = [0.0; LANES];
            for row in &m[i..] {
                for x in 0..LANES {
                    s[x] += row[i][x] * row[j][x];
                }
            }
            out[i][j] = s;
            out[j][i] = s;
        }
    }
    for x in 0..LANES {
        ok[x] &= out.iter().all(|row| row.iter().all(|e| e[x].is_finite()));
    }
    (ok, out)
}

/// `½(v − r)Γ(v − r)ᵀ` per lane (`TwoLayerObjective::prior_term`).
#[inline(always)]
fn prior_term<const D: usize>(v: &[Lanes; D], r: &[Lanes; D], gamma: &SMatrix<f64, D, D>) -> Lanes {
    let mut q = [0.0; LANES];
    for a in 0..D {
        let mut s = [SUM_START; LANES];
        for b in 0..D {
            let g = gamma[(a, b)];
            for l in 0..LANES {
                s[l] += g * (v[b][l] - r[b][l]);
            }
        }
        for l in 0..LANES {
            let da = v[a][l] - r[a][l];
            q[l] += da * s[l];
        }
    }
    let mut out = [0.0; LANES];
    for l in 0..LANES {
        out[l] = 0.5 * q[l];
    }
    out
}

/// `‖y − s F_2‖² / (2 yvar)` per lane, adding `(e F_2ᵀ)_j` into `ef` if given
/// (`TwoLayerObjective::likelihood_term`).
#[inline(always)]
fn likelihood<const D: usize>(
    s: &[Lanes; D],
    y: &[Lanes; MAX_LANE_NOUT],
    f2: &[f64],
    nout: usize,
    inv_var: f64,
    mut ef: Option<&mut [Lanes; D]>,
) -> Lanes {
    let mut sum = [0.0; LANES];
    for (o, yo) in y.iter().enumerate().take(nout) {
        let f2o = &f2[o * D..(o + 1) * D];
        let mut e = [0.0; LANES];
        for l in 0..LANES {
            e[l] = -yo[l];
        }
        for j in 0..D {
            for l in 0..LANES {
                e[l] += s[j][l] * f2o[j];
            }
        }
        for l in 0..LANES {
            sum[l] += e[l] * e[l];
        }
        if let Some(ef) = ef.as_deref_mut() {
            for j in 0..D {
                for l in 0..LANES {
                    ef[j][l] += e[l] * f2o[j];
                }
            }
        }
    }
    let mut out = [0.0; LANES];
    for l in 0..LANES {
        out[l] = 0.5 * inv_var * sum[l];
    }
    out
}

/// The lower Cholesky factor of `H` per lane with the operations and order of
/// `newton::small_cholesky` (nalgebra's); `ok[l]` is `false` where a pivot is not positive
/// (zero, negative or NaN). `m[i][j]` is `L_ij`.
#[inline(always)]
fn cholesky<const D: usize>(h: &[[Lanes; D]; D]) -> ([bool; LANES], [[Lanes; D]; D]) {
    let mut m = *h;
    let mut ok = [true; LANES];
    for j in 0..D {
        for k in 0..j {
            let mut factor = [0.0; LANES];
            for l in 0..LANES {
                factor[l] = -m[j][k][l];
            }
            for i in j..D {
                for l in 0..LANES {
                    m[i][j][l] += factor[l] * m[i][k][l];
                }
            }
        }
        for l in 0..LANES {
            let diag = m[j][j][l];
            ok[l] &= diag > 0.0;
            m[j][j][l] = diag.sqrt();
        }
        for i in j + 1..D {
            for l in 0..LANES {
                m[i][j][l] /= m[j][j][l];
            }
        }
    }
    (ok, m)
}

/// Solves `L Lᵀ x = b` in place per lane with the operations and order of
/// `newton::small_cholesky_solve`.
#[inline(always)]
fn cholesky_solve<const D: usize>(m: &[[Lanes; D]; D], b: &mut [Lanes; D]) {
    for i in 0..D {
        let mut coeff = [0.0; LANES];
        for l in 0..LANES {
            coeff[l] = b[i][l] / m[i][i][l];
            b[i][l] = coeff[l];
        }
        for k in i + 1..D {
            for l in 0..LANES {
                b[k][l] += -coeff[l] * m[k][i][l];
            }
        }
    }
    for i in (0..D).rev() {
        let mut dot = [0.0; LANES];
        for k in i + 1..D {
            for l in 0..LANES {
                dot[l] += m[k][i][l] * b[k][l];
            }
        }
        for l in 0..LANES {
            b[i][l] = (b[i][l] - dot[l]) / m[i][i][l];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{MapOptions, TwoLayerEstimator, TwoLayerOutput};
    use crate::denoise::{gaussian_rows, standard_normal, Activation, HessianKind};
    use crate::factor::conformance::random_spd;
    use crate::message::Message;
    use crate::rng_from_seed;
    use crate::rows::RowMapOutput;
    use crate::spd::{DMat, Spd};
    use faer::Mat;

    /// Sigmoid rows `Z ~ N(0, I)`, `y = σ(Z)F_2 + noise` at `snr` (linear), and the message
    /// `R = Z + N(0, Γ^{-1})` with `Γ` of mean eigenvalue `gamma_mean`.
    fn problem(
        n: usize,
        d: usize,
        nout: usize,
        snr: f64,
        gamma_mean: f64,
        seed: u64,
    ) -> (TwoLayerOutput, TwoLayerOutput, Message) {
        let mut rng = rng_from_seed(seed);
        let act = Activation::Sigmoid;
        let z = standard_normal(n, d, &mut rng);
        let f2 = standard_normal(d, nout, &mut rng);
        let f2 = DMat::from_fn(d, nout, |i, j| f2[(i, j)]);
        let y0 = Mat::from_fn(n, nout, |i, o| {
            (0..d)
                .map(|j| act.eval(z[(i, j)]) * f2[(j, o)])
                .sum::<f64>()
        });
        let power = y0.norm_l2().powi(2) / (n * nout) as f64;
        let yvar = power / snr;
        let y = &y0 + &standard_normal(n, nout, &mut rng) * faer::Scale(yvar.sqrt());
        let gamma = Spd::new("Γ", random_spd(d, gamma_mean, seed + 1), Some(d)).unwrap();
        let cov = gamma.inverse();
        let chol = cov.clone().cholesky().unwrap().l();
        let r = &z + &gaussian_rows(n, &chol, &mut rng);
        let exact = TwoLayerEstimator::map(HessianKind::Exact);
        let gn = TwoLayerEstimator::map(HessianKind::GaussNewton);
        let a = TwoLayerOutput::new(y.clone(), f2.clone(), act, yvar, exact).unwrap();
        let b = TwoLayerOutput::new(y, f2, act, yvar, gn).unwrap();
        let msg = Message {
            mean: r,
            precision: gamma,
        };
        (a, b, msg)
    }

    fn same_bits(a: &RowMapOutput, b: &RowMapOutput) -> bool {
        a.rows.nrows() == b.rows.nrows()
            && a.rows.ncols() == b.rows.ncols()
            && (0..a.rows.ncols()).all(|j| {
                (0..a.rows.nrows()).all(|i| a.rows[(i, j)].to_bits() == b.rows[(i, j)].to_bits())
            })
            && a.acc.len() == b.acc.len()
            && a.acc
                .iter()
                .zip(&b.acc)
                .all(|(x, y)| x.to_bits() == y.to_bits())
    }

    fn check<const D: usize>(out: &TwoLayerOutput, msg: &Message, flags_seen: &mut u32) {
        let TwoLayerEstimator::Map(o) = *out.estimator() else {
            unreachable!()
        };
        let lanes = out.map_rows_lanes::<D>(msg, None, &o).unwrap();
        let one = out.map_rows_one::<D>(msg, None, &o).unwrap();
        assert!(
            same_bits(&lanes, &one),
            "d = {D}: lanes and one-row code differ"
        );
        for i in 0..one.rows.nrows() {
            *flags_seen |= one.rows[(i, D + 1)] as u32;
        }
        // Warm-started (at the estimate moved towards the message mean), also the same bits.
        let v0 = Mat::from_fn(msg.mean.nrows(), D, |i, j| {
            0.5 * (one.rows[(i, j)] + msg.mean[(i, j)])
        });
        let lanes = out.map_rows_lanes::<D>(msg, Some(v0.as_ref()), &o).unwrap();
        let one = out.map_rows_one::<D>(msg, Some(v0.as_ref()), &o).unwrap();
        assert!(
            same_bits(&lanes, &one),
            "d = {D}: warm-started lanes and one-row code differ"
        );
    }

    /// The lanes give the bits of the one-row Newton MAP: estimates, iterations, flags and the
    /// summed covariance, for several `d` and `nout`, both Hessians, chunks of rows with a
    /// partial last chunk, and hard rows (low SNR, weak messages) that take the gradient
    /// fallback or a Gauss–Newton covariance.
    #[test]
    fn lanes_give_the_bits_of_the_one_row_solver() {
        let mut flags = 0;
        for (k, &(snr, gamma_mean)) in [(10.0, 3.0), (30.0, 0.3), (0.3, 0.05), (1e3, 0.01)]
            .iter()
            .enumerate()
        {
            for nout in [1, 3, 4] {
                let seed = 100 + 10 * k as u64 + nout as u64;
                macro_rules! run {
                    ($d:literal) => {{
                        let (a, b, msg) = problem(601, $d, nout, snr, gamma_mean, seed + $d);
                        check::<$d>(&a, &msg, &mut flags);
                        check::<$d>(&b, &msg, &mut flags);
                    }};
                }
                run!(1);
                run!(2);
                run!(3);
                run!(4);
                run!(5);
                run!(8);
            }
        }
        // Fallback steps (2) and Gauss–Newton covariances (4) were exercised.
        assert_eq!(flags & 6, 6, "flags seen: {flags}");
    }

    /// An error in a row (a non-finite objective) is the one-row code's error.
    #[test]
    fn lanes_report_the_one_row_error() {
        let (a, _, mut msg) = problem(300, 4, 1, 10.0, 3.0, 7);
        msg.mean[(270, 2)] = f64::NAN;
        let TwoLayerEstimator::Map(o) = *a.estimator() else {
            unreachable!()
        };
        let e1 = a
            .map_rows_lanes::<4>(&msg, None, &o)
            .err()
            .map(|e| e.to_string());
        let e2 = a
            .map_rows_one::<4>(&msg, None, &o)
            .err()
            .map(|e| e.to_string());
        assert!(e1.is_some());
        assert_eq!(e1, e2);
        let _ = MapOptions::default();
    }
}
