//! AVX-512 register-tiled chunk kernel for scalar decay (linear attention, simple GLA,
//! RetNet): the same recurrence and chunk algebra as [`super::chunk_scalar`], without
//! `gemm` calls, in blocks of [`BLOCK`] = 16 tokens.
//!
//! Why a separate body: at head dims of 64 every per-chunk product is tiny (16 x 64 x
//! 64), so a general gemm spends much of its time packing and dispatching. Here every
//! operand already has the layout its micro-kernel broadcasts from or streams through,
//! and the states stay in L1/L2 for the whole sequence. A call ([`run_heads`]) runs one
//! sequence for a group of heads, block-major, so the rows a block reads are contiguous
//! across the group's heads. Files: this one drives the blocks, [`gather`] brings a
//! block's rows into the kernel layouts, [`products`] holds the register-tile products,
//! [`exp`] the vector exponential.
//!
//! Layout per 16-token block (scratch of one worker thread, zero-padded to multiples of
//! 16 columns so every row is whole zmm registers: `K'p = ceil16(K')`,
//! `Vp = ceil16(V(+1))`):
//!
//! ```text
//! q   [16, K'p]     scale * phi_q(q), row-major (broadcast per element)
//! kt  [K'p, 16]     phi_k(k) transposed: one zmm per key dim, lane = token
//! ktw [K'p, 16]     kt * exp(b_L - b_j), the decay-weighted keys of the state update
//! v   [16, Vp]      values (+ the ones column of the normalizer), row-major
//! a   [16, 16]      A_ij = (q_i . k_j) exp(b_i - b_j) for j <= i, 0 above
//! s   [G, K'p, Vp]  the running states of the group's G heads
//! ```
//!
//! Whole blocks of rows as stored (no feature map, no key shift) with K and V multiples
//! of 16 and no normalizer skip the q and v copies: the products broadcast q from, and
//! stream v through, the stored rows (row strides `H K`, `H V`), and the scale is
//! applied to `A` and to the `q S` rows instead. Only `kt` is built. At B = 1, H = 8,
//! K = V = 64, T = 4096 one thread went from 8.4 to 7.6 ms with this.
//!
//! With `b` the block-local inclusive cumsum of the log-decays:
//!
//! ```text
//! A   = mask(Q Kt) * exp(b_i - b_j)            one 16-accumulator pass over K'p
//! O_i = exp(b_i) (q_i S) + sum_{j<=i} A_ij v_j  4-row x 64-column register tiles
//! S   = exp(b_L) S + Ktw V                      4-row x 64-column register tiles
//! ```
//!
//! Numerics: f32 products and accumulation (FMA), the same as the `gemm` path up to
//! summation order. Exponents `b_i - b_j` (j <= i), `b_i` and `b_L - b_j` are <= 0 for
//! log-decays <= 0, so extreme gates give zeros, never Inf or NaN; the upper triangle's
//! exponentials (which may overflow) are discarded by a zero-masking multiply. `exp` is
//! `vecops::exp_fast`'s algorithm in zmm registers (same constants and range handling,
//! FMA where it has a multiply and an add: within 4 ulp of it). Padding columns and rows
//! are zero, so they add exact zeros. Inf/NaN: the inputs are not scanned on the way in;
//! every stored output is probed instead (see [`run_heads`]). Tested against the
//! portable kernel and the f64 reference (`gated::tests`).

#![cfg(target_arch = "x86_64")]

mod exp;
mod gather;
mod products;

use super::matmul::MatMut;
use super::source::HeadSource;
use gather::{gather_raw, transpose_keys};
use products::{BlockInputs, block};

/// Tokens per block (one zmm of lanes in `kt`, `ktw` and the rows of `a`).
pub(crate) const BLOCK: usize = 16;
/// Rows of a register tile of the output and state products.
const TILE_ROWS: usize = 4;
/// zmm registers per row of a register tile (64 columns).
const TILE_ZMM: usize = 4;

/// Per-thread buffers of this kernel, grown on demand.
#[derive(Default)]
pub(crate) struct TileScratch {
    q: Vec<f32>,
    kt: Vec<f32>,
    ktw: Vec<f32>,
    v: Vec<f32>,
    a: Vec<f32>,
    s: Vec<f32>,
    key_row: Vec<f32>,
}

/// `n` rounded up to a multiple of 16.
fn ceil16(n: usize) -> usize {
    n.div_ceil(16) * 16
}

/// Runs one sequence for a group of heads, block-major: every 16-token block is
/// computed for each head of the group before the next block, so the rows read (and
/// written) per block are contiguous across the group's heads in `[B, T, H, K]`
/// instead of one 256-byte row per 2 KB page stride. `srcs[g]` is head g of the group
/// (all on the same sequence), `states[g] [K', V(+1)]` its state in/out, `outs[g]
/// [len, V(+1)]` its raw output rows (every element written, through raw pointers,
/// and never read: they may start uninitialized).
///
/// Returns false if an output value was not finite. Every output row depends on its
/// token's q, k and v through products and sums only, and IEEE arithmetic never turns
/// an Inf or NaN operand into a finite result (`inf * 0` is NaN, `inf - inf` is NaN),
/// so a non-finite q, k or v value always shows up in the output: a caller that sees
/// false scans the inputs to tell a bad input from an output that overflowed.
///
/// Callers need AVX-512F, AVX2 and FMA on this CPU (`Isa::Avx512` from `Isa::detect`).
#[target_feature(enable = "avx512f,avx2,fma")]
pub(crate) fn run_heads(
    srcs: &[HeadSource],
    scratch: &mut TileScratch,
    states: &mut [Vec<f32>],
    outs: &mut [MatMut],
) -> bool {
    assert!(srcs.len() == states.len() && srcs.len() == outs.len(), "one state and one output per head");
    let Some(first) = srcs.first() else { return true };
    let p = first.problem;
    let (kd, vx) = (p.rec_key_dim, p.value_width());
    let (kp, vp) = (ceil16(kd), ceil16(vx));
    let len = first.len();
    let gated = first.has_gates();
    let group = srcs.len();
    let grow = |buf: &mut Vec<f32>, n: usize| {
        buf.clear();
        buf.resize(n, 0.0);
    };
    let TileScratch { q, kt, ktw, v, a, s, key_row } = scratch;
    grow(q, BLOCK * kp);
    grow(kt, kp * BLOCK);
    grow(ktw, kp * BLOCK);
    grow(v, BLOCK * vp);
    grow(a, BLOCK * BLOCK);
    grow(s, group * kp * vp);
    grow(key_row, kd);
    for (g, state) in states.iter().enumerate() {
        assert!(state.len() == kd * vx, "state holds {} values, expected {kd} x {vx}", state.len());
        for r in 0..kd {
            s[(g * kp + r) * vp..][..vx].copy_from_slice(&state[r * vx..(r + 1) * vx]);
        }
    }
    // Rows the kernels read straight from the stored tensors (see `DirectRows`).
    let direct_shape = kd % 16 == 0 && p.dims.value_dim % 16 == 0 && !p.normalize;
    let mut outputs_finite = true;
    let mut start = 0;
    while start < len {
        let l = BLOCK.min(len - start);
        for (g, (src, out)) in srcs.iter().zip(outs.iter_mut()).enumerate() {
            let direct = direct_shape && l == BLOCK && src.rows_are_raw();
            if l < BLOCK {
                // The last, partial block: rows and lanes past `l` must be zero.
                q.fill(0.0);
                kt.fill(0.0);
                v.fill(0.0);
            }
            // One block ahead on the same head: the rows arrive while the group's
            // other heads compute (prefetching the next head's rows of this block
            // instead, or two or four blocks ahead, measured slower).
            let prefetch = src.row_prefetch(start + BLOCK, BLOCK);
            let rows = src.rows_are_raw().then(|| src.raw_block(start, l));
            if let (true, Some(rows)) = (direct, &rows) {
                transpose_keys(rows.k, rows.qk_stride, kd, kt);
            } else if let Some(rows) = &rows {
                gather_raw(rows, p.scale, (kd, p.dims.value_dim), p.normalize, l, q, kt, v, kp, vp);
            } else {
                src.fill_queries_strided(start, l, q, kp);
                for j in 0..l {
                    src.fill_key_value(start + j, key_row, &mut v[j * vp..j * vp + vx]);
                    for (r, &x) in key_row.iter().enumerate() {
                        kt[r * BLOCK + j] = x;
                    }
                }
            }
            let mut b = [0.0f32; BLOCK];
            if gated {
                src.fill_scalar_gates(start, l, &mut b);
                for i in 1..l {
                    b[i] += b[i - 1];
                }
            }
            let s_head = &mut s[g * kp * vp..(g + 1) * kp * vp];
            let mut o = out.sub_rows(start, start + l);
            let (q, q_stride, q_scale, v, v_stride) = match (direct, &rows) {
                (true, Some(rows)) => (rows.q, rows.qk_stride, p.scale, rows.v, rows.v_stride),
                _ => (&q[..], kp, 1.0, &v[..], vp),
            };
            let x = BlockInputs { q, q_stride, q_scale, kt, v, v_stride, b: &b, gated, kp, vp, vx, l };
            outputs_finite &= block(&x, a, ktw, s_head, &mut o, &prefetch);
        }
        start += l;
    }
    for (g, state) in states.iter_mut().enumerate() {
        for r in 0..kd {
            state[r * vx..(r + 1) * vx].copy_from_slice(&s[(g * kp + r) * vp..][..vx]);
        }
    }
    outputs_finite
}
