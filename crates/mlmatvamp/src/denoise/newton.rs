//! Per-row damped Newton solver for MAP denoisers (spec §4.2).
//!
//! A MAP row denoiser minimises a smooth negative log-belief `f: R^{1×d} → R` for every row.
//! [`minimize`] does so by damped (Gauss–)Newton steps with a backtracking Armijo line search
//! (constant `c = 1e-4`, step halving, at most 20 halvings), started from a point the caller
//! chooses (usually the message mean `r`), at most 50 iterations, stopping when
//! `‖g‖ < 1e-8 (1 + ‖r‖)`. If the Hessian is not positive definite (exact Hessians of
//! non-convex beliefs), the step falls back to a scaled gradient-descent direction.
//!
//! The solver is generic over a [`RowObjective`]; it allocates its workspace once (per row, or
//! per chunk of rows: [`NewtonWorkspace`]) and never allocates inside the iterations. The same
//! iteration also runs on fixed-size nalgebra vectors and matrices (`d x d` on the stack, for
//! the per-row kernels of small `d`), with the same arithmetic, hence the same bits.

use crate::error::{Error, Result};
use crate::spd::DMat;
use nalgebra::allocator::Allocator;
use nalgebra::{Cholesky, DVector, DefaultAllocator, Dim, Dyn, OMatrix, OVector, U1};

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

impl NewtonReport {
    /// The report before the first step: not converged, no steps, `f` and `‖g‖` not yet known.
    pub(crate) fn unstarted() -> Self {
        NewtonReport {
            converged: false,
            iterations: 0,
            fallback_steps: 0,
            value: f64::NAN,
            grad_norm: f64::NAN,
        }
    }
}

/// Scratch buffers of [`minimize`] for dimension `d`. Create one per row (or reuse one across
/// rows of the same dimension); after a call, [`NewtonWorkspace::grad`] and
/// [`NewtonWorkspace::hessian`] hold the gradient and Hessian at the returned point.
#[derive(Clone, Debug)]
pub struct NewtonWorkspace {
    work: Work<Dyn>,
}

impl NewtonWorkspace {
    /// Buffers for dimension `d`.
    pub fn new(d: usize) -> Self {
        NewtonWorkspace {
            work: Work::new(Dyn(d)),
        }
    }
    /// The gradient at the point returned by the last [`minimize`].
    pub fn grad(&self) -> &[f64] {
        self.work.grad.as_slice()
    }
    /// The Hessian (of the kind requested) at the point returned by the last [`minimize`].
    pub fn hessian(&self) -> &DMat {
        &self.work.hess
    }
}

/// A row objective on nalgebra vectors of dimension `D`: [`Dyn`] for [`RowObjective`] (any
/// `d`), or `Const<d>` for fixed-size `d x d` arithmetic on the stack (the per-row kernels of
/// small `d`). The Newton iteration ([`minimize_in`]) is the same generic code for both, so
/// both give the same bits.
///
/// `memo` lets an objective keep per-point values (e.g. activations `σ(v)`) from `value` for a
/// later `derivatives` at the same point: the line search's accepted trial point is the next
/// iterate, so its values need not be computed twice. The result must not depend on whether
/// the memo is used.
pub(crate) trait NewtonObjective<D: Dim>
where
    DefaultAllocator: Allocator<D> + Allocator<D, D>,
{
    /// `f(v)`; may write per-point values into `memo`.
    fn value(&self, v: &OVector<f64, D>, memo: &mut OVector<f64, D>) -> f64;
    /// Returns `f(v)`; writes the gradient and the Hessian of the requested kind. `memo`, if
    /// given, is what `value` wrote at this same `v`.
    fn derivatives(
        &self,
        v: &OVector<f64, D>,
        kind: HessianKind,
        grad: &mut OVector<f64, D>,
        hess: &mut OMatrix<f64, D, D>,
        memo: Option<&OVector<f64, D>>,
    ) -> f64;
}

/// The buffers of [`minimize_in`] for dimension `D`: on the stack for `D = Const<d>`, allocated
/// once (by [`Work::new`]) for [`Dyn`]. `v` is the current point (the start on entry, the
/// solution on return); `grad` and `hess` are the derivatives there.
#[derive(Clone, Debug)]
pub(crate) struct Work<D: Dim>
where
    DefaultAllocator: Allocator<D> + Allocator<D, D>,
{
    pub(crate) v: OVector<f64, D>,
    pub(crate) grad: OVector<f64, D>,
    pub(crate) hess: OMatrix<f64, D, D>,
    factor: OMatrix<f64, D, D>,
    /// The search direction.
    pub(crate) step: OVector<f64, D>,
    trial: OVector<f64, D>,
    /// The objective's memo at `trial` and at `v` (valid if `memo_valid`).
    memo_trial: OVector<f64, D>,
    pub(crate) memo: OVector<f64, D>,
    memo_valid: bool,
}

impl<D: Dim> Work<D>
where
    DefaultAllocator: Allocator<D> + Allocator<D, D>,
{
    pub(crate) fn new(d: D) -> Self {
        Work {
            v: OVector::zeros_generic(d, U1),
            grad: OVector::zeros_generic(d, U1),
            hess: OMatrix::zeros_generic(d, d),
            factor: OMatrix::zeros_generic(d, d),
            step: OVector::zeros_generic(d, U1),
            trial: OVector::zeros_generic(d, U1),
            memo_trial: OVector::zeros_generic(d, U1),
            memo: OVector::zeros_generic(d, U1),
            memo_valid: false,
        }
    }
}

/// [`RowObjective`] seen as a [`NewtonObjective`] on dynamic vectors.
struct DynObjective<'a, O: ?Sized>(&'a O);

impl<O: RowObjective + ?Sized> NewtonObjective<Dyn> for DynObjective<'_, O> {
    #[inline]
    fn value(&self, v: &DVector<f64>, _memo: &mut DVector<f64>) -> f64 {
        self.0.value(v.as_slice())
    }
    #[inline]
    fn derivatives(
        &self,
        v: &DVector<f64>,
        kind: HessianKind,
        grad: &mut DVector<f64>,
        hess: &mut DMat,
        _memo: Option<&DVector<f64>>,
    ) -> f64 {
        self.0
            .derivatives(v.as_slice(), kind, grad.as_mut_slice(), hess)
    }
}

fn norm(x: &[f64]) -> f64 {
    x.iter().map(|a| a * a).sum::<f64>().sqrt()
}

/// A placeholder matrix to move the factor storage out of the workspace: `0 x 0` (no
/// allocation) for [`Dyn`], the (stack) `d x d` zero matrix for a fixed size.
fn placeholder<D: Dim>(d: D) -> OMatrix<f64, D, D>
where
    DefaultAllocator: Allocator<D, D>,
{
    let e = if D::try_to_usize().is_some() {
        d
    } else {
        D::from_usize(0)
    };
    OMatrix::zeros_generic(e, e)
}

/// Writes the Newton direction `p = −H^{-1} g` into `ws.step`; returns `false` if `H` is not
/// positive definite. Reuses `ws.factor` as Cholesky storage (no allocation on success).
fn newton_direction<D: Dim>(ws: &mut Work<D>) -> bool
where
    DefaultAllocator: Allocator<D> + Allocator<D, D>,
{
    let (d, _) = ws.hess.shape_generic();
    ws.factor.copy_from(&ws.hess);
    let n = ws.grad.len();
    if n <= SMALL_CHOLESKY {
        // The d x d rows of the MAP denoisers (d ≤ 8): the same arithmetic as nalgebra's
        // `Cholesky::new` + `solve_mut` (so the same bits), without its dynamic column views.
        if !small_cholesky(ws.factor.as_mut_slice(), n) {
            return false;
        }
        for j in 0..n {
            ws.step[j] = -ws.grad[j];
        }
        small_cholesky_solve(ws.factor.as_slice(), n, ws.step.as_mut_slice());
        return ws.step.iter().all(|x| x.is_finite());
    }
    let m = std::mem::replace(&mut ws.factor, placeholder(d));
    match Cholesky::new(m) {
        Some(ch) => {
            for j in 0..ws.grad.len() {
                ws.step[j] = -ws.grad[j];
            }
            ch.solve_mut(&mut ws.step);
            ws.factor = ch.unpack_dirty();
            ws.step.iter().all(|x| x.is_finite())
        }
        None => {
            ws.factor = OMatrix::zeros_generic(d, d);
            false
        }
    }
}

/// Up to this dimension [`newton_direction`] factors with [`small_cholesky`].
const SMALL_CHOLESKY: usize = 8;

/// In-place lower Cholesky factor of the symmetric `n x n` matrix `m` (column-major; only the
/// lower triangle is read; the strict upper triangle is left as it was). Returns `false` if a
/// pivot is zero, negative or NaN. The operations and their order are those of nalgebra's
/// `Cholesky::new` (column `j` is updated by `L_jk`-multiples of the earlier columns, then
/// divided by its pivot's square root), so the factor is bit-identical to nalgebra's.
#[inline(always)]
fn small_cholesky(m: &mut [f64], n: usize) -> bool {
    for j in 0..n {
        for k in 0..j {
            let factor = -m[j + k * n];
            for i in j..n {
                // `y = a x + y` as nalgebra's axpy (addition commutes: the same bits).
                m[i + j * n] += factor * m[i + k * n];
            }
        }
        let diag = m[j + j * n];
        // nalgebra: a zero pivot fails, `try_sqrt` fails below zero (and for NaN).
        if diag == 0.0 || diag.is_nan() || diag < 0.0 {
            return false;
        }
        let denom = diag.sqrt();
        m[j + j * n] = denom;
        for i in j + 1..n {
            m[i + j * n] /= denom;
        }
    }
    true
}

/// Solves `L Lᵀ x = b` in place with the factor of [`small_cholesky`], with the operations and
/// order of nalgebra's `Cholesky::solve_mut` (forward substitution by columns, then backward
/// substitution by sequential dot products; `n ≤ 8`, below nalgebra's unrolled dot product).
#[inline(always)]
fn small_cholesky_solve(l: &[f64], n: usize, b: &mut [f64]) {
    for i in 0..n {
        let coeff = b[i] / l[i + i * n];
        b[i] = coeff;
        for k in i + 1..n {
            b[k] += -coeff * l[k + i * n];
        }
    }
    for i in (0..n).rev() {
        let mut dot = 0.0;
        for k in i + 1..n {
            dot += l[k + i * n] * b[k];
        }
        b[i] = (b[i] - dot) / l[i + i * n];
    }
}

/// Writes the scaled steepest-descent direction `p = −g / κ` into `ws.step`, with
/// `κ = max_a Σ_b |H_ab|` (a Gershgorin bound on the curvature, so that the unit step is safe).
fn gradient_direction<D: Dim>(ws: &mut Work<D>)
where
    DefaultAllocator: Allocator<D> + Allocator<D, D>,
{
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

/// Backtracking Armijo line search along `ws.step` from `ws.v` (spec §4.2): the largest
/// `t ∈ {1, ½, ¼, …}` (at most `max_halvings` halvings) with `f(v + tp) ≤ f + c t gᵀp`
/// (up to the rounding error of `f`).
/// On success updates `ws.v` and returns the new value.
fn line_search<D: Dim, O: NewtonObjective<D> + ?Sized>(
    obj: &O,
    f: f64,
    ws: &mut Work<D>,
    opts: &NewtonOptions,
) -> Option<f64>
where
    DefaultAllocator: Allocator<D> + Allocator<D, D>,
{
    let slope: f64 = ws.grad.iter().zip(ws.step.iter()).map(|(g, p)| g * p).sum();
    if slope.is_nan() || slope >= 0.0 {
        return None;
    }
    // Near the minimiser the predicted decrease falls below the rounding error of `f`; allow
    // changes at that level so that the iteration can reach the gradient tolerance.
    let noise = 8.0 * f64::EPSILON * (1.0 + f.abs());
    let mut t = 1.0;
    for _ in 0..=opts.max_halvings {
        for ((x, &vj), &pj) in ws.trial.iter_mut().zip(ws.v.iter()).zip(ws.step.iter()) {
            *x = vj + t * pj;
        }
        let ft = obj.value(&ws.trial, &mut ws.memo_trial);
        if ft.is_finite() && ft <= f + opts.armijo * t * slope + noise {
            ws.v.copy_from(&ws.trial);
            std::mem::swap(&mut ws.memo, &mut ws.memo_trial);
            ws.memo_valid = true;
            return Some(ft);
        }
        t *= 0.5;
    }
    None
}

/// The rest of one iteration of [`minimize_in`] once the derivatives at `ws.v` (value `f`) are
/// known and the Newton direction has been tried (spec §4.2): if `newton_ok` (`ws.step` holds
/// `−H^{-1} g`), the line search along it, and if that fails, along the scaled gradient
/// direction; otherwise the gradient direction directly. Returns whether a step was accepted
/// (then `ws.v` is the new point and `ws.memo` the objective's memo there). The lane-batched
/// rows of the two-layer output call it for a row whose full Newton step was not accepted, so
/// that the row continues with the very operations of [`minimize_in`].
pub(crate) fn search_step<D: Dim, O: NewtonObjective<D> + ?Sized>(
    obj: &O,
    f: f64,
    ws: &mut Work<D>,
    opts: &NewtonOptions,
    newton_ok: bool,
    report: &mut NewtonReport,
) -> bool
where
    DefaultAllocator: Allocator<D> + Allocator<D, D>,
{
    if newton_ok && line_search(obj, f, ws, opts).is_some() {
        return true;
    }
    gradient_direction(ws);
    report.fallback_steps += 1;
    line_search(obj, f, ws, opts).is_some()
}

/// The error of a Newton row solver whose objective or derivatives are not finite at an
/// iterate (shared by the generic solver and the specialised complex-exponential rows).
pub(crate) fn not_finite(iteration: usize, f: f64, gn: f64) -> Error {
    Error::Numerical {
        what: "Newton MAP solver".into(),
        detail: format!(
            "objective or its derivatives are not finite at iteration {iteration} (f = {f}, |g| = {gn})"
        ),
    }
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
    if v.len() != d || ws.work.grad.len() != d {
        return Err(Error::shape(
            "Newton start and workspace",
            format!("length {d}"),
            format!("start {}, workspace {}", v.len(), ws.work.grad.len()),
        ));
    }
    ws.work.v.as_mut_slice().copy_from_slice(v);
    let rep = minimize_in(&DynObjective(obj), kind, opts, scale, &mut ws.work);
    v.copy_from_slice(ws.work.v.as_slice());
    rep
}

/// [`minimize`] on nalgebra storage of dimension `D` (fixed size on the stack, or [`Dyn`]),
/// from the start `ws.v`; on return `ws.v` is the solution and `ws.grad`, `ws.hess` the
/// derivatives there.
pub(crate) fn minimize_in<D: Dim, O: NewtonObjective<D> + ?Sized>(
    obj: &O,
    kind: HessianKind,
    opts: &NewtonOptions,
    scale: f64,
    ws: &mut Work<D>,
) -> Result<NewtonReport>
where
    DefaultAllocator: Allocator<D> + Allocator<D, D>,
{
    let tol = opts.grad_tol * scale;
    let mut report = NewtonReport::unstarted();
    ws.memo_valid = false;
    loop {
        let memo = if ws.memo_valid { Some(&ws.memo) } else { None };
        let f = obj.derivatives(&ws.v, kind, &mut ws.grad, &mut ws.hess, memo);
        let gn = norm(ws.grad.as_slice());
        report.value = f;
        report.grad_norm = gn;
        if !f.is_finite() || !gn.is_finite() || ws.hess.iter().any(|x| !x.is_finite()) {
            return Err(not_finite(report.iterations, f, gn));
        }
        if gn <= tol {
            report.converged = true;
            return Ok(report);
        }
        if report.iterations >= opts.max_iterations {
            return Ok(report);
        }
        // Newton direction if H is positive definite, else gradient descent (spec §4.2).
        let newton_ok = newton_direction(ws);
        if !search_step(obj, f, ws, opts, newton_ok, &mut report) {
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

    /// The small Cholesky factor and solve give nalgebra's bits (d = 1…8; positive definite,
    /// indefinite, singular and NaN matrices).
    #[test]
    fn small_cholesky_matches_nalgebra_bit_for_bit() {
        use rand::RngExt;
        let mut rng = crate::rng_from_seed(41);
        for n in 1..=SMALL_CHOLESKY {
            for case in 0..200 {
                let b = DMat::from_fn(n, n, |_, _| rng.random_range(-1.0..1.0));
                let mut a = &b * b.transpose();
                match case % 4 {
                    0 => {}
                    1 => a[(n - 1, n - 1)] -= 2.0, // often indefinite
                    2 => a.fill(0.0),
                    _ => a += DMat::identity(n, n) * 1e-3,
                }
                if case == 7 {
                    a[(0, 0)] = f64::NAN;
                }
                let rhs: Vec<f64> = (0..n).map(|_| rng.random_range(-1.0..1.0)).collect();
                let mut mine = a.clone();
                let ok = small_cholesky(mine.as_mut_slice(), n);
                match Cholesky::new(a.clone()) {
                    None => assert!(!ok, "n {n} case {case}: nalgebra fails, ours succeeds"),
                    Some(ch) => {
                        assert!(ok, "n {n} case {case}: nalgebra succeeds, ours fails");
                        let mut x = DVector::from_column_slice(&rhs);
                        ch.solve_mut(&mut x);
                        let l = ch.unpack_dirty();
                        for j in 0..n {
                            for i in j..n {
                                assert_eq!(mine[(i, j)].to_bits(), l[(i, j)].to_bits());
                            }
                        }
                        let mut y = rhs.clone();
                        small_cholesky_solve(mine.as_slice(), n, &mut y);
                        for i in 0..n {
                            assert_eq!(y[i].to_bits(), x[i].to_bits(), "n {n} case {case}");
                        }
                    }
                }
            }
        }
    }

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
