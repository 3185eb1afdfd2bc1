//! The GPU path without a GPU: the CUDA C source of the fused sampling kernel, built as host
//! C++ (`-DMIXATLAS_HOST_EMULATION`, the same device functions run serially), against the CPU
//! sampler bit for bit; NVRTC compiles every kernel for sm_80 and sm_90 (feature `cuda`;
//! required when `MIXATLAS_REQUIRE_NVRTC=1`, as in CI); and `mixatlas gpu check` without a
//! driver fails with a message naming libcuda.

use std::path::{Path, PathBuf};
use std::process::Command;

use mixatlas::data::megatron::DType;
use mixatlas::data::sampler::{Mode, Sampler, SamplerConfig};
use mixatlas::gpu::layout::{
    emulate, write_cells, CorpusLayout, KernelOutput, StepParams, TokenBuf,
};

/// Builds the host emulation driver once per test process.
fn driver(dir: &Path) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let exe = dir.join("fused_sample_host");
    let out = Command::new(std::env::var("CXX").unwrap_or_else(|_| "c++".into()))
        .args([
            "-std=c++17",
            "-O1",
            "-Wall",
            "-Werror",
            "-DMIXATLAS_HOST_EMULATION",
            "-I",
        ])
        .arg(root.join("kernels"))
        .arg(root.join("tests/gpu_host_driver.cpp"))
        .arg("-o")
        .arg(&exe)
        .output()
        .expect("a C++ compiler (c++, or $CXX) is needed to build the kernel's host emulation");
    assert!(
        out.status.success(),
        "compiling kernels/fused_sample.cu as host C++:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    exe
}

fn put(buf: &mut Vec<u8>, v: u64) {
    buf.extend_from_slice(&v.to_le_bytes());
}

fn put_array<T: Copy>(buf: &mut Vec<u8>, v: &[T], to_bytes: impl Fn(T) -> Vec<u8>) {
    put(buf, v.len() as u64);
    for &x in v {
        buf.extend(to_bytes(x));
    }
}

/// Runs the CUDA C source on the host over `layout` and `p`.
fn run_host_kernel(exe: &Path, dir: &Path, layout: &CorpusLayout, p: &StepParams) -> KernelOutput {
    let mut b = Vec::new();
    let width = match layout.tokens {
        TokenBuf::U16(_) => 2,
        TokenBuf::U32(_) => 4,
    };
    for v in [
        width,
        p.mode as u64,
        p.seed,
        p.first_sample,
        p.row0 as u64,
        p.rows as u64,
        p.seq_len as u64,
        p.pad_token as u64,
        p.table_cells.len() as u64,
        0,
    ] {
        put(&mut b, v);
    }
    match &layout.tokens {
        TokenBuf::U16(t) => put_array(&mut b, t, |x| x.to_le_bytes().to_vec()),
        TokenBuf::U32(t) => put_array(&mut b, t, |x| x.to_le_bytes().to_vec()),
    }
    put_array(&mut b, &layout.mask, |x| vec![x]);
    let u64s = |x: u64| x.to_le_bytes().to_vec();
    let u32s = |x: u32| x.to_le_bytes().to_vec();
    put_array(&mut b, &layout.doc_start, u64s);
    put_array(&mut b, &layout.cell_doc_base, u64s);
    put_array(&mut b, &layout.cell_docs, u64s);
    put_array(&mut b, &p.counts, u64s);
    put_array(&mut b, &p.edges, u64s);
    put_array(&mut b, &p.table_cells, u32s);
    put_array(&mut b, &p.plan_cell, u32s);
    put_array(&mut b, &p.plan_ordinal, u64s);
    let (inp, outp) = (dir.join("in.bin"), dir.join("out.bin"));
    std::fs::write(&inp, &b).unwrap();
    let st = Command::new(exe).arg(&inp).arg(&outp).status().unwrap();
    assert!(st.success(), "host kernel failed: {st}");
    let o = std::fs::read(&outp).unwrap();
    let n = p.out_elems();
    let rows = p.rows as usize;
    assert_eq!(o.len(), 4 * n + n + 32 * rows);
    KernelOutput {
        tokens: o[..4 * n]
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
            .collect(),
        mask: o[4 * n..5 * n].to_vec(),
        docs: o[5 * n..]
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
            .collect(),
    }
}

#[test]
fn cuda_source_run_on_the_host_equals_the_cpu_sampler() {
    let dir = tempfile::tempdir().unwrap();
    let exe = driver(dir.path());
    for dtype in [DType::U16, DType::I32] {
        // Tiny cells wrap epochs within a few steps; an empty cell (weight 0) is skipped.
        let sub = dir.path().join(format!("{dtype:?}"));
        let cells = write_cells(&sub, dtype, &[2, 37, 0, 9, 1, 120], 70, 5).unwrap();
        let layout = CorpusLayout::build(&cells).unwrap();
        let weights = [0.2, 0.3, 0.0, 0.15, 0.05, 0.3];
        for mode in [Mode::Iid, Mode::Blend] {
            for (world, batch, seq_len) in [(1usize, 12usize, 64usize), (3, 12, 50), (2, 8, 7)] {
                let mut cfg = SamplerConfig::new(batch, seq_len);
                cfg.seed = 0xDEAD_BEEF_1234;
                cfg.mode = mode;
                cfg.pad_token = 17;
                let mut samplers: Vec<Sampler<'_>> = (0..world)
                    .map(|_| Sampler::new(&cells, &weights, cfg.clone()).unwrap())
                    .collect();
                for step in 0..5 {
                    for (rank, s) in samplers.iter_mut().enumerate() {
                        let p = StepParams::for_step(s, rank, world).unwrap();
                        let host = run_host_kernel(&exe, dir.path(), &layout, &p);
                        let cpu = s.next_batch(rank, world).unwrap();
                        let case = format!(
                            "{dtype:?} {mode} B={batch} T={seq_len} world {world} rank {rank} step {step}"
                        );
                        assert_eq!(host.first_difference(&cpu), None, "CUDA source: {case}");
                        let emulated = emulate(&layout, &p);
                        assert_eq!(emulated.first_difference(&cpu), None, "emulation: {case}");
                    }
                }
            }
        }
    }
}

#[cfg(feature = "cuda")]
mod cuda {
    use std::process::Command;

    use mixatlas::gpu::{device, nvrtc, KERNELS};

    #[test]
    fn every_kernel_compiles_with_nvrtc_for_sm80_and_sm90() {
        if !nvrtc::nvrtc_present() {
            assert!(
                std::env::var("MIXATLAS_REQUIRE_NVRTC").as_deref() != Ok("1"),
                "MIXATLAS_REQUIRE_NVRTC=1 but libnvrtc cannot be loaded (LD_LIBRARY_PATH={:?})",
                std::env::var("LD_LIBRARY_PATH").ok()
            );
            eprintln!(
                "skipped: no libnvrtc on the library path (scripts/nvrtc-check.sh fetches one)"
            );
            return;
        }
        for k in KERNELS {
            for arch in ["sm_80", "sm_90"] {
                let c = nvrtc::compile(k, arch).unwrap();
                c.validate(k).unwrap();
            }
        }
    }

    /// cudarc's NCCL loading and `ncclGetUniqueId` (which needs no GPU), where NCCL is
    /// installed: the first step of `NcclComm::new`.
    #[test]
    fn nccl_unique_id_where_nccl_is_installed() {
        if !mixatlas::gpu::nccl::nccl_present() {
            eprintln!("skipped: no libnccl.so on the library path");
            return;
        }
        let id = cudarc::nccl::Id::new().expect("ncclGetUniqueId");
        assert!(id.internal().iter().any(|&c| c != 0));
    }

    #[test]
    fn gpu_check_without_a_driver_names_libcuda() {
        if device::driver_present() {
            eprintln!("skipped: this machine has a CUDA driver");
            return;
        }
        let out = Command::new(env!("CARGO_BIN_EXE_mixatlas"))
            .args(["gpu", "check", "--runs", "20"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(err.contains("no CUDA driver (libcuda.so) found"), "{err}");
    }
}

#[cfg(not(feature = "cuda"))]
#[test]
fn gpu_subcommands_name_the_feature_they_need() {
    let out = Command::new(env!("CARGO_BIN_EXE_mixatlas"))
        .args(["gpu", "compile-kernels"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--features cuda"));
}

#[cfg(not(feature = "cuda-train"))]
#[test]
fn train_on_cuda_names_the_feature_it_needs() {
    let out = Command::new(env!("CARGO_BIN_EXE_mixatlas"))
        .args([
            "train",
            "--corpus",
            "no-such-corpus",
            "--out",
            "no-such-run",
            "--device",
            "cuda",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("--features cuda-train"), "{err}");
}
