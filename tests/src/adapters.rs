//! Conformance cases of linattn-adapters: the fused unmerged LoRA forward
//! `y = x W^T + bias + s (x A^T) B^T` on the device under test against
//! `lora_forward_reference` (which merges `W + s B A` in f64 on the CPU).
//!
//! Cases cover decode (1 row), odd row counts on both sides of the matvec / tiled switch
//! (7, 9, 130), features that miss every tile (1, 33, 100, 257), ranks 1 to 64, with and
//! without bias, in f32, f16 and bf16, plus both GPU kernel variants forced
//! (`lora_fwd_matvec`, `lora_fwd_tiled`; on the CPU these run `lora_forward`). Inputs are
//! seeded and rounded to the case dtype before the reference sees them; `A` and `B` are
//! f32 (as a `LoraModule` stores them). Tolerances: rel RMS 1e-5 for f32 and 5e-3 for the
//! 16-bit dtypes (one output rounding plus f32 accumulation over `in + r` terms).

use linattn_adapters::gpu::{self, GpuLoraWeights, LoraKernel};
use linattn_adapters::{DenseLinear, LoraModule, ModuleKind, lora_forward, lora_forward_reference};
use linattn_tensor::{DType, Device, Result, Tensor};

use crate::harness::{Case, CaseOutput, Tolerance};
use crate::tensor_ops::inputs;

const DTYPES: [DType; 3] = [DType::F32, DType::F16, DType::BF16];

/// The tolerance of a LoRA forward case whose output is rounded to `dtype`. The
/// element-wise `atol` of the 16-bit dtypes allows one rounding of an intermediate of
/// magnitude up to ~8: the CPU path rounds the base output `x W^T` to the dtype before
/// adding the LoRA term, which may then cancel most of it (the GPU kernels round once).
pub fn lora_tolerance(dtype: DType) -> Tolerance {
    match dtype {
        DType::F32 => Tolerance::new(1e-5, 1e-4, 1e-4),
        DType::F16 => Tolerance::new(5e-3, 6e-3, 8e-3),
        _ => Tolerance::new(5e-3, 4e-2, 1.6e-2),
    }
}

#[derive(Clone, Copy, Debug)]
struct Shape {
    rows: usize,
    n_in: usize,
    n_out: usize,
    rank: usize,
    bias: bool,
}

/// The CPU base layer, the module and the input of one case (CPU tensors).
fn problem(s: Shape, dtype: DType, seed: u64) -> Result<(DenseLinear, LoraModule, Tensor)> {
    let w = Tensor::from_f32(&inputs(seed, s.n_out * s.n_in, -0.5, 0.5, dtype), dtype, [s.n_out, s.n_in])?;
    let mut base = DenseLinear::new(w)?;
    if s.bias {
        base = base.with_bias(Tensor::from_f32(&inputs(seed + 1, s.n_out, -1.0, 1.0, dtype), dtype, [s.n_out])?)?;
    }
    let a = Tensor::from_slice(&inputs(seed + 2, s.rank * s.n_in, -0.5, 0.5, DType::F32), [s.rank, s.n_in])?;
    let b = Tensor::from_slice(&inputs(seed + 3, s.n_out * s.rank, -0.5, 0.5, DType::F32), [s.n_out, s.rank])?;
    let module = LoraModule::new("model.layers.0.self_attn.q_proj", ModuleKind::Linear, &a, &b, None, 2.0, false)?;
    let x = Tensor::from_f32(&inputs(seed + 4, s.rows * s.n_in, -1.0, 1.0, dtype), dtype, [s.rows, s.n_in])?;
    Ok((base, module, x))
}

/// Runs the forward on `device`: `kernel` None goes through `lora_forward` (any device);
/// Some forces a GPU stage-2 variant (the CPU runs `lora_forward` for those cases too).
fn run(device: &Device, s: Shape, dtype: DType, seed: u64, kernel: Option<LoraKernel>) -> Result<CaseOutput> {
    let (base, module, x) = problem(s, dtype, seed)?;
    let want = lora_forward_reference(&base, &module, &x)?.to_f32_vec()?;
    let x_dev = x.to_device(device)?;
    let got = match (kernel, device) {
        (Some(kernel), Device::Cuda(_) | Device::Wgpu(_)) => {
            let w = base.weight().to_device(device)?;
            let bias = match linattn_adapters::BaseLinear::bias(&base) {
                Some(b) => Some(b.to_device(device)?),
                None => None,
            };
            let weights = GpuLoraWeights::upload(&module, device)?;
            gpu::lora_forward_dense_with(kernel, &w, bias.as_ref(), &weights, &x_dev)?
        }
        _ => {
            let dev_base = match linattn_adapters::BaseLinear::bias(&base) {
                Some(b) => DenseLinear::new(base.weight().to_device(device)?)?.with_bias(b.to_device(device)?)?,
                None => DenseLinear::new(base.weight().to_device(device)?)?,
            };
            lora_forward(&dev_base, &module, &x_dev)?
        }
    };
    if !got.device().same_device(device) {
        return Err(linattn_tensor::Error::invalid(format!("lora_forward returned a tensor on {}", got.device())));
    }
    Ok(CaseOutput { got: got.to_f32_vec()?, want })
}

fn label(s: Shape) -> String {
    format!("x[{},{}] W[{},{}] r{}{}", s.rows, s.n_in, s.n_out, s.n_in, s.rank, if s.bias { " +b" } else { "" })
}

/// Every LoRA forward case.
pub fn cases() -> Vec<Case> {
    let shapes = [
        Shape { rows: 1, n_in: 257, n_out: 100, rank: 8, bias: false },
        Shape { rows: 1, n_in: 1, n_out: 33, rank: 1, bias: true },
        Shape { rows: 7, n_in: 100, n_out: 33, rank: 16, bias: true },
        Shape { rows: 9, n_in: 33, n_out: 257, rank: 64, bias: false },
        Shape { rows: 64, n_in: 257, n_out: 65, rank: 16, bias: true },
        Shape { rows: 130, n_in: 100, n_out: 129, rank: 64, bias: false },
        Shape { rows: 130, n_in: 33, n_out: 1, rank: 8, bias: true },
    ];
    let mut out = Vec::new();
    for dtype in DTYPES {
        for (i, &s) in shapes.iter().enumerate() {
            let seed = 100 + i as u64 * 10;
            out.push(Case::new("lora_forward", dtype, label(s), lora_tolerance(dtype), move |dev| {
                run(dev, s, dtype, seed, None)
            }));
        }
        for (op, kernel, s) in [
            ("lora_fwd_matvec", LoraKernel::Matvec, Shape { rows: 33, n_in: 100, n_out: 65, rank: 8, bias: true }),
            ("lora_fwd_tiled", LoraKernel::Tiled, Shape { rows: 1, n_in: 257, n_out: 33, rank: 16, bias: true }),
            ("lora_fwd_tiled", LoraKernel::Tiled, Shape { rows: 65, n_in: 64, n_out: 64, rank: 64, bias: false }),
        ] {
            out.push(Case::new(op, dtype, label(s), lora_tolerance(dtype), move |dev| {
                run(dev, s, dtype, 500, Some(kernel))
            }));
        }
    }
    out
}
