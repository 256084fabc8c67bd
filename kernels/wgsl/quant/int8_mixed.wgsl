// quant/int8_mixed.wgsl: LLM.int8 (bitsandbytes) `y [m, rows] = x [m, cols] W^T` with the
// mixed-precision outlier decomposition, the scheme of the CPU path
// (`Int8Weight::matmul_f32`, crates/quant/src/bnb/int8.rs):
//   outlier entry: NaN or Inf, or |x| >= threshold when split = 1 (threshold > 0);
//   outlier column c: some row t has an outlier entry x[t, c];
//   s_x[t] = max |x[t, c]| over the entries that are not outliers;
//   k[t] = 127 / s_x[t]; xq[t, c] = clamp(round_half_even(x[t, c] * k[t]), -127, 127),
//     0 in outlier columns and when s_x[t] = 0;
//   y[t, r] = f32(sum_c xq[t, c] * CB[r, c]) * (s_x[t] * SCB[r]) * INV_127_SQ
//             + sum over outlier columns c of x[t, c] * ((f32(CB[r, c]) * SCB[r]) * INV_127).
//
// Entry points, dispatched in this order into one command buffer by
// crates/quant/src/gpu/int8_wgpu.rs (each sees the writes of the previous one):
//   int8_row_stats     one workgroup of 64 per row t of x (grid: m): sets the outlier
//                      column bits (atomicOr) and writes stats[t] = (s_x, k), s_x by a
//                      workgroup max-reduction.
//   int8_quantize_x    one invocation per word of xq (grid: ceil(m * words / 64)): packs the
//                      int8 codes of 4 columns of one row of x.
//   int8_mixed_matmul  one workgroup of 64 per (weight row, tile of TILE_M = 4 rows of x)
//                      (grid: rows * ceil(m / 4), linear index = tile * rows + row), as
//                      quant/codebook_matmul.wgsl: invocation l walks the words
//                      l, l + 64, ... of the weight row, dot4I8Packed with the tile's xq
//                      words into i32 sums, and adds the outlier columns of its words in
//                      f32; both sums are tree-reduced in workgroup memory (no subgroup
//                      size is assumed). m = 1 is the decode matvec.
// Extra workgroups and invocations exit before any barrier (workgroup-uniform exits).
//
// Bindings (the same for every entry point; the host binds all seven):
//   0 codes (read): CB, rows * words u32 words, words = ceil(cols / 4); row r starts at
//     word r * words, column c is byte c % 4 (little-endian) of word r * words + c / 4 as
//     an i8; the padding bytes of a row are 0.
//   1 scb (read): SCB, f32 [rows].
//   2 x (read): DTYPE elements [m, cols] in u32 words (common/elements.wgsl).
//   3 xq (read_write): the int8 codes of x, [m, words] words, same packing as codes.
//   4 stats (read_write): f32 [m, 2], (s_x, k) per row of x.
//   5 flags (read_write, atomic): outlier column bits, bit c % 32 of word c / 32;
//     ceil(cols / 32) words, zero-filled by the host.
//   6 y (read_write, atomic words over a zero-filled buffer: 16-bit results are OR-ed
//     into their half word) [m, rows] in DTYPE.
//   7 params (uniform).
// Override DTYPE (common/elements.wgsl): 0 f32, 1 f16, 2 bf16 for x and y.
// Every read is bounds-checked against arrayLength (out of range reads as 0); the host
// checks the buffer sizes, that every index fits in u32 and that cols <= 132103 (so the
// i32 sum of 128 * 127 * cols cannot overflow; CB may hold -128 in foreign files).
//
// Numerics:
// - k = 127 / s_x is computed exactly (round to nearest even, like the CPU's IEEE f32
//   division) by an integer long division of the mantissas (`exact_127_over`): WGSL's
//   f32 division is only accurate to 2.5 ulp, and a k one ulp off would move codes that
//   sit on a rounding tie. x * k is one correctly rounded f32 product (WGSL), round() is
//   round-half-to-even, so xq equals the CPU's codes bit for bit. (WGSL lets an
//   implementation flush subnormal f32 to zero: rows of x whose non-outlier entries are
//   all subnormal may then quantize differently; such x is not in the tests.)
// - The integer part is an exact i32 sum (dot4I8Packed, then a wrapping i32 tree sum),
//   converted to f32 once and scaled by the CPU's products in the CPU's order. (WGSL has
//   no way to forbid reassociation: Mesa reassociates the two f32 products, so lavapipe's
//   result may be an ulp from the CPU's even without outliers.)
// - The outlier part: per element the CPU's f32 weight value (f32(CB) * SCB) * INV_127
//   times x in f32 (fma), summed per invocation and by the tree in f32: only its
//   summation order differs from the CPU, which adds the outlier terms to the integer
//   part one by one. The output is rounded once to DTYPE.
// - NaN and Inf in x make their columns outlier columns at any threshold, so they reach y
//   through the f32 part as in a dense product (the test is on the exponent bits, not a
//   float compare an implementation could assume finite).

//#import common/elements.wgsl

struct Params {
    rows: u32,
    cols: u32,
    m: u32,
    // ceil(cols / 4): u32 words per row of codes and of xq.
    words: u32,
    // ceil(m / TILE_M).
    m_tiles: u32,
    // 1: threshold > 0, columns with an |x| >= threshold are outliers; 0: no outliers.
    split: u32,
    threshold: f32,
    _pad0: u32,
}

@group(0) @binding(0) var<storage, read> codes: array<u32>;
@group(0) @binding(1) var<storage, read> scb: array<f32>;
@group(0) @binding(2) var<storage, read> x: array<u32>;
@group(0) @binding(3) var<storage, read_write> xq: array<u32>;
@group(0) @binding(4) var<storage, read_write> stats: array<f32>;
@group(0) @binding(5) var<storage, read_write> flags: array<atomic<u32>>;
@group(0) @binding(6) var<storage, read_write> y: array<atomic<u32>>;
@group(0) @binding(7) var<uniform> params: Params;

const WORKGROUP: u32 = 64u;
const TILE_M: u32 = 4u;
// bitsandbytes' 1/127 and 1/127^2 as f32, the constants of crates/quant/src/bnb/int8.rs.
const INV_127: f32 = 7.874016e-3;
const INV_127_SQ: f32 = 6.200124e-5;

var<workgroup> partial_f32: array<f32, 256>; // TILE_M * WORKGROUP
var<workgroup> partial_i32: array<i32, 256>;

fn load_x(i: u32) -> f32 {
    let w = word_of(i);
    if w < arrayLength(&x) {
        return decode(x[w], i);
    }
    return 0.0;
}

fn code_word(i: u32) -> u32 {
    if i < arrayLength(&codes) {
        return codes[i];
    }
    return 0u;
}

fn xq_word(i: u32) -> u32 {
    if i < arrayLength(&xq) {
        return xq[i];
    }
    return 0u;
}

fn scale_of_row(r: u32) -> f32 {
    if r < arrayLength(&scb) {
        return scb[r];
    }
    return 0.0;
}

fn stat(i: u32) -> f32 {
    if i < arrayLength(&stats) {
        return stats[i];
    }
    return 0.0;
}

// The outlier bits of columns 4w .. 4w + 3 (bit j = column 4w + j).
fn outlier_nibble(w: u32) -> u32 {
    let i = w >> 3u;
    if i < arrayLength(&flags) {
        return (atomicLoad(&flags[i]) >> ((w & 7u) * 4u)) & 0xfu;
    }
    return 0u;
}

fn store_y(i: u32, v: f32) {
    let w = word_of(i);
    if w >= arrayLength(&y) {
        return;
    }
    if DTYPE == DTYPE_F32 {
        atomicStore(&y[w], bitcast<u32>(v));
    } else {
        atomicOr(&y[w], encode_bits(v) << lane_shift(i));
    }
}

fn is_nan(v: f32) -> bool {
    return (bitcast<u32>(v) & 0x7fffffffu) > 0x7f800000u;
}

// 127 / s rounded to nearest even, as an IEEE f32 division gives it, for s > 0 (+inf
// gives 0, a quotient past the f32 range +inf). Integer long division of the 24-bit
// mantissas: s = mantissa * 2^(exponent - 150) and 127 = (127 << 17) * 2^-17, so
// 127 / s = ((127 << 17) / mantissa) * 2^(133 - exponent); 24 quotient bits, then the
// doubled remainder against the divisor decides the rounding (ties to even).
fn exact_127_over(s: f32) -> f32 {
    let bits = bitcast<u32>(s);
    var exponent = i32((bits >> 23u) & 0xffu);
    var mantissa = bits & 0x7fffffu;
    if exponent == 255 {
        return 0.0;
    }
    if exponent == 0 {
        // Subnormal (mantissa != 0 since s > 0): move the leading bit to bit 23.
        let shift = countLeadingZeros(mantissa) - 8u;
        mantissa = mantissa << shift;
        exponent = 1 - i32(shift);
    } else {
        mantissa = mantissa | 0x800000u;
    }
    var remainder = 127u << 17u;
    var result_exponent = 133 - exponent;
    if remainder < mantissa {
        // The quotient is below 1: double the dividend (still < 2^25) instead.
        remainder = remainder << 1u;
        result_exponent -= 1;
    }
    var quotient = 0u;
    for (var bit = 0u; bit < 24u; bit++) {
        quotient = quotient << 1u;
        if remainder >= mantissa {
            remainder -= mantissa;
            quotient = quotient | 1u;
        }
        remainder = remainder << 1u;
    }
    // remainder = 2 * (exact remainder): above the divisor rounds up, equal is a tie.
    if remainder > mantissa || (remainder == mantissa && (quotient & 1u) == 1u) {
        quotient += 1u;
        if quotient == 0x1000000u {
            quotient = 0x800000u;
            result_exponent += 1;
        }
    }
    // result_exponent >= -122 for every finite s, so the result is never subnormal.
    let biased = result_exponent + 127;
    if biased >= 255 {
        return bitcast<f32>(0x7f800000u);
    }
    return bitcast<f32>((u32(biased) << 23u) | (quotient & 0x7fffffu));
}

// The int8 code of v with factor k, in the low byte: round-half-even(v * k) clamped to
// [-127, 127]; NaN gives 0.
fn quantize_code(v: f32, k: f32) -> u32 {
    let scaled = v * k;
    if is_nan(scaled) {
        return 0u;
    }
    return bitcast<u32>(i32(clamp(round(scaled), -127.0, 127.0))) & 0xffu;
}

@compute @workgroup_size(64)
fn int8_row_stats(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(num_workgroups) num_workgroups: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let t = linear_workgroup(workgroup_id, num_workgroups);
    if t >= params.m {
        return;
    }
    let row0 = t * params.cols;
    var local_max = 0.0;
    for (var c = local; c < params.cols; c += WORKGROUP) {
        let value = load_x(row0 + c);
        let magnitude = abs(value);
        // NaN and Inf (all exponent bits set) are outliers at any threshold.
        let non_finite = (bitcast<u32>(value) & 0x7f800000u) == 0x7f800000u;
        if non_finite || (params.split == 1u && magnitude >= params.threshold) {
            if (c >> 5u) < arrayLength(&flags) {
                atomicOr(&flags[c >> 5u], 1u << (c & 31u));
            }
        } else if magnitude > local_max {
            local_max = magnitude;
        }
    }
    partial_f32[local] = local_max;
    workgroupBarrier();
    for (var stride = WORKGROUP / 2u; stride > 0u; stride = stride / 2u) {
        if local < stride {
            partial_f32[local] = max(partial_f32[local], partial_f32[local + stride]);
        }
        workgroupBarrier();
    }
    if local == 0u && 2u * t + 1u < arrayLength(&stats) {
        let s = partial_f32[0];
        stats[2u * t] = s;
        var k = 0.0;
        if s > 0.0 {
            k = exact_127_over(s);
        }
        stats[2u * t + 1u] = k;
    }
}

@compute @workgroup_size(64)
fn int8_quantize_x(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(num_workgroups) num_workgroups: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let id = linear_workgroup(workgroup_id, num_workgroups) * WORKGROUP + local;
    if params.words == 0u || id >= params.m * params.words || id >= arrayLength(&xq) {
        return;
    }
    let t = id / params.words;
    let w = id % params.words;
    let s = stat(2u * t);
    let k = stat(2u * t + 1u);
    var packed = 0u;
    if s > 0.0 {
        let outliers = outlier_nibble(w);
        for (var j = 0u; j < 4u; j++) {
            let c = w * 4u + j;
            if c < params.cols && ((outliers >> j) & 1u) == 0u {
                packed = packed | (quantize_code(load_x(t * params.cols + c), k) << (8u * j));
            }
        }
    }
    xq[id] = packed;
}

struct Tile {
    valid: bool,
    row: u32,
    t0: u32,
    tokens: u32,
}

fn tile_of(workgroup_id: vec3<u32>, num_workgroups: vec3<u32>) -> Tile {
    let id = linear_workgroup(workgroup_id, num_workgroups);
    if params.rows == 0u || id >= params.rows * params.m_tiles {
        return Tile(false, 0u, 0u, 0u);
    }
    let row = id % params.rows;
    let t0 = (id / params.rows) * TILE_M;
    return Tile(true, row, t0, min(TILE_M, params.m - t0));
}

@compute @workgroup_size(64)
fn int8_mixed_matmul(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(num_workgroups) num_workgroups: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let tile = tile_of(workgroup_id, num_workgroups);
    if !tile.valid {
        return;
    }
    let scale = scale_of_row(tile.row);
    let code0 = tile.row * params.words;
    var int_sum = array<i32, 4>(0, 0, 0, 0);
    var outlier_sum = array<f32, 4>(0.0, 0.0, 0.0, 0.0);
    for (var w = local; w < params.words; w += WORKGROUP) {
        let weight_word = code_word(code0 + w);
        for (var t = 0u; t < tile.tokens; t++) {
            int_sum[t] += dot4I8Packed(weight_word, xq_word((tile.t0 + t) * params.words + w));
        }
        let outliers = outlier_nibble(w);
        if outliers != 0u {
            for (var j = 0u; j < 4u; j++) {
                if ((outliers >> j) & 1u) == 1u {
                    let code = extractBits(bitcast<i32>(weight_word), 8u * j, 8u);
                    let weight = (f32(code) * scale) * INV_127;
                    let c = w * 4u + j;
                    for (var t = 0u; t < tile.tokens; t++) {
                        outlier_sum[t] = fma(load_x((tile.t0 + t) * params.cols + c), weight, outlier_sum[t]);
                    }
                }
            }
        }
    }
    for (var t = 0u; t < TILE_M; t++) {
        partial_i32[t * WORKGROUP + local] = int_sum[t];
        partial_f32[t * WORKGROUP + local] = outlier_sum[t];
    }
    workgroupBarrier();
    for (var stride = WORKGROUP / 2u; stride > 0u; stride = stride / 2u) {
        if local < stride {
            for (var t = 0u; t < TILE_M; t++) {
                partial_i32[t * WORKGROUP + local] += partial_i32[t * WORKGROUP + local + stride];
                partial_f32[t * WORKGROUP + local] += partial_f32[t * WORKGROUP + local + stride];
            }
        }
        workgroupBarrier();
    }
    if local < tile.tokens {
        let t = tile.t0 + local;
        let s_x = stat(2u * t);
        let int_part = (f32(partial_i32[local * WORKGROUP]) * (s_x * scale)) * INV_127_SQ;
        store_y(t * params.rows + tile.row, int_part + partial_f32[local * WORKGROUP]);
    }
}
