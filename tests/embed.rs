//! `mixatlas embed` against tests/clip_ref.py, an independent numpy float64 re-computation of
//! transformers' `CLIPImageProcessor` + `CLIPVisionModelWithProjection` (Pillow decoding and
//! resizing): random small checkpoints with HF's key names, a few dozen PNG and JPEG images
//! drawn by the script; Pillow's bicubic resize bit for bit; the error paths; resumption.

use std::path::{Path, PathBuf};
use std::process::Command;

use mixatlas::embed::config::Resample;
use mixatlas::embed::output::{read_part, EmbedManifest};
use mixatlas::embed::preprocess::decode_rgb;
use mixatlas::embed::resize::resize;

use crate::cli::bin;

fn clip_ref(args: &[&str]) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clip_ref.py");
    let out = Command::new("python3")
        .arg(&script)
        .args(args)
        .output()
        .expect("python3 runs (scripts/test.sh installs numpy and pillow)");
    assert!(
        out.status.success(),
        "clip_ref.py {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// A checkpoint (extra `make-checkpoint` flags) and `count` images in a fresh directory.
fn fixture(flags: &[&str], count: usize) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let ck = dir.path().join("ck");
    let im = dir.path().join("im");
    let mut args = vec!["make-checkpoint", "--out", s(&ck), "--seed", "7"];
    args.extend_from_slice(flags);
    clip_ref(&args);
    clip_ref(&[
        "make-images",
        "--out",
        s(&im),
        "--seed",
        "3",
        "--count",
        &count.to_string(),
    ]);
    (dir, ck, im.join("list.txt"))
}

fn embed(ck: &Path, images: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    bin()
        .args([
            "embed",
            "--model",
            s(ck),
            "--images",
            s(images),
            "--out",
            s(out),
        ])
        .args(extra)
        .output()
        .expect("mixatlas runs")
}

fn embed_ok(ck: &Path, images: &Path, out: &Path, extra: &[&str]) {
    let o = embed(ck, images, out, extra);
    assert!(
        o.status.success(),
        "embed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// All rows of an embedding directory: ids, embeddings, features.
fn read_all(out: &Path) -> (Vec<String>, Vec<Vec<f32>>, Vec<Vec<f32>>) {
    let m = EmbedManifest::read_opt(out).unwrap().expect("embed.json");
    assert!(m.finished);
    let (mut ids, mut e, mut f) = (vec![], vec![], vec![]);
    for p in &m.parts {
        let part = read_part(out, &m, p).unwrap();
        ids.extend(part.ids);
        e.extend(part.embeds.values.chunks(m.dim).map(<[f32]>::to_vec));
        if let Some(feat) = part.features {
            let w = m.feature_rows * m.feature_dim;
            f.extend(feat.values.chunks(w).map(<[f32]>::to_vec));
        }
    }
    (ids, e, f)
}

/// `max |a − b| / max |b|` over one vector.
fn rel(a: &[f32], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0f64, |m, x| m.max(x.abs()));
    let diff = a
        .iter()
        .zip(b)
        .fold(0f64, |m, (x, y)| m.max((f64::from(*x) - y).abs()));
    diff / scale
}

/// Runs `embed` and the reference with `features`; returns (max rel error of the
/// embeddings, of the features).
fn compare(flags: &[&str], features: &str, count: usize) -> (f64, f64) {
    let (dir, ck, list) = fixture(flags, count);
    let out = dir.path().join("out");
    embed_ok(
        &ck,
        &list,
        &out,
        &["--features", features, "--batch", "5", "--part-size", "11"],
    );
    let ref_path = dir.path().join("ref.json");
    clip_ref(&[
        "embed",
        "--model",
        s(&ck),
        "--images",
        s(&list),
        "--out",
        s(&ref_path),
        "--features",
        features,
    ]);
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&ref_path).unwrap()).unwrap();
    let (ids, e, f) = read_all(&out);
    let ref_ids: Vec<String> = serde_json::from_value(r["ids"].clone()).unwrap();
    assert_eq!(ids, ref_ids);
    let ref_e: Vec<Vec<f64>> = serde_json::from_value(r["embeds"].clone()).unwrap();
    let err_e = e
        .iter()
        .zip(&ref_e)
        .map(|(a, b)| rel(a, b))
        .fold(0.0, f64::max);
    let mut err_f = 0.0;
    if features != "none" {
        let ref_f: Vec<Vec<Vec<f64>>> = serde_json::from_value(r["features"].clone()).unwrap();
        assert_eq!(f.len(), ref_f.len());
        for (a, b) in f.iter().zip(&ref_f) {
            err_f = f64::max(err_f, rel(a, &b.concat()));
        }
    }
    (err_e, err_f)
}

#[test]
fn embed_equals_numpy_reference_png_and_jpeg() {
    let (e, f) = compare(&[], "patches:4", 40);
    eprintln!(
        "quick_gelu F32: max relative error {e:.2e} (embeddings), {f:.2e} (patch features, f16)"
    );
    assert!(e < 1e-4, "embeddings: max relative error {e}");
    // Features are stored as f16 (11-bit significand).
    assert!(f < 2e-3, "features: max relative error {f}");
}

#[test]
fn embed_equals_reference_gelu_bf16_wrapped_config_upscaled_crop() {
    // A CLIPConfig with vision_config, exact GELU, BF16 weights, resize to 40 then crop 32,
    // 3×3 features pooled from a 4×4 grid (uneven cells) and 5 raster rows.
    let flags = [
        "--wrapped",
        "--hidden-act",
        "gelu",
        "--dtype",
        "BF16",
        "--shortest-edge",
        "40",
    ];
    let (e, f) = compare(&flags, "patches:9", 24);
    assert!(e < 1e-4 && f < 2e-3, "gelu/BF16: {e} {f}");
    let (e, f) = compare(
        &["--dtype", "F16", "--shortest-edge", "24"],
        "patches:5",
        12,
    );
    assert!(
        e < 1e-4 && f < 2e-3,
        "F16, crop larger than the resize: {e} {f}"
    );
    let (e, f) = compare(&[], "pooled", 8);
    assert!(e < 1e-4 && f < 2e-3, "pooled: {e} {f}");
}

#[test]
fn resize_is_bit_identical_to_pillow() {
    let (dir, _ck, list) = fixture(&[], 30);
    let base = list.parent().unwrap();
    let text = std::fs::read_to_string(&list).unwrap();
    let mut spec = Vec::new();
    let mut cases = Vec::new();
    for (k, line) in text.lines().enumerate() {
        let file = base.join(line.split('\t').nth(1).unwrap());
        let img = decode_rgb(&std::fs::read(&file).unwrap(), "x", "x").unwrap();
        let (w, h) = (img.width, img.height);
        for (j, (tw, th)) in [
            (w, h),
            (224, 224),
            (7, h),
            (w, 3 * h + 1),
            (w / 3 + 1, h / 2 + 1),
            (2 * w, 13),
        ]
        .into_iter()
        .enumerate()
        {
            let out = dir.path().join(format!("r{k}_{j}.bin"));
            spec.push(serde_json::json!([s(&file), tw, th, s(&out)]));
            cases.push((file.clone(), img.clone(), tw, th, out));
        }
    }
    let spec_path = dir.path().join("spec.json");
    std::fs::write(&spec_path, serde_json::to_string(&spec).unwrap()).unwrap();
    clip_ref(&["resize", "--spec", s(&spec_path)]);
    let mut jpeg_decode_diff = 0u8;
    for (file, img, tw, th, out) in cases {
        let ours = resize(&img, tw, th, Resample::Bicubic);
        let pil = std::fs::read(&out).unwrap();
        let max = ours
            .data
            .iter()
            .zip(&pil)
            .map(|(a, b)| a.abs_diff(*b))
            .max()
            .unwrap_or(0);
        let jpeg = file.extension().is_some_and(|e| e == "jpg");
        if jpeg {
            jpeg_decode_diff = jpeg_decode_diff.max(max);
        } else {
            assert_eq!(
                max,
                0,
                "{} → {tw}×{th}: differs from Pillow by up to {max}",
                file.display()
            );
        }
        assert_eq!(ours.data.len(), pil.len());
    }
    eprintln!("JPEG (zune-jpeg vs libjpeg-turbo): largest pixel difference {jpeg_decode_diff}");
}

#[test]
fn jpeg_decoding_against_pillow() {
    // JPEG decoders may differ (the standard allows IDCT error): this reports how far the
    // `image` crate (zune-jpeg) is from Pillow (libjpeg-turbo) for each chroma subsampling.
    let dir = tempfile::tempdir().unwrap();
    let im = dir.path().join("im");
    clip_ref(&[
        "make-images",
        "--out",
        s(&im),
        "--seed",
        "5",
        "--count",
        "10",
    ]);
    let mut spec = Vec::new();
    let mut cases = Vec::new();
    for k in [0, 6] {
        let src = im.join(format!("img{k:03}.png"));
        for variant in ["444", "422", "420", "grey"] {
            let jpg = dir.path().join(format!("j{k}_{variant}.jpg"));
            let out = dir.path().join(format!("j{k}_{variant}.bin"));
            spec.push(serde_json::json!([s(&src), variant, s(&jpg), s(&out)]));
            cases.push((variant, jpg, out));
        }
    }
    let spec_path = dir.path().join("jpeg.json");
    std::fs::write(&spec_path, serde_json::to_string(&spec).unwrap()).unwrap();
    clip_ref(&["jpeg", "--spec", s(&spec_path)]);
    for (variant, jpg, out) in cases {
        let ours = decode_rgb(&std::fs::read(&jpg).unwrap(), "x", "x").unwrap();
        let pil = std::fs::read(&out).unwrap();
        let max = ours
            .data
            .iter()
            .zip(&pil)
            .map(|(a, b)| a.abs_diff(*b))
            .max()
            .unwrap();
        eprintln!("JPEG {variant}: largest difference from Pillow {max}");
    }
}
