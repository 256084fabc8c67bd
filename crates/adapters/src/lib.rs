//! linattn-adapters: peft-compatible LoRA and DoRA for linattn.
//!
//! - [`config`]: `adapter_config.json` (target / rank / alpha patterns, rsLoRA, DoRA).
//! - [`peft_io`]: load and save peft adapter directories (`adapter_model.safetensors`).
//! - [`lora`]: the weights of one module ([`LoraModule`]) and one adapter ([`LoraAdapter`]).
//! - [`base`]: [`BaseLinear`], the frozen layer an adapter rides on ([`DenseLinear`],
//!   and `linattn_quant::QuantizedWeight` for QLoRA).
//! - [`forward`]: fused unmerged forward on CPU and its naive reference.
//! - [`merge`]: merge / unmerge a module into its base weight (LoRA and DoRA).
//! - [`checkpoint`]: streaming merge of an adapter into a safetensors checkpoint.
//! - [`multi`]: [`AdapterSet`] (several named adapters, per-row choice) and weighted
//!   combinations (`cat`, `linear`, `svd`), with [`svd`] a small Jacobi SVD.
//! - [`gguf_export`]: LoRA adapters as GGUF adapter files (llama.cpp layout).
//! - [`train`]: gradients, peft initialization, dropout.
//! - [`cli_support`]: entry points for the `linattn lora` commands.
//! - [`device`]: the one place adapter ops pick a device.
//! - [`gpu`]: fused unmerged LoRA forward kernels on CUDA and WebGPU.
//!
//! Math and numerics: `docs/adapters.md`.

pub mod base;
pub mod checkpoint;
pub mod cli_support;
pub mod config;
pub mod device;
pub mod forward;
pub mod gguf_export;
pub mod gpu;
pub mod lora;
pub mod merge;
pub mod multi;
pub mod peft_io;
pub mod svd;
pub mod train;

pub use base::{BaseLinear, DenseLinear, QuantizedLinear};
pub use checkpoint::{MergeReport, merge_checkpoint};
pub use config::{LoraConfig, TargetModules};
pub use forward::{lora_embedding_forward, lora_forward, lora_forward_reference};
pub use gguf_export::{GgufExportReport, export_gguf};
pub use lora::{LoraAdapter, LoraModule, ModuleKind};
pub use merge::{merge_dora_weight, merge_quantized, merge_weight, unmerge_weight};
pub use multi::{AdapterSet, Combination};
pub use peft_io::{load_adapter, save_adapter};
