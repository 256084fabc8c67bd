//! AVX-512 register-tiled chunk kernel for scalar decay (linear attention, simple GLA,
//! RetNet): the same recurrence and chunk algebra as [`super::chunk_scalar`], without
//! `gemm` calls, in blocks of [`BLOCK`] = 16 tokens.
//!
//! Why a separate body: at head dims of 64 every per-chunk product is tiny (16 x 64 x
//! 64), so a general gemm spends much of its time packing and dispatching. Here every
//! operand already has the layout its micro-kernel broadcasts from or streams through,
//! and the states stay in L1/L2 for the whole sequence. A call ([`run_heads`]) runs one
//! sequence for a group of heads, block-major, so the rows a block reads are contiguous
//! across the group's heads; q, k, v rows read as stored are checked for Inf/NaN on the
//! way in (the caller then skips its own scan).
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
//! are zero, so they add exact zeros. Tested against the portable kernel and the f64
//! reference (`gated::tests`).

#![cfg(target_arch = "x86_64")]

use std::arch::x86_64::*;

use super::matmul::MatMut;
use super::source::{HeadSource, RowPrefetch};

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
/// Returns false if a q, k or v value read as stored (no feature maps, no key shift)
/// was not finite (see [`non_finite_lanes`]). Rows that pass through a feature map or
/// a key shift are not checked here.
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
    let mut saw_non_finite = false;
    let mut start = 0;
    while start < len {
        let l = BLOCK.min(len - start);
        for (g, (src, out)) in srcs.iter().zip(outs.iter_mut()).enumerate() {
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
            if src.rows_are_raw() {
                saw_non_finite |= gather_raw(src, start, l, q, kt, v, kp, vp);
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
            block(&BlockInputs { q, kt, v, b: &b, gated, kp, vp, vx, l }, a, ktw, s_head, &mut o, &prefetch);
        }
        start += l;
    }
    for (g, state) in states.iter_mut().enumerate() {
        for r in 0..kd {
            state[r * vx..(r + 1) * vx].copy_from_slice(&s[(g * kp + r) * vp..][..vx]);
        }
    }
    !saw_non_finite
}

/// Lanes of `x` that hold Inf or NaN: exactly those where `x - x` is NaN (an unordered
/// compare, no dependency chain across calls).
#[inline]
#[target_feature(enable = "avx512f,avx2,fma")]
fn non_finite_lanes(x: __m512) -> u32 {
    u32::from(_mm512_cmp_ps_mask::<_CMP_UNORD_Q>(x, _mm512_sub_ps(x, x)))
}

/// The block's rows of a problem without feature maps or key shift, straight from the
/// stored tensors: `q = scale * q` rows, `kt` the keys transposed (a 16 x 16 transpose
/// in registers per 16 key dims), `v` rows plus the ones column when normalizing.
/// Columns past K and V(+1) and rows past `l` are left as they are (zero). Returns
/// whether any loaded value was Inf or NaN.
#[allow(clippy::too_many_arguments)] // the block's buffers and their widths
#[target_feature(enable = "avx512f,avx2,fma")]
fn gather_raw(
    src: &HeadSource,
    start: usize,
    l: usize,
    q: &mut [f32],
    kt: &mut [f32],
    v: &mut [f32],
    kp: usize,
    vp: usize,
) -> bool {
    let mut non_finite = 0u32;
    let p = src.problem;
    let (kd, vd) = (p.dims.key_dim, p.dims.value_dim);
    let scale = _mm512_set1_ps(p.scale);
    let rows = src.raw_block(start, l);
    let (sqk, sv) = (rows.qk_stride, rows.v_stride);
    for j in 0..l {
        let q_src = &rows.q[j * sqk..j * sqk + kd];
        let q_dst = &mut q[j * kp..j * kp + kd];
        for c in (0..kd).step_by(16) {
            let n = (kd - c).min(16);
            let x = load_prefix(&q_src[c..c + n]);
            non_finite |= non_finite_lanes(x);
            store_prefix(&mut q_dst[c..c + n], _mm512_mul_ps(x, scale));
        }
        let v_src = &rows.v[j * sv..j * sv + vd];
        let v_dst = &mut v[j * vp..j * vp + vd];
        for c in (0..vd).step_by(16) {
            let n = (vd - c).min(16);
            let x = load_prefix(&v_src[c..c + n]);
            non_finite |= non_finite_lanes(x);
            store_prefix(&mut v_dst[c..c + n], x);
        }
        if p.normalize {
            v[j * vp + vd] = 1.0;
        }
    }
    // Keys: 16 key dims at a time, 16 token rows -> 16 kt rows (lane = token).
    for c in (0..kd).step_by(16) {
        let n = (kd - c).min(16);
        let mut tokens = [_mm512_setzero_ps(); 16];
        for (j, row) in tokens.iter_mut().enumerate().take(l) {
            *row = load_prefix(&rows.k[j * sqk + c..j * sqk + c + n]);
            non_finite |= non_finite_lanes(*row);
        }
        let cols = transpose16(tokens);
        for (r, col) in cols.iter().enumerate().take(n) {
            let dst = &mut kt[(c + r) * BLOCK..(c + r + 1) * BLOCK];
            // SAFETY: `dst` is a slice of exactly 16 floats.
            unsafe { _mm512_storeu_ps(dst.as_mut_ptr(), *col) };
        }
    }
    non_finite != 0
}

/// Transposes a 16 x 16 matrix held as 16 rows: `out[j]` lane i = `rows[i]` lane j.
/// Pairs of rows are interleaved within 128-bit lanes, then quads, then the 4 x 4
/// arrangement of 128-bit lanes is transposed with two rounds of lane shuffles.
#[inline]
#[target_feature(enable = "avx512f,avx2,fma")]
fn transpose16(rows: [__m512; 16]) -> [__m512; 16] {
    // t[2p], t[2p+1]: rows 2p and 2p+1 interleaved, low and high halves of each lane.
    let mut t = [_mm512_setzero_ps(); 16];
    for p in 0..8 {
        t[2 * p] = _mm512_unpacklo_ps(rows[2 * p], rows[2 * p + 1]);
        t[2 * p + 1] = _mm512_unpackhi_ps(rows[2 * p], rows[2 * p + 1]);
    }
    // u[4g + c], 128-bit lane L: column 4L + c of rows 4g..4g+3.
    let mut u = [_mm512_setzero_ps(); 16];
    for g in 0..4 {
        let (lo_a, hi_a, lo_b, hi_b) = (t[4 * g], t[4 * g + 1], t[4 * g + 2], t[4 * g + 3]);
        u[4 * g] = _mm512_shuffle_ps::<0x44>(lo_a, lo_b);
        u[4 * g + 1] = _mm512_shuffle_ps::<0xEE>(lo_a, lo_b);
        u[4 * g + 2] = _mm512_shuffle_ps::<0x44>(hi_a, hi_b);
        u[4 * g + 3] = _mm512_shuffle_ps::<0xEE>(hi_a, hi_b);
    }
    // out[4L + c], 128-bit lane g = u[4g + c] lane L.
    let mut out = [_mm512_setzero_ps(); 16];
    for c in 0..4 {
        let (a, b, cc, d) = (u[c], u[4 + c], u[8 + c], u[12 + c]);
        let ab_lo = _mm512_shuffle_f32x4::<0x44>(a, b);
        let ab_hi = _mm512_shuffle_f32x4::<0xEE>(a, b);
        let cd_lo = _mm512_shuffle_f32x4::<0x44>(cc, d);
        let cd_hi = _mm512_shuffle_f32x4::<0xEE>(cc, d);
        out[c] = _mm512_shuffle_f32x4::<0x88>(ab_lo, cd_lo);
        out[4 + c] = _mm512_shuffle_f32x4::<0xDD>(ab_lo, cd_lo);
        out[8 + c] = _mm512_shuffle_f32x4::<0x88>(ab_hi, cd_hi);
        out[12 + c] = _mm512_shuffle_f32x4::<0xDD>(ab_hi, cd_hi);
    }
    out
}

/// Loads `src.len() <= 16` floats into the low lanes (the rest zero).
#[inline]
#[target_feature(enable = "avx512f,avx2,fma")]
fn load_prefix(src: &[f32]) -> __m512 {
    if let Ok(whole) = <&[f32; 16]>::try_from(src) {
        // SAFETY: `whole` is 16 floats.
        return unsafe { _mm512_loadu_ps(whole.as_ptr()) };
    }
    assert!(src.len() <= 16);
    let mask = ((1u32 << src.len()) - 1) as __mmask16;
    // SAFETY: the mask enables exactly `src.len()` lanes, all inside `src`; masked-off
    // lanes are not read (no fault) and come back zero.
    unsafe { _mm512_maskz_loadu_ps(mask, src.as_ptr()) }
}

/// One head's gathered block (see the module header for the layouts).
struct BlockInputs<'b> {
    q: &'b [f32],
    kt: &'b [f32],
    v: &'b [f32],
    /// Block-local inclusive cumsum of the log-decays (zeros past `l`).
    b: &'b [f32; BLOCK],
    gated: bool,
    kp: usize,
    vp: usize,
    vx: usize,
    l: usize,
}

/// One block of one head: scores into `a`, output rows into `o`, then the state update
/// of `s [K'p, Vp]` (using `ktw` as scratch).
#[target_feature(enable = "avx512f,avx2,fma")]
fn block(x: &BlockInputs, a: &mut [f32], ktw: &mut [f32], s: &mut [f32], o: &mut MatMut, prefetch: &RowPrefetch) {
    let BlockInputs { q, kt, v, b, gated, kp, vp, vx, l } = *x;
    let bl = b[l - 1];
    // SAFETY: `b` is an array of 16 floats.
    let b_vec = unsafe { _mm512_loadu_ps(b.as_ptr()) };
    // exp(b_i) for the inter-chunk term, exp(b_L - b_j) for the state update.
    let row_decay = if gated { exp512(b_vec) } else { _mm512_set1_ps(1.0) };
    let mut row_decay_arr = [0.0f32; BLOCK];
    // SAFETY: the array holds 16 floats.
    unsafe { _mm512_storeu_ps(row_decay_arr.as_mut_ptr(), row_decay) };
    scores(q, kt, kp, b, gated, l, a);
    output_block(q, s, v, a, &row_decay_arr, gated, kp, vp, vx, l, o);
    if gated {
        let key_decay = exp512(_mm512_sub_ps(_mm512_set1_ps(bl), b_vec));
        for r in 0..kp {
            let (src_row, dst_row) = (&kt[r * BLOCK..(r + 1) * BLOCK], &mut ktw[r * BLOCK..(r + 1) * BLOCK]);
            // SAFETY: both rows are slices of exactly 16 floats.
            unsafe {
                _mm512_storeu_ps(dst_row.as_mut_ptr(), _mm512_mul_ps(_mm512_loadu_ps(src_row.as_ptr()), key_decay))
            };
        }
        update_state(ktw, v, s, crate::vecops::exp_fast(bl), kp, vp, l, prefetch);
    } else {
        update_state(kt, v, s, 1.0, kp, vp, l, prefetch);
    }
}

/// `a [16, 16]`: `A_ij = (q_i . k_j) exp(b_i - b_j)` for `j <= i < l`, zero elsewhere.
#[target_feature(enable = "avx512f,avx2,fma")]
fn scores(q: &[f32], kt: &[f32], kp: usize, b: &[f32; BLOCK], gated: bool, l: usize, a: &mut [f32]) {
    assert!(q.len() >= BLOCK * kp && kt.len() >= kp * BLOCK && a.len() >= BLOCK * BLOCK);
    let mut acc = [_mm512_setzero_ps(); BLOCK];
    for r in 0..kp {
        // SAFETY: r < kp, so the 16 floats at r * 16 lie inside `kt` (asserted length).
        let kv = unsafe { _mm512_loadu_ps(kt.as_ptr().add(r * BLOCK)) };
        for (i, acc_i) in acc.iter_mut().enumerate() {
            // SAFETY: i < 16 and r < kp, so i * kp + r < 16 * kp <= q.len().
            let qi = unsafe { *q.get_unchecked(i * kp + r) };
            *acc_i = _mm512_fmadd_ps(_mm512_set1_ps(qi), kv, *acc_i);
        }
    }
    // SAFETY: `b` is an array of 16 floats.
    let b_vec = unsafe { _mm512_loadu_ps(b.as_ptr()) };
    for (i, acc_i) in acc.iter().enumerate() {
        // Lanes j <= i of row i, and only rows of real tokens.
        let mask: __mmask16 = if i < l { ((1u32 << (i + 1)) - 1) as __mmask16 } else { 0 };
        let row = if gated {
            // The lanes above the diagonal (j > i) may overflow to +inf; the zero-masked
            // product discards them.
            let diff = _mm512_sub_ps(_mm512_set1_ps(b[i]), b_vec);
            _mm512_maskz_mul_ps(mask, *acc_i, exp512(diff))
        } else {
            _mm512_maskz_mov_ps(mask, *acc_i)
        };
        // SAFETY: row i of `a` is 16 floats inside `a` (asserted length).
        unsafe { _mm512_storeu_ps(a.as_mut_ptr().add(i * BLOCK), row) };
    }
}

/// Output rows of a block: `O_i = exp(b_i) (q_i S) + sum_{j<=i} A_ij v_j`, written to
/// the first `vx` columns of `o`'s `l` rows.
#[allow(clippy::too_many_arguments)] // the block's operands, each a separate buffer
#[target_feature(enable = "avx512f,avx2,fma")]
fn output_block(
    q: &[f32],
    s: &[f32],
    v: &[f32],
    a: &[f32],
    row_decay: &[f32; BLOCK],
    gated: bool,
    kp: usize,
    vp: usize,
    vx: usize,
    l: usize,
    o: &mut MatMut,
) {
    assert!(q.len() >= BLOCK * kp && s.len() >= kp * vp && v.len() >= BLOCK * vp && a.len() >= BLOCK * BLOCK);
    assert!(vp.is_multiple_of(16) && vx <= vp && l <= BLOCK);
    let groups = vp / 16;
    for r0 in (0..l).step_by(TILE_ROWS) {
        let mut g0 = 0;
        while g0 < groups {
            let n = (groups - g0).min(TILE_ZMM);
            let t = OutTile { q, s, v, a, row_decay, gated, kp, vp, r0, c0: g0 * 16 };
            match n {
                4 => t.run::<4>(o, vx, l),
                3 => t.run::<3>(o, vx, l),
                2 => t.run::<2>(o, vx, l),
                _ => t.run::<1>(o, vx, l),
            }
            g0 += n;
        }
    }
}

/// One `TILE_ROWS x (Z * 16)` register tile of the output product.
struct OutTile<'b> {
    q: &'b [f32],
    s: &'b [f32],
    v: &'b [f32],
    a: &'b [f32],
    row_decay: &'b [f32; BLOCK],
    gated: bool,
    kp: usize,
    vp: usize,
    r0: usize,
    c0: usize,
}

impl OutTile<'_> {
    /// Computes the tile and stores its rows `< l`, columns `< vx`, into `o`.
    /// Bounds: the caller asserted the operand lengths, `r0 + TILE_ROWS <= 16` and
    /// `c0 + Z * 16 <= vp`.
    #[target_feature(enable = "avx512f,avx2,fma")]
    fn run<const Z: usize>(&self, o: &mut MatMut, vx: usize, l: usize) {
        let (kp, vp, r0, c0) = (self.kp, self.vp, self.r0, self.c0);
        debug_assert!(r0 + TILE_ROWS <= BLOCK && c0 + Z * 16 <= vp);
        let mut acc = [[_mm512_setzero_ps(); Z]; TILE_ROWS];
        // Inter-chunk: q_i S.
        for r in 0..kp {
            // SAFETY: r < kp and c0 + Z * 16 <= vp, so row r's columns c0.. lie in `s`.
            let srow = unsafe { self.s.as_ptr().add(r * vp + c0) };
            let mut sv = [_mm512_setzero_ps(); Z];
            for (z, x) in sv.iter_mut().enumerate() {
                // SAFETY: see above (z < Z).
                *x = unsafe { _mm512_loadu_ps(srow.add(z * 16)) };
            }
            for (i, acc_i) in acc.iter_mut().enumerate() {
                // SAFETY: r0 + i < 16 and r < kp: inside q (16 x kp).
                let qi = _mm512_set1_ps(unsafe { *self.q.get_unchecked((r0 + i) * kp + r) });
                for z in 0..Z {
                    acc_i[z] = _mm512_fmadd_ps(qi, sv[z], acc_i[z]);
                }
            }
        }
        if self.gated {
            for (i, acc_i) in acc.iter_mut().enumerate() {
                let d = _mm512_set1_ps(self.row_decay[r0 + i]);
                for x in acc_i.iter_mut() {
                    *x = _mm512_mul_ps(*x, d);
                }
            }
        }
        // Intra-chunk: sum_{j <= i} A_ij v_j (A is zero above the diagonal).
        let j_end = (r0 + TILE_ROWS).min(l);
        for j in 0..j_end {
            // SAFETY: j < 16 and c0 + Z * 16 <= vp: inside v (16 x vp).
            let vrow = unsafe { self.v.as_ptr().add(j * vp + c0) };
            let mut vv = [_mm512_setzero_ps(); Z];
            for (z, x) in vv.iter_mut().enumerate() {
                // SAFETY: see above.
                *x = unsafe { _mm512_loadu_ps(vrow.add(z * 16)) };
            }
            for (i, acc_i) in acc.iter_mut().enumerate() {
                // SAFETY: (r0 + i) * 16 + j < 256 = a's asserted minimum length.
                let aij = _mm512_set1_ps(unsafe { *self.a.get_unchecked((r0 + i) * BLOCK + j) });
                for z in 0..Z {
                    acc_i[z] = _mm512_fmadd_ps(aij, vv[z], acc_i[z]);
                }
            }
        }
        assert!(vx <= o.cols(), "{vx} output columns in a view of {}", o.cols());
        for (i, acc_i) in acc.iter().enumerate() {
            if r0 + i >= l {
                break;
            }
            // Through a raw pointer: the rows may be uninitialized memory (see
            // `run_heads`), so no reference to them is formed.
            let row = o.row_ptr(r0 + i);
            for (z, x) in acc_i.iter().enumerate() {
                let col = c0 + z * 16;
                if col >= vx {
                    break;
                }
                // SAFETY: row r0 + i < l of the view holds `o.cols() >= vx` writable
                // elements (MatMut contract) and col < vx, so the `min(16, vx - col)`
                // lanes stored lie inside the row.
                unsafe { store_prefix_raw(row.add(col), (vx - col).min(16), *x) };
            }
        }
    }
}

/// `S = decay * S + Kw V` over the block's `l` tokens; `kw [K'p, 16]` lane j = token j.
#[target_feature(enable = "avx512f,avx2,fma")]
#[allow(clippy::too_many_arguments)]
fn update_state(kw: &[f32], v: &[f32], s: &mut [f32], decay: f32, kp: usize, vp: usize, l: usize, prefetch: &RowPrefetch) {
    assert!(kw.len() >= kp * BLOCK && v.len() >= BLOCK * vp && s.len() >= kp * vp);
    assert!(vp.is_multiple_of(16) && kp.is_multiple_of(TILE_ROWS) && l <= BLOCK);
    let groups = vp / 16;
    let tiles = kp / TILE_ROWS;
    for (ti, r0) in (0..kp).step_by(TILE_ROWS).enumerate() {
        prefetch.fetch(ti * BLOCK / tiles..(ti + 1) * BLOCK / tiles);
        let mut g0 = 0;
        while g0 < groups {
            let n = (groups - g0).min(TILE_ZMM);
            let t = StateTile { kw, v, decay, vp, r0, c0: g0 * 16, l };
            match n {
                4 => t.run::<4>(s),
                3 => t.run::<3>(s),
                2 => t.run::<2>(s),
                _ => t.run::<1>(s),
            }
            g0 += n;
        }
    }
}

/// One `TILE_ROWS x (Z * 16)` register tile of the state update.
struct StateTile<'b> {
    kw: &'b [f32],
    v: &'b [f32],
    decay: f32,
    vp: usize,
    r0: usize,
    c0: usize,
    l: usize,
}

impl StateTile<'_> {
    /// Bounds: the caller asserted the lengths, `r0 + TILE_ROWS <= kp`, `c0 + Z * 16 <= vp`.
    #[target_feature(enable = "avx512f,avx2,fma")]
    fn run<const Z: usize>(&self, s: &mut [f32]) {
        let (vp, r0, c0) = (self.vp, self.r0, self.c0);
        let mut acc = [[_mm512_setzero_ps(); Z]; TILE_ROWS];
        let d = _mm512_set1_ps(self.decay);
        for (i, acc_i) in acc.iter_mut().enumerate() {
            for (z, x) in acc_i.iter_mut().enumerate() {
                // SAFETY: row r0 + i < kp, columns c0 + z * 16 + 16 <= vp: inside s.
                *x = _mm512_mul_ps(d, unsafe { _mm512_loadu_ps(s.as_ptr().add((r0 + i) * vp + c0 + z * 16)) });
            }
        }
        for j in 0..self.l {
            let mut vv = [_mm512_setzero_ps(); Z];
            for (z, x) in vv.iter_mut().enumerate() {
                // SAFETY: j < l <= 16, columns inside vp: inside v (16 x vp).
                *x = unsafe { _mm512_loadu_ps(self.v.as_ptr().add(j * vp + c0 + z * 16)) };
            }
            for (i, acc_i) in acc.iter_mut().enumerate() {
                // SAFETY: (r0 + i) * 16 + j < kp * 16 <= kw.len().
                let w = _mm512_set1_ps(unsafe { *self.kw.get_unchecked((r0 + i) * BLOCK + j) });
                for z in 0..Z {
                    acc_i[z] = _mm512_fmadd_ps(w, vv[z], acc_i[z]);
                }
            }
        }
        for (i, acc_i) in acc.iter().enumerate() {
            for (z, x) in acc_i.iter().enumerate() {
                // SAFETY: as for the loads above.
                unsafe { _mm512_storeu_ps(s.as_mut_ptr().add((r0 + i) * vp + c0 + z * 16), *x) };
            }
        }
    }
}

/// Stores the first `n <= 16` lanes of `x` at `dst`.
///
/// # Safety
/// `dst` must be valid for writes of `n` f32s (initialized or not).
#[inline]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn store_prefix_raw(dst: *mut f32, n: usize, x: __m512) {
    assert!(n <= 16);
    let mask = ((1u32 << n) - 1) as __mmask16;
    // SAFETY: the mask enables exactly `n` lanes, all valid for writes (caller
    // contract); masked-off lanes are neither read nor written.
    unsafe { _mm512_mask_storeu_ps(dst, mask, x) };
}

/// Stores the first `dst.len() <= 16` lanes of `x` into `dst`.
#[inline]
#[target_feature(enable = "avx512f,avx2,fma")]
fn store_prefix(dst: &mut [f32], x: __m512) {
    if let Ok(whole) = <&mut [f32; 16]>::try_from(&mut *dst) {
        // SAFETY: `whole` is 16 floats.
        unsafe { _mm512_storeu_ps(whole.as_mut_ptr(), x) };
        return;
    }
    assert!(dst.len() <= 16);
    let mask = ((1u32 << dst.len()) - 1) as __mmask16;
    // SAFETY: the mask enables exactly `dst.len()` lanes, all inside `dst`; masked-off
    // lanes are neither read nor written.
    unsafe { _mm512_mask_storeu_ps(dst.as_mut_ptr(), mask, x) };
}

/// `e^x` per lane with [`crate::vecops::exp_fast`]'s algorithm: `x = n ln2 + r`,
/// Cephes' degree-6 polynomial for `e^r`, `2^n` from exponent bits as two factors; 0
/// below `EXP_LO`, +inf above `EXP_HI`, NaN kept.
#[target_feature(enable = "avx512f,avx2,fma")]
fn exp512(x: __m512) -> __m512 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const ROUND: f32 = 12_582_912.0;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    const EXP_LO: f32 = -87.336_55;
    const EXP_HI: f32 = 88.722_83;
    let xc = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(EXP_LO)), _mm512_set1_ps(EXP_HI));
    let t = _mm512_fmadd_ps(xc, _mm512_set1_ps(LOG2E), _mm512_set1_ps(ROUND));
    let n = _mm512_sub_ps(t, _mm512_set1_ps(ROUND));
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_HI), xc);
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_LO), r);
    let mut p = _mm512_set1_ps(1.987_569_1e-4);
    for c in [1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 1.666_666_5e-1, 0.5] {
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
    }
    let y = _mm512_add_ps(_mm512_fmadd_ps(p, _mm512_mul_ps(r, r), r), _mm512_set1_ps(1.0));
    let ni = _mm512_sub_epi32(_mm512_castps_si512(t), _mm512_set1_epi32(ROUND.to_bits() as i32));
    let n1 = _mm512_srai_epi32::<1>(ni);
    let n2 = _mm512_sub_epi32(ni, n1);
    let bias = _mm512_set1_epi32(127);
    let s1 = _mm512_castsi512_ps(_mm512_slli_epi32::<23>(_mm512_add_epi32(n1, bias)));
    let s2 = _mm512_castsi512_ps(_mm512_slli_epi32::<23>(_mm512_add_epi32(n2, bias)));
    let e = _mm512_mul_ps(_mm512_mul_ps(y, s1), s2);
    let below = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(x, _mm512_set1_ps(EXP_LO));
    let above = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(x, _mm512_set1_ps(EXP_HI));
    let nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(x, x);
    let e = _mm512_mask_mov_ps(e, below, _mm512_setzero_ps());
    let e = _mm512_mask_mov_ps(e, above, _mm512_set1_ps(f32::INFINITY));
    _mm512_mask_mov_ps(e, nan, x)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The register transpose against index arithmetic.
    #[test]
    fn transpose16_transposes() {
        if !std::is_x86_feature_detected!("avx512f") {
            linattn_tensor::report_skip("transpose16_transposes: skipped, no AVX-512F on this CPU");
            return;
        }
        let m: Vec<f32> = (0..256).map(|i| i as f32).collect();
        let mut rows = [[0.0f32; 16]; 16];
        // SAFETY: AVX-512F checked above; every load and store covers 16 floats of an array.
        unsafe {
            let mut regs = [_mm512_setzero_ps(); 16];
            for (i, r) in regs.iter_mut().enumerate() {
                *r = _mm512_loadu_ps(m[i * 16..].as_ptr());
            }
            for (row, reg) in rows.iter_mut().zip(transpose16(regs)) {
                _mm512_storeu_ps(row.as_mut_ptr(), reg);
            }
        }
        for (j, row) in rows.iter().enumerate() {
            for (i, &x) in row.iter().enumerate() {
                assert_eq!(x, m[i * 16 + j], "out[{j}][{i}]");
            }
        }
    }

    /// `exp512` equals `exp_fast` lane by lane, including the range ends and NaN.
    #[test]
    fn exp512_matches_exp_fast() {
        if !std::is_x86_feature_detected!("avx512f") {
            linattn_tensor::report_skip("exp512_matches_exp_fast: skipped, no AVX-512F on this CPU");
            return;
        }
        let mut xs: Vec<f32> = (-2000..=2000).map(|i| i as f32 * 0.05).collect();
        xs.extend([-1e30, -87.4, -87.3, 88.7, 88.8, 1e30, f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 0.0, -0.0]);
        xs.resize(xs.len().div_ceil(16) * 16, 0.0);
        for chunk in xs.chunks_exact(16) {
            let mut got = [0.0f32; 16];
            // SAFETY: AVX-512F checked above; `chunk` and `got` hold 16 floats each.
            unsafe { _mm512_storeu_ps(got.as_mut_ptr(), exp512(_mm512_loadu_ps(chunk.as_ptr()))) };
            for (&x, &g) in chunk.iter().zip(&got) {
                // FMA here vs separate multiply and add in `exp_fast`: a few ulp apart.
                let want = crate::vecops::exp_fast(x);
                let close = (g - want).abs() <= 4.0 * f32::EPSILON * want.abs();
                assert!(close || g == want || (g.is_nan() && want.is_nan()), "exp({x}): {g} vs exp_fast {want}");
            }
        }
    }
}
