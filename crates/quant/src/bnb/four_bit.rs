//! bitsandbytes blockwise 4-bit weights: NF4 and FP4.
//!
//! Layout: the tensor is flattened row-major to `n` elements and cut into blocks of
//! `blocksize` (64 default; 32..4096, powers of two; the last block may be partial).
//! `packed` holds `ceil(n/2)` bytes: element `2j` in the HIGH nibble of byte `j`,
//! element `2j+1` in the low nibble (a final odd element is paired with index of 0.0).
//! Each nibble indexes a 16-entry f32 code table (`weight.quant_map` in the file).
//! Value = `code[nibble] * absmax[element / blocksize]` (f32).
//!
//! Absmax is either f32 per block, or double-quantized (`compress_statistics`):
//! `offset = mean(absmax)`, `absmax - offset` quantized with the 8-bit dynamic map in
//! blocks of 256 ([`super::blockwise8`]); resolved as
//! `nested_code[q] * nested_absmax[i / 256] + offset` (f32).
//!
//! Quantization (bitsandbytes' CPU path): `absmax = max|x|` per block,
//! `s = clamp(x * (1 / max(absmax, 1e-38)), -1, 1)`, and the nibble is the code entry
//! whose bucket between sorted-code midpoints holds `s` (a value on a midpoint goes to
//! the lower entry). Error bound: half the widest gap between neighbouring code
//! entries times absmax: NF4 0.1519 * absmax (the gap 0.6962..1.0), FP4 0.1667 *
//! absmax (0.6667..1.0); with double quantization add the absmax error
//! (half a dynamic-map step of `max|absmax - offset|`, relative <= ~3.3% at the top).

use linattn_tensor::{Error, Result, Shape};

use super::blockwise8;
use crate::bytes::ByteView;

/// NF4 code: quantiles of N(0, 1) normalized to [-1, 1] (QLoRA), as bitsandbytes
/// stores them in f32.
pub const NF4_CODE: [f32; 16] = [
    -1.0,
    -0.696_192_8,
    -0.525_073_05,
    -0.394_917_5,
    -0.284_441_38,
    -0.184_773_43,
    -0.091_050_036,
    0.0,
    0.079_580_3,
    0.160_930_2,
    0.246_112_3,
    0.337_915_24,
    0.440_709_83,
    0.562_617,
    0.722_956_84,
    1.0,
];

/// FP4 (1 sign, 2 exponent, 1 mantissa bits, bitsandbytes bias) in bit-pattern
/// order, before normalization by 12.
const FP4_RAW: [f32; 16] =
    [0.0, 0.0625, 8.0, 12.0, 4.0, 6.0, 2.0, 3.0, -0.0, -0.0625, -8.0, -12.0, -4.0, -6.0, -2.0, -3.0];

/// The two 4-bit data types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FourBitKind {
    Nf4,
    Fp4,
}

impl FourBitKind {
    /// `"nf4"` or `"fp4"` (the `quant_type` in the JSON state).
    pub const fn name(self) -> &'static str {
        match self {
            FourBitKind::Nf4 => "nf4",
            FourBitKind::Fp4 => "fp4",
        }
    }

    /// Parses `nf4` / `fp4`.
    pub fn parse(s: &str) -> Result<FourBitKind> {
        match s {
            "nf4" => Ok(FourBitKind::Nf4),
            "fp4" => Ok(FourBitKind::Fp4),
            _ => Err(Error::invalid(format!("bitsandbytes quant_type `{s}`: expected nf4 or fp4"))),
        }
    }

    /// The default code table, as bitsandbytes builds it (f32).
    pub fn default_code(self) -> [f32; 16] {
        match self {
            FourBitKind::Nf4 => NF4_CODE,
            FourBitKind::Fp4 => FP4_RAW.map(|v| v / 12.0),
        }
    }
}

crate::cpu::simd_versions! {
    /// `out[i] = table[codes[i]] * scale + offset`: one nested block's absmax.
    fn decode_nested(codes: &[u8], table: &[f32; 256], scale: f32, offset: f32, out: &mut [f32])
        => decode_nested_body
}

#[inline(always)]
fn decode_nested_body(codes: &[u8], table: &[f32; 256], scale: f32, offset: f32, out: &mut [f32]) {
    for (o, &q) in out.iter_mut().zip(codes) {
        *o = table[q as usize] * scale + offset;
    }
}

/// Double-quantized absmax state.
#[derive(Clone, Debug)]
pub struct NestedAbsmax {
    /// 8-bit indices, one per 4-bit block (`weight.absmax`, U8).
    pub quantized: Vec<u8>,
    /// f32 absmax per nested block (`weight.nested_absmax`).
    pub absmax: Vec<f32>,
    /// 256-entry code (`weight.nested_quant_map`).
    pub code: Vec<f32>,
    /// Nested block size (256 in bitsandbytes).
    pub blocksize: usize,
    /// Mean subtracted before nested quantization (`nested_offset` in the JSON).
    pub offset: f32,
}

/// Per-block scales of a 4-bit weight.
#[derive(Clone, Debug)]
pub enum Absmax {
    F32(Vec<f32>),
    Nested(NestedAbsmax),
}

/// A bitsandbytes NF4/FP4 weight with its quant state.
#[derive(Clone, Debug)]
pub struct FourBitWeight {
    pub kind: FourBitKind,
    /// Logical shape (`shape` in the JSON state), `[out, in]` for a linear layer.
    pub shape: Shape,
    pub blocksize: usize,
    /// `ceil(numel / 2)` packed bytes.
    pub packed: ByteView,
    /// The 16-entry code table used to decode.
    pub code: [f32; 16],
    pub absmax: Absmax,
    /// The torch dtype name of the original weight (`dtype` in the JSON), e.g. `bfloat16`.
    pub torch_dtype: String,
}

fn check_blocksize(blocksize: usize) -> Result<()> {
    if !(32..=4096).contains(&blocksize) || !blocksize.is_power_of_two() {
        return Err(Error::invalid(format!(
            "bitsandbytes 4-bit blocksize {blocksize}: expected a power of two in 32..=4096"
        )));
    }
    Ok(())
}

impl FourBitWeight {
    /// Quantizes row-major `values` of `shape` like bitsandbytes' `quantize_4bit` on CPU,
    /// optionally double-quantizing the absmax (`compress_statistics=True`).
    pub fn quantize(
        values: &[f32],
        shape: impl Into<Shape>,
        kind: FourBitKind,
        blocksize: usize,
        double_quant: bool,
    ) -> Result<FourBitWeight> {
        let shape = shape.into();
        check_blocksize(blocksize)?;
        if shape.checked_numel()? != values.len() {
            return Err(Error::invalid(format!("4-bit quantize: {} values do not fill shape {shape}", values.len())));
        }
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            return Err(Error::NonFinite { op: "quantize_4bit", tensor: "input".into(), index: i, value: values[i] });
        }
        let code = kind.default_code();
        // Stable argsort of the code and the midpoints between sorted neighbours.
        let mut order: Vec<usize> = (0..16).collect();
        order.sort_by(|&a, &b| code[a].partial_cmp(&code[b]).unwrap_or(std::cmp::Ordering::Equal));
        let bounds: Vec<f32> = order.windows(2).map(|w| (code[w[0]] + code[w[1]]) / 2.0).collect();
        let nibble = |s: f32| -> u8 { order[bounds.partition_point(|&b| b < s)] as u8 };
        let mut absmax = Vec::with_capacity(values.len().div_ceil(blocksize));
        let mut nibbles = Vec::with_capacity(values.len() + 1);
        for block in values.chunks(blocksize) {
            let am = block.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            absmax.push(am);
            let inv = 1.0 / am.max(1e-38);
            nibbles.extend(block.iter().map(|&v| nibble((v * inv).clamp(-1.0, 1.0))));
        }
        if nibbles.len() % 2 == 1 {
            nibbles.push(nibble(0.0));
        }
        let mut packed = crate::bytes::WeightBuffer::zeroed(nibbles.len() / 2);
        for (byte, pair) in packed.as_mut_slice().iter_mut().zip(nibbles.chunks(2)) {
            *byte = (pair[0] << 4) | pair[1];
        }
        let absmax = if double_quant {
            let offset = (absmax.iter().map(|&v| v as f64).sum::<f64>() / absmax.len().max(1) as f64) as f32;
            let centered: Vec<f32> = absmax.iter().map(|&v| v - offset).collect();
            let code8 = blockwise8::dynamic_map();
            let (quantized, nested) = blockwise8::quantize(&centered, &code8, 256)?;
            Absmax::Nested(NestedAbsmax { quantized, absmax: nested, code: code8, blocksize: 256, offset })
        } else {
            Absmax::F32(absmax)
        };
        let w = FourBitWeight {
            kind,
            shape,
            blocksize,
            packed: packed.into_view(),
            code,
            absmax,
            torch_dtype: "float32".into(),
        };
        w.validate()?;
        Ok(w)
    }

    /// Number of logical elements.
    pub fn numel(&self) -> usize {
        self.shape.numel()
    }

    /// Number of 4-bit blocks.
    pub fn n_blocks(&self) -> usize {
        self.numel().div_ceil(self.blocksize)
    }

    /// Checks that every part agrees with the shape and blocksize.
    pub fn validate(&self) -> Result<()> {
        check_blocksize(self.blocksize)?;
        let n = self.shape.checked_numel()?;
        if self.packed.len() != n.div_ceil(2) {
            return Err(Error::invalid(format!(
                "{} weight of shape {}: packed data holds {} bytes, expected {}",
                self.kind.name(),
                self.shape,
                self.packed.len(),
                n.div_ceil(2)
            )));
        }
        let blocks = self.n_blocks();
        match &self.absmax {
            Absmax::F32(a) if a.len() != blocks => {
                return Err(Error::invalid(format!(
                    "absmax holds {} values, expected {blocks} blocks of {}",
                    a.len(),
                    self.blocksize
                )));
            }
            Absmax::Nested(nst) => {
                if nst.quantized.len() != blocks {
                    return Err(Error::invalid(format!(
                        "absmax holds {} values, expected {blocks}",
                        nst.quantized.len()
                    )));
                }
                if nst.blocksize == 0 || nst.absmax.len() != blocks.div_ceil(nst.blocksize) || nst.code.len() != 256 {
                    return Err(Error::invalid(format!(
                        "nested absmax: {} values for {blocks} blocks of nested blocksize {}, code of {} entries (expected {} and 256)",
                        nst.absmax.len(),
                        nst.blocksize,
                        nst.code.len(),
                        blocks.div_ceil(nst.blocksize.max(1))
                    )));
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// The absmax of every block as f32 (resolving double quantization).
    pub fn absmax_f32(&self) -> Vec<f32> {
        match &self.absmax {
            Absmax::F32(a) => a.clone(),
            Absmax::Nested(n) => n
                .quantized
                .iter()
                .enumerate()
                .map(|(i, &q)| n.code[q as usize] * n.absmax[i / n.blocksize] + n.offset)
                .collect(),
        }
    }

    /// The absmax of every block, borrowed when stored as f32.
    pub fn absmax_cow(&self) -> std::borrow::Cow<'_, [f32]> {
        match &self.absmax {
            Absmax::F32(a) => std::borrow::Cow::Borrowed(a),
            Absmax::Nested(_) => std::borrow::Cow::Owned(self.absmax_f32()),
        }
    }

    /// The absmax of blocks `start..start + n`: borrowed when stored as f32, decoded into
    /// `buf` (resized to `n`) when double-quantized, with the same f32 operations as
    /// [`Self::absmax_f32`]. Lets a matvec resolve the scales of one row at a time in
    /// its worker instead of decoding all of them per call.
    pub fn absmax_range<'s>(&'s self, start: usize, n: usize, buf: &'s mut Vec<f32>) -> &'s [f32] {
        match &self.absmax {
            Absmax::F32(a) => &a[start..start + n],
            Absmax::Nested(nested) => {
                buf.clear();
                buf.resize(n, 0.0);
                // A 256-entry table indexed by u8 needs no bounds checks (and vectorizes
                // as gathers); `validate` guarantees the 256 entries.
                let table: &[f32; 256] =
                    nested.code.as_slice().try_into().expect("nested code table of 256 entries (validated)");
                // Nested block by nested block: no division per scale.
                let mut at = start;
                while at < start + n {
                    let block = at / nested.blocksize;
                    let end = ((block + 1) * nested.blocksize).min(start + n);
                    let out = &mut buf[at - start..end - start];
                    decode_nested(&nested.quantized[at..end], table, nested.absmax[block], nested.offset, out);
                    at = end;
                }
                buf
            }
        }
    }

    /// Decodes elements `start..start + out.len()` (flat index) given resolved absmax:
    /// `code[nibble] * absmax[block]`, block by block and byte by byte (element `2j` is
    /// the high nibble of byte `j`). A division per element made this the bottleneck of
    /// the f32 NF4 prefill (about 1 G values/s on a Zen 4 core).
    pub fn decode_range(&self, absmax: &[f32], start: usize, out: &mut [f32]) {
        let (packed, code, bs) = (self.packed.as_slice(), &self.code, self.blocksize);
        let end = start + out.len();
        let mut at = start;
        while at < end {
            let block = at / bs;
            let block_end = ((block + 1) * bs).min(end);
            let scale = absmax[block];
            let mut seg = &mut out[at - start..block_end - start];
            let mut e = at;
            if !e.is_multiple_of(2) {
                // A low nibble first: the range starts between the two halves of a byte.
                seg[0] = code[(packed[e / 2] & 0x0F) as usize] * scale;
                seg = &mut seg[1..];
                e += 1;
            }
            let pairs = seg.len() / 2;
            let (whole, rest) = seg.split_at_mut(2 * pairs);
            for (pair, &byte) in whole.chunks_exact_mut(2).zip(&packed[e / 2..e / 2 + pairs]) {
                pair[0] = code[(byte >> 4) as usize] * scale;
                pair[1] = code[(byte & 0x0F) as usize] * scale;
            }
            if let Some(last) = rest.first_mut() {
                *last = code[(packed[e / 2 + pairs] >> 4) as usize] * scale;
            }
            at = block_end;
        }
    }

    /// Dequantizes the whole weight to f32 (row-major, `shape`).
    pub fn dequantize_f32(&self) -> Result<Vec<f32>> {
        self.validate()?;
        let absmax = self.absmax_f32();
        let mut out = vec![0.0f32; self.numel()];
        self.decode_range(&absmax, 0, &mut out);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The block-by-block decode equals the element-by-element definition bit for bit,
    /// for ranges that start and end on odd elements and inside blocks.
    #[test]
    fn decode_range_equals_the_per_element_definition() {
        let values: Vec<f32> = (0..12 * 96).map(|i| ((i * 7919 % 1013) as f32 - 506.0) * (1 + i % 5) as f32).collect();
        for (kind, bs, dq) in [(FourBitKind::Nf4, 32, false), (FourBitKind::Fp4, 64, true)] {
            let w = FourBitWeight::quantize(&values, [12, 96], kind, bs, dq).unwrap();
            let absmax = w.absmax_f32();
            let packed = w.packed.as_slice();
            let naive = |e: usize| {
                let nibble = if e.is_multiple_of(2) { packed[e / 2] >> 4 } else { packed[e / 2] & 0x0F };
                w.code[nibble as usize] * absmax[e / bs]
            };
            for (start, n) in [(0, 1152), (1, 1), (1, 2), (3, 64), (31, 3), (32, 33), (63, 130), (1151, 1), (5, 0)] {
                let mut out = vec![f32::NAN; n];
                w.decode_range(&absmax, start, &mut out);
                for (i, v) in out.iter().enumerate() {
                    assert_eq!(v.to_bits(), naive(start + i).to_bits(), "{kind:?} bs {bs} range {start}+{n} at {i}");
                }
            }
        }
    }

    /// The per-row decode the matvec workers use equals the whole-weight decode, bit for
    /// bit, for ranges that start and end inside nested blocks.
    #[test]
    fn absmax_ranges_equal_the_full_decode() {
        let values: Vec<f32> = (0..40 * 640).map(|i| ((i * 7919 % 1013) as f32 - 506.0) * (1 + i % 7) as f32).collect();
        let w = FourBitWeight::quantize(&values, [40, 640], FourBitKind::Nf4, 64, true).unwrap();
        let full = w.absmax_f32();
        assert_eq!(full.len(), 400);
        let mut buf = Vec::new();
        for (start, n) in [(0, 400), (10, 10), (250, 7), (255, 2), (256, 144), (3, 397), (399, 1)] {
            let range = w.absmax_range(start, n, &mut buf);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(range), bits(&full[start..start + n]), "range {start}+{n}");
        }
    }
}
