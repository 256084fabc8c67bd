//! GPU tests of every CUDA kernel variant against the naive references in
//! `crate::ops::reference` (f64 accumulation). Without a GPU they print why they skip;
//! with `LINATTN_REQUIRE_GPU=1` a missing GPU fails them instead.
//!
//! Shapes are not multiples of the tiles, rows cross the warp/block switch, batches are
//! shared and batched; tolerances are relative to the largest reference magnitude:
//! 1e-5 for f32, 4e-3 for f16, 2e-2 for bf16 (one final rounding plus f32 sums).

use super::CudaDevice;
use super::ops::{MatmulKernel, RowKernel, matmul_with, rms_norm_with, softmax_with};
use crate::device::Device;
use crate::dtype::DType;
use crate::ops::{BinaryOp, MatmulDims, reference};
use crate::tensor::Tensor;

fn gpu() -> Option<CudaDevice> {
    match CudaDevice::open(0) {
        Ok(device) => Some(device),
        Err(e) => {
            assert!(!crate::cuda_required(), "LINATTN_REQUIRE_CUDA or LINATTN_REQUIRE_GPU is set: {e}");
            crate::report_skip(&format!("CUDA kernel test: {e}"));
            None
        }
    }
}

fn values(n: usize, seed: u64, lo: f32, hi: f32) -> Vec<f32> {
    crate::testing::uniform(n, seed, lo, hi)
}

fn tolerance(dtype: DType) -> f32 {
    match dtype {
        DType::F32 => 1e-5,
        DType::F16 => 4e-3,
        _ => 2e-2,
    }
}

/// Uploads `data` rounded to `dtype`, and returns the rounded values the kernel sees.
fn upload(device: &CudaDevice, data: &[f32], dtype: DType, dims: &[usize]) -> (Tensor, Vec<f32>) {
    let host = Tensor::from_f32(data, dtype, dims.to_vec()).unwrap();
    let seen = host.to_f32_vec().unwrap();
    (host.to_device(&Device::Cuda(device.clone())).unwrap(), seen)
}

fn assert_close(what: &str, got: &Tensor, want: &[f32], dtype: DType) {
    let got = got.to_f32_vec().unwrap();
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
    let (index, err) = got
        .iter()
        .zip(want)
        .map(|(g, w)| (g - w).abs())
        .enumerate()
        .fold((0, 0f32), |best, (i, e)| if e > best.1 || e.is_nan() { (i, e) } else { best });
    assert!(
        err / scale <= tolerance(dtype),
        "{what} {dtype}: max abs err {err} (rel {}) at {index}: got {} want {}",
        err / scale,
        got[index],
        want[index]
    );
}

#[test]
fn elementwise_kernels_match_reference() {
    let Some(device) = gpu() else { return };
    for dtype in [DType::F32, DType::F16, DType::BF16] {
        let n = 70_001;
        let (a, av) = upload(&device, &values(n, 1, -2.0, 2.0), dtype, &[n]);
        let (b, bv) = upload(&device, &values(n, 2, -2.0, 2.0), dtype, &[n]);
        for op in [BinaryOp::Add, BinaryOp::Mul] {
            assert_close(op.name(), &super::ops::binary(op, &a, &b).unwrap(), &reference::binary(op, &av, &bv), dtype);
        }
        assert_close("scale", &super::ops::scale(&a, -0.3).unwrap(), &reference::scale(&av, -0.3), dtype);
    }
}

#[test]
fn matmul_kernels_match_reference() {
    let Some(device) = gpu() else { return };
    let cases = [
        (1, 1, 1, 1, false, false),
        (1, 5, 4099, 300, false, true),
        (3, 8, 33, 7, true, false),
        (2, 70, 37, 130, true, false),
        (3, 129, 65, 257, false, true),
        (2, 300, 9, 200, true, true),
    ];
    for dtype in [DType::F32, DType::F16, DType::BF16] {
        for &(batch, m, k, n, rhs_batched, rhs_transposed) in &cases {
            let dims = MatmulDims { batch, m, k, n, rhs_batched, rhs_transposed };
            let b_dims = match (rhs_batched, rhs_transposed) {
                (true, false) => vec![batch, k, n],
                (true, true) => vec![batch, n, k],
                (false, false) => vec![k, n],
                (false, true) => vec![n, k],
            };
            let (a, av) = upload(&device, &values(batch * m * k, 3, -1.0, 1.0), dtype, &[batch, m, k]);
            let (b, bv) = upload(&device, &values(b_dims.iter().product(), 4, -1.0, 1.0), dtype, &b_dims);
            let want = reference::matmul(&av, &bv, &dims);
            let matvec_applies = m <= crate::cuda::ops::MATVEC_MAX_M;
            let kernels = [MatmulKernel::Naive, MatmulKernel::Tiled, MatmulKernel::Tiled128, MatmulKernel::Matvec];
            for kernel in kernels.into_iter().filter(|k| matvec_applies || *k != MatmulKernel::Matvec) {
                let got = matmul_with(kernel, &a, &b, &dims).unwrap();
                assert_close(&format!("{kernel:?} {dims:?}"), &got, &want, dtype);
            }
        }
    }
}

#[test]
fn row_kernels_match_reference() {
    let Some(device) = gpu() else { return };
    for dtype in [DType::F32, DType::F16, DType::BF16] {
        for cols in [1usize, 45, 1024, 1025, 4099] {
            let rows = 37;
            let (x, xv) = upload(&device, &values(rows * cols, 5, -6.0, 6.0), dtype, &[rows, cols]);
            let (w, wv) = upload(&device, &values(cols, 6, 0.5, 1.5), dtype, &[cols]);
            let soft = reference::softmax_last(&xv, cols);
            let norm = reference::rms_norm(&xv, &wv, 1e-6);
            for kind in [RowKernel::Auto, RowKernel::Warp, RowKernel::Block] {
                assert_close(&format!("softmax {kind:?} cols {cols}"), &softmax_with(kind, &x).unwrap(), &soft, dtype);
                let got = rms_norm_with(kind, &x, &w, 1e-6).unwrap();
                assert_close(&format!("rms_norm {kind:?} cols {cols}"), &got, &norm, dtype);
            }
        }
    }
}

#[test]
fn handles_are_thread_safe() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<CudaDevice>();
    assert_send_sync::<super::CudaBuffer>();
    assert_send_sync::<super::CudaKernel>();
}
