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
        "Mean benchmark score, recipe − uniform",
        "<td>uniform</td>",
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
    // `--baseline` keeps today's layout: `baseline/` and `recipe/`.
    assert!(transfer.join("baseline/seed-0/metrics.json").is_file());
    assert!(!transfer.join("uniform").exists());
    // A transfer.json written before several baselines (no `comparisons`) still reports, as
    // one comparison against `baseline`.
    let mut old = summary.clone();
    old.as_object_mut().unwrap().remove("comparisons");
    std::fs::write(transfer.join("transfer.json"), old.to_string()).unwrap();
    let old_out = tmp.path().join("report-old");
    let old_page = ok(&["report", s(&search), s(&transfer), "--out", s(&old_out)]);
    let old_html = std::fs::read_to_string(old_page.trim()).unwrap();
    assert!(
        old_html.contains("Mean benchmark score, recipe − baseline")
            && old_html.contains("<td>baseline</td>")
            && old_out.join("loss.svg").is_file(),
        "{old_html}"
    );
    // Two baselines at once: a row and a loss curve for each.
    let multi = tmp.path().join("transfer-multi");
    ok(&[
        "transfer",
        "--corpus",
        s(corpus),
        "--recipe",
        s(&search.join("recipe.json")),
        "--baselines",
        "uniform,nat=natural",
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
        s(&multi),
        "--quiet",
    ]);
    let multi_out = tmp.path().join("report-multi");
    let multi_page = ok(&["report", s(&search), s(&multi), "--out", s(&multi_out)]);
    let multi_html = std::fs::read_to_string(multi_page.trim()).unwrap();
    for text in [
        "<td>uniform</td>",
        "<td>nat</td>",
        "<th>score, uniform</th>",
        "<th>score, nat</th>",
        "Mean benchmark score, recipe − nat:",
    ] {
        assert!(multi_html.contains(text), "the page lacks {text}");
    }
    let svg = std::fs::read_to_string(multi_out.join("loss.svg")).unwrap();
    for name in ["recipe", "uniform", "nat"] {
        assert!(
            svg.contains(&format!(">\n{name}\n<")),
            "loss.svg lacks {name}"
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

/// `transfer --jobs 2` trains two runs at once, each on its own thread pool, and gets exactly
/// the figures of one run after another.
#[test]
fn transfer_jobs_run_concurrently_with_identical_results() {
    let (_, _, corpus, _) = tiny_corpus();
    let tmp = tempfile::tempdir().unwrap();
    let recipe = tmp.path().join("recipe.json");
    let natural: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(corpus.join("manifest.json")).unwrap())
            .unwrap();
    // The recipe: all weight on the first two cells.
    let cells = natural["cells"].as_array().unwrap();
    let name = |k: usize| cells[k]["name"].as_str().unwrap().to_string();
    std::fs::write(
        &recipe,
        serde_json::json!({"weights": {name(0): 0.5, name(1): 0.5}}).to_string(),
    )
    .unwrap();
    let run = |jobs: &str| {
        let out = tmp.path().join(format!("jobs-{jobs}"));
        ok(&[
            "transfer",
            "--corpus",
            s(corpus),
            "--recipe",
            s(&recipe),
            "--baseline",
            "uniform",
            "--preset",
            "tiny",
            "--steps",
            "8",
            "--eval-every",
            "4",
            "--seeds",
            "2",
            "--batch-size",
            "4",
            "--seq-len",
            "64",
            "--eval-samples",
            "5",
            "--jobs",
            jobs,
            "--out",
            s(&out),
            "--quiet",
        ]);
        out
    };
    let (one, two) = (run("1"), run("2"));
    for arm in ["baseline", "recipe"] {
        for seed in 0..2 {
            let read = |root: &std::path::Path, file: &str| {
                let p = root.join(arm).join(format!("seed-{seed}")).join(file);
                std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            };
            let metrics = |root: &std::path::Path| {
                let mut m: serde_json::Value =
                    serde_json::from_str(&read(root, "metrics.json")).unwrap();
                for k in ["wall_s", "tokens_per_s"] {
                    m.as_object_mut().unwrap().remove(k);
                }
                m
            };
            assert_eq!(metrics(&one), metrics(&two), "{arm} seed {seed}");
            let losses = |root: &std::path::Path| -> Vec<String> {
                read(root, "train_log.jsonl")
                    .lines()
                    .map(|l| {
                        let v: serde_json::Value = serde_json::from_str(l).unwrap();
                        format!("{} {} {}", v["step"], v["loss"], v["eval_loss"])
                    })
                    .collect()
            };
            assert_eq!(losses(&one), losses(&two), "{arm} seed {seed}");
        }
    }
}
