//! The sketched-clustering commands (paper §2.2; docs/sketched-clustering.md): `sketch`,
//! `cluster` and `sketched-clustering`, thin wrappers over `mlmatvamp::experiments::sketch_files`
//! and `mlmatvamp::experiments::sketched_clustering`.

use anyhow::{anyhow, bail, Result};
use clap::Args;
use mlmatvamp::apps::cluster::ClusterConfig;
use mlmatvamp::denoise::Estimator;
use mlmatvamp::experiments::sketch_files::{cluster_dir, merge_dirs, sketch_file, SketchOptions};
use mlmatvamp::experiments::sketched_clustering::{run, SketchedClusteringConfig};
use mlmatvamp_cli::say;
use std::path::PathBuf;

/// Options of `mlmatvamp sketch`.
#[derive(Args, Debug)]
pub struct SketchArgs {
    /// The data (`.npy` float64/float32 in C order, or numeric `.csv`), one point per row.
    #[arg(required_unless_present = "merge")]
    data: Option<PathBuf>,
    /// Merge two sketch directories (made with the same --seed, --m and --sigma2) instead.
    #[arg(long, num_args = 2, value_names = ["A", "B"], conflicts_with = "data")]
    merge: Option<Vec<PathBuf>>,
    /// Output directory: sketch.npy, frequencies.npy, sketch.json.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Number of clusters K (sizes the default M = 5 K p and the σ² heuristic).
    #[arg(long, default_value_t = 10)]
    k: usize,
    /// Number of frequencies M (default 5 K p).
    #[arg(long)]
    m: Option<usize>,
    /// Within-cluster variance σ² of the frequency law (default: estimated on the first chunk).
    #[arg(long)]
    sigma2: Option<f64>,
    /// Seed of the frequencies.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Rows read per chunk.
    #[arg(long, default_value_t = 65536)]
    chunk: usize,
}

/// `mlmatvamp sketch`.
pub fn sketch(args: &SketchArgs, quiet: bool) -> Result<()> {
    let dir = if let Some(pair) = &args.merge {
        merge_dirs(&pair[0], &pair[1], &args.out).map_err(|e| anyhow!("{e}"))?
    } else {
        let data = args
            .data
            .as_ref()
            .ok_or_else(|| anyhow!("give a data file or --merge A B"))?;
        let opts = SketchOptions {
            k: args.k,
            m: args.m,
            sigma2: args.sigma2,
            seed: args.seed,
            chunk: args.chunk,
        };
        sketch_file(data, &args.out, &opts).map_err(|e| anyhow!("{e}"))?
    };
    if !quiet {
        let m = &dir.meta;
        say!(
            "sketch of T = {} points in R^{} at M = {} frequencies (σ² = {:.4e}{}) in {:.3} s: {:.3e} point-frequency pairs per second; outputs in {}",
            m.count,
            m.p,
            m.m,
            m.sigma2,
            if m.sigma2_estimated { ", estimated" } else { "" },
            m.sketch_seconds,
            m.pairs_per_second,
            args.out.display()
        );
    }
    Ok(())
}

/// Options of `mlmatvamp cluster`.
#[derive(Args, Debug)]
pub struct ClusterArgs {
    /// A sketch directory written by `mlmatvamp sketch`.
    sketch: PathBuf,
    /// Output directory: centroids.npy (K x p), weights.npy, cluster.json.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Number of clusters K (default: the one the sketch was made for).
    #[arg(long)]
    k: Option<usize>,
    /// Output denoiser: map (default) or mmse (the SHyGAMP-style approximation, slower).
    #[arg(long, default_value = "map")]
    estimator: String,
    /// Seeded random restarts (the best sketch residual is kept).
    #[arg(long)]
    restarts: Option<usize>,
    /// Algorithm-1 iterations per round.
    #[arg(long)]
    iterations: Option<usize>,
    /// Output noise variance per real component (default: from the sketch).
    #[arg(long)]
    noise: Option<f64>,
    /// σ² of the gains (default: the sketch's).
    #[arg(long)]
    sigma2: Option<f64>,
    /// Base seed of the restarts.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

fn estimator(s: &str) -> Result<Estimator> {
    match s {
        "map" => Ok(Estimator::Map),
        "mmse" => Ok(Estimator::Mmse),
        other => bail!("unknown estimator `{other}` (expected map or mmse)"),
    }
}

/// `mlmatvamp cluster`.
pub fn cluster(args: &ClusterArgs, quiet: bool) -> Result<()> {
    let k = match args.k {
        Some(k) => k,
        None => {
            mlmatvamp::experiments::sketch_files::read_sketch_dir(&args.sketch)
                .map_err(|e| anyhow!("{e}"))?
                .meta
                .k
        }
    };
    let mut c = ClusterConfig {
        k,
        estimator: estimator(&args.estimator)?,
        seed: args.seed,
        noise: args.noise,
        sigma2: args.sigma2,
        ..Default::default()
    };
    if let Some(r) = args.restarts {
        c.restarts = r;
    }
    if let Some(i) = args.iterations {
        c.iterations = i;
    }
    let report = cluster_dir(&args.sketch, &args.out, &c).map_err(|e| anyhow!("{e}"))?;
    if !quiet {
        say!(
            "{} centroids in R^{} from the sketch in {:.2} s (best of {} restarts, relative sketch residual {:.4}); weights {:?}; outputs in {}",
            report.centroids.nrows(),
            report.centroids.ncols(),
            report.decode_seconds,
            report.restarts.len(),
            report.residual,
            report
                .weights
                .iter()
                .map(|w| (w * 1000.0).round() / 1000.0)
                .collect::<Vec<_>>(),
            args.out.display()
        );
    }
    Ok(())
}

/// Options of `mlmatvamp sketched-clustering` (defaults: K = 10, p = 10, M/(Kp) = 1, 2, 3, 5,
/// 10, T = 10^5, 5 seeds, timing at T = 10^4, 10^5, 10^6, iris).
#[derive(Args, Debug)]
pub struct SketchedClusteringArgs {
    /// Output directory.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Dimensions p, comma separated.
    #[arg(long, value_delimiter = ',')]
    ps: Option<Vec<usize>>,
    /// Sketch lengths M/(K p), comma separated.
    #[arg(long, value_delimiter = ',')]
    ratios: Option<Vec<f64>>,
    /// Points T of the relative-SSE sweep.
    #[arg(long)]
    t: Option<u64>,
    /// Seeds per point.
    #[arg(long)]
    seeds: Option<usize>,
    /// T values of the timing sweep, comma separated (e.g. 100000,1000000,10000000).
    #[arg(long, value_delimiter = ',')]
    timing_t: Option<Vec<u64>>,
    /// M/(K p) of the timing sweep.
    #[arg(long)]
    timing_ratio: Option<f64>,
    /// Restarts of the recovery.
    #[arg(long)]
    restarts: Option<usize>,
    /// k-means++ runs of the baseline.
    #[arg(long)]
    kmeans_runs: Option<usize>,
    /// Largest T at which the data are kept in memory for k-means++ (above: relative SSE
    /// against the true centroids).
    #[arg(long)]
    kmeans_max_t: Option<u64>,
    /// Output denoiser: map or mmse.
    #[arg(long, default_value = "map")]
    estimator: String,
    /// Skip the iris experiment.
    #[arg(long)]
    no_iris: bool,
    /// Base seed.
    #[arg(long)]
    seed: Option<u64>,
}

/// `mlmatvamp sketched-clustering`.
pub fn sketched_clustering(args: &SketchedClusteringArgs, quiet: bool) -> Result<()> {
    let mut c = SketchedClusteringConfig::default();
    macro_rules! set {
        ($field:ident, $arg:expr) => {
            if let Some(v) = $arg.clone() {
                c.$field = v;
            }
        };
    }
    set!(ps, args.ps);
    set!(ratios, args.ratios);
    set!(t, args.t);
    set!(seeds, args.seeds);
    set!(timing_t, args.timing_t);
    set!(timing_ratio, args.timing_ratio);
    set!(kmeans_runs, args.kmeans_runs);
    set!(kmeans_max_t, args.kmeans_max_t);
    set!(seed, args.seed);
    if let Some(r) = args.restarts {
        c.cluster.restarts = r;
    }
    c.cluster.estimator = estimator(&args.estimator)?;
    c.iris = !args.no_iris;
    let report = run(&c, &args.out, &mlmatvamp_cli::progress::Bar::new(quiet))
        .map_err(|e| anyhow!("{e}"))?;
    mlmatvamp_cli::render::save_figures(&report.figures).map_err(|e| anyhow!("{e}"))?;
    if !quiet {
        say!(
            "{:>4} {:>7} {:>6}  {:>28} {:>8} {:>10}",
            "p",
            "M/(Kp)",
            "M",
            "relative SSE median [IQR]",
            "success",
            "decode s"
        );
        for s in &report.summaries {
            say!(
                "{:>4} {:>7} {:>6}  {:>28} {:>8.2} {:>10.2}",
                s.p,
                s.ratio,
                s.m,
                format!(
                    "{:.4} [{:.4}, {:.4}]",
                    s.relative_sse.median, s.relative_sse.q25, s.relative_sse.q75
                ),
                s.success_rate,
                s.decode_seconds.median
            );
        }
        for t in &report.timing {
            say!(
                "T = {:>9}: sketch {:.2} s ({:.2e} pairs/s), decode {:.2} s, k-means++ {:.2} s, relative SSE {:.4}",
                t.t, t.sketch_seconds, t.pairs_per_second, t.decode_seconds, t.kmeans_seconds, t.relative_sse
            );
        }
        if let Some(i) = &report.iris {
            say!(
                "iris (K = 3, M = {}, {} seeds): ARI sketched median {:.3} (per seed {:?}), k-means++ {:.3}; relative SSE per seed {:?}",
                i.m,
                i.ari_sketch.len(),
                i.ari_sketch_median,
                i.ari_sketch.iter().map(|a| (a * 1000.0).round() / 1000.0).collect::<Vec<_>>(),
                i.ari_kmeans,
                i.relative_sse.iter().map(|a| (a * 1000.0).round() / 1000.0).collect::<Vec<_>>()
            );
        }
        for f in &report.failures {
            say!("failed: {f}");
        }
        say!(
            "{:.1} s; outputs in {}",
            report.meta.seconds,
            args.out.display()
        );
    }
    Ok(())
}
