//! CUDA launches of the quantized products (`kernels/cuda/quant/ggml_matmul.cu`, PTX
//! embedded from `kernels/ptx/quant/ggml_matmul.ptx`).
//!
//! - [`ggml_matmul`]: `ggml_matmul_<q8_0|q4_0>_<T>`, one 128-thread block per (weight row,
//!   tile of 4 rows of x), grid-stride over `rows * ceil(m / 4)` items; m = 1 is the
//!   decode matvec. The kernel mirrors `kernels/wgsl/quant/ggml_matmul.wgsl` (tested on
//!   lavapipe); it has not been run on a GPU from this crate's tests yet.
//!
//! Arguments are pushed in the exact order and C types of the `.cu` header; buffer sizes
//! are checked here before every launch.

use linattn_tensor::cuda::{CudaBuffer, CudaDevice, PtxModule, dtype_suffix, grid_capped};
use linattn_tensor::{Device, Error, Result, Tensor};

use super::GgmlSizes;
use crate::ggml::GgmlFormat;

/// `kernels/ptx/quant/ggml_matmul.ptx`.
pub static QUANT_GGML_MATMUL: PtxModule =
    PtxModule { name: "quant/ggml_matmul", ptx: include_str!("../../../../kernels/ptx/quant/ggml_matmul.ptx") };

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
        GgmlFormat::Q4K | GgmlFormat::Q6K => None,
    }
}

/// Every (module, entry) this file launches.
pub fn launched_entries() -> Vec<(&'static PtxModule, String)> {
    [GgmlFormat::Q8_0, GgmlFormat::Q4_0]
        .into_iter()
        .flat_map(|f| ["f32", "f16", "bf16"].into_iter().filter_map(move |d| entry_point(f, d)))
        .map(|e| (&QUANT_GGML_MATMUL, e))
        .collect()
}

fn device_of(op: &str, t: &Tensor) -> Result<CudaDevice> {
    match t.device() {
        Device::Cuda(d) => Ok(d),
        other => Err(Error::invalid(format!("{op}: expected tensors on CUDA, got one on {other}"))),
    }
}

fn buffer<'t>(what: &str, t: &'t Tensor, device: &CudaDevice) -> Result<&'t CudaBuffer> {
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

/// `y [.., rows] = x [.., cols] W^T` with `w` a Q8_0 / Q4_0 tensor `[rows, cols]` already
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_launched_entry_is_in_the_ptx() {
        let entries = launched_entries();
        assert_eq!(entries.len(), 6);
        for (module, entry) in entries {
            assert!(module.has_entry(&entry), "{} lacks .entry {entry}; found {:?}", module.name, module.entry_names());
        }
        assert!(QUANT_GGML_MATMUL.ptx.contains(".target sm_80"));
        assert!(entry_point(GgmlFormat::Q4K, "f32").is_none());
    }
}
