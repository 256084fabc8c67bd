//! The WGSL sources of this crate, embedded with `include_str!` from `kernels/wgsl/`.
//!
//! `COMMON_MODULES` are the files a kernel may `//#import` (one level, by name);
//! `TENSOR_MODULES` are the tensor-op kernels. Other crates declare their own
//! `WgslModule` statics the same way and may import any common module.

use super::WgslModule;

/// Element encodings (f32 / f16 / bf16 in `u32` words, `DTYPE` override) and the
/// linear-workgroup helper.
pub static COMMON_ELEMENTS: WgslModule =
    WgslModule { name: "common/elements.wgsl", source: include_str!("../../../../kernels/wgsl/common/elements.wgsl") };

/// Every module that `//#import` can name.
pub static COMMON_MODULES: &[&WgslModule] = &[&COMMON_ELEMENTS];

/// `add`, `mul`.
pub static TENSOR_BINARY: WgslModule =
    WgslModule { name: "tensor/binary.wgsl", source: include_str!("../../../../kernels/wgsl/tensor/binary.wgsl") };

/// `scale`.
pub static TENSOR_SCALE: WgslModule =
    WgslModule { name: "tensor/scale.wgsl", source: include_str!("../../../../kernels/wgsl/tensor/scale.wgsl") };

/// `matmul_tiled`.
pub static TENSOR_MATMUL: WgslModule =
    WgslModule { name: "tensor/matmul.wgsl", source: include_str!("../../../../kernels/wgsl/tensor/matmul.wgsl") };

/// `matvec_split_k` (products with m <= 8).
pub static TENSOR_MATVEC: WgslModule =
    WgslModule { name: "tensor/matvec.wgsl", source: include_str!("../../../../kernels/wgsl/tensor/matvec.wgsl") };

/// `softmax_rows`.
pub static TENSOR_SOFTMAX: WgslModule =
    WgslModule { name: "tensor/softmax.wgsl", source: include_str!("../../../../kernels/wgsl/tensor/softmax.wgsl") };

/// `rms_norm_rows`.
pub static TENSOR_RMS_NORM: WgslModule =
    WgslModule { name: "tensor/rms_norm.wgsl", source: include_str!("../../../../kernels/wgsl/tensor/rms_norm.wgsl") };

/// `first_non_finite`, `non_finite_value`.
pub static TENSOR_NON_FINITE: WgslModule = WgslModule {
    name: "tensor/non_finite.wgsl",
    source: include_str!("../../../../kernels/wgsl/tensor/non_finite.wgsl"),
};

/// Every tensor-op module.
pub static TENSOR_MODULES: &[&WgslModule] = &[
    &TENSOR_BINARY,
    &TENSOR_SCALE,
    &TENSOR_MATMUL,
    &TENSOR_MATVEC,
    &TENSOR_SOFTMAX,
    &TENSOR_RMS_NORM,
    &TENSOR_NON_FINITE,
];
