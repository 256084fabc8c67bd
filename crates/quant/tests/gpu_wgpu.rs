//! WebGPU fused dequantize-matmul of every quantized format (ggml Q8_0 / Q4_0 / Q4_K /
//! Q6_K, NF4 / FP4, LLM.int8, FP8 E4M3 / E5M2) against the CPU oracle; the cases live in
//! `common/gpu_cases.rs`, shared with `gpu_cuda.rs`.
//!
//! Runs on any wgpu adapter (Mesa lavapipe on CPU-only machines). Without an adapter the
//! tests print a skip reason, unless `LINATTN_REQUIRE_WGPU=1` or `LINATTN_REQUIRE_GPU=1`
//! makes them fail. Tolerance: relative RMS error 1e-5 for f32 x; for f16 / bf16 x the
//! reference sees the same rounded x and the output is rounded once (5e-3 / 2e-2).

#[macro_use]
#[path = "common/gpu_cases.rs"]
mod gpu_cases;

use std::io::Write;

use linattn_tensor::Device;
use linattn_tensor::wgpu::WgpuDevice;

fn required() -> bool {
    linattn_tensor::wgpu_required()
}

fn device() -> Option<Device> {
    match WgpuDevice::open_default() {
        Ok(d) => Some(Device::Wgpu(d)),
        Err(e) => {
            assert!(!required(), "wgpu device required but unavailable: {e}");
            let _ = writeln!(std::io::stderr(), "skipping wgpu test: {e}");
            None
        }
    }
}

gpu_case_tests!(device, linattn_quant::gpu::wgpu::ggml_matmul);
