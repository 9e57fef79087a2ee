//! The thin products of the linear layer (`V X` and `Vᵀ R`, `V` of `n x r`, `d` columns)
//! against one streaming pass over `V`: faer's sequential kernel and ours (`matmul_into`, the
//! streaming kernels of `rows/thin.rs`), on 1 and 2 threads, best of 15. The bandwidth is a
//! sum over 1 GiB with eight independent accumulators (`stream_sum`).
//!
//! `cargo run --release -p mlmatvamp --example thin_product -- [n] [r] [d]` (defaults: vampyre's
//! `V` of 4096 x 2048, `d = 1`).
use faer::Mat;
use rayon::prelude::*;
use std::time::Instant;

fn best(mut f: impl FnMut()) -> f64 {
    let mut best = f64::INFINITY;
    for _ in 0..15 {
        let t = Instant::now();
        f();
        best = best.min(t.elapsed().as_secs_f64());
    }
    best
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("sizes are integers"))
        .collect();
    let n = *args.first().unwrap_or(&4096);
    let r = *args.get(1).unwrap_or(&2048);
    let d = *args.get(2).unwrap_or(&1);
    let v = Mat::<f64>::from_fn(n, r, |i, j| ((i * 7 + j * 13) % 17) as f64 - 8.0);
    let x = Mat::<f64>::from_fn(r, d, |i, j| ((i + j) % 5) as f64);
    let rr = Mat::<f64>::from_fn(n, d, |i, j| ((i + 3 * j) % 7) as f64);
    let mut out_n = Mat::<f64>::zeros(n, d);
    let mut out_r = Mat::<f64>::zeros(r, d);
    let gb = (n * r * 8) as f64 / 1e9;
    let data = vec![1.0f64; 1 << 27];
    println!("V: {n} x {r}, d = {d}; GB/s = bytes of V / time");
    for threads in [1usize, 2] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("pool");
        pool.install(|| {
            let t = best(|| {
                std::hint::black_box(
                    data.par_chunks(1 << 16)
                        .map(mlmatvamp::stream_sum)
                        .sum::<f64>(),
                );
            });
            println!(
                "{threads} thread(s): streaming read {:.1} GB/s",
                (data.len() * 8) as f64 / t / 1e9
            );
            if threads == 1 {
                let t = best(|| {
                    faer::linalg::matmul::matmul(
                        out_n.as_mut(),
                        faer::Accum::Replace,
                        v.as_ref(),
                        x.as_ref(),
                        1.0,
                        faer::Par::Seq,
                    )
                });
                println!("  faer V X   : {:8.3} ms  {:5.1} GB/s", t * 1e3, gb / t);
                let t = best(|| {
                    faer::linalg::matmul::matmul(
                        out_r.as_mut(),
                        faer::Accum::Replace,
                        v.transpose(),
                        rr.as_ref(),
                        1.0,
                        faer::Par::Seq,
                    )
                });
                println!("  faer V^T R : {:8.3} ms  {:5.1} GB/s", t * 1e3, gb / t);
            }
            let t = best(|| mlmatvamp::matmul_into(out_n.as_mut(), v.as_ref(), x.as_ref()));
            println!("  ours V X   : {:8.3} ms  {:5.1} GB/s", t * 1e3, gb / t);
            let t = best(|| mlmatvamp::matmul_into(out_r.as_mut(), v.transpose(), rr.as_ref()));
            println!("  ours V^T R : {:8.3} ms  {:5.1} GB/s", t * 1e3, gb / t);
        });
    }
}
