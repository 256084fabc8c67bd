//! CUDA launches of the quantized products (`kernels/cuda/quant/*.cu`, PTX embedded from
//! `kernels/ptx/quant/*.ptx`).
//!
//! - [`ggml_matmul`]: `ggml_matmul_<q8_0|q4_0|q4_k|q6_k>_<T>`, one 128-thread block per
//!   (weight row, tile of 4 rows of x), grid-stride over `rows * ceil(m / 4)` items; m = 1
//!   is the decode matvec. The kernel mirrors `kernels/wgsl/quant/ggml_matmul.wgsl`
//!   (tested on lavapipe).
//! - `codebook_matmul`: `codebook_matmul_<u4|u8>_<T>` for NF4 / FP4 and FP8, the same
//!   work split; mirrors `kernels/wgsl/quant/codebook_matmul.wgsl`.
//! - LLM.int8: `int8_mixed.cu`, launched by [`super::int8_cuda`] (its entries are part of
//!   [`launched_entries`]).
//!
//! None has been run on a GPU from this crate's tests yet (no CUDA device where they
//! were written); `tests/gpu_cuda.rs` runs the shared cases when one is present.
//!
//! Arguments are pushed in the exact order and C types of the `.cu` header; buffer sizes
//! are checked here before every launch.

use linattn_tensor::cuda::{CudaBuffer, CudaDevice, PtxModule, dtype_suffix, grid_capped};
use linattn_tensor::{Device, Error, Result, Tensor};

use super::wgpu::check_codebook;
use super::{CodebookWeight, GgmlSizes};
use crate::ggml::GgmlFormat;

/// `kernels/ptx/quant/ggml_matmul.ptx`.
pub static QUANT_GGML_MATMUL: PtxModule =
    PtxModule { name: "quant/ggml_matmul", ptx: include_str!("../../../../kernels/ptx/quant/ggml_matmul.ptx") };

/// `kernels/ptx/quant/codebook_matmul.ptx`.
pub static QUANT_CODEBOOK_MATMUL: PtxModule =
    PtxModule { name: "quant/codebook_matmul", ptx: include_str!("../../../../kernels/ptx/quant/codebook_matmul.ptx") };

/// Threads per block (`__launch_bounds__(128)` in the kernel).
const BLOCK: u32 = 128;
/// Rows of x per work item (`GGML_TILE_M`).
const TILE_M: usize = 4;
/// Cap on the grid; the kernel strides over the remaining work items.
const MAX_BLOCKS: u64 = 1 << 20;

/// The entry point for a format and x dtype suffix, if the format has CUDA kernels.
pub fn entry_point(format: GgmlFormat, suffix: &str) -> Option<String> {
    match format {
        GgmlFormat::Q8_0 => Some(format!("ggml_matmul_q8_0_{suffix}")),
        GgmlFormat::Q4_0 => Some(format!("ggml_matmul_q4_0_{suffix}")),
        GgmlFormat::Q4K => Some(format!("ggml_matmul_q4_k_{suffix}")),
        GgmlFormat::Q6K => Some(format!("ggml_matmul_q6_k_{suffix}")),
    }
}

/// Every (module, entry) this file launches.
pub fn launched_entries() -> Vec<(&'static PtxModule, String)> {
    let dtypes = ["f32", "f16", "bf16"];
    let ggml = [GgmlFormat::Q8_0, GgmlFormat::Q4_0, GgmlFormat::Q4K, GgmlFormat::Q6K]
        .into_iter()
        .flat_map(move |f| dtypes.into_iter().filter_map(move |d| entry_point(f, d)))
        .map(|e| (&QUANT_GGML_MATMUL, e));
    let codebook = ["u4", "u8"]
        .into_iter()
        .flat_map(move |c| dtypes.into_iter().map(move |d| format!("codebook_matmul_{c}_{d}")))
        .map(|e| (&QUANT_CODEBOOK_MATMUL, e));
    ggml.chain(codebook).chain(super::int8_cuda::launched_entries()).collect()
}

pub(super) fn device_of(op: &str, t: &Tensor) -> Result<CudaDevice> {
    match t.device() {
        Device::Cuda(d) => Ok(d),
        other => Err(Error::invalid(format!("{op}: expected tensors on CUDA, got one on {other}"))),
    }
}

pub(super) fn buffer<'t>(what: &str, t: &'t Tensor, device: &CudaDevice) -> Result<&'t CudaBuffer> {
    let b = CudaBuffer::of(t).map_err(|e| Error::invalid(format!("{what}: {e}")))?;
    if !b.device().same_device(device) || b.len_bytes() != t.size_in_bytes() {
        return Err(Error::invalid(format!(
            "{what}: buffer of {} bytes on another device or not the tensor's {} bytes",
            b.len_bytes(),
            t.size_in_bytes()
        )));
    }
    Ok(b)
}

/// `y [.., rows] = x [.., cols] W^T` with `w` a ggml tensor `[rows, cols]` already
/// on the same CUDA device as `x`; same contract as [`super::wgpu::ggml_matmul`].
pub fn ggml_matmul(w: &Tensor, x: &Tensor) -> Result<Tensor> {
    const OP: &str = "cuda ggml_matmul";
    let (sizes, out_dims) = GgmlSizes::check(OP, w, x)?;
    let device = device_of(OP, x)?;
    let wb = buffer("weight", w, &device)?;
    let xb = buffer("x", x, &device)?;
    let out_bytes = x.dtype().storage_bytes(sizes.m * sizes.rows)?;
    let mut out = device.alloc_zeroed(out_bytes)?;
    if sizes.m > 0 && sizes.rows > 0 && sizes.cols > 0 {
        let suffix = dtype_suffix(OP, x.dtype())?;
        let entry = entry_point(sizes.format, suffix).expect("GgmlSizes::check admits only GPU formats");
        let cols = u32::try_from(sizes.cols)
            .map_err(|_| Error::invalid(format!("{OP}: cols = {} exceeds u32", sizes.cols)))?;
        let items = (sizes.rows as u64) * (sizes.m.div_ceil(TILE_M) as u64);
        let config = grid_capped((items.min(MAX_BLOCKS), 1, 1), (BLOCK, 1, 1), 0)?;
        let (rows, m, row_bytes) = (sizes.rows as u64, sizes.m as u64, sizes.row_bytes as u64);
        let kernel = device.kernel(&QUANT_GGML_MATMUL, &entry)?;
        let mut launch = kernel.launch_builder();
        launch.arg(wb.as_slice()).arg(xb.as_slice()).arg(out.as_slice_mut());
        launch.arg(&rows).arg(&cols).arg(&m).arg(&row_bytes);
        // SAFETY: the arguments match ggml_matmul_<fmt>_<T>(const unsigned char* w,
        // const T* x, T* y, u64 rows, u32 cols, u64 m, u64 row_bytes) in order and type
        // (checked against the PTX params by `arg`); w holds rows * row_bytes bytes, x
        // m * cols elements and y m * rows elements (checked above), which bound every
        // index the kernel forms.
        unsafe { launch.launch(config)? };
    }
    out.into_tensor(out_dims, x.dtype())
}

/// `y [.., rows] = x [.., cols] W^T` for a codebook weight (NF4 / FP4 / FP8)
/// of logical `shape` whose buffers are on the same CUDA device as `x`; same contract as
/// [`super::wgpu::codebook_matmul`].
pub(crate) fn codebook_matmul(w: &CodebookWeight, shape: &linattn_tensor::Shape, x: &Tensor) -> Result<Tensor> {
    const OP: &str = "cuda codebook_matmul";
    let (rows, cols, m, out_dims) = check_codebook(OP, w, shape, x)?;
    let device = device_of(OP, x)?;
    let codes = buffer("codes", &w.codes, &device)?;
    let table = buffer("code table", &w.table, &device)?;
    let scales = buffer("scales", &w.scales, &device)?;
    let xb = buffer("x", x, &device)?;
    let out_bytes = x.dtype().storage_bytes(m * rows)?;
    let mut out = device.alloc_zeroed(out_bytes)?;
    if m > 0 && rows > 0 && cols > 0 {
        let suffix = dtype_suffix(OP, x.dtype())?;
        let l = &w.layout;
        let entry = format!("codebook_matmul_{}_{suffix}", if l.nibbles { "u4" } else { "u8" });
        let cols32 = u32::try_from(cols).map_err(|_| Error::invalid(format!("{OP}: cols = {cols} exceeds u32")))?;
        let items = (rows as u64) * (m.div_ceil(TILE_M) as u64);
        let config = grid_capped((items.min(MAX_BLOCKS), 1, 1), (BLOCK, 1, 1), 0)?;
        let (rows, m) = (rows as u64, m as u64);
        let (flat_block, block_rows, block_cols, scale_cols) =
            (l.flat_block as u64, l.block_rows as u64, l.block_cols as u64, l.scale_cols as u64);
        let kernel = device.kernel(&QUANT_CODEBOOK_MATMUL, &entry)?;
        let mut launch = kernel.launch_builder();
        launch.arg(codes.as_slice()).arg(table.as_slice()).arg(scales.as_slice());
        launch.arg(xb.as_slice()).arg(out.as_slice_mut());
        launch.arg(&rows).arg(&cols32).arg(&m);
        launch.arg(&flat_block).arg(&block_rows).arg(&block_cols).arg(&scale_cols);
        // SAFETY: the arguments match codebook_matmul_<u4|u8>_<T>(const unsigned char*
        // codes, const float* table, const float* scales, const T* x, T* y, u64 rows,
        // u32 cols, u64 m, u64 flat_block, u64 block_rows, u64 block_cols, u64 scale_cols)
        // in order and type; `check_codebook` verified that codes, table and
        // scales hold every byte the layout indexes for [rows, cols] (table: 16 / 256
        // entries), x m * cols elements and y m * rows elements, and that the block
        // dimensions are non-zero, which bounds every index the kernel forms.
        unsafe { launch.launch(config)? };
    }
    out.into_tensor(out_dims, x.dtype())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_launched_entry_is_in_the_ptx() {
        let entries = launched_entries();
        assert_eq!(entries.len(), 27);
        for (module, entry) in entries {
            assert!(module.has_entry(&entry), "{} lacks .entry {entry}; found {:?}", module.name, module.entry_names());
        }
        assert!(QUANT_GGML_MATMUL.ptx.contains(".target sm_80"));
        assert!(QUANT_CODEBOOK_MATMUL.ptx.contains(".target sm_80"));
        assert!(super::super::int8_cuda::QUANT_INT8_MIXED.ptx.contains(".target sm_80"));
    }
}
