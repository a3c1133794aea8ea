//! With the `cuda` feature, compiles the kernels in `kernels/` to PTX with nvcc (`NVCC`, else
//! `$CUDA_HOME/bin/nvcc`, `$CUDA_PATH/bin/nvcc`, else `nvcc` on the PATH) for the compute
//! capability in `CUDA_COMPUTE_CAP` (e.g. 90), else the first GPU's as `nvidia-smi` reports it.
//! The driver compiles the PTX for the GPU it runs on when xp first loads it.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const KERNELS: [&str; 3] = ["adamw", "cross_entropy", "rms_norm"];

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-changed=kernels");
    for var in ["NVCC", "CUDA_HOME", "CUDA_PATH", "CUDA_COMPUTE_CAP"] {
        println!("cargo::rerun-if-env-changed={var}");
    }
    if env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let nvcc = nvcc();
    let cap = compute_cap(&nvcc);
    for name in KERNELS {
        let source = Path::new("kernels").join(format!("{name}.cu"));
        let ptx = out.join(format!("{name}.ptx"));
        let status = Command::new(&nvcc)
            .args(["--ptx", "-O3", "-std=c++17", "-I", "kernels"])
            .arg(format!("-arch=compute_{cap}"))
            .arg(&source)
            .arg("-o")
            .arg(&ptx)
            .status()
            .unwrap_or_else(|e| fail(&format!("cannot run `{}`: {e}", nvcc.display())));
        if !status.success() {
            fail(&format!("nvcc failed on {} ({status})", source.display()));
        }
    }
}

fn nvcc() -> PathBuf {
    if let Some(nvcc) = env::var_os("NVCC") {
        return PathBuf::from(nvcc);
    }
    for root in ["CUDA_HOME", "CUDA_PATH"] {
        if let Some(root) = env::var_os(root) {
            let nvcc = Path::new(&root).join("bin").join("nvcc");
            if nvcc.is_file() {
                return nvcc;
            }
        }
    }
    PathBuf::from("nvcc")
}

/// The compute capability as digits (`90`), without the `sm_`/`a` decorations.
fn compute_cap(nvcc: &Path) -> String {
    let cap = match env::var("CUDA_COMPUTE_CAP") {
        Ok(cap) => cap,
        Err(_) => Command::new("nvidia-smi")
            .args(["--query-gpu=compute_cap", "--format=csv,noheader"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.lines().next().map(|l| l.trim().replace('.', "")))
            .unwrap_or_else(|| {
                fail(&format!(
                    "set CUDA_COMPUTE_CAP (e.g. 90 for H100) to build the kernels with {}: no GPU was found to ask",
                    nvcc.display()
                ))
            }),
    };
    let digits: String = cap.chars().filter(char::is_ascii_digit).collect();
    if digits.is_empty() {
        fail(&format!(
            "CUDA_COMPUTE_CAP `{cap}` is not a compute capability such as 90"
        ));
    }
    digits
}

fn fail(message: &str) -> ! {
    eprintln!("error: {message}");
    std::process::exit(1);
}
