//! Run-time compilation of `kernels/*.cu` with NVRTC (cudarc's bindings, loaded at run time).
//!
//! One compile for a real architecture (`sm_90`) yields both the PTX (checked in CI: its
//! `.target` and entry points) and the CUBIN (what the device loads: a CUBIN needs no PTX JIT,
//! so a driver older than the NVRTC that produced it still loads it). NVRTC needs no GPU, so
//! CI compiles every kernel for sm_80 and sm_90 on CPU-only machines
//! (`mixatlas gpu compile-kernels`, `scripts/nvrtc-check.sh`).

use std::ffi::{c_char, CStr, CString};

use cudarc::nvrtc::{result, sys};

use super::{GpuError, KernelSource, NVRTC_OPTIONS};

const NVRTC_HINT: &str = "install the CUDA toolkit, or the PyPI wheel nvidia-cuda-nvrtc-cu12 and put its nvidia/cuda_nvrtc/lib on LD_LIBRARY_PATH (scripts/nvrtc-check.sh does this)";

/// Whether the NVRTC library can be loaded (cudarc panics on first use otherwise).
pub fn nvrtc_present() -> bool {
    // SAFETY: only tries to dlopen the candidate library names.
    unsafe { sys::is_culib_present() }
}

/// [`GpuError::NoLibrary`] unless NVRTC can be loaded.
pub fn require_nvrtc() -> Result<(), GpuError> {
    if nvrtc_present() {
        Ok(())
    } else {
        Err(GpuError::NoLibrary {
            library: "NVRTC (libnvrtc.so)",
            hint: NVRTC_HINT,
        })
    }
}

/// NVRTC's version `(major, minor)`.
pub fn nvrtc_version() -> Result<(i32, i32), GpuError> {
    require_nvrtc()?;
    let (mut major, mut minor) = (0, 0);
    // SAFETY: two valid out-pointers; the library is present (checked above).
    unsafe { sys::nvrtcVersion(&mut major, &mut minor) }
        .result()
        .map_err(|e| compile_error("(version)", "-", e, String::new()))?;
    Ok((major, minor))
}

/// A kernel compiled for one architecture.
#[derive(Debug, Clone)]
pub struct Compiled {
    /// The kernel file.
    pub file: &'static str,
    /// `sm_XY`.
    pub arch: String,
    /// The PTX text.
    pub ptx: String,
    /// The CUBIN (ELF) image.
    pub cubin: Vec<u8>,
}

impl Compiled {
    /// Checks the PTX targets `arch` and defines every entry point, and the CUBIN is an ELF
    /// image; the first problem, described.
    pub fn validate(&self, kernel: &KernelSource) -> Result<(), KernelCheckError> {
        let file = self.file;
        let target = format!(".target {}", self.arch);
        if !self
            .ptx
            .lines()
            .any(|l| l.trim_start().starts_with(&target))
        {
            return Err(KernelCheckError::NoTarget { file, target });
        }
        for e in kernel.entries {
            let entry = format!(".entry {e}(");
            if !self.ptx.contains(&entry) {
                return Err(KernelCheckError::NoEntry { file, entry });
            }
        }
        if !self.cubin.starts_with(b"\x7fELF") {
            return Err(KernelCheckError::NotElf {
                file,
                arch: self.arch.clone(),
                bytes: self.cubin.len(),
            });
        }
        Ok(())
    }
}

/// What [`Compiled::validate`] finds wrong with a compiled kernel.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KernelCheckError {
    /// The PTX does not target the architecture it was compiled for.
    #[error("{file}: PTX has no `{target}` line")]
    NoTarget {
        /// The kernel file.
        file: &'static str,
        /// The missing line, `.target sm_XY`.
        target: String,
    },
    /// The PTX lacks an entry point of the kernel source.
    #[error("{file}: PTX has no `{entry}`")]
    NoEntry {
        /// The kernel file.
        file: &'static str,
        /// The missing declaration, `.entry name(`.
        entry: String,
    },
    /// The CUBIN is not an ELF image.
    #[error("{file}: the CUBIN for {arch} is not an ELF image ({bytes} bytes)")]
    NotElf {
        /// The kernel file.
        file: &'static str,
        /// `sm_XY`.
        arch: String,
        /// Its size.
        bytes: usize,
    },
}

fn compile_error(file: &str, arch: &str, e: result::NvrtcError, log: String) -> GpuError {
    GpuError::Compile {
        file: file.to_string(),
        arch: arch.to_string(),
        reason: format!("{:?}", e.0),
        log,
    }
}

/// An NVRTC program, destroyed on drop.
struct Program {
    prog: sys::nvrtcProgram,
    _src: CString,
    _name: CString,
}

impl Drop for Program {
    fn drop(&mut self) {
        // SAFETY: created by create_program and destroyed only here. A failure to free is
        // ignored (nothing to recover).
        let _ = unsafe { result::destroy_program(self.prog) };
    }
}

impl Program {
    fn log(&self) -> String {
        // SAFETY: a live program.
        match unsafe { result::get_program_log(self.prog) } {
            Ok(raw) => {
                let bytes: Vec<u8> = raw
                    .iter()
                    .take_while(|&&c| c != 0)
                    .map(|&c| c as u8)
                    .collect();
                String::from_utf8_lossy(&bytes).into_owned()
            }
            Err(e) => format!("(no log: {e:?})"),
        }
    }

    fn cubin(&self) -> Result<Vec<u8>, result::NvrtcError> {
        let mut size = 0usize;
        // SAFETY: a live, compiled program; the buffer has the size NVRTC reports.
        unsafe {
            sys::nvrtcGetCUBINSize(self.prog, &mut size).result()?;
            let mut buf = vec![0u8; size];
            sys::nvrtcGetCUBIN(self.prog, buf.as_mut_ptr() as *mut c_char).result()?;
            Ok(buf)
        }
    }
}

/// `sm_XY` for a compute capability.
pub fn arch_for(major: i32, minor: i32) -> String {
    format!("sm_{major}{minor}")
}

/// Compiles `kernel` for `arch` (`sm_80`, `sm_90`, …) with [`NVRTC_OPTIONS`].
pub fn compile(kernel: &KernelSource, arch: &str) -> Result<Compiled, GpuError> {
    require_nvrtc()?;
    let valid = arch.strip_prefix("sm_").is_some_and(|n| {
        n.len() >= 2
            && n.chars().all(|c| c.is_ascii_alphanumeric())
            && n.starts_with(|c: char| c.is_ascii_digit())
    });
    if !valid {
        return Err(GpuError::Unsupported {
            what: format!("architecture {arch:?}"),
            expected: "a real architecture such as sm_80 or sm_90".into(),
        });
    }
    let src = CString::new(kernel.source).map_err(|_| GpuError::Layout {
        reason: format!("{} contains a NUL byte", kernel.file),
    })?;
    let name = CString::new(kernel.file).expect("kernel file names have no NUL");
    let prog = result::create_program(&src, Some(name.as_c_str()))
        .map_err(|e| compile_error(kernel.file, arch, e, String::new()))?;
    let prog = Program {
        prog,
        _src: src,
        _name: name,
    };
    let mut options: Vec<String> = vec![format!("--gpu-architecture={arch}")];
    options.extend(NVRTC_OPTIONS.iter().map(|s| s.to_string()));
    // SAFETY: a live program; options are plain strings.
    if let Err(e) = unsafe { result::compile_program(prog.prog, &options) } {
        return Err(compile_error(kernel.file, arch, e, prog.log()));
    }
    // SAFETY: a live, compiled program.
    let raw = unsafe { result::get_ptx(prog.prog) }
        .map_err(|e| compile_error(kernel.file, arch, e, prog.log()))?;
    // SAFETY: NVRTC's PTX is NUL-terminated.
    let ptx = unsafe { CStr::from_ptr(raw.as_ptr()) }
        .to_string_lossy()
        .into_owned();
    let cubin = prog
        .cubin()
        .map_err(|e| compile_error(kernel.file, arch, e, prog.log()))?;
    Ok(Compiled {
        file: kernel.file,
        arch: arch.to_string(),
        ptx,
        cubin,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_architectures_are_refused_before_nvrtc_is_needed() {
        for a in ["compute_80", "sm_", "80", "sm_8"] {
            match compile(&super::super::FUSED_SAMPLE, a) {
                Err(GpuError::Unsupported { .. }) | Err(GpuError::NoLibrary { .. }) => {}
                other => panic!("{a}: {other:?}"),
            }
        }
    }
}
