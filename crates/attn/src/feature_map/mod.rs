//! Hedgehog feature map (LoLCATs form).
//!
//! Per head h a weight `W_h` of shape `[D, F]` (all heads: `[H, D, F]`). For a row
//! `x` of length D, `u = x W_h` (length F) and
//! `phi(x) = [softmax(u), softmax(-u)]`: two separate softmaxes over F, output 2F.
//! Input layout `[B, T, H, D]`, output `[B, T, H, 2F]` in the input dtype; computed in
//! f32 with max-subtracted softmaxes (the largest exponent is 0, so no overflow).
//!
//! [`FeatureMap`] is the validated, f32 form that the linear ops apply per token inside
//! their chunk loops (fused: a chunk's rows are mapped into a chunk buffer, the whole
//! mapped tensor is never materialized). [`reference`](mod@reference) holds the f64 oracle.

pub mod reference;

use linattn_tensor::ops::non_finite::first_non_finite_in_slice;
use linattn_tensor::{DType, Device, Error, Result, Tensor};
use rayon::prelude::*;

use crate::layout::MAX_HEAD_DIM;

/// Validated Hedgehog weights in f32: `weights[(h * in_dim + d) * features + f]`.
#[derive(Clone, Debug)]
pub struct FeatureMap {
    /// Heads H.
    pub heads: usize,
    /// Input dimension D.
    pub in_dim: usize,
    /// Features per softmax F (the output has 2F).
    pub features: usize,
    /// `[H, D, F]` row-major.
    pub weights: Vec<f32>,
}

impl FeatureMap {
    /// Validates `weights` as `[heads, in_dim, F]` with `2F <= 256` and finite values.
    /// `name` is the tensor's name in error messages.
    pub fn from_tensor(
        op: &'static str,
        name: &str,
        weights: &Tensor,
        heads: usize,
        in_dim: usize,
    ) -> Result<FeatureMap> {
        let dims = weights.dims();
        if dims.len() != 3 || dims[0] != heads || dims[1] != in_dim {
            return Err(Error::invalid(format!(
                "{op}: feature map `{name}` has shape {} but must be [H, D, F] = [{heads}, {in_dim}, F]",
                weights.shape()
            )));
        }
        let features = dims[2];
        if features == 0 || 2 * features > MAX_HEAD_DIM {
            return Err(Error::invalid(format!(
                "{op}: feature map `{name}` has F = {features}; the output 2F must be in 1..={MAX_HEAD_DIM}"
            )));
        }
        if !weights.dtype().is_compute_float() && weights.dtype() != DType::F64 {
            return Err(Error::UnsupportedDType {
                op,
                dtype: weights.dtype(),
                detail: format!("feature map `{name}` must be a float tensor"),
            });
        }
        // Small, and needed on the host anyway (the CPU kernels apply it from there): the
        // copy is checked, no second pass over a GPU tensor.
        let values = weights.to_f32_vec()?;
        if let Some(index) = first_non_finite_in_slice(&values) {
            return Err(Error::NonFinite { op, tensor: name.to_string(), index, value: values[index] });
        }
        Ok(FeatureMap { heads, in_dim, features, weights: values })
    }

    /// Output length 2F.
    pub fn out_dim(&self) -> usize {
        2 * self.features
    }

    /// `out[..2F] = phi_head(x)` for one row `x` of length D, in f32.
    #[inline]
    pub fn apply(&self, head: usize, x: &[f32], out: &mut [f32]) {
        let f = self.features;
        let w = &self.weights[head * self.in_dim * f..][..self.in_dim * f];
        let (pos, neg) = out[..2 * f].split_at_mut(f);
        pos.fill(0.0);
        for (d, &xd) in x[..self.in_dim].iter().enumerate() {
            for (p, &wv) in pos.iter_mut().zip(&w[d * f..(d + 1) * f]) {
                *p += xd * wv;
            }
        }
        let (mut max, mut min) = (f32::NEG_INFINITY, f32::INFINITY);
        for &u in pos.iter() {
            max = max.max(u);
            min = min.min(u);
        }
        let (mut sum_pos, mut sum_neg) = (0.0f32, 0.0f32);
        for (p, n) in pos.iter_mut().zip(neg.iter_mut()) {
            let u = *p;
            *p = (u - max).exp();
            *n = (min - u).exp();
            sum_pos += *p;
            sum_neg += *n;
        }
        let (inv_pos, inv_neg) = (1.0 / sum_pos, 1.0 / sum_neg);
        pos.iter_mut().for_each(|p| *p *= inv_pos);
        neg.iter_mut().for_each(|n| *n *= inv_neg);
    }
}

/// Identity initialization of LoLCATs: `W[h, d, f] = 1` if `d == f`, else 0, for every
/// head (a rectangular identity, `torch.eye(D, F)` repeated over heads). f32, on the CPU.
pub fn hedgehog_identity_init(heads: usize, head_dim: usize, features: usize) -> Result<Tensor> {
    let mut w = vec![0.0f32; heads * head_dim * features];
    for h in 0..heads {
        for d in 0..head_dim.min(features) {
            w[(h * head_dim + d) * features + d] = 1.0;
        }
    }
    Tensor::from_vec(w, [heads, head_dim, features])
}

/// Validates `x [B, T, H, D]` against `weights [H, D, F]`; returns (rows, H, D, the map).
fn validate(op: &'static str, x: &Tensor, weights: &Tensor) -> Result<(usize, FeatureMap)> {
    let dims = x.dims();
    if dims.len() != 4 {
        return Err(Error::invalid(format!("{op}: x must be [B, T, H, D], got shape {}", x.shape())));
    }
    if !x.dtype().is_compute_float() {
        return Err(Error::UnsupportedDType { op, dtype: x.dtype(), detail: "x must be f32, f16 or bf16".into() });
    }
    if !x.device().same_device(&weights.device()) {
        return Err(Error::DeviceMismatch { op, lhs: x.device().to_string(), rhs: weights.device().to_string() });
    }
    let (heads, in_dim) = (dims[2], dims[3]);
    if in_dim == 0 || in_dim > MAX_HEAD_DIM {
        return Err(Error::invalid(format!(
            "{op}: head dim D = {in_dim} of x {} must be in 1..={MAX_HEAD_DIM}",
            x.shape()
        )));
    }
    let map = FeatureMap::from_tensor(op, "weight", weights, heads, in_dim)?;
    x.check_finite(op, "x")?;
    Ok((dims[0] * dims[1], map))
}

/// Hedgehog feature map of `x [B, T, H, D]` with `weights [H, D, F]`:
/// `[B, T, H, 2F]` in the dtype of x. CPU fast path (rayon over rows); CUDA and WebGPU
/// run the kernels of `crate::gpu` (`kernels/{wgsl,cuda}/attn/hedgehog.*`).
pub fn hedgehog_feature_map(x: &Tensor, weights: &Tensor) -> Result<Tensor> {
    const OP: &str = "hedgehog_feature_map";
    let (rows, map) = validate(OP, x, weights)?;
    // Device dispatch: the only place this op chooses an implementation.
    match x.device() {
        Device::Cpu => {}
        Device::Cuda(_) | Device::Wgpu(_) => return crate::gpu::hedgehog_feature_map(x, &map),
    }
    let (heads, d, out_dim) = (map.heads, map.in_dim, map.out_dim());
    let xs = x.to_f32_vec()?;
    let mut out = vec![0.0f32; rows * heads * out_dim];
    out.par_chunks_mut(heads * out_dim).zip(xs.par_chunks(heads * d)).for_each(|(o, xr)| {
        for h in 0..heads {
            map.apply(h, &xr[h * d..(h + 1) * d], &mut o[h * out_dim..(h + 1) * out_dim]);
        }
    });
    let mut shape = x.dims().to_vec();
    shape[3] = out_dim;
    Tensor::from_f32(&out, x.dtype(), shape)
}

/// The f64 oracle of [`hedgehog_feature_map`] (runs on the host, returns a CPU tensor).
pub fn hedgehog_feature_map_reference(x: &Tensor, weights: &Tensor) -> Result<Tensor> {
    let (rows, map) = validate("hedgehog_feature_map_reference", x, weights)?;
    let (heads, d, out_dim) = (map.heads, map.in_dim, map.out_dim());
    let xs = x.to_f32_vec()?;
    let mut out = Vec::with_capacity(rows * heads * out_dim);
    for r in 0..rows {
        for h in 0..heads {
            let row: Vec<f64> = xs[(r * heads + h) * d..][..d].iter().map(|&v| v as f64).collect();
            out.extend(reference::phi(&map, h, &row).into_iter().map(|v| v as f32));
        }
    }
    let mut shape = x.dims().to_vec();
    shape[3] = out_dim;
    Tensor::from_f32(&out, x.dtype(), shape)
}
