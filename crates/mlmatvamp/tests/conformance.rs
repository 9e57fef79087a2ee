//! The conformance registry: every factor kind of the library, one entry each, run through every
//! applicable check of [`mlmatvamp::factor::conformance`] (Jacobian = ΓΣ̄ in the orientation of
//! spec §0, batch = one row at a time, permutation equivariance, malformed inputs rejected,
//! samplers reproducible, SE step = Monte Carlo / independent simulation). A new factor gets every
//! check by adding one entry to [`priors`], [`layers`] or [`outputs`].
//!
//! Tolerances (module constants of `conformance`, overridden per case below with a reason):
//! * Jacobian: relative Frobenius error of the central-difference `⟨J⟩` against `ΓΣ̄`, step
//!   `1e-5 · max(|r|, σ)`, tolerance `1e-6` for every factor: closed forms have truncation error
//!   `O(h²) ≈ 1e-10` and rounding error `≈ ε/h ≈ 1e-11` (measured 2e-12 … 5e-11, relu MMSE
//!   quadrature included); the Newton-based sigmoid MAP and the Laplace-centred Gauss–Hermite
//!   sigmoid MMSE carry the Newton tolerance `1e-8` through the differences (measured 1.2e-8 and
//!   1.0e-8). A 1.5x (and even a 1 + 1e-4) wrong `Σ̄`, and the transposed orientation `Σ̄Γ`, fail
//!   (tests at the end); every Jacobian line prints that transposed deviation as `contrast`.
//! * batch and permutation: `1e-10` relative (the same arithmetic up to summation order).
//! * SE: every entry of `E[Σ]`, `Γ̄_out`, the error covariance and the outgoing law within
//!   5 Monte-Carlo standard errors, estimated from the spread of 20 (or more) batch means, plus a
//!   `1e-8` relative rounding floor for quantities that do not fluctuate.
//!
//! Every random draw is seeded. `cargo test --release --test conformance -- --nocapture` prints
//! the measured deviation of every check. The larger-budget SE run is `#[ignore]`d
//! (`-- --ignored`); the default budgets below keep the file well under a minute on 2 cores.

use faer::{Mat, MatRef};
use mlmatvamp::denoise::mask_law::AwgnMaskLaw;
use mlmatvamp::denoise::{MixedRegressionOutput, OperatorLayer};
use mlmatvamp::factor::conformance::{
    self, prior_message, random_spd, select_rows, test_backward_law, test_forward_law,
    JacobianOptions, LayerCase, Outcome, OutputCase, PriorCase, SeKind, SeOptions,
};
use mlmatvamp::factor::law::{SeBackward, SeContext, SeForward, SeStep};
use mlmatvamp::operator::{CgOptions, DenseOperator, LinearOperator, SpectralLaw, SubsampledDct};
use mlmatvamp::prelude::*;
use mlmatvamp::se::{LinearSpec, SpectralLinearLayer};
use std::sync::Arc;

// ---------------------------------------------------------------------------------------------
// Laws and small helpers.
// ---------------------------------------------------------------------------------------------

/// A backward law with `T⁻` of mean eigenvalue `t` (non-diagonal), `Ψ⁻ = I + 0.1 G`.
fn bwd(d: usize, t: f64, seed: u64) -> SeBackward {
    test_backward_law(&random_spd(d, t, seed), seed ^ 0xB).unwrap()
}

/// A forward law with `K⁺_AA` of mean eigenvalue `signal` and an independent message error of
/// mean eigenvalue `noise` (non-diagonal), plus a correlated part.
fn fwd(d: usize, signal: f64, noise: f64, seed: u64) -> SeForward {
    test_forward_law(
        &random_spd(d, signal, seed),
        &random_spd(d, noise, seed ^ 0xF),
        seed ^ 0xA,
    )
    .unwrap()
}

fn spd(d: usize, mean_eig: f64, seed: u64) -> Spd {
    Spd::new("test SPD", random_spd(d, mean_eig, seed), Some(d)).unwrap()
}

/// `n` rows `N(0, K⁺_AA)`: true rows consistent with a forward law.
fn truth(n: usize, law: &SeForward, seed: u64) -> Mat<f64> {
    let d = law.gamma.dim();
    let k_aa = law.k.view((0, 0), (d, d)).into_owned();
    let l = k_aa.cholesky().unwrap().l();
    let mut rng = rng_from_seed(seed);
    let g = standard_normal(n, d, &mut rng);
    Mat::from_fn(n, d, |i, j| (0..d).map(|k| g[(i, k)] * l[(j, k)]).sum())
}

fn all_rows(rows: &[usize], n: usize) -> Vec<usize> {
    if rows.is_empty() {
        (0..n).collect()
    } else {
        rows.to_vec()
    }
}

/// A Haar-random `n x n` orthogonal matrix.
fn orthogonal(n: usize, seed: u64) -> DMat {
    let g = standard_normal(n, n, &mut rng_from_seed(seed));
    let qr = DMat::from_fn(n, n, |i, j| g[(i, j)]).qr();
    let (q, r) = (qr.q(), qr.r());
    let signs = DMat::from_diagonal(&nalgebra::DVector::from_fn(n, |i, _| r[(i, i)].signum()));
    q * signs
}

fn to_mat(m: &DMat) -> Mat<f64> {
    Mat::from_fn(m.nrows(), m.ncols(), |i, j| m[(i, j)])
}

/// SE budget of the cheap factors: a 100k-row step against 20 x 5000 reference rows.
fn se_default() -> SeOptions {
    SeOptions::default()
}

/// SE budget of the expensive denoisers (quadrature per row): 40k-row step, 20 x 2000 rows.
fn se_small() -> SeOptions {
    SeOptions {
        n_mc: 40_000,
        batches: 20,
        batch_rows: 2_000,
        ..SeOptions::default()
    }
}

/// SE budget of the most expensive denoiser (relu two-layer MMSE, 4 x 32^2 Gauss-Legendre
/// points per row): 20k-row step, 20 x 1000 rows.
fn se_tiny() -> SeOptions {
    SeOptions {
        n_mc: 20_000,
        batches: 20,
        batch_rows: 1_000,
        ..SeOptions::default()
    }
}

/// SE budget of a linear layer: the batch rows are its `n_{l−1}`; 150 batches.
fn se_linear() -> SeOptions {
    SeOptions {
        batches: 150,
        ..SeOptions::default()
    }
}

// ---------------------------------------------------------------------------------------------
// The registry: one entry per factor kind.
// ---------------------------------------------------------------------------------------------

/// Every prior.
fn priors() -> Vec<PriorCase> {
    let d = 3;
    let bg = || -> Arc<dyn InputPrior> {
        Arc::new(
            BernoulliGaussianPrior::new(0.3, vec![0.2, 0.0, -0.1], random_spd(d, 1.0, 2)).unwrap(),
        )
    };
    vec![
        PriorCase::new(
            "gaussian prior",
            Arc::new(GaussianPrior::new(vec![0.3, -0.2, 0.1], random_spd(d, 1.0, 1)).unwrap()),
            SeKind::Exact,
            bwd(d, 0.3, 11),
        )
        .with_se(se_default()),
        // SE by tensor Gauss-Hermite quadrature (48^3 nodes). With a sharper message
        // (T⁻ of mean eigenvalue 0.2) the rule is off by 0.1-0.3% in E[Σ] and Γ_out: visible as
        // z ≈ 4-5 against 1M Monte-Carlo rows (96 nodes: z ≤ 2.1). With T⁻ = 0.4 it is accurate.
        PriorCase::new(
            "bernoulli-gaussian prior",
            bg(),
            SeKind::Exact,
            bwd(d, 0.4, 12),
        ),
        PriorCase::new(
            "group-lasso prior (MAP)",
            Arc::new(GroupLassoPrior::new(d, 1.5).unwrap()),
            SeKind::MonteCarlo,
            bwd(d, 0.3, 13),
        ),
        PriorCase::new(
            "mismatched prior (group-lasso estimator, bernoulli-gaussian data)",
            Arc::new(
                MismatchedPrior::new(bg(), Arc::new(GroupLassoPrior::new(d, 1.0).unwrap()))
                    .unwrap(),
            ),
            SeKind::MonteCarlo,
            bwd(d, 0.2, 14),
        ),
    ]
}

/// A linear layer `n_out x n_in` (d = 3) with a Haar `U`, `V` and Marchenko–Pastur singular
/// values; optional noise (precision of mean eigenvalue `noise`) and bias `B = U B̃` whose rotated
/// rows `B̃_i = ±b_0` all have the second moment `b_0ᵀb_0` (so the SE's bias model, Gaussian rows
/// of second moment `(1/n_l)BᵀB`, is exact for this `W`). Returns the case and the layer's parts.
struct LinearParts {
    w: Mat<f64>,
    bias: Option<Mat<f64>>,
    noise: Option<Spd>,
    b0: DMat,
}

fn linear_parts(
    n_out: usize,
    n_in: usize,
    noise: Option<f64>,
    bias: bool,
    seed: u64,
) -> LinearParts {
    let d = 3;
    let u = orthogonal(n_out, seed);
    let v = orthogonal(n_in, seed ^ 1);
    let s =
        mlmatvamp::se::marchenko_pastur_singular_values(n_out, n_in, 1.0 / n_in as f64).unwrap();
    let r = s.len();
    let w = u.columns(0, r)
        * DMat::from_diagonal(&nalgebra::DVector::from_vec(s))
        * v.columns(0, r).transpose();
    let b0 = DMat::from_row_slice(1, d, &[0.3, -0.2, 0.15]);
    let signs = standard_normal(n_out, 1, &mut rng_from_seed(seed ^ 2));
    let bt = DMat::from_fn(n_out, d, |i, j| signs[(i, 0)].signum() * b0[(0, j)]);
    LinearParts {
        w: to_mat(&w),
        bias: bias.then(|| to_mat(&(&u * bt))),
        noise: noise.map(|x| spd(d, x, seed ^ 3)),
        b0: b0.transpose() * b0,
    }
}

fn linear_case(
    name: &str,
    n_out: usize,
    n_in: usize,
    noise: Option<f64>,
    bias: bool,
    seed: u64,
) -> LayerCase {
    let p = linear_parts(n_out, n_in, noise, bias, seed);
    let build = move |op: &[usize], ip: &[usize]| -> mlmatvamp::Result<Arc<dyn Layer>> {
        let (op, ip) = (all_rows(op, n_out), all_rows(ip, n_in));
        let w = Mat::from_fn(n_out, n_in, |i, j| p.w[(op[i], ip[j])]);
        let b = p.bias.as_ref().map(|b| select_rows(b.as_ref(), &op));
        Ok(Arc::new(LinearLayer::new(
            w.as_ref(),
            b,
            p.noise.clone(),
            3,
        )?))
    };
    LayerCase::rebuilt(
        name,
        build,
        SeKind::Exact,
        bwd(3, 0.2, seed ^ 5),
        fwd(3, 1.0, 0.3, seed ^ 6),
    )
    .with_se(se_linear())
}

/// A user-defined operator (through the public trait): another operator with its rows and
/// columns permuted, `P_out W P_inᵀ` (the permutation check rebuilds a matrix-free layer on it).
struct Permuted {
    inner: Arc<dyn LinearOperator>,
    out_perm: Vec<usize>,
    in_perm: Vec<usize>,
}

impl LinearOperator for Permuted {
    fn shape(&self) -> (usize, usize) {
        self.inner.shape()
    }
    fn describe(&self) -> String {
        format!("permuted {}", self.inner.describe())
    }
    fn apply(&self, x: MatRef<'_, f64>, mut out: faer::MatMut<'_, f64>) -> mlmatvamp::Result<()> {
        // (P_out W P_inᵀ x)_i = (W y)_{out_perm[i]} with y_{in_perm[j]} = x_j.
        let mut y = Mat::zeros(x.nrows(), x.ncols());
        for (j, &pj) in self.in_perm.iter().enumerate() {
            for c in 0..x.ncols() {
                y[(pj, c)] = x[(j, c)];
            }
        }
        let wy = mlmatvamp::operator::apply(self.inner.as_ref(), y.as_ref())?;
        for (i, &pi) in self.out_perm.iter().enumerate() {
            for c in 0..x.ncols() {
                out[(i, c)] = wy[(pi, c)];
            }
        }
        Ok(())
    }
    fn apply_transpose(
        &self,
        y: MatRef<'_, f64>,
        mut out: faer::MatMut<'_, f64>,
    ) -> mlmatvamp::Result<()> {
        let mut z = Mat::zeros(y.nrows(), y.ncols());
        for (i, &pi) in self.out_perm.iter().enumerate() {
            for c in 0..y.ncols() {
                z[(pi, c)] = y[(i, c)];
            }
        }
        let wtz = mlmatvamp::operator::apply_transpose(self.inner.as_ref(), z.as_ref())?;
        for (j, &pj) in self.in_perm.iter().enumerate() {
            for c in 0..y.ncols() {
                out[(j, c)] = wtz[(pj, c)];
            }
        }
        Ok(())
    }
    fn spectral_law(&self) -> Option<SpectralLaw> {
        self.inner.spectral_law()
    }
    fn row_gram_scale(&self) -> Option<f64> {
        self.inner.row_gram_scale()
    }
}

/// A matrix-free linear layer (`OperatorLayer`) over `inner`, rebuilt on the permuted operator;
/// `law` is the exact law (dense) or the operator's own (orthogonal transform).
fn matrix_free_case(
    name: &str,
    inner: Arc<dyn LinearOperator>,
    law: SpectralLaw,
    noise: Option<f64>,
    seed: u64,
) -> LayerCase {
    let (n_out, n_in) = inner.shape();
    let noise = noise.map(|x| spd(3, x, seed ^ 3));
    let build = move |op: &[usize], ip: &[usize]| -> mlmatvamp::Result<Arc<dyn Layer>> {
        let permuted = Arc::new(Permuted {
            inner: inner.clone(),
            out_perm: all_rows(op, n_out),
            in_perm: all_rows(ip, n_in),
        });
        Ok(Arc::new(OperatorLayer::with_law(
            permuted,
            law.clone(),
            None,
            noise.clone(),
            3,
            CgOptions {
                tolerance: 1e-13,
                max_iterations: 5000,
                ..Default::default()
            },
        )?))
    };
    LayerCase::rebuilt(
        name,
        build,
        SeKind::Exact,
        bwd(3, 0.2, seed ^ 5),
        fwd(3, 1.0, 0.3, seed ^ 6),
    )
    .with_se(se_linear())
}

/// The SE-only linear layer of a Marchenko–Pastur law, against a `LinearLayer` whose `W` has
/// exactly those singular values (and a bias of the stated second moment).
fn spectral_case(
    name: &str,
    n_out: usize,
    n_in: usize,
    noise: Option<f64>,
    bias: bool,
    seed: u64,
) -> LayerCase {
    let p = linear_parts(n_out, n_in, noise, bias, seed);
    let spec = LinearSpec::marchenko_pastur(
        n_out,
        n_in,
        1.0 / n_in as f64,
        3,
        p.noise.clone(),
        bias.then(|| p.b0.clone()),
    )
    .unwrap();
    let reference = LinearLayer::new(p.w.as_ref(), p.bias.clone(), p.noise.clone(), 3).unwrap();
    LayerCase::se_only(
        name,
        Arc::new(SpectralLinearLayer::new(spec)),
        Arc::new(reference),
        bwd(3, 0.2, seed ^ 5),
        fwd(3, 1.0, 0.3, seed ^ 6),
    )
    .with_se(se_linear())
}

fn activation(
    act: Activation,
    noise: Option<f64>,
    est: Estimator,
    d: usize,
    seed: u64,
) -> Arc<dyn Layer> {
    Arc::new(ActivationLayer::new(act, noise.map(|x| spd(d, x, seed)), est, d).unwrap())
}

/// Every hidden layer.
fn layers() -> Vec<LayerCase> {
    use Activation::{Identity, Relu};
    use Estimator::{Map, Mmse};
    let (mc, bw, fw) = (SeKind::MonteCarlo, bwd, fwd);
    // Relu MMSE integrates each orthant piece by Gauss-Legendre quadrature (16 nodes); its
    // Jacobian identity still holds to ~8e-11.
    let dense = linear_parts(120, 200, None, false, 41);
    let dense_law = SpectralLaw::exact(
        &mlmatvamp::se::marchenko_pastur_singular_values(120, 200, 1.0 / 200.0).unwrap(),
        120,
        200,
    )
    .unwrap();
    let dense_op: Arc<dyn LinearOperator> = Arc::new(DenseOperator::new(dense.w).unwrap());
    let dct: Arc<dyn LinearOperator> = Arc::new(SubsampledDct::new(96, 160, 1.0, 42).unwrap());
    let dct_law = dct.spectral_law().unwrap();
    vec![
        matrix_free_case(
            "matrix-free 120x200 (dense, CG dual, exact law), noisy",
            dense_op,
            dense_law,
            Some(20.0),
            41,
        ),
        matrix_free_case(
            "matrix-free 96x160 (subsampled DCT, closed form), noiseless",
            dct,
            dct_law,
            None,
            42,
        ),
        linear_case(
            "linear 240x160 (tall), noiseless",
            240,
            160,
            None,
            false,
            21,
        ),
        linear_case(
            "linear 120x200 (wide), noiseless",
            120,
            200,
            None,
            false,
            22,
        ),
        linear_case(
            "linear 240x160 (tall), noisy",
            240,
            160,
            Some(20.0),
            false,
            23,
        ),
        linear_case(
            "linear 120x200 (wide), noisy, with bias",
            120,
            200,
            Some(20.0),
            true,
            24,
        ),
        linear_case(
            "linear 240x160 (tall), noisy, with bias",
            240,
            160,
            Some(20.0),
            true,
            25,
        ),
        spectral_case(
            "spectral linear 120x200 (wide), noisy, with bias",
            120,
            200,
            Some(20.0),
            true,
            26,
        ),
        spectral_case(
            "spectral linear 240x160 (tall), noiseless",
            240,
            160,
            None,
            false,
            27,
        ),
        LayerCase::row_wise(
            "identity activation, noisy, MMSE",
            activation(Identity, Some(20.0), Mmse, 3, 31),
            mc,
            bw(3, 0.2, 31),
            fw(3, 1.0, 0.3, 31),
        ),
        LayerCase::row_wise(
            "identity activation, noisy, MAP",
            activation(Identity, Some(20.0), Map, 3, 32),
            mc,
            bw(3, 0.2, 32),
            fw(3, 1.0, 0.3, 32),
        ),
        LayerCase::row_wise(
            "identity activation, noiseless",
            activation(Identity, None, Mmse, 3, 33),
            mc,
            bw(3, 0.2, 33),
            fw(3, 1.0, 0.3, 33),
        ),
        LayerCase::row_wise(
            "relu activation, noisy, MMSE",
            activation(Relu, Some(20.0), Mmse, 2, 34),
            mc,
            bw(2, 0.2, 34),
            fw(2, 1.0, 0.3, 34),
        )
        .with_se(se_small()),
        LayerCase::row_wise(
            "relu activation, noisy, MAP",
            activation(Relu, Some(20.0), Map, 2, 35),
            mc,
            bw(2, 0.2, 35),
            fw(2, 1.0, 0.3, 35),
        )
        .with_se(se_small()),
        LayerCase::row_wise(
            "relu activation, noiseless, MMSE",
            activation(Relu, None, Mmse, 2, 36),
            mc,
            bw(2, 0.2, 36),
            fw(2, 1.0, 0.3, 36),
        )
        .with_se(se_small()),
        LayerCase::row_wise(
            "relu activation, noiseless, MAP",
            activation(Relu, None, Map, 2, 37),
            mc,
            bw(2, 0.2, 37),
            fw(2, 1.0, 0.3, 37),
        )
        .with_se(se_small()),
    ]
}

const OUT_ROWS: usize = 12;

/// The AWGN output on `OUT_ROWS` rows (d = 3), fully observed or with each entry observed with
/// probability 0.7 (the mask is drawn once; missing entries of `Y` are NaN).
fn awgn_case(name: &str, masked: bool, seed: u64) -> OutputCase {
    let d = 3;
    let law = fwd(d, 1.0, 0.3, seed);
    let z = truth(OUT_ROWS, &law, seed ^ 1);
    let noise = spd(d, 10.0, seed ^ 2);
    let mut rng = rng_from_seed(seed ^ 3);
    let proto = AwgnMaskLaw::new(OUT_ROWS, noise.clone(), if masked { 0.7 } else { 1.0 }).unwrap();
    let drawn = proto.resample(z.as_ref(), &mut rng).unwrap();
    let y = drawn.observation().to_owned();
    let mask = masked.then(|| {
        Mat::from_fn(
            OUT_ROWS,
            d,
            |i, j| if y[(i, j)].is_nan() { 0.0 } else { 1.0 },
        )
    });
    let build = move |rows: &[usize]| -> mlmatvamp::Result<Arc<dyn OutputChannel>> {
        let rows = all_rows(rows, OUT_ROWS);
        let m = mask.as_ref().map(|m| select_rows(m.as_ref(), &rows));
        Ok(Arc::new(AwgnOutput::new(
            select_rows(y.as_ref(), &rows),
            noise.clone(),
            m,
        )?))
    };
    OutputCase::full(name, build, z, SeKind::Exact, law)
}

/// The two-layer network output `y = σ(v)F_2 + N(0, 0.05 I)`, d = 2 hidden units, 3 outputs.
fn two_layer_case(name: &str, act: Activation, est: TwoLayerEstimator, seed: u64) -> OutputCase {
    let d = 2;
    let law = fwd(d, 1.0, 0.3, seed);
    let z = truth(OUT_ROWS, &law, seed ^ 1);
    let f2g = standard_normal(d, 3, &mut rng_from_seed(seed ^ 2));
    let f2 = DMat::from_fn(d, 3, |i, j| f2g[(i, j)]);
    let proto = TwoLayerOutput::new(Mat::zeros(1, 3), f2.clone(), act, 0.05, est).unwrap();
    let y = proto
        .resample(z.as_ref(), &mut rng_from_seed(seed ^ 3))
        .unwrap()
        .observation()
        .to_owned();
    let build = move |rows: &[usize]| -> mlmatvamp::Result<Arc<dyn OutputChannel>> {
        let rows = all_rows(rows, OUT_ROWS);
        Ok(Arc::new(TwoLayerOutput::new(
            select_rows(y.as_ref(), &rows),
            f2.clone(),
            act,
            0.05,
            est,
        )?))
    };
    let se = if act == Activation::Relu && matches!(est, TwoLayerEstimator::Mmse(_)) {
        se_tiny()
    } else {
        se_small()
    };
    OutputCase::full(name, build, z, SeKind::MonteCarlo, law).with_se(se)
}

/// The mixed linear regression output `y = v_q + N(0, 0.05)`, d = 3 components, weights
/// (0.5, 0.3, 0.2).
fn mixed_case(name: &str, est: Estimator, seed: u64) -> OutputCase {
    let d = 3;
    let law = fwd(d, 1.0, 0.3, seed);
    let z = truth(OUT_ROWS, &law, seed ^ 1);
    let w = Some(vec![0.5, 0.3, 0.2]);
    let proto = MixedRegressionOutput::new(Mat::zeros(1, 1), d, 0.05, w.clone(), est).unwrap();
    let y = proto
        .draw(z.as_ref(), &mut rng_from_seed(seed ^ 3))
        .unwrap()
        .observation()
        .to_owned();
    let build = move |rows: &[usize]| -> mlmatvamp::Result<Arc<dyn OutputChannel>> {
        let rows = all_rows(rows, OUT_ROWS);
        Ok(Arc::new(MixedRegressionOutput::new(
            select_rows(y.as_ref(), &rows),
            d,
            0.05,
            w.clone(),
            est,
        )?))
    };
    OutputCase::full(name, build, z, SeKind::MonteCarlo, law)
}

/// The probit output `y = sign(z + N(0, 0.1))` entry by entry. With `d = 2` and the random,
/// non-diagonal message precision of the forward law, the MMSE denoiser integrates the belief
/// by Gauss–Hermite quadrature in the EP frame (a smooth function of `r`, exact up to the
/// quadrature error); `d = 1` is the exact closed form.
fn probit_case(name: &str, d: usize, est: Estimator, seed: u64) -> OutputCase {
    use mlmatvamp::denoise::ProbitOutput;
    let law = fwd(d, 1.0, 0.3, seed);
    let z = truth(OUT_ROWS, &law, seed ^ 1);
    let proto = ProbitOutput::new(Mat::from_fn(1, d, |_, _| 1.0), 1.0, est).unwrap();
    let y = proto
        .draw(z.as_ref(), &mut rng_from_seed(seed ^ 3))
        .unwrap()
        .observation()
        .to_owned();
    let build = move |rows: &[usize]| -> mlmatvamp::Result<Arc<dyn OutputChannel>> {
        let rows = all_rows(rows, OUT_ROWS);
        Ok(Arc::new(ProbitOutput::new(
            select_rows(y.as_ref(), &rows),
            1.0,
            est,
        )?))
    };
    let case = OutputCase::full(name, build, z, SeKind::MonteCarlo, law);
    if d > 1 && est == Estimator::Mmse {
        case.with_se(se_small())
    } else {
        case
    }
}

/// The complex-exponential output of sketched clustering (`K = d = 3`, gains and noise variances
/// varying over rows). The approximate MMSE denoiser is not an exact posterior mean, so its
/// Jacobian equals `ΓΣ̄` only up to the approximation (measured 1.9e-2 on this case, with the
/// transposed orientation at 9.4e-2): its tolerance is 5e-2 instead of 1e-6. The MAP case uses
/// the exact Hessian (measured 5.4e-9).
fn cexp_case(name: &str, est: Estimator, seed: u64) -> OutputCase {
    use mlmatvamp::denoise::{CexpOptions, CexpOutput};
    let d = 3;
    let law = fwd(d, 1.0, 0.3, seed);
    let z = truth(OUT_ROWS, &law, seed ^ 1);
    let w = vec![0.5, 0.3, 0.2];
    let gains: Vec<f64> = (0..OUT_ROWS).map(|i| 0.6 + 0.03 * i as f64).collect();
    let noise: Vec<f64> = (0..OUT_ROWS).map(|i| 0.05 + 0.002 * i as f64).collect();
    let proto = CexpOutput::new(
        Mat::zeros(OUT_ROWS, 2),
        gains.clone(),
        w.clone(),
        noise.clone(),
        est,
        CexpOptions::default(),
    )
    .unwrap();
    let full = proto
        .draw(z.as_ref(), &mut rng_from_seed(seed ^ 3))
        .unwrap();
    let build = move |rows: &[usize]| -> mlmatvamp::Result<Arc<dyn OutputChannel>> {
        let rows = all_rows(rows, OUT_ROWS);
        Ok(Arc::new(full.select_rows(&rows)?))
    };
    let case = OutputCase::full(name, build, z, SeKind::MonteCarlo, law);
    match est {
        Estimator::Mmse => case.with_jacobian(JacobianOptions {
            tol: 5e-2,
            ..Default::default()
        }),
        Estimator::Map => case,
    }
}

/// Every output channel.
fn outputs() -> Vec<OutputCase> {
    use Activation::{Identity, Relu, Sigmoid};
    let map = || TwoLayerEstimator::map(HessianKind::Exact);
    let mmse = TwoLayerEstimator::default;
    vec![
        awgn_case("awgn output, fully observed", false, 41),
        awgn_case("awgn output, missing entries (mask)", true, 42),
        OutputCase::se_only(
            "awgn mask law (observed 0.7)",
            Arc::new(AwgnMaskLaw::new(1000, spd(3, 10.0, 43), 0.7).unwrap()),
            Arc::new(AwgnMaskLaw::new(1000, spd(3, 10.0, 43), 0.7).unwrap()),
            fwd(3, 1.0, 0.3, 43),
        ),
        two_layer_case("two-layer output, relu, MAP", Relu, map(), 51),
        two_layer_case("two-layer output, relu, MMSE", Relu, mmse(), 52),
        two_layer_case("two-layer output, sigmoid, MAP", Sigmoid, map(), 53),
        two_layer_case("two-layer output, sigmoid, MMSE", Sigmoid, mmse(), 54),
        two_layer_case("two-layer output, identity, MAP", Identity, map(), 55),
        two_layer_case("two-layer output, identity, MMSE", Identity, mmse(), 56),
        mixed_case("mixed regression output, MAP", Estimator::Map, 61),
        mixed_case("mixed regression output, MMSE", Estimator::Mmse, 62),
        probit_case("probit output, d = 1, MMSE", 1, Estimator::Mmse, 81),
        probit_case("probit output, d = 1, MAP", 1, Estimator::Map, 82),
        probit_case("probit output, d = 2, MMSE", 2, Estimator::Mmse, 83),
        probit_case("probit output, d = 2, MAP", 2, Estimator::Map, 84),
        cexp_case("complex-exponential output, MAP", Estimator::Map, 71),
        cexp_case(
            "complex-exponential output, approximate MMSE",
            Estimator::Mmse,
            72,
        ),
    ]
}

// ---------------------------------------------------------------------------------------------
// Running the registry.
// ---------------------------------------------------------------------------------------------

/// Prints every outcome (deviation, tolerance, contrast) and fails with the failed ones, each
/// naming the factor and the check.
fn assert_all(kind: &str, outcomes: Vec<Outcome>) {
    let detail = std::env::var_os("CONFORMANCE_DETAIL").is_some();
    let mut failures = Vec::new();
    for o in &outcomes {
        match &o.result {
            Ok(r) => {
                println!(
                    "[{kind}] {:<56} {:<26} dev {:>10.3e} tol {:>9.2e}{}",
                    o.factor,
                    o.check,
                    r.deviation,
                    r.tolerance,
                    r.contrast
                        .map_or(String::new(), |c| format!("  contrast {c:.2e}"))
                );
                if detail {
                    println!("        {}", r.detail);
                }
            }
            Err(e) => {
                println!("[{kind}] {:<56} {:<26} FAILED: {e}", o.factor, o.check);
                failures.push(format!("{} / {}: {e}", o.factor, o.check));
            }
        }
    }
    assert!(!outcomes.is_empty());
    assert!(
        failures.is_empty(),
        "{} of {} {kind} checks failed:\n{}",
        failures.len(),
        outcomes.len(),
        failures.join("\n")
    );
}

/// Runs the cases (printing the time each took).
fn run_timed<C>(
    cases: Vec<C>,
    name: impl Fn(&C) -> &str,
    run: impl Fn(&C) -> Vec<Outcome>,
) -> Vec<Outcome> {
    let mut all = Vec::new();
    for c in &cases {
        let t = std::time::Instant::now();
        all.extend(run(c));
        println!("{:<60} {:.2} s", name(c), t.elapsed().as_secs_f64());
    }
    all
}

#[test]
fn priors_conform() {
    assert_all("prior", run_timed(priors(), |c| &c.name, PriorCase::run));
}

#[test]
fn layers_conform() {
    assert_all("layer", run_timed(layers(), |c| &c.name, LayerCase::run));
}

#[test]
fn outputs_conform() {
    assert_all("output", run_timed(outputs(), |c| &c.name, OutputCase::run));
}

/// The registry with 4x the default SE budgets (about 4x the run time): the same checks with
/// half the Monte-Carlo standard errors.
#[test]
#[ignore]
fn registry_conforms_with_large_se_budgets() {
    let big = |mut se: SeOptions| {
        se.n_mc *= 4;
        se.batches *= 4;
        se
    };
    let mut all = Vec::new();
    for mut c in priors() {
        c.se = big(c.se);
        all.extend(c.run());
    }
    for mut c in layers() {
        c.se = big(c.se);
        all.extend(c.run());
    }
    for mut c in outputs() {
        c.se = big(c.se);
        all.extend(c.run());
    }
    assert_all("large budget", all);
}

// ---------------------------------------------------------------------------------------------
// The checks can fail: deliberately wrong factors are caught.
// ---------------------------------------------------------------------------------------------

/// A Gaussian prior that misreports: its `Σ̄` scaled by `cov_scale`, its SE step's predicted
/// error covariance scaled by `se_scale`.
struct Tampered {
    inner: GaussianPrior,
    cov_scale: f64,
    se_scale: f64,
}

impl Factor for Tampered {
    fn describe(&self) -> String {
        "tampered gaussian prior".into()
    }
    fn dim(&self) -> usize {
        self.inner.dim()
    }
}

impl PriorDenoiser for Tampered {
    fn denoise(&self, incoming: &Message) -> mlmatvamp::Result<Belief> {
        let mut b = self.inner.denoise(incoming)?;
        b.cov *= self.cov_scale;
        Ok(b)
    }
}

impl PriorSampler for Tampered {
    fn sample(&self, n: usize, rng: &mut Rng) -> mlmatvamp::Result<Mat<f64>> {
        self.inner.sample(n, rng)
    }
}

impl PriorSe for Tampered {
    fn se_forward(
        &self,
        minus: &SeBackward,
        ctx: &SeContext<'_>,
        prev: Option<&Spd>,
    ) -> mlmatvamp::Result<SeStep<SeForward>> {
        let mut s = self.inner.se_forward(minus, ctx, prev)?;
        s.estimate.error_cov *= self.se_scale;
        Ok(s)
    }
}

fn tampered(cov_scale: f64, se_scale: f64) -> Tampered {
    Tampered {
        inner: GaussianPrior::new(vec![0.3, -0.2, 0.1], random_spd(3, 1.0, 1)).unwrap(),
        cov_scale,
        se_scale,
    }
}

#[test]
fn a_wrong_covariance_fails_the_jacobian_check() {
    let law = bwd(3, 0.3, 11);
    let honest = tampered(1.0, 1.0);
    let (_, msg) = prior_message(&honest, &law, 12, 5).unwrap();
    let opts = JacobianOptions::default();
    let ok = conformance::prior_jacobian(&honest, &msg, &opts).unwrap();
    assert!(ok.deviation < 1e-9, "{ok:?}");
    let err = conformance::prior_jacobian(&tampered(1.5, 1.0), &msg, &opts).unwrap_err();
    assert!(err.contains("Jacobian") && err.contains("exceeds"), "{err}");
    // Even a 1e-4 relative error is caught (the closed form is checked to 1e-6).
    assert!(conformance::prior_jacobian(&tampered(1.0 + 1e-4, 1.0), &msg, &opts).is_err());
    // The same for an output channel whose Σ̄ is 1.5x too large.
    let law = fwd(3, 1.0, 0.3, 41);
    let z = truth(OUT_ROWS, &law, 1);
    let y = &z + &z * faer::Scale(0.1);
    let ch = ScaledOutput(AwgnOutput::new(y, spd(3, 10.0, 2), None).unwrap(), 1.5);
    let plus = conformance::output_message(z.as_ref(), &law, 3);
    assert!(conformance::output_jacobian(&ch.0, &plus, &opts).is_ok());
    let err = conformance::output_jacobian(&ch, &plus, &opts).unwrap_err();
    assert!(err.contains("output Jacobian"), "{err}");
    // Its linear estimate and likelihood message are the unscaled channel's: the shortcuts
    // the solver's lazy path relies on no longer agree with its denoiser, and the check says so.
    let honest = conformance::output_linear_forms(&ch.0, &plus).unwrap();
    assert!(honest.deviation < 1.0, "{honest:?}");
    let err = conformance::output_linear_forms(&ch, &plus).unwrap_err();
    assert!(err.contains("output linear forms"), "{err}");
}

/// An AWGN output whose `Σ̄` is scaled.
struct ScaledOutput(AwgnOutput, f64);

impl Factor for ScaledOutput {
    fn describe(&self) -> String {
        "scaled awgn output".into()
    }
    fn dim(&self) -> usize {
        self.0.dim()
    }
}

impl OutputShape for ScaledOutput {
    fn rows(&self) -> usize {
        self.0.rows()
    }
}

impl OutputDenoiser for ScaledOutput {
    fn observation(&self) -> faer::MatRef<'_, f64> {
        self.0.observation()
    }
    fn denoise(&self, plus: &Message) -> mlmatvamp::Result<Belief> {
        let mut b = self.0.denoise(plus)?;
        b.cov *= self.1;
        Ok(b)
    }
    fn linear_estimate(
        &self,
        plus_precision: &Spd,
    ) -> Option<mlmatvamp::Result<mlmatvamp::factor::LinearEstimate>> {
        self.0.linear_estimate(plus_precision)
    }
    fn likelihood_message(&self) -> Option<Message> {
        self.0.likelihood_message()
    }
}

/// The linear denoiser `ẑ = r M` with the covariance `S`: consistent when `M = ΓS` (spec §0),
/// wrong when `M = SΓ` (the transposed orientation).
struct LinearFake {
    s: DMat,
    transposed: bool,
}

impl Factor for LinearFake {
    fn describe(&self) -> String {
        "linear fake".into()
    }
    fn dim(&self) -> usize {
        self.s.nrows()
    }
}

impl PriorDenoiser for LinearFake {
    fn denoise(&self, m: &Message) -> mlmatvamp::Result<Belief> {
        let g = m.precision.matrix();
        let t = if self.transposed {
            &self.s * g
        } else {
            g * &self.s
        };
        let mean = Mat::from_fn(m.rows(), m.dim(), |i, j| {
            (0..m.dim()).map(|k| m.mean[(i, k)] * t[(k, j)]).sum()
        });
        Ok(Belief::new(mean, self.s.clone()))
    }
}

#[test]
fn the_transposed_orientation_fails_the_jacobian_check() {
    let (d, n) = (3, 8);
    let s = random_spd(d, 0.5, 7);
    let msg = Message {
        mean: standard_normal(n, d, &mut rng_from_seed(8)),
        precision: spd(d, 2.0, 9),
    };
    let opts = JacobianOptions::default();
    let right = LinearFake {
        s: s.clone(),
        transposed: false,
    };
    let wrong = LinearFake {
        s,
        transposed: true,
    };
    let ok = conformance::prior_jacobian(&right, &msg, &opts).unwrap();
    assert!(ok.deviation < 1e-9, "{ok:?}");
    // The transposed map is what the report's contrast measures.
    assert!(ok.contrast.unwrap() > 1e-2, "{ok:?}");
    let err = conformance::prior_jacobian(&wrong, &msg, &opts).unwrap_err();
    assert!(err.contains("exceeds"), "{err}");
}

/// A prior that leaks row 0 into every row, panics on a mean of the wrong width and returns NaN
/// for NaN input, and whose sampler ignores its random number generator. (Its panic message
/// "wrong width" is printed by the default panic hook when the test runs; the check catches it.)
struct Sloppy;

impl Factor for Sloppy {
    fn describe(&self) -> String {
        "sloppy prior".into()
    }
    fn dim(&self) -> usize {
        2
    }
}

impl PriorDenoiser for Sloppy {
    fn denoise(&self, m: &Message) -> mlmatvamp::Result<Belief> {
        assert_eq!(m.mean.ncols(), 2, "wrong width");
        let mean = Mat::from_fn(m.rows(), 2, |i, j| {
            0.5 * m.mean[(i, j)] + 0.01 * m.mean[(0, j)]
        });
        Ok(Belief::new(mean, DMat::identity(2, 2) * 0.5))
    }
}

impl PriorSampler for Sloppy {
    fn sample(&self, n: usize, _rng: &mut Rng) -> mlmatvamp::Result<Mat<f64>> {
        Ok(Mat::from_fn(n, 2, |i, j| (i + j) as f64))
    }
}

#[test]
fn coupled_rows_panics_silent_nans_and_unseeded_samplers_are_caught() {
    let msg = Message {
        mean: standard_normal(10, 2, &mut rng_from_seed(1)),
        precision: spd(2, 1.0, 2),
    };
    let batch = conformance::prior_batch(&Sloppy, &msg, conformance::EXACT_TOL).unwrap_err();
    assert!(batch.contains("batch"), "{batch}");
    let perm = conformance::permutation(10, 3);
    let p = conformance::prior_permutation(&Sloppy, &msg, &perm, conformance::EXACT_TOL);
    assert!(p.unwrap_err().contains("permutation"));
    let bad = conformance::prior_bad_inputs(&Sloppy, &msg).unwrap_err();
    assert!(
        bad.contains("panicked") && bad.contains("non-finite"),
        "{bad}"
    );
    let s = conformance::prior_sampler(&Sloppy, 50, 4).unwrap_err();
    assert!(s.contains("different seeds are identical"), "{s}");
}

#[test]
fn a_wrong_se_prediction_fails_the_se_check() {
    let law = bwd(3, 0.3, 11);
    let opts = se_default();
    let honest = tampered(1.0, 1.0);
    let ok = conformance::prior_se_vs_monte_carlo(&honest, &honest, &law, &opts).unwrap();
    assert!(ok.deviation <= opts.z_tol);
    // A 50% error in the predicted error covariance is far outside the MC error ...
    assert!(ok.contrast.unwrap() > 10.0 * opts.z_tol, "{ok:?}");
    let bad = tampered(1.0, 1.5);
    let err = conformance::prior_se_vs_monte_carlo(&bad, &honest, &law, &opts).unwrap_err();
    assert!(err.contains("error covariance"), "{err}");
    // ... and so is a 5% error.
    let bad = tampered(1.0, 1.05);
    assert!(conformance::prior_se_vs_monte_carlo(&bad, &honest, &law, &opts).is_err());
    // A reference whose denoiser misreports Σ̄ by 20% disagrees with the closed form (E[Σ], Γ_out).
    let bad = tampered(1.2, 1.0);
    assert!(conformance::prior_se_vs_monte_carlo(&honest, &bad, &law, &opts).is_err());
}
