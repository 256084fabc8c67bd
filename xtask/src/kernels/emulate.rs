//! `cargo xtask kernels --emulate`: runs the CUDA kernels on the CPU.
//!
//! Each `xtask/src/kernels/emulate/*.cpp` includes kernel sources with `host_shim.h`
//! (threads for CUDA threads, barriers for `__syncthreads` and warp shuffles) and compares
//! them with double-precision references. It is built with the host C++ compiler
//! (`$CXX` or `c++`, C++20) and `-DLINATTN_HOST_EMULATION`, which swaps the inline-PTX
//! f16 conversions in `linattn_common.cuh` for `_Float16`. This checks index math,
//! bounds, grid-stride loops and synchronization without a GPU; it does not replace the
//! GPU conformance suite.

use std::path::Path;
use std::process::Command;

pub fn run(root: &Path) -> Result<(), String> {
    let dir = root.join("xtask/src/kernels/emulate");
    let mut programs: Vec<_> = std::fs::read_dir(&dir)
        .map_err(|e| format!("read {}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "cpp"))
        .collect();
    programs.sort();
    let compiler = std::env::var("CXX").ok().filter(|c| !c.is_empty()).unwrap_or_else(|| "c++".into());
    let out_dir = super::toolchain::tools_dir(root).join("emulate");
    std::fs::create_dir_all(&out_dir).map_err(|e| format!("create {}: {e}", out_dir.display()))?;
    let mut failed = Vec::new();
    for program in &programs {
        let stem = program.file_stem().and_then(|s| s.to_str()).unwrap_or("emulate");
        let binary = out_dir.join(stem);
        println!("kernels: emulating {} ({compiler})", program.display());
        let status = Command::new(&compiler)
            .args(["-std=c++20", "-O1", "-pthread", "-Wno-unknown-pragmas", "-DLINATTN_HOST_EMULATION"])
            .arg(format!("-I{}", root.join("kernels/cuda/common").display()))
            .arg(program)
            .arg("-o")
            .arg(&binary)
            .status()
            .map_err(|e| format!("cannot run {compiler}: {e} (set CXX to a C++20 compiler)"))?;
        if !status.success() {
            return Err(format!("{compiler} failed on {} ({status})", program.display()));
        }
        let status = Command::new(&binary).status().map_err(|e| format!("run {}: {e}", binary.display()))?;
        if !status.success() {
            failed.push(stem.to_string());
        }
    }
    if failed.is_empty() { Ok(()) } else { Err(format!("emulated kernels failed: {}", failed.join(", "))) }
}
