//! Quantized safetensors checkpoints in Hugging Face key layouts (read and write).
//!
//! For a linear layer with weight key `P.weight`:
//! - bitsandbytes 4-bit: `P.weight` U8 `[ceil(n/2), 1]` (packed), `P.weight.absmax`
//!   (F32, or U8 when double-quantized), `P.weight.quant_map` F32 `[16]`, when nested
//!   `P.weight.nested_absmax` F32 and `P.weight.nested_quant_map` F32 `[256]`, and
//!   `P.weight.quant_state.bitsandbytes__nf4` (or `__fp4`): U8 bytes of a JSON object
//!   `{"quant_type", "blocksize", "dtype", "shape", ["nested_blocksize",
//!   "nested_dtype", "nested_offset"]}`.
//! - LLM.int8: `P.weight` I8 `[out, in]`, `P.SCB` F32 `[out]`, `P.weight_format` U8 0.
//! - FP8: `P.weight` F8_E4M3 / F8_E5M2 `[out, in]` with `P.weight_scale_inv` F32
//!   `[ceil(out/128), ceil(in/128)]` (block scales) or `P.weight_scale` F32 scalar
//!   (per-tensor). Both multiply the FP8 values.
//!
//! Reading memory-maps the file; 4-bit packed data and int8/FP8 data are views of the
//! mapping (zero-copy). ggml formats are not stored in safetensors (use GGUF).

use std::collections::HashMap;
use std::path::Path;

use linattn_tensor::{Error, Result, Shape};
use safetensors::{Dtype, SafeTensors};

use crate::bnb::{Absmax, FourBitKind, FourBitWeight, Int8Weight, NestedAbsmax};
use crate::bytes::ByteView;
use crate::fp8::{Fp8Kind, Fp8Scale, Fp8Weight};
use crate::weight::{QuantFormat, QuantizedWeight};

/// A memory-mapped safetensors file with its header parsed.
struct MappedFile {
    path: String,
    bytes: ByteView,
    /// name -> (dtype, shape, absolute byte range)
    entries: HashMap<String, (Dtype, Vec<usize>, usize, usize)>,
}

impl MappedFile {
    fn open(path: &Path) -> Result<MappedFile> {
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: read-only private mapping; the file must not change while mapped.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        let bytes = ByteView::from_mmap(map);
        let pstr = path.display().to_string();
        let base = bytes.as_slice().as_ptr() as usize;
        let st = SafeTensors::deserialize(bytes.as_slice())
            .map_err(|e| Error::SafeTensors { path: pstr.clone(), message: e.to_string() })?;
        let entries = st
            .tensors()
            .into_iter()
            .map(|(k, v)| {
                let start = v.data().as_ptr() as usize - base;
                (k, (v.dtype(), v.shape().to_vec(), start, v.data().len()))
            })
            .collect();
        Ok(MappedFile { path: pstr, bytes, entries })
    }

    fn has(&self, key: &str) -> bool {
        self.entries.contains_key(key)
    }

    fn get(&self, key: &str, want: &[Dtype]) -> Result<(Dtype, Vec<usize>, ByteView)> {
        let (dt, shape, start, len) = self.entries.get(key).ok_or_else(|| Error::SafeTensors {
            path: self.path.clone(),
            message: format!("missing tensor `{key}`"),
        })?;
        if !want.contains(dt) {
            return Err(Error::SafeTensors {
                path: self.path.clone(),
                message: format!("tensor `{key}` has dtype {dt:?}, expected one of {want:?}"),
            });
        }
        Ok((*dt, shape.clone(), self.bytes.slice(*start, *len)?))
    }

    fn f32s(&self, key: &str) -> Result<Vec<f32>> {
        let (_, _, b) = self.get(key, &[Dtype::F32])?;
        Ok(b.as_slice().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
    }

    fn err(&self, msg: String) -> Error {
        Error::SafeTensors { path: self.path.clone(), message: msg }
    }

    fn four_bit_state_key(&self, weight: &str) -> Option<(String, FourBitKind)> {
        [FourBitKind::Nf4, FourBitKind::Fp4].into_iter().find_map(|k| {
            let key = format!("{weight}.quant_state.bitsandbytes__{}", k.name());
            self.has(&key).then_some((key, k))
        })
    }

    fn format_of(&self, weight: &str) -> Option<QuantFormat> {
        if let Some((_, k)) = self.four_bit_state_key(weight) {
            return Some(if k == FourBitKind::Nf4 { QuantFormat::Nf4 } else { QuantFormat::Fp4 });
        }
        let prefix = weight.strip_suffix(".weight")?;
        let (dt, _, _, _) = self.entries.get(weight)?;
        match dt {
            Dtype::I8 if self.has(&format!("{prefix}.SCB")) => Some(QuantFormat::Int8),
            Dtype::F8_E4M3 => Some(QuantFormat::Fp8E4M3),
            Dtype::F8_E5M2 => Some(QuantFormat::Fp8E5M2),
            _ => None,
        }
    }

    fn load(&self, weight: &str) -> Result<QuantizedWeight> {
        let format = self.format_of(weight).ok_or_else(|| {
            self.err(format!("`{weight}` is not a quantized weight (no bitsandbytes, int8 or FP8 keys)"))
        })?;
        match format {
            QuantFormat::Nf4 | QuantFormat::Fp4 => self.load_four_bit(weight),
            QuantFormat::Int8 => {
                let prefix = weight.strip_suffix(".weight").unwrap_or(weight);
                let (_, shape, data) = self.get(weight, &[Dtype::I8])?;
                let [rows, cols] = shape[..] else {
                    return Err(self.err(format!("int8 `{weight}` has shape {shape:?}, expected 2D")));
                };
                let w = Int8Weight { rows, cols, data, scb: self.f32s(&format!("{prefix}.SCB"))?, threshold: 6.0 };
                w.validate().map_err(|e| self.err(format!("`{weight}`: {e}")))?;
                Ok(QuantizedWeight::Int8(w))
            }
            _ => {
                let kind = if format == QuantFormat::Fp8E4M3 { Fp8Kind::E4M3 } else { Fp8Kind::E5M2 };
                let prefix = weight.strip_suffix(".weight").unwrap_or(weight);
                let (_, shape, data) = self.get(weight, &[Dtype::F8_E4M3, Dtype::F8_E5M2])?;
                let [rows, cols] = shape[..] else {
                    return Err(self.err(format!("fp8 `{weight}` has shape {shape:?}, expected 2D")));
                };
                let inv_key = format!("{prefix}.weight_scale_inv");
                let scale = if self.has(&inv_key) {
                    let (_, sshape, _) = self.get(&inv_key, &[Dtype::F32])?;
                    let [sr, sc] = sshape[..] else {
                        return Err(self.err(format!("`{inv_key}` has shape {sshape:?}, expected 2D")));
                    };
                    if sr == 0 || sc == 0 || rows.div_ceil(sr.max(1)) == 0 {
                        return Err(self.err(format!("`{inv_key}` has an empty shape {sshape:?}")));
                    }
                    let (br, bc) = (
                        if rows.div_ceil(128) == sr { 128 } else { rows.div_ceil(sr) },
                        if cols.div_ceil(128) == sc { 128 } else { cols.div_ceil(sc) },
                    );
                    Fp8Scale::Block { block_rows: br, block_cols: bc, scale_inv: self.f32s(&inv_key)? }
                } else {
                    let s = self.f32s(&format!("{prefix}.weight_scale"))?;
                    if s.len() != 1 {
                        return Err(self.err(format!(
                            "`{prefix}.weight_scale` holds {} values; only per-tensor scales are supported",
                            s.len()
                        )));
                    }
                    Fp8Scale::PerTensor(s[0])
                };
                let w = Fp8Weight { kind, rows, cols, data, scale };
                w.validate().map_err(|e| self.err(format!("`{weight}`: {e}")))?;
                Ok(QuantizedWeight::Fp8(w))
            }
        }
    }

    fn load_four_bit(&self, weight: &str) -> Result<QuantizedWeight> {
        let (state_key, kind) = self
            .four_bit_state_key(weight)
            .ok_or_else(|| self.err(format!("`{weight}` has no bitsandbytes quant state")))?;
        let (_, _, json) = self.get(&state_key, &[Dtype::U8])?;
        let state: serde_json::Value = serde_json::from_slice(json.as_slice())
            .map_err(|e| self.err(format!("`{state_key}`: invalid JSON: {e}")))?;
        let field = |k: &str| state.get(k).ok_or_else(|| self.err(format!("`{state_key}`: missing `{k}`")));
        let as_usize = |k: &str| -> Result<usize> {
            field(k)?
                .as_u64()
                .map(|v| v as usize)
                .ok_or_else(|| self.err(format!("`{state_key}`: `{k}` is not an integer")))
        };
        if field("quant_type")?.as_str() != Some(kind.name()) {
            return Err(self.err(format!("`{state_key}`: quant_type {} does not match the key", field("quant_type")?)));
        }
        let shape: Vec<usize> = field("shape")?
            .as_array()
            .and_then(|a| a.iter().map(|v| v.as_u64().map(|x| x as usize)).collect::<Option<Vec<_>>>())
            .ok_or_else(|| self.err(format!("`{state_key}`: `shape` is not a list of integers")))?;
        let blocksize = as_usize("blocksize")?;
        let code_vec = self.f32s(&format!("{weight}.quant_map"))?;
        let code: [f32; 16] = code_vec
            .try_into()
            .map_err(|v: Vec<f32>| self.err(format!("`{weight}.quant_map` holds {} values, expected 16", v.len())))?;
        let (_, _, packed) = self.get(weight, &[Dtype::U8])?;
        let absmax_key = format!("{weight}.absmax");
        let absmax = if self.has(&format!("{weight}.nested_absmax")) {
            let (_, _, q) = self.get(&absmax_key, &[Dtype::U8])?;
            let offset = field("nested_offset")?
                .as_f64()
                .ok_or_else(|| self.err(format!("`{state_key}`: `nested_offset` is not a number")))?
                as f32;
            Absmax::Nested(NestedAbsmax {
                quantized: q.as_slice().to_vec(),
                absmax: self.f32s(&format!("{weight}.nested_absmax"))?,
                code: self.f32s(&format!("{weight}.nested_quant_map"))?,
                blocksize: as_usize("nested_blocksize")?,
                offset,
            })
        } else {
            Absmax::F32(self.f32s(&absmax_key)?)
        };
        let torch_dtype = field("dtype")?.as_str().unwrap_or("float32").to_string();
        let w = FourBitWeight { kind, shape: Shape::new(shape), blocksize, packed, code, absmax, torch_dtype };
        w.validate().map_err(|e| self.err(format!("`{weight}`: {e}")))?;
        Ok(QuantizedWeight::FourBit(w))
    }
}

/// Every quantized weight key in a safetensors file with its format and shape, sorted.
pub fn list_weights(path: impl AsRef<Path>) -> Result<Vec<(String, QuantFormat, Shape)>> {
    let f = MappedFile::open(path.as_ref())?;
    let mut names: Vec<&String> = f.entries.keys().collect();
    names.sort();
    let mut out = Vec::new();
    for name in names {
        if let Some(fmt) = f.format_of(name) {
            out.push((name.clone(), fmt, f.load(name)?.shape()));
        }
    }
    Ok(out)
}

/// Loads the quantized weight stored under `weight_key` (e.g. `model.layers.0.mlp.up_proj.weight`).
pub fn load_weight(path: impl AsRef<Path>, weight_key: &str) -> Result<QuantizedWeight> {
    MappedFile::open(path.as_ref())?.load(weight_key)
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// One stored tensor: key, safetensors dtype, shape, bytes.
pub type StoredEntry = (String, Dtype, Vec<usize>, Vec<u8>);

/// The tensors (key, dtype, shape, bytes) that store `w` under `weight_key`.
pub fn weight_entries(weight_key: &str, w: &QuantizedWeight) -> Result<Vec<StoredEntry>> {
    let prefix = weight_key.strip_suffix(".weight").unwrap_or(weight_key);
    let mut out = Vec::new();
    match w {
        QuantizedWeight::FourBit(q) => {
            out.push((weight_key.to_string(), Dtype::U8, vec![q.packed.len(), 1], q.packed.as_slice().to_vec()));
            out.push((format!("{weight_key}.quant_map"), Dtype::F32, vec![16], f32_bytes(&q.code)));
            let shape_json: Vec<String> = q.shape.dims().iter().map(|d| d.to_string()).collect();
            let mut json = format!(
                "{{\"quant_type\": \"{}\", \"blocksize\": {}, \"dtype\": \"{}\", \"shape\": [{}]",
                q.kind.name(),
                q.blocksize,
                q.torch_dtype,
                shape_json.join(", ")
            );
            match &q.absmax {
                Absmax::F32(a) => out.push((format!("{weight_key}.absmax"), Dtype::F32, vec![a.len()], f32_bytes(a))),
                Absmax::Nested(n) => {
                    out.push((format!("{weight_key}.absmax"), Dtype::U8, vec![n.quantized.len()], n.quantized.clone()));
                    out.push((
                        format!("{weight_key}.nested_absmax"),
                        Dtype::F32,
                        vec![n.absmax.len()],
                        f32_bytes(&n.absmax),
                    ));
                    out.push((
                        format!("{weight_key}.nested_quant_map"),
                        Dtype::F32,
                        vec![n.code.len()],
                        f32_bytes(&n.code),
                    ));
                    json += &format!(
                        ", \"nested_blocksize\": {}, \"nested_dtype\": \"float32\", \"nested_offset\": {}",
                        n.blocksize,
                        serde_json::Value::from(n.offset as f64)
                    );
                }
            }
            json.push('}');
            let len = json.len();
            out.push((
                format!("{weight_key}.quant_state.bitsandbytes__{}", q.kind.name()),
                Dtype::U8,
                vec![len],
                json.into_bytes(),
            ));
        }
        QuantizedWeight::Int8(q) => {
            out.push((weight_key.to_string(), Dtype::I8, vec![q.rows, q.cols], q.data.as_slice().to_vec()));
            out.push((format!("{prefix}.SCB"), Dtype::F32, vec![q.rows], f32_bytes(&q.scb)));
            out.push((format!("{prefix}.weight_format"), Dtype::U8, vec![], vec![0]));
        }
        QuantizedWeight::Fp8(q) => {
            let dt = if q.kind == Fp8Kind::E4M3 { Dtype::F8_E4M3 } else { Dtype::F8_E5M2 };
            out.push((weight_key.to_string(), dt, vec![q.rows, q.cols], q.data.as_slice().to_vec()));
            match &q.scale {
                Fp8Scale::PerTensor(s) => {
                    out.push((format!("{prefix}.weight_scale"), Dtype::F32, vec![], f32_bytes(&[*s])))
                }
                Fp8Scale::Block { block_rows, block_cols, scale_inv } => out.push((
                    format!("{prefix}.weight_scale_inv"),
                    Dtype::F32,
                    vec![q.rows.div_ceil(*block_rows), q.cols.div_ceil(*block_cols)],
                    f32_bytes(scale_inv),
                )),
            }
        }
        QuantizedWeight::Ggml { .. } => {
            return Err(Error::invalid(format!(
                "`{weight_key}`: {} weights are stored in GGUF, not safetensors",
                w.format()
            )));
        }
    }
    Ok(out)
}

/// Writes quantized weights (keyed by their `.weight` key) plus optional extra dense
/// tensors `(key, dtype, shape, bytes)` to a safetensors file.
pub fn save_with(
    path: impl AsRef<Path>,
    weights: &[(String, QuantizedWeight)],
    extra: Vec<(String, Dtype, Vec<usize>, Vec<u8>)>,
) -> Result<()> {
    let mut entries = extra;
    for (k, w) in weights {
        entries.extend(weight_entries(k, w)?);
    }
    let pstr = path.as_ref().display().to_string();
    let views = entries
        .iter()
        .map(|(k, dt, shape, bytes)| {
            safetensors::tensor::TensorView::new(*dt, shape.clone(), bytes)
                .map(|v| (k.clone(), v))
                .map_err(|e| Error::SafeTensors { path: pstr.clone(), message: format!("`{k}`: {e}") })
        })
        .collect::<Result<Vec<_>>>()?;
    safetensors::serialize_to_file(views, None, path.as_ref())
        .map_err(|e| Error::SafeTensors { path: pstr, message: e.to_string() })
}

/// Writes quantized weights to a safetensors file in their Hugging Face key layouts.
pub fn save(path: impl AsRef<Path>, weights: &[(String, QuantizedWeight)]) -> Result<()> {
    save_with(path, weights, Vec::new())
}
