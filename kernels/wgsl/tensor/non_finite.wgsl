// tensor/non_finite.wgsl: the first non-finite (NaN, +Inf, -Inf) element of a tensor.
//
// Entry points:
//   first_non_finite (workgroup 256): grid-stride over the tensor's u32 words. An
//     invocation tests the elements of its words in index order and, at the first
//     non-finite one, does atomicMin(found[2 * slot], flat index) and stops. The minimum
//     over all invocations is the first non-finite element of the tensor.
//   non_finite_value (workgroup 1, one workgroup): when found[2 * slot] holds an index,
//     writes that element widened to f32 bits into found[2 * slot + 1]. Dispatched after
//     first_non_finite in the same command buffer.
// Bindings: 0 src (read: the tensor as u32 words), 1 found (read_write, atomic u32 pairs
//   [index, value bits] per slot; the host initialises the index to 0xFFFFFFFF = none),
//   2 params (uniform: numel, words, slot).
// Override DTYPE (common/elements.wgsl): 0 f32, 1 f16, 2 bf16 (two elements per word).
// Test: integer tests on the stored bits (exponent all ones: f32 0x7f800000, f16 0x7c00,
//   bf16 0x7f80), never float compares, so the driver's NaN handling cannot matter.
//   Widening: f32 as stored, bf16 the high half of an f32, f16 Inf keeps its sign and a
//   NaN its sign and payload with the quiet bit set (as the `half` crate widens).
// Grid: min(ceil(words / 256), 4096) workgroups, split over x and y by the host; the
//   stride is the number of invocations dispatched. Indices are u32: numel < 2^32 - 1.

//#import common/elements.wgsl

struct Params {
    numel: u32,
    words: u32,
    slot: u32,
    _pad: u32,
}

@group(0) @binding(0) var<storage, read> src: array<u32>;
@group(0) @binding(1) var<storage, read_write> found: array<atomic<u32>>;
@group(0) @binding(2) var<uniform> params: Params;

const WORKGROUP: u32 = 256u;
const NOT_FOUND: u32 = 0xffffffffu;

// Exponent bits of one 16-bit element (low half of a word) for the current DTYPE.
fn half_exponent_mask() -> u32 {
    if DTYPE == DTYPE_F16 {
        return 0x7c00u;
    }
    return 0x7f80u;
}

// Flat index of the first non-finite element stored in word `w`, or NOT_FOUND.
fn first_non_finite_in_word(word: u32, w: u32) -> u32 {
    if DTYPE == DTYPE_F32 {
        if (word & 0x7f800000u) == 0x7f800000u {
            return w;
        }
        return NOT_FOUND;
    }
    let mask = half_exponent_mask();
    let first = 2u * w;
    if (word & mask) == mask {
        return first;
    }
    if first + 1u < params.numel && ((word >> 16u) & mask) == mask {
        return first + 1u;
    }
    return NOT_FOUND;
}

@compute @workgroup_size(256)
fn first_non_finite(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(num_workgroups) num_workgroups: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let stride = num_workgroups.x * num_workgroups.y * WORKGROUP;
    var w = linear_workgroup(workgroup_id, num_workgroups) * WORKGROUP + local;
    loop {
        if w >= params.words {
            return;
        }
        let hit = first_non_finite_in_word(src[w], w);
        if hit != NOT_FOUND {
            atomicMin(&found[2u * params.slot], hit);
            return;
        }
        // `w + stride` could wrap past 2^32 near the end of a huge tensor.
        if params.words - w <= stride {
            return;
        }
        w += stride;
    }
}

// f32 bits of a non-finite 16-bit element `h` (low 16 bits) of the current DTYPE.
fn widen_non_finite(h: u32) -> u32 {
    if DTYPE == DTYPE_BF16 {
        return h << 16u;
    }
    let sign = (h & 0x8000u) << 16u;
    let mantissa = h & 0x3ffu;
    if mantissa == 0u {
        return sign | 0x7f800000u;
    }
    return sign | 0x7fc00000u | (mantissa << 13u);
}

@compute @workgroup_size(1)
fn non_finite_value() {
    let index = atomicLoad(&found[2u * params.slot]);
    if index >= params.numel {
        return;
    }
    let word = src[word_of(index)];
    var bits = word;
    if DTYPE != DTYPE_F32 {
        bits = widen_non_finite((word >> lane_shift(index)) & 0xffffu);
    }
    atomicStore(&found[2u * params.slot + 1u], bits);
}
