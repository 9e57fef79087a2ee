//! The paired rows of a linear layer's `G⁺` and `G⁻` in one pass (spec §3.1(a), §3.3).
//!
//! Row `i` of the rotated domain, with `a_i = r⁺_i Γ⁺ T + s_i (r⁻_i − b_i) P_eff T` (the
//! shared basis `T` of [`super::shared_basis`]):
//!
//! ```text
//! c_ij = a_ij / (1 + s_i² m_j),     v̂_i = c_i Tᵀ                      (Σ_vv(s) in the basis T)
//! G⁻:  q_i = v̂_i − (V_rᵀR⁺)_i  (input-only rows exist)  or  v̂_i
//! G⁺:  û_i = (s_i v̂_i + b_i) N A + (U_rᵀR⁻)_i Γ⁻A,  c⁺_i = û_i − (b_i N A + (U_rᵀR⁻)_i Γ⁻A)
//!      (noisy, output-only rows exist; without them c⁺_i = û_i); noiseless: s_i v̂_i + b_i
//!      (minus b_i when output-only rows exist)
//! ```
//!
//! The layer used to form each of these as a whole `r x d` matrix (a dozen passes over `r x d`
//! blocks, each allocated, on one thread). Here they run block by block of rows, every entry
//! the same operations in the same order as [`crate::rows::mul_small`] and faer's entry-wise
//! sums (each product a sum from `+0` over the non-zero entries of the small factor in the order
//! of `l`), so the same bits; and the rows are split over two tasks when there are enough of
//! them. No row depends on another, so the split changes no result.

use crate::rows::PAR_WIDTH;
use crate::spd::DMat;
use faer::{Mat, MatMut, MatRef};
use std::borrow::Cow;

/// Rows per block: the block's `d`-column scratch stays in the L1 cache.
const BLOCK: usize = 64;

/// Rows from which the pass is split over [`PAR_WIDTH`] tasks (below, one task on the calling
/// thread: waking a second thread costs more than it saves).
const PARALLEL_ROWS: usize = 1024;

/// What follows `v̂` on each row.
pub(super) enum Tail<'a> {
    /// `G⁻`: `q = v̂ − V_rᵀR⁺` when `complement`, else `v̂`.
    Backward { complement: bool },
    /// `G⁺` of a noisy layer: `û = (s v̂ + b) N A + (U_rᵀR⁻) Γ⁻A`, minus `b N A + (U_rᵀR⁻) Γ⁻A`
    /// when `complement`.
    ForwardNoisy {
        na: &'a DMat,
        ga: &'a DMat,
        complement: bool,
    },
    /// `G⁺` of a noiseless layer: `s v̂ + b`, minus `b` when `complement`.
    ForwardNoiseless { complement: bool },
}

/// The inputs of the pass (`r` paired rows).
pub(super) struct Paired<'a> {
    /// The singular values `s_i`.
    pub s: &'a [f64],
    /// `V_rᵀ R⁺` (`r x d`).
    pub rt_plus: MatRef<'a, f64>,
    /// `U_rᵀ R⁻` (`r x d`).
    pub rt_minus: MatRef<'a, f64>,
    /// `U_rᵀ B` (`r x d`).
    pub bias_rot: MatRef<'a, f64>,
    /// `Γ⁺ T`.
    pub plus_t: &'a DMat,
    /// `P_eff T`.
    pub peff_t: &'a DMat,
    /// `Tᵀ`.
    pub t_t: &'a DMat,
    /// The eigenvalues `m_j`.
    pub m: &'a [f64],
    /// What follows `v̂`.
    pub tail: Tail<'a>,
}

impl Paired<'_> {
    /// The tail's `r x d` result (see the module's documentation).
    pub(super) fn run(&self) -> Mat<f64> {
        let (r, d) = (self.s.len(), self.m.len());
        let mut out = Mat::<f64>::zeros(r, d);
        if r >= PARALLEL_ROWS && PAR_WIDTH == 2 {
            let half = (r / 2).next_multiple_of(BLOCK).min(r);
            let (top, bottom) = out.as_mut().split_at_row_mut(half);
            rayon::join(|| self.rows(top, 0), || self.rows(bottom, half));
        } else {
            self.rows(out.as_mut(), 0);
        }
        out
    }

    /// Rows `start .. start + out.nrows()` into `out`, block by block.
    fn rows(&self, mut out: MatMut<'_, f64>, start: usize) {
        let d = self.m.len();
        let mut scratch = vec![0.0; (3 * d + 4) * BLOCK];
        let mut i0 = 0;
        while i0 < out.nrows() {
            let len = BLOCK.min(out.nrows() - i0);
            let view = out.as_mut().subrows_mut(i0, len);
            #[cfg(target_arch = "x86_64")]
            if crate::cpu::has_avx2_fma() {
                // SAFETY: the processor has AVX2 and FMA (checked at run time).
                unsafe { self.block_avx2(view, start + i0, &mut scratch) };
                i0 += len;
                continue;
            }
            self.block(view, start + i0, &mut scratch);
            i0 += len;
        }
    }

    /// [`Self::block`] compiled for AVX2 (the same operations: Rust does not contract
    /// `a * b + c` into a fused multiply-add, so the same bits).
    ///
    /// # Safety
    /// The processor must support AVX2 and FMA.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn block_avx2(&self, out: MatMut<'_, f64>, start: usize, scratch: &mut [f64]) {
        self.block(out, start, scratch)
    }

    /// One block of rows `start .. start + out.nrows()`, column by column over the block.
    #[inline(always)]
    fn block(&self, mut out: MatMut<'_, f64>, start: usize, scratch: &mut [f64]) {
        let (d, len) = (self.m.len(), out.nrows());
        let s = &self.s[start..start + len];
        let (centred, rest) = scratch.split_at_mut(d * BLOCK);
        let (c, rest) = rest.split_at_mut(d * BLOCK);
        let (v, rest) = rest.split_at_mut(d * BLOCK);
        let (centred, c, v) = (
            &mut centred[..d * len],
            &mut c[..d * len],
            &mut v[..d * len],
        );
        let mut parts = rest.chunks_exact_mut(BLOCK).map(|p| &mut p[..len]);
        let (Some(tmp), Some(p1), Some(p2), Some(p3)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            unreachable!("the scratch holds four more columns")
        };
        // centred = (U_rᵀR⁻ − U_rᵀB) s, entry by entry.
        for l in 0..d {
            let (x, b) = (
                column(self.rt_minus, l, start, len),
                column(self.bias_rot, l, start, len),
            );
            let dst = &mut centred[l * len..(l + 1) * len];
            for (((o, x), b), s) in dst.iter_mut().zip(x.iter()).zip(b.iter()).zip(s) {
                *o = (x - b) * s;
            }
        }
        // c = (V_rᵀR⁺ Γ⁺T + centred P_eff T) / (1 + s² m_j): two sums from +0, then their sum.
        for j in 0..d {
            let cj = &mut c[j * len..(j + 1) * len];
            cj.fill(0.0);
            tmp.fill(0.0);
            for l in 0..d {
                let g = self.plus_t[(l, j)];
                if g != 0.0 {
                    axpy(cj, g, &column(self.rt_plus, l, start, len));
                }
                let g = self.peff_t[(l, j)];
                if g != 0.0 {
                    axpy(tmp, g, &centred[l * len..(l + 1) * len]);
                }
            }
            let mj = self.m[j];
            for ((o, t), s) in cj.iter_mut().zip(tmp.iter()).zip(s) {
                *o = (*o + t) / (1.0 + s * s * mj);
            }
        }
        // v̂ = c Tᵀ.
        for j in 0..d {
            let vj = &mut v[j * len..(j + 1) * len];
            vj.fill(0.0);
            for l in 0..d {
                let g = self.t_t[(l, j)];
                if g != 0.0 {
                    axpy(vj, g, &c[l * len..(l + 1) * len]);
                }
            }
        }
        let mut put =
            |j: usize, value: &mut dyn FnMut(faer::ColMut<'_, f64>)| value(out.as_mut().col_mut(j));
        match &self.tail {
            Tail::Backward { complement } => {
                for j in 0..d {
                    let vj = &v[j * len..(j + 1) * len];
                    if *complement {
                        let p = column(self.rt_plus, j, start, len);
                        put(j, &mut |o| fill(o, len, |k| vj[k] - p[k]));
                    } else {
                        put(j, &mut |o| fill(o, len, |k| vj[k]));
                    }
                }
            }
            Tail::ForwardNoiseless { complement } => {
                for j in 0..d {
                    let (vj, b) = (
                        &v[j * len..(j + 1) * len],
                        column(self.bias_rot, j, start, len),
                    );
                    if *complement {
                        put(j, &mut |o| fill(o, len, |k| (vj[k] * s[k] + b[k]) - b[k]));
                    } else {
                        put(j, &mut |o| fill(o, len, |k| vj[k] * s[k] + b[k]));
                    }
                }
            }
            Tail::ForwardNoisy { na, ga, complement } => {
                // sv = s v̂ + b, into `c` (no longer needed).
                for l in 0..d {
                    let b = column(self.bias_rot, l, start, len);
                    let (cl, vl) = (&mut c[l * len..(l + 1) * len], &v[l * len..(l + 1) * len]);
                    for (((o, x), s), b) in cl.iter_mut().zip(vl).zip(s).zip(b.iter()) {
                        *o = x * s + b;
                    }
                }
                for j in 0..d {
                    p1.fill(0.0);
                    p2.fill(0.0);
                    p3.fill(0.0);
                    for l in 0..d {
                        let g = na[(l, j)];
                        if g != 0.0 {
                            axpy(p1, g, &c[l * len..(l + 1) * len]);
                            if *complement {
                                axpy(p3, g, &column(self.bias_rot, l, start, len));
                            }
                        }
                        let g = ga[(l, j)];
                        if g != 0.0 {
                            axpy(p2, g, &column(self.rt_minus, l, start, len));
                        }
                    }
                    // û = sv N A + (U_rᵀR⁻) Γ⁻A, minus b N A + (U_rᵀR⁻) Γ⁻A.
                    if *complement {
                        put(j, &mut |o| {
                            fill(o, len, |k| (p1[k] + p2[k]) - (p3[k] + p2[k]))
                        });
                    } else {
                        put(j, &mut |o| fill(o, len, |k| p1[k] + p2[k]));
                    }
                }
            }
        }
    }
}

/// Rows `start .. start + len` of column `j` of `m`: borrowed when contiguous (always, for the
/// layer's own matrices), else copied.
#[inline(always)]
fn column<'m>(m: MatRef<'m, f64>, j: usize, start: usize, len: usize) -> Cow<'m, [f64]> {
    let c = m.col(j).subrows(start, len);
    match c.try_as_col_major() {
        Some(c) => Cow::Borrowed(c.as_slice()),
        None => Cow::Owned((0..len).map(|i| c[i]).collect()),
    }
}

/// `o[k] = value(k)` for `k < len`.
#[inline(always)]
fn fill(mut o: faer::ColMut<'_, f64>, len: usize, value: impl Fn(usize) -> f64) {
    for k in 0..len {
        o[k] = value(k);
    }
}

/// `acc += g x`, entry by entry (one product and one sum per entry: no fused multiply-add).
#[inline(always)]
fn axpy(acc: &mut [f64], g: f64, x: &[f64]) {
    for (a, x) in acc.iter_mut().zip(x) {
        *a += g * x;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::{rng_from_seed, standard_normal};
    use crate::rows::mul_small;

    fn small(d: usize, rng: &mut crate::rng::Rng, zero: bool) -> DMat {
        let m = standard_normal(d, d, rng);
        // A zero entry is skipped by the products (not even `+0 · x` is added).
        DMat::from_fn(
            d,
            d,
            |i, j| if zero && i == j + 1 { 0.0 } else { m[(i, j)] },
        )
    }

    fn bits(m: &Mat<f64>) -> Vec<u64> {
        (0..m.ncols())
            .flat_map(|j| (0..m.nrows()).map(move |i| m[(i, j)].to_bits()))
            .collect()
    }

    /// The pass gives the bits of the whole-matrix formulas it replaced (`mul_small` products
    /// and faer's entry-wise sums), for every tail, with and without complement rows, zero
    /// entries in the small factors, sizes that are not multiples of the block and sizes above
    /// the split into two tasks.
    #[test]
    fn paired_rows_give_the_bits_of_the_matrix_formulas() {
        let mut rng = rng_from_seed(12);
        for (r, d) in [(1, 1), (37, 3), (64, 4), (200, 4), (1500, 2), (1100, 5)] {
            let s: Vec<f64> = (0..r).map(|i| 0.1 + (i % 17) as f64 * 0.37).collect();
            let rt_plus = standard_normal(r, d, &mut rng);
            let rt_minus = standard_normal(r, d, &mut rng);
            let bias_rot = standard_normal(r, d, &mut rng);
            let (plus_t, peff_t, t) = (
                small(d, &mut rng, true),
                small(d, &mut rng, false),
                small(d, &mut rng, true),
            );
            let (na, ga) = (small(d, &mut rng, true), small(d, &mut rng, false));
            let m: Vec<f64> = (0..d).map(|j| 0.5 + j as f64).collect();
            // The formulas of the layer before this pass.
            let mut centred = &rt_minus - &bias_rot;
            for (i, &si) in s.iter().enumerate() {
                for j in 0..d {
                    centred[(i, j)] *= si;
                }
            }
            let mut c =
                &mul_small(rt_plus.as_ref(), &plus_t) + &mul_small(centred.as_ref(), &peff_t);
            for (i, &si) in s.iter().enumerate() {
                for (j, &mj) in m.iter().enumerate() {
                    c[(i, j)] /= 1.0 + si * si * mj;
                }
            }
            let v_hat = mul_small(c.as_ref(), &t.transpose());
            let mut sv = v_hat.clone();
            for (i, &si) in s.iter().enumerate() {
                for j in 0..d {
                    sv[(i, j)] *= si;
                }
            }
            sv += &bias_rot;
            let u_hat = &mul_small(sv.as_ref(), &na) + &mul_small(rt_minus.as_ref(), &ga);
            let ut_m = &mul_small(bias_rot.as_ref(), &na) + &mul_small(rt_minus.as_ref(), &ga);
            let t_t = t.transpose();
            let run_with = |rt_plus: MatRef<'_, f64>, tail| {
                Paired {
                    s: &s,
                    rt_plus,
                    rt_minus: rt_minus.as_ref(),
                    bias_rot: bias_rot.as_ref(),
                    plus_t: &plus_t,
                    peff_t: &peff_t,
                    t_t: &t_t,
                    m: &m,
                    tail,
                }
                .run()
            };
            let run = |tail| run_with(rt_plus.as_ref(), tail);
            let cases: [(Tail<'_>, Mat<f64>); 6] = [
                (Tail::Backward { complement: true }, &v_hat - &rt_plus),
                (Tail::Backward { complement: false }, v_hat.clone()),
                (Tail::ForwardNoiseless { complement: true }, &sv - &bias_rot),
                (Tail::ForwardNoiseless { complement: false }, sv.clone()),
                (
                    Tail::ForwardNoisy {
                        na: &na,
                        ga: &ga,
                        complement: true,
                    },
                    &u_hat - &ut_m,
                ),
                (
                    Tail::ForwardNoisy {
                        na: &na,
                        ga: &ga,
                        complement: false,
                    },
                    u_hat.clone(),
                ),
            ];
            for (k, (tail, want)) in cases.into_iter().enumerate() {
                let got = run(tail);
                assert_eq!(bits(&got), bits(&want), "case {k}, r {r}, d {d}");
            }
            // A perturbed input is seen (the comparison can fail).
            let mut other = rt_plus.clone();
            other[(r / 2, 0)] *= 1.0 + 1e-12;
            let got = run_with(other.as_ref(), Tail::Backward { complement: true });
            assert_ne!(bits(&got), bits(&(&v_hat - &rt_plus)), "r {r}, d {d}");
        }
    }
}
