//! Sketching throughput of sketched clustering (docs/sketched-clustering.md#throughput), in
//! point-frequency pairs per second: the kernel `Σ_t e^{i w_mᵀ(x_t − s)}` on an in-memory
//! mixture (`T x p`, generated first and not timed) at `M` frequencies, on 1 thread and on all
//! of rayon's threads, best of `REPEATS` runs.
//!
//! ```sh
//! cargo run --release -p mlmatvamp --example sketch_throughput -- [T] [p] [M]
//! ```
//!
//! Defaults: `T = 2^21`, `p = 10`, `M = 500` (`M/(K p) = 5` at `K = 10`). The issue's goal is
//! `10^8` pairs per second on 2 cores at `p = 10`.

use mlmatvamp::apps::cluster::MixtureConfig;
use mlmatvamp::apps::sketch::{sketch_block, Frequencies};
use std::time::Instant;

const REPEATS: usize = 3;

fn main() -> mlmatvamp::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize, default: usize| -> usize {
        args.get(i).and_then(|s| s.parse().ok()).unwrap_or(default)
    };
    let (t, p, m) = (arg(1, 1 << 21), arg(2, 10), arg(3, 500));
    let mix = MixtureConfig {
        k: 10,
        p,
        sigma2: 1.0,
        separation: 1.0,
    };
    let c = mix.centroids(0);
    let (x, _) = mix.points(c.as_ref(), 0, 0, t);
    let freqs = Frequencies::draw(m, p, 1.0, 1)?;
    let all = rayon::current_num_threads();
    let mut threads = vec![1];
    if all > 1 {
        threads.push(all);
    }
    println!(
        "T = {t}, p = {p}, M = {m}: {:.3e} point-frequency pairs",
        (t * m) as f64
    );
    for n in threads {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build()
            .map_err(|e| mlmatvamp::Error::invalid("threads", e.to_string()))?;
        let mut best = f64::INFINITY;
        for _ in 0..REPEATS {
            let t0 = Instant::now();
            let s = pool.install(|| sketch_block(x.as_ref(), &freqs))?;
            best = best.min(t0.elapsed().as_secs_f64());
            assert_eq!(s.count, t as u64);
        }
        println!(
            "{n} thread(s): {best:.3} s, {:.3e} pairs per second ({:.3e} points per second)",
            (t * m) as f64 / best,
            t as f64 / best
        );
    }
    Ok(())
}
