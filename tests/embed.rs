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

use crate::cli::{bin, python_script};

fn clip_ref(args: &[&str]) {
    python_script("clip_ref.py", args);
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

/// Max relative errors of one run against the reference: embeddings of PNG images, of JPEG
/// images (reported apart), and features (f16) of all images.
#[derive(Debug, Default)]
struct Errors {
    png: f64,
    jpeg: f64,
    features: f64,
}

/// Runs `embed` and the reference with `features` on `count` drawn images.
fn compare(flags: &[&str], features: &str, count: usize) -> Errors {
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
    let text = std::fs::read_to_string(&list).unwrap();
    let is_jpeg: Vec<bool> = text.lines().map(|l| l.ends_with(".jpg")).collect();
    let ref_e: Vec<Vec<f64>> = serde_json::from_value(r["embeds"].clone()).unwrap();
    let ref_f: Vec<Vec<Vec<f64>>> = if features == "none" {
        vec![]
    } else {
        serde_json::from_value(r["features"].clone()).unwrap()
    };
    let mut err = Errors::default();
    for i in 0..ids.len() {
        let x = rel(&e[i], &ref_e[i]);
        if is_jpeg[i] {
            err.jpeg = err.jpeg.max(x);
        } else {
            err.png = err.png.max(x);
        }
        if let Some(rf) = ref_f.get(i) {
            err.features = err.features.max(rel(&f[i], &rf.concat()));
        }
    }
    eprintln!("{flags:?} {features}: max relative error {err:?}");
    err
}

/// The bounds: embeddings within 1e-4 relative, PNG and JPEG alike (the decoded pixels are
/// Pillow's: see `jpeg_decoding_is_identical_to_pillow`); features within f16 rounding.
fn check(err: &Errors) {
    assert!(err.png < 1e-4, "PNG embeddings: {err:?}");
    assert!(err.jpeg < 1e-4, "JPEG embeddings: {err:?}");
    assert!(err.features < 2e-3, "features: {err:?}");
}

#[test]
fn embed_equals_numpy_reference_png_and_jpeg() {
    check(&compare(&[], "patches:4", 40));
}

#[test]
fn embed_equals_reference_gelu_bf16_wrapped_config_upscaled_crop() {
    // A CLIPConfig with vision_config, exact GELU, BF16 weights, resize to 40 then crop 32,
    // 3×3 features pooled from a 4×4 grid (uneven cells).
    let flags = [
        "--wrapped",
        "--hidden-act",
        "gelu",
        "--dtype",
        "BF16",
        "--shortest-edge",
        "40",
    ];
    check(&compare(&flags, "patches:9", 20));
    // F16 weights, a resize to 24 under a 32 crop (zero padding), 5 raster rows.
    check(&compare(
        &["--dtype", "F16", "--shortest-edge", "24"],
        "patches:5",
        12,
    ));
    check(&compare(&[], "pooled", 8));
}

/// `embed` equals Hugging Face transformers' `CLIPVisionModelWithProjection` (float32 and
/// float64) within 1e-4 relative on random small checkpoints written by transformers
/// (quick_gelu and gelu, F32 and F16) and PNG and JPEG images, through the checkpoint's
/// `preprocessor_config.json` (tests/clip_hf_check.py). Needs torch: runs when
/// `MIXATLAS_TORCH_PYTHON` names a python that has it, as scripts/test.sh sets it.
#[test]
fn embed_equals_transformers_clip_vision_model() {
    let Ok(python) = std::env::var("MIXATLAS_TORCH_PYTHON") else {
        eprintln!("skipping: MIXATLAS_TORCH_PYTHON is not set (scripts/test.sh sets it)");
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clip_hf_check.py");
    let out = Command::new(&python)
        .arg(&script)
        .args(["--bin", env!("CARGO_BIN_EXE_mixatlas"), "--workdir"])
        .arg(work.path())
        .env("RUST_LOG", "warn")
        .output()
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !stdout.contains("skipped"),
        "{python} lacks torch: {stdout}"
    );
    let worst: f64 = stdout
        .lines()
        .find_map(|l| {
            l.strip_prefix("worst relative error of mixatlas embed against transformers: ")
        })
        .unwrap_or_else(|| panic!("no summary line in:\n{stdout}"))
        .trim()
        .parse()
        .unwrap();
    assert!(worst < 1e-4, "{worst:e}\n{stdout}");
    // Every configuration compared mixatlas with transformers, PNG and JPEG.
    assert_eq!(
        stdout.matches("mixatlas vs transformers f64").count(),
        3,
        "{stdout}"
    );
}

fn stderr_of(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn embed_errors_name_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let ck = dir.path().join("ck");
    let key = "vision_model.encoder.layers.1.mlp.fc2.bias";
    clip_ref(&["make-checkpoint", "--out", s(&ck), "--drop", key]);
    let im = dir.path().join("im");
    clip_ref(&["make-images", "--out", s(&im), "--count", "6"]);
    let list = im.join("list.txt");
    let o = embed(&ck, &list, &dir.path().join("o1"), &[]);
    assert!(!o.status.success());
    assert!(
        stderr_of(&o).contains(key) && stderr_of(&o).contains("missing"),
        "{}",
        stderr_of(&o)
    );

    // A file that is not an image: the error names the id and the list line; skip records it.
    let ck = dir.path().join("ck2");
    clip_ref(&["make-checkpoint", "--out", s(&ck)]);
    std::fs::write(im.join("img002.png"), b"not a png").unwrap();
    let o = embed(&ck, &list, &dir.path().join("o2"), &[]);
    let err = stderr_of(&o);
    assert!(!o.status.success());
    assert!(
        err.contains("im002") && err.contains("list.txt:3") && err.contains("decode"),
        "{err}"
    );
    let out = dir.path().join("o3");
    embed_ok(
        &ck,
        &list,
        &out,
        &["--on-error", "skip", "--part-size", "4"],
    );
    let m = EmbedManifest::read_opt(&out).unwrap().unwrap();
    assert_eq!(m.parts[0].skipped[0].id, "im002");
    assert_eq!(
        (m.parts[0].rows, m.parts[0].items, m.parts[1].rows),
        (3, 4, 2)
    );
    let (ids, _, _) = read_all(&out);
    assert_eq!(ids, ["im000", "im001", "im003", "im004", "im005"]);

    // A list line without a tab.
    let bad = dir.path().join("bad.txt");
    std::fs::write(&bad, "a\tim/img000.png\nno-tab-here\n").unwrap();
    let err = stderr_of(&embed(&ck, &bad, &dir.path().join("o4"), &[]));
    assert!(
        err.contains("bad.txt:2") && err.contains("id<TAB>"),
        "{err}"
    );

    // Resuming with other settings or another checkpoint is refused, naming the setting.
    for (flags, field) in [
        (vec!["--on-error", "skip", "--part-size", "5"], "part_size"),
        (
            vec![
                "--on-error",
                "skip",
                "--part-size",
                "4",
                "--features",
                "pooled",
            ],
            "features",
        ),
    ] {
        let err = stderr_of(&embed(&ck, &list, &out, &flags));
        assert!(
            err.contains(field) && err.contains("same settings"),
            "{field}: {err}"
        );
    }
    let other = dir.path().join("ck3");
    clip_ref(&["make-checkpoint", "--out", s(&other), "--seed", "9"]);
    let err = stderr_of(&embed(
        &other,
        &list,
        &out,
        &["--on-error", "skip", "--part-size", "4"],
    ));
    assert!(err.contains("config_hash"), "{err}");
}

/// Every file of an embedding directory but the lock, by name.
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("part-")
                || p.ends_with("embed.json")
        })
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn resume_after_kill_gives_identical_output() {
    let (dir, ck, list) = fixture(&[], 30);
    let args = [
        "--part-size",
        "3",
        "--batch",
        "1",
        "--features",
        "patches:4",
    ];
    let clean = dir.path().join("clean");
    embed_ok(&ck, &list, &clean, &args);
    let want = snapshot(&clean);

    // kill -9 once the first part is listed, then rerun.
    let out = dir.path().join("killed");
    let mut child = bin()
        .args([
            "embed",
            "--model",
            s(&ck),
            "--images",
            s(&list),
            "--out",
            s(&out),
        ])
        .args(args)
        .spawn()
        .unwrap();
    let t0 = std::time::Instant::now();
    while t0.elapsed().as_secs() < 60 {
        if std::fs::read_to_string(out.join("embed.json")).is_ok_and(|t| t.contains("\"index\"")) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    embed_ok(&ck, &list, &out, &args);
    assert_eq!(snapshot(&out), want);

    // A crash between a part's files and embed.json: the part is not listed; orphan files
    // and temporaries are rewritten.
    let m = EmbedManifest::read_opt(&out).unwrap().unwrap();
    let mut cut = m.clone();
    cut.parts.truncate(4);
    cut.finished = false;
    cut.write(&out).unwrap();
    std::fs::write(out.join("part-000004.npy"), b"half-written").unwrap();
    std::fs::write(out.join(".part-000005.npy.tmp.1"), b"temp").unwrap();
    embed_ok(&ck, &list, &out, &args);
    std::fs::remove_file(out.join(".part-000005.npy.tmp.1")).unwrap();
    assert_eq!(snapshot(&out), want);
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
        assert_eq!(
            max,
            0,
            "{} → {tw}×{th}: differs from Pillow by up to {max}",
            file.display()
        );
        assert_eq!(ours.data.len(), pil.len());
    }
}

/// Bytes of `ours` that differ from `pil`, and the largest difference.
fn pixel_diff(ours: &[u8], pil: &[u8]) -> (usize, u8) {
    assert_eq!(ours.len(), pil.len(), "decoded sizes differ");
    ours.iter().zip(pil).fold((0, 0), |(n, m), (a, b)| {
        (n + usize::from(a != b), m.max(a.abs_diff(*b)))
    })
}

#[test]
fn jpeg_decoding_is_identical_to_pillow() {
    // `decode_rgb` (libjpeg-turbo's decoder via MozJPEG) against Pillow's
    // `np.asarray(Image.open(p).convert("RGB"))`: 0 differing bytes on every JPEG kind Pillow
    // writes (chroma subsamplings, progressive, restart markers, RGB-coded, grey, Adobe CMYK,
    // quality 5 to 100) over images of odd and even sizes, on make-images' own JPEGs and on
    // arithmetic-coded ones.
    let dir = tempfile::tempdir().unwrap();
    let im = dir.path().join("im");
    clip_ref(&[
        "make-images",
        "--out",
        s(&im),
        "--seed",
        "5",
        "--count",
        "40",
    ]);
    let mut spec = Vec::new();
    let mut cases = Vec::new();
    for k in [0, 2, 6, 11, 15, 23] {
        let src = im.join(format!("img{k:03}.png"));
        let src = if src.exists() {
            src
        } else {
            im.join(format!("img{k:03}.jpg"))
        };
        for variant in [
            "444",
            "422",
            "420",
            "411",
            "progressive",
            "progressive444",
            "restart",
            "restart_rows",
            "rgb",
            "optimize",
            "q5",
            "q100",
            "grey",
            "grey_progressive",
            "cmyk",
        ] {
            let jpg = dir.path().join(format!("j{k}_{variant}.jpg"));
            let out = dir.path().join(format!("j{k}_{variant}.bin"));
            spec.push(serde_json::json!([s(&src), variant, s(&jpg), s(&out)]));
            cases.push((format!("{k} {variant}"), jpg, out));
        }
    }
    // make-images' own JPEGs, and each re-coded losslessly by jpegtran with arithmetic
    // coding, sequential and progressive (Pillow decodes them; it cannot write them).
    let text = std::fs::read_to_string(im.join("list.txt")).unwrap();
    for name in text.lines().filter_map(|l| l.split('\t').nth(1)) {
        if !name.ends_with(".jpg") {
            continue;
        }
        let mut files = vec![(name.to_string(), im.join(name))];
        for (tag, extra) in [("arith", None), ("arith_progressive", Some("-progressive"))] {
            let jpg = dir.path().join(format!("{name}.{tag}.jpg"));
            let st = Command::new("jpegtran")
                .arg("-arithmetic")
                .args(extra)
                .arg("-outfile")
                .arg(&jpg)
                .arg(im.join(name))
                .status()
                .expect("jpegtran runs (scripts/test.sh installs libjpeg-turbo-progs)");
            assert!(st.success(), "jpegtran on {name}");
            files.push((format!("{name} {tag}"), jpg));
        }
        for (case, jpg) in files {
            let out = dir.path().join(format!("{}.bin", case.replace(' ', "_")));
            spec.push(serde_json::json!(["-", "", s(&jpg), s(&out)]));
            cases.push((case, jpg, out));
        }
    }
    let spec_path = dir.path().join("jpeg.json");
    std::fs::write(&spec_path, serde_json::to_string(&spec).unwrap()).unwrap();
    clip_ref(&["jpeg", "--spec", s(&spec_path)]);
    let mut failures = Vec::new();
    for (case, jpg, out) in &cases {
        let ours = decode_rgb(&std::fs::read(jpg).unwrap(), case, "x").unwrap();
        let (n, max) = pixel_diff(&ours.data, &std::fs::read(out).unwrap());
        if n > 0 {
            failures.push(format!("{case}: {n} bytes differ, by up to {max}"));
        }
    }
    eprintln!("{} JPEGs compared with Pillow", cases.len());
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn corrupt_or_truncated_jpeg_is_a_decode_error_naming_the_image() {
    let dir = tempfile::tempdir().unwrap();
    let im = dir.path().join("im");
    clip_ref(&["make-images", "--out", s(&im), "--count", "2"]);
    let bytes = std::fs::read(im.join("img001.jpg")).unwrap();
    // Cut in the header, in the scan, and just before the end-of-image marker: Pillow refuses
    // all three ("image file is truncated"), and so does `decode_rgb`; trailing bytes after
    // the marker are ignored by both.
    for cut in [40, bytes.len() / 2, bytes.len() - 2] {
        let e = decode_rgb(&bytes[..cut], "im001", "im/img001.jpg").unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("im001") && msg.contains("img001.jpg"), "{msg}");
    }
    let mut padded = bytes.clone();
    padded.extend_from_slice(b"trailing");
    let whole = decode_rgb(&bytes, "im001", "x").unwrap();
    assert_eq!(decode_rgb(&padded, "im001", "x").unwrap().data, whole.data);
}
