//! `mixatlas bench steps-to-loss` on logs with known answers, in the formats users bring:
//! MixAtlas JSON lines, CSV, and a Megatron-LM text log.

use crate::cli::{ok, s};

fn write(dir: &std::path::Path, name: &str, text: String) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn known_speedups_from_jsonl_csv_and_megatron_logs() {
    let tmp = tempfile::tempdir().unwrap();
    // Baseline loss 10/s, candidate 5/s (speedup exactly 2), a bad one 20/s (never).
    let f = |a: f64, s: u64| a / s as f64;
    let jsonl = |a: f64| -> String {
        (1..=200)
            .map(|s| format!("{{\"step\":{s},\"eval_loss\":{}}}\n", f(a, s)))
            .collect()
    };
    let b = write(tmp.path(), "base.jsonl", jsonl(10.0));
    let c = write(tmp.path(), "cand.jsonl", jsonl(5.0));
    let w = write(tmp.path(), "worse.jsonl", jsonl(20.0));
    let out = ok(&["bench", "steps-to-loss", s(&b), s(&c), s(&w), "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v[0]["speedup"], 2.0);
    assert_eq!(v[0]["per_seed"][0]["candidate_step"], 100);
    assert!(v[1]["speedup"].is_null());
    let text = ok(&["bench", "steps-to-loss", s(&b), s(&w)]);
    assert!(text.contains("never reaches"), "{text}");

    // The same curves as CSV (torchtitan-style columns) and as Megatron-LM text logs.
    let csv = |a: f64| -> String {
        let mut t = String::from("step,loss,lr\n");
        for s in 1..=200 {
            t += &format!("{s},{},0.001\n", f(a, s));
        }
        t
    };
    let bc = write(tmp.path(), "base.csv", csv(10.0));
    let cc = write(tmp.path(), "cand.csv", csv(5.0));
    let out = ok(&[
        "bench",
        "steps-to-loss",
        s(&bc),
        s(&cc),
        "--loss-col",
        "loss",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v[0]["speedup"], 2.0);
    let megatron = |a: f64| -> String {
        (1..=200)
            .map(|s| {
                format!(
                    " [2026-11-29 10:00:00] iteration {s:>8}/     200 | consumed samples: {:>10} | elapsed time per iteration (ms): 512.3 | learning rate: 1.000E-04 | global batch size:   256 | lm loss: {:.6E} | loss scale: 1.0 | grad norm: 1.234 |\n",
                    s * 256,
                    f(a, s)
                )
            })
            .collect()
    };
    let bm = write(tmp.path(), "base.log", megatron(10.0));
    let cm = write(tmp.path(), "cand.log", megatron(5.0));
    let out = ok(&["bench", "steps-to-loss", s(&bm), s(&cm), "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v[0]["speedup"], 2.0);
    // Seeds: three candidate runs with speedups 2, 2.5 and 1.25 → mean 1.9167 with an interval.
    let c2 = write(tmp.path(), "c2.jsonl", jsonl(4.0));
    let c3 = write(tmp.path(), "c3.jsonl", jsonl(8.0));
    let seeds = format!("{},{},{}", s(&c), s(&c2), s(&c3));
    let out = ok(&["bench", "steps-to-loss", s(&b), &seeds, "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let m = v[0]["speedup"].as_f64().unwrap();
    assert!((m - (2.0 + 2.5 + 1.25) / 3.0).abs() < 1e-9, "{m}");
    let iv = v[0]["interval"].as_array().unwrap();
    assert!(iv[0].as_f64().unwrap() <= m && m <= iv[1].as_f64().unwrap());
}
