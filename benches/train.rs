//! Training throughput of the built-in trainer against the same model in PyTorch on the CPU
//! with the same threads (`benches/peers/torch_train.py`, run side by side).
//!
//! One step = forward, masked next-token cross-entropy, backward, gradient flattening,
//! global-norm clipping and AdamW — what `mixatlas train` does per step — on random tokens
//! with 8 image tokens per row (positions 1..=8) replaced by projected random patch features
//! and left out of the loss, exactly as the peer does. Our step goes through the trainer's
//! `batch_gradients` (`TRAIN_MICRO` sets rows per micro-batch; default the whole batch).
//! Reported: median step time, tokens/s, and the forward+backward / optimiser split.
//!
//! `cargo bench --bench train` (env: `TRAIN_PRESETS=tiny,small,gpt-5m`, `TRAIN_THREADS=2`,
//! `TRAIN_BATCH=8`, `TRAIN_SEQ=256`, `TRAIN_STEPS=10`; `PYTHON` for the peer, which needs
//! `pip install torch`; `TRAIN_FUSED=0` for candle's compositions instead of the fused kernels
//! and `TRAIN_MALLOC=default` for glibc's default malloc thresholds, i.e. the trainer before
//! the speed work). Under `cargo test` it runs one step per preset, without the peer.

mod common;

use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use mixatlas::model::{ImageInput, Params, Qwen2Config, Qwen2Model};
use mixatlas::rng::SplitMix64;
use mixatlas::train::loss::Targets;
use mixatlas::train::optim::{clip_global_norm, AdamW, AdamWConfig};
use mixatlas::train::trainer::{batch_gradients, GradBatch};

const IMAGE_DIM: usize = 32;
const IMAGE_TOKENS: usize = 8;

fn preset(name: &str) -> Qwen2Config {
    let mut c = match name {
        "gpt-5m" => {
            let mut c = Qwen2Config::small();
            c.intermediate_size = 1024;
            c.num_key_value_heads = 8;
            c
        }
        other => Qwen2Config::preset(other).expect("preset"),
    };
    c.mm_hidden_size = Some(IMAGE_DIM);
    c.image_token_index = Some(3);
    c
}

fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

struct Split {
    step: f64,
    forward: f64,
    backward: f64,
    optimizer: f64,
}

fn bench_ours(cfg: &Qwen2Config, b: usize, t: usize, warmup: usize, steps: usize) -> Split {
    let dev = Device::Cpu;
    let params = Params::init(cfg, 0, DType::F32, &dev).unwrap();
    let mut model = Qwen2Model::new(cfg, &params);
    // TRAIN_FUSED=0 measures the compositions of elementary candle ops instead of the fused
    // kernels (the state before they existed).
    model.set_fused(env_or("TRAIN_FUSED", 1) != 0);
    let mut opt = AdamW::new(
        &params,
        AdamWConfig {
            beta2: 0.999,
            ..AdamWConfig::default()
        },
    )
    .unwrap();
    let mut rng = SplitMix64::new(1);
    let batches: Vec<(Vec<u32>, Vec<u8>, Vec<f32>)> = (0..4)
        .map(|_| {
            let mut tokens: Vec<u32> = (0..b * t)
                .map(|_| 5 + rng.below(cfg.vocab_size as u64 - 5) as u32)
                .collect();
            let mut mask = vec![1u8; b * t];
            for r in 0..b {
                for p in 1..=IMAGE_TOKENS {
                    tokens[r * t + p] = 3;
                    mask[r * t + p] = 0;
                }
                mask[r * t] = 0;
            }
            let feats = (0..b * IMAGE_TOKENS * IMAGE_DIM)
                .map(|_| rng.normal() as f32)
                .collect();
            (tokens, mask, feats)
        })
        .collect();
    let (mut fw, mut bw, mut op, mut total) = (vec![], vec![], vec![], vec![]);
    for i in 0..warmup + steps {
        let (tokens, mask, feats) = &batches[i % batches.len()];
        let t0 = Instant::now();
        // The trainer's own path (`batch_gradients`), one micro-batch unless TRAIN_MICRO says
        // otherwise, image patches placed per micro-batch.
        let micro = std::env::var("TRAIN_MICRO")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(b);
        let targets = Targets::from_mask(tokens, mask, b, t);
        let rows = GradBatch {
            tokens,
            mask,
            rows: b,
            seq_len: t,
        };
        let (_loss, mut flat) = batch_gradients(
            &model,
            &params,
            rows,
            micro,
            targets.len(),
            &mut |r0, r1| {
                let positions: Vec<u32> = (0..r1 - r0)
                    .flat_map(|r| (1..=IMAGE_TOKENS).map(move |p| (r * t + p) as u32))
                    .collect();
                let f = &feats[r0 * IMAGE_TOKENS * IMAGE_DIM..r1 * IMAGE_TOKENS * IMAGE_DIM];
                Ok(Some(ImageInput {
                    features: Tensor::from_slice(f, ((r1 - r0) * IMAGE_TOKENS, IMAGE_DIM), &dev)
                        .unwrap(),
                    positions,
                }))
            },
        )
        .unwrap();
        let t1 = Instant::now();
        let t2 = t1;
        clip_global_norm(&mut flat, 1.0);
        opt.step(&params, &flat, 1e-3).unwrap();
        let t3 = Instant::now();
        if i >= warmup {
            fw.push((t1 - t0).as_secs_f64());
            bw.push((t2 - t1).as_secs_f64());
            op.push((t3 - t2).as_secs_f64());
            total.push((t3 - t0).as_secs_f64());
        }
    }
    Split {
        step: median(total),
        forward: median(fw),
        backward: median(bw),
        optimizer: median(op),
    }
}

fn main() {
    let benchmarking = std::env::args().any(|a| a == "--bench");
    // As `mixatlas` does at start (TRAIN_SPIN=default keeps candle's spinning thread pool).
    if std::env::var("TRAIN_SPIN").as_deref() != Ok("default") {
        mixatlas::train::tune_threads();
    }
    // As `mixatlas train` does (TRAIN_MALLOC=default keeps glibc's defaults).
    if std::env::var("TRAIN_MALLOC").as_deref() != Ok("default") {
        mixatlas::train::tune_allocator();
    }
    let presets: String = env_or("TRAIN_PRESETS", "tiny,small,gpt-5m".to_string());
    let threads: usize = env_or("TRAIN_THREADS", 2);
    // candle sizes its thread pool from this on first use.
    std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
    let b: usize = env_or("TRAIN_BATCH", 8);
    let t: usize = env_or("TRAIN_SEQ", 256);
    let steps: usize = if benchmarking {
        env_or("TRAIN_STEPS", 10)
    } else {
        1
    };
    let warmup = if benchmarking { 3 } else { 0 };
    println!("training step, B = {b}, T = {t}, {threads} thread(s), median of {steps} steps");
    println!(
        "| preset | params | ours tokens/s | (fwd+bwd / - / opt ms) | PyTorch tokens/s | ratio |"
    );
    println!("| --- | --- | --- | --- | --- | --- |");
    for name in presets.split(',') {
        let cfg = preset(name);
        let split = bench_ours(&cfg, b, t, warmup, steps);
        let ours = (b * t) as f64 / split.step;
        let peer = if benchmarking {
            common::run_python_peer(
                "peers/torch_train.py",
                &[
                    "--preset".into(),
                    name.into(),
                    "--batch".into(),
                    b.to_string(),
                    "--seq".into(),
                    t.to_string(),
                    "--threads".into(),
                    threads.to_string(),
                    "--steps".into(),
                    steps.to_string(),
                ],
                threads,
            )
        } else {
            None
        };
        let peer_tps = peer.as_ref().and_then(|p| p["tokens_per_s"].as_f64());
        println!(
            "| {name} | {:.2} M | {ours:.0} | ({:.0} / {:.0} / {:.0}) | {} | {} |",
            cfg.num_params() as f64 / 1e6,
            split.forward * 1e3,
            split.backward * 1e3,
            split.optimizer * 1e3,
            peer_tps.map_or("—".into(), |p| format!("{p:.0}")),
            peer_tps.map_or("—".into(), |p| format!("{:.2}×", ours / p)),
        );
    }
}
