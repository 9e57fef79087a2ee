//! Matrix-free linear layers (`docs/matrix-free.md`): the conjugate-gradient layer with the exact
//! spectral law is the SVD layer (means to `1e-8` relative, covariances to `1e-10`), on tall,
//! wide and square weights, noisy and noiseless, with and without bias, in both CG forms; the
//! Lanczos law's covariances are within their stated error; the orthogonal-transform layer's
//! closed form equals CG; the whole algorithm reaches the SVD layer's fixed point (MMV, d = 3).

mod common;

use common::*;
use faer::Mat;
use mlmatvamp::denoise::{LawOptions, OperatorLayer};
use mlmatvamp::factor::WarmStart;
use mlmatvamp::operator::{
    CgForm, CgOptions, DenseOperator, LinearOperator, SparseOperator, SpectralLaw, SubsampledDct,
};
use mlmatvamp::prelude::*;
use std::sync::Arc;

const D: usize = 3;

fn tight() -> CgOptions {
    CgOptions {
        tolerance: 1e-12,
        max_iterations: 5000,
        form: CgForm::Auto,
    }
}

/// A message with a random mean and a random non-diagonal precision of size `scale`.
fn message(n: usize, scale: f64, rng: &mut Rng) -> Message {
    Message {
        mean: standard_normal(n, D, rng),
        precision: Spd::new("Γ", random_spd(D, scale, rng), Some(D)).unwrap(),
    }
}

fn rel_mat(a: &Mat<f64>, b: &Mat<f64>) -> f64 {
    (a - b).norm_l2() / b.norm_l2().max(1e-300)
}

/// SVD layer and CG layer (exact law) on the same `W`, messages, bias and noise.
fn compare_layers(n_out: usize, n_in: usize, noisy: bool, bias: bool, form: CgForm, seed: u64) {
    let mut rng = rng_from_seed(seed);
    let w = gaussian_w(n_out, n_in, &mut rng);
    let b = bias.then(|| standard_normal(n_out, D, &mut rng) * faer::Scale(0.3));
    let nz = noisy.then(|| Spd::new("N", random_spd(D, 20.0, &mut rng), Some(D)).unwrap());
    let svd = LinearLayer::new(w.as_ref(), b.clone(), nz.clone(), D).unwrap();
    let law = SpectralLaw::exact(LayerSe::singular_values(&svd).unwrap(), n_out, n_in).unwrap();
    let op: Arc<dyn LinearOperator> = Arc::new(DenseOperator::new(w.clone()).unwrap());
    let cg = OperatorLayer::with_law(op, law, b, nz, D, CgOptions { form, ..tight() }).unwrap();
    // High precisions make the system ill-conditioned (the hard case for CG).
    let minus = message(n_out, 40.0, &mut rng);
    let plus = message(n_in, 2.0, &mut rng);
    let what = format!(
        "{n_out} x {n_in}, noisy {noisy}, bias {bias}, form {:?}",
        cg.form()
    );
    for (name, a, bl) in [
        (
            "forward",
            svd.forward(&minus, &plus).unwrap(),
            cg.forward(&minus, &plus).unwrap(),
        ),
        (
            "backward",
            svd.backward(&minus, &plus).unwrap(),
            cg.backward(&minus, &plus).unwrap(),
        ),
    ] {
        let dm = rel_mat(&bl.mean, &a.mean);
        let dc = rel_err(&bl.cov, &a.cov);
        assert!(dm < 1e-8, "{what}, {name}: mean differs by {dm:e}");
        assert!(dc < 1e-10, "{what}, {name}: covariance differs by {dc:e}");
        let rep = bl.solve.as_ref().expect("the CG layer reports its solve");
        assert!(rep.converged && rep.residual <= 1e-11, "{what}: {rep:?}");
    }
}

#[test]
fn cg_layer_with_the_exact_law_is_the_svd_layer() {
    let mut seed = 0;
    for (n_out, n_in) in [(60, 40), (40, 60), (50, 50)] {
        for noisy in [false, true] {
            for bias in [false, true] {
                for form in [CgForm::Auto, CgForm::Primal, CgForm::Dual] {
                    seed += 1;
                    compare_layers(n_out, n_in, noisy, bias, form, seed);
                }
            }
        }
    }
}

#[test]
fn warm_start_gives_the_same_answer_in_fewer_iterations() {
    let mut rng = rng_from_seed(5);
    let (n_out, n_in) = (70, 120);
    let w = gaussian_w(n_out, n_in, &mut rng);
    let op: Arc<dyn LinearOperator> = Arc::new(DenseOperator::new(w).unwrap());
    for form in [CgForm::Primal, CgForm::Dual] {
        let layer = OperatorLayer::new(
            op.clone(),
            None,
            None,
            D,
            CgOptions {
                form,
                tolerance: 1e-10,
                ..Default::default()
            },
            &LawOptions::default(),
        )
        .unwrap();
        let minus = message(n_out, 30.0, &mut rng);
        let plus = message(n_in, 1.0, &mut rng);
        let mut warm = WarmStart::default();
        let cold = layer.backward_warm(&minus, &plus, &mut warm).unwrap();
        // A slightly different message, as in the next iteration.
        let mut minus2 = minus.clone();
        minus2.mean += &(standard_normal(n_out, D, &mut rng) * faer::Scale(1e-3));
        let again_cold = layer.backward(&minus2, &plus).unwrap();
        let again_warm = layer.backward_warm(&minus2, &plus, &mut warm).unwrap();
        let (ic, iw) = (
            again_cold.solve.as_ref().unwrap().iterations,
            again_warm.solve.as_ref().unwrap().iterations,
        );
        println!(
            "{form:?}: cold {} / {ic}, warm {iw}",
            cold.solve.unwrap().iterations
        );
        assert!(
            iw < ic,
            "{form:?}: warm start took {iw} iterations, cold {ic}"
        );
        assert!(rel_mat(&again_warm.mean, &again_cold.mean) < 1e-8);
    }
}

#[test]
fn lanczos_law_is_within_its_stated_error() {
    // A Gaussian W: the exact traces a(m) = tr(I + mWᵀW)^{-1}, b(m) = tr WᵀW(I + mWᵀW)^{-1}
    // against stochastic Lanczos quadrature, within 4 standard errors over the probes.
    let mut rng = rng_from_seed(8);
    let (n_out, n_in) = (300, 500);
    let w = gaussian_w(n_out, n_in, &mut rng);
    let svd = LinearLayer::new(w.as_ref(), None, None, D).unwrap();
    let exact = SpectralLaw::exact(LayerSe::singular_values(&svd).unwrap(), n_out, n_in).unwrap();
    let op = DenseOperator::new(w).unwrap();
    let law = SpectralLaw::lanczos(&op, 20, 40, 3).unwrap();
    for m in [0.1, 1.0, 10.0, 1e3] {
        for (name, f) in [
            (
                "a",
                Box::new(move |t: f64| 1.0 / (1.0 + m * t)) as Box<dyn Fn(f64) -> f64>,
            ),
            ("b", Box::new(move |t: f64| t / (1.0 + m * t))),
        ] {
            let e = exact.trace(&f).value;
            let est = law.trace(&f);
            let z = (est.value - e).abs() / est.std_err;
            println!(
                "{name}({m}): exact {e:.6}, Lanczos {:.6} ± {:.2e} ({z:.2} se)",
                est.value, est.std_err
            );
            assert!(
                (est.value - e).abs() <= 4.0 * est.std_err + 1e-9 * e.abs(),
                "{name}({m}): {} vs {e} (se {})",
                est.value,
                est.std_err
            );
            assert!(((est.value - e) / e).abs() < 0.02, "{name}({m})");
        }
    }
    // The layer with the estimated law: covariances within the law's error of the SVD layer's.
    let op: Arc<dyn LinearOperator> = Arc::new(op);
    let layer = OperatorLayer::with_law(op, law, None, None, D, tight()).unwrap();
    let minus = message(n_out, 5.0, &mut rng);
    let plus = message(n_in, 1.0, &mut rng);
    let a = svd.backward(&minus, &plus).unwrap();
    let b = layer.backward(&minus, &plus).unwrap();
    assert!(
        rel_mat(&b.mean, &a.mean) < 1e-8,
        "the mean does not use the law"
    );
    let dc = rel_err(&b.cov, &a.cov);
    println!("backward covariance, Lanczos law vs exact: {dc:.2e}");
    assert!(dc < 0.02, "{dc}");
}

#[test]
fn orthogonal_transform_closed_form_equals_cg() {
    let (n_out, n_in) = (48, 128);
    let dct: Arc<dyn LinearOperator> = Arc::new(SubsampledDct::new(n_out, n_in, 1.7, 11).unwrap());
    // W Wᵀ = c² I.
    let eye = Mat::<f64>::identity(n_out, n_out);
    let wt = mlmatvamp::operator::apply_transpose(dct.as_ref(), eye.as_ref()).unwrap();
    let wwt = mlmatvamp::operator::apply(dct.as_ref(), wt.as_ref()).unwrap();
    let dev = (&wwt - &(eye * faer::Scale(1.7 * 1.7))).norm_max();
    assert!(dev < 1e-12, "W Wᵀ − c² I = {dev:e}");
    let mut rng = rng_from_seed(2);
    let b = Some(standard_normal(n_out, D, &mut rng));
    let nz = Some(Spd::new("N", random_spd(D, 10.0, &mut rng), Some(D)).unwrap());
    let closed = OperatorLayer::new(
        dct.clone(),
        b.clone(),
        nz.clone(),
        D,
        tight(),
        &LawOptions::default(),
    )
    .unwrap();
    assert_eq!(closed.form(), CgForm::Closed);
    let law = closed.law().clone();
    let cg = OperatorLayer::with_law(
        dct,
        law,
        b,
        nz,
        D,
        CgOptions {
            form: CgForm::Primal,
            ..tight()
        },
    )
    .unwrap();
    let minus = message(n_out, 25.0, &mut rng);
    let plus = message(n_in, 1.5, &mut rng);
    for (x, y) in [
        (
            closed.forward(&minus, &plus).unwrap(),
            cg.forward(&minus, &plus).unwrap(),
        ),
        (
            closed.backward(&minus, &plus).unwrap(),
            cg.backward(&minus, &plus).unwrap(),
        ),
    ] {
        assert!(rel_mat(&x.mean, &y.mean) < 1e-9);
        assert!(rel_err(&x.cov, &y.cov) < 1e-12);
        assert_eq!(x.solve.unwrap().iterations, 0);
    }
}

#[test]
fn sparse_operator_matches_its_dense_matrix() {
    let mut rng = rng_from_seed(4);
    let (n_out, n_in) = (30, 45);
    let dense = Mat::from_fn(n_out, n_in, |i, j| {
        if (i * 7 + j * 13) % 5 == 0 {
            ((i + 2 * j) % 9) as f64 - 4.0
        } else {
            0.0
        }
    });
    let (mut indptr, mut indices, mut data) = (vec![0], vec![], vec![]);
    for i in 0..n_out {
        for j in 0..n_in {
            if dense[(i, j)] != 0.0 {
                indices.push(j);
                data.push(dense[(i, j)]);
            }
        }
        indptr.push(indices.len());
    }
    let sp = SparseOperator::from_csr("W", (n_out, n_in), indptr, indices, data).unwrap();
    let x = standard_normal(n_in, D, &mut rng);
    let y = standard_normal(n_out, D, &mut rng);
    let wx = mlmatvamp::operator::apply(&sp, x.as_ref()).unwrap();
    let wty = mlmatvamp::operator::apply_transpose(&sp, y.as_ref()).unwrap();
    assert!(rel_mat(&wx, &(&dense * &x)) < 1e-14);
    assert!(rel_mat(&wty, &(dense.transpose() * &y)) < 1e-14);
}

#[test]
fn whole_algorithm_reaches_the_svd_fixed_point() {
    // MMV (d = 3): Bernoulli–Gaussian rows, a noiseless wide Gaussian design, AWGN output.
    let mut rng = rng_from_seed(21);
    let (n0, n1) = (400, 240);
    let x = gaussian_w(n1, n0, &mut rng);
    let prior = Arc::new(
        BernoulliGaussianPrior::new(0.2, vec![0.0; D], random_spd(D, 1.0, &mut rng)).unwrap(),
    );
    let noise = Spd::new("N", random_spd(D, 100.0, &mut rng), Some(D)).unwrap();
    let out = Arc::new(AwgnOutput::new(Mat::zeros(n1, D), noise, None).unwrap());
    let svd = Arc::new(LinearLayer::new(x.as_ref(), None, None, D).unwrap());
    let law = SpectralLaw::exact(LayerSe::singular_values(svd.as_ref()).unwrap(), n1, n0).unwrap();
    let op: Arc<dyn LinearOperator> = Arc::new(DenseOperator::new(x).unwrap());
    let cg = Arc::new(OperatorLayer::with_law(op, law, None, None, D, tight()).unwrap());
    let model = Network::new(prior.clone(), n0, vec![svd], out).unwrap();
    let (truth, net_svd) = model.sample(&mut rng).unwrap();
    let net_cg = Network::new(prior, n0, vec![cg], net_svd.output().clone()).unwrap();
    let config = SolverConfig {
        iterations: 30,
        ..Default::default()
    };
    let solver = Solver::new(config).unwrap();
    let a = solver.run(&net_svd, Some(&truth)).unwrap();
    let b = solver.run(&net_cg, Some(&truth)).unwrap();
    for l in 0..2 {
        let d = rel_mat(&b.estimates[l], &a.estimates[l]);
        let c = rel_err(&b.covariances[l], &a.covariances[l]);
        println!("Z_{l}: estimates differ by {d:.2e}, covariances by {c:.2e}");
        assert!(d < 1e-7 && c < 1e-9, "Z_{l}: {d:e}, {c:e}");
    }
    // The history records every CG solve of the matrix-free run (forward and backward).
    let last = b.history.last().unwrap();
    assert_eq!(last.solves.len(), 2, "{:?}", last.solves);
    assert!(last.solves.iter().all(|s| s.residual <= 1e-11));
    assert!(a.history.last().unwrap().solves.is_empty());
    let nmse = a.history.last().unwrap().variables[0].mse.unwrap();
    assert!(
        nmse < 0.1,
        "the problem is not trivial but solvable: {nmse}"
    );
}

#[test]
fn a_solve_that_does_not_converge_is_a_named_error() {
    let mut rng = rng_from_seed(30);
    let (n0, n1) = (80, 50);
    let x = gaussian_w(n1, n0, &mut rng);
    let op: Arc<dyn LinearOperator> = Arc::new(DenseOperator::new(x).unwrap());
    let layer = Arc::new(
        OperatorLayer::new(
            op,
            None,
            None,
            D,
            CgOptions {
                tolerance: 1e-14,
                max_iterations: 2,
                form: CgForm::Primal,
            },
            &LawOptions::default(),
        )
        .unwrap(),
    );
    let prior = Arc::new(GaussianPrior::isotropic(D, 1.0).unwrap());
    let out = Arc::new(
        AwgnOutput::new(
            Mat::zeros(n1, D),
            Spd::scaled_identity(D, 100.0).unwrap(),
            None,
        )
        .unwrap(),
    );
    let net = Network::new(prior, n0, vec![layer], out).unwrap();
    let (_, net) = net.sample(&mut rng).unwrap();
    let e = Solver::new(SolverConfig::default())
        .unwrap()
        .run(&net, None)
        .unwrap_err()
        .to_string();
    println!("{e}");
    for part in [
        "iteration 0",
        "layer 1",
        "did not reach the tolerance",
        "conjugate gradients",
    ] {
        assert!(e.contains(part), "{e:?} lacks {part:?}");
    }
    assert!(CgOptions {
        tolerance: 0.0,
        ..Default::default()
    }
    .validate()
    .is_err());
}

fn data_file(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

#[test]
fn scipy_npz_files_are_read_and_round_trip() {
    use mlmatvamp::io::{read_matrix, read_npz_csr, write_npz_csr};
    let dense = read_matrix(&data_file("sparse_dense.npy")).unwrap().data;
    // Written by scipy.sparse.save_npz: compressed CSR with int32 indices, and uncompressed CSC.
    for name in ["sparse_csr.npz", "sparse_csc.npz"] {
        let csr = read_npz_csr(&data_file(name)).unwrap();
        assert_eq!(csr.shape(), (6, 8), "{name}");
        let op = SparseOperator::new(csr.clone());
        let eye = Mat::<f64>::identity(8, 8);
        let back = mlmatvamp::operator::apply(&op, eye.as_ref()).unwrap();
        assert_eq!(back, dense, "{name}");
        // Our writer: read back to the same matrix.
        let path =
            std::env::temp_dir().join(format!("mlmatvamp-npz-{}-{name}", std::process::id()));
        write_npz_csr(&path, &csr).unwrap();
        assert_eq!(read_npz_csr(&path).unwrap(), csr);
        let _ = std::fs::remove_file(path);
    }
}

#[test]
fn malformed_npz_files_are_named_errors() {
    use mlmatvamp::io::{read_npz_csr, write_npz_csr};
    let dir = std::env::temp_dir().join(format!("mlmatvamp-badnpz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // Not a zip at all.
    let p = dir.join("not.npz");
    std::fs::write(&p, b"hello").unwrap();
    let e = read_npz_csr(&p).unwrap_err().to_string();
    assert!(e.contains("not an .npz") && e.contains("not.npz"), "{e}");
    // Missing file.
    let e = read_npz_csr(&dir.join("missing.npz"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("missing.npz"), "{e}");
    // A zip without the sparse arrays: write a valid one, then one with out-of-range indices
    // through the raw writer of a hand-made matrix is impossible (Csr validates), so corrupt
    // a valid archive's `indices` by writing a matrix and patching it in a zip of our own.
    let good = mlmatvamp::operator::sparse::Csr::new(
        "A",
        (2, 3),
        vec![0, 1, 2],
        vec![0, 2],
        vec![1.0, 2.0],
    )
    .unwrap();
    let p = dir.join("good.npz");
    write_npz_csr(&p, &good).unwrap();
    assert_eq!(read_npz_csr(&p).unwrap(), good);
    // The index checks themselves (unsorted, out of range, bad indptr) are the CSR validator's,
    // exercised on arrays a file could hold:
    let e = mlmatvamp::operator::sparse::Csr::new(
        "W",
        (2, 3),
        vec![0, 2, 2],
        vec![2, 1],
        vec![1.0, 1.0],
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("not strictly increasing") && e.contains("sort_indices"),
        "{e}"
    );
    let e = mlmatvamp::operator::sparse::Csr::new(
        "W",
        (2, 3),
        vec![0, 1, 2],
        vec![0, 5],
        vec![1.0, 1.0],
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("column index 5, out of range for 3 columns"),
        "{e}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// SE vs simulation with a subsampled DCT at `n_0 = 2^16` (row-sparse prior, `d = 3`, the
/// orthogonal-rows law in closed form for both): the per-iteration NMSE of `Ẑ_0`, averaged over
/// seeds (each with its own DCT rows and signs, truth and noise), within 2% of the SE.
#[test]
fn dct_state_evolution_matches_simulation() {
    let (n0, n1, d) = (1usize << 16, 1usize << 15, 3);
    let slab = DMat::from_row_slice(3, 3, &[1.0, 0.5, 0.2, 0.5, 1.0, 0.4, 0.2, 0.4, 1.0]);
    let noise = Spd::new(
        "N",
        DMat::from_row_slice(3, 3, &[50.0, 10.0, 0.0, 10.0, 50.0, 5.0, 0.0, 5.0, 40.0]) / 3.0,
        Some(3),
    )
    .unwrap();
    let prior = Arc::new(BernoulliGaussianPrior::new(0.2, vec![0.0; 3], slab).unwrap());
    let iters = 8;
    let config = SolverConfig {
        iterations: iters,
        ..Default::default()
    };
    let solver = Solver::new(config.clone()).unwrap();
    let network = |seed: u64| {
        let dct: Arc<dyn LinearOperator> = Arc::new(SubsampledDct::new(n1, n0, 1.0, seed).unwrap());
        let layer = Arc::new(
            OperatorLayer::new(
                dct,
                None,
                None,
                d,
                CgOptions::default(),
                &LawOptions::default(),
            )
            .unwrap(),
        );
        let out = Arc::new(AwgnOutput::new(Mat::zeros(n1, d), noise.clone(), None).unwrap());
        Network::new(prior.clone(), n0, vec![layer], out).unwrap()
    };
    let seeds = 8;
    let mut per_seed = Vec::new();
    for seed in 0..seeds {
        let model = network(seed);
        let (truth, net) = model.sample(&mut rng_from_seed(500 + seed)).unwrap();
        let sol = solver.run(&net, Some(&truth)).unwrap();
        let z2 = truth[0].norm_l2().powi(2) / n0 as f64;
        per_seed.push(
            sol.history
                .iter()
                .map(|r| r.variables[0].mse.unwrap() / z2)
                .collect::<Vec<f64>>(),
        );
    }
    let se =
        mlmatvamp::se::StateEvolution::new(mlmatvamp::se::SeConfig::from_solver(&config)).unwrap();
    let (pred, _) = se.run(&network(0), None).unwrap();
    for k in 0..iters {
        let v: Vec<f64> = per_seed.iter().map(|p| p[k]).collect();
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        let sd = (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (v.len() - 1) as f64).sqrt();
        let s = pred[k].variables[0].se_nmse;
        let gap = (s - mean) / mean;
        println!(
            "k = {k}: simulation {mean:.5} (± {:.2}%), SE {s:.5} ({:+.2}%)",
            100.0 * sd / (v.len() as f64).sqrt() / mean,
            100.0 * gap
        );
        assert!(
            gap.abs() < 0.02,
            "iteration {k}: SE {s} vs simulation {mean}"
        );
    }
    assert!(pred[iters - 1].variables[0].se_nmse < 0.3 * pred[0].variables[0].se_nmse);
}
