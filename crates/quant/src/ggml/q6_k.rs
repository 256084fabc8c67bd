//! ggml Q6_K: super-blocks of 256 elements in 210 bytes.
//!
//! Byte layout: `ql` (128 bytes, 0..128: low 4 bits), `qh` (64 bytes, 128..192: high 2
//! bits), `scales` (16 x i8, 192..208: one per 16 elements), `d` (f16, 208..210).
//! The super-block is two halves of 128 (`h` = 0, 1) using `ql[64h..64h+64]`,
//! `qh[32h..32h+32]`, `scales[8h..8h+8]`. For `l` in 0..32, with `is = l / 16`:
//! element `128h + l`      = `ql[l] & 15      | ((qh[l] >> 0) & 3) << 4`, scale `is`,
//! element `128h + l + 32` = `ql[l+32] & 15   | ((qh[l] >> 2) & 3) << 4`, scale `is + 2`,
//! element `128h + l + 64` = `ql[l] >> 4      | ((qh[l] >> 4) & 3) << 4`, scale `is + 4`,
//! element `128h + l + 96` = `ql[l+32] >> 4   | ((qh[l] >> 6) & 3) << 4`, scale `is + 6`,
//! each a 6-bit `q` with value `(d * scale) * (q - 32)`.
//!
//! Quantization follows ggml's `quantize_row_q6_K_ref`: per 16 elements an RMSE search
//! (`make_qx_quants`, weights `x^2`, 19 candidate scales), the 16 scales quantized to
//! i8 against the largest (`d = max_scale / -128`), then `q = clamp(round(x / (d*sc)),
//! -32, 31)`. Error bound: `|x - x'| <= |d*sc|/2` per element unless clamped at +31
//! (an element of the sign opposite to the group's largest one can exceed 31 steps,
//! since the fitted scale may be up to ~5% below `max/32`); the tests check
//! `max(|d*sc|, 0.1 * max|x| of the 16-group)` plus the f16 rounding of `d`.

use half::f16;

use super::nearest_int;

/// Elements per super-block.
pub const BLOCK_ELEMS: usize = 256;
/// Bytes per super-block.
pub const BLOCK_BYTES: usize = 210;

/// Values below this magnitude count as zero (ggml's `GROUP_MAX_EPS`).
const GROUP_MAX_EPS: f32 = 1e-15;

/// ggml's `make_qx_quants` with `rmse_type = 1` and no importance weights: returns
/// the scale and fills `levels` with `q + nmax` in `0..2*nmax`.
fn fit_symmetric_scale(x: &[f32], nmax: i32, levels: &mut [i8]) -> f32 {
    let mut max = 0.0f32;
    let mut amax = 0.0f32;
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax < GROUP_MAX_EPS {
        levels.iter_mut().for_each(|l| *l = 0);
        return 0.0;
    }
    let mut iscale = -(nmax as f32) / max;
    let (mut sumlx, mut suml2) = (0.0f32, 0.0f32);
    for (i, &v) in x.iter().enumerate() {
        let l = nearest_int(iscale * v).clamp(-nmax, nmax - 1);
        levels[i] = (l + nmax) as i8;
        let w = v * v;
        sumlx += w * v * l as f32;
        suml2 += w * l as f32 * l as f32;
    }
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for is in -9i32..=9 {
        if is == 0 {
            continue;
        }
        iscale = -(nmax as f32 + 0.1 * is as f32) / max;
        sumlx = 0.0;
        suml2 = 0.0;
        for &v in x {
            let l = nearest_int(iscale * v).clamp(-nmax, nmax - 1);
            let w = v * v;
            sumlx += w * v * l as f32;
            suml2 += w * l as f32 * l as f32;
        }
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            for (i, &v) in x.iter().enumerate() {
                let l = nearest_int(iscale * v).clamp(-nmax, nmax - 1);
                levels[i] = (l + nmax) as i8;
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

/// Quantizes 256 values into one 210-byte super-block.
pub fn quantize_block(x: &[f32], out: &mut [u8]) {
    debug_assert_eq!(x.len(), BLOCK_ELEMS);
    let mut levels = [0i8; BLOCK_ELEMS];
    let mut scales = [0.0f32; 16];
    let (mut max_scale, mut max_abs_scale) = (0.0f32, 0.0f32);
    for ib in 0..16 {
        let scale = fit_symmetric_scale(&x[16 * ib..16 * ib + 16], 32, &mut levels[16 * ib..16 * ib + 16]);
        scales[ib] = scale;
        if scale.abs() > max_abs_scale {
            max_abs_scale = scale.abs();
            max_scale = scale;
        }
    }
    out[..BLOCK_BYTES].iter_mut().for_each(|b| *b = 0);
    if max_abs_scale < GROUP_MAX_EPS {
        return;
    }
    let iscale = -128.0 / max_scale;
    let d16 = f16::from_f32(1.0 / iscale);
    out[208..210].copy_from_slice(&d16.to_le_bytes());
    for ib in 0..16 {
        out[192 + ib] = nearest_int(iscale * scales[ib]).min(127) as i8 as u8;
    }
    let d_all = d16.to_f32();
    for j in 0..16 {
        let d = d_all * (out[192 + j] as i8) as f32;
        if d == 0.0 {
            continue;
        }
        for i in 0..16 {
            let l = nearest_int(x[16 * j + i] / d).clamp(-32, 31);
            levels[16 * j + i] = (l + 32) as i8;
        }
    }
    for h in 0..2 {
        let lv = &levels[128 * h..128 * h + 128];
        for l in 0..32 {
            let q = |k: usize| lv[l + 32 * k] as u8;
            out[64 * h + l] = (q(0) & 0x0F) | ((q(2) & 0x0F) << 4);
            out[64 * h + l + 32] = (q(1) & 0x0F) | ((q(3) & 0x0F) << 4);
            out[128 + 32 * h + l] = (q(0) >> 4) | ((q(1) >> 4) << 2) | ((q(2) >> 4) << 4) | ((q(3) >> 4) << 6);
        }
    }
}

/// The four 6-bit values (minus 32) stored at position `l` of half `h`, in element
/// order `l, l+32, l+64, l+96`.
#[inline(always)]
pub fn unpack_quad(b: &[u8], h: usize, l: usize) -> [i32; 4] {
    let ql0 = b[64 * h + l];
    let ql1 = b[64 * h + l + 32];
    let qh = b[128 + 32 * h + l];
    [
        ((ql0 & 0x0F) | ((qh & 3) << 4)) as i32 - 32,
        ((ql1 & 0x0F) | (((qh >> 2) & 3) << 4)) as i32 - 32,
        ((ql0 >> 4) | (((qh >> 4) & 3) << 4)) as i32 - 32,
        ((ql1 >> 4) | (((qh >> 6) & 3) << 4)) as i32 - 32,
    ]
}

/// Dequantizes one super-block into 256 values.
pub fn dequantize_block(b: &[u8], out: &mut [f32]) {
    let d = f16::from_le_bytes([b[208], b[209]]).to_f32();
    for h in 0..2 {
        for l in 0..32 {
            let q = unpack_quad(b, h, l);
            let is = 8 * h + l / 16;
            for (k, &qk) in q.iter().enumerate() {
                let sc = (b[192 + is + 2 * k] as i8) as f32;
                out[128 * h + l + 32 * k] = d * sc * qk as f32;
            }
        }
    }
}

/// Scalar dot product of one super-block with 256 activations.
#[inline]
pub fn dot_block(b: &[u8], x: &[f32]) -> f32 {
    let d = f16::from_le_bytes([b[208], b[209]]).to_f32();
    let mut sums = [0.0f32; 16];
    for h in 0..2 {
        for l in 0..32 {
            let q = unpack_quad(b, h, l);
            let is = 8 * h + l / 16;
            for (k, &qk) in q.iter().enumerate() {
                sums[is + 2 * k] += qk as f32 * x[128 * h + l + 32 * k];
            }
        }
    }
    let mut total = 0.0f32;
    for (is, s) in sums.iter().enumerate() {
        total += d * (b[192 + is] as i8) as f32 * s;
    }
    total
}
