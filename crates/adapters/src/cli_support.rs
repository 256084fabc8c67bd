//! Entry points for the `linattn lora ...` commands; the CLI only parses arguments and
//! prints what these return.
//!
//! - `linattn lora merge --base BASE.safetensors --adapter DIR --out OUT.safetensors [--unmerge]`
//!   -> [`lora_merge`]
//! - `linattn lora inspect DIR` -> [`inspect_adapter`]
//! - `linattn lora combine --adapter DIR:WEIGHT ... --method cat|linear|svd [--rank R] --out DIR`
//!   -> [`parse_weighted_adapter`], [`parse_combination`], [`combine_adapter_dirs`]
//! - `linattn lora export-gguf --adapter DIR --out OUT.gguf [--dtype f32|f16] [--arch NAME]`
//!   -> [`export_adapter_gguf`]

use std::path::{Path, PathBuf};

use linattn_tensor::{DType, Error, Result};

use crate::gguf_export::{GgufExportReport, export_gguf};

use crate::checkpoint::{MergeReport, merge_checkpoint};
use crate::lora::{LoraAdapter, ModuleKind};
use crate::multi::{Combination, combine_adapters};
use crate::peft_io::{load_adapter, save_adapter};

/// `linattn lora merge`: merges (or unmerges) an adapter into a checkpoint.
pub fn lora_merge(base: &Path, adapter_dir: &Path, out: &Path, unmerge: bool) -> Result<MergeReport> {
    merge_checkpoint(base, adapter_dir, out, unmerge)
}

/// One module of an adapter, as `inspect` lists it.
#[derive(Clone, Debug, PartialEq)]
pub struct ModuleSummary {
    pub path: String,
    pub kind: ModuleKind,
    pub rank: usize,
    pub in_features: usize,
    pub out_features: usize,
    pub scaling: f32,
    pub dora: bool,
}

/// What `linattn lora inspect` prints.
#[derive(Clone, Debug, PartialEq)]
pub struct AdapterSummary {
    pub base_model: Option<String>,
    pub file_dtype: String,
    pub use_rslora: bool,
    pub modules: Vec<ModuleSummary>,
    /// Adapter parameters (A, B and magnitudes).
    pub parameters: usize,
}

/// Summarizes an adapter already loaded.
pub fn summarize(adapter: &LoraAdapter) -> AdapterSummary {
    let modules: Vec<ModuleSummary> = adapter
        .modules
        .values()
        .map(|m| ModuleSummary {
            path: m.path().to_string(),
            kind: m.kind(),
            rank: m.rank(),
            in_features: m.in_features(),
            out_features: m.out_features(),
            scaling: m.scaling(),
            dora: m.magnitude().is_some(),
        })
        .collect();
    let parameters = modules
        .iter()
        .map(|m| m.rank * (m.in_features + m.out_features) + if m.dora { m.out_features } else { 0 })
        .sum();
    AdapterSummary {
        base_model: adapter.config.base_model_name_or_path.clone(),
        file_dtype: adapter.file_dtype.to_string(),
        use_rslora: adapter.config.use_rslora,
        modules,
        parameters,
    }
}

/// `linattn lora inspect DIR`.
pub fn inspect_adapter(dir: &Path) -> Result<AdapterSummary> {
    load_adapter(dir).map(|a| summarize(&a))
}

impl std::fmt::Display for AdapterSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "base model: {}  dtype: {}  rslora: {}  modules: {}  parameters: {}",
            self.base_model.as_deref().unwrap_or("-"),
            self.file_dtype,
            self.use_rslora,
            self.modules.len(),
            self.parameters
        )?;
        for m in &self.modules {
            writeln!(
                f,
                "  {:<40} {:?} r={} [{} -> {}] scaling={}{}",
                m.path,
                m.kind,
                m.rank,
                m.in_features,
                m.out_features,
                m.scaling,
                if m.dora { " dora" } else { "" }
            )?;
        }
        Ok(())
    }
}

/// Parses `cat`, `linear` or `svd` (`svd` needs `svd_rank`).
pub fn parse_combination(method: &str, svd_rank: Option<usize>) -> Result<Combination> {
    match (method, svd_rank) {
        ("cat", _) => Ok(Combination::Cat),
        ("linear", _) => Ok(Combination::Linear),
        ("svd", Some(rank)) if rank > 0 => Ok(Combination::Svd { rank }),
        ("svd", _) => Err(Error::invalid("combination `svd` needs --rank R with R >= 1")),
        (other, _) => Err(Error::invalid(format!("unknown combination `{other}`: expected cat, linear or svd"))),
    }
}

/// Parses `DIR:WEIGHT` (weight defaults to 1 when there is no `:`-suffix that parses).
pub fn parse_weighted_adapter(spec: &str) -> Result<(PathBuf, f32)> {
    if let Some((dir, weight)) = spec.rsplit_once(':')
        && let Ok(w) = weight.parse::<f32>()
    {
        if !w.is_finite() {
            return Err(Error::invalid(format!("adapter `{spec}`: weight {w} is not finite")));
        }
        return Ok((PathBuf::from(dir), w));
    }
    Ok((PathBuf::from(spec), 1.0))
}

/// `linattn lora combine`: loads weighted adapter directories, combines them and saves
/// the result as a peft directory `out`.
pub fn combine_adapter_dirs(inputs: &[(PathBuf, f32)], combination: Combination, out: &Path) -> Result<AdapterSummary> {
    let loaded: Vec<(LoraAdapter, f32)> =
        inputs.iter().map(|(dir, w)| Ok((load_adapter(dir)?, *w))).collect::<Result<_>>()?;
    let sources: Vec<(&LoraAdapter, f32)> = loaded.iter().map(|(a, w)| (a, *w)).collect();
    let combined = combine_adapters(&sources, combination)?;
    save_adapter(&combined, out)?;
    Ok(summarize(&combined))
}

/// `linattn lora export-gguf`: loads a peft adapter directory and writes it as a GGUF
/// LoRA adapter (`dtype` `f32` or `f16`; `arch` sets `general.architecture`).
pub fn export_adapter_gguf(
    adapter_dir: &Path,
    out: &Path,
    dtype: &str,
    arch: Option<&str>,
) -> Result<GgufExportReport> {
    let dtype = match dtype.to_ascii_lowercase().as_str() {
        "f32" => DType::F32,
        "f16" => DType::F16,
        other => return Err(Error::invalid(format!("export-gguf: --dtype must be f32 or f16, got `{other}`"))),
    };
    export_gguf(&load_adapter(adapter_dir)?, dtype, arch, out)
}

impl std::fmt::Display for GgufExportReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} modules, {} tensors, alpha {}, {} bytes",
            self.modules,
            2 * self.modules,
            self.alpha,
            self.bytes
        )?;
        if !self.rescaled.is_empty() {
            write!(f, "; B rescaled to carry the per-module scaling in: {}", self.rescaled.join(", "))?;
        }
        Ok(())
    }
}
