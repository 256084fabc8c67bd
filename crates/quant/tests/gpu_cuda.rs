//! CUDA fused dequantize-matmul of every quantized format (ggml Q8_0 / Q4_0 / Q4_K /
//! Q6_K, NF4 / FP4, LLM.int8, FP8 E4M3 / E5M2) against the CPU oracle; the cases live in
//! `common/gpu_cases.rs`, shared with `gpu_wgpu.rs`.
//!
//! Needs a CUDA device: without one the tests print a skip reason, unless
//! `LINATTN_REQUIRE_CUDA=1` or `LINATTN_REQUIRE_GPU=1` makes them fail. Tolerance:
//! relative RMS error 1e-5 for f32 x; for f16 / bf16 x the reference sees the same
//! rounded x and the output is rounded once (5e-3 / 2e-2).

#[macro_use]
#[path = "common/gpu_cases.rs"]
mod gpu_cases;

use std::io::Write;

use linattn_tensor::Device;
use linattn_tensor::cuda::CudaDevice;

fn required() -> bool {
    linattn_tensor::cuda_required()
}

fn device() -> Option<Device> {
    match CudaDevice::open(0) {
        Ok(d) => Some(Device::Cuda(d)),
        Err(e) => {
            assert!(!required(), "CUDA device required but unavailable: {e}");
            let _ = writeln!(std::io::stderr(), "skipping CUDA test: {e}");
            None
        }
    }
}

gpu_case_tests!(device, linattn_quant::gpu::cuda::ggml_matmul);
