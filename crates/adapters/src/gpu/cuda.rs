//! CUDA launches of the fused LoRA forward (`kernels/cuda/adapters/lora_fwd.cu`, PTX in
//! `kernels/ptx/adapters/lora_fwd.ptx`).
//!
//! Stage 1 `lora_xa_block_<dt>(const T* x, const float* a, float* xa, u32 rows, u32 n_in,
//! u32 rank, float scaling)`; stage 2 `lora_fused_{matvec,tiled}_<dt>(const T* x,
//! const T* w, const T* bias, const float* b, const float* xa, T* y, u32 rows, u32 n_in,
//! u32 n_out, u32 rank, u32 has_bias)`. Blocks of 128 threads (stage 1, matvec) or 256
//! (tiled); the kernels stride over their blocks, so grids are clamped with
//! `grid_capped`. Buffer sizes are checked against the problem before every launch.
//!
//! Per-row update ([`run_mixed`], `kernels/cuda/adapters/lora_apply.cu`):
//! `lora_mixed_xa_<dt>` (128 threads, `rows * ceil(max_rank/4)` blocks) then
//! `lora_mixed_apply_<dt>` (256 threads, one per output element, grid-stride).

use linattn_tensor::cuda::{CudaBuffer, CudaDevice, PtxModule, dtype_suffix, grid_capped};
use linattn_tensor::{DType, Error, Result, Tensor};

use super::mixed::{GpuPack, MixedProblem, check_mixed_sizes};
use super::{Problem, check_sizes, checked_u32};

/// `kernels/ptx/adapters/lora_apply.ptx` (per-row LoRA / DoRA update).
pub static LORA_APPLY_PTX: PtxModule =
    PtxModule { name: "adapters/lora_apply", ptx: include_str!("../../../../kernels/ptx/adapters/lora_apply.ptx") };

const APPLY_THREADS: u32 = 256;

/// `kernels/ptx/adapters/lora_fwd.ptx`.
pub static LORA_FWD_PTX: PtxModule =
    PtxModule { name: "adapters/lora_fwd", ptx: include_str!("../../../../kernels/ptx/adapters/lora_fwd.ptx") };

const SKINNY_THREADS: u32 = 128;
const TILE_THREADS: u32 = 256;
const SKINNY_BLOCK: u64 = 4;
const TILE: u64 = 64;

/// Every entry point `run` can launch (for the PTX-contents test).
pub fn cuda_launched_entries() -> Vec<String> {
    ["f32", "f16", "bf16"]
        .iter()
        .flat_map(|dt| ["lora_xa_block", "lora_fused_matvec", "lora_fused_tiled"].map(|op| format!("{op}_{dt}")))
        .collect()
}

/// Every entry point `run_mixed` can launch (for the PTX-contents test).
pub fn cuda_apply_entries() -> Vec<String> {
    ["f32", "f16", "bf16"]
        .iter()
        .flat_map(|dt| ["lora_mixed_xa", "lora_mixed_apply"].map(|op| format!("{op}_{dt}")))
        .collect()
}

fn expect_bytes(what: &str, buffer: &CudaBuffer, want: usize) -> Result<()> {
    if buffer.len_bytes() != want {
        return Err(Error::invalid(format!(
            "lora_forward (cuda): {what} buffer holds {} bytes, expected {want}",
            buffer.len_bytes()
        )));
    }
    Ok(())
}

pub(super) fn run(
    device: &CudaDevice,
    p: &Problem,
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    a: &Tensor,
    b: &Tensor,
) -> Result<Tensor> {
    check_sizes(p)?;
    let dtype = x.dtype();
    let suffix = dtype_suffix("lora_forward", dtype)?;
    let elem = dtype.block_bytes();
    let (x_buf, w_buf, a_buf, b_buf) =
        (CudaBuffer::of(x)?, CudaBuffer::of(weight)?, CudaBuffer::of(a)?, CudaBuffer::of(b)?);
    expect_bytes("x", x_buf, p.rows * p.n_in * elem)?;
    expect_bytes("weight", w_buf, p.n_out * p.n_in * elem)?;
    expect_bytes("A", a_buf, p.rank * p.n_in * 4)?;
    expect_bytes("B", b_buf, p.n_out * p.rank * 4)?;
    if a.dtype() != DType::F32 || b.dtype() != DType::F32 {
        return Err(Error::invalid("lora_forward (cuda): A and B must be f32"));
    }
    let bias_buf = match bias {
        Some(t) => {
            let buf = CudaBuffer::of(t)?;
            expect_bytes("bias", buf, p.n_out * elem)?;
            buf
        }
        // Never read (has_bias = 0); any valid pointer of the right type will do.
        None => w_buf,
    };
    let mut y = device.alloc_zeroed(p.rows * p.n_out * elem)?;
    if p.rows == 0 || p.n_out == 0 {
        return y.into_tensor([p.rows, p.n_out], dtype);
    }
    let mut xa = device.alloc_zeroed(p.rows * p.rank * 4)?;
    let (rows, n_in, n_out, rank) = (
        checked_u32("rows", p.rows)?,
        checked_u32("in", p.n_in)?,
        checked_u32("out", p.n_out)?,
        checked_u32("r", p.rank)?,
    );

    let xa_blocks = (p.rows as u64).div_ceil(SKINNY_BLOCK) * (p.rank as u64).div_ceil(SKINNY_BLOCK);
    let kernel = device.kernel(&LORA_FWD_PTX, &format!("lora_xa_block_{suffix}"))?;
    let mut launch = kernel.launch_builder();
    launch
        .arg(x_buf.as_slice())
        .arg(a_buf.as_slice())
        .arg(xa.as_slice_mut())
        .arg(&rows)
        .arg(&n_in)
        .arg(&rank)
        .arg(&p.scaling);
    // SAFETY: matches `lora_xa_block_<T>(const T* x, const float* a, float* xa, u32 rows,
    // u32 n_in, u32 rank, float scaling)`; x holds rows*n_in T, a rank*n_in f32 and xa
    // rows*rank f32 (checked above); the kernel bounds-checks every index.
    unsafe { launch.launch(grid_capped((xa_blocks, 1, 1), (SKINNY_THREADS, 1, 1), 0)?) }?;

    let (op, block, threads) = if p.tiled {
        ("lora_fused_tiled", TILE, TILE_THREADS)
    } else {
        ("lora_fused_matvec", SKINNY_BLOCK, SKINNY_THREADS)
    };
    let blocks = (p.rows as u64).div_ceil(block) * (p.n_out as u64).div_ceil(block);
    let has_bias = u32::from(bias.is_some());
    let kernel = device.kernel(&LORA_FWD_PTX, &format!("{op}_{suffix}"))?;
    let mut launch = kernel.launch_builder();
    launch
        .arg(x_buf.as_slice())
        .arg(w_buf.as_slice())
        .arg(bias_buf.as_slice())
        .arg(b_buf.as_slice())
        .arg(xa.as_slice())
        .arg(y.as_slice_mut())
        .arg(&rows)
        .arg(&n_in)
        .arg(&n_out)
        .arg(&rank)
        .arg(&has_bias);
    // SAFETY: matches `lora_fused_{matvec,tiled}_<T>(const T* x, const T* w, const T* bias,
    // const float* b, const float* xa, T* y, u32 rows, u32 n_in, u32 n_out, u32 rank,
    // u32 has_bias)`; sizes were checked above (bias is only read when has_bias = 1, and
    // then holds n_out T); y holds rows*n_out T.
    unsafe { launch.launch(grid_capped((blocks, 1, 1), (threads, 1, 1), 0)?) }?;
    y.into_tensor([p.rows, p.n_out], dtype)
}

/// The per-row update over the base output `yb [rows, n_out]` (x's dtype).
pub(super) fn run_mixed(
    device: &CudaDevice,
    pack: &GpuPack,
    p: &MixedProblem,
    x: &Tensor,
    yb: &Tensor,
    bias: Option<&Tensor>,
    row_adapter: &Tensor,
) -> Result<Tensor> {
    check_mixed_sizes(pack, p.rows)?;
    let dtype = x.dtype();
    let suffix = dtype_suffix("lora_forward", dtype)?;
    let elem = dtype.block_bytes();
    let (x_buf, yb_buf, row_buf) = (CudaBuffer::of(x)?, CudaBuffer::of(yb)?, CudaBuffer::of(row_adapter)?);
    let (a_buf, bt_buf, c_buf, slot_buf) =
        (CudaBuffer::of(&pack.a)?, CudaBuffer::of(&pack.b_t)?, CudaBuffer::of(&pack.c)?, CudaBuffer::of(&pack.slots)?);
    expect_bytes("x", x_buf, p.rows * pack.n_in * elem)?;
    expect_bytes("base output", yb_buf, p.rows * pack.n_out * elem)?;
    expect_bytes("row adapters", row_buf, p.rows * 4)?;
    expect_bytes("slots", slot_buf, pack.n_slots * super::mixed::SLOT_WORDS * 4)?;
    let bias_buf = match bias {
        Some(t) => {
            let buf = CudaBuffer::of(t)?;
            expect_bytes("bias", buf, pack.n_out * 4)?;
            buf
        }
        // Never read (has_bias = 0); any valid f32 pointer will do.
        None => c_buf,
    };
    let mut y = device.alloc_zeroed(p.rows * pack.n_out * elem)?;
    if p.rows == 0 || pack.n_out == 0 {
        return y.into_tensor([p.rows, pack.n_out], dtype);
    }
    let max_rank = pack.max_rank.max(1);
    let mut xa = device.alloc_zeroed(p.rows * max_rank * 4)?;
    let (rows, n_in, n_out, max_r, n_slots) = (
        checked_u32("rows", p.rows)?,
        checked_u32("in", pack.n_in)?,
        checked_u32("out", pack.n_out)?,
        checked_u32("max r", max_rank)?,
        checked_u32("slots", pack.n_slots)?,
    );
    let (a_len, bt_len, c_len) =
        ((a_buf.len_bytes() / 4) as u64, (bt_buf.len_bytes() / 4) as u64, (c_buf.len_bytes() / 4) as u64);
    let xa_blocks = (p.rows as u64) * (max_rank as u64).div_ceil(SKINNY_BLOCK);
    let kernel = device.kernel(&LORA_APPLY_PTX, &format!("lora_mixed_xa_{suffix}"))?;
    let mut launch = kernel.launch_builder();
    launch
        .arg(x_buf.as_slice())
        .arg(a_buf.as_slice())
        .arg(slot_buf.as_slice())
        .arg(row_buf.as_slice())
        .arg(xa.as_slice_mut())
        .arg(&rows)
        .arg(&n_in)
        .arg(&max_r)
        .arg(&n_slots)
        .arg(&a_len);
    // SAFETY: matches `lora_mixed_xa_<T>(const T* x, const float* a, const unsigned* slots,
    // const int* row_adapter, float* xa, u32 rows, u32 n_in, u32 max_rank, u32 n_slots,
    // u64 a_len)`; x holds rows*n_in T, slots n_slots*8 u32, row_adapter rows i32 (checked
    // above), xa rows*max_rank f32; the kernel bounds-checks slot indices, ranks and A
    // offsets against n_slots, max_rank and a_len.
    unsafe { launch.launch(grid_capped((xa_blocks, 1, 1), (SKINNY_THREADS, 1, 1), 0)?) }?;

    let has_bias = u32::from(bias.is_some());
    let bias_in_base = u32::from(p.bias_in_base);
    let blocks = ((p.rows * pack.n_out) as u64).div_ceil(u64::from(APPLY_THREADS));
    let kernel = device.kernel(&LORA_APPLY_PTX, &format!("lora_mixed_apply_{suffix}"))?;
    let mut launch = kernel.launch_builder();
    launch
        .arg(yb_buf.as_slice())
        .arg(bias_buf.as_slice())
        .arg(bt_buf.as_slice())
        .arg(c_buf.as_slice())
        .arg(slot_buf.as_slice())
        .arg(row_buf.as_slice())
        .arg(xa.as_slice())
        .arg(y.as_slice_mut())
        .arg(&rows)
        .arg(&n_out)
        .arg(&max_r)
        .arg(&n_slots)
        .arg(&has_bias)
        .arg(&bias_in_base)
        .arg(&bt_len)
        .arg(&c_len);
    // SAFETY: matches `lora_mixed_apply_<T>(const T* yb, const float* bias, const float*
    // b_t, const float* c, const unsigned* slots, const int* row_adapter, const float* xa,
    // T* y, u32 rows, u32 n_out, u32 max_rank, u32 n_slots, u32 has_bias, u32 bias_in_base,
    // u64 bt_len, u64 c_len)`; yb and y hold rows*n_out T, bias n_out f32 when has_bias
    // (checked above), xa rows*max_rank f32; B^T and c reads are checked against bt_len
    // and c_len in the kernel.
    unsafe { launch.launch(grid_capped((blocks, 1, 1), (APPLY_THREADS, 1, 1), 0)?) }?;
    y.into_tensor([p.rows, pack.n_out], dtype)
}
