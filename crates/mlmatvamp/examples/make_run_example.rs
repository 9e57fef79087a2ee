//! Regenerates the data files of the worked example in `examples/run/` (deterministically, from
//! a fixed seed), so that the `.npy`/`.csv` files in the repository are reproducible:
//!
//! ```text
//! cargo run --example make_run_example            # writes into examples/run/
//! cargo run --example make_run_example -- DIR     # writes into DIR
//! ```
//!
//! The problem (see `examples/run/config.toml`): `Z_0` (100 x 3) has rows `N(0, Σ_0)` with
//! correlated columns; `Z_1 = W_1 Z_0 + B_1` (noiseless) with `W_1` (150 x 100) i.i.d.
//! `N(0, 1/100)` and a bias row `b` added to every row; `Y = Z_1 + Ξ` with correlated noise rows
//! `N(0, N^{-1})`, and about 20% of the entries of `Y` missing (`M = 0`, `Y = NaN` there).
//!
//! All products are plain loops in a fixed order, so the files are identical from run to run.

use faer::Mat;
use mlmatvamp::denoise::{gaussian_rows, standard_normal};
use mlmatvamp::io::write_npy;
use mlmatvamp::rng_from_seed;
use mlmatvamp::spd::{DMat, Spd};
use rand::RngExt;
use std::io::Write;
use std::path::PathBuf;

const N0: usize = 100;
const N1: usize = 150;
const D: usize = 3;
const MISSING: f64 = 0.2;

fn main() -> anyhow::Result<()> {
    let dir = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/run"));
    std::fs::create_dir_all(&dir)?;
    let mut rng = rng_from_seed(2020);

    // These must match examples/run/config.toml.
    let sigma0 = DMat::from_row_slice(D, D, &[1.0, 0.3, 0.0, 0.3, 1.0, 0.0, 0.0, 0.0, 1.0]);
    let noise_precision =
        DMat::from_row_slice(D, D, &[100.0, 20.0, 0.0, 20.0, 100.0, 0.0, 0.0, 0.0, 50.0]);
    let bias = [0.5, -0.25, 1.0];

    let sigma0 = Spd::new("Σ_0", sigma0, Some(D))?;
    let z0 = gaussian_rows(N0, sigma0.cholesky_lower(), &mut rng);
    let w = standard_normal(N1, N0, &mut rng) * faer::Scale(1.0 / (N0 as f64).sqrt());
    let mut z1 = Mat::<f64>::zeros(N1, D);
    for i in 0..N1 {
        for j in 0..D {
            let mut s = bias[j];
            for k in 0..N0 {
                s += w[(i, k)] * z0[(k, j)];
            }
            z1[(i, j)] = s;
        }
    }
    let noise_cov = Spd::new("N", noise_precision, Some(D))?.inverse();
    let noise_cov = Spd::new("N^{-1}", noise_cov, Some(D))?;
    let xi = gaussian_rows(N1, noise_cov.cholesky_lower(), &mut rng);
    let mut y = Mat::<f64>::zeros(N1, D);
    let mut mask = Mat::<f64>::zeros(N1, D);
    for i in 0..N1 {
        for j in 0..D {
            let observed = rng.random::<f64>() >= MISSING;
            mask[(i, j)] = if observed { 1.0 } else { 0.0 };
            y[(i, j)] = if observed {
                z1[(i, j)] + xi[(i, j)]
            } else {
                f64::NAN
            };
        }
    }

    write_npy(&dir.join("W1.npy"), w.as_ref())?;
    write_npy(&dir.join("Y.npy"), y.as_ref())?;
    write_npy(&dir.join("M.npy"), mask.as_ref())?;
    write_npy(&dir.join("Z0.npy"), z0.as_ref())?;
    write_npy(&dir.join("Z1.npy"), z1.as_ref())?;
    // The bias as a CSV with a header row (one row, added to every row of Z_1).
    let mut f = std::fs::File::create(dir.join("B1.csv"))?;
    writeln!(f, "b_1,b_2,b_3")?;
    writeln!(f, "{},{},{}", bias[0], bias[1], bias[2])?;
    println!(
        "wrote W1.npy, B1.csv, Y.npy, M.npy, Z0.npy, Z1.npy to {}",
        dir.display()
    );
    Ok(())
}
