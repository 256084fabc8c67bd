//! AVX-512 VBMI decode of double-quantized bitsandbytes absmax (x86_64), used by the
//! NF4/FP4 q8 matvec on [`super::CpuKernel::Avx512`] for each row's block scales.
//!
//! A scale is `code[q] * nested_absmax + offset` with `code` a 256-entry f32 table and
//! `q` a byte. Gathers cost about 100 cycles per 64 scales on Zen 4 (a quarter of a 4096-
//! column NF4 row's time). Instead the table is split once per matvec into four
//! 256-byte planes (byte `k` of every entry's bits, [`NestedPlanes`]), held in 16
//! registers: per 64 codes each plane is two `vpermi2b` lookups (entries 0..128 and
//! 128..256, bit 6 picks the register) and a blend on bit 7; four byte unpacks and four
//! word unpacks then join the planes into 64 f32 bit patterns. The unpacks work per
//! 128-bit lane, so the codes are first permuted (`vpermb`, [`CODE_ORDER`]) such that
//! the joined vectors come out in element order.
//!
//! Numerics: the entries are moved bit for bit, then multiplied and added in two
//! separately rounded steps, exactly like `FourBitWeight::absmax_f32` (tested bit for
//! bit). Requires avx512f, avx512bw and avx512vbmi (checked by `CpuKernel`).

use std::arch::x86_64::*;

use linattn_tensor::{Error, Result};

use crate::bnb::four_bit::NestedAbsmax;

/// Position `16L + 4m + t` of the permuted codes holds code `16m + 4L + t`: after the
/// byte and word unpacks (per 128-bit lane `L`), vector `m` holds codes `16m..16m+16` in
/// order.
const CODE_ORDER: [u8; 64] = {
    let mut order = [0u8; 64];
    let mut p = 0;
    while p < 64 {
        let (lane, m, t) = (p / 16, (p % 16) / 4, p % 4);
        order[p] = (16 * m + 4 * lane + t) as u8;
        p += 1;
    }
    order
};

/// The 256-entry table as four byte planes (`planes[256 k + i]` is byte `k`, little
/// endian, of entry `i`'s f32 bits), and as is for the codes past the last whole vector.
pub(crate) struct NestedPlanes {
    planes: [u8; 1024],
    table: [f32; 256],
}

impl NestedPlanes {
    /// The planes of `nested`'s table (`Err` unless it holds 256 entries, which
    /// `FourBitWeight::validate` guarantees).
    pub(crate) fn new(nested: &NestedAbsmax) -> Result<NestedPlanes> {
        let table: [f32; 256] = nested.code.as_slice().try_into().map_err(|_| {
            Error::invalid(format!(
                "4-bit matvec: nested absmax code holds {} entries, expected 256",
                nested.code.len()
            ))
        })?;
        let mut planes = [0u8; 1024];
        for (i, v) in table.iter().enumerate() {
            for (k, b) in v.to_bits().to_le_bytes().into_iter().enumerate() {
                planes[256 * k + i] = b;
            }
        }
        Ok(NestedPlanes { planes, table })
    }
}

/// The 64 f32 bit patterns `table[codes[i]]` of one 64-code vector, in order.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vbmi")]
fn lookup64(codes: __m512i, tables: &[__m512i; 16]) -> [__m512i; 4] {
    // SAFETY: `CODE_ORDER` is 64 bytes; unaligned load is allowed.
    let order = unsafe { _mm512_loadu_si512(CODE_ORDER.as_ptr() as *const _) };
    let codes = _mm512_permutexvar_epi8(order, codes);
    let high_half = _mm512_movepi8_mask(codes);
    let plane = |k: usize| {
        let low = _mm512_permutex2var_epi8(tables[4 * k], codes, tables[4 * k + 1]);
        let high = _mm512_permutex2var_epi8(tables[4 * k + 2], codes, tables[4 * k + 3]);
        _mm512_mask_blend_epi8(high_half, low, high)
    };
    let (b0, b1, b2, b3) = (plane(0), plane(1), plane(2), plane(3));
    let (w01_lo, w01_hi) = (_mm512_unpacklo_epi8(b0, b1), _mm512_unpackhi_epi8(b0, b1));
    let (w23_lo, w23_hi) = (_mm512_unpacklo_epi8(b2, b3), _mm512_unpackhi_epi8(b2, b3));
    [
        _mm512_unpacklo_epi16(w01_lo, w23_lo),
        _mm512_unpackhi_epi16(w01_lo, w23_lo),
        _mm512_unpacklo_epi16(w01_hi, w23_hi),
        _mm512_unpackhi_epi16(w01_hi, w23_hi),
    ]
}

/// Writes the absmax of blocks `start..start + out.len()` into `out` (`planes` made from
/// `nested`).
#[target_feature(enable = "avx512f,avx512bw,avx512vbmi")]
pub(crate) fn decode_range(nested: &NestedAbsmax, planes: &NestedPlanes, start: usize, out: &mut [f32]) {
    // SAFETY: `planes` is 1024 bytes, read as 16 vectors of 64; unaligned loads are allowed.
    let tables: [__m512i; 16] =
        std::array::from_fn(|j| unsafe { _mm512_loadu_si512(planes.planes[64 * j..].as_ptr() as *const _) });
    let end = start + out.len();
    let mut at = start;
    while at < end {
        let block = at / nested.blocksize;
        let stop = ((block + 1) * nested.blocksize).min(end);
        let (scale, offset) = (nested.absmax[block], nested.offset);
        let codes = &nested.quantized[at..stop];
        let dst = &mut out[at - start..stop - start];
        let mut code_chunks = codes.chunks_exact(64);
        let mut dst_chunks = dst.chunks_exact_mut(64);
        for (c, d) in (&mut code_chunks).zip(&mut dst_chunks) {
            // SAFETY: `c` is 64 bytes; unaligned load is allowed.
            let bits = lookup64(unsafe { _mm512_loadu_si512(c.as_ptr() as *const _) }, &tables);
            for (m, v) in bits.into_iter().enumerate() {
                let value =
                    _mm512_add_ps(_mm512_mul_ps(_mm512_castsi512_ps(v), _mm512_set1_ps(scale)), _mm512_set1_ps(offset));
                // SAFETY: `d` is 64 f32, so `16m..16m+16` lies inside it.
                unsafe { _mm512_storeu_ps(d[16 * m..].as_mut_ptr(), value) };
            }
        }
        for (&q, d) in code_chunks.remainder().iter().zip(dst_chunks.into_remainder()) {
            *d = planes.table[q as usize] * scale + offset;
        }
        at = stop;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bnb::four_bit::{Absmax, FourBitKind, FourBitWeight};

    /// Bit for bit the whole-weight decode, for ranges inside and across nested blocks,
    /// whole vectors and remainders; every one of the 256 codes is used.
    #[test]
    fn planes_decode_equals_the_table_decode() {
        if !super::super::CpuKernel::Avx512.is_available() {
            linattn_tensor::report_skip("AVX-512 nested absmax test: this CPU has no AVX-512 VBMI");
            return;
        }
        let values: Vec<f32> =
            (0..48 * 1024).map(|i| ((i * 7919 % 2039) as f32 - 1019.0) * (1 + i % 13) as f32 * 0.37).collect();
        let mut w = FourBitWeight::quantize(&values, [48, 1024], FourBitKind::Nf4, 64, true).unwrap();
        let Absmax::Nested(nested) = &mut w.absmax else { panic!("double quantization gives nested absmax") };
        // Make every code appear, with a table holding distinct awkward values.
        for (i, q) in nested.quantized.iter_mut().enumerate() {
            *q = (i * 37 % 256) as u8;
        }
        for (i, c) in nested.code.iter_mut().enumerate() {
            *c = (i as f32 - 127.5) / 128.0 * (1.0 + i as f32 * 1e-3);
        }
        let full = w.absmax_f32();
        let Absmax::Nested(nested) = &w.absmax else { unreachable!() };
        let planes = NestedPlanes::new(nested).unwrap();
        for (start, n) in [(0, 768), (0, 64), (64, 64), (192, 128), (250, 70), (5, 3), (300, 200), (767, 1)] {
            let mut out = vec![f32::NAN; n];
            // SAFETY: AVX-512 (with VBMI) was detected above.
            unsafe { decode_range(nested, &planes, start, &mut out) };
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&out), bits(&full[start..start + n]), "range {start}+{n}");
        }
    }
}
