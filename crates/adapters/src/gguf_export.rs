//! Export of a LoRA adapter as a GGUF adapter file (llama.cpp's `convert_lora_to_gguf`
//! layout), written with `linattn_quant::gguf::GgufWriter`.
//!
//! Metadata: `general.type = "adapter"`, `adapter.type = "lora"`, `adapter.lora.alpha`
//! (f32, the config's `lora_alpha`), and `general.architecture` when given. Tensors, per
//! module `<path>` (peft's module path, e.g. `model.layers.0.self_attn.q_proj`; no
//! llama.cpp `blk.N.*` renaming, which needs the model architecture's tensor map):
//!
//! | name | PyTorch shape | ggml dims (innermost first) |
//! | --- | --- | --- |
//! | `<path>.weight.lora_a` | `[r, in]` | `[in, r]` |
//! | `<path>.weight.lora_b` | `[out, r]` | `[r, out]` |
//!
//! Embedding modules follow convert_lora_to_gguf's `token_embd` rule: `lora_a` is peft's
//! `lora_embedding_A` transposed (`[num_embeddings, r]`), `lora_b` is `lora_embedding_B`
//! (`[dim, r]`).
//!
//! Scaling: llama.cpp applies `alpha / r` per tensor pair (`r` read from the tensor
//! shapes; `1` when alpha is 0). A module whose scaling `s` differs from that (rsLoRA,
//! `rank_pattern`, `alpha_pattern`, combined adapters) gets `B` multiplied by
//! `s / (alpha / r)` so that llama.cpp's product equals `s B A` exactly up to one f32
//! rounding. DoRA adapters and `modules_to_save` tensors have no GGUF LoRA form and are
//! rejected. Tensors are f32 or f16 (`dtype`).

use std::path::Path;

use linattn_quant::gguf::{GgufValue, GgufWriter};
use linattn_tensor::{DType, Error, Result, Tensor};

use crate::lora::{LoraAdapter, ModuleKind};

/// What [`export_gguf`] wrote.
#[derive(Clone, Debug, PartialEq)]
pub struct GgufExportReport {
    /// Modules exported (two tensors each).
    pub modules: usize,
    /// `adapter.lora.alpha`.
    pub alpha: f32,
    /// Modules whose `B` was rescaled to carry a scaling other than `alpha / r`.
    pub rescaled: Vec<String>,
    pub dtype: DType,
    pub bytes: usize,
}

/// The `alpha / r` scaling llama.cpp applies to a module of rank `r`.
pub fn llama_cpp_scaling(alpha: f32, rank: usize) -> f32 {
    if alpha == 0.0 { 1.0 } else { alpha / rank as f32 }
}

/// Builds the GGUF writer for `adapter` (see the module docs); `arch` sets
/// `general.architecture`.
pub fn adapter_to_gguf(adapter: &LoraAdapter, dtype: DType, arch: Option<&str>) -> Result<(GgufWriter, Vec<String>)> {
    if !matches!(dtype, DType::F32 | DType::F16) {
        return Err(Error::invalid(format!("export_gguf: tensor dtype must be f32 or f16, got {dtype}")));
    }
    if adapter.is_dora() {
        return Err(Error::invalid("export_gguf: DoRA adapters have no GGUF LoRA form (llama.cpp has no magnitudes)"));
    }
    if !adapter.saved_modules.is_empty() {
        let names: Vec<&String> = adapter.saved_modules.keys().collect();
        return Err(Error::invalid(format!(
            "export_gguf: the adapter saves full tensors {names:?} (modules_to_save), which GGUF LoRA files cannot hold"
        )));
    }
    if adapter.modules.is_empty() {
        return Err(Error::invalid("export_gguf: the adapter has no modules"));
    }
    let alpha = adapter.config.lora_alpha as f32;
    if !alpha.is_finite() {
        return Err(Error::invalid(format!(
            "export_gguf: lora_alpha {} is not a finite f32",
            adapter.config.lora_alpha
        )));
    }
    let mut writer = GgufWriter::new();
    if let Some(arch) = arch {
        writer.add_metadata("general.architecture", GgufValue::String(arch.to_string()));
    }
    writer.add_metadata("general.type", GgufValue::String("adapter".into()));
    writer.add_metadata("adapter.type", GgufValue::String("lora".into()));
    writer.add_metadata("adapter.lora.alpha", GgufValue::F32(alpha));
    let mut rescaled = Vec::new();
    for (path, m) in &adapter.modules {
        let (r, n_out) = (m.rank(), m.out_features());
        let factor = m.scaling() / llama_cpp_scaling(alpha, r);
        if !factor.is_finite() {
            return Err(Error::invalid(format!(
                "export_gguf: module `{path}`: scaling {} cannot be expressed with alpha {alpha} and rank {r}",
                m.scaling()
            )));
        }
        let a = match m.kind() {
            ModuleKind::Linear => m.a().clone(),
            ModuleKind::Embedding => crate::base::transpose_2d(m.a())?,
        };
        let b = if factor == 1.0 {
            m.b().clone()
        } else {
            rescaled.push(path.clone());
            let v: Vec<f32> = m.b().as_slice::<f32>()?.iter().map(|x| x * factor).collect();
            Tensor::from_vec(v, [n_out, r])?
        };
        writer.add_tensor(&format!("{path}.weight.lora_a"), &a.to_dtype(dtype)?)?;
        writer.add_tensor(&format!("{path}.weight.lora_b"), &b.to_dtype(dtype)?)?;
    }
    Ok((writer, rescaled))
}

/// Writes `adapter` to `out` as a GGUF LoRA adapter (f32 or f16 tensors).
pub fn export_gguf(adapter: &LoraAdapter, dtype: DType, arch: Option<&str>, out: &Path) -> Result<GgufExportReport> {
    let (writer, rescaled) = adapter_to_gguf(adapter, dtype, arch)?;
    let bytes = writer.to_bytes()?;
    std::fs::write(out, &bytes).map_err(|e| Error::io(out, e))?;
    Ok(GgufExportReport {
        modules: adapter.modules.len(),
        alpha: adapter.config.lora_alpha as f32,
        rescaled,
        dtype,
        bytes: bytes.len(),
    })
}
