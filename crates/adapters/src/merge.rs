//! Merging a LoRA / DoRA module into its base weight, and undoing it.
//!
//! LoRA: `W' = W + s B A`; unmerge `W = W' - s B A`.
//! DoRA (peft): `W' = c * (W + s B A)` row-wise with `c = m / n`, `n = ||W + s B A||`
//! per output row; unmerge `W = W' / c - s B A`. Since `||W'||_row = m`, the norm `n` is
//! lost by merging: unmerging DoRA needs the `n` that merging returned.
//!
//! The base tensor is taken as stored: `[out, in]`, or `[in, out]` when
//! `LoraModule::base_is_transposed` (fan_in_fan_out, embedding tables). The delta is
//! computed in f32 (`f32` accumulation over the rank), added in f32, and the sum is
//! rounded once to the weight's dtype. A merge-unmerge round trip therefore differs from
//! the original by at most two roundings: `|W'' - W| <= 3 u (|W| + |s B A|)` with `u` the
//! unit roundoff of the dtype (2^-24 f32, 2^-8 bf16, 2^-11 f16); tests check this bound.

//!
//! Quantized bases (QLoRA, [`merge_quantized`]): the weight is dequantized to f32, the
//! module merged in f32, and the merged weight returned dense f32. Requantizing it (e.g.
//! `QuantizedWeight::quantize_tensor`) is the caller's choice and adds a new quantization
//! error on top of the merge; unmerging a requantized weight does not give the original
//! blocks back.

use linattn_quant::QuantizedWeight;
use linattn_tensor::{Error, Result, Tensor};

use crate::device::cpu_only;
use crate::lora::LoraModule;

fn check_weight(op: &'static str, weight: &Tensor, module: &LoraModule) -> Result<()> {
    let want = module.stored_base_dims();
    if weight.dims() != want {
        return Err(Error::invalid(format!(
            "{op}: base weight `{}.weight` has shape {} but the adapter (A {}, B {}) needs {:?}{}",
            module.path(),
            weight.shape(),
            module.a().shape(),
            module.b().shape(),
            want,
            if module.base_is_transposed() { " ([in, out] layout)" } else { "" }
        )));
    }
    if !weight.dtype().is_compute_float() {
        return Err(Error::UnsupportedDType {
            op,
            dtype: weight.dtype(),
            detail: format!("`{}.weight`: merge needs f32, f16 or bf16", module.path()),
        });
    }
    cpu_only(op, weight)?;
    weight.check_finite(op, &format!("{}.weight", module.path()))
}

/// Index of logical element `(o, i)` in the stored base tensor.
#[inline]
fn stored_index(module: &LoraModule, o: usize, i: usize) -> usize {
    if module.base_is_transposed() { i * module.out_features() + o } else { o * module.in_features() + i }
}

/// Applies `f(o, i, w, delta)` to each element; returns the new tensor in `weight`'s dtype.
fn map_with_delta(weight: &Tensor, module: &LoraModule, f: impl Fn(usize, f32, f32) -> f32) -> Result<Tensor> {
    let delta = module.delta_weight()?;
    let mut w = weight.to_f32_vec()?;
    let (n_out, n_in) = (module.out_features(), module.in_features());
    for o in 0..n_out {
        for i in 0..n_in {
            let k = stored_index(module, o, i);
            w[k] = f(o, w[k], delta[o * n_in + i]);
        }
    }
    Tensor::from_f32(&w, weight.dtype(), weight.dims().to_vec())
}

/// The logical `[out, in]` f32 copy of a stored base tensor.
pub(crate) fn logical_weight(weight: &Tensor, module: &LoraModule) -> Result<Vec<f32>> {
    let stored = weight.to_f32_vec()?;
    let (n_out, n_in) = (module.out_features(), module.in_features());
    let mut w = vec![0f32; n_out * n_in];
    for o in 0..n_out {
        for i in 0..n_in {
            w[o * n_in + i] = stored[stored_index(module, o, i)];
        }
    }
    Ok(w)
}

/// Merges `module` into the stored base tensor. DoRA modules merge with their
/// magnitude (the norm is discarded; use [`merge_dora_weight`] to keep it for unmerge).
pub fn merge_weight(weight: &Tensor, module: &LoraModule) -> Result<Tensor> {
    if module.magnitude().is_some() {
        return merge_dora_weight(weight, module).map(|(w, _)| w);
    }
    check_weight("merge_weight", weight, module)?;
    map_with_delta(weight, module, |_, w, d| w + d)
}

/// Merges a DoRA module; returns the merged tensor and the row norms `n` that
/// [`unmerge_weight`] needs.
pub fn merge_dora_weight(weight: &Tensor, module: &LoraModule) -> Result<(Tensor, Vec<f32>)> {
    check_weight("merge_dora_weight", weight, module)?;
    let Some(m) = module.magnitude() else {
        return Err(Error::invalid(format!("merge_dora_weight: module `{}` has no magnitude vector", module.path())));
    };
    let m = m.as_slice::<f32>()?;
    let norm = module.dora_weight_norm(&logical_weight(weight, module)?)?;
    let merged = map_with_delta(weight, module, |o, w, d| m[o] / norm[o] * (w + d))?;
    Ok((merged, norm))
}

/// Undoes a merge. `dora_norm` is required for DoRA modules (the norms
/// [`merge_dora_weight`] returned) and ignored for plain LoRA.
pub fn unmerge_weight(weight: &Tensor, module: &LoraModule, dora_norm: Option<&[f32]>) -> Result<Tensor> {
    check_weight("unmerge_weight", weight, module)?;
    match (module.magnitude(), dora_norm) {
        (None, _) => map_with_delta(weight, module, |_, w, d| w - d),
        (Some(_), None) => Err(Error::invalid(format!(
            "unmerge_weight: module `{}` is DoRA; unmerging needs the weight norms returned by merge_dora_weight",
            module.path()
        ))),
        (Some(m), Some(norm)) => {
            if norm.len() != module.out_features() {
                return Err(Error::invalid(format!(
                    "unmerge_weight: module `{}`: {} DoRA norms for {} outputs",
                    module.path(),
                    norm.len(),
                    module.out_features()
                )));
            }
            let m = m.as_slice::<f32>()?;
            map_with_delta(weight, module, |o, w, d| w * norm[o] / m[o] - d)
        }
    }
}

/// Merges `module` into a quantized base (QLoRA): dequantize to f32 `[out, in]`, merge in
/// f32 (LoRA `W + s B A`, DoRA `c (W + s B A)`), return the dense f32 result.
pub fn merge_quantized(weight: &QuantizedWeight, module: &LoraModule) -> Result<Tensor> {
    if module.base_is_transposed() {
        return Err(Error::invalid(format!(
            "merge_quantized: module `{}` expects an [in, out] base (fan_in_fan_out or embedding); quantized \
             weights are [out, in]",
            module.path()
        )));
    }
    let dense = crate::base::BaseLinear::dequantized(weight)?;
    merge_weight(&dense, module)
}
