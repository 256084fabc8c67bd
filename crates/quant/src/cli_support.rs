//! Functions behind the `linattn quant` subcommands, for the CLI crate to wire:
//! `inspect FILE`, `dequant FILE --tensor NAME --out OUT.safetensors`,
//! `quantize IN.safetensors --format F --out OUT.gguf|OUT.safetensors`.
//! Each returns data (JSON value / text) and never prints.

use std::path::Path;

use linattn_tensor::{Error, Result};
use safetensors::Dtype;
use serde_json::json;

use crate::checkpoint;
use crate::gguf::{GgufFile, GgufValue, GgufWriter};
use crate::weight::{QuantFormat, QuantizedWeight};

fn is_gguf(path: &Path) -> Result<bool> {
    let mut magic = [0u8; 4];
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    Ok(f.read_exact(&mut magic).is_ok() && &magic == b"GGUF")
}

/// `linattn quant inspect FILE`: metadata and tensors (name, format, shape, offset) of a
/// GGUF file or the quantized weights of a safetensors file, as JSON.
pub fn inspect(path: impl AsRef<Path>) -> Result<serde_json::Value> {
    let path = path.as_ref();
    if is_gguf(path)? {
        let f = GgufFile::open(path)?;
        let metadata: serde_json::Map<String, serde_json::Value> =
            f.metadata.iter().map(|(k, v)| (k.clone(), v.to_json(16))).collect();
        let tensors: Vec<_> = f
            .tensors
            .iter()
            .map(|t| json!({"name": t.name, "format": t.type_name(), "shape": t.shape().dims(), "offset": f.data_offset as u64 + t.offset, "bytes": t.nbytes}))
            .collect();
        Ok(
            json!({"file": path.display().to_string(), "kind": "gguf", "version": f.version, "alignment": f.alignment, "metadata": metadata, "tensors": tensors}),
        )
    } else {
        let tensors: Vec<_> = checkpoint::list_weights(path)?
            .into_iter()
            .map(|(name, fmt, shape)| json!({"name": name, "format": fmt.name(), "shape": shape.dims()}))
            .collect();
        Ok(json!({"file": path.display().to_string(), "kind": "safetensors", "tensors": tensors}))
    }
}

/// Human-readable rendering of [`inspect`]'s JSON.
pub fn inspect_text(report: &serde_json::Value) -> String {
    let mut s = format!("{} ({})\n", report["file"].as_str().unwrap_or("?"), report["kind"].as_str().unwrap_or("?"));
    if let Some(m) = report["metadata"].as_object() {
        s += &format!("metadata ({} keys):\n", m.len());
        for (k, v) in m {
            s += &format!("  {k} = {v}\n");
        }
    }
    let tensors = report["tensors"].as_array().cloned().unwrap_or_default();
    s += &format!("tensors ({}):\n", tensors.len());
    for t in tensors {
        s += &format!(
            "  {:<48} {:<9} {:<20} {}\n",
            t["name"].as_str().unwrap_or("?"),
            t["format"].as_str().unwrap_or("?"),
            t["shape"].to_string(),
            t.get("offset").map(|o| format!("offset {o}")).unwrap_or_default()
        );
    }
    s
}

/// `linattn quant dequant FILE --tensor NAME --out OUT`: writes tensor `NAME` of a GGUF
/// or quantized safetensors file as f32 to `OUT` (safetensors, key `NAME`).
pub fn dequant(path: impl AsRef<Path>, tensor: &str, out: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    let t = if is_gguf(path)? {
        let f = GgufFile::open(path)?;
        let info = f.info(tensor)?;
        match f.weight(tensor) {
            Ok(w) => w.dequantize()?,
            Err(_) => f
                .tensor(tensor)?
                .to_dtype(linattn_tensor::DType::F32)
                .map_err(|e| Error::invalid(format!("tensor `{tensor}` ({}): {e}", info.type_name())))?,
        }
    } else {
        checkpoint::load_weight(path, tensor)?.dequantize()?
    };
    let bytes: Vec<u8> = t.to_f32_vec()?.iter().flat_map(|v| v.to_le_bytes()).collect();
    checkpoint::save_with(out, &[], vec![(tensor.to_string(), Dtype::F32, t.dims().to_vec(), bytes)])
}

/// `linattn quant quantize IN.safetensors --format F --out OUT`: quantizes every float
/// tensor whose last dimension fits the format (2D `[out, in]` for non-ggml formats)
/// and keeps the others as they are (f32). `.gguf` output takes ggml formats only;
/// `.safetensors` output takes bitsandbytes / int8 / fp8. Returns the names quantized.
pub fn quantize(input: impl AsRef<Path>, format: QuantFormat, out: impl AsRef<Path>) -> Result<Vec<String>> {
    let input = input.as_ref();
    let out = out.as_ref();
    let to_gguf = out.extension().and_then(|e| e.to_str()) == Some("gguf");
    if to_gguf != format.ggml().is_some() {
        return Err(Error::invalid(format!(
            "format {format} cannot be written to {}: ggml formats go to .gguf, others to .safetensors",
            out.display()
        )));
    }
    let data = std::fs::read(input).map_err(|e| Error::io(input, e))?;
    let st = safetensors::SafeTensors::deserialize(&data)
        .map_err(|e| Error::SafeTensors { path: input.display().to_string(), message: e.to_string() })?;
    let mut names: Vec<String> = st.names().into_iter().map(|s| s.to_string()).collect();
    names.sort();
    let mut quantized = Vec::new();
    let mut weights = Vec::new();
    let mut passthrough = Vec::new();
    let mut gguf = GgufWriter::new();
    gguf.add_metadata("general.quantized_by", GgufValue::String("linattn".into()));
    for name in &names {
        let view = st
            .tensor(name)
            .map_err(|e| Error::SafeTensors { path: input.display().to_string(), message: e.to_string() })?;
        let values: Option<Vec<f32>> = match view.dtype() {
            Dtype::F32 => {
                Some(view.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
            }
            Dtype::F16 => {
                Some(view.data().chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect())
            }
            Dtype::BF16 => {
                Some(view.data().chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect())
            }
            _ => None,
        };
        let shape = view.shape().to_vec();
        let fits = match format.ggml() {
            Some(g) => !shape.is_empty() && shape[shape.len() - 1] % g.block_elems() == 0,
            None => shape.len() == 2,
        };
        match values {
            Some(v) if fits => {
                let w = QuantizedWeight::quantize(&v, shape, format)
                    .map_err(|e| Error::invalid(format!("tensor `{name}`: {e}")))?;
                if to_gguf {
                    gguf.add_weight(name, &w)?;
                } else {
                    weights.push((name.clone(), w));
                }
                quantized.push(name.clone());
            }
            Some(v) => {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                if to_gguf {
                    gguf.add_tensor_bytes(name, 0, &shape.clone().into(), bytes)?;
                } else {
                    passthrough.push((name.clone(), Dtype::F32, shape, bytes));
                }
            }
            None => {
                if to_gguf {
                    return Err(Error::invalid(format!(
                        "tensor `{name}` of dtype {:?} cannot be stored in GGUF by this tool",
                        view.dtype()
                    )));
                }
                passthrough.push((name.clone(), view.dtype(), shape, view.data().to_vec()));
            }
        }
    }
    if to_gguf {
        gguf.write(out)?;
    } else {
        checkpoint::save_with(out, &weights, passthrough)?;
    }
    Ok(quantized)
}
