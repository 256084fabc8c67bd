// common/elements.wgsl: element encodings shared by every linattn WGSL kernel.
//
// Import it with the line `//#import common/elements.wgsl` (the runtime and
// `cargo xtask wgsl` paste this file in place of that line).
//
// Tensors are bound as `array<u32>` words so one shader serves f32, f16 and bf16 and
// needs no `enable f16;`:
//   - f32:  one element per word, `bitcast<f32>(word)`.
//   - f16:  two elements per word, element 2w in the low half, 2w+1 in the high half
//           (little-endian). Converted with integer bit operations, not
//           `unpack2x16float`/`pack2x16float`, which naga gates behind a downlevel
//           capability and whose rounding WGSL leaves to the implementation.
//   - bf16: two elements per word like f16; an element is the high 16 bits of an f32.
// The override `DTYPE` (0 = f32, 1 = f16, 2 = bf16) picks the encoding when the pipeline
// is created, so the branches below fold away.
//
// Writing 16-bit outputs: a word holds two elements, possibly written by different
// invocations. Kernels either write whole words (`encode_pair`) or bind the output as
// `array<atomic<u32>>` over a zero-filled buffer and `atomicOr` the element's bits
// (`encode_bits` shifted by `lane_shift`); f32 outputs use `atomicStore`.
//
// Rounding: f16 and bf16 are packed round-to-nearest-even (like the `half` crate), NaN
// stays a quiet NaN, f16 overflow gives infinity, f16 subnormals are exact.
//
// Functions: word_of, lane_shift, f16_to_f32, f16_bits, bf16_bits, decode, encode_bits,
// encode_pair, linear_workgroup.

override DTYPE: u32 = 0u;

const DTYPE_F32: u32 = 0u;
const DTYPE_F16: u32 = 1u;
const DTYPE_BF16: u32 = 2u;

// Index of the u32 word that holds element `i`.
fn word_of(i: u32) -> u32 {
    if DTYPE == DTYPE_F32 {
        return i;
    }
    return i >> 1u;
}

// Bit offset of element `i` inside its word (0 or 16 for 16-bit types, 0 for f32).
fn lane_shift(i: u32) -> u32 {
    if DTYPE == DTYPE_F32 {
        return 0u;
    }
    return (i & 1u) * 16u;
}

// The f32 value of the f16 bits `h` (low 16 bits).
fn f16_to_f32(h: u32) -> f32 {
    let sign = (h & 0x8000u) << 16u;
    let exponent = (h >> 10u) & 0x1fu;
    let mantissa = h & 0x3ffu;
    if exponent == 0u {
        // Zero or subnormal: mantissa * 2^-24, a normal f32.
        let magnitude = f32(mantissa) * 5.9604644775390625e-8;
        return bitcast<f32>(bitcast<u32>(magnitude) | sign);
    }
    if exponent == 31u {
        return bitcast<f32>(sign | 0x7f800000u | (mantissa << 13u));
    }
    return bitcast<f32>(sign | ((exponent + 112u) << 23u) | (mantissa << 13u));
}

// f16 bits (low 16 bits) of `v`, round-to-nearest-even.
fn f16_bits(v: f32) -> u32 {
    let bits = bitcast<u32>(v);
    let sign = (bits >> 16u) & 0x8000u;
    let magnitude = bits & 0x7fffffffu;
    if magnitude > 0x7f800000u {
        return sign | 0x7e00u;
    }
    if magnitude >= 0x477ff000u {
        // >= 65520 rounds to infinity.
        return sign | 0x7c00u;
    }
    if magnitude >= 0x38800000u {
        // Normal f16: rebias the exponent (127 -> 15) and round off 13 mantissa bits.
        let rounded = magnitude + 0xfffu + ((magnitude >> 13u) & 1u);
        return sign | ((rounded - 0x38000000u) >> 13u);
    }
    if magnitude < 0x33000000u {
        // Below 2^-25: rounds to zero.
        return sign;
    }
    // Subnormal f16: the value in units of 2^-24, rounded to nearest even.
    let exponent = magnitude >> 23u;
    let mantissa = (magnitude & 0x7fffffu) | 0x800000u;
    let shift = 126u - exponent;
    let half_unit = 1u << (shift - 1u);
    let remainder = mantissa & ((1u << shift) - 1u);
    var units = mantissa >> shift;
    if remainder > half_unit || (remainder == half_unit && (units & 1u) == 1u) {
        units += 1u;
    }
    return sign | units;
}

// Element `i` decoded from the word that holds it.
fn decode(word: u32, i: u32) -> f32 {
    if DTYPE == DTYPE_F16 {
        return f16_to_f32((word >> lane_shift(i)) & 0xffffu);
    }
    if DTYPE == DTYPE_BF16 {
        return bitcast<f32>(((word >> lane_shift(i)) & 0xffffu) << 16u);
    }
    return bitcast<f32>(word);
}

// bf16 bits (low 16 bits) of `v`, round-to-nearest-even.
fn bf16_bits(v: f32) -> u32 {
    let bits = bitcast<u32>(v);
    if (bits & 0x7fffffffu) > 0x7f800000u {
        return ((bits >> 16u) | 0x0040u) & 0xffffu;
    }
    let rounding = 0x7fffu + ((bits >> 16u) & 1u);
    return ((bits + rounding) >> 16u) & 0xffffu;
}

// The bits of `v` in DTYPE, in the low bits of the result (all 32 for f32).
fn encode_bits(v: f32) -> u32 {
    if DTYPE == DTYPE_F16 {
        return f16_bits(v);
    }
    if DTYPE == DTYPE_BF16 {
        return bf16_bits(v);
    }
    return bitcast<u32>(v);
}

// One word holding elements 2w (`lo`) and 2w+1 (`hi`) of a 16-bit dtype.
fn encode_pair(lo: f32, hi: f32) -> u32 {
    return encode_bits(lo) | (encode_bits(hi) << 16u);
}

// Linear index of a workgroup in a grid that the host split over x and y.
fn linear_workgroup(workgroup_id: vec3<u32>, num_workgroups: vec3<u32>) -> u32 {
    return workgroup_id.x + workgroup_id.y * num_workgroups.x;
}
