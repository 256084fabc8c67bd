//! linattn-quant: quantized weights for linattn on the CPU.
//!
//! - [`ggml`]: Q8_0, Q4_0, Q4_K, Q6_K blocks (quantize, dequantize), bit-exact with
//!   ggml's reference quantizers.
//! - [`bnb`]: bitsandbytes NF4/FP4 blockwise 4-bit (optionally double-quantized
//!   absmax) and LLM.int8 (row-wise int8 with mixed-precision outlier matmul).
//! - [`fp8`]: FP8 E4M3 (fn) / E5M2 with a per-tensor scale or 128x128 block scales.
//! - [`cpu`]: fused dequantize-matvec/matmul kernels (rayon + AVX-512 or AVX2/FMA with
//!   a scalar fallback, selected at run time).
//! - [`weight`]: [`QuantizedWeight`], one type over every format, with tensor-level
//!   `matmul` that validates inputs and dispatches on the device.
//! - [`gpu`]: WebGPU and CUDA fused dequantize-matvec/matmul for every format (LLM.int8
//!   with its outlier decomposition).
//! - [`gguf`]: GGUF v3 reader (memory-mapped, zero-copy tensors) and writer.
//! - [`checkpoint`]: quantized safetensors checkpoints in Hugging Face key layouts.
//! - [`cli_support`]: functions behind `linattn quant inspect|dequant|quantize`.
//!
//! Errors are [`linattn_tensor::Error`]; bad input never panics.

pub mod bnb;
pub mod bytes;
pub mod checkpoint;
pub mod cli_support;
pub mod cpu;
pub mod fp8;
pub mod ggml;
pub mod gguf;
pub mod gpu;
pub mod weight;

pub use bytes::ByteView;
pub use cpu::CpuKernel;
pub use ggml::GgmlFormat;
pub use weight::{QuantFormat, QuantizedWeight};
