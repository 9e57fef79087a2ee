//! Draws the fuzz soak's figure (`docs/testing.md`, "The fuzzed front door") from the report
//! that `FUZZ_REPORT=… cargo test --release -p mlmatvamp --test fuzz soak -- --ignored` writes:
//! for each front door (`run`, `se`), the cumulative number of cases per outcome (success, or
//! the kind of the named error) against the number of cases.
//!
//! `cargo run --release -p mlmatvamp-cli --example fuzz_figure -- REPORT.json OUT_STEM`

use mlmatvamp::figure::{Figure, Panel, Series};
use std::collections::BTreeSet;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [report, stem] = args.as_slice() else {
        anyhow::bail!("usage: fuzz_figure REPORT.json OUT_STEM");
    };
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(report)?)?;
    let trace = v["trace"]
        .as_array()
        .ok_or_else(|| anyhow::anyhow!("{report}: no `trace` array"))?;
    let cases = v["cases"].as_u64().unwrap_or(0);
    let mut panels = Vec::new();
    for door in ["run", "se"] {
        let keys: BTreeSet<String> = trace
            .iter()
            .filter_map(|t| t["counts"].as_object())
            .flat_map(|c| c.keys().cloned())
            .filter(|k| k.starts_with(&format!("{door}: ")))
            .collect();
        let x: Vec<f64> = trace
            .iter()
            .map(|t| t["cases"].as_f64().unwrap_or(f64::NAN))
            .collect();
        let mut series: Vec<Series> = keys
            .iter()
            .map(|k| Series {
                label: k.trim_start_matches(&format!("{door}: ")).to_string(),
                x: x.clone(),
                y: trace
                    .iter()
                    .map(|t| t["counts"][k].as_f64().unwrap_or(0.0).max(0.5))
                    .collect(),
                ..Series::default()
            })
            .collect();
        series.push(Series {
            label: "panic, abort or non-finite success (none)".into(),
            x: x.clone(),
            y: vec![0.5; x.len()],
            dashed: true,
            color: Some(9),
            ..Series::default()
        });
        panels.push(Panel {
            title: format!("`{door}`: {cases} fuzzed configurations"),
            x_label: "cases".into(),
            y_label: "cases with this outcome (cumulative)".into(),
            series,
            log_y: true,
            ..Panel::default()
        });
    }
    let mut fig = Figure::new(panels);
    fig.panel_width = 720;
    let (png, svg) = mlmatvamp_cli::render::save(&fig, std::path::Path::new(stem))?;
    println!("wrote {} and {}", png.display(), svg.display());
    Ok(())
}
