//! CUDA launches of the tensor ops. Shapes, dtypes and devices were validated by
//! `crate::ops`; this file checks buffer sizes again (a wrong size would be an
//! out-of-bounds GPU access), picks the kernel variant and pushes the arguments in the
//! exact order and C types of the entry points in `kernels/cuda/tensor/*.cu`.
//!
//! Inputs and outputs are contiguous and in the input dtype (f32, f16, bf16); kernels
//! accumulate in f32. Empty outputs return without a launch; matmul with k = 0 returns
//! zeros. Geometry: elementwise 256-thread grid-stride blocks (at most 32 per SM);
//! matmul_tiled (64x64 tiles) and matmul_tiled128 (128x128) with 256 threads, grid
//! (m tiles, n tiles, batch) clamped (the kernel strides over the rest); matvec_splitk
//! (m <= 8) with 256 threads, grid (column groups of 8 transposed / 64 not, batch)
//! clamped; row ops use a warp per row up to 1024 columns and a 256-thread block per row
//! above.

use cudarc::driver::LaunchConfig;

use super::CudaDevice;
use super::buffer::CudaBuffer;
use super::kernels::{ELEMENTWISE, MATMUL, MATVEC, RMS_NORM, SOFTMAX};
use super::launch::{grid_1d, grid_capped};
use super::registry::dtype_suffix;
use crate::error::{Error, Result};
use crate::ops::{BinaryOp, MatmulDims};
use crate::tensor::Tensor;

const ELEMENTWISE_BLOCK: u32 = 256;
const ROW_WARP_BLOCK: u32 = 128;
const ROW_BLOCK: u32 = 256;
/// Rows longer than this use the block-per-row kernels by default.
pub const WARP_ROW_MAX_COLS: usize = 1024;
const MATMUL_TILE: u64 = 64;
const MATMUL_NAIVE_TILE: u64 = 16;
/// Products with at most this many rows per batch entry use [`MatmulKernel::Matvec`].
pub const MATVEC_MAX_M: usize = 8;
/// Output columns per `matvec_splitk` block: rhs transposed (a warp per column), not.
const MATVEC_COLS_TRANSPOSED: u64 = 8;
const MATVEC_COLS: u64 = 64;

/// Which matmul kernel to run (the naive one is the GPU-side cross-check).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatmulKernel {
    /// v1: one thread per output element.
    Naive,
    /// v2: 64x64 shared-memory tiles, 4x4 register blocking.
    Tiled,
    /// v3: 128x128 tiles, 8x8 register blocking (for large outputs).
    Tiled128,
    /// Split-k matvec for m <= [`MATVEC_MAX_M`] (decode, small batches); an `Err` for
    /// larger m.
    Matvec,
}

impl MatmulKernel {
    /// Matvec when m <= [`MATVEC_MAX_M`]; else v3 when its 128x128 tiles still give every
    /// multiprocessor at least one block, v2 otherwise.
    pub fn choose(device: &CudaDevice, dims: &MatmulDims) -> MatmulKernel {
        if dims.m <= MATVEC_MAX_M {
            return MatmulKernel::Matvec;
        }
        let big_tiles = (dims.m as u64).div_ceil(128) * (dims.n as u64).div_ceil(128) * dims.batch as u64;
        if big_tiles >= u64::from(device.multiprocessor_count()) { MatmulKernel::Tiled128 } else { MatmulKernel::Tiled }
    }
}

/// Which row kernel (softmax, RMSNorm) to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RowKernel {
    /// Warp per row when the row has at most 1024 columns, block per row otherwise.
    Auto,
    /// One warp per row (any length; slow for long rows).
    Warp,
    /// One 256-thread block per row.
    Block,
}

fn device_of(t: &Tensor) -> Result<(CudaDevice, &CudaBuffer)> {
    let buffer = CudaBuffer::of(t)?;
    Ok((buffer.device().clone(), buffer))
}

fn expect_bytes(what: &str, buffer: &CudaBuffer, want: usize) -> Result<()> {
    if buffer.len_bytes() != want {
        return Err(Error::invalid(format!("{what}: CUDA buffer holds {} bytes, expected {want}", buffer.len_bytes())));
    }
    Ok(())
}

fn to_u32(what: &str, value: usize) -> Result<u32> {
    u32::try_from(value)
        .ok()
        .filter(|&v| v <= i32::MAX as u32)
        .ok_or_else(|| Error::invalid(format!("{what} = {value} exceeds the CUDA kernels' limit of {}", i32::MAX)))
}

fn elementwise_grid(device: &CudaDevice, n: usize) -> Result<LaunchConfig> {
    grid_1d(n as u64, ELEMENTWISE_BLOCK, u64::from(device.multiprocessor_count()) * 32)
}

/// `a (+|*) b` on equal shapes.
pub fn binary(op: BinaryOp, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let (device, a_buf) = device_of(a)?;
    let b_buf = CudaBuffer::of(b)?;
    let bytes = a.size_in_bytes();
    expect_bytes(op.name(), a_buf, bytes)?;
    expect_bytes(op.name(), b_buf, bytes)?;
    let mut out = device.alloc_zeroed(bytes)?;
    let n = a.numel();
    if n > 0 {
        let entry = format!("{}_contig_{}", op.name(), dtype_suffix(op.name(), a.dtype())?);
        let kernel = device.kernel(&ELEMENTWISE, &entry)?;
        let n_u64 = n as u64;
        let mut launch = kernel.launch_builder();
        launch.arg(a_buf.as_slice()).arg(b_buf.as_slice()).arg(out.as_slice_mut()).arg(&n_u64);
        // SAFETY: matches `(const T* a, const T* b, T* out, u64 n)`; all three buffers
        // hold exactly n elements of the dtype the entry point was chosen for.
        unsafe { launch.launch(elementwise_grid(&device, n)?) }?;
    }
    out.into_tensor(a.shape().clone(), a.dtype())
}

/// `s * a`.
pub fn scale(a: &Tensor, s: f32) -> Result<Tensor> {
    let (device, a_buf) = device_of(a)?;
    let bytes = a.size_in_bytes();
    expect_bytes("scale", a_buf, bytes)?;
    let mut out = device.alloc_zeroed(bytes)?;
    let n = a.numel();
    if n > 0 {
        let entry = format!("scale_contig_{}", dtype_suffix("scale", a.dtype())?);
        let kernel = device.kernel(&ELEMENTWISE, &entry)?;
        let n_u64 = n as u64;
        let mut launch = kernel.launch_builder();
        launch.arg(a_buf.as_slice()).arg(out.as_slice_mut()).arg(&s).arg(&n_u64);
        // SAFETY: matches `(const T* a, T* out, float s, u64 n)`; both buffers hold n
        // elements.
        unsafe { launch.launch(elementwise_grid(&device, n)?) }?;
    }
    out.into_tensor(a.shape().clone(), a.dtype())
}

/// Matrix product with the tiled kernel suited to the size ([`MatmulKernel::choose`]).
pub fn matmul(a: &Tensor, b: &Tensor, dims: &MatmulDims) -> Result<Tensor> {
    let device = CudaBuffer::of(a)?.device().clone();
    matmul_with(MatmulKernel::choose(&device, dims), a, b, dims)
}

/// Matrix product with a chosen kernel; returns `[batch * m, n]` flattened as
/// `[batch, m, n]` (the caller reshapes).
pub fn matmul_with(kernel_kind: MatmulKernel, a: &Tensor, b: &Tensor, dims: &MatmulDims) -> Result<Tensor> {
    let (device, a_buf) = device_of(a)?;
    let b_buf = CudaBuffer::of(b)?;
    let dtype = a.dtype();
    let suffix = dtype_suffix("matmul", dtype)?;
    let elem = dtype.block_bytes();
    let b_copies = if dims.rhs_batched { dims.batch } else { 1 };
    let overflow = || Error::invalid(format!("matmul {dims:?}: sizes overflow usize"));
    let a_elems = dims.batch.checked_mul(dims.m).and_then(|v| v.checked_mul(dims.k)).ok_or_else(overflow)?;
    let b_elems = b_copies.checked_mul(dims.k).and_then(|v| v.checked_mul(dims.n)).ok_or_else(overflow)?;
    let c_elems = dims.batch.checked_mul(dims.m).and_then(|v| v.checked_mul(dims.n)).ok_or_else(overflow)?;
    expect_bytes("matmul lhs", a_buf, a_elems * elem)?;
    expect_bytes("matmul rhs", b_buf, b_elems * elem)?;
    let mut out = device.alloc_zeroed(c_elems.checked_mul(elem).ok_or_else(overflow)?)?;
    if c_elems > 0 && dims.k > 0 {
        let (m, n, k, batch) =
            (to_u32("m", dims.m)?, to_u32("n", dims.n)?, to_u32("k", dims.k)?, to_u32("batch", dims.batch)?);
        let b_batch_stride: u64 = if dims.rhs_batched { (dims.k as u64) * (dims.n as u64) } else { 0 };
        let rhs_transposed = u32::from(dims.rhs_transposed);
        let (entry, config) = match kernel_kind {
            MatmulKernel::Tiled => (
                format!("matmul_tiled_{suffix}"),
                grid_capped(
                    ((dims.m as u64).div_ceil(MATMUL_TILE), (dims.n as u64).div_ceil(MATMUL_TILE), dims.batch as u64),
                    (256, 1, 1),
                    0,
                )?,
            ),
            MatmulKernel::Tiled128 => (
                format!("matmul_tiled128_{suffix}"),
                grid_capped(
                    (
                        (dims.m as u64).div_ceil(2 * MATMUL_TILE),
                        (dims.n as u64).div_ceil(2 * MATMUL_TILE),
                        dims.batch as u64,
                    ),
                    (256, 1, 1),
                    0,
                )?,
            ),
            MatmulKernel::Matvec => {
                if dims.m > MATVEC_MAX_M {
                    return Err(Error::invalid(format!(
                        "matmul {dims:?}: the matvec kernel takes m <= {MATVEC_MAX_M}, got m = {}",
                        dims.m
                    )));
                }
                let cols = if dims.rhs_transposed { MATVEC_COLS_TRANSPOSED } else { MATVEC_COLS };
                (
                    format!("matvec_splitk_{suffix}"),
                    grid_capped(((dims.n as u64).div_ceil(cols), dims.batch as u64, 1), (256, 1, 1), 0)?,
                )
            }
            MatmulKernel::Naive => (
                format!("matmul_naive_{suffix}"),
                grid_capped(
                    (
                        (dims.n as u64).div_ceil(MATMUL_NAIVE_TILE),
                        (dims.m as u64).div_ceil(MATMUL_NAIVE_TILE),
                        dims.batch as u64,
                    ),
                    (MATMUL_NAIVE_TILE as u32, MATMUL_NAIVE_TILE as u32, 1),
                    0,
                )?,
            ),
        };
        let module = if kernel_kind == MatmulKernel::Matvec { &MATVEC } else { &MATMUL };
        let kernel = device.kernel(module, &entry)?;
        let mut launch = kernel.launch_builder();
        launch
            .arg(a_buf.as_slice())
            .arg(b_buf.as_slice())
            .arg(out.as_slice_mut())
            .arg(&m)
            .arg(&n)
            .arg(&k)
            .arg(&batch)
            .arg(&b_batch_stride)
            .arg(&rhs_transposed);
        // SAFETY: matches `(const T* a, const T* b, T* c, u32 m, u32 n, u32 k, u32 batch,
        // u64 b_batch_stride, u32 rhs_transposed)` of every matmul_* and matvec_splitk_*
        // entry (matvec's m <= 8 was checked above); buffer sizes were checked above
        // against batch*m*k, (batch or 1)*k*n and batch*m*n elements.
        unsafe { launch.launch(config) }?;
    }
    out.into_tensor([dims.batch, dims.m, dims.n], dtype)
}

fn row_geometry(kind: RowKernel, rows: usize, cols: usize) -> Result<(&'static str, LaunchConfig)> {
    let use_warp = match kind {
        RowKernel::Auto => cols <= WARP_ROW_MAX_COLS,
        RowKernel::Warp => true,
        RowKernel::Block => false,
    };
    let rows = rows as u64;
    if use_warp {
        let rows_per_block = u64::from(ROW_WARP_BLOCK / 32);
        Ok(("warp", grid_capped((rows.div_ceil(rows_per_block), 1, 1), (ROW_WARP_BLOCK, 1, 1), 0)?))
    } else {
        Ok(("block", grid_capped((rows, 1, 1), (ROW_BLOCK, 1, 1), 0)?))
    }
}

/// Softmax over the last dimension.
pub fn softmax_last(a: &Tensor) -> Result<Tensor> {
    softmax_with(RowKernel::Auto, a)
}

/// Softmax over the last dimension with a chosen row kernel.
pub fn softmax_with(kind: RowKernel, a: &Tensor) -> Result<Tensor> {
    let (device, a_buf) = device_of(a)?;
    expect_bytes("softmax", a_buf, a.size_in_bytes())?;
    let mut out = device.alloc_zeroed(a.size_in_bytes())?;
    let cols = a.shape().last_dim();
    if a.numel() > 0 {
        let rows = a.numel() / cols;
        let (variant, config) = row_geometry(kind, rows, cols)?;
        let entry = format!("softmax_{variant}_{}", dtype_suffix("softmax", a.dtype())?);
        let kernel = device.kernel(&SOFTMAX, &entry)?;
        let (rows_u64, cols_u32) = (rows as u64, to_u32("softmax columns", cols)?);
        let mut launch = kernel.launch_builder();
        launch.arg(a_buf.as_slice()).arg(out.as_slice_mut()).arg(&rows_u64).arg(&cols_u32);
        // SAFETY: matches `(const T* x, T* out, u64 rows, u32 cols)`; both buffers hold
        // rows * cols elements.
        unsafe { launch.launch(config) }?;
    }
    out.into_tensor(a.shape().clone(), a.dtype())
}

/// RMSNorm over the last dimension.
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f32) -> Result<Tensor> {
    rms_norm_with(RowKernel::Auto, x, weight, eps)
}

/// RMSNorm over the last dimension with a chosen row kernel.
pub fn rms_norm_with(kind: RowKernel, x: &Tensor, weight: &Tensor, eps: f32) -> Result<Tensor> {
    let (device, x_buf) = device_of(x)?;
    let w_buf = CudaBuffer::of(weight)?;
    let cols = x.shape().last_dim();
    expect_bytes("rms_norm input", x_buf, x.size_in_bytes())?;
    expect_bytes("rms_norm weight", w_buf, cols * x.dtype().block_bytes())?;
    let mut out = device.alloc_zeroed(x.size_in_bytes())?;
    if x.numel() > 0 {
        let rows = x.numel() / cols;
        let (variant, config) = row_geometry(kind, rows, cols)?;
        let entry = format!("rms_norm_{variant}_{}", dtype_suffix("rms_norm", x.dtype())?);
        let kernel = device.kernel(&RMS_NORM, &entry)?;
        let (rows_u64, cols_u32) = (rows as u64, to_u32("rms_norm columns", cols)?);
        let mut launch = kernel.launch_builder();
        launch
            .arg(x_buf.as_slice())
            .arg(w_buf.as_slice())
            .arg(out.as_slice_mut())
            .arg(&rows_u64)
            .arg(&cols_u32)
            .arg(&eps);
        // SAFETY: matches `(const T* x, const T* w, T* out, u64 rows, u32 cols, float eps)`;
        // x and out hold rows * cols elements, w holds cols.
        unsafe { launch.launch(config) }?;
    }
    out.into_tensor(x.shape().clone(), x.dtype())
}
