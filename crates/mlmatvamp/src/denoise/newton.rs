//! Per-row damped Newton solver for MAP denoisers (spec §4.2).
//!
//! A MAP row denoiser minimises a smooth negative log-belief `f: R^{1×d} → R` for every row.
//! [`minimize`] does so by damped (Gauss–)Newton steps with a backtracking Armijo line search
//! (constant `c = 1e-4`, step halving, at most 20 halvings), started from a point the caller
//! chooses (usually the message mean `r`), at most 50 iterations, stopping when
//! `‖g‖ < 1e-8 (1 + ‖r‖)`. If the Hessian is not positive definite (exact Hessians of
//! non-convex beliefs), the step falls back to a scaled gradient-descent direction.
//!
//! The solver is generic over a [`RowObjective`]; it allocates its workspace once per row
//! ([`NewtonWorkspace`]) and never allocates inside the iterations.

use crate::error::{Error, Result};
use crate::spd::DMat;
use nalgebra::{Cholesky, DVector};

/// Which Hessian a Newton step (and the returned curvature `H`) uses (spec §4.2).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HessianKind {
    /// The exact Hessian of `f`.
    #[default]
    Exact,
    /// The Gauss–Newton approximation: second-derivative × residual terms dropped. Always
    /// positive definite for a Gaussian message term plus a least-squares likelihood.
    GaussNewton,
}

/// A smooth per-row objective `f(v)`, `v ∈ R^{1×d}` (a negative log-belief).
pub trait RowObjective {
    /// The dimension `d`.
    fn dim(&self) -> usize;
    /// `f(v)`.
    fn value(&self, v: &[f64]) -> f64;
    /// Returns `f(v)` and writes the gradient `g = ∂f/∂v` (length `d`) and the `d x d`
    /// Hessian of the requested kind.
    fn derivatives(&self, v: &[f64], kind: HessianKind, grad: &mut [f64], hess: &mut DMat) -> f64;
}

/// Options of [`minimize`]; the defaults are those of spec §4.2.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NewtonOptions {
    /// Maximum number of Newton iterations (default 50).
    pub max_iterations: usize,
    /// Maximum number of step halvings in the line search (default 20).
    pub max_halvings: usize,
    /// Armijo constant `c` in `f(v + tp) ≤ f(v) + c t gᵀp` (default `1e-4`).
    pub armijo: f64,
    /// Relative gradient tolerance: stop when `‖g‖ < grad_tol · scale`, where the caller
    /// chooses `scale` (spec: `1 + ‖r‖`). Default `1e-8`.
    pub grad_tol: f64,
}

impl Default for NewtonOptions {
    fn default() -> Self {
        NewtonOptions {
            max_iterations: 50,
            max_halvings: 20,
            armijo: 1e-4,
            grad_tol: 1e-8,
        }
    }
}

impl NewtonOptions {
    /// Checks the option values.
    pub fn validate(&self) -> Result<()> {
        if self.max_iterations == 0 {
            return Err(Error::invalid(
                "Newton max_iterations",
                "must be at least 1",
            ));
        }
        if !(self.armijo > 0.0 && self.armijo < 0.5) {
            return Err(Error::invalid(
                "Newton armijo constant",
                format!("must be in (0, 0.5), got {}", self.armijo),
            ));
        }
        if !(self.grad_tol >= 0.0 && self.grad_tol.is_finite()) {
            return Err(Error::invalid(
                "Newton grad_tol",
                format!("must be non-negative and finite, got {}", self.grad_tol),
            ));
        }
        Ok(())
    }
}

/// What happened in one call of [`minimize`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NewtonReport {
    /// Whether the gradient tolerance was reached.
    pub converged: bool,
    /// Number of accepted steps.
    pub iterations: usize,
    /// Number of steps that used the gradient-descent fallback (Hessian not positive definite,
    /// or the Newton direction failed the line search).
    pub fallback_steps: usize,
    /// `f` at the returned point.
    pub value: f64,
    /// `‖g‖` at the returned point.
    pub grad_norm: f64,
}

/// Scratch buffers of [`minimize`] for dimension `d`. Create one per row (or reuse one across
/// rows of the same dimension); after a call, [`NewtonWorkspace::grad`] and
/// [`NewtonWorkspace::hessian`] hold the gradient and Hessian at the returned point.
#[derive(Clone, Debug)]
pub struct NewtonWorkspace {
    grad: Vec<f64>,
    hess: DMat,
    factor: DMat,
    step: DVector<f64>,
    trial: Vec<f64>,
}

impl NewtonWorkspace {
    /// Buffers for dimension `d`.
    pub fn new(d: usize) -> Self {
        NewtonWorkspace {
            grad: vec![0.0; d],
            hess: DMat::zeros(d, d),
            factor: DMat::zeros(d, d),
            step: DVector::zeros(d),
            trial: vec![0.0; d],
        }
    }
    /// The gradient at the point returned by the last [`minimize`].
    pub fn grad(&self) -> &[f64] {
        &self.grad
    }
    /// The Hessian (of the kind requested) at the point returned by the last [`minimize`].
    pub fn hessian(&self) -> &DMat {
        &self.hess
    }
}

fn norm(x: &[f64]) -> f64 {
    x.iter().map(|a| a * a).sum::<f64>().sqrt()
}

/// Writes the Newton direction `p = −H^{-1} g` into `ws.step`; returns `false` if `H` is not
/// positive definite. Reuses `ws.factor` as Cholesky storage (no allocation on success).
fn newton_direction(ws: &mut NewtonWorkspace) -> bool {
    let d = ws.grad.len();
    ws.factor.copy_from(&ws.hess);
    let m = std::mem::replace(&mut ws.factor, DMat::zeros(0, 0));
    match Cholesky::new(m) {
        Some(ch) => {
            for j in 0..d {
                ws.step[j] = -ws.grad[j];
            }
            ch.solve_mut(&mut ws.step);
            ws.factor = ch.unpack_dirty();
            ws.step.iter().all(|x| x.is_finite())
        }
        None => {
            ws.factor = DMat::zeros(d, d);
            false
        }
    }
}

/// Writes the scaled steepest-descent direction `p = −g / κ` into `ws.step`, with
/// `κ = max_a Σ_b |H_ab|` (a Gershgorin bound on the curvature, so that the unit step is safe).
fn gradient_direction(ws: &mut NewtonWorkspace) {
    let d = ws.grad.len();
    let mut kappa = 0.0_f64;
    for a in 0..d {
        let s: f64 = (0..d).map(|b| ws.hess[(a, b)].abs()).sum();
        kappa = kappa.max(s);
    }
    if !(kappa.is_finite() && kappa > 0.0) {
        kappa = 1.0;
    }
    for j in 0..d {
        ws.step[j] = -ws.grad[j] / kappa;
    }
}

/// Backtracking Armijo line search along `ws.step` from `v` (spec §4.2): the largest
/// `t ∈ {1, ½, ¼, …}` (at most `max_halvings` halvings) with `f(v + tp) ≤ f + c t gᵀp`
/// (up to the rounding error of `f`).
/// On success updates `v` and returns the new value.
fn line_search<O: RowObjective + ?Sized>(
    obj: &O,
    v: &mut [f64],
    f: f64,
    ws: &mut NewtonWorkspace,
    opts: &NewtonOptions,
) -> Option<f64> {
    let slope: f64 = ws.grad.iter().zip(ws.step.iter()).map(|(g, p)| g * p).sum();
    if slope.is_nan() || slope >= 0.0 {
        return None;
    }
    // Near the minimiser the predicted decrease falls below the rounding error of `f`; allow
    // changes at that level so that the iteration can reach the gradient tolerance.
    let noise = 8.0 * f64::EPSILON * (1.0 + f.abs());
    let mut t = 1.0;
    for _ in 0..=opts.max_halvings {
        for ((x, &vj), &pj) in ws.trial.iter_mut().zip(v.iter()).zip(ws.step.iter()) {
            *x = vj + t * pj;
        }
        let ft = obj.value(&ws.trial);
        if ft.is_finite() && ft <= f + opts.armijo * t * slope + noise {
            v.copy_from_slice(&ws.trial);
            return Some(ft);
        }
        t *= 0.5;
    }
    None
}

/// Minimises `obj` from the starting point in `v` (overwritten with the solution) by damped
/// Newton with backtracking Armijo line search (spec §4.2). `scale` multiplies the gradient
/// tolerance (spec: `1 + ‖r‖`). On return the workspace holds the gradient and the Hessian of
/// kind `kind` at the returned point.
///
/// Returns an error only if `f` or its derivatives are not finite at the starting point or
/// become non-finite at an accepted point.
pub fn minimize<O: RowObjective + ?Sized>(
    obj: &O,
    v: &mut [f64],
    kind: HessianKind,
    opts: &NewtonOptions,
    scale: f64,
    ws: &mut NewtonWorkspace,
) -> Result<NewtonReport> {
    let d = obj.dim();
    if v.len() != d || ws.grad.len() != d {
        return Err(Error::shape(
            "Newton start and workspace",
            format!("length {d}"),
            format!("start {}, workspace {}", v.len(), ws.grad.len()),
        ));
    }
    let tol = opts.grad_tol * scale;
    let mut report = NewtonReport {
        converged: false,
        iterations: 0,
        fallback_steps: 0,
        value: f64::NAN,
        grad_norm: f64::NAN,
    };
    loop {
        let f = obj.derivatives(v, kind, &mut ws.grad, &mut ws.hess);
        let gn = norm(&ws.grad);
        report.value = f;
        report.grad_norm = gn;
        if !f.is_finite() || !gn.is_finite() || ws.hess.iter().any(|x| !x.is_finite()) {
            return Err(Error::Numerical {
                what: "Newton MAP solver".into(),
                detail: format!(
                    "objective or its derivatives are not finite at iteration {} (f = {f}, |g| = {gn})",
                    report.iterations
                ),
            });
        }
        if gn <= tol {
            report.converged = true;
            return Ok(report);
        }
        if report.iterations >= opts.max_iterations {
            return Ok(report);
        }
        // Newton direction if H is positive definite, else gradient descent (spec §4.2).
        let accepted = if newton_direction(ws) {
            match line_search(obj, v, f, ws, opts) {
                Some(_) => true,
                None => {
                    gradient_direction(ws);
                    report.fallback_steps += 1;
                    line_search(obj, v, f, ws, opts).is_some()
                }
            }
        } else {
            gradient_direction(ws);
            report.fallback_steps += 1;
            line_search(obj, v, f, ws, opts).is_some()
        };
        if !accepted {
            // No decrease possible at working precision: v is a (numerical) stationary point
            // or a kink. The derivatives at v are already in the workspace.
            return Ok(report);
        }
        report.iterations += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rosenbrock-like objective with exact Hessian, to exercise the fallback and line search.
    struct Rosen;
    impl RowObjective for Rosen {
        fn dim(&self) -> usize {
            2
        }
        fn value(&self, v: &[f64]) -> f64 {
            (1.0 - v[0]).powi(2) + 10.0 * (v[1] - v[0] * v[0]).powi(2)
        }
        fn derivatives(&self, v: &[f64], _k: HessianKind, g: &mut [f64], h: &mut DMat) -> f64 {
            let (x, y) = (v[0], v[1]);
            g[0] = -2.0 * (1.0 - x) - 40.0 * x * (y - x * x);
            g[1] = 20.0 * (y - x * x);
            h[(0, 0)] = 2.0 - 40.0 * (y - x * x) + 80.0 * x * x;
            h[(0, 1)] = -40.0 * x;
            h[(1, 0)] = -40.0 * x;
            h[(1, 1)] = 20.0;
            self.value(v)
        }
    }

    #[test]
    fn newton_reaches_the_minimum_of_a_nonconvex_function() {
        let mut v = [-1.2, 1.0];
        let mut ws = NewtonWorkspace::new(2);
        let rep = minimize(
            &Rosen,
            &mut v,
            HessianKind::Exact,
            &NewtonOptions::default(),
            1.0,
            &mut ws,
        )
        .unwrap();
        assert!(rep.converged, "{rep:?}");
        assert!((v[0] - 1.0).abs() < 1e-9 && (v[1] - 1.0).abs() < 1e-9);
    }
}
