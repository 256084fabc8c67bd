//! Gathers one (sequence, head)'s rows into contiguous chunk buffers.
//!
//! Rows of q/k are strided by `H * K` in `[B, T, H, K]`; the kernels want a chunk as a
//! dense `[L, K']` block. Gathering applies, per row: the feature map (fused, so the
//! mapped tensor is never materialized), the scale on q, and for values the extra
//! ones-column that accumulates the normalizer z. With `key_shift = W` (window hybrid)
//! position m reads the key and value of position `m - W`, and zeros before that.
//!
//! Plain calls are gathered too: at B = 1, H = 8, K = V = 64 on a 2-core EPYC, gathering
//! each chunk into contiguous buffers before the `gemm` calls measured 10-15% faster
//! (T = 4096 and 16384) than handing `gemm` the strided in-place rows.
//! [`Scratch`] holds the per-thread chunk buffers, reused across tasks.

use super::problem::{Gates, Problem};
use crate::layout::SeqSpan;

/// Chunk buffers of one worker thread, grown on demand and reused across
/// (sequence, head) tasks.
#[derive(Default)]
pub(crate) struct Scratch {
    /// Gathered (or, for GLA, decayed) queries `[C, K']`.
    pub q: Vec<f32>,
    /// Gathered keys `[C, K']`.
    pub k: Vec<f32>,
    /// Gathered values `[C, V(+1)]`.
    pub v: Vec<f32>,
    /// Chunk-local cumulative log-decays, `[C]` or `[C, K']`.
    pub b: Vec<f32>,
    /// Intra-chunk scores `[C, C]`.
    pub a: Vec<f32>,
    /// Exponentials, `[C, K']` at most.
    pub e: Vec<f32>,
    /// Anchored queries of a sub-chunk (GLA), `[C, K']` at most.
    pub qa: Vec<f32>,
    /// Decay-weighted keys `[C, K']`.
    pub kw: Vec<f32>,
    /// Buffers of the AVX-512 tile kernel.
    #[cfg(target_arch = "x86_64")]
    pub tiles: super::chunk_scalar_avx512::TileScratch,
}

impl Scratch {
    /// Makes every buffer large enough for chunks of `c` rows, key width `kd`, value
    /// width `vx`.
    pub fn reserve(&mut self, c: usize, kd: usize, vx: usize) {
        let grow = |b: &mut Vec<f32>, n: usize| {
            if b.len() < n {
                b.resize(n, 0.0);
            }
        };
        grow(&mut self.q, c * kd);
        grow(&mut self.k, c * kd);
        grow(&mut self.v, c * vx);
        grow(&mut self.b, c * kd);
        grow(&mut self.a, c * c);
        grow(&mut self.e, c * kd.max(c));
        grow(&mut self.qa, c * kd);
        grow(&mut self.kw, c * kd);
    }
}

/// Consecutive stored rows of one head (see [`HeadSource::raw_block`]).
pub(crate) struct RawBlock<'p> {
    pub q: &'p [f32],
    pub k: &'p [f32],
    pub v: &'p [f32],
    pub qk_stride: usize,
    pub v_stride: usize,
}

/// Rows of one head to prefetch (see [`HeadSource::row_prefetch`]); empty when the
/// block lies past the end of the sequence.
#[derive(Default)]
pub(crate) struct RowPrefetch<'p> {
    q: &'p [f32],
    k: &'p [f32],
    v: &'p [f32],
    qk_stride: usize,
    v_stride: usize,
    key_dim: usize,
    value_dim: usize,
    rows: usize,
}

impl RowPrefetch<'_> {
    /// Asks the CPU to start loading rows `range` (of the block; rows past its end are
    /// ignored) of q, k and v into the L2 cache. L2, not L1: measured on Zen 4 (B = 1,
    /// H = 8, K = V = 64, T = 4096), prefetching into L1 evicted the kernel's own working
    /// set and gained nothing. Kernels spread the calls over their compute (a row or so
    /// per register tile) rather than asking for a whole block at once: 192 prefetches
    /// in a burst filled the miss queues and the values still arrived late (a single
    /// thread measured 10.4 ms for simple_gla at T = 4096 with bursts, 8.9 ms spread).
    #[cfg(target_arch = "x86_64")]
    pub fn fetch(&self, range: std::ops::Range<usize>) {
        use std::arch::x86_64::{_MM_HINT_T1, _mm_prefetch};
        let lines = |data: &[f32], stride: usize, width: usize| {
            for j in range.start..range.end.min(self.rows) {
                for off in (0..width).step_by(16) {
                    // SAFETY: a prefetch is only a hint and never faults; the address is
                    // inside `data` anyway (row j < rows starts at j * stride, `width`
                    // floats, and `data` ends with the last row).
                    unsafe { _mm_prefetch::<_MM_HINT_T1>(data.as_ptr().add(j * stride + off).cast::<i8>()) };
                }
            }
        };
        lines(self.q, self.qk_stride, self.key_dim);
        lines(self.k, self.qk_stride, self.key_dim);
        lines(self.v, self.v_stride, self.value_dim);
    }
}

/// One sequence and head of a [`Problem`].
pub(crate) struct HeadSource<'p, 'a> {
    pub problem: &'p Problem<'a>,
    pub span: SeqSpan,
    pub head: usize,
}

impl HeadSource<'_, '_> {
    /// Tokens in this sequence.
    pub fn len(&self) -> usize {
        self.span.len()
    }

    fn token(&self, m: usize) -> (usize, usize) {
        (self.span.row, self.span.start + m)
    }

    fn qk_row<'s>(&self, data: &'s [f32], m: usize) -> &'s [f32] {
        let (b, t) = self.token(m);
        let d = self.problem.dims;
        &data[d.qk_index(b, t, self.head, 0)..][..d.key_dim]
    }

    /// Whether rows go to the kernels as they are stored: no feature maps, no key shift
    /// (so [`Self::raw_rows`] gives the kernels' rows without a gather).
    pub fn rows_are_raw(&self) -> bool {
        let p = self.problem;
        p.q_map.is_none() && p.k_map.is_none() && p.key_shift == 0
    }

    /// The stored rows of positions `start..start+len` (before scale and maps), as
    /// slices that start at row `start`: row j of q (and k) at `j * qk_stride`, of v at
    /// `j * v_stride`. `len` must be at least 1 and stay inside the sequence.
    pub fn raw_block(&self, start: usize, len: usize) -> RawBlock<'_> {
        let p = self.problem;
        let d = p.dims;
        assert!(
            len >= 1 && start + len <= self.len(),
            "rows {start}..{} of a {}-token sequence",
            start + len,
            self.len()
        );
        let (b, t) = self.token(start);
        let (qk_stride, v_stride) = (d.heads * d.key_dim, d.heads * d.value_dim);
        let qk_at = d.qk_index(b, t, self.head, 0);
        let v_at = d.v_index(b, t, self.head, 0);
        let qk_len = (len - 1) * qk_stride + d.key_dim;
        let v_len = (len - 1) * v_stride + d.value_dim;
        RawBlock {
            q: &p.q[qk_at..qk_at + qk_len],
            k: &p.k[qk_at..qk_at + qk_len],
            v: &p.v[v_at..v_at + v_len],
            qk_stride,
            v_stride,
        }
    }

    /// Rows `start..start+len` of `scale * phi_q(q)` into `out [len, K']`.
    pub fn fill_queries(&self, start: usize, len: usize, out: &mut [f32]) {
        self.fill_queries_strided(start, len, out, self.problem.rec_key_dim);
    }

    /// As [`Self::fill_queries`], row i at `out[i * stride..]` (`stride >= K'`; the
    /// columns past K' are left as they are).
    pub fn fill_queries_strided(&self, start: usize, len: usize, out: &mut [f32], stride: usize) {
        let p = self.problem;
        let kd = p.rec_key_dim;
        for i in 0..len {
            let row = &mut out[i * stride..i * stride + kd];
            let x = self.qk_row(&p.q, start + i);
            match &p.q_map {
                Some(map) => map.apply(self.head, x, row),
                None => row.copy_from_slice(x),
            }
            row.iter_mut().for_each(|r| *r *= p.scale);
        }
    }

    /// Rows `start..start+len` of `phi_k(k)` into `k_out [len, K']` and of v (plus the
    /// ones column when normalizing) into `v_out [len, V(+1)]`, honoring `key_shift`.
    pub fn fill_keys_values(&self, start: usize, len: usize, k_out: &mut [f32], v_out: &mut [f32]) {
        let (kd, vx) = (self.problem.rec_key_dim, self.problem.value_width());
        for i in 0..len {
            self.fill_key_value(start + i, &mut k_out[i * kd..(i + 1) * kd], &mut v_out[i * vx..(i + 1) * vx]);
        }
    }

    /// Position `m`'s `phi_k(k)` into `krow [K']` and its value (plus the ones column
    /// when normalizing) into `vrow [V(+1)]`, honoring `key_shift` (zeros before it).
    pub fn fill_key_value(&self, m: usize, krow: &mut [f32], vrow: &mut [f32]) {
        let p = self.problem;
        let vd = p.dims.value_dim;
        if m < p.key_shift {
            krow.fill(0.0);
            vrow.fill(0.0);
            return;
        }
        let src = m - p.key_shift;
        let x = self.qk_row(&p.k, src);
        match &p.k_map {
            Some(map) => map.apply(self.head, x, krow),
            None => krow.copy_from_slice(x),
        }
        let (b, t) = self.token(src);
        vrow[..vd].copy_from_slice(&p.v[p.dims.v_index(b, t, self.head, 0)..][..vd]);
        if p.normalize {
            vrow[vd] = 1.0;
        }
    }

    /// The q, k and v rows of positions `start..start+len` (clamped to the sequence),
    /// for [`RowPrefetch::fetch`]: the rows of one head are 256 B or so every `H * K`
    /// floats, a stride the hardware prefetchers follow poorly, so a kernel asks for
    /// the next block's rows while it computes on the current one.
    #[cfg(target_arch = "x86_64")]
    pub fn row_prefetch(&self, start: usize, len: usize) -> RowPrefetch<'_> {
        let p = self.problem;
        // Positions whose q and (shifted) k, v rows all exist.
        let first = start.max(p.key_shift);
        let end = (start + len).min(self.len());
        if first >= end {
            return RowPrefetch::default();
        }
        let d = p.dims;
        let (qk_stride, v_stride) = (d.heads * d.key_dim, d.heads * d.value_dim);
        let rows = end - first;
        fn region(data: &[f32], at: usize, rows: usize, stride: usize, width: usize) -> &[f32] {
            &data[at..at + (rows - 1) * stride + width]
        }
        let (b, t) = self.token(first);
        let q = region(&p.q, d.qk_index(b, t, self.head, 0), rows, qk_stride, d.key_dim);
        let (b, t) = self.token(first - p.key_shift);
        let k = region(&p.k, d.qk_index(b, t, self.head, 0), rows, qk_stride, d.key_dim);
        let v = region(&p.v, d.v_index(b, t, self.head, 0), rows, v_stride, d.value_dim);
        RowPrefetch { q, k, v, qk_stride, v_stride, key_dim: d.key_dim, value_dim: d.value_dim, rows }
    }

    /// Whether the state decays at all.
    pub fn has_gates(&self) -> bool {
        !matches!(self.problem.gates, Gates::None)
    }

    /// Whether gates are per key dim (GLA) rather than scalar.
    pub fn gates_per_key(&self) -> bool {
        matches!(self.problem.gates, Gates::PerKey(_))
    }

    /// Scalar log-decays of positions `start..start+len` into `out [len]` (0 without gates).
    pub fn fill_scalar_gates(&self, start: usize, len: usize, out: &mut [f32]) {
        let p = self.problem;
        let out = &mut out[..len];
        match &p.gates {
            Gates::None | Gates::PerKey(_) => out.fill(0.0),
            Gates::PerHead(g) => out.fill(g[self.head]),
            Gates::PerToken(g) => {
                if len == 0 {
                    return;
                }
                // Positions of one sequence are consecutive t of one batch row: stride H.
                let (b, t) = self.token(start);
                let first = p.dims.gate_index(b, t, self.head);
                let heads = p.dims.heads;
                let rows = &g[first..first + (len - 1) * heads + 1];
                for (i, o) in out.iter_mut().enumerate() {
                    *o = rows[i * heads];
                }
            }
        }
    }

    /// Per-key log-decays of positions `start..start+len` into `out [len, K']`
    /// (scalar gates broadcast over K').
    pub fn fill_key_gates(&self, start: usize, len: usize, out: &mut [f32]) {
        let p = self.problem;
        let kd = p.rec_key_dim;
        if let Gates::PerKey(g) = &p.gates {
            for i in 0..len {
                let (b, t) = self.token(start + i);
                let at = p.dims.gate_index(b, t, self.head) * kd;
                out[i * kd..(i + 1) * kd].copy_from_slice(&g[at..at + kd]);
            }
        } else {
            let mut scalar = vec![0.0f32; len];
            self.fill_scalar_gates(start, len, &mut scalar);
            for i in 0..len {
                out[i * kd..(i + 1) * kd].fill(scalar[i]);
            }
        }
    }
}
