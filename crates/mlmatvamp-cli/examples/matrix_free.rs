//! Benchmarks of the matrix-free linear layer (`docs/matrix-free.md`), each case in its own
//! process so that its peak memory is its own:
//!
//! ```text
//! cargo run --release -p mlmatvamp-cli --example matrix_free -- mmv [n0] [n1] [iterations] [svd]
//! cargo run --release -p mlmatvamp-cli --example matrix_free -- dct [log2_n0] [iterations]
//! cargo run --release -p mlmatvamp-cli --example matrix_free -- scaling OUT_DIR
//! ```
//!
//! * `mmv`: multi-task regression with a dense Gaussian design (row-sparse prior, d = 3), the CG
//!   layer (stochastic-Lanczos law) and, with `svd`, the SVD layer on the same data; prints and
//!   writes JSON with wall times, final NMSE and peak memory.
//! * `dct`: the same prior through a subsampled DCT (`n_1 = n_0/2`, d = 4), closed form.
//! * `scaling`: seconds per iteration against `n_0` from `10^4` to `10^6` for a DCT and a sparse
//!   design with 10 nonzeros per row; writes `scaling.json`, `scaling.csv` and a log-log plot.

use faer::Mat;
use mlmatvamp::denoise::{LawOptions, OperatorLayer};
use mlmatvamp::figure::{Figure, Panel, Series};
use mlmatvamp::operator::{
    CgOptions, DenseOperator, LinearOperator, SparseOperator, SubsampledDct,
};
use mlmatvamp::prelude::*;
use serde_json::json;
use std::sync::Arc;
use std::time::Instant;

/// Peak resident memory of this process in MB (Linux `VmHWM`).
fn peak_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn slab(d: usize) -> DMat {
    DMat::from_fn(d, d, |i, j| if i == j { 1.0 } else { 0.3 })
}

/// Row-sparse prior → `layer` → AWGN at 30 dB per entry; returns the truth and the network.
fn problem(
    layer: Arc<dyn Layer>,
    n0: usize,
    n1: usize,
    d: usize,
    seed: u64,
) -> (Vec<Mat<f64>>, Network) {
    let prior = Arc::new(BernoulliGaussianPrior::new(0.1, vec![0.0; d], slab(d)).unwrap());
    let out = Arc::new(
        AwgnOutput::new(
            Mat::zeros(n1, d),
            Spd::scaled_identity(d, 1e3).unwrap(),
            None,
        )
        .unwrap(),
    );
    let model = Network::new(prior, n0, vec![layer], out).unwrap();
    model.sample(&mut rng_from_seed(seed)).unwrap()
}

fn run(net: &Network, truth: &[Mat<f64>], iterations: usize) -> (Vec<f64>, Vec<f64>, f64) {
    let z2 = truth[0].norm_l2().powi(2) / truth[0].nrows() as f64;
    let start = Instant::now();
    let sol = Solver::new(SolverConfig {
        iterations,
        ..Default::default()
    })
    .unwrap()
    .run(net, Some(truth))
    .unwrap();
    let nmse = sol
        .history
        .iter()
        .map(|r| r.variables[0].mse.unwrap() / z2)
        .collect();
    let cg = sol
        .history
        .iter()
        .map(|r| r.solves.iter().map(|s| s.iterations as f64).sum())
        .collect();
    (nmse, cg, start.elapsed().as_secs_f64())
}

/// The CG options of the benchmarks (`MF_FORM=primal|dual` overrides the form).
fn cg_options() -> CgOptions {
    let form = match std::env::var("MF_FORM").as_deref() {
        Ok("primal") => mlmatvamp::operator::CgForm::Primal,
        Ok("dual") => mlmatvamp::operator::CgForm::Dual,
        _ => mlmatvamp::operator::CgForm::Auto,
    };
    CgOptions {
        form,
        ..Default::default()
    }
}

fn mmv(args: &[String]) {
    let n0: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(20_000);
    let n1: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(12_000);
    let iterations: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(10);
    let with_svd = args.iter().any(|a| a == "svd");
    let d = 3;
    let t0 = Instant::now();
    let w = standard_normal(n1, n0, &mut rng_from_seed(1)) * faer::Scale(1.0 / (n0 as f64).sqrt());
    let draw = t0.elapsed().as_secs_f64();
    let op: Arc<dyn LinearOperator> = Arc::new(DenseOperator::new(w.clone()).unwrap());
    let t1 = Instant::now();
    let layer = Arc::new(
        OperatorLayer::new(op, None, None, d, cg_options(), &LawOptions::default()).unwrap(),
    );
    let law = t1.elapsed().as_secs_f64();
    let (truth, net) = problem(layer, n0, n1, d, 7);
    let (nmse_cg, cg_its, solve_cg) = run(&net, &truth, iterations);
    println!(
        "CG: law {law:.1} s, {iterations} iterations {solve_cg:.1} s, final NMSE {:.5}, CG iterations per VAMP iteration {:?}",
        nmse_cg.last().unwrap(),
        cg_its
    );
    let mut out = json!({
        "case": "mmv", "n0": n0, "n1": n1, "d": d, "iterations": iterations,
        "draw_seconds": draw,
        "cg": { "law_seconds": law, "solve_seconds": solve_cg, "total_seconds": law + solve_cg,
                "nmse": nmse_cg, "cg_iterations": cg_its },
    });
    if with_svd {
        let t2 = Instant::now();
        let svd = Arc::new(LinearLayer::new(w.as_ref(), None, None, d).unwrap());
        let svd_s = t2.elapsed().as_secs_f64();
        let net_svd = net.with_output(net.output().clone()).unwrap();
        let net_svd = Network::new(
            net_svd.prior().clone(),
            n0,
            vec![svd],
            net_svd.output().clone(),
        )
        .unwrap();
        let (nmse_svd, _, solve_svd) = run(&net_svd, &truth, iterations);
        println!(
            "SVD: {svd_s:.1} s, {iterations} iterations {solve_svd:.1} s, final NMSE {:.5}; speed-up {:.1}x, NMSE difference {:+.3}%",
            nmse_svd.last().unwrap(),
            (svd_s + solve_svd) / (law + solve_cg),
            100.0 * (nmse_cg.last().unwrap() / nmse_svd.last().unwrap() - 1.0)
        );
        out["svd"] = json!({ "svd_seconds": svd_s, "solve_seconds": solve_svd,
                             "total_seconds": svd_s + solve_svd, "nmse": nmse_svd });
    }
    out["peak_mb"] = json!(peak_mb());
    println!("{}", serde_json::to_string_pretty(&out).unwrap());
}

fn dct(args: &[String]) {
    let log2: u32 = args.first().and_then(|a| a.parse().ok()).unwrap_or(20);
    let iterations: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(20);
    let (n0, d) = (1usize << log2, 4);
    let n1 = n0 / 2;
    let start = Instant::now();
    let op: Arc<dyn LinearOperator> = Arc::new(SubsampledDct::new(n1, n0, 1.0, 3).unwrap());
    let layer = Arc::new(
        OperatorLayer::new(op, None, None, d, cg_options(), &LawOptions::default()).unwrap(),
    );
    let (truth, net) = problem(layer, n0, n1, d, 5);
    let setup = start.elapsed().as_secs_f64();
    let (nmse, _, solve) = run(&net, &truth, iterations);
    let out = json!({
        "case": "dct", "n0": n0, "n1": n1, "d": d, "iterations": iterations,
        "setup_seconds": setup, "solve_seconds": solve, "total_seconds": start.elapsed().as_secs_f64(),
        "nmse": nmse, "peak_mb": peak_mb(),
    });
    println!("{}", serde_json::to_string_pretty(&out).unwrap());
}

/// A sparse `n1 x n0` design with `k` nonzeros per row (seeded columns, ±1/√k values).
fn sparse_design(n1: usize, n0: usize, k: usize, seed: u64) -> SparseOperator {
    use rand::RngExt;
    let mut rng = rng_from_seed(seed);
    let (mut indptr, mut indices, mut data) = (vec![0], Vec::new(), Vec::new());
    let v = 1.0 / (k as f64).sqrt();
    for _ in 0..n1 {
        let mut cols: Vec<usize> = (0..k).map(|_| rng.random_range(0..n0)).collect();
        cols.sort_unstable();
        cols.dedup();
        for c in cols {
            indices.push(c);
            data.push(if rng.random::<bool>() { v } else { -v });
        }
        indptr.push(indices.len());
    }
    SparseOperator::from_csr("design", (n1, n0), indptr, indices, data).unwrap()
}

fn scaling(args: &[String]) {
    let out_dir = std::path::PathBuf::from(args.first().map_or("out/matrix-free", String::as_str));
    std::fs::create_dir_all(&out_dir).unwrap();
    let d = 4;
    let iterations = 5;
    // `MF_SIZES=10000,100000` restricts the sizes (for a quick look).
    let sizes: Vec<usize> = std::env::var("MF_SIZES")
        .ok()
        .map(|v| v.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![10_000, 30_000, 100_000, 300_000, 1_000_000]);
    let mut rows = Vec::new();
    for kind in ["dct", "sparse"] {
        for &n0 in &sizes {
            let n1 = n0 / 2;
            let op: Arc<dyn LinearOperator> = match kind {
                "dct" => Arc::new(SubsampledDct::new(n1, n0, 1.0, 3).unwrap()),
                _ => Arc::new(sparse_design(n1, n0, 10, 3)),
            };
            let t = Instant::now();
            let layer = Arc::new(
                OperatorLayer::new(op, None, None, d, cg_options(), &LawOptions::default())
                    .unwrap(),
            );
            let law = t.elapsed().as_secs_f64();
            let (truth, net) = problem(layer, n0, n1, d, 5);
            let (nmse, cg, solve) = run(&net, &truth, iterations);
            let per = solve / iterations as f64;
            println!(
                "{kind} n0 = {n0}: {per:.4} s per iteration (law {law:.2} s), CG iterations {cg:?}, final NMSE {:.4}",
                nmse.last().unwrap()
            );
            rows.push(json!({ "operator": kind, "n0": n0, "n1": n1, "d": d,
                "seconds_per_iteration": per, "law_seconds": law,
                "cg_iterations": cg, "nmse": nmse }));
        }
    }
    let json = json!({ "iterations": iterations, "d": d, "rows": rows });
    std::fs::write(
        out_dir.join("scaling.json"),
        serde_json::to_string_pretty(&json).unwrap(),
    )
    .unwrap();
    let mut csv = String::from("operator,n0,seconds_per_iteration\n");
    for r in &rows {
        csv += &format!(
            "{},{},{}\n",
            r["operator"].as_str().unwrap(),
            r["n0"],
            r["seconds_per_iteration"]
        );
    }
    std::fs::write(out_dir.join("scaling.csv"), csv).unwrap();
    let series = |kind: &str, color: usize| {
        let pts: Vec<&serde_json::Value> = rows.iter().filter(|r| r["operator"] == kind).collect();
        Series {
            label: match kind {
                "dct" => "subsampled DCT (closed form)".into(),
                _ => "sparse, 10 nonzeros per row (CG)".into(),
            },
            x: pts.iter().map(|r| r["n0"].as_f64().unwrap()).collect(),
            y: pts
                .iter()
                .map(|r| r["seconds_per_iteration"].as_f64().unwrap())
                .collect(),
            color: Some(color),
            ..Default::default()
        }
    };
    let first = |kind: &str| {
        rows.iter()
            .find(|r| r["operator"] == kind)
            .map(|r| r["seconds_per_iteration"].as_f64().unwrap())
            .unwrap()
    };
    let n_first = sizes[0] as f64;
    let sizes = &sizes;
    let linear = Series {
        label: "slope 1 (cost ∝ n)".into(),
        x: sizes.iter().map(|&n| n as f64).collect(),
        y: sizes
            .iter()
            .map(|&n| first("sparse") * n as f64 / n_first)
            .collect(),
        dashed: true,
        color: Some(5),
        ..Default::default()
    };
    let _ = first("dct");
    let fig = Figure::new(vec![Panel {
        title: format!(
            "ML-Mat-VAMP, matrix-free layer: seconds per iteration (d = {d}, n_1 = n_0/2)"
        ),
        x_label: "n_0".into(),
        y_label: "seconds per iteration".into(),
        series: vec![series("dct", 0), series("sparse", 1), linear],
        log_x: true,
        log_y: true,
        ..Default::default()
    }]);
    let (png, _) = mlmatvamp_cli::render::save(&fig, &out_dir.join("scaling")).unwrap();
    println!("wrote {}", png.display());
}

fn main() {
    mlmatvamp_cli::tune_allocator();
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("mmv") => mmv(&args[1..]),
        Some("dct") => dct(&args[1..]),
        Some("scaling") => scaling(&args[1..]),
        _ => eprintln!("usage: matrix_free mmv [n0] [n1] [iterations] [svd] | dct [log2_n0] [iterations] | scaling OUT_DIR"),
    }
}
