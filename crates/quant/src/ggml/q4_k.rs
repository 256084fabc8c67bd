//! ggml Q4_K: super-blocks of 256 elements in 144 bytes.
//!
//! Byte layout: `d` (f16, 0..2), `dmin` (f16, 2..4), 12 bytes of packed 6-bit scales
//! and mins for 8 sub-blocks of 32 (4..16), 128 bytes `qs` (16..144). Sub-block `j`
//! has scale `sc_j` and min `m_j` (6 bits each): for `j < 4`, `sc_j = s[j] & 63`,
//! `m_j = s[j+4] & 63`; for `j >= 4`, `sc_j = (s[j+4] & 15) | (s[j-4] >> 6) << 4`,
//! `m_j = (s[j+4] >> 4) | (s[j] >> 6) << 4`. Byte `l` of the `p`-th 32-byte group of
//! `qs` (p = 0..4) holds element `64p + l` (sub-block 2p) in its low nibble and element
//! `64p + 32 + l` (sub-block 2p+1) in its high nibble. Element value is
//! `d*sc_j * q - dmin*m_j` (f32, products formed in this order).
//!
//! Quantization follows ggml's `quantize_row_q4_K_ref` (no importance matrix): per
//! sub-block a weighted least-squares search over 21 candidate scales (weights
//! `sqrt(mean(x^2)) + |x|`), then the 8 scales and mins are quantized to 6 bits
//! against the super-block maxima and the nibbles recomputed with the final scales.
//! Error bound: `|x - x'| <= d*sc_j/2 + dmin*m_j`-rounding, in practice
//! `<= (max_j d*sc_j) * 0.5 + 2^-10 * max|x|` per element when `x` lies inside
//! `[-dmin*m_j, -dmin*m_j + 15*d*sc_j]`; the tests check a bound of one step
//! `d*sc_j` per element plus the f16 rounding of `d` and `dmin`.

use half::f16;

use super::nearest_int;

/// Elements per super-block.
pub const BLOCK_ELEMS: usize = 256;
/// Bytes per super-block.
pub const BLOCK_BYTES: usize = 144;

/// 6-bit scale and min of sub-block `j` (0..8) from the 12 packed bytes.
#[inline(always)]
pub fn scale_min(j: usize, s: &[u8]) -> (u8, u8) {
    if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        ((s[j + 4] & 0x0F) | ((s[j - 4] >> 6) << 4), (s[j + 4] >> 4) | ((s[j] >> 6) << 4))
    }
}

/// ggml's weighted min/scale search for one sub-block (`make_qkx2_quants`): returns
/// `(scale, -min)` and fills `levels` with values in `0..=nmax`.
#[allow(clippy::too_many_arguments)]
fn fit_scale_min(
    x: &[f32],
    weights: &[f32],
    nmax: i32,
    levels: &mut [u8],
    rmin: f32,
    rdelta: f32,
    nstep: i32,
) -> (f32, f32) {
    let n = x.len();
    let mut min = x[0];
    let mut max = x[0];
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..n {
        if x[i] < min {
            min = x[i];
        }
        if x[i] > max {
            max = x[i];
        }
        let w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        levels.iter_mut().for_each(|l| *l = 0);
        return (0.0, -min);
    }
    let mut iscale = nmax as f32 / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_error = 0.0f32;
    for i in 0..n {
        let l = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
        levels[i] = l as u8;
        let diff = scale * l as f32 + min - x[i];
        best_error += weights[i] * (diff * diff);
    }
    let mut trial = [0u8; 32];
    for step in 0..=nstep {
        iscale = (rmin + rdelta * step as f32 + nmax as f32) / (max - min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0.0f32, 0.0f32, 0.0f32);
        for i in 0..n {
            let l = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
            trial[i] = l as u8;
            let w = weights[i];
            let lf = l as f32;
            sum_l += w * lf;
            sum_l2 += w * lf * lf;
            sum_xl += w * lf * x[i];
        }
        let det = sum_w * sum_l2 - sum_l * sum_l;
        if det > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut cur_error = 0.0f32;
            for i in 0..n {
                let diff = this_scale * trial[i] as f32 + this_min - x[i];
                cur_error += weights[i] * (diff * diff);
            }
            if cur_error < best_error {
                levels[..n].copy_from_slice(&trial[..n]);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// Quantizes 256 values into one 144-byte super-block.
pub fn quantize_block(x: &[f32], out: &mut [u8]) {
    debug_assert_eq!(x.len(), BLOCK_ELEMS);
    let mut levels = [0u8; BLOCK_ELEMS];
    let mut scales = [0.0f32; 8];
    let mut mins = [0.0f32; 8];
    let mut weights = [0.0f32; 32];
    let (mut max_scale, mut max_min) = (0.0f32, 0.0f32);
    for j in 0..8 {
        let xs = &x[32 * j..32 * j + 32];
        let sum_x2 = xs.iter().fold(0.0f32, |s, &v| s + v * v);
        let av_x = (sum_x2 / 32.0).sqrt();
        for (w, &v) in weights.iter_mut().zip(xs) {
            *w = av_x + v.abs();
        }
        let (scale, min) = fit_scale_min(xs, &weights, 15, &mut levels[32 * j..32 * j + 32], -1.0, 0.1, 20);
        scales[j] = scale;
        mins[j] = min;
        if scale > max_scale {
            max_scale = scale;
        }
        if min > max_min {
            max_min = min;
        }
    }
    let inv_scale = if max_scale > 0.0 { 63.0 / max_scale } else { 0.0 };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let s = &mut out[4..16];
    s.iter_mut().for_each(|b| *b = 0);
    for j in 0..8 {
        let ls = (nearest_int(inv_scale * scales[j]) as u8).min(63);
        let lm = (nearest_int(inv_min * mins[j]) as u8).min(63);
        if j < 4 {
            s[j] = ls;
            s[j + 4] = lm;
        } else {
            s[j + 4] = (ls & 0x0F) | ((lm & 0x0F) << 4);
            s[j - 4] |= (ls >> 4) << 6;
            s[j] |= (lm >> 4) << 6;
        }
    }
    let d16 = f16::from_f32(max_scale / 63.0);
    let dmin16 = f16::from_f32(max_min / 63.0);
    out[0..2].copy_from_slice(&d16.to_le_bytes());
    out[2..4].copy_from_slice(&dmin16.to_le_bytes());
    let (d_all, dmin_all) = (d16.to_f32(), dmin16.to_f32());
    for j in 0..8 {
        let (sc, m) = scale_min(j, &out[4..16]);
        let d = d_all * sc as f32;
        if d == 0.0 {
            continue;
        }
        let dm = dmin_all * m as f32;
        for i in 0..32 {
            levels[32 * j + i] = nearest_int((x[32 * j + i] + dm) / d).clamp(0, 15) as u8;
        }
    }
    let qs = &mut out[16..BLOCK_BYTES];
    for p in 0..4 {
        for l in 0..32 {
            qs[32 * p + l] = levels[64 * p + l] | (levels[64 * p + 32 + l] << 4);
        }
    }
}

/// Per-sub-block `(d*sc_j, dmin*m_j)` of a super-block.
#[inline(always)]
pub fn sub_block_scales(b: &[u8]) -> [(f32, f32); 8] {
    let d = f16::from_le_bytes([b[0], b[1]]).to_f32();
    let dmin = f16::from_le_bytes([b[2], b[3]]).to_f32();
    let mut r = [(0.0, 0.0); 8];
    for (j, slot) in r.iter_mut().enumerate() {
        let (sc, m) = scale_min(j, &b[4..16]);
        *slot = (d * sc as f32, dmin * m as f32);
    }
    r
}

/// Dequantizes one super-block into 256 values.
pub fn dequantize_block(b: &[u8], out: &mut [f32]) {
    let sm = sub_block_scales(b);
    let qs = &b[16..BLOCK_BYTES];
    for p in 0..4 {
        let (d1, m1) = sm[2 * p];
        let (d2, m2) = sm[2 * p + 1];
        for l in 0..32 {
            let q = qs[32 * p + l];
            out[64 * p + l] = d1 * (q & 0x0F) as f32 - m1;
            out[64 * p + 32 + l] = d2 * (q >> 4) as f32 - m2;
        }
    }
}

/// Scalar dot product of one super-block with 256 activations.
#[inline]
pub fn dot_block(b: &[u8], x: &[f32]) -> f32 {
    let sm = sub_block_scales(b);
    let qs = &b[16..BLOCK_BYTES];
    let mut total = 0.0f32;
    for p in 0..4 {
        let (mut s1, mut s2, mut x1, mut x2) = (0.0f32, 0.0f32, 0.0f32, 0.0f32);
        for l in 0..32 {
            let q = qs[32 * p + l];
            let xa = x[64 * p + l];
            let xb = x[64 * p + 32 + l];
            s1 += (q & 0x0F) as f32 * xa;
            s2 += (q >> 4) as f32 * xb;
            x1 += xa;
            x2 += xb;
        }
        let (d1, m1) = sm[2 * p];
        let (d2, m2) = sm[2 * p + 1];
        total += d1 * s1 - m1 * x1 + d2 * s2 - m2 * x2;
    }
    total
}
