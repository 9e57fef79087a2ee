//! Block conjugate gradients for the `d` decoupled systems of the matrix-free linear step
//! (`docs/matrix-free.md`, eq. (10.2)): `(I + m_j M) x_j = b_j`, `j = 1 … d`, with `M = WᵀW`
//! (primal form) or `M = W Wᵀ` (dual form), `m_j ≥ 0`.
//!
//! All columns advance in lock-step, each with its own step sizes and its own stopping test, so
//! that every product with `M` is one pass over the operator for the whole block. A column that
//! has converged keeps its iterate (its search direction is zeroed).

use crate::error::{Error, Result};
use faer::{Mat, MatRef};
use serde::{Deserialize, Serialize};

/// Which of the two equivalent systems to solve (Woodbury:
/// `(I + m WᵀW)^{-1} = I − Wᵀ (I/m + W Wᵀ)^{-1} W`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CgForm {
    /// The primal form. It is never worse conditioned than the dual where it matters: its
    /// extra eigenvalues are exactly 1 (the null space of `W`), an isolated point that conjugate
    /// gradients remove in one step; and `WᵀW X` can be computed in one pass over a dense `W`
    /// ([`super::LinearOperator::apply_gram`]) where the dual's `W WᵀY` needs two.
    #[default]
    Auto,
    /// `(I + m WᵀW) x = b`, of size `n_in`.
    Primal,
    /// `(I + m W Wᵀ) y = m W b`, of size `n_out`, then `x = b − Wᵀ y`.
    Dual,
    /// No iteration: a closed form (orthogonal rows, `W Wᵀ = c² I`).
    Closed,
}

impl CgForm {
    /// The name used in histories.
    pub fn name(&self) -> &'static str {
        match self {
            CgForm::Auto => "auto",
            CgForm::Primal => "primal",
            CgForm::Dual => "dual",
            CgForm::Closed => "closed form",
        }
    }
}

/// Options of the block conjugate gradients.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CgOptions {
    /// Stop a column when `‖b_j − (I + m_j M) x_j‖ ≤ tolerance · ‖b_j‖` (default `1e-8`).
    pub tolerance: f64,
    /// At most this many iterations (default 1000); not converging is an error.
    pub max_iterations: usize,
    /// Primal, dual or automatic (default).
    pub form: CgForm,
}

impl Default for CgOptions {
    fn default() -> Self {
        CgOptions {
            tolerance: 1e-8,
            max_iterations: 1000,
            form: CgForm::Auto,
        }
    }
}

impl CgOptions {
    /// Checks the options: a positive finite tolerance below 1, at least one iteration.
    pub fn validate(&self) -> Result<()> {
        if !(self.tolerance > 0.0 && self.tolerance < 1.0) {
            return Err(Error::invalid(
                "tolerance",
                format!(
                    "the conjugate-gradient tolerance must be in (0, 1), got {}",
                    self.tolerance
                ),
            ));
        }
        if self.max_iterations == 0 {
            return Err(Error::invalid(
                "max_iterations",
                "the conjugate gradients need at least one iteration",
            ));
        }
        Ok(())
    }
}

/// What a solve achieved (recorded in the history for every layer and iteration).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CgReport {
    /// The form that was solved.
    pub form: CgForm,
    /// Iterations (the largest over the columns; 0 for the closed form).
    pub iterations: usize,
    /// The achieved relative residual (the largest over the columns).
    pub residual: f64,
    /// Whether every column reached the tolerance.
    pub converged: bool,
}

/// The block conjugate gradients on `(I + m_j M) x_j = b_j`.
pub struct BlockCg<'a> {
    /// `m_j ≥ 0`, one per column.
    pub shifts: &'a [f64],
    /// The options.
    pub options: &'a CgOptions,
}

fn dot(a: MatRef<'_, f64>, b: MatRef<'_, f64>, j: usize) -> f64 {
    let (ca, cb) = (a.col(j), b.col(j));
    let mut s = 0.0;
    for i in 0..a.nrows() {
        s += ca[i] * cb[i];
    }
    s
}

impl BlockCg<'_> {
    /// `mx ← (I + m_j M) x` for every column, given `mx = M x` (in place).
    fn shift_in_place(&self, x: MatRef<'_, f64>, mut mx: faer::MatMut<'_, f64>) {
        for j in 0..x.ncols() {
            let m = self.shifts[j];
            let (xj, mut yj) = (x.col(j), mx.as_mut().col_mut(j));
            for i in 0..x.nrows() {
                yj[i] = xj[i] + m * yj[i];
            }
        }
    }

    /// Solves from `x0` (zero if `None`); `apply_m(X, out)` writes `M X` for a block into `out`
    /// (one pass over the operator for all columns; `out` is reused between iterations, so the
    /// loop allocates nothing). Returns the solution and the report; not converging within
    /// `max_iterations` is reported (`converged = false`), not an error: the caller names the
    /// layer and iteration.
    pub fn solve(
        &self,
        mut apply_m: impl FnMut(MatRef<'_, f64>, faer::MatMut<'_, f64>) -> Result<()>,
        b: MatRef<'_, f64>,
        x0: Option<MatRef<'_, f64>>,
        form: CgForm,
    ) -> Result<(Mat<f64>, CgReport)> {
        let (n, d) = (b.nrows(), b.ncols());
        if self.shifts.len() != d || self.shifts.iter().any(|m| !(m.is_finite() && *m >= 0.0)) {
            return Err(Error::invalid(
                "conjugate gradients",
                format!("need {d} finite non-negative shifts, got {:?}", self.shifts),
            ));
        }
        let bnorm: Vec<f64> = (0..d).map(|j| dot(b, b, j).sqrt()).collect();
        let mut ap = Mat::<f64>::zeros(n, d);
        let (mut x, mut r) = match x0 {
            Some(x0) if x0.nrows() == n && x0.ncols() == d => {
                apply_m(x0, ap.as_mut())?;
                self.shift_in_place(x0, ap.as_mut());
                (x0.to_owned(), b - &ap)
            }
            _ => (Mat::zeros(n, d), b.to_owned()),
        };
        let mut rr: Vec<f64> = (0..d).map(|j| dot(r.as_ref(), r.as_ref(), j)).collect();
        let rel = |rr: f64, j: usize| {
            if bnorm[j] > 0.0 {
                rr.sqrt() / bnorm[j]
            } else {
                rr.sqrt()
            }
        };
        let tol = self.options.tolerance;
        let mut active: Vec<bool> = (0..d).map(|j| rel(rr[j], j) > tol).collect();
        let mut iters = vec![0usize; d];
        let mut p = r.clone();
        for j in 0..d {
            if !active[j] {
                p.col_mut(j).fill(0.0);
            }
        }
        let mut k = 0;
        while active.iter().any(|&a| a) && k < self.options.max_iterations {
            k += 1;
            apply_m(p.as_ref(), ap.as_mut())?;
            self.shift_in_place(p.as_ref(), ap.as_mut());
            for j in 0..d {
                if !active[j] {
                    continue;
                }
                let pap = dot(p.as_ref(), ap.as_ref(), j);
                if pap.is_nan() || pap <= 0.0 {
                    // A non-positive curvature cannot happen for I + mM with M ⪰ 0 but through
                    // rounding or a faulty operator; stop this column (its residual is reported).
                    active[j] = false;
                    continue;
                }
                let alpha = rr[j] / pap;
                let (mut xj, mut rj) = (x.col_mut(j), r.col_mut(j));
                let (pj, apj) = (p.col(j), ap.col(j));
                for i in 0..n {
                    xj[i] += alpha * pj[i];
                    rj[i] -= alpha * apj[i];
                }
                let new_rr = dot(r.as_ref(), r.as_ref(), j);
                iters[j] = k;
                if rel(new_rr, j) <= tol || !new_rr.is_finite() {
                    active[j] = false;
                    rr[j] = new_rr;
                    p.col_mut(j).fill(0.0);
                    continue;
                }
                let beta = new_rr / rr[j];
                rr[j] = new_rr;
                let rj = r.col(j);
                let mut pj = p.col_mut(j);
                for i in 0..n {
                    pj[i] = rj[i] + beta * pj[i];
                }
            }
        }
        // The achieved residual, recomputed from the final iterate (not the recursion's).
        apply_m(x.as_ref(), ap.as_mut())?;
        self.shift_in_place(x.as_ref(), ap.as_mut());
        let residual = (0..d)
            .map(|j| {
                let (bj, aj) = (b.col(j), ap.col(j));
                let rr: f64 = (0..n).map(|i| (bj[i] - aj[i]).powi(2)).sum();
                rel(rr, j)
            })
            .fold(0.0, f64::max);
        let converged = residual <= tol * 10.0 && residual.is_finite();
        Ok((
            x,
            CgReport {
                form,
                iterations: iters.into_iter().max().unwrap_or(0),
                residual,
                converged,
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn solves_shifted_systems_column_by_column() {
        // M = Wᵀ W for a small W; each column its own shift.
        let w = Mat::from_fn(7, 5, |i, j| {
            ((i * 3 + j * 5) % 7) as f64 - 3.0 + (i == j) as u8 as f64
        });
        let m = w.transpose() * &w;
        let b = Mat::from_fn(5, 3, |i, j| (i as f64 - 2.0) * (j as f64 + 1.0) + 0.5);
        let shifts = [0.0, 0.3, 50.0];
        let opts = CgOptions {
            tolerance: 1e-12,
            ..Default::default()
        };
        let cg = BlockCg {
            shifts: &shifts,
            options: &opts,
        };
        let (x, rep) = cg
            .solve(
                |p, mut out| {
                    out.copy_from(&m * p);
                    Ok(())
                },
                b.as_ref(),
                None,
                CgForm::Primal,
            )
            .unwrap();
        assert!(rep.converged && rep.residual < 1e-11, "{rep:?}");
        for (j, &s) in shifts.iter().enumerate() {
            let a = Mat::<f64>::identity(5, 5) + &m * faer::Scale(s);
            let r = b.col(j).to_owned() - &a * x.col(j);
            assert!(r.norm_l2() < 1e-9, "column {j}: {}", r.norm_l2());
        }
        // A warm start at the solution needs no iteration.
        let (_, rep2) = cg
            .solve(
                |p, mut out| {
                    out.copy_from(&m * p);
                    Ok(())
                },
                b.as_ref(),
                Some(x.as_ref()),
                CgForm::Primal,
            )
            .unwrap();
        assert_eq!(rep2.iterations, 0);
        // Too few iterations is reported, not hidden.
        let short = CgOptions {
            tolerance: 1e-14,
            max_iterations: 1,
            ..Default::default()
        };
        let (_, rep3) = BlockCg {
            shifts: &shifts,
            options: &short,
        }
        .solve(
            |p, mut out| {
                out.copy_from(&m * p);
                Ok(())
            },
            b.as_ref(),
            None,
            CgForm::Primal,
        )
        .unwrap();
        assert!(!rep3.converged);
    }
}
