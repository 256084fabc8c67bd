//! 15-bit codes for the integer NF4/FP4 decode path: the scheme of
//! [`super::lane_codes`] with `MAX = 16383` (`8 * 16383^2 < 2^31`, so a lane's i32 sum
//! never overflows).
//!
//! Added error per element `absmax * (|code| * dx/2 + |x| * dt/2 + dt*dx/4)` with
//! `dx = max|x_lane| / 16383`, `dt = max|code| / 16383`: relative to the operands about
//! 3e-5, below the bf16/fp16 rounding of the bitsandbytes GPU kernels, and far below the
//! 4-bit quantization error itself.
//!
//! The scalar dot ([`fourbit_row_dot_q16_scalar`]) defines the result; the SIMD kernels
//! (`x86_fourbit_q16`, `x86_512_fourbit_q16`) compute the same i32 lane sums exactly and
//! differ only in the order of the final f32 combination.

use super::lane_codes::{self, LaneActs, LaneTable};

/// Elements per activation scale.
pub(crate) const Q16_LANE: usize = lane_codes::LANE;

/// Activations quantized to 15-bit codes, one scale per 8 elements.
pub type Q16Acts = LaneActs<i16>;

/// The 16-entry code table as 15-bit codes with one scale.
pub type Q16Code = LaneTable<i16>;

/// Scalar dot of one bitsandbytes 4-bit row (whole blocks of `bs`, element `2j` in the
/// high nibble of byte `j`) with 15-bit activations covering the same columns.
pub fn fourbit_row_dot_q16_scalar(packed: &[u8], absmax: &[f32], code: &Q16Code, bs: usize, acts: &Q16Acts) -> f32 {
    lane_codes::fourbit_row_dot_scalar(packed, absmax, code, bs, acts)
}
