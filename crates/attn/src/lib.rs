//! linattn-attn: linear-attention ops with a naive CPU reference beside each fast kernel.
//!
//! Ops (layout `[B, T, H, K]` for q/k, `[B, T, H, V]` for v, f32 state `[N, H, K', V]`):
//! - [`linear_attn`] (optionally normalized), [`simple_gla`] (scalar decay per token or a
//!   constant per head: RetNet / Lightning-2), [`gla`] (per-key-dim decay); each with a
//!   `*_reference` oracle and a batched decode step (`*_step`).
//! - [`hedgehog_feature_map`]: LoLCATs Hedgehog map, also fusable into every op above
//!   through [`AttnOptions::q_feature_map`] / [`AttnOptions::k_feature_map`].
//! - [`window_linear`]: the LoLCATs sliding-window + linear hybrid, with
//!   [`window_linear_step`] for decoding.
//! - [`run_named`](fn@run_named): any op on named tensors, for the CLI.
//!
//! Every public op validates its inputs once and returns `Err` naming the problem; then
//! it dispatches on the device (CPU fast path; CUDA / WebGPU not implemented yet).
//! The math, chunked derivations and tolerances are in `docs/kernels.md`.

pub mod backward;
pub mod compare;
pub mod feature_map;
pub mod gated;
pub mod gpu;
pub mod layout;
pub mod options;
pub mod run_named;
pub(crate) mod vecops;
pub mod window;

pub use compare::{Comparison, check_close, compare, relative_rms_error};
pub use feature_map::{FeatureMap, hedgehog_feature_map, hedgehog_feature_map_reference, hedgehog_identity_init};
pub use gated::decode::{
    gla_step, gla_step_in_place, linear_attn_step, linear_attn_step_in_place, simple_gla_step, simple_gla_step_in_place,
};
pub use gated::{gla, gla_reference, linear_attn, linear_attn_reference, simple_gla, simple_gla_reference};
pub use options::{AttnOptions, AttnOutput, CHUNK_SIZES, DEFAULT_CHUNK_SIZE, LinearState};
pub use run_named::run_named;
pub use window::{
    DEFAULT_WINDOW, WindowOptions, WindowOutput, WindowState, window_linear, window_linear_reference,
    window_linear_step,
};
