//! `mixatlas report` end to end: a real search (external Python trainer) and a real transfer
//! (tiny model), the page rendered by headless Chromium without console errors.

use std::process::Command;

use crate::cli::{ok, s, tiny_corpus};

fn chromium() -> Option<&'static str> {
    ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| {
            Command::new(b)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
}

#[test]
fn the_report_renders_in_headless_chromium_without_console_errors() {
    let (_, _, corpus, _) = tiny_corpus();
    let tmp = tempfile::tempdir().unwrap();
    let search = tmp.path().join("search");
    let cmd = format!(
        "python3 {}/tests/toy_trainer.py",
        env!("CARGO_MANIFEST_DIR")
    );
    ok(&[
        "search",
        "--corpus",
        s(corpus),
        "--out",
        s(&search),
        "--trainer-command",
        &cmd,
        "-q",
        "3",
        "--max-trials",
        "6",
        "--space",
        "factorized",
        "--quiet",
    ]);
    let transfer = tmp.path().join("transfer");
    ok(&[
        "transfer",
        "--corpus",
        s(corpus),
        "--recipe",
        s(&search.join("recipe.json")),
        "--baseline",
        "uniform",
        "--preset",
        "tiny",
        "--steps",
        "6",
        "--eval-every",
        "2",
        "--seeds",
        "1",
        "--batch-size",
        "4",
        "--seq-len",
        "64",
        "--eval-samples",
        "5",
        "--out",
        s(&transfer),
        "--quiet",
    ]);
    // The paired score gain is the recipe's mean benchmark score minus the baseline's, read
    // back from the two runs' metrics.
    let json = |p: std::path::PathBuf| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
    };
    let summary = json(transfer.join("transfer.json"));
    let mean_score = |arm: &str| {
        let m = json(transfer.join(arm).join("seed-0/metrics.json"));
        let b = m["benchmarks"].as_object().unwrap();
        assert_eq!(m["benchmark_metric"]["lvis-det"], "item_f1");
        b.values().map(|v| v.as_f64().unwrap()).sum::<f64>() / b.len() as f64
    };
    let gain = mean_score("recipe") - mean_score("baseline");
    assert!((summary["score_gain_per_seed"][0].as_f64().unwrap() - gain).abs() < 1e-12);
    assert_eq!(
        summary["score_gain"][0].as_f64().unwrap(),
        summary["score_gain_per_seed"][0].as_f64().unwrap()
    );
    assert_eq!(summary["benchmark_metric"]["docvqa"], "anls");
    let out = tmp.path().join("report");
    let page = ok(&["report", s(&search), s(&transfer), "--out", s(&out)]);
    let page = std::path::PathBuf::from(page.trim());
    let html = std::fs::read_to_string(&page).unwrap();
    for section in [
        "Mean benchmark score, recipe − baseline",
        "<th>metric</th>",
        "Search",
        "Recipe",
        "Transfer",
        "convergence.svg",
        "recipe.svg",
        "loss.svg",
    ] {
        assert!(html.contains(section), "the page lacks {section}");
    }
    for img in html.split("src=\"").skip(1) {
        let file = img.split('"').next().unwrap();
        let svg = std::fs::read_to_string(out.join(file)).unwrap();
        assert!(
            svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"),
            "{file}"
        );
    }
    let Some(browser) = chromium() else {
        eprintln!("skipping the browser check: no chromium (scripts/test.sh installs it)");
        return;
    };
    let run = Command::new(browser)
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--enable-logging=stderr",
            "--log-level=0",
            "--virtual-time-budget=3000",
            "--dump-dom",
        ])
        .arg(format!("file://{}", page.display()))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    let dom = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "{stderr}");
    assert!(dom.contains("MixAtlas report"), "{dom}");
    let console: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("CONSOLE") || l.contains("Uncaught") || l.contains("Failed to load"))
        .collect();
    assert!(console.is_empty(), "console errors: {console:?}");
}
