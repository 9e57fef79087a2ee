//! Stochastic Lanczos quadrature for the spectral law of `A = WᵀW` (`docs/matrix-free.md`).
//!
//! For a Rademacher probe `v` (`‖v‖² = n_in`), `k` Lanczos steps on `A` from `v/‖v‖` give a
//! `k × k` tridiagonal matrix `T = Y diag(θ) Yᵀ`; then `vᵀ f(A) v ≈ ‖v‖² Σ_i Y_{1i}² f(θ_i)`
//! (Gauss quadrature of the spectral measure of `A` seen from `v`), exact for polynomials of
//! degree `< 2k`. Averaging over probes estimates `tr f(A)`; each probe is one group of nodes
//! `θ_i` with weights `n_in Y_{1i}²`. The probes run in lock-step as the columns of one block.
//! No reorthogonalisation: it would need all `k` vectors of every probe in memory, and the
//! quadrature is robust to the loss of orthogonality (ghost Ritz values carry the right weights).

use super::LinearOperator;
use crate::error::{Error, Result};
use crate::spd::DMat;
use faer::Mat;
use rand::RngExt;

/// One group of `(node, weight)` per probe; weights sum to `n_in`.
pub fn quadrature(
    op: &dyn LinearOperator,
    probes: usize,
    steps: usize,
    seed: u64,
) -> Result<Vec<Vec<(f64, f64)>>> {
    let (_, n_in) = op.shape();
    let steps = steps.min(n_in);
    let mut rng = crate::rng::named_stream(seed, "lanczos probes");
    let scale = 1.0 / (n_in as f64).sqrt();
    let mut q = Mat::from_fn(n_in, probes, |_, _| {
        if rng.random::<bool>() {
            scale
        } else {
            -scale
        }
    });
    let mut q_prev = Mat::<f64>::zeros(n_in, probes);
    let mut alphas = vec![Vec::with_capacity(steps); probes];
    let mut betas = vec![Vec::with_capacity(steps); probes];
    let mut active = vec![true; probes];
    let mut aq = Mat::<f64>::zeros(n_in, probes);
    for _ in 0..steps {
        op.apply_gram(q.as_ref(), aq.as_mut())?;
        crate::rows::check_finite(
            &format!("WᵀW q in the Lanczos iteration ({})", op.describe()),
            aq.as_ref(),
        )?;
        for p in 0..probes {
            if !active[p] {
                continue;
            }
            let (qp, ap) = (q.col(p), aq.col(p));
            let alpha: f64 = (0..n_in).map(|i| qp[i] * ap[i]).sum();
            alphas[p].push(alpha);
            let beta_prev = betas[p].last().copied().unwrap_or(0.0);
            let qprev = q_prev.col(p);
            let mut r: Vec<f64> = (0..n_in)
                .map(|i| ap[i] - alpha * qp[i] - beta_prev * qprev[i])
                .collect();
            let beta = r.iter().map(|x| x * x).sum::<f64>().sqrt();
            if beta <= 1e-12 * alpha.abs().max(1e-300) || alphas[p].len() == steps {
                active[p] = false;
                continue;
            }
            betas[p].push(beta);
            r.iter_mut().for_each(|x| *x /= beta);
            let mut qp_prev = q_prev.col_mut(p);
            let qp_now = q.col(p).to_owned();
            for i in 0..n_in {
                qp_prev[i] = qp_now[i];
            }
            let mut qcol = q.col_mut(p);
            for i in 0..n_in {
                qcol[i] = r[i];
            }
        }
        if !active.iter().any(|&a| a) {
            break;
        }
    }
    let mut groups = Vec::with_capacity(probes);
    for p in 0..probes {
        let k = alphas[p].len();
        if k == 0 {
            return Err(Error::Numerical {
                what: "stochastic Lanczos quadrature".into(),
                detail: format!("probe {p} made no step"),
            });
        }
        let mut t = DMat::zeros(k, k);
        for i in 0..k {
            t[(i, i)] = alphas[p][i];
            if i + 1 < k {
                t[(i, i + 1)] = betas[p][i];
                t[(i + 1, i)] = betas[p][i];
            }
        }
        let e = nalgebra::SymmetricEigen::new(t);
        let g: Vec<(f64, f64)> = (0..k)
            .map(|i| {
                let y = e.eigenvectors[(0, i)];
                (e.eigenvalues[i].max(0.0), n_in as f64 * y * y)
            })
            .collect();
        groups.push(g);
    }
    Ok(groups)
}
