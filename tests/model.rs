//! The model against independent references: the float64 standard-library Python
//! re-implementation of docs/model.md (`tests/qwen2_ref.py`, itself checked against Hugging
//! Face transformers), finite differences for the gradients, and checkpoint round trips.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use mixatlas::model::weights::read_config;
use mixatlas::model::{ImageInput, Params, Qwen2Config, Qwen2Model};
use mixatlas::train::loss::{masked_loss, LossInput, Targets};

use crate::cli::{ok, python_script, s};

fn python(args: &[&str]) -> String {
    String::from_utf8(python_script("qwen2_ref.py", args)).unwrap()
}

/// Two sequences over a V=48 model with image token 3: one with two 2-patch images, one text.
fn input_json(dim: usize) -> serde_json::Value {
    let patch = |k: usize| -> Vec<f64> {
        (0..dim)
            .map(|j| ((k * 7 + j * 3) % 11) as f64 / 5.0 - 1.0)
            .collect()
    };
    serde_json::json!({"sequences": [
        {"tokens": [1, 3, 3, 9, 20, 3, 3, 4, 30, 31, 47, 2],
         "images": [[patch(0), patch(1)], [patch(2), patch(3)]]},
        {"tokens": [1, 5, 6, 7, 8, 9, 10]}
    ]})
}

/// Max over positions of max|a − b| / max|b| (relative to each row's logit scale).
fn max_rel(a: &[Vec<f64>], b: &[Vec<f64>]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| {
            let scale = y.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-12);
            x.iter()
                .zip(y)
                .map(|(p, q)| (p - q).abs() / scale)
                .fold(0.0, f64::max)
        })
        .fold(0.0, f64::max)
}

fn logits_of(v: &serde_json::Value) -> Vec<Vec<Vec<f64>>> {
    serde_json::from_value(v["logits"].clone()).unwrap()
}

fn compare_with_reference(ckpt: &Path, dim: usize) {
    let dir = ckpt.parent().unwrap();
    let input = dir.join("input.json");
    std::fs::write(&input, input_json(dim).to_string()).unwrap();
    let reference: serde_json::Value = serde_json::from_str(&python(&[
        "forward",
        "--checkpoint",
        s(ckpt),
        "--input",
        s(&input),
    ]))
    .unwrap();
    for (dtype, tol) in [("f32", 1e-4), ("f64", 1e-9)] {
        let ours: serde_json::Value = serde_json::from_str(&ok(&[
            "score",
            "--checkpoint",
            s(ckpt),
            "--input",
            s(&input),
            "--logits",
            "--dtype",
            dtype,
        ]))
        .unwrap();
        let (a, b) = (logits_of(&ours), logits_of(&reference));
        for (sa, sb) in a.iter().zip(&b) {
            let err = max_rel(sa, sb);
            assert!(err < tol, "{dtype}: logits differ by {err:e} relative");
        }
        let (la, lb): (Vec<Vec<f64>>, Vec<Vec<f64>>) = (
            serde_json::from_value(ours["logprobs"].clone()).unwrap(),
            serde_json::from_value(reference["logprobs"].clone()).unwrap(),
        );
        for (x, y) in la.iter().flatten().zip(lb.iter().flatten()) {
            assert!(
                (x - y).abs() < tol * 10.0 * y.abs().max(1.0),
                "{dtype}: {x} vs {y}"
            );
        }
    }
}

#[test]
fn forward_matches_the_float64_reference_on_checkpoints_it_wrote() {
    let tmp = tempfile::tempdir().unwrap();
    for (flag, seed) in [("--tied", "1"), ("--untied", "2")] {
        let ckpt = tmp.path().join(format!("ref{flag}"));
        python(&[
            "make-random",
            "--out",
            s(&ckpt),
            "--seed",
            seed,
            flag,
            "--image-dim",
            "6",
        ]);
        compare_with_reference(&ckpt, 6);
    }
}

fn test_config(tied: bool) -> Qwen2Config {
    let mut c = Qwen2Config::tiny();
    c.vocab_size = 48;
    c.hidden_size = 24;
    c.intermediate_size = 40;
    c.num_attention_heads = 6;
    c.num_key_value_heads = 2;
    c.max_position_embeddings = 64;
    c.tie_word_embeddings = tied;
    c.initializer_range = 0.3;
    c.mm_hidden_size = Some(6);
    c.image_token_index = Some(3);
    c
}

#[test]
fn checkpoints_we_save_match_the_reference_and_reload_identically() {
    let tmp = tempfile::tempdir().unwrap();
    for tied in [true, false] {
        let cfg = test_config(tied);
        let params = Params::init(&cfg, 7, DType::F32, &Device::Cpu).unwrap();
        let ckpt = tmp.path().join(format!("ours-{tied}"));
        params.save(&ckpt, &cfg, DType::F32).unwrap();
        compare_with_reference(&ckpt, 6);
        let back = read_config(&ckpt).unwrap();
        assert_eq!(back.tie_word_embeddings, tied);
        let again = Params::load(&ckpt, &back, 0, DType::F32, &Device::Cpu).unwrap();
        for (a, b) in params.vars().iter().zip(again.vars()) {
            let (a, b) = (
                a.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                b.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            );
            assert_eq!(a, b);
        }
    }
}

/// A batch with images, for loss and gradient tests: 2 rows × 10 tokens.
fn batch(device: &Device, dtype: DType) -> (Vec<u32>, Vec<u8>, ImageInput) {
    let tokens = vec![
        1, 3, 3, 7, 4, 11, 12, 2, 9, 13, //
        1, 3, 3, 8, 4, 14, 2, 0, 0, 0,
    ];
    let mask = vec![
        0, 0, 0, 0, 0, 1, 1, 1, 0, 0, //
        0, 0, 0, 0, 0, 1, 1, 0, 0, 0,
    ];
    let images: Vec<Vec<f32>> = (0..2)
        .map(|r| {
            (0..12)
                .map(|j| ((r * 5 + j) % 7) as f32 / 3.0 - 1.0)
                .collect()
        })
        .collect();
    let mut img = ImageInput::sequential(
        &tokens,
        mixatlas::model::qwen2::ImageRows {
            rows: 2,
            seq_len: 10,
            image_token: 3,
            dim: 6,
        },
        &images,
        device,
    )
    .unwrap();
    img.features = img.features.to_dtype(dtype).unwrap();
    (tokens, mask, img)
}

fn loss_f64(model: &Qwen2Model) -> Tensor {
    let (tokens, mask, img) = batch(&Device::Cpu, DType::F64);
    let targets = Targets::from_mask(&tokens, &mask, 2, 10);
    let input = LossInput {
        tokens: &tokens,
        rows: 2,
        seq_len: 10,
        images: Some(&img),
    };
    masked_loss(model, input, &targets, targets.len()).unwrap()
}

#[test]
fn gradients_match_finite_differences() {
    for tied in [true, false] {
        let cfg = test_config(tied);
        let params = Params::init(&cfg, 3, DType::F64, &Device::Cpu).unwrap();
        let model = Qwen2Model::new(&cfg, &params);
        let grads = loss_f64(&model).backward().unwrap();
        let h = 1e-5;
        for (spec, var) in params.specs().iter().zip(params.vars()) {
            let g = grads
                .get(var.as_tensor())
                .unwrap_or_else(|| panic!("no gradient for {}", spec.name))
                .flatten_all()
                .unwrap()
                .to_vec1::<f64>()
                .unwrap();
            let w0 = var.flatten_all().unwrap().to_vec1::<f64>().unwrap();
            // Three entries per tensor: first, middle, last.
            for j in [0, w0.len() / 2, w0.len() - 1] {
                let eval = |d: f64| {
                    let mut w = w0.clone();
                    w[j] += d;
                    var.set(&Tensor::from_vec(w, var.shape(), &Device::Cpu).unwrap())
                        .unwrap();
                    loss_f64(&model).to_scalar::<f64>().unwrap()
                };
                let fd = (eval(h) - eval(-h)) / (2.0 * h);
                var.set(&Tensor::from_vec(w0.clone(), var.shape(), &Device::Cpu).unwrap())
                    .unwrap();
                let err = (fd - g[j]).abs();
                assert!(
                    err <= 1e-6 * fd.abs().max(1e-2),
                    "{} [{j}]: analytic {} vs finite difference {fd}",
                    spec.name,
                    g[j]
                );
            }
        }
    }
}

/// The fused kernels (the default) against the compositions of elementary candle ops they
/// replace: the loss and every parameter's gradient, in f64, both tied and untied, with images.
#[test]
fn fused_kernels_match_the_composed_model() {
    for tied in [true, false] {
        let cfg = test_config(tied);
        let params = Params::init(&cfg, 5, DType::F64, &Device::Cpu).unwrap();
        let mut model = Qwen2Model::new(&cfg, &params);
        assert!(model.fused());
        let (lf, gf) = {
            let l = loss_f64(&model);
            (l.to_scalar::<f64>().unwrap(), l.backward().unwrap())
        };
        model.set_fused(false);
        assert!(!model.fused());
        let (lc, gc) = {
            let l = loss_f64(&model);
            (l.to_scalar::<f64>().unwrap(), l.backward().unwrap())
        };
        assert!((lf - lc).abs() <= 1e-12 * lc.abs(), "loss {lf} vs {lc}");
        for (spec, var) in params.specs().iter().zip(params.vars()) {
            let get = |g: &candle_core::backprop::GradStore| -> Vec<f64> {
                g.get(var.as_tensor())
                    .unwrap_or_else(|| panic!("no gradient for {}", spec.name))
                    .flatten_all()
                    .unwrap()
                    .to_vec1()
                    .unwrap()
            };
            let (a, b) = (get(&gf), get(&gc));
            let scale = b.iter().fold(1e-30f64, |m, v| m.max(v.abs()));
            for (x, y) in a.iter().zip(&b) {
                assert!((x - y).abs() <= 1e-10 * scale, "{}: {x} vs {y}", spec.name);
            }
        }
    }
}

#[test]
fn every_parameter_receives_a_nonzero_gradient_in_f32() {
    let mut cfg = Qwen2Config::tiny();
    cfg.mm_hidden_size = Some(6);
    cfg.image_token_index = Some(3);
    let params = Params::init(&cfg, 0, DType::F32, &Device::Cpu).unwrap();
    let model = Qwen2Model::new(&cfg, &params);
    let (tokens, mask, img) = batch(&Device::Cpu, DType::F32);
    let targets = Targets::from_mask(&tokens, &mask, 2, 10);
    let input = LossInput {
        tokens: &tokens,
        rows: 2,
        seq_len: 10,
        images: Some(&img),
    };
    let loss = masked_loss(&model, input, &targets, targets.len()).unwrap();
    let grads = loss.backward().unwrap();
    for (spec, var) in params.specs().iter().zip(params.vars()) {
        let g = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("{} gets no gradient", spec.name));
        let n = g
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(n > 0.0, "{} gets a zero gradient", spec.name);
    }
}

#[test]
fn loading_names_the_mismatched_tensor_and_both_shapes() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = test_config(true);
    let params = Params::init(&cfg, 7, DType::F32, &Device::Cpu).unwrap();
    let ckpt = tmp.path().join("c");
    params.save(&ckpt, &cfg, DType::F32).unwrap();
    let mut other = cfg.clone();
    other.intermediate_size = 32;
    let e = Params::load(&ckpt, &other, 0, DType::F32, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("model.layers.0.mlp.gate_proj.weight")
            && e.contains("[40, 24]")
            && e.contains("[32, 24]"),
        "{e}"
    );
    let mut untied = cfg.clone();
    untied.tie_word_embeddings = false;
    let e = Params::load(&ckpt, &untied, 0, DType::F32, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(e.contains("lm_head.weight") && e.contains("missing"), "{e}");
    // A text-only Qwen2 checkpoint loads into a multimodal config with a fresh projector.
    let mut text = cfg.clone();
    text.mm_hidden_size = None;
    text.image_token_index = None;
    let tp = Params::init(&text, 1, DType::F32, &Device::Cpu).unwrap();
    let tdir = tmp.path().join("text");
    tp.save(&tdir, &text, DType::F32).unwrap();
    let mm = Params::load(&tdir, &cfg, 5, DType::F32, &Device::Cpu).unwrap();
    assert_eq!(mm.specs().len(), tp.specs().len() + 4);
}

#[test]
fn hugging_face_5_config_with_rope_parameters_loads() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = test_config(true);
    let params = Params::init(&cfg, 7, DType::F32, &Device::Cpu).unwrap();
    let ckpt = tmp.path().join("c");
    params.save(&ckpt, &cfg, DType::F32).unwrap();
    let path = ckpt.join("config.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let theta = v["rope_theta"].clone();
    v.as_object_mut().unwrap().remove("rope_theta");
    v["rope_parameters"] = serde_json::json!({"rope_theta": theta, "rope_type": "default"});
    v["layer_types"] = serde_json::json!(["full_attention", "full_attention"]);
    std::fs::write(&path, v.to_string()).unwrap();
    assert_eq!(read_config(&ckpt).unwrap(), {
        let mut c = cfg.clone();
        c.torch_dtype = Some("float32".into());
        c
    });
    v["use_sliding_window"] = serde_json::json!(true);
    std::fs::write(&path, v.to_string()).unwrap();
    let e = read_config(&ckpt).unwrap_err().to_string();
    assert!(
        e.contains("use_sliding_window") && e.contains("config.json"),
        "{e}"
    );
}
