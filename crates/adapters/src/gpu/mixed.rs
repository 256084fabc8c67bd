//! Per-row LoRA / DoRA on the GPU: the base output is computed first (dense matmul, or
//! the base's own forward for quantized bases), then two launches add the update
//! (`kernels/{wgsl,cuda}/adapters/lora_mixed_xa*`, `lora_apply*`):
//! 1. `xa[row, j] = s_k x[row] . A_k[j]` for the row's adapter slot `k`;
//! 2. `y = yb + xa B_k^T` (LoRA) or `y = c_k (yb - bias_in_yb + xa B_k^T) + bias` (DoRA),
//!    with `c_k = m_k / ||W + s_k B_k A_k||` per output row.
//!
//! The device state of the adapters ([`GpuPack`]: every slot's `A` and `B^T`
//! concatenated, DoRA factors, the slot table) is uploaded once and cached: per module
//! and device in the module ([`ModuleGpuCache`]), per module path and device in an
//! `AdapterSet`. The DoRA norms are computed on the CPU from `base.dequantized()` when
//! the pack is built, so a cached pack is tied to the base it was first run with (a
//! module adapts one base layer; `LoraModule::clear_gpu_cache` drops the cache when the
//! base changes). Per call, only the row-to-adapter table of a mixed batch is uploaded
//! (4 bytes per row); single-module calls use a zero-filled device table.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use linattn_tensor::{DType, Device, Error, Result, Tensor, ops};

use super::{GpuLoraWeights, checked_u32};
use crate::base::BaseLinear;
use crate::lora::LoraModule;

/// u32 words per slot in the slot table: a_off, bt_off, rank, scaling bits, c_off,
/// has_c, 0, 0 (the kernels' layout).
pub(crate) const SLOT_WORDS: usize = 8;

/// Device-resident adapters of one module path, one slot per adapter.
#[derive(Debug)]
pub struct GpuPack {
    pub(crate) a: Tensor,
    pub(crate) b_t: Tensor,
    pub(crate) c: Tensor,
    pub(crate) slots: Tensor,
    pub(crate) n_slots: usize,
    pub(crate) max_rank: usize,
    pub(crate) n_in: usize,
    pub(crate) n_out: usize,
}

impl GpuPack {
    /// Builds and uploads a pack; `modules[k]` is slot `k` (None: base only). DoRA
    /// modules get their factors from `base` (dequantized once, here).
    pub(crate) fn build(modules: &[Option<&LoraModule>], base: &dyn BaseLinear, device: &Device) -> Result<GpuPack> {
        let (n_in, n_out) = (base.in_features(), base.out_features());
        let mut a = Vec::new();
        let mut b_t = Vec::new();
        let mut c = Vec::new();
        let mut slots = vec![0u32; modules.len() * SLOT_WORDS];
        let mut dense_w: Option<Vec<f32>> = None;
        let mut max_rank = 0;
        for (k, m) in modules.iter().enumerate() {
            let Some(m) = m else { continue };
            if (m.in_features(), m.out_features()) != (n_in, n_out) {
                return Err(Error::invalid(format!(
                    "lora (gpu): module `{}` is [{} -> {}] but the base is [{n_in} -> {n_out}]",
                    m.path(),
                    m.in_features(),
                    m.out_features()
                )));
            }
            let slot = &mut slots[k * SLOT_WORDS..(k + 1) * SLOT_WORDS];
            slot[0] = checked_u32("A offset", a.len())?;
            slot[1] = checked_u32("B offset", b_t.len())?;
            slot[2] = checked_u32("r", m.rank())?;
            slot[3] = m.scaling().to_bits();
            a.extend_from_slice(m.a().as_slice::<f32>()?);
            b_t.extend_from_slice(m.b_transposed().as_slice::<f32>()?);
            if let Some(mag) = m.magnitude() {
                if dense_w.is_none() {
                    dense_w = Some(base.dequantized()?.to_f32_vec()?);
                }
                let norm = m.dora_weight_norm(dense_w.as_deref().expect("set above"))?;
                slot[4] = checked_u32("DoRA offset", c.len())?;
                slot[5] = 1;
                c.extend(mag.as_slice::<f32>()?.iter().zip(&norm).map(|(&m, &n)| m / n));
            }
            max_rank = max_rank.max(m.rank());
        }
        for (what, v) in [("A", &mut a), ("B", &mut b_t), ("DoRA factors", &mut c)] {
            checked_u32(what, v.len())?;
            if v.is_empty() {
                v.push(0.0); // a 1-word placeholder: GPU buffers cannot be empty
            }
        }
        let (la, lb, lc) = (a.len(), b_t.len(), c.len());
        Ok(GpuPack {
            a: Tensor::from_vec(a, [la])?.to_device(device)?,
            b_t: Tensor::from_vec(b_t, [lb])?.to_device(device)?,
            c: Tensor::from_vec(c, [lc])?.to_device(device)?,
            slots: Tensor::from_vec(slots, [modules.len() * SLOT_WORDS])?.to_device(device)?,
            n_slots: modules.len(),
            max_rank,
            n_in,
            n_out,
        })
    }

    pub(crate) fn device(&self) -> Device {
        self.a.device()
    }
}

/// Per-device GPU state of one module, shared by its clones.
#[derive(Debug, Default)]
pub struct ModuleGpuCache {
    weights: Mutex<Vec<GpuLoraWeights>>,
    packs: Mutex<Vec<Arc<GpuPack>>>,
    uploads: AtomicUsize,
}

impl ModuleGpuCache {
    /// Uploads (first call per device) or returns the module's `A` / `B`.
    pub(crate) fn weights(&self, module: &LoraModule, device: &Device) -> Result<GpuLoraWeights> {
        let mut cached = self.weights.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(w) = cached.iter().find(|w| w.device().same_device(device)) {
            return Ok(w.clone());
        }
        let w = GpuLoraWeights::upload_unchecked(module, device)?;
        self.uploads.fetch_add(1, Ordering::Relaxed);
        cached.push(w.clone());
        Ok(w)
    }

    /// Builds (first call per device) or returns the one-slot pack of the module.
    pub(crate) fn pack(&self, module: &LoraModule, base: &dyn BaseLinear, device: &Device) -> Result<Arc<GpuPack>> {
        let mut cached = self.packs.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = cached.iter().find(|p| p.device().same_device(device)) {
            return Ok(p.clone());
        }
        let p = Arc::new(GpuPack::build(&[Some(module)], base, device)?);
        self.uploads.fetch_add(1, Ordering::Relaxed);
        cached.push(p.clone());
        Ok(p)
    }

    pub(crate) fn uploads(&self) -> usize {
        self.uploads.load(Ordering::Relaxed)
    }

    pub(crate) fn clear(&self) {
        self.weights.lock().unwrap_or_else(|e| e.into_inner()).clear();
        self.packs.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

/// Packs of an `AdapterSet`, by module path and device.
#[derive(Debug, Default)]
pub struct SetGpuCache {
    packs: Mutex<Vec<(String, Arc<GpuPack>)>>,
    uploads: AtomicUsize,
}

impl SetGpuCache {
    pub(crate) fn pack(
        &self,
        path: &str,
        modules: &[Option<&LoraModule>],
        base: &dyn BaseLinear,
        device: &Device,
    ) -> Result<Arc<GpuPack>> {
        let mut cached = self.packs.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, p)) = cached.iter().find(|(p_path, p)| p_path == path && p.device().same_device(device)) {
            return Ok(p.clone());
        }
        let p = Arc::new(GpuPack::build(modules, base, device)?);
        self.uploads.fetch_add(1, Ordering::Relaxed);
        cached.push((path.to_string(), p.clone()));
        Ok(p)
    }

    pub(crate) fn uploads(&self) -> usize {
        self.uploads.load(Ordering::Relaxed)
    }
}

/// The base output `yb` on `x`'s device in `x`'s dtype, and whether it includes the bias.
fn base_output(base: &dyn BaseLinear, x: &Tensor) -> Result<(Tensor, bool)> {
    let device = x.device();
    let (yb, bias_in_base) = match base.dense_weight() {
        Some(w) => (ops::linear(x, &w.to_device(&device)?.to_dtype(x.dtype())?)?, false),
        None => (base.forward(x)?, true),
    };
    let yb = yb.to_device(&device)?.to_dtype(x.dtype())?;
    Ok((yb, bias_in_base))
}

/// Runs the two update launches over the base output for rows choosing slots by
/// `row_adapter` (i32 on the device, one per row).
pub(crate) fn apply_pack(pack: &GpuPack, base: &dyn BaseLinear, x: &Tensor, row_adapter: &Tensor) -> Result<Tensor> {
    const OP: &str = "lora (gpu)";
    let device = x.device();
    if !pack.device().same_device(&device) || !row_adapter.device().same_device(&device) {
        return Err(Error::DeviceMismatch { op: OP, lhs: device.to_string(), rhs: pack.device().to_string() });
    }
    let rows = x.shape().rows();
    if x.shape().last_dim() != pack.n_in || row_adapter.dims() != [rows] || row_adapter.dtype() != DType::I32 {
        return Err(Error::invalid(format!(
            "{OP}: input {} / row table {} {} do not fit [{}, {}] adapters",
            x.shape(),
            row_adapter.dtype(),
            row_adapter.shape(),
            pack.n_in,
            pack.n_out
        )));
    }
    let (yb, bias_in_base) = base_output(base, x)?;
    let yb = yb.reshape([rows, pack.n_out])?;
    let bias = base.bias().map(|b| b.to_device(&device)?.to_dtype(DType::F32)).transpose()?;
    if let Some(b) = &bias
        && b.dims() != [pack.n_out]
    {
        return Err(Error::invalid(format!("{OP}: bias {} does not match [{}]", b.shape(), pack.n_out)));
    }
    let p = MixedProblem { rows, bias_in_base };
    let y = match &device {
        Device::Wgpu(d) => super::wgpu::run_mixed(d, pack, &p, x, &yb, bias.as_ref(), row_adapter)?,
        Device::Cuda(d) => super::cuda::run_mixed(d, pack, &p, x, &yb, bias.as_ref(), row_adapter)?,
        Device::Cpu => return Err(Error::invalid(format!("{OP}: expects GPU tensors"))),
    };
    let mut dims = x.dims().to_vec();
    *dims.last_mut().expect("rank >= 1") = pack.n_out;
    y.reshape(dims)
}

/// Per-call sizes of the update launches.
#[derive(Clone, Copy, Debug)]
pub(crate) struct MixedProblem {
    pub rows: usize,
    pub bias_in_base: bool,
}

/// Checks the flat indices of the update kernels against their 32-bit (WGSL) limits.
pub(crate) fn check_mixed_sizes(pack: &GpuPack, rows: usize) -> Result<()> {
    for (what, a, b) in
        [("rows * in", rows, pack.n_in), ("rows * out", rows, pack.n_out), ("rows * max r", rows, pack.max_rank.max(1))]
    {
        let product = a.checked_mul(b).ok_or_else(|| Error::invalid(format!("lora (gpu): {what} overflows")))?;
        checked_u32(what, product)?;
    }
    Ok(())
}

/// The GPU forward of one module over a base without a dense weight, or of a DoRA
/// module: base output, then the update with every row on slot 0.
pub(crate) fn module_forward(base: &dyn BaseLinear, module: &LoraModule, x: &Tensor) -> Result<Tensor> {
    let device = x.device();
    let pack = module.gpu_cache().pack(module, base, &device)?;
    let rows = x.shape().rows();
    let row_adapter = Tensor::zeros([rows], DType::I32, &device)?;
    apply_pack(&pack, base, x, &row_adapter)
}
