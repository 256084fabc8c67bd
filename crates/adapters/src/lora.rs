//! LoRA / DoRA weights of one module and of one whole adapter.
//!
//! Layout (peft's): for a linear layer with weight `W [out, in]`, `A [r, in]`,
//! `B [out, r]`, the update is `delta = s * B A` (`[out, in]`). For an embedding with
//! table `E [num_embeddings, dim]`, peft stores `lora_embedding_A [r, num_embeddings]`
//! and `lora_embedding_B [dim, r]`; here `in = num_embeddings`, `out = dim`, and the
//! table update is `delta^T`. A DoRA magnitude `m` has one entry per `out`.
//!
//! A module keeps `A`, `B`, `B^T` and `m` as f32 CPU tensors (converted once at load),
//! so every kernel reads f32 and accumulates in f32 whatever the file's dtype was.

use std::collections::BTreeMap;
use std::sync::Arc;

use linattn_tensor::{DType, Error, Result, Tensor};

use crate::config::LoraConfig;
use crate::gpu::GpuLoraWeights;
use crate::gpu::mixed::ModuleGpuCache;

/// What kind of base layer a LoRA module adapts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModuleKind {
    /// `nn.Linear`: base weight `[out, in]` (or `[in, out]` with `fan_in_fan_out`).
    Linear,
    /// `nn.Embedding`: base table `[num_embeddings, dim]`.
    Embedding,
}

/// The LoRA (optionally DoRA) weights of one module.
#[derive(Clone, Debug)]
pub struct LoraModule {
    path: String,
    kind: ModuleKind,
    a: Tensor,
    b: Tensor,
    b_t: Tensor,
    magnitude: Option<Tensor>,
    scaling: f32,
    fan_in_fan_out: bool,
    /// Device copies of the weights (and DoRA factors), uploaded once per device and
    /// shared by clones; reset by [`LoraModule::with_scaling`].
    gpu: Arc<ModuleGpuCache>,
}

fn f32_host(t: &Tensor, key: &str) -> Result<Tensor> {
    if !t.dtype().is_compute_float() && t.dtype() != DType::F64 {
        return Err(Error::invalid(format!("`{key}`: dtype {} is not a float type", t.dtype())));
    }
    let t = t.to_device(&linattn_tensor::Device::Cpu)?.to_dtype(DType::F32)?;
    t.check_finite("lora", key)?;
    Ok(t)
}

impl LoraModule {
    /// Builds a module from `a [r, in]`, `b [out, r]` and an optional DoRA magnitude
    /// `[out]` (any float dtype, any device; stored as f32 on the CPU). `path` names the
    /// module in errors. Rejects rank 0, mismatched ranks, non-finite values and a
    /// non-finite scaling.
    pub fn new(
        path: &str,
        kind: ModuleKind,
        a: &Tensor,
        b: &Tensor,
        magnitude: Option<&Tensor>,
        scaling: f32,
        fan_in_fan_out: bool,
    ) -> Result<LoraModule> {
        let (a_key, b_key) = match kind {
            ModuleKind::Linear => (format!("{path}.lora_A.weight"), format!("{path}.lora_B.weight")),
            ModuleKind::Embedding => (format!("{path}.lora_embedding_A"), format!("{path}.lora_embedding_B")),
        };
        let (&[r, _in], &[_out, rb]) = (a.dims(), b.dims()) else {
            return Err(Error::invalid(format!(
                "`{a_key}` {} and `{b_key}` {} must both be rank 2 ([r, in] and [out, r])",
                a.shape(),
                b.shape()
            )));
        };
        if r == 0 {
            return Err(Error::invalid(format!("`{a_key}` has rank 0 (shape {})", a.shape())));
        }
        if rb != r {
            return Err(Error::invalid(format!(
                "`{a_key}` {} and `{b_key}` {} disagree on the rank ({r} vs {rb})",
                a.shape(),
                b.shape()
            )));
        }
        if !scaling.is_finite() {
            return Err(Error::invalid(format!("module `{path}`: scaling {scaling} is not finite")));
        }
        let a = f32_host(a, &a_key)?;
        let b = f32_host(b, &b_key)?;
        let out = b.dims()[0];
        let magnitude = match magnitude {
            None => None,
            Some(m) => {
                let key = format!("{path}.lora_magnitude_vector");
                if m.dims() != [out] {
                    return Err(Error::invalid(format!(
                        "`{key}` has shape {}, expected [{out}] to match `{b_key}` {}",
                        m.shape(),
                        b.shape()
                    )));
                }
                Some(f32_host(m, &key)?)
            }
        };
        let bv = b.as_slice::<f32>()?;
        let mut b_t = vec![0f32; bv.len()];
        for o in 0..out {
            for j in 0..r {
                b_t[j * out + o] = bv[o * r + j];
            }
        }
        let b_t = Tensor::from_vec(b_t, [r, out])?;
        Ok(LoraModule {
            path: path.to_string(),
            kind,
            a,
            b,
            b_t,
            magnitude,
            scaling,
            fan_in_fan_out,
            gpu: Arc::default(),
        })
    }

    /// The module path (peft's, without the `base_model.model.` prefix).
    pub fn path(&self) -> &str {
        &self.path
    }
    pub fn kind(&self) -> ModuleKind {
        self.kind
    }
    /// LoRA rank `r`.
    pub fn rank(&self) -> usize {
        self.a.dims()[0]
    }
    /// Input features (`num_embeddings` for an embedding).
    pub fn in_features(&self) -> usize {
        self.a.dims()[1]
    }
    /// Output features (`dim` for an embedding).
    pub fn out_features(&self) -> usize {
        self.b.dims()[0]
    }
    /// `A [r, in]`, f32 on the CPU.
    pub fn a(&self) -> &Tensor {
        &self.a
    }
    /// `B [out, r]`, f32 on the CPU.
    pub fn b(&self) -> &Tensor {
        &self.b
    }
    /// `B^T [r, out]`, f32 on the CPU (the layout the fused forward streams).
    pub fn b_transposed(&self) -> &Tensor {
        &self.b_t
    }
    /// DoRA magnitude `[out]`, f32 on the CPU, when this is a DoRA module.
    pub fn magnitude(&self) -> Option<&Tensor> {
        self.magnitude.as_ref()
    }
    /// The scaling `s` applied to `B A`.
    pub fn scaling(&self) -> f32 {
        self.scaling
    }
    pub fn fan_in_fan_out(&self) -> bool {
        self.fan_in_fan_out
    }
    /// Whether the base tensor as stored is `[in, out]` (fan_in_fan_out, or an embedding
    /// table) rather than `[out, in]`.
    pub fn base_is_transposed(&self) -> bool {
        self.fan_in_fan_out || self.kind == ModuleKind::Embedding
    }
    /// The shape the base tensor must have as stored in a checkpoint.
    pub fn stored_base_dims(&self) -> [usize; 2] {
        if self.base_is_transposed() {
            [self.in_features(), self.out_features()]
        } else {
            [self.out_features(), self.in_features()]
        }
    }

    /// Replaces the scaling (used when combining adapters).
    pub fn with_scaling(mut self, scaling: f32) -> LoraModule {
        self.scaling = scaling;
        self.gpu = Arc::default();
        self
    }

    /// The module's `A` / `B` on `device` (CUDA or WebGPU), uploaded on the first call
    /// per device and cached (shared by clones). DoRA modules are `NotImplementedOnDevice`
    /// here as in [`GpuLoraWeights::upload`]; `lora_forward` runs them on the GPU itself.
    pub fn gpu_weights(&self, device: &linattn_tensor::Device) -> Result<GpuLoraWeights> {
        if self.magnitude.is_some() {
            return Err(Error::NotImplementedOnDevice { op: "GpuLoraWeights (DoRA)", device: device.to_string() });
        }
        self.gpu.weights(self, device)
    }

    /// How many times this module (or a clone) uploaded its weights to a GPU.
    pub fn gpu_uploads(&self) -> usize {
        self.gpu.uploads()
    }

    /// Drops the device copies (and the cached DoRA factors, which depend on the base the
    /// module first ran with on each device).
    pub fn clear_gpu_cache(&self) {
        self.gpu.clear()
    }

    pub(crate) fn gpu_cache(&self) -> &ModuleGpuCache {
        &self.gpu
    }

    /// `s * B A` as f32 `[out, in]`, accumulated in f32.
    pub fn delta_weight(&self) -> Result<Vec<f32>> {
        let (r, n_in, n_out) = (self.rank(), self.in_features(), self.out_features());
        let (av, bv) = (self.a.as_slice::<f32>()?, self.b.as_slice::<f32>()?);
        let mut delta = vec![0f32; n_out * n_in];
        for o in 0..n_out {
            let row = &mut delta[o * n_in..(o + 1) * n_in];
            for j in 0..r {
                let coef = self.scaling * bv[o * r + j];
                for (d, &a) in row.iter_mut().zip(&av[j * n_in..(j + 1) * n_in]) {
                    *d += coef * a;
                }
            }
        }
        Ok(delta)
    }

    /// The DoRA norm `||W + s B A||` per output row, from the logical base weight
    /// `w [out, in]` as f32 (f32 accumulation, as peft computes it in f32).
    pub fn dora_weight_norm(&self, w: &[f32]) -> Result<Vec<f32>> {
        let (n_in, n_out) = (self.in_features(), self.out_features());
        if w.len() != n_in * n_out {
            return Err(Error::invalid(format!(
                "module `{}`: base weight of {} values does not match [{n_out}, {n_in}]",
                self.path,
                w.len()
            )));
        }
        let delta = self.delta_weight()?;
        Ok((0..n_out)
            .map(|o| {
                let (wr, dr) = (&w[o * n_in..(o + 1) * n_in], &delta[o * n_in..(o + 1) * n_in]);
                wr.iter().zip(dr).map(|(&x, &d)| (x + d) * (x + d)).sum::<f32>().sqrt()
            })
            .collect())
    }
}

/// A whole peft LoRA adapter: its config, its modules by path, and the tensors of
/// `modules_to_save` (full replacement weights, by base tensor name).
#[derive(Clone, Debug)]
pub struct LoraAdapter {
    pub config: LoraConfig,
    pub modules: BTreeMap<String, LoraModule>,
    /// Full tensors peft saved for `modules_to_save`, keyed by base tensor name
    /// (e.g. `lm_head.weight`).
    pub saved_modules: BTreeMap<String, Tensor>,
    /// The dtype the adapter file stored A and B in (used again on save).
    pub file_dtype: DType,
}

impl LoraAdapter {
    /// The module at `path`, or an error naming it and the adapter's modules.
    pub fn module(&self, path: &str) -> Result<&LoraModule> {
        self.modules.get(path).ok_or_else(|| {
            let known: Vec<&str> = self.modules.keys().map(|s| s.as_str()).take(8).collect();
            Error::invalid(format!("adapter has no module `{path}` (modules: {known:?})"))
        })
    }
    /// Whether any module is DoRA.
    pub fn is_dora(&self) -> bool {
        self.modules.values().any(|m| m.magnitude().is_some())
    }
}
