//! Helpers shared by the backward-pass tests: a seeded xorshift generator and the dims
//! constructor. (Included as `mod backward_common;` by `backward_chunked.rs` and
//! `backward_fd.rs`.)

use linattn_attn::layout::AttnDims;

/// Seeded xorshift64 generator (seed must be non-zero).
pub struct Rng(pub u64);

impl Rng {
    pub fn uniform(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Uniform in [lo, hi).
    pub fn vec(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..n).map(|_| lo + (hi - lo) * self.uniform()).collect()
    }

    /// `logsigmoid(x) / temperature`, x uniform in (-3, 3): typical (temperature 1) to
    /// extreme (temperature 0.1) log-gates.
    pub fn log_gates(&mut self, n: usize, temperature: f32) -> Vec<f32> {
        self.vec(n, -3.0, 3.0).into_iter().map(|x| -(1.0 + (-x).exp()).ln() / temperature).collect()
    }
}

pub fn dims(batch: usize, seq_len: usize, heads: usize, key_dim: usize, value_dim: usize) -> AttnDims {
    AttnDims { batch, seq_len, heads, key_dim, value_dim }
}
