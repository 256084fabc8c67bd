//! Fused unmerged LoRA forward on CUDA and WebGPU: `y = x W^T + bias + s (x A^T) B^T`.
//!
//! Two launches per call (kernels `kernels/{wgsl,cuda}/adapters/`):
//! 1. `xa = s * x A^T` into an f32 scratch `[rows, r]` (blocks of 4 rows x 4 ranks,
//!    threads reducing over `in`);
//! 2. the base product plus `xa B^T` plus the bias, accumulated in f32 registers and
//!    written once in `x`'s dtype. [`LoraKernel::Matvec`] (v1: blocks of 4 rows x 4
//!    outputs reducing over `in`, for decode) or [`LoraKernel::Tiled`] (v2: 64 x 64 tiles
//!    with 16-wide K steps in shared memory, then the rank steps through the same tiles,
//!    for prefill); [`LoraKernel::Auto`] picks v1 up to [`MATVEC_MAX_ROWS`] rows.
//!
//! Dtypes: `x`, `W` and the bias share one dtype (f32, f16 or bf16); `A` and `B` are f32
//! (a [`LoraModule`] keeps them in f32 whatever the file held), so the LoRA weights never
//! lose precision. Accumulation is f32 and the output is rounded once, which is at least
//! as accurate as the CPU path (that rounds the base output before adding LoRA).
//!
//! No per-call uploads: [`crate::lora_forward`] takes a module's device weights from the
//! module's cache (uploaded on the first call per device; [`LoraModule::gpu_uploads`]
//! counts uploads). A dense base weight that is not on `x`'s device, or not in `x`'s
//! dtype, is still moved / converted per call: keep base weights on the device in the
//! activations' dtype. [`GpuLoraWeights::upload`] remains for callers of the dense API.
//!
//! DoRA modules, bases without a dense weight (QLoRA: `QuantizedWeight`, whose forward
//! runs the quant crate's GPU kernels) and per-row adapter batches
//! (`AdapterSet::forward_mixed`) run the base first and add the update with the per-row
//! kernels of `mixed` (DoRA factors computed once per module and device, cached).

mod cuda;
pub(crate) mod mixed;
mod wgpu;

pub use self::cuda::{LORA_APPLY_PTX, LORA_FWD_PTX, cuda_apply_entries, cuda_launched_entries};
pub use self::wgpu::{LORA_APPLY_WGSL, LORA_FUSED_WGSL, LORA_MIXED_XA_WGSL, LORA_XA_WGSL};

use linattn_tensor::{Device, Error, Result, Tensor};

use crate::base::BaseLinear;
use crate::lora::{LoraModule, ModuleKind};

/// Rows up to which [`LoraKernel::Auto`] runs the matvec kernel.
pub const MATVEC_MAX_ROWS: usize = 8;

/// Which stage-2 kernel runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoraKernel {
    /// Matvec up to [`MATVEC_MAX_ROWS`] rows, tiled above.
    Auto,
    /// v1: 4 rows x 4 outputs per workgroup, reduction over `in`.
    Matvec,
    /// v2: 64 x 64 output tiles.
    Tiled,
}

/// A linear LoRA module's `A [r, in]` and `B [out, r]` as f32 tensors on one GPU.
#[derive(Clone, Debug)]
pub struct GpuLoraWeights {
    path: String,
    a: Tensor,
    b: Tensor,
    scaling: f32,
}

impl GpuLoraWeights {
    /// Uploads `module`'s weights to `device` (CUDA or WebGPU). Embedding modules and
    /// the CPU are `Err`; DoRA modules are `NotImplementedOnDevice`.
    pub fn upload(module: &LoraModule, device: &Device) -> Result<GpuLoraWeights> {
        if module.kind() != ModuleKind::Linear {
            return Err(Error::invalid(format!(
                "GpuLoraWeights: module `{}` is an embedding LoRA, not linear",
                module.path()
            )));
        }
        if module.magnitude().is_some() {
            return Err(Error::NotImplementedOnDevice { op: "lora_forward (DoRA)", device: device.to_string() });
        }
        GpuLoraWeights::upload_unchecked(module, device)
    }

    /// [`GpuLoraWeights::upload`] without the DoRA check (the caller handles DoRA).
    pub(crate) fn upload_unchecked(module: &LoraModule, device: &Device) -> Result<GpuLoraWeights> {
        if module.kind() != ModuleKind::Linear {
            return Err(Error::invalid(format!(
                "GpuLoraWeights: module `{}` is an embedding LoRA, not linear",
                module.path()
            )));
        }
        if matches!(device, Device::Cpu) {
            return Err(Error::invalid(format!(
                "GpuLoraWeights: module `{}`: device must be CUDA or WebGPU, got cpu",
                module.path()
            )));
        }
        Ok(GpuLoraWeights {
            path: module.path().to_string(),
            a: module.a().to_device(device)?,
            b: module.b().to_device(device)?,
            scaling: module.scaling(),
        })
    }

    /// The module path the weights came from.
    pub fn path(&self) -> &str {
        &self.path
    }
    /// LoRA rank `r`.
    pub fn rank(&self) -> usize {
        self.a.dims()[0]
    }
    pub fn in_features(&self) -> usize {
        self.a.dims()[1]
    }
    pub fn out_features(&self) -> usize {
        self.b.dims()[0]
    }
    pub fn scaling(&self) -> f32 {
        self.scaling
    }
    /// The device the weights live on.
    pub fn device(&self) -> Device {
        self.a.device()
    }
}

/// Sizes of one fused forward, validated.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Problem {
    pub rows: usize,
    pub n_in: usize,
    pub n_out: usize,
    pub rank: usize,
    pub scaling: f32,
    pub tiled: bool,
}

/// Fused forward with [`LoraKernel::Auto`]; see [`lora_forward_dense_with`].
pub fn lora_forward_dense(weight: &Tensor, bias: Option<&Tensor>, lora: &GpuLoraWeights, x: &Tensor) -> Result<Tensor> {
    lora_forward_dense_with(LoraKernel::Auto, weight, bias, lora, x)
}

/// `y = x W^T + bias + s (x A^T) B^T` on the GPU holding `x [..., in]`. `weight [out, in]`
/// and `bias [out]` must have `x`'s dtype (f32, f16, bf16) and live on `x`'s device, as
/// must `lora`. Returns `[..., out]` in `x`'s dtype on that device.
pub fn lora_forward_dense_with(
    kernel: LoraKernel,
    weight: &Tensor,
    bias: Option<&Tensor>,
    lora: &GpuLoraWeights,
    x: &Tensor,
) -> Result<Tensor> {
    const OP: &str = "lora_forward (gpu)";
    let dtype = x.dtype();
    if !dtype.is_compute_float() || x.rank() == 0 {
        return Err(Error::invalid(format!(
            "{OP}: input must be an f32/f16/bf16 tensor of rank >= 1, got {dtype} {}",
            x.shape()
        )));
    }
    let (n_in, n_out, rank) = (lora.in_features(), lora.out_features(), lora.rank());
    if x.shape().last_dim() != n_in || weight.dims() != [n_out, n_in] {
        return Err(Error::invalid(format!(
            "{OP}: module `{}` (A [{rank}, {n_in}], B [{n_out}, {rank}]) does not fit input {} and weight {}",
            lora.path(),
            x.shape(),
            weight.shape()
        )));
    }
    if weight.dtype() != dtype {
        return Err(Error::invalid(format!("{OP}: weight dtype {} differs from input dtype {dtype}", weight.dtype())));
    }
    if let Some(b) = bias
        && (b.dims() != [n_out] || b.dtype() != dtype)
    {
        return Err(Error::invalid(format!("{OP}: bias {} {} does not match [{n_out}] {dtype}", b.dtype(), b.shape())));
    }
    let device = x.device();
    let operands = [("weight", weight.device()), ("LoRA weights", lora.device())]
        .into_iter()
        .chain(bias.map(|b| ("bias", b.device())));
    for (what, d) in operands {
        if !d.same_device(&device) {
            return Err(Error::DeviceMismatch {
                op: "lora_forward (gpu)",
                lhs: device.to_string(),
                rhs: format!("{what} on {d}"),
            });
        }
    }
    let rows = x.shape().rows();
    let tiled = match kernel {
        LoraKernel::Auto => rows > MATVEC_MAX_ROWS,
        LoraKernel::Matvec => false,
        LoraKernel::Tiled => true,
    };
    let problem = Problem { rows, n_in, n_out, rank, scaling: lora.scaling(), tiled };
    let mut out_dims = x.dims().to_vec();
    *out_dims.last_mut().expect("rank checked") = n_out;
    let y = match &device {
        Device::Wgpu(d) => wgpu::run(d, &problem, x, weight, bias, &lora.a, &lora.b)?,
        Device::Cuda(d) => cuda::run(d, &problem, x, weight, bias, &lora.a, &lora.b)?,
        Device::Cpu => {
            return Err(Error::invalid(format!("{OP}: expects GPU tensors; use crate::lora_forward on the CPU")));
        }
    };
    y.reshape(out_dims)
}

/// The GPU arm of [`crate::lora_forward`]. LoRA over a dense base: the fused kernels with
/// the module's cached device weights (the base weight and bias moved to `x`'s device and
/// dtype when needed). DoRA, or a base without a dense weight: [`mixed::module_forward`].
pub(crate) fn lora_forward_base(base: &dyn BaseLinear, module: &LoraModule, x: &Tensor) -> Result<Tensor> {
    let device = x.device();
    let rows = x.shape().rows();
    match base.dense_weight() {
        // Decode-sized batches: the tensor core's matvec for the base product plus the
        // per-row update kernel beat the fused tile kernel, whose matvec variant reads W
        // with less parallelism (measured on lavapipe: `linattn bench adapters --device wgpu`).
        Some(w) if module.magnitude().is_none() && rows > MATVEC_MAX_ROWS => {
            let lora = module.gpu_cache().weights(module, &device)?;
            let on_device = |t: &Tensor| -> Result<Tensor> { t.to_device(&device)?.to_dtype(x.dtype()) };
            let weight = on_device(w)?;
            let bias = base.bias().map(on_device).transpose()?;
            lora_forward_dense(&weight, bias.as_ref(), &lora, x)
        }
        _ => mixed::module_forward(base, module, x),
    }
}

/// `value` as a kernel `u32`, or an `Err` naming `what` (limit 2^31 - 1, as CUDA's).
pub(crate) fn checked_u32(what: &str, value: usize) -> Result<u32> {
    u32::try_from(value).ok().filter(|&v| v <= i32::MAX as u32).ok_or_else(|| {
        Error::invalid(format!("lora_forward (gpu): {what} = {value} exceeds the kernels' limit of 2^31 - 1"))
    })
}

/// Checks that every flat index the kernels form fits their 32-bit (WGSL) or 64-bit
/// (CUDA) arithmetic: products of the sizes must stay below 2^31.
pub(crate) fn check_sizes(p: &Problem) -> Result<()> {
    for (what, a, b) in [
        ("rows * in", p.rows, p.n_in),
        ("out * in", p.n_out, p.n_in),
        ("rows * out", p.rows, p.n_out),
        ("rows * r", p.rows, p.rank),
        ("out * r", p.n_out, p.rank),
    ] {
        let product =
            a.checked_mul(b).ok_or_else(|| Error::invalid(format!("lora_forward (gpu): {what} overflows")))?;
        checked_u32(what, product)?;
    }
    Ok(())
}
