//! The register-tile products of one 16-token block of the tile kernel (layouts in the
//! parent module): the masked scores `A` (16 accumulators over K'p), the output rows
//! `O = diag(scale exp(b)) Q S + A V` in 4-row x 64-column tiles, and the state update
//! `S = exp(b_L) S + Ktw V` in the same tiles, which also spreads the prefetches of the
//! next block's rows. f32 FMA throughout; the outputs are probed for Inf/NaN as they
//! are stored (`x - x` is NaN exactly for non-finite `x`).

use std::arch::x86_64::*;

use super::exp::exp512;
use super::gather::{non_finite_lanes, store_prefix_raw};
use super::{BLOCK, TILE_ROWS, TILE_ZMM};
use crate::gated::matmul::MatMut;
use crate::gated::source::RowPrefetch;

/// One head's block operands (see the module header for the layouts). q row i is at
/// `q[i * q_stride..]` and v row j at `v[j * v_stride..]`: the zero-padded scratch copies
/// (`q_stride = K'p`, `v_stride = Vp`, q already scaled, `q_scale = 1`) or, for whole
/// blocks of raw rows with K and V multiples of 16 and no normalizer, the stored rows
/// themselves (strides `H K` and `H V`, `q_scale` the attention scale).
pub(super) struct BlockInputs<'b> {
    pub(super) q: &'b [f32],
    pub(super) q_stride: usize,
    pub(super) q_scale: f32,
    pub(super) kt: &'b [f32],
    pub(super) v: &'b [f32],
    pub(super) v_stride: usize,
    /// Block-local inclusive cumsum of the log-decays (zeros past `l`).
    pub(super) b: &'b [f32; BLOCK],
    pub(super) gated: bool,
    pub(super) kp: usize,
    pub(super) vp: usize,
    pub(super) vx: usize,
    pub(super) l: usize,
}

impl BlockInputs<'_> {
    /// Panics unless rows `0..16` of q (K'p wide) and v (Vp wide) lie inside their
    /// slices and the other operands have their layouts' lengths: the tile loops below
    /// index inside these bounds without further checks.
    fn check_bounds(&self) {
        let rows_fit = |data: &[f32], stride: usize, width: usize| data.len() >= (BLOCK - 1) * stride + width;
        assert!(rows_fit(self.q, self.q_stride, self.kp), "q rows of a block exceed their slice");
        assert!(rows_fit(self.v, self.v_stride, self.vp), "v rows of a block exceed their slice");
        assert!(self.kt.len() >= self.kp * BLOCK && self.vp.is_multiple_of(16) && self.vx <= self.vp);
        assert!(self.kp.is_multiple_of(TILE_ROWS) && self.l >= 1 && self.l <= BLOCK);
    }
}

/// One block of one head: scores into `a`, output rows into `o`, then the state update
/// of `s [K'p, Vp]` (using `ktw` as scratch). Returns whether every output value was
/// finite.
#[target_feature(enable = "avx512f,avx2,fma")]
pub(super) fn block(
    x: &BlockInputs,
    a: &mut [f32],
    ktw: &mut [f32],
    s: &mut [f32],
    o: &mut MatMut,
    prefetch: &RowPrefetch,
) -> bool {
    x.check_bounds();
    let (kt, b, gated, kp, l) = (x.kt, x.b, x.gated, x.kp, x.l);
    let bl = b[l - 1];
    // SAFETY: `b` is an array of 16 floats.
    let b_vec = unsafe { _mm512_loadu_ps(b.as_ptr()) };
    // scale * exp(b_i) for the inter-chunk term, exp(b_L - b_j) for the state update.
    let row_decay = if gated { exp512(b_vec) } else { _mm512_set1_ps(1.0) };
    let mut row_factor = [0.0f32; BLOCK];
    // SAFETY: the array holds 16 floats.
    unsafe { _mm512_storeu_ps(row_factor.as_mut_ptr(), _mm512_mul_ps(row_decay, _mm512_set1_ps(x.q_scale))) };
    scores(x, a);
    let finite = output_block(x, s, a, &row_factor, o);
    if gated {
        let key_decay = exp512(_mm512_sub_ps(_mm512_set1_ps(bl), b_vec));
        for r in 0..kp {
            let (src_row, dst_row) = (&kt[r * BLOCK..(r + 1) * BLOCK], &mut ktw[r * BLOCK..(r + 1) * BLOCK]);
            // SAFETY: both rows are slices of exactly 16 floats.
            unsafe {
                _mm512_storeu_ps(dst_row.as_mut_ptr(), _mm512_mul_ps(_mm512_loadu_ps(src_row.as_ptr()), key_decay))
            };
        }
        update_state(x, ktw, s, crate::vecops::exp_fast(bl), prefetch);
    } else {
        update_state(x, kt, s, 1.0, prefetch);
    }
    finite
}

/// `a [16, 16]`: `A_ij = q_scale (q_i . k_j) exp(b_i - b_j)` for `j <= i < l`, zero
/// elsewhere.
#[target_feature(enable = "avx512f,avx2,fma")]
fn scores(x: &BlockInputs, a: &mut [f32]) {
    let (q, qs, kt, kp, b, l) = (x.q, x.q_stride, x.kt, x.kp, x.b, x.l);
    assert!(a.len() >= BLOCK * BLOCK);
    let mut acc = [_mm512_setzero_ps(); BLOCK];
    for r in 0..kp {
        // SAFETY: r < kp, so the 16 floats at r * 16 lie inside `kt` (check_bounds).
        let kv = unsafe { _mm512_loadu_ps(kt.as_ptr().add(r * BLOCK)) };
        for (i, acc_i) in acc.iter_mut().enumerate() {
            // SAFETY: i < 16 and r < kp: inside q's 16 rows of K'p (check_bounds).
            let qi = unsafe { *q.get_unchecked(i * qs + r) };
            *acc_i = _mm512_fmadd_ps(_mm512_set1_ps(qi), kv, *acc_i);
        }
    }
    // SAFETY: `b` is an array of 16 floats.
    let b_vec = unsafe { _mm512_loadu_ps(b.as_ptr()) };
    let scale = _mm512_set1_ps(x.q_scale);
    for (i, acc_i) in acc.iter().enumerate() {
        // Lanes j <= i of row i, and only rows of real tokens.
        let mask: __mmask16 = if i < l { ((1u32 << (i + 1)) - 1) as __mmask16 } else { 0 };
        let factor = if x.gated {
            // The lanes above the diagonal (j > i) may overflow to +inf; the zero-masked
            // product discards them.
            _mm512_mul_ps(exp512(_mm512_sub_ps(_mm512_set1_ps(b[i]), b_vec)), scale)
        } else {
            scale
        };
        // SAFETY: row i of `a` is 16 floats inside `a` (asserted length).
        unsafe { _mm512_storeu_ps(a.as_mut_ptr().add(i * BLOCK), _mm512_maskz_mul_ps(mask, *acc_i, factor)) };
    }
}

/// Output rows of a block: `O_i = row_factor_i (q_i S) + sum_{j<=i} A_ij v_j`, written
/// to the first `vx` columns of `o`'s `l` rows. Returns whether they were all finite.
#[target_feature(enable = "avx512f,avx2,fma")]
fn output_block(x: &BlockInputs, s: &[f32], a: &[f32], row_factor: &[f32; BLOCK], o: &mut MatMut) -> bool {
    assert!(s.len() >= x.kp * x.vp && a.len() >= BLOCK * BLOCK);
    assert!(x.vx <= o.cols(), "{} output columns in a view of {}", x.vx, o.cols());
    let groups = x.vp / 16;
    let mut non_finite = 0u32;
    for r0 in (0..x.l).step_by(TILE_ROWS) {
        let mut g0 = 0;
        while g0 < groups {
            let n = (groups - g0).min(TILE_ZMM);
            let t = OutTile { x, s, a, row_factor, r0, c0: g0 * 16 };
            non_finite |= match n {
                4 => t.run::<4>(o),
                3 => t.run::<3>(o),
                2 => t.run::<2>(o),
                _ => t.run::<1>(o),
            };
            g0 += n;
        }
    }
    non_finite == 0
}

/// One `TILE_ROWS x (Z * 16)` register tile of the output product.
struct OutTile<'b> {
    x: &'b BlockInputs<'b>,
    s: &'b [f32],
    a: &'b [f32],
    row_factor: &'b [f32; BLOCK],
    r0: usize,
    c0: usize,
}

impl OutTile<'_> {
    /// Computes the tile and stores its rows `< l`, columns `< vx`, into `o`; returns
    /// the lanes that held Inf or NaN (zero when all were finite).
    /// Bounds: `check_bounds` and the asserts of `output_block`, `r0 + TILE_ROWS <= 16`
    /// and `c0 + Z * 16 <= vp`.
    #[target_feature(enable = "avx512f,avx2,fma")]
    fn run<const Z: usize>(&self, o: &mut MatMut) -> u32 {
        let x = self.x;
        let (kp, vp, r0, c0, qs, vs) = (x.kp, x.vp, self.r0, self.c0, x.q_stride, x.v_stride);
        debug_assert!(r0 + TILE_ROWS <= BLOCK && c0 + Z * 16 <= vp);
        let mut acc = [[_mm512_setzero_ps(); Z]; TILE_ROWS];
        // Inter-chunk: q_i S.
        for r in 0..kp {
            // SAFETY: r < kp and c0 + Z * 16 <= vp, so row r's columns c0.. lie in `s`.
            let srow = unsafe { self.s.as_ptr().add(r * vp + c0) };
            let mut sv = [_mm512_setzero_ps(); Z];
            for (z, v) in sv.iter_mut().enumerate() {
                // SAFETY: see above (z < Z).
                *v = unsafe { _mm512_loadu_ps(srow.add(z * 16)) };
            }
            for (i, acc_i) in acc.iter_mut().enumerate() {
                // SAFETY: r0 + i < 16 and r < kp: inside q's rows (check_bounds).
                let qi = _mm512_set1_ps(unsafe { *x.q.get_unchecked((r0 + i) * qs + r) });
                for z in 0..Z {
                    acc_i[z] = _mm512_fmadd_ps(qi, sv[z], acc_i[z]);
                }
            }
        }
        if x.gated || x.q_scale != 1.0 {
            for (i, acc_i) in acc.iter_mut().enumerate() {
                let d = _mm512_set1_ps(self.row_factor[r0 + i]);
                for v in acc_i.iter_mut() {
                    *v = _mm512_mul_ps(*v, d);
                }
            }
        }
        // Intra-chunk: sum_{j <= i} A_ij v_j (A is zero above the diagonal).
        let j_end = (r0 + TILE_ROWS).min(x.l);
        for j in 0..j_end {
            // SAFETY: j < 16 and c0 + Z * 16 <= vp: inside v's rows (check_bounds).
            let vrow = unsafe { x.v.as_ptr().add(j * vs + c0) };
            let mut vv = [_mm512_setzero_ps(); Z];
            for (z, v) in vv.iter_mut().enumerate() {
                // SAFETY: see above.
                *v = unsafe { _mm512_loadu_ps(vrow.add(z * 16)) };
            }
            for (i, acc_i) in acc.iter_mut().enumerate() {
                // SAFETY: (r0 + i) * 16 + j < 256 = a's asserted minimum length.
                let aij = _mm512_set1_ps(unsafe { *self.a.get_unchecked((r0 + i) * BLOCK + j) });
                for z in 0..Z {
                    acc_i[z] = _mm512_fmadd_ps(aij, vv[z], acc_i[z]);
                }
            }
        }
        // Inf/NaN probe: x - x is NaN exactly for non-finite x, and sums keep NaN.
        let mut probe = _mm512_setzero_ps();
        for (i, acc_i) in acc.iter().enumerate() {
            if r0 + i >= x.l {
                break;
            }
            // Through a raw pointer: the rows may be uninitialized memory (see
            // `run_heads`), so no reference to them is formed.
            let row = o.row_ptr(r0 + i);
            for (z, v) in acc_i.iter().enumerate() {
                let col = c0 + z * 16;
                if col >= x.vx {
                    break;
                }
                let n = (x.vx - col).min(16);
                let lanes = ((1u32 << n) - 1) as __mmask16;
                probe = _mm512_add_ps(probe, _mm512_maskz_sub_ps(lanes, *v, *v));
                // SAFETY: row r0 + i < l of the view holds `o.cols() >= vx` writable
                // elements (MatMut contract, asserted in `output_block`) and col < vx,
                // so the n lanes stored lie inside the row.
                unsafe { store_prefix_raw(row.add(col), n, *v) };
            }
        }
        non_finite_lanes(probe)
    }
}

/// `S = decay * S + Kw V` over the block's `l` tokens; `kw [K'p, 16]` lane j = token j.
/// Prefetches the next block's rows a few at a time, one share per row of tiles.
#[target_feature(enable = "avx512f,avx2,fma")]
fn update_state(x: &BlockInputs, kw: &[f32], s: &mut [f32], decay: f32, prefetch: &RowPrefetch) {
    let (kp, vp) = (x.kp, x.vp);
    assert!(kw.len() >= kp * BLOCK && s.len() >= kp * vp);
    let groups = vp / 16;
    let tiles = kp / TILE_ROWS;
    for (ti, r0) in (0..kp).step_by(TILE_ROWS).enumerate() {
        prefetch.fetch(ti * BLOCK / tiles..(ti + 1) * BLOCK / tiles);
        let mut g0 = 0;
        while g0 < groups {
            let n = (groups - g0).min(TILE_ZMM);
            let t = StateTile { x, kw, decay, r0, c0: g0 * 16 };
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
    x: &'b BlockInputs<'b>,
    kw: &'b [f32],
    decay: f32,
    r0: usize,
    c0: usize,
}

impl StateTile<'_> {
    /// Bounds: `check_bounds`, the asserts of `update_state`, `r0 + TILE_ROWS <= kp`,
    /// `c0 + Z * 16 <= vp`.
    #[target_feature(enable = "avx512f,avx2,fma")]
    fn run<const Z: usize>(&self, s: &mut [f32]) {
        let (vp, vs, r0, c0) = (self.x.vp, self.x.v_stride, self.r0, self.c0);
        let mut acc = [[_mm512_setzero_ps(); Z]; TILE_ROWS];
        let d = _mm512_set1_ps(self.decay);
        for (i, acc_i) in acc.iter_mut().enumerate() {
            for (z, v) in acc_i.iter_mut().enumerate() {
                // SAFETY: row r0 + i < kp, columns c0 + z * 16 + 16 <= vp: inside s.
                *v = _mm512_mul_ps(d, unsafe { _mm512_loadu_ps(s.as_ptr().add((r0 + i) * vp + c0 + z * 16)) });
            }
        }
        for j in 0..self.x.l {
            let mut vv = [_mm512_setzero_ps(); Z];
            for (z, v) in vv.iter_mut().enumerate() {
                // SAFETY: j < l <= 16, columns inside vp: inside v's rows (check_bounds).
                *v = unsafe { _mm512_loadu_ps(self.x.v.as_ptr().add(j * vs + c0 + z * 16)) };
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
            for (z, v) in acc_i.iter().enumerate() {
                // SAFETY: as for the loads above.
                unsafe { _mm512_storeu_ps(s.as_mut_ptr().add((r0 + i) * vp + c0 + z * 16), *v) };
            }
        }
    }
}
