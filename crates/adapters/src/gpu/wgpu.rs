//! WebGPU launches of the fused LoRA forward (`kernels/wgsl/adapters/`).
//!
//! Stage 1 `lora_xa.wgsl::lora_xa`: bindings x, a, xa (f32 scratch), params
//! `{rows, n_in, rank, rank_blocks, total, scaling, 0, 0}`; `ceil(rows/4) * ceil(r/4)`
//! workgroups. Stage 2 `lora_fused.wgsl::lora_fused_{matvec,tiled}`: bindings x, w, bias
//! (a 1-word dummy without bias), b, xa, y, params `{rows, n_in, n_out, rank, col_blocks,
//! total, has_bias, 0}`; `ceil(rows/4) * ceil(out/4)` (matvec) or `ceil(rows/64) *
//! ceil(out/64)` (tiled) workgroups. The params layouts match the WGSL `Params` structs
//! field by field (u32 / f32, 32 bytes). Both launches go on the device queue in order.
//!
//! Per-row update ([`run_mixed`]): `lora_mixed_xa.wgsl::lora_mixed_xa` (bindings x, a,
//! slots, row_adapter, xa; params `{rows, n_in, max_rank, rank_blocks, total, n_slots, 0,
//! 0}`; `rows * ceil(max_rank/4)` workgroups), then `lora_apply.wgsl::lora_apply`
//! (bindings yb, bias (f32; dummy without bias), b_t, c, slots, row_adapter, xa, y; params
//! `{rows, n_out, max_rank, n_slots, has_bias, bias_in_base, 0, 0}`;
//! `ceil(rows*out/256)` workgroups).

use linattn_tensor::wgpu::ops::dtype_code;
use linattn_tensor::wgpu::{Binding, Launch, WgpuDevice, WgslModule, Workgroups, tensor_buffer};
use linattn_tensor::{DType, Result, Tensor};

use super::mixed::{GpuPack, MixedProblem, check_mixed_sizes};
use super::{Problem, check_sizes, checked_u32};

/// `kernels/wgsl/adapters/lora_mixed_xa.wgsl` (per-row update, stage 1).
pub static LORA_MIXED_XA_WGSL: WgslModule = WgslModule {
    name: "adapters/lora_mixed_xa.wgsl",
    source: include_str!("../../../../kernels/wgsl/adapters/lora_mixed_xa.wgsl"),
};

/// `kernels/wgsl/adapters/lora_apply.wgsl` (per-row update, stage 2).
pub static LORA_APPLY_WGSL: WgslModule = WgslModule {
    name: "adapters/lora_apply.wgsl",
    source: include_str!("../../../../kernels/wgsl/adapters/lora_apply.wgsl"),
};

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

/// The per-row update over the base output `yb [rows, n_out]` (x's dtype).
pub(super) fn run_mixed(
    device: &WgpuDevice,
    pack: &GpuPack,
    p: &MixedProblem,
    x: &Tensor,
    yb: &Tensor,
    bias: Option<&Tensor>,
    row_adapter: &Tensor,
) -> Result<Tensor> {
    check_mixed_sizes(pack, p.rows)?;
    let dtype = x.dtype();
    let y = device.zeros_tensor([p.rows, pack.n_out], dtype)?;
    if p.rows == 0 || pack.n_out == 0 {
        return Ok(y);
    }
    let dtype_constant = [("DTYPE", dtype_code("lora_forward", dtype)?)];
    let max_rank = pack.max_rank.max(1);
    let xa = device.zeros_tensor([p.rows, max_rank], DType::F32)?;
    let rank_blocks = max_rank.div_ceil(SKINNY_BLOCK);
    let xa_total = checked_u32("stage-1 workgroups", p.rows * rank_blocks)?;
    let xa_params = params_bytes([
        checked_u32("rows", p.rows)?,
        checked_u32("in", pack.n_in)?,
        checked_u32("max r", max_rank)?,
        checked_u32("rank blocks", rank_blocks)?,
        xa_total,
        checked_u32("slots", pack.n_slots)?,
        0,
        0,
    ]);
    device.launch(&Launch {
        module: &LORA_MIXED_XA_WGSL,
        entry: "lora_mixed_xa",
        constants: &dtype_constant,
        bindings: &[
            Binding::read(tensor_buffer(x, "lora x")?),
            Binding::read(tensor_buffer(&pack.a, "lora A")?),
            Binding::read(tensor_buffer(&pack.slots, "lora slots")?),
            Binding::read(tensor_buffer(row_adapter, "lora row adapters")?),
            Binding::read_write(tensor_buffer(&xa, "lora xa")?),
        ],
        params: &xa_params,
        workgroups: Workgroups::Linear(u64::from(xa_total)),
    })?;
    let apply_params = params_bytes([
        checked_u32("rows", p.rows)?,
        checked_u32("out", pack.n_out)?,
        checked_u32("max r", max_rank)?,
        checked_u32("slots", pack.n_slots)?,
        u32::from(bias.is_some()),
        u32::from(p.bias_in_base),
        0,
        0,
    ]);
    let dummy_bias;
    let bias_buffer = match bias {
        Some(t) => tensor_buffer(t, "lora bias")?,
        None => {
            dummy_bias = device.zeros_tensor([1], DType::F32)?;
            tensor_buffer(&dummy_bias, "lora bias placeholder")?
        }
    };
    let elements = checked_u32("rows * out", p.rows * pack.n_out)?;
    device.launch(&Launch {
        module: &LORA_APPLY_WGSL,
        entry: "lora_apply",
        constants: &dtype_constant,
        bindings: &[
            Binding::read(tensor_buffer(yb, "lora base output")?),
            Binding::read(bias_buffer),
            Binding::read(tensor_buffer(&pack.b_t, "lora B^T")?),
            Binding::read(tensor_buffer(&pack.c, "lora DoRA factors")?),
            Binding::read(tensor_buffer(&pack.slots, "lora slots")?),
            Binding::read(tensor_buffer(row_adapter, "lora row adapters")?),
            Binding::read_write(tensor_buffer(&xa, "lora xa")?),
            Binding::read_write(tensor_buffer(&y, "lora y")?),
        ],
        params: &apply_params,
        workgroups: Workgroups::Linear(u64::from(elements.div_ceil(256))),
    })?;
    Ok(y)
}
