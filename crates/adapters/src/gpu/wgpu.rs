//! WebGPU launches of the fused LoRA forward (`kernels/wgsl/adapters/`).
//!
//! Stage 1 `lora_xa.wgsl::lora_xa`: bindings x, a, xa (f32 scratch), params
//! `{rows, n_in, rank, rank_blocks, total, scaling, 0, 0}`; `ceil(rows/4) * ceil(r/4)`
//! workgroups. Stage 2 `lora_fused.wgsl::lora_fused_{matvec,tiled}`: bindings x, w, bias
//! (a 1-word dummy without bias), b, xa, y, params `{rows, n_in, n_out, rank, col_blocks,
//! total, has_bias, 0}`; `ceil(rows/4) * ceil(out/4)` (matvec) or `ceil(rows/64) *
//! ceil(out/64)` (tiled) workgroups. The params layouts match the WGSL `Params` structs
//! field by field (u32 / f32, 32 bytes). Both launches go on the device queue in order.

use linattn_tensor::wgpu::ops::dtype_code;
use linattn_tensor::wgpu::{Binding, Launch, WgpuDevice, WgslModule, Workgroups, tensor_buffer};
use linattn_tensor::{DType, Result, Tensor};

use super::{Problem, check_sizes, checked_u32};

/// `kernels/wgsl/adapters/lora_xa.wgsl` (stage 1).
pub static LORA_XA_WGSL: WgslModule = WgslModule {
    name: "adapters/lora_xa.wgsl",
    source: include_str!("../../../../kernels/wgsl/adapters/lora_xa.wgsl"),
};

/// `kernels/wgsl/adapters/lora_fused.wgsl` (stage 2).
pub static LORA_FUSED_WGSL: WgslModule = WgslModule {
    name: "adapters/lora_fused.wgsl",
    source: include_str!("../../../../kernels/wgsl/adapters/lora_fused.wgsl"),
};

/// Rows x columns of one stage-1 / matvec workgroup block, and the tiled kernel's tile.
const SKINNY_BLOCK: usize = 4;
const TILE: usize = 64;

fn params_bytes(words: [u32; 8]) -> Vec<u8> {
    words.iter().flat_map(|w| w.to_le_bytes()).collect()
}

pub(super) fn run(
    device: &WgpuDevice,
    p: &Problem,
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    a: &Tensor,
    b: &Tensor,
) -> Result<Tensor> {
    check_sizes(p)?;
    let dtype = x.dtype();
    let y = device.zeros_tensor([p.rows, p.n_out], dtype)?;
    if p.rows == 0 || p.n_out == 0 {
        return Ok(y);
    }
    let dtype_constant = [("DTYPE", dtype_code("lora_forward", dtype)?)];
    let xa = device.zeros_tensor([p.rows, p.rank], DType::F32)?;

    let rank_blocks = p.rank.div_ceil(SKINNY_BLOCK);
    let xa_total = checked_u32("stage-1 workgroups", p.rows.div_ceil(SKINNY_BLOCK) * rank_blocks)?;
    let xa_params = params_bytes([
        checked_u32("rows", p.rows)?,
        checked_u32("in", p.n_in)?,
        checked_u32("r", p.rank)?,
        checked_u32("rank blocks", rank_blocks)?,
        xa_total,
        p.scaling.to_bits(),
        0,
        0,
    ]);
    device.launch(&Launch {
        module: &LORA_XA_WGSL,
        entry: "lora_xa",
        constants: &dtype_constant,
        bindings: &[
            Binding::read(tensor_buffer(x, "lora_forward x")?),
            Binding::read(tensor_buffer(a, "lora_forward A")?),
            Binding::read_write(tensor_buffer(&xa, "lora_forward xa")?),
        ],
        params: &xa_params,
        workgroups: Workgroups::Linear(u64::from(xa_total)),
    })?;

    let (entry, block) = if p.tiled { ("lora_fused_tiled", TILE) } else { ("lora_fused_matvec", SKINNY_BLOCK) };
    let col_blocks = p.n_out.div_ceil(block);
    let total = checked_u32("stage-2 workgroups", p.rows.div_ceil(block) * col_blocks)?;
    let fused_params = params_bytes([
        checked_u32("rows", p.rows)?,
        checked_u32("in", p.n_in)?,
        checked_u32("out", p.n_out)?,
        checked_u32("r", p.rank)?,
        checked_u32("column blocks", col_blocks)?,
        total,
        u32::from(bias.is_some()),
        0,
    ]);
    let dummy_bias;
    let bias_buffer = match bias {
        Some(t) => tensor_buffer(t, "lora_forward bias")?,
        None => {
            dummy_bias = device.zeros_tensor([1], DType::F32)?;
            tensor_buffer(&dummy_bias, "lora_forward bias placeholder")?
        }
    };
    device.launch(&Launch {
        module: &LORA_FUSED_WGSL,
        entry,
        constants: &dtype_constant,
        bindings: &[
            Binding::read(tensor_buffer(x, "lora_forward x")?),
            Binding::read(tensor_buffer(weight, "lora_forward weight")?),
            Binding::read(bias_buffer),
            Binding::read(tensor_buffer(b, "lora_forward B")?),
            Binding::read_write(tensor_buffer(&xa, "lora_forward xa")?),
            Binding::read_write(tensor_buffer(&y, "lora_forward y")?),
        ],
        params: &fused_params,
        workgroups: Workgroups::Linear(u64::from(total)),
    })?;
    Ok(y)
}
