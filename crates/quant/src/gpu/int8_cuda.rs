//! CUDA launch of the LLM.int8 mixed-precision product (`kernels/cuda/quant/int8_mixed.cu`,
//! PTX embedded from `kernels/ptx/quant/int8_mixed.ptx`).
//!
//! `int8_mixed_matmul` queues three kernels on the device's stream:
//! `int8_row_stats_<T>` (128-thread blocks, grid-stride over the rows of x: outlier column
//! bits and `(s_x, k)`), `int8_quantize_x_<T>` (256-thread blocks, grid-stride over the u32
//! words of the int8 codes of x) and `int8_mixed_matmul_<T>` (one 128-thread block per
//! (weight row, tile of 4 rows of x), grid-stride; m = 1 is the decode matvec). It mirrors
//! [`super::int8_wgpu`] (tested on lavapipe); this path has been compiled, checked by ptxas
//! and run by the host emulation (`cargo xtask kernels --emulate`), not yet on a GPU.
//!
//! Arguments are pushed in the exact order and C types of the `.cu` header; buffer sizes
//! are checked by `Int8Sizes::check` and the scratch buffers are allocated here.

use linattn_tensor::cuda::{PtxModule, dtype_suffix, grid_capped};
use linattn_tensor::{Error, Result, Shape, Tensor};

use super::cuda::{buffer, device_of};
use super::int8::{Int8DeviceWeight, Int8Sizes};

/// `kernels/ptx/quant/int8_mixed.ptx`.
pub static QUANT_INT8_MIXED: PtxModule =
    PtxModule { name: "quant/int8_mixed", ptx: include_str!("../../../../kernels/ptx/quant/int8_mixed.ptx") };

/// Threads per block of the statistics and matmul kernels (`__launch_bounds__(128)`).
const BLOCK: u32 = 128;
/// Threads per block of the quantize kernel (`__launch_bounds__(256)`).
const QUANTIZE_BLOCK: u32 = 256;
/// Rows of x per matmul work item (`I8M_TILE_M`).
const TILE_M: usize = 4;
/// Cap on every grid; the kernels stride over the remaining work.
const MAX_BLOCKS: u64 = 1 << 20;

/// The three kernels, in launch order.
const KERNELS: [&str; 3] = ["int8_row_stats", "int8_quantize_x", "int8_mixed_matmul"];

/// Every (module, entry) this file launches.
pub fn launched_entries() -> Vec<(&'static PtxModule, String)> {
    KERNELS
        .into_iter()
        .flat_map(|k| ["f32", "f16", "bf16"].into_iter().map(move |d| (&QUANT_INT8_MIXED, format!("{k}_{d}"))))
        .collect()
}

/// `y [.., rows] = x [.., cols] W^T` for an LLM.int8 weight of logical `shape` whose
/// buffers are on the same CUDA device as `x`; same contract as
/// [`super::int8_wgpu::int8_mixed_matmul`].
pub(crate) fn int8_mixed_matmul(w: &Int8DeviceWeight, shape: &Shape, x: &Tensor) -> Result<Tensor> {
    const OP: &str = "cuda int8_mixed_matmul";
    let sizes = Int8Sizes::check(OP, w, shape, x)?;
    let device = device_of(OP, x)?;
    let codes = buffer("codes", &w.codes, &device)?;
    let scb = buffer("SCB", &w.scb, &device)?;
    let xb = buffer("x", x, &device)?;
    let mut out = device.alloc_zeroed(x.dtype().storage_bytes(sizes.m * sizes.rows)?)?;
    if !sizes.is_empty() {
        let Int8Sizes { rows, cols, m, words, flag_words, .. } = sizes;
        let u32_of = |what: &str, n: usize| {
            u32::try_from(n).map_err(|_| Error::invalid(format!("{OP}: {what} = {n} exceeds u32")))
        };
        let (cols32, words32) = (u32_of("cols", cols)?, u32_of("words", words)?);
        let mut stats = device.alloc_zeroed(8 * m)?;
        let mut flags = device.alloc_zeroed(4 * flag_words)?;
        let mut x_codes = device.alloc_zeroed(4 * m * words)?;
        let suffix = dtype_suffix(OP, x.dtype())?;
        let (rows64, m64) = (rows as u64, m as u64);
        let split = u32::from(w.split());

        let stats_config = grid_capped((m64.min(MAX_BLOCKS), 1, 1), (BLOCK, 1, 1), 0)?;
        let kernel = device.kernel(&QUANT_INT8_MIXED, &format!("int8_row_stats_{suffix}"))?;
        let mut launch = kernel.launch_builder();
        launch.arg(xb.as_slice()).arg(stats.as_slice_mut()).arg(flags.as_slice_mut());
        launch.arg(&m64).arg(&cols32).arg(&w.threshold).arg(&split);
        // SAFETY: the arguments match int8_row_stats_<T>(const T* x, float* stats,
        // unsigned int* flags, u64 m, u32 cols, float threshold, u32 split) in order and
        // type; x holds m * cols elements (Int8Sizes::check), stats 2 * m floats and
        // flags ceil(cols / 32) words (allocated above), which bound every index.
        unsafe { launch.launch(stats_config)? };

        let quantize_blocks = ((m * words) as u64).div_ceil(u64::from(QUANTIZE_BLOCK)).min(MAX_BLOCKS);
        let quantize_config = grid_capped((quantize_blocks, 1, 1), (QUANTIZE_BLOCK, 1, 1), 0)?;
        let kernel = device.kernel(&QUANT_INT8_MIXED, &format!("int8_quantize_x_{suffix}"))?;
        let mut launch = kernel.launch_builder();
        launch.arg(xb.as_slice()).arg(stats.as_slice()).arg(flags.as_slice()).arg(x_codes.as_slice_mut());
        launch.arg(&m64).arg(&cols32).arg(&words32);
        // SAFETY: the arguments match int8_quantize_x_<T>(const T* x, const float* stats,
        // const unsigned int* flags, unsigned int* xq, u64 m, u32 cols, u32 words) in
        // order and type; x holds m * cols elements, stats 2 * m floats, flags
        // ceil(cols / 32) words and xq m * words words, with words = ceil(cols / 4).
        unsafe { launch.launch(quantize_config)? };

        let items = rows64 * (m.div_ceil(TILE_M) as u64);
        let matmul_config = grid_capped((items.min(MAX_BLOCKS), 1, 1), (BLOCK, 1, 1), 0)?;
        let kernel = device.kernel(&QUANT_INT8_MIXED, &format!("int8_mixed_matmul_{suffix}"))?;
        let mut launch = kernel.launch_builder();
        launch.arg(codes.as_slice()).arg(scb.as_slice()).arg(x_codes.as_slice()).arg(stats.as_slice());
        launch.arg(flags.as_slice()).arg(xb.as_slice()).arg(out.as_slice_mut());
        launch.arg(&rows64).arg(&cols32).arg(&m64).arg(&words32);
        // SAFETY: the arguments match int8_mixed_matmul_<T>(const unsigned int* codes,
        // const float* scb, const unsigned int* xq, const float* stats, const unsigned
        // int* flags, const T* x, T* y, u64 rows, u32 cols, u64 m, u32 words) in order
        // and type; Int8Sizes::check verified that codes hold rows * words words and SCB
        // rows floats, x m * cols elements; y holds m * rows elements and the scratch
        // buffers the sizes above, which bound every index the kernel forms.
        unsafe { launch.launch(matmul_config)? };
    }
    out.into_tensor(sizes.out_dims, x.dtype())
}
