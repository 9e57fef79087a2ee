//! The sketched-clustering commands (docs/sketched-clustering.md): `sketch` on a `.npy` and a
//! CSV file (the same sketch), `sketch --merge` of two shards (the sketch of the union), `cluster`
//! (centroids near the truth), a small `sketched-clustering` run (its files and fields), and the
//! bad inputs with their messages (nothing written).

mod common;

use common::cli::{fails, json, ok, temp, text};
use faer::Mat;
use mlmatvamp::apps::cluster::{sse, MixtureConfig};

fn npy(path: &std::path::Path) -> Mat<f64> {
    mlmatvamp::io::read_npy(path).unwrap().data
}

#[test]
fn sketch_merge_and_cluster_from_files() {
    let dir = temp("files");
    let mix = MixtureConfig {
        k: 4,
        p: 3,
        sigma2: 1.0,
        separation: 1.0,
    };
    let c = mix.centroids(3);
    let (x, _) = mix.points(c.as_ref(), 3, 0, 20_000);
    let (data, csv) = (dir.join("x.npy"), dir.join("x.csv"));
    mlmatvamp::io::write_npy(&data, x.as_ref()).unwrap();
    mlmatvamp::io::write_csv(&csv, x.as_ref()).unwrap();
    let s = |f: &std::path::Path, out: &str| {
        let o = ok(&[
            "sketch",
            f.to_str().unwrap(),
            "--k",
            "4",
            "--seed",
            "5",
            "--chunk",
            "3000",
            "--out",
            dir.join(out).to_str().unwrap(),
        ]);
        text(&o.stdout)
    };
    let msg = s(&data, "s");
    assert!(
        msg.contains("T = 20000") && msg.contains("pairs per second"),
        "{msg}"
    );
    s(&csv, "s_csv");
    let y = npy(&dir.join("s/sketch.npy"));
    assert_eq!((y.nrows(), y.ncols()), (60, 2));
    assert_eq!(npy(&dir.join("s/frequencies.npy")).ncols(), 3);
    let meta = json(&dir.join("s/sketch.json"));
    assert_eq!(meta["count"], 20_000);
    assert_eq!(meta["sigma2_estimated"], true);
    let d = (&y - &npy(&dir.join("s_csv/sketch.npy"))).norm_max();
    assert!(d < 1e-13, "npy and csv sketches differ by {d}");
    // Two shards with the σ² of the whole (the same frequencies), merged.
    let sigma2 = meta["sigma2"].as_f64().unwrap().to_string();
    for (name, rows) in [("a", 0..7_000), ("b", 7_000..20_000)] {
        let f = dir.join(format!("{name}.npy"));
        mlmatvamp::io::write_npy(&f, x.as_ref().subrows(rows.start, rows.len())).unwrap();
        ok(&[
            "sketch",
            f.to_str().unwrap(),
            "--k",
            "4",
            "--seed",
            "5",
            "--sigma2",
            &sigma2,
            "--out",
            dir.join(format!("s_{name}")).to_str().unwrap(),
        ]);
    }
    ok(&[
        "sketch",
        "--merge",
        dir.join("s_a").to_str().unwrap(),
        dir.join("s_b").to_str().unwrap(),
        "--out",
        dir.join("s_ab").to_str().unwrap(),
    ]);
    let d = (&y - &npy(&dir.join("s_ab/sketch.npy"))).norm_max();
    assert!(d < 1e-13, "merged sketch differs by {d}");
    // Cluster.
    let out = ok(&[
        "cluster",
        dir.join("s").to_str().unwrap(),
        "--restarts",
        "3",
        "--out",
        dir.join("c").to_str().unwrap(),
    ]);
    assert!(
        text(&out.stdout).contains("4 centroids"),
        "{}",
        text(&out.stdout)
    );
    let cents = npy(&dir.join("c/centroids.npy"));
    assert_eq!((cents.nrows(), cents.ncols()), (4, 3));
    let ratio = sse(x.as_ref(), cents.as_ref()) / sse(x.as_ref(), c.as_ref());
    assert!(ratio < 1.02, "SSE ratio {ratio}");
    let rep = json(&dir.join("c/cluster.json"));
    assert_eq!(rep["restarts"].as_array().unwrap().len(), 3);
    assert!(!rep["history"].as_array().unwrap().is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sketched_clustering_experiment_writes_its_files() {
    let dir = temp("experiment");
    let out = ok(&[
        "sketched-clustering",
        "--out",
        dir.to_str().unwrap(),
        "--ps",
        "4",
        "--ratios",
        "5",
        "--t",
        "5000",
        "--seeds",
        "2",
        "--timing-t",
        "2000",
        "--restarts",
        "2",
        "--kmeans-runs",
        "2",
        "--kmeans-max-t",
        "4000",
    ]);
    let stdout = text(&out.stdout);
    assert!(stdout.contains("iris"), "{stdout}");
    for f in [
        "sketched_clustering.json",
        "sketched_clustering.csv",
        "sketched_clustering.png",
        "sketched_clustering.svg",
    ] {
        assert!(dir.join(f).exists(), "{f}");
    }
    let r = json(&dir.join("sketched_clustering.json"));
    assert_eq!(r["seeds"].as_array().unwrap().len(), 2);
    let s = &r["summaries"][0];
    assert_eq!(s["m"], 200);
    // Two seeds at T = 5000 in R^4 (K = 10, overlapping clusters): only the bookkeeping is
    // checked here; the accuracy is the library tests' and the experiment's business.
    assert!(
        s["relative_sse"]["median"].as_f64().unwrap().is_finite(),
        "{s}"
    );
    assert_eq!(s["relative_sse"]["values"].as_array().unwrap().len(), 2);
    // Per seed and ratio, the Algorithm-1 iterations of every restart that ran (each at least
    // 1 and at most 2 rounds of 100).
    for seed in r["seeds"].as_array().unwrap() {
        let its = seed["restart_iterations"][0].as_array().unwrap();
        assert_eq!(its.len() as u64, seed["restarts_run"][0].as_u64().unwrap());
        assert!(
            its.iter().all(|n| (1..=200).contains(&n.as_u64().unwrap())),
            "{seed}"
        );
    }
    // T = 5000 is above --kmeans-max-t: the sweep streamed its data and took the true centroids
    // as the baseline; the timing row (T = 2000) ran k-means++.
    assert_eq!(r["seeds"][0]["baseline"], "true centroids");
    assert!(r["seeds"][0]["kmeans_sse"].is_null());
    assert_eq!(r["timing"][0]["baseline"], "k-means++");
    assert!(r["timing"][0]["kmeans_seconds"].as_f64().unwrap() >= 0.0);
    assert!(r["timing"][0]["pairs_per_second"].as_f64().unwrap() > 0.0);
    assert!(
        r["iris"]["ari_sketch_median"].as_f64().unwrap() > 0.5,
        "{}",
        r["iris"]
    );
    assert_eq!(r["meta"]["command"], "sketched-clustering");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_inputs_fail_cleanly() {
    let dir = temp("bad");
    let d = |n: &str| dir.join(n).to_str().unwrap().to_string();
    std::fs::write(dir.join("ragged.csv"), "1,2,3\n4,5\n").unwrap();
    fails(
        &["sketch", &d("ragged.csv"), "--k", "1", "--out", &d("o")],
        "ragged CSV: line 2 has 2 fields",
    );
    std::fs::write(dir.join("nan.csv"), "1,2\n3,nan\n5,6\n").unwrap();
    fails(
        &[
            "sketch",
            &d("nan.csv"),
            "--k",
            "1",
            "--sigma2",
            "1",
            "--out",
            &d("o"),
        ],
        "row 1",
    );
    std::fs::write(dir.join("ok.csv"), "1,2\n3,4\n5,6\n").unwrap();
    fails(&["sketch", &d("ok.csv"), "--k", "0", "--out", &d("o")], "K");
    fails(
        &[
            "sketch",
            &d("ok.csv"),
            "--k",
            "4",
            "--sigma2",
            "1",
            "--out",
            &d("o"),
        ],
        "K = 4 exceeds the number of data points T = 3",
    );
    fails(
        &[
            "sketch",
            &d("ok.csv"),
            "--k",
            "2",
            "--m",
            "1",
            "--out",
            &d("o"),
        ],
        "M = 1",
    );
    fails(
        &[
            "sketch",
            &d("ok.csv"),
            "--k",
            "2",
            "--sigma2=-1",
            "--out",
            &d("o"),
        ],
        "σ²",
    );
    assert!(!dir.join("o").exists() || std::fs::read_dir(dir.join("o")).unwrap().next().is_none());
    // Merging sketches with different frequencies.
    ok(&[
        "sketch",
        &d("ok.csv"),
        "--k",
        "2",
        "--sigma2",
        "1",
        "--seed",
        "1",
        "--out",
        &d("a"),
    ]);
    ok(&[
        "sketch",
        &d("ok.csv"),
        "--k",
        "2",
        "--sigma2",
        "1",
        "--seed",
        "2",
        "--out",
        &d("b"),
    ]);
    fails(
        &["sketch", "--merge", &d("a"), &d("b"), "--out", &d("ab")],
        "different frequencies",
    );
    fails(&["cluster", &d("nowhere"), "--out", &d("c")], "reading");
    let _ = std::fs::remove_dir_all(&dir);
}
