//! Reading and writing peft adapter directories.
//!
//! A directory holds `adapter_config.json` and `adapter_model.safetensors` with keys
//! (current peft, checked against peft 0.21):
//! - `base_model.model.<path>.lora_A.weight` `[r, in]`, `.lora_B.weight` `[out, r]`
//! - `base_model.model.<path>.lora_embedding_A` `[r, num_embeddings]`,
//!   `.lora_embedding_B` `[dim, r]`
//! - `base_model.model.<path>.lora_magnitude_vector` `[out]` (DoRA; no `.weight`)
//! - `base_model.model.<name>` for full `modules_to_save` tensors.
//!
//! Loading checks every key: unknown suffixes, an A without its B (or the reverse), a
//! rank that disagrees with `r` / `rank_pattern`, a magnitude without `use_dora` (or
//! the reverse), a module the config does not target, NaN/inf values. Each error names
//! the key. Files are read through the `safetensors` crate.

use std::collections::BTreeMap;
use std::path::Path;

use linattn_tensor::{DType, Error, Result, Tensor};
use safetensors::{Dtype, SafeTensors};

use crate::config::LoraConfig;
use crate::lora::{LoraAdapter, LoraModule, ModuleKind};

/// Prefix peft puts before every module path in `adapter_model.safetensors`.
pub const PEFT_KEY_PREFIX: &str = "base_model.model.";
/// The config file name inside an adapter directory.
pub const CONFIG_FILE: &str = "adapter_config.json";
/// The weights file name inside an adapter directory.
pub const WEIGHTS_FILE: &str = "adapter_model.safetensors";

/// Which tensor of a module a key holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Part {
    A,
    B,
    EmbA,
    EmbB,
    Magnitude,
}

const SUFFIXES: [(&str, Part); 5] = [
    (".lora_A.weight", Part::A),
    (".lora_B.weight", Part::B),
    (".lora_embedding_A", Part::EmbA),
    (".lora_embedding_B", Part::EmbB),
    (".lora_magnitude_vector", Part::Magnitude),
];

/// Converts a safetensors dtype into a linattn dtype (dense floats only).
pub(crate) fn dtype_from_safetensors(dtype: Dtype, key: &str) -> Result<DType> {
    Ok(match dtype {
        Dtype::F32 => DType::F32,
        Dtype::F16 => DType::F16,
        Dtype::BF16 => DType::BF16,
        Dtype::F64 => DType::F64,
        other => return Err(Error::invalid(format!("`{key}`: dtype {other:?} is not a float type"))),
    })
}

/// Converts a linattn float dtype into the safetensors one.
pub(crate) fn dtype_to_safetensors(dtype: DType) -> Result<Dtype> {
    Ok(match dtype {
        DType::F32 => Dtype::F32,
        DType::F16 => Dtype::F16,
        DType::BF16 => Dtype::BF16,
        DType::F64 => Dtype::F64,
        other => return Err(Error::UnsupportedDType { op: "save", dtype: other, detail: "expected a float".into() }),
    })
}

fn st_error(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::SafeTensors { path: path.display().to_string(), message: e.to_string() }
}

/// Loads a peft adapter directory (`adapter_config.json` + `adapter_model.safetensors`).
pub fn load_adapter(dir: &Path) -> Result<LoraAdapter> {
    let config_path = dir.join(CONFIG_FILE);
    let text = std::fs::read_to_string(&config_path).map_err(|e| Error::io(&config_path, e))?;
    let config = LoraConfig::from_json(&text)?;
    let weights_path = dir.join(WEIGHTS_FILE);
    let bytes = std::fs::read(&weights_path).map_err(|e| Error::io(&weights_path, e))?;
    let file = SafeTensors::deserialize(&bytes).map_err(|e| st_error(&weights_path, e))?;
    let mut tensors = Vec::new();
    for (key, view) in file.tensors() {
        let dtype = dtype_from_safetensors(view.dtype(), &key)?;
        tensors.push((key, Tensor::from_bytes(view.data(), dtype, view.shape().to_vec())?));
    }
    adapter_from_tensors(config, tensors)
}

/// Reads every tensor of a safetensors file (float or integer dtypes) into CPU tensors,
/// in file order.
pub fn read_safetensors(path: &Path) -> Result<Vec<(String, Tensor)>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let file = SafeTensors::deserialize(&bytes).map_err(|e| st_error(path, e))?;
    let mut out = Vec::new();
    for name in file.names() {
        let view = file.tensor(name).map_err(|e| st_error(path, e))?;
        let dtype = match view.dtype() {
            Dtype::I64 => DType::I64,
            Dtype::I32 => DType::I32,
            Dtype::U8 => DType::U8,
            other => dtype_from_safetensors(other, name)?,
        };
        out.push((name.to_string(), Tensor::from_bytes(view.data(), dtype, view.shape().to_vec())?));
    }
    Ok(out)
}

/// Builds an adapter from a config and peft-named tensors, validating every key.
pub fn adapter_from_tensors(config: LoraConfig, tensors: Vec<(String, Tensor)>) -> Result<LoraAdapter> {
    config.validate()?;
    let mut parts: BTreeMap<String, BTreeMap<&'static str, (Part, String, Tensor)>> = BTreeMap::new();
    let mut saved_modules = BTreeMap::new();
    let mut file_dtype = None;
    for (key, tensor) in tensors {
        let Some(rest) = key.strip_prefix(PEFT_KEY_PREFIX) else {
            return Err(Error::invalid(format!("unexpected key `{key}`: does not start with `{PEFT_KEY_PREFIX}`")));
        };
        let Some((suffix, part)) = SUFFIXES.iter().find(|(s, _)| rest.ends_with(s)) else {
            let saved = config.modules_to_save.as_deref().unwrap_or_default();
            let module = rest.rsplit_once('.').map(|(m, _)| m).unwrap_or(rest);
            if saved.iter().any(|s| module == s || module.ends_with(&format!(".{s}"))) {
                saved_modules.insert(rest.to_string(), tensor);
                continue;
            }
            return Err(Error::invalid(format!(
                "unexpected key `{key}`: not a LoRA tensor (lora_A/lora_B/lora_embedding_A/B/lora_magnitude_vector) \
                 nor a modules_to_save tensor"
            )));
        };
        let path = &rest[..rest.len() - suffix.len()];
        if *part != Part::Magnitude {
            file_dtype.get_or_insert(tensor.dtype());
        }
        let slot = parts.entry(path.to_string()).or_default();
        let name = match part {
            Part::A | Part::EmbA => "A",
            Part::B | Part::EmbB => "B",
            Part::Magnitude => "m",
        };
        if slot.insert(name, (*part, key.clone(), tensor)).is_some() {
            return Err(Error::invalid(format!("duplicate LoRA tensor for module `{path}` at key `{key}`")));
        }
    }
    let mut modules = BTreeMap::new();
    for (path, mut slot) in parts {
        let missing =
            |what: &str| Error::invalid(format!("module `{path}`: missing key `{PEFT_KEY_PREFIX}{path}{what}`"));
        let (a_part, a_key, a) = slot.remove("A").ok_or_else(|| {
            let is_emb = slot.get("B").is_some_and(|(p, _, _)| *p == Part::EmbB);
            missing(if is_emb { ".lora_embedding_A" } else { ".lora_A.weight" })
        })?;
        let (b_part, b_key, b) = slot
            .remove("B")
            .ok_or_else(|| missing(if a_part == Part::EmbA { ".lora_embedding_B" } else { ".lora_B.weight" }))?;
        let kind = match (a_part, b_part) {
            (Part::A, Part::B) => ModuleKind::Linear,
            (Part::EmbA, Part::EmbB) => ModuleKind::Embedding,
            _ => return Err(Error::invalid(format!("`{a_key}` and `{b_key}` mix linear and embedding LoRA keys"))),
        };
        if !config.targets(&path)? {
            return Err(Error::invalid(format!(
                "key `{a_key}`: module `{path}` is not targeted by adapter_config.json target_modules {:?}",
                config.target_modules
            )));
        }
        let magnitude = slot.remove("m").map(|(_, _, t)| t);
        match (config.use_dora, magnitude.is_some()) {
            (true, false) => return Err(missing(".lora_magnitude_vector (use_dora is true)")),
            (false, true) => {
                return Err(Error::invalid(format!(
                    "unexpected key `{PEFT_KEY_PREFIX}{path}.lora_magnitude_vector`: use_dora is false"
                )));
            }
            _ => {}
        }
        let rank = config.rank_for(&path)?;
        if a.dims().first() != Some(&rank) {
            return Err(Error::invalid(format!(
                "`{a_key}` has shape {} but adapter_config.json gives module `{path}` rank {rank}",
                a.shape()
            )));
        }
        a.check_finite("load_adapter", &a_key)?;
        b.check_finite("load_adapter", &b_key)?;
        if let Some(m) = &magnitude {
            m.check_finite("load_adapter", &format!("{PEFT_KEY_PREFIX}{path}.lora_magnitude_vector"))?;
        }
        let scaling = config.scaling_for(&path)?;
        let fifo = config.fan_in_fan_out && kind == ModuleKind::Linear;
        let module = LoraModule::new(&path, kind, &a, &b, magnitude.as_ref(), scaling, fifo)?;
        modules.insert(path, module);
    }
    if modules.is_empty() {
        return Err(Error::invalid("adapter_model.safetensors holds no LoRA tensors"));
    }
    Ok(LoraAdapter { config, modules, saved_modules, file_dtype: file_dtype.unwrap_or(DType::F32) })
}

/// The peft-named tensors of an adapter, in `dtype` (A, B and saved modules; DoRA
/// magnitudes too, as peft keeps them in the same dtype as the adapter).
pub fn adapter_to_tensors(adapter: &LoraAdapter, dtype: DType) -> Result<Vec<(String, Tensor)>> {
    let mut out = Vec::new();
    for (path, m) in &adapter.modules {
        let (ka, kb) = match m.kind() {
            ModuleKind::Linear => (".lora_A.weight", ".lora_B.weight"),
            ModuleKind::Embedding => (".lora_embedding_A", ".lora_embedding_B"),
        };
        out.push((format!("{PEFT_KEY_PREFIX}{path}{ka}"), m.a().to_dtype(dtype)?));
        out.push((format!("{PEFT_KEY_PREFIX}{path}{kb}"), m.b().to_dtype(dtype)?));
        if let Some(mag) = m.magnitude() {
            out.push((format!("{PEFT_KEY_PREFIX}{path}.lora_magnitude_vector"), mag.to_dtype(dtype)?));
        }
    }
    for (name, t) in &adapter.saved_modules {
        out.push((format!("{PEFT_KEY_PREFIX}{name}"), t.clone()));
    }
    Ok(out)
}

/// A borrowed tensor in the shape the `safetensors` serializer wants.
pub(crate) struct StView<'a> {
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub data: &'a [u8],
}

impl safetensors::View for StView<'_> {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        std::borrow::Cow::Borrowed(self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

/// Writes named CPU tensors to a safetensors file.
pub fn write_safetensors(path: &Path, tensors: &[(String, Tensor)]) -> Result<()> {
    let mut views = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        let dtype = dtype_to_safetensors(t.dtype())?;
        views.push((name.clone(), StView { dtype, shape: t.dims().to_vec(), data: t.as_bytes()? }));
    }
    safetensors::serialize_to_file(views, None, path).map_err(|e| st_error(path, e))
}

/// Saves an adapter as a peft directory (created if needed), A/B in `adapter.file_dtype`.
/// The config is written with all preserved extra fields; peft's `load_pretrained` and
/// `PeftModel.from_pretrained` read the result.
pub fn save_adapter(adapter: &LoraAdapter, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let config_path = dir.join(CONFIG_FILE);
    std::fs::write(&config_path, adapter.config.to_json()?).map_err(|e| Error::io(&config_path, e))?;
    let tensors = adapter_to_tensors(adapter, adapter.file_dtype)?;
    write_safetensors(&dir.join(WEIGHTS_FILE), &tensors)
}
