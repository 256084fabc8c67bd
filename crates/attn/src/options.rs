//! Options, states and outputs shared by the linear-attention ops.
//!
//! States are f32 tensors on the device of the inputs: `kv` is `[N, H, K', V]` and the
//! normalizer `z` (only with `normalize`) is `[N, H, K']`, where N is the number of
//! sequences (B, or `cu_seqlens.len() - 1`) and K' the key dimension the recurrence
//! sees (K, or 2F when a Hedgehog feature map is applied to the keys).

use linattn_tensor::{DType, Device, Error, Result, Tensor};

/// Chunk length of the fast kernels when none is given.
pub const DEFAULT_CHUNK_SIZE: usize = 64;
/// Chunk lengths the fast kernels accept.
pub const CHUNK_SIZES: [usize; 3] = [16, 32, 64];
/// Added to the normalizer of normalized linear attention (flash-linear-attention's value).
pub const DEFAULT_NORMALIZER_EPS: f32 = 1e-10;

/// Recurrent state of linear attention: `kv = sum_t decay * k_t v_t^T` and, for
/// normalized attention, `z = sum_t decay * k_t`.
#[derive(Clone, Debug)]
pub struct LinearState {
    /// `[N, H, K', V]`, f32.
    pub kv: Tensor,
    /// `[N, H, K']`, f32; present exactly when the op normalizes.
    pub z: Option<Tensor>,
}

impl LinearState {
    /// An all-zero state on `device` (with `z` when `normalize`).
    pub fn zeros(
        sequences: usize,
        heads: usize,
        key_dim: usize,
        value_dim: usize,
        normalize: bool,
        device: &Device,
    ) -> Result<LinearState> {
        let kv = Tensor::zeros([sequences, heads, key_dim, value_dim], DType::F32, device)?;
        let z = if normalize { Some(Tensor::zeros([sequences, heads, key_dim], DType::F32, device)?) } else { None };
        Ok(LinearState { kv, z })
    }
}

/// Options of `linear_attn`, `simple_gla` and `gla` (prefill and decode step).
#[derive(Clone, Copy, Debug)]
pub struct AttnOptions<'a> {
    /// Multiplies q (after its feature map). Default `K'^-0.5`.
    pub scale: Option<f32>,
    /// Chunk length of the fast kernels: 16, 32 or 64. (The AVX-512 CPU kernel for
    /// scalar decay always works in blocks of 16; results differ only by rounding.)
    pub chunk_size: usize,
    /// Variable-length batch (B = 1): sequence n spans tokens `cu[n]..cu[n+1]`.
    /// Not allowed in decode steps.
    pub cu_seqlens: Option<&'a [usize]>,
    /// State to start from (`None`: zeros). Decode steps take the state as an argument
    /// instead and reject this field.
    pub initial_state: Option<&'a LinearState>,
    /// Divide each output by `scale * q_t . z_t + eps` (z = decayed sum of keys).
    pub normalize: bool,
    /// The `eps` of `normalize`.
    pub eps: f32,
    /// Hedgehog weights `[H, K, F]` applied to q before the recurrence.
    pub q_feature_map: Option<&'a Tensor>,
    /// Hedgehog weights `[H, K, F]` applied to k before the recurrence.
    pub k_feature_map: Option<&'a Tensor>,
}

impl Default for AttnOptions<'_> {
    fn default() -> Self {
        AttnOptions {
            scale: None,
            chunk_size: DEFAULT_CHUNK_SIZE,
            cu_seqlens: None,
            initial_state: None,
            normalize: false,
            eps: DEFAULT_NORMALIZER_EPS,
            q_feature_map: None,
            k_feature_map: None,
        }
    }
}

/// Output of a prefill or decode step.
#[derive(Clone, Debug)]
pub struct AttnOutput {
    /// `[B, T, H, V]` (prefill) or `[N, H, V]` (decode step), in the dtype of q.
    pub output: Tensor,
    /// The state after the last token of each sequence.
    pub final_state: LinearState,
}

/// Fails unless `chunk` is one of [`CHUNK_SIZES`].
pub fn check_chunk_size(op: &str, chunk: usize) -> Result<()> {
    if CHUNK_SIZES.contains(&chunk) {
        Ok(())
    } else {
        Err(Error::invalid(format!("{op}: chunk size {chunk} is not supported; use one of {CHUNK_SIZES:?}")))
    }
}
