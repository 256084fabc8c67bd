//! Shapes and indexing shared by every attention op.
//!
//! Layout (sequence-first, as flash-linear-attention): q, k `[B, T, H, K]`, v and the
//! output `[B, T, H, V]`, per-token gates `[B, T, H]` (scalar) or `[B, T, H, K]`
//! (per key dim), recurrent state `[N, H, K, V]` in f32 with N the number of sequences.
//! Variable-length batches follow FlashAttention's `cu_seqlens`: B = 1, the T tokens are
//! N sequences packed back to back, sequence n spanning tokens
//! `cu_seqlens[n]..cu_seqlens[n+1]`; no computation crosses a sequence boundary.

use linattn_tensor::{Error, Result};

/// Largest key or value head dimension the kernels accept.
pub const MAX_HEAD_DIM: usize = 256;

/// Sizes of an attention call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttnDims {
    /// Batch size B (1 for varlen).
    pub batch: usize,
    /// Tokens per batch row T.
    pub seq_len: usize,
    /// Heads H.
    pub heads: usize,
    /// Key (and query) head dimension K.
    pub key_dim: usize,
    /// Value head dimension V.
    pub value_dim: usize,
}

impl AttnDims {
    /// Flat index of q/k element `[b, t, h, i]`.
    #[inline(always)]
    pub fn qk_index(&self, b: usize, t: usize, h: usize, i: usize) -> usize {
        ((b * self.seq_len + t) * self.heads + h) * self.key_dim + i
    }

    /// Flat index of v/o element `[b, t, h, j]`.
    #[inline(always)]
    pub fn v_index(&self, b: usize, t: usize, h: usize, j: usize) -> usize {
        ((b * self.seq_len + t) * self.heads + h) * self.value_dim + j
    }

    /// Flat index of a scalar gate `[b, t, h]`.
    #[inline(always)]
    pub fn gate_index(&self, b: usize, t: usize, h: usize) -> usize {
        (b * self.seq_len + t) * self.heads + h
    }

    /// Elements of one state `[H, K, V]`.
    pub fn state_len(&self) -> usize {
        self.heads * self.key_dim * self.value_dim
    }
}

/// One sequence of a (possibly variable-length) batch: batch row `row`, tokens
/// `start..end` of that row, state slot `index`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeqSpan {
    pub index: usize,
    pub row: usize,
    pub start: usize,
    pub end: usize,
}

impl SeqSpan {
    pub fn len(&self) -> usize {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }
}

/// The sequences of a call: one per batch row, or those given by `cu_seqlens` (B = 1).
/// Validates that `cu_seqlens` starts at 0, is non-decreasing and ends at T.
pub fn sequences(dims: &AttnDims, cu_seqlens: Option<&[usize]>) -> Result<Vec<SeqSpan>> {
    match cu_seqlens {
        None => Ok((0..dims.batch).map(|b| SeqSpan { index: b, row: b, start: 0, end: dims.seq_len }).collect()),
        Some(cu) => {
            if dims.batch != 1 {
                return Err(Error::invalid(format!("cu_seqlens requires batch size 1, got B = {}", dims.batch)));
            }
            if cu.len() < 2 {
                return Err(Error::invalid(format!("cu_seqlens needs at least 2 entries, got {cu:?}")));
            }
            if cu[0] != 0 {
                return Err(Error::invalid(format!("cu_seqlens must start at 0, got {}", cu[0])));
            }
            if let Some(w) = cu.windows(2).position(|w| w[1] < w[0]) {
                return Err(Error::invalid(format!(
                    "cu_seqlens must be non-decreasing: entry {} ({}) < entry {} ({})",
                    w + 1,
                    cu[w + 1],
                    w,
                    cu[w]
                )));
            }
            let last = *cu.last().expect("len >= 2 checked");
            if last != dims.seq_len {
                return Err(Error::invalid(format!("cu_seqlens must end at T = {}, ends at {last}", dims.seq_len)));
            }
            Ok(cu.windows(2).enumerate().map(|(n, w)| SeqSpan { index: n, row: 0, start: w[0], end: w[1] }).collect())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dims(batch: usize, seq_len: usize) -> AttnDims {
        AttnDims { batch, seq_len, heads: 2, key_dim: 4, value_dim: 3 }
    }

    #[test]
    fn batch_rows_are_sequences() {
        let s = sequences(&dims(3, 5), None).unwrap();
        assert_eq!(s.len(), 3);
        assert_eq!(s[2], SeqSpan { index: 2, row: 2, start: 0, end: 5 });
    }

    #[test]
    fn cu_seqlens_are_validated() {
        let d = dims(1, 10);
        assert_eq!(sequences(&d, Some(&[0, 3, 3, 10])).unwrap().len(), 3);
        for (bad, needle) in [
            (vec![0usize, 5, 4, 10], "non-decreasing"),
            (vec![1, 10], "start at 0"),
            (vec![0, 9], "end at T"),
            (vec![0], "at least 2"),
        ] {
            let err = sequences(&d, Some(&bad)).unwrap_err().to_string();
            assert!(err.contains(needle), "{err}");
        }
        assert!(sequences(&dims(2, 10), Some(&[0, 10])).is_err());
    }
}
