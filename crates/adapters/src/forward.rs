//! Unmerged LoRA / DoRA forward passes: fused CPU path and naive reference.
//!
//! Linear, with `x [rows, in]`, base `W [out, in]`, bias `b`, scaling `s`:
//! - LoRA: `y = x W^T + b + s (x A^T) B^T`.
//! - DoRA (peft): `y = c * (x W^T) + b + c * s (x A^T) B^T`, `c = m / ||W + s B A||_row`
//!   (the norm is a constant: peft detaches it).
//!
//! The fused CPU path never forms `B A`: per row it computes `t = A x` once (`r` dot
//! products of length `in`), then adds `s * t_j * B^T[j, :]` into the base output
//! (`r` axpys of length `out`). Rows are split over rayon in blocks of
//! [`ROWS_PER_TASK`]. Inputs may be f32, f16 or bf16; everything is widened to f32,
//! accumulated in f32 and rounded once to the input dtype. The base output comes from
//! [`BaseLinear::forward`] in the input dtype. The reference materializes `W'` in f64.
//!
//! Device dispatch: public functions validate, then [`crate::device::cpu_only`] is the
//! one place that routes CPU tensors here and answers `NotImplementedOnDevice` for
//! CUDA / WebGPU until their kernels land. [`lora_forward`] on a GPU tensor runs the
//! kernels of [`crate::gpu`] instead (LoRA and DoRA; QLoRA bases run their own forward).

use rayon::prelude::*;

use linattn_tensor::{Error, Result, Tensor};

use crate::base::BaseLinear;
use crate::device::cpu_only;
use crate::lora::{LoraModule, ModuleKind};

/// Rows handled by one rayon task in the fused forward.
pub const ROWS_PER_TASK: usize = 16;

/// A module's f32 weights ready for the row kernel, with the DoRA row factors resolved.
pub(crate) struct PreparedModule<'a> {
    pub a: &'a [f32],
    pub b_t: &'a [f32],
    pub rank: usize,
    pub scaling: f32,
    /// DoRA: `c = m / ||W + s B A||` per output, and the bias that `c` must not scale.
    pub dora: Option<(Vec<f32>, Vec<f32>)>,
}

impl<'a> PreparedModule<'a> {
    /// Prepares `module` over `base` (computes the DoRA factors when it has a magnitude).
    pub fn new(module: &'a LoraModule, base: &dyn BaseLinear) -> Result<PreparedModule<'a>> {
        let dora = match module.magnitude() {
            None => None,
            Some(m) => {
                let w = base.dequantized()?.to_f32_vec()?;
                let norm = module.dora_weight_norm(&w)?;
                let c = m.as_slice::<f32>()?.iter().zip(&norm).map(|(&m, &n)| m / n).collect();
                let bias = match base.bias() {
                    Some(b) => b.to_f32_vec()?,
                    None => vec![0f32; module.out_features()],
                };
                Some((c, bias))
            }
        };
        Ok(PreparedModule {
            a: module.a().as_slice::<f32>()?,
            b_t: module.b_transposed().as_slice::<f32>()?,
            rank: module.rank(),
            scaling: module.scaling(),
            dora,
        })
    }

    /// Adds this module's contribution to one row: `y` holds the base output on entry.
    /// `t` and `lora` are scratch of at least `rank` and `y.len()` values.
    #[inline]
    pub fn apply_row(&self, x: &[f32], y: &mut [f32], t: &mut [f32], lora: &mut [f32]) {
        let n_in = x.len();
        let n_out = y.len();
        for (j, tj) in t[..self.rank].iter_mut().enumerate() {
            *tj = dot(&self.a[j * n_in..(j + 1) * n_in], x);
        }
        match &self.dora {
            None => {
                for (&tj, b_row) in t[..self.rank].iter().zip(self.b_t.chunks_exact(n_out)) {
                    axpy(self.scaling * tj, b_row, y);
                }
            }
            Some((c, bias)) => {
                let lora = &mut lora[..n_out];
                lora.fill(0.0);
                for (&tj, b_row) in t[..self.rank].iter().zip(self.b_t.chunks_exact(n_out)) {
                    axpy(tj, b_row, lora);
                }
                for o in 0..n_out {
                    y[o] = c[o] * (y[o] - bias[o] + self.scaling * lora[o]) + bias[o];
                }
            }
        }
    }
}

#[inline]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    // Eight independent partial sums let the compiler vectorize without reassociation.
    let mut acc = [0f32; 8];
    let (ac, ar) = a.split_at(a.len() / 8 * 8);
    let (bc, br) = b.split_at(ac.len());
    for (x, y) in ac.chunks_exact(8).zip(bc.chunks_exact(8)) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    let mut sum = acc.iter().sum::<f32>();
    for (x, y) in ar.iter().zip(br) {
        sum += x * y;
    }
    sum
}

#[inline]
fn axpy(alpha: f32, x: &[f32], y: &mut [f32]) {
    for (y, &x) in y.iter_mut().zip(x) {
        *y += alpha * x;
    }
}

/// Runs the row kernel over all rows: `choose(row)` picks the module (None = base only).
pub(crate) fn apply_rows(
    x: &[f32],
    n_in: usize,
    y: &mut [f32],
    n_out: usize,
    modules: &[PreparedModule<'_>],
    choose: &(dyn Fn(usize) -> Option<usize> + Sync),
) {
    let max_rank = modules.iter().map(|m| m.rank).max().unwrap_or(0);
    y.par_chunks_mut(n_out * ROWS_PER_TASK).zip(x.par_chunks(n_in * ROWS_PER_TASK)).enumerate().for_each(
        |(block, (yb, xb))| {
            let mut t = vec![0f32; max_rank];
            let mut lora = vec![0f32; n_out];
            for (i, (yr, xr)) in yb.chunks_mut(n_out).zip(xb.chunks(n_in)).enumerate() {
                if let Some(m) = choose(block * ROWS_PER_TASK + i) {
                    modules[m].apply_row(xr, yr, &mut t, &mut lora);
                }
            }
        },
    );
}

/// Checks that `module` is a linear module that fits `base` and `x`.
pub(crate) fn check_linear(op: &str, base: &dyn BaseLinear, module: &LoraModule, x: &Tensor) -> Result<()> {
    if module.kind() != ModuleKind::Linear {
        return Err(Error::invalid(format!("{op}: module `{}` is an embedding LoRA, not linear", module.path())));
    }
    if (module.out_features(), module.in_features()) != (base.out_features(), base.in_features()) {
        return Err(Error::invalid(format!(
            "{op}: module `{}` has A {} / B {} but the base weight is [{}, {}]",
            module.path(),
            module.a().shape(),
            module.b().shape(),
            base.out_features(),
            base.in_features()
        )));
    }
    if !x.dtype().is_compute_float() || x.rank() == 0 || x.shape().last_dim() != base.in_features() {
        return Err(Error::invalid(format!(
            "{op}: input {} {} does not match module `{}` with {} input features",
            x.dtype(),
            x.shape(),
            module.path(),
            base.in_features()
        )));
    }
    Ok(())
}

/// Unmerged forward `base(x) + LoRA(x)` (DoRA when the module has a magnitude), fused.
/// `x [..., in]` f32/f16/bf16; returns `[..., out]` in `x`'s dtype.
pub fn lora_forward(base: &dyn BaseLinear, module: &LoraModule, x: &Tensor) -> Result<Tensor> {
    check_linear("lora_forward", base, module, x)?;
    if !x.is_cpu() {
        // CUDA / WebGPU: the kernels of `crate::gpu` (fused for dense LoRA, per-row otherwise).
        return crate::gpu::lora_forward_base(base, module, x);
    }
    cpu_only("lora_forward", x)?;
    let prepared = [PreparedModule::new(module, base)?];
    let y = base.forward(x)?;
    let xv = x.to_f32_vec()?;
    let mut yv = y.to_f32_vec()?;
    apply_rows(&xv, base.in_features(), &mut yv, base.out_features(), &prepared, &|_| Some(0));
    Tensor::from_f32(&yv, x.dtype(), y.dims().to_vec())
}

/// Naive reference: materializes `W' = W + s B A` (DoRA: `c * W'` row-wise) in f64 and
/// returns `x W'^T + b` in `x`'s dtype. The oracle for [`lora_forward`].
pub fn lora_forward_reference(base: &dyn BaseLinear, module: &LoraModule, x: &Tensor) -> Result<Tensor> {
    check_linear("lora_forward_reference", base, module, x)?;
    let (n_out, n_in, r) = (base.out_features(), base.in_features(), module.rank());
    let w = base.dequantized()?.to_f32_vec()?;
    let (a, b) = (module.a().to_f32_vec()?, module.b().to_f32_vec()?);
    let s = module.scaling() as f64;
    let mut merged = vec![0f64; n_out * n_in];
    for o in 0..n_out {
        for i in 0..n_in {
            let mut d = 0f64;
            for j in 0..r {
                d += b[o * r + j] as f64 * a[j * n_in + i] as f64;
            }
            merged[o * n_in + i] = w[o * n_in + i] as f64 + s * d;
        }
    }
    if let Some(m) = module.magnitude() {
        let m = m.to_f32_vec()?;
        for o in 0..n_out {
            let row = &mut merged[o * n_in..(o + 1) * n_in];
            let norm = row.iter().map(|v| v * v).sum::<f64>().sqrt();
            row.iter_mut().for_each(|v| *v *= m[o] as f64 / norm);
        }
    }
    let bias = match base.bias() {
        Some(b) => b.to_f32_vec()?,
        None => vec![0f32; n_out],
    };
    let xv = x.to_f32_vec()?;
    let rows = x.shape().rows();
    let mut y = vec![0f32; rows * n_out];
    for row in 0..rows {
        for o in 0..n_out {
            let mut acc = bias[o] as f64;
            for i in 0..n_in {
                acc += xv[row * n_in + i] as f64 * merged[o * n_in + i];
            }
            y[row * n_out + o] = acc as f32;
        }
    }
    let mut dims = x.dims().to_vec();
    *dims.last_mut().expect("rank checked") = n_out;
    Tensor::from_f32(&y, x.dtype(), dims)
}

/// Embedding lookup with LoRA: `E[id] + s * (A[:, id])^T B^T` for each id (DoRA: times
/// `c = m / ||E^T + s B A||_row` per embedding dimension, as peft). `table` is
/// `[num_embeddings, dim]`; returns `[ids.len(), dim]` in the table's dtype.
pub fn lora_embedding_forward(table: &Tensor, module: &LoraModule, ids: &[u32]) -> Result<Tensor> {
    let [num, dim] = table.dims() else {
        return Err(Error::invalid(format!("lora_embedding_forward: table must be [num, dim], got {}", table.shape())));
    };
    let (num, dim) = (*num, *dim);
    if module.kind() != ModuleKind::Embedding || (module.in_features(), module.out_features()) != (num, dim) {
        return Err(Error::invalid(format!(
            "lora_embedding_forward: module `{}` (A {}, B {}) does not fit an embedding table {}",
            module.path(),
            module.a().shape(),
            module.b().shape(),
            table.shape()
        )));
    }
    if let Some(&bad) = ids.iter().find(|&&id| id as usize >= num) {
        return Err(Error::invalid(format!("lora_embedding_forward: token id {bad} >= num_embeddings {num}")));
    }
    cpu_only("lora_embedding_forward", table)?;
    let e = table.to_f32_vec()?;
    let (a, b_t, r, s) =
        (module.a().as_slice::<f32>()?, module.b_transposed().as_slice::<f32>()?, module.rank(), module.scaling());
    let c = match module.magnitude() {
        None => None,
        Some(m) => {
            let e_t = crate::base::transpose_2d(&Tensor::from_slice(&e, [num, dim])?)?.to_f32_vec()?;
            let norm = module.dora_weight_norm(&e_t)?;
            Some(m.as_slice::<f32>()?.iter().zip(norm).map(|(&m, n)| m / n).collect::<Vec<f32>>())
        }
    };
    let mut y = vec![0f32; ids.len() * dim];
    y.par_chunks_mut(dim).zip(ids.par_iter()).for_each(|(row, &id)| {
        let id = id as usize;
        row.copy_from_slice(&e[id * dim..(id + 1) * dim]);
        let mut lora = vec![0f32; dim];
        for j in 0..r {
            axpy(a[j * num + id], &b_t[j * dim..(j + 1) * dim], &mut lora);
        }
        for d in 0..dim {
            let v = row[d] + s * lora[d];
            row[d] = match &c {
                Some(c) => c[d] * v,
                None => v,
            };
        }
    });
    Tensor::from_f32(&y, table.dtype(), [ids.len(), dim])
}
