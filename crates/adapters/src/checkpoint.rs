//! Streaming merge of a peft adapter into a safetensors checkpoint.
//!
//! The base file is memory-mapped and its header parsed with the `safetensors` crate.
//! Merging keeps every tensor's dtype and shape, so the output header equals the input
//! header (same offsets, same `__metadata__`) and is written first; then tensors are
//! written one at a time in offset order: untouched tensors are copied from the map,
//! adapted ones (`<peft path>.weight`) are merged (or unmerged) on their own. At most
//! one tensor is held in memory. The output goes to a temporary file beside `out`,
//! synced and renamed into place, so a failure never leaves a partial `out`.
//!
//! Checks before anything is written: every adapter module has a base tensor of the
//! right shape; every `target_modules` entry matches some base module; every targeted
//! base module has adapter weights. DoRA cannot be unmerged from a checkpoint (the
//! row norms are not recoverable from the merged weight), nor can `modules_to_save`
//! replacements; both are errors.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use linattn_tensor::{Error, Result, Tensor};
use safetensors::SafeTensors;

use crate::config::TargetModules;
use crate::lora::LoraAdapter;
use crate::merge::{merge_weight, unmerge_weight};
use crate::peft_io::{dtype_from_safetensors, load_adapter};

/// What a checkpoint merge did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MergeReport {
    /// Base tensor names that were merged (or unmerged).
    pub merged: Vec<String>,
    /// Base tensor names replaced by `modules_to_save` tensors.
    pub replaced: Vec<String>,
    /// Tensors copied unchanged.
    pub copied: usize,
    /// Size of the output file in bytes.
    pub bytes_written: u64,
}

fn st_err(path: &Path, message: impl Into<String>) -> Error {
    Error::SafeTensors { path: path.display().to_string(), message: message.into() }
}

/// Merges (or, with `unmerge`, removes) the peft adapter in `adapter_dir` into the
/// safetensors checkpoint `base`, writing `out`. For `linattn lora merge`.
pub fn merge_checkpoint(base: &Path, adapter_dir: &Path, out: &Path, unmerge: bool) -> Result<MergeReport> {
    let adapter = load_adapter(adapter_dir)?;
    merge_checkpoint_with(base, &adapter, out, unmerge)
}

/// [`merge_checkpoint`] with an adapter already in memory.
pub fn merge_checkpoint_with(base: &Path, adapter: &LoraAdapter, out: &Path, unmerge: bool) -> Result<MergeReport> {
    let file = std::fs::File::open(base).map_err(|e| Error::io(base, e))?;
    // SAFETY: the map is read-only and lives only inside this function; the checkpoint
    // is not expected to be modified while we read it (as with every mmap loader). If
    // `out` is the same path, we write to a temp file and rename, never into the map.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(base, e))?;
    let (header_len, metadata) = SafeTensors::read_metadata(&map).map_err(|e| st_err(base, e.to_string()))?;
    let data_start = 8 + header_len;
    let infos = metadata.tensors();

    // Plan: which base tensor each module adapts, validated before writing anything.
    let mut plan = BTreeMap::new();
    for (path, module) in &adapter.modules {
        let name = format!("{path}.weight");
        let Some(info) = infos.get(&name) else {
            return Err(st_err(
                base,
                format!(
                    "adapter module `{path}` has no base tensor `{name}` (key `base_model.model.{path}.lora_A.weight`)"
                ),
            ));
        };
        if info.shape != module.stored_base_dims() {
            return Err(st_err(
                base,
                format!(
                    "`{name}` has shape {:?} but the adapter (A {}, B {}) needs {:?}",
                    info.shape,
                    module.a().shape(),
                    module.b().shape(),
                    module.stored_base_dims()
                ),
            ));
        }
        if unmerge && module.magnitude().is_some() {
            return Err(Error::invalid(format!(
                "cannot unmerge DoRA module `{path}` from a checkpoint: the row norms ||W + sBA|| are not \
                 recoverable from the merged weight"
            )));
        }
        plan.insert(name, path.clone());
    }
    let module_paths: Vec<&str> =
        infos.iter().filter(|(_, i)| i.shape.len() == 2).filter_map(|(n, _)| n.strip_suffix(".weight")).collect();
    check_targets(adapter, &module_paths, base)?;
    for (name, t) in &adapter.saved_modules {
        if unmerge {
            return Err(Error::invalid(format!("cannot unmerge modules_to_save tensor `{name}`")));
        }
        match infos.get(name) {
            Some(info) if info.shape == t.dims() => {}
            Some(info) => {
                return Err(st_err(
                    base,
                    format!("modules_to_save `{name}` has shape {} but the base tensor is {:?}", t.shape(), info.shape),
                ));
            }
            None => return Err(st_err(base, format!("modules_to_save `{name}` has no base tensor"))),
        }
    }

    let mut header = serde_json::to_vec(&metadata).map_err(|e| st_err(base, e.to_string()))?;
    header.resize(header.len().next_multiple_of(8), b' ');
    let out_dir = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let tmp_path = out_dir.join(format!(
        ".{}.tmp-{}",
        out.file_name().and_then(|n| n.to_str()).unwrap_or("merged.safetensors"),
        std::process::id()
    ));
    let result = (|| -> Result<MergeReport> {
        let tmp = std::fs::File::create(&tmp_path).map_err(|e| Error::io(&tmp_path, e))?;
        let mut w = std::io::BufWriter::with_capacity(1 << 20, tmp);
        let io = |e| Error::io(&tmp_path, e);
        w.write_all(&(header.len() as u64).to_le_bytes()).map_err(io)?;
        w.write_all(&header).map_err(io)?;
        let mut report = MergeReport::default();
        for name in metadata.offset_keys() {
            let info = infos[&name];
            let (s, e) = info.data_offsets;
            let bytes = map
                .get(data_start + s..data_start + e)
                .ok_or_else(|| st_err(base, format!("`{name}`: data offsets {s}..{e} run past the end of the file")))?;
            if let Some(path) = plan.get(&name) {
                let dtype = dtype_from_safetensors(info.dtype, &name)?;
                let weight = Tensor::from_bytes(bytes, dtype, info.shape.clone())?;
                let module = &adapter.modules[path];
                let merged =
                    if unmerge { unmerge_weight(&weight, module, None)? } else { merge_weight(&weight, module)? };
                w.write_all(merged.as_bytes()?).map_err(io)?;
                report.merged.push(name);
            } else if let Some(t) = adapter.saved_modules.get(&name) {
                let dtype = dtype_from_safetensors(info.dtype, &name)?;
                w.write_all(t.to_dtype(dtype)?.as_bytes()?).map_err(io)?;
                report.replaced.push(name);
            } else {
                w.write_all(bytes).map_err(io)?;
                report.copied += 1;
            }
        }
        let file = w.into_inner().map_err(|e| Error::io(&tmp_path, e.into_error()))?;
        file.sync_all().map_err(io)?;
        report.bytes_written = file.metadata().map_err(io)?.len();
        Ok(report)
    })();
    match result {
        Ok(report) => {
            std::fs::rename(&tmp_path, out).map_err(|e| Error::io(out, e))?;
            Ok(report)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp_path);
            Err(e)
        }
    }
}

/// Every target entry must match a base module, and every targeted base module must
/// have adapter weights.
fn check_targets(adapter: &LoraAdapter, module_paths: &[&str], base: &Path) -> Result<()> {
    let config = &adapter.config;
    match &config.target_modules {
        Some(TargetModules::List(names)) => {
            for entry in names {
                let hit = module_paths.iter().any(|p| *p == entry || p.ends_with(&format!(".{entry}")));
                if !hit {
                    return Err(st_err(
                        base,
                        format!("adapter_config.json target module `{entry}` matches no `<module>.weight` tensor"),
                    ));
                }
            }
        }
        Some(TargetModules::Regex(re)) => {
            let mut any = false;
            for p in module_paths {
                any |= config.targets(p)?;
            }
            if !any {
                return Err(st_err(base, format!("adapter_config.json target_modules regex `{re}` matches no module")));
            }
        }
        None => {}
    }
    for p in module_paths {
        if config.targets(p)? && !adapter.modules.contains_key(*p) {
            return Err(Error::invalid(format!(
                "adapter is missing keys `base_model.model.{p}.lora_A.weight` / `.lora_B.weight` for targeted \
                 base tensor `{p}.weight`"
            )));
        }
    }
    Ok(())
}
